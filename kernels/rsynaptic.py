"""snnTorch's ``RSynaptic`` (one-to-one feedback) in Triton: its step and the step's gradient on
the scan skeleton (``kernels/scan.py``); the arithmetic of ``csrc/families/rsynaptic.cpp``, line
for line. State 0 is the previous step's spike output."""
import triton
import triton.language as tl

from . import scan
from .common import RESET_NONE, base_reset, heaviside, immediate_reset, membrane_grad


@triton.jit
def _membrane(x, sp, syn, m, a, b, V, th, RESET: tl.constexpr):
    r = heaviside(m - th)
    y = (a * syn + x) + sp * V
    return r, y, base_reset(b * m + y, r, th, RESET)


@triton.jit
def forward(x, sp, syn, m, a, b, V, th, g, p5, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    r, y, u = _membrane(x, sp, syn, m, a, b, V, th, O0)
    h = heaviside(u - th)
    spk = h * g
    if O1 and O0 != RESET_NONE:
        m_next = immediate_reset(u, r, h, th, g, O0)
    else:
        m_next = u
    return spk, spk, y, m_next


@triton.jit
def backward(x, sp, syn, m, n0, n1, n2, a, b, V, th, g, p5, gspk, gsp, gsyn, gm, sg_a, sg_b, SG: tl.constexpr,
             O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr, O3: tl.constexpr):
    r, y, u = _membrane(x, sp, syn, m, a, b, V, th, O0)
    gw, gth, gg = membrane_grad(gm, gspk, u, r, th, g, sg_a, sg_b, O0, O1 and O0 != RESET_NONE, SG)
    gy = gw + gsyn
    zero = tl.zeros_like(gm)
    return gy, gy * V, gy * a, gw * b, gy * syn, gw * m, gy * sp, gth, gg, zero


scan.register("rsynaptic", forward, backward)  # the spec: fastlif/families/rsynaptic.py
