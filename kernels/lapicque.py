"""snnTorch's ``Lapicque`` in Triton: its step and the step's gradient on the scan skeleton
(``kernels/scan.py``); the arithmetic of ``csrc/families/lapicque.cpp``, line for line."""
import triton
import triton.language as tl

from . import scan
from .common import RESET_SUBTRACT, RESET_ZERO, heaviside, surrogate_backward


@triton.jit
def _base(x, m, R, k1, ts, k2, th, RESET: tl.constexpr):
    r = heaviside(m - th)
    t1 = x * R
    t2 = t1 * k1
    b = t2 * ts + k2 * m
    if RESET == RESET_SUBTRACT:
        u = b - r * th
    elif RESET == RESET_ZERO:
        u = b - r * b
    else:
        u = b
    return r, t1, t2, b, u


@triton.jit
def forward(x, s0, s1, s2, R, k1, ts, k2, th, g, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    r, t1, t2, b, u = _base(x, s0, R, k1, ts, k2, th, O0)
    return heaviside(u - th) * g, u, s1, s2


@triton.jit
def backward(x, s0, s1, s2, n0, n1, n2, R, k1, ts, k2, th, g, gspk, g0, g1, g2, sg_a, sg_b, SG: tl.constexpr,
             O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    r, t1, t2, b, u = _base(x, s0, R, k1, ts, k2, th, O0)
    z = u - th
    gz = surrogate_backward(gspk * g, z, sg_a, sg_b, SG)
    gg = gspk * heaviside(z)
    gu = g0 + gz
    gth = -gz
    gb = gu
    if O0 == RESET_SUBTRACT:
        gth -= r * gu
    elif O0 == RESET_ZERO:
        gb = gu - gu * r
    gk2 = gb * s0
    gm = gb * k2
    gts = gb * t2
    gt2 = gb * ts
    gk1 = gt2 * t1
    gt1 = gt2 * k1
    gR = gt1 * x
    return gt1 * R, gm, g1, g2, gR, gk1, gts, gk2, gth, gg


scan.register("lapicque", forward, backward)  # the spec: fastlif/families/lapicque.py
