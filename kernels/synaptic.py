"""snnTorch's ``Synaptic`` in Triton: its step and the step's gradient on the scan skeleton
(``kernels/scan.py``); the arithmetic of ``csrc/families/synaptic.h``, line for line."""
import triton
import triton.language as tl

from fastlif.families.synaptic import SYNAPTIC

from . import scan
from .common import RESET_SUBTRACT, RESET_ZERO, base_reset, heaviside, immediate_reset, surrogate_backward


@triton.jit
def forward(x, syn, m, s2, a, b, th, g, p4, p5, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    r = heaviside(m - th)
    syn1 = a * syn + x
    u = base_reset(b * m + syn1, r, th, O0)
    spike = heaviside(u - th)
    if O1:
        m_next = immediate_reset(u, r, spike, th, g, O0)
    else:
        m_next = u
    return spike * g, syn1, m_next, s2


@triton.jit
def backward(x, syn, m0, s2, syn1, n1, n2, a, b, th, g, p4, p5, gspk, gsyn, gm, g2, sg_a, sg_b,
             SG: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    r = heaviside(m0 - th)
    u = base_reset(b * m0 + syn1, r, th, O0)  # as forward computed it
    z = u - th
    spike = heaviside(z)
    gh = gspk * g
    gu = gm
    gth = tl.zeros_like(gm)
    if O1 and O0 == RESET_SUBTRACT:
        gh -= gm * th
        gth -= gm * (spike - r)
    elif O1 and O0 == RESET_ZERO:
        gh -= gm * u
        gu = gm * (1 - (spike - r))
    gz = surrogate_backward(gh, z, sg_a, sg_b, SG)
    gu += gz
    gth -= gz
    gg = gspk * spike
    gm1 = gu
    if O0 == RESET_SUBTRACT:
        gth -= r * gu
    elif O0 == RESET_ZERO:
        gm1 = gu * (1 - r)
    gsyn1 = gm1 + gsyn
    zero = tl.zeros_like(gm)
    return gsyn1, gsyn1 * a, gm1 * b, g2, gsyn1 * syn, gm1 * m0, gth, gg, zero, zero


scan.register(SYNAPTIC, forward, backward)
