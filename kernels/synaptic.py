"""snnTorch's ``Synaptic`` in Triton: its step and the step's gradient on the scan skeleton
(``kernels/scan.py``); the arithmetic of ``csrc/families/synaptic.cpp``, line for line."""
import triton
import triton.language as tl

from . import scan
from .common import base_reset, heaviside, immediate_reset, membrane_grad


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
             SG: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr, O3: tl.constexpr):
    r = heaviside(m0 - th)
    u = base_reset(b * m0 + syn1, r, th, O0)  # as forward computed it
    gm1, gth, gg = membrane_grad(gm, gspk, u, r, th, g, sg_a, sg_b, O0, O1, SG)
    gsyn1 = gm1 + gsyn
    zero = tl.zeros_like(gm)
    return gsyn1, gsyn1 * a, gm1 * b, g2, gsyn1 * syn, gm1 * m0, gth, gg, zero, zero


scan.register("synaptic", forward, backward)  # the spec: fastlif/families/synaptic.py
