"""The RLeaky family with one-to-one feedback (snnTorch's ``RLeaky(all_to_all=False)``) in
Triton: each step's spikes feed back through one weight per neuron, ``spk * V``. Forward over T
steps and surrogate backward in reverse, with their launchers; same template, exactness rules
and launch conventions as ``kernels/lif.py``, semantics as ``csrc/rleaky.cpp``:

    r    = H(m[t-1] - thr);  base = b*m[t-1] + x + spk[t-1]*V
    u    = base - r*thr | base - r*base | base;  spk = H(u - thr) * g
    m[t] = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r

The dense recurrent layer (``all_to_all=True``) has no Triton kernel: on GPUs it runs the
reference loop. Launchers: the contract of ``fastlif/ops/rleaky.py``; they register themselves
with ``fastlif.backends``.
"""
import torch
import triton
import triton.language as tl

from fastlif import backends
from fastlif.codes import NO_GRAD, is_immediate
from fastlif.layout import compute_dtype, grid as step_grid

from . import common as C
from .common import RESET_SUBTRACT, RESET_ZERO, base_reset, cast, heaviside, immediate_reset, load_param

_PARAM_FLAGS = {
    "BETA_PN": lambda a: a["beta_ptr"].numel() > 1,
    "V_PN": lambda a: a["v_ptr"].numel() > 1,
    "THR_PN": lambda a: a["thr_ptr"].numel() > 1,
    "G_PN": lambda a: a["g_ptr"].numel() > 1,
    "HAS_SPK0": lambda a: a["spk0_ptr"] is not None,
    "HAS_MEM0": lambda a: a["mem0_ptr"] is not None,
}


@triton.jit
def _start(beta_ptr, v_ptr, thr_ptr, g_ptr, spk0_ptr, mem0_ptr, N, L, BETA_PN: tl.constexpr,
           V_PN: tl.constexpr, THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_SPK0: tl.constexpr,
           HAS_MEM0: tl.constexpr, BLOCK: tl.constexpr):
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, lidx = C.block_offsets(N, L, BLOCK)
    b = load_param(beta_ptr, lidx, mask, BETA_PN, CDT)
    v = load_param(v_ptr, lidx, mask, V_PN, CDT)
    th = load_param(thr_ptr, lidx, mask, THR_PN, CDT)
    g = load_param(g_ptr, lidx, mask, G_PN, CDT)
    sp0 = C.load_state(spk0_ptr, offs, mask, HAS_SPK0, CDT, BLOCK)
    m0 = C.load_state(mem0_ptr, offs, mask, HAS_MEM0, CDT, BLOCK)
    return offs, mask, b, v, th, g, sp0, m0


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def rleaky_fwd_kernel(
    x_ptr, spk0_ptr, mem0_ptr, beta_ptr, v_ptr, thr_ptr, g_ptr,  # inputs
    spk_ptr, mem_ptr, state_ptr, flags_ptr,                      # outputs
    T, N, L, N_BUCKET,
    RESET: tl.constexpr, IMMEDIATE: tl.constexpr, BETA_PN: tl.constexpr, V_PN: tl.constexpr,
    THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_SPK0: tl.constexpr, HAS_MEM0: tl.constexpr,
    BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, b, v, th, g, sp, m = _start(beta_ptr, v_ptr, thr_ptr, g_ptr, spk0_ptr, mem0_ptr, N, L,
                                            BETA_PN, V_PN, THR_PN, G_PN, HAS_SPK0, HAS_MEM0, BLOCK)
    x_next = tl.load(x_ptr + offs, mask=mask, other=0)
    for t in range(0, T):
        off = tl.cast(t, tl.int64) * N + offs
        x, x_next = C.step_input(x_ptr, off, N, mask, t, T, x_next, PREFETCH, CDT)
        r = heaviside(m - th)
        u = base_reset(b * m + x + sp * v, r, th, RESET)
        s = heaviside(u - th)
        if IMMEDIATE:
            tl.store(state_ptr + off, u, mask=mask)
            tl.store(flags_ptr + off, r.to(tl.uint8), mask=mask)
            m = immediate_reset(u, r, s, th, g, RESET)
        else:
            m = u
        sp = s * g
        tl.store(spk_ptr + off, cast(sp, spk_ptr.dtype.element_ty), mask=mask)
        tl.store(mem_ptr + off, m, mask=mask)


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def rleaky_bwd_kernel(
    gspk_ptr, gmem_ptr, saved_ptr, flags_ptr, spk0_ptr, mem0_ptr, beta_ptr, v_ptr, thr_ptr, g_ptr,  # inputs
    gx_ptr, gspk0_ptr, gmem0_ptr, pbeta_ptr, pv_ptr, pthr_ptr, pg_ptr,                             # outputs
    T, N, L, N_BUCKET, sg_a: "fp64", sg_b: "fp64",
    RESET: tl.constexpr, IMMEDIATE: tl.constexpr, SG: tl.constexpr, BETA_PN: tl.constexpr,
    V_PN: tl.constexpr, THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_SPK0: tl.constexpr,
    HAS_MEM0: tl.constexpr, HAS_GSPK: tl.constexpr, HAS_GMEM: tl.constexpr,
    BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    """``saved`` is forward's membrane (delayed reset) or pre-reset membrane with the reset flags
    (immediate reset); the previous step's spikes are rebuilt from it (spk = H(u - thr) * g)."""
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, b, v, th, g, sp_init, m_init = _start(beta_ptr, v_ptr, thr_ptr, g_ptr, spk0_ptr, mem0_ptr, N, L,
                                                      BETA_PN, V_PN, THR_PN, G_PN, HAS_SPK0, HAS_MEM0, BLOCK)
    sga, sgb = C.surrogate_vectors(sg_a, sg_b, CDT, BLOCK)
    carry_m = tl.zeros([BLOCK], dtype=CDT)
    carry_s = tl.zeros([BLOCK], dtype=CDT)
    gb = tl.zeros([BLOCK], dtype=CDT)
    gv = tl.zeros([BLOCK], dtype=CDT)
    gth = tl.zeros([BLOCK], dtype=CDT)
    gg = tl.zeros([BLOCK], dtype=CDT)
    u = tl.load(saved_ptr + (T - 1).to(tl.int64) * N + offs, mask=mask, other=0).to(CDT)
    for i in range(0, T):
        off = (T - 1 - i).to(tl.int64) * N + offs
        has_prev = i < T - 1
        pmask = mask & has_prev
        prev = tl.load(saved_ptr + off - N, mask=pmask, other=0).to(CDT)
        s_prev = heaviside(prev - th)
        if IMMEDIATE:
            r_prev = tl.load(flags_ptr + off - N, mask=pmask, other=0).to(CDT)
            m0 = tl.where(has_prev, immediate_reset(prev, r_prev, s_prev, th, g, RESET), m_init)
        else:
            m0 = tl.where(has_prev, prev, m_init)
        sp0 = tl.where(has_prev, s_prev * g, sp_init)
        if HAS_GMEM:
            gm = tl.load(gmem_ptr + off, mask=mask, other=0).to(CDT) + carry_m
        else:
            gm = carry_m
        if HAS_GSPK:
            gsp = tl.load(gspk_ptr + off, mask=mask, other=0).to(CDT) + carry_s
        else:
            gsp = carry_s
        r = heaviside(m0 - th)
        z = u - th
        s = heaviside(z)
        gs = gsp * g
        gu = gm
        if IMMEDIATE:
            if RESET == RESET_SUBTRACT:
                gs -= gm * th
                gth -= gm * (s - r)
            elif RESET == RESET_ZERO:
                gs -= gm * u
                gu = gm * (1 - (s - r))
        gz = C.surrogate_backward(gs, z, sga, sgb, SG)
        gu += gz
        gth -= gz
        gg += gsp * s
        gbase = gu
        if RESET == RESET_SUBTRACT:
            gth -= r * gu
        elif RESET == RESET_ZERO:
            gbase = gu * (1 - r)
        tl.store(gx_ptr + off, cast(gbase, gx_ptr.dtype.element_ty), mask=mask)
        gb += gbase * m0
        carry_m = gbase * b
        gv += gbase * sp0
        carry_s = gbase * v
        u = prev
    if HAS_MEM0:
        tl.store(gmem0_ptr + offs, carry_m, mask=mask)
    if HAS_SPK0:
        tl.store(gspk0_ptr + offs, carry_s, mask=mask)
    tl.store(pbeta_ptr + offs, gb, mask=mask)
    tl.store(pv_ptr + offs, gv, mask=mask)
    tl.store(pthr_ptr + offs, gth, mask=mask)
    tl.store(pg_ptr + offs, gg, mask=mask)


RLEAKY_FWD = C.FusedKernel(rleaky_fwd_kernel, _PARAM_FLAGS)
RLEAKY_BWD = C.FusedKernel(rleaky_bwd_kernel, {
    **_PARAM_FLAGS,
    "HAS_GSPK": lambda a: a["gspk_ptr"] is not None,
    "HAS_GMEM": lambda a: a["gmem_ptr"] is not None,
})

_NAMES = ("beta", "V", "threshold", "graded")


def _no_dense(weight):
    if weight is not None:
        raise ValueError("the triton backend fuses RLeaky's one-to-one feedback only; a dense recurrent "
                         "layer runs on the cpp backend (CPU) or the reference loop")


def rleaky_fwd(x, spk0, mem0, beta, V, threshold, graded, weight, bias, *, steps, reset_mode, reset_delay):
    _no_dense(weight)
    C.check_dtype(x.dtype, "x")
    T, R, L = step_grid(x.shape, steps)
    N = R * L
    compute = compute_dtype(x.dtype)
    dev = x.device
    params = [C.launch_param(p, compute, dev, L, n) for p, n in zip((beta, V, threshold, graded), _NAMES)]
    immediate = is_immediate(reset_mode, reset_delay)
    spk = C.new(x.shape, x.dtype, dev)
    mem = C.new(x.shape, compute, dev)
    state = C.new(x.shape if immediate else (0,), compute, dev)
    flags = C.new(x.shape if immediate else (0,), torch.uint8, dev)
    if x.numel() == 0:
        return spk, mem, state, flags
    spk0, mem0 = (None if s is None else s.to(compute).contiguous() for s in (spk0, mem0))
    with C.on_device(x):
        RLEAKY_FWD[C.grid(N)](
            x.contiguous(), spk0, mem0, *params, spk, mem, state if immediate else None,
            flags if immediate else None, T, N, L, C.bucket(N),
            RESET=reset_mode, IMMEDIATE=immediate, enable_fp_fusion=False)
    return spk, mem, state, flags


def rleaky_bwd(grad_spk, grad_mem, mem, state, flags, spk0, mem0, beta, V, threshold, graded, weight, *, steps,
               reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype):
    _no_dense(weight)
    if not 0 <= int(surrogate_kind) <= NO_GRAD:
        raise ValueError(f"unknown surrogate kind {surrogate_kind}")
    immediate = is_immediate(reset_mode, reset_delay)
    saved = state if immediate else mem
    T, R, L = step_grid(saved.shape, steps)
    N = R * L
    compute = compute_dtype(x_dtype)
    dev = saved.device
    tensor_params = [isinstance(p, torch.Tensor) for p in (beta, V, threshold, graded)]
    params = [C.launch_param(p, compute, dev, L, n) for p, n in zip((beta, V, threshold, graded), _NAMES)]
    grad_x = C.new(saved.shape, x_dtype, dev)
    grad_spk0 = None if spk0 is None else C.new(spk0.shape, compute, dev)
    grad_mem0 = None if mem0 is None else C.new(mem0.shape, compute, dev)
    partial = C.new((4, N), compute, dev)
    grads_in = [None if t is None else t.contiguous() for t in (grad_spk, grad_mem)]
    if saved.numel() == 0 or all(t is None for t in grads_in):
        grad_x.zero_()
        partial.zero_()
        for t in (grad_spk0, grad_mem0):
            if t is not None:
                t.zero_()
    else:
        sg_a, sg_b = C.surrogate_constants(surrogate_kind, surrogate_param)
        spk0, mem0 = (None if s is None else s.to(compute).contiguous() for s in (spk0, mem0))
        with C.on_device(saved):
            RLEAKY_BWD[C.grid(N)](
                *grads_in, saved.contiguous(), flags.contiguous() if immediate else None, spk0, mem0, *params,
                grad_x, grad_spk0, grad_mem0, partial[0], partial[1], partial[2], partial[3],
                T, N, L, C.bucket(N), sg_a, sg_b,
                RESET=reset_mode, IMMEDIATE=immediate, SG=int(surrogate_kind), enable_fp_fusion=False)
    grads = [C.reduce_param_grad(partial[k], p, R, L) if is_tensor else None
             for k, (p, is_tensor) in enumerate(zip(params, tensor_params))]
    return (grad_x, grad_spk0, grad_mem0, *grads)


backends.register("rleaky", "triton", lambda: (rleaky_fwd, rleaky_bwd))
