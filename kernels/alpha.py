"""snnTorch's ``Alpha`` in Triton: its step and the step's gradient on the scan skeleton
(``kernels/scan.py``); the arithmetic of ``csrc/families/alpha.cpp``, line for line."""
import triton
import triton.language as tl

from . import scan
from .common import RESET_SUBTRACT, RESET_ZERO, heaviside, surrogate_backward


@triton.jit
def forward(x, e, i, m, a, b, tau, th, g, p5, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    r = heaviside(m - th)
    be = a * e + x
    bi = b * i - x
    bm = tau * (be + bi)
    if O0 == RESET_SUBTRACT:
        e2 = be - th * r
        i2 = bi - bi * r
        m2 = bm - (-i) * r
    elif O0 == RESET_ZERO:
        e2 = be - be * r
        i2 = bi - bi * r
        m2 = bm - bm * r
    else:
        e2 = be
        i2 = bi
        m2 = bm
    return heaviside(m2 - th) * g, e2, i2, m2


@triton.jit
def backward(x, e, i, m, n0, n1, n2, a, b, tau, th, g, p5, gspk, ge2, gi2, gm, sg_a, sg_b, SG: tl.constexpr,
             O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr, O3: tl.constexpr):
    r = heaviside(m - th)
    be = a * e + x
    bi = b * i - x
    total = be + bi
    bm = tau * total
    if O0 == RESET_SUBTRACT:
        m2 = bm - (-i) * r
    elif O0 == RESET_ZERO:
        m2 = bm - bm * r
    else:
        m2 = bm
    z = m2 - th
    gz = surrogate_backward(gspk * g, z, sg_a, sg_b, SG)
    gg = gspk * heaviside(z)
    gth = -gz
    gm2 = gm + gz
    gbe = ge2
    gbi = gi2
    gbm = gm2
    gi = tl.zeros_like(gm)
    if O0 == RESET_SUBTRACT:
        gth -= r * ge2
        gbi = gi2 - gi2 * r
        gi = r * gm2
    elif O0 == RESET_ZERO:
        gbe = ge2 - ge2 * r
        gbi = gi2 - gi2 * r
        gbm = gm2 - gm2 * r
    gtau = gbm * total
    gsum = gbm * tau
    gbe += gsum
    gbi += gsum
    zero = tl.zeros_like(gm)
    return gbe - gbi, gbe * a, gi + gbi * b, zero, gbe * e, gbi * i, gtau, gth, gg, zero


scan.register("alpha", forward, backward)  # the spec: fastlif/families/alpha.py
