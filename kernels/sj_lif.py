"""SpikingJelly's ``LIFNode`` / ``ParametricLIFNode`` in Triton: the step and its gradient on the
scan skeleton (``kernels/scan.py``); the arithmetic of ``csrc/families/sj_lif.cpp``, line for
line. Options: O0 leak (0: / tau, 1: * sigmoid(w)), O1 decay_input, O2 hard_reset, O3
detach_reset."""
import triton
import triton.language as tl

from . import scan
from .common import div, surrogate_backward


@triton.jit
def _charge(x, v, r, k, MULTIPLY: tl.constexpr, DECAY: tl.constexpr):
    vm = v - r
    if DECAY:
        if MULTIPLY:
            h = v + (x - vm) * k
        else:
            h = v + div(x - vm, k)
    else:
        if MULTIPLY:
            h = v - vm * k + x
        else:
            h = v - div(vm, k) + x
    return h


@triton.jit
def forward(x, v, s1, s2, k, thr, v_reset, p3, p4, p5, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
            O3: tl.constexpr):
    if O2:
        r = v_reset + tl.zeros_like(x)
    else:
        r = tl.zeros_like(x)
    h = _charge(x, v, r, k, O0, O1)
    spk = ((h - thr) >= 0).to(h.dtype)  # SpikingJelly fires at the threshold
    if O2:
        v_next = spk * r + (1 - spk) * h
    else:
        v_next = h - spk * thr
    return spk, v_next, s1, s2


@triton.jit
def backward(x, v, s1, s2, n0, n1, n2, k, thr, v_reset, p3, p4, p5, gspk, gv, g1, g2, sg_a, sg_b,
             SG: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr, O3: tl.constexpr):
    if O2:
        r = v_reset + tl.zeros_like(x)
    else:
        r = tl.zeros_like(x)
    h = _charge(x, v, r, k, O0, O1)
    z = h - thr
    spk = (z >= 0).to(h.dtype)
    gsp = gspk
    if not O3:
        if O2:
            gsp = (gspk - gv * h) + gv * r
        else:
            gsp = gspk - gv * thr
    gz = surrogate_backward(gsp, z, sg_a, sg_b, SG)
    if O2:
        gh = gv * (1 - spk) + gz
    else:
        gh = gv + gz
    gthr = -gz
    if not O2:
        gthr -= gv * spk
    vm = v - r
    if O0:
        if O1:
            dk = x - vm
        else:
            dk = -vm
        lin = gh * k
        gv_prev = gh - gh * k
    else:
        if O1:
            dk = -div(x - vm, k * k)
        else:
            dk = div(vm, k * k)
        lin = div(gh, k)
        gv_prev = gh - div(gh, k)
    gk = gh * dk
    zero = tl.zeros_like(gh)
    if O2:
        greset = gv * spk + lin
    else:
        greset = zero
    if O1:
        gx = lin
    else:
        gx = gh
    return gx, gv_prev, g1, g2, gk, gthr, greset, zero, zero, zero


scan.register("sj_lif", forward, backward)  # the spec: fastlif/families/sj_lif.py
