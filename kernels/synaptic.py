"""The Synaptic family (snnTorch's ``Synaptic``) in Triton: the T-step recurrence of a synaptic
current and a membrane forward, and its surrogate backward walking T in reverse, with their
launchers. Same template, exactness rules and launch conventions as ``kernels/lif.py``;
semantics and backward derivation as ``csrc/synaptic.cpp``:

    r    = H(m[t-1] - thr);  syn = a*syn[t-1] + x;  m1 = b*m[t-1] + syn
    u    = m1 - r*thr | m1 - m1*r | m1;  spk = H(u - thr) * g
    m[t] = u, or with an immediate reset: u - d*thr | u - d*u,  d = spk/g - r

The states come back in the compute dtype (fp32 for fp16/bf16 input). Launchers: the contract
of ``fastlif/ops/synaptic.py``; they register themselves with ``fastlif.backends``.
"""
import torch
import triton
import triton.language as tl

from fastlif import backends
from fastlif.codes import NO_GRAD, is_immediate
from fastlif.ops.common import grid as step_grid

from . import common as C
from .common import RESET_SUBTRACT, RESET_ZERO, base_reset, cast, heaviside, immediate_reset, load_param

_PARAM_FLAGS = {
    "A_PN": lambda a: a["alpha_ptr"].numel() > 1,
    "BETA_PN": lambda a: a["beta_ptr"].numel() > 1,
    "THR_PN": lambda a: a["thr_ptr"].numel() > 1,
    "G_PN": lambda a: a["g_ptr"].numel() > 1,
    "HAS_SYN0": lambda a: a["syn0_ptr"] is not None,
    "HAS_MEM0": lambda a: a["mem0_ptr"] is not None,
}


@triton.jit
def _start(alpha_ptr, beta_ptr, thr_ptr, g_ptr, syn0_ptr, mem0_ptr, N, L, A_PN: tl.constexpr,
           BETA_PN: tl.constexpr, THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_SYN0: tl.constexpr,
           HAS_MEM0: tl.constexpr, BLOCK: tl.constexpr):
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, lidx = C.block_offsets(N, L, BLOCK)
    a = load_param(alpha_ptr, lidx, mask, A_PN, CDT)
    b = load_param(beta_ptr, lidx, mask, BETA_PN, CDT)
    th = load_param(thr_ptr, lidx, mask, THR_PN, CDT)
    g = load_param(g_ptr, lidx, mask, G_PN, CDT)
    s0 = C.load_state(syn0_ptr, offs, mask, HAS_SYN0, CDT, BLOCK)
    m0 = C.load_state(mem0_ptr, offs, mask, HAS_MEM0, CDT, BLOCK)
    return offs, mask, a, b, th, g, s0, m0


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def synaptic_fwd_kernel(
    x_ptr, syn0_ptr, mem0_ptr, alpha_ptr, beta_ptr, thr_ptr, g_ptr,  # inputs
    spk_ptr, syn_ptr, mem_ptr, state_ptr, flags_ptr,                 # outputs
    T, N, L, N_BUCKET,
    RESET: tl.constexpr, IMMEDIATE: tl.constexpr, A_PN: tl.constexpr, BETA_PN: tl.constexpr,
    THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_SYN0: tl.constexpr, HAS_MEM0: tl.constexpr,
    BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, a, b, th, g, sy, m = _start(alpha_ptr, beta_ptr, thr_ptr, g_ptr, syn0_ptr, mem0_ptr, N, L,
                                             A_PN, BETA_PN, THR_PN, G_PN, HAS_SYN0, HAS_MEM0, BLOCK)
    if PREFETCH:
        x_next = tl.load(x_ptr + offs, mask=mask, other=0)
    for t in range(0, T):
        off = tl.cast(t, tl.int64) * N + offs  # from the step index (see kernels/lif.py)
        if PREFETCH:
            x = x_next.to(CDT)
            x_next = tl.load(x_ptr + off + N, mask=mask & (t + 1 < T), other=0)
        else:
            x = tl.load(x_ptr + off, mask=mask, other=0).to(CDT)
        r = heaviside(m - th)
        sy = a * sy + x
        u = base_reset(b * m + sy, r, th, RESET)
        s = heaviside(u - th)
        if IMMEDIATE:
            tl.store(state_ptr + off, u, mask=mask)
            tl.store(flags_ptr + off, r.to(tl.uint8), mask=mask)
            m = immediate_reset(u, r, s, th, g, RESET)
        else:
            m = u
        tl.store(spk_ptr + off, cast(s * g, spk_ptr.dtype.element_ty), mask=mask)
        tl.store(syn_ptr + off, sy, mask=mask)
        tl.store(mem_ptr + off, m, mask=mask)


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def synaptic_bwd_kernel(
    gspk_ptr, gsyn_ptr, gmem_ptr, syn_ptr, saved_ptr, flags_ptr, syn0_ptr, mem0_ptr,  # inputs
    alpha_ptr, beta_ptr, thr_ptr, g_ptr,
    gx_ptr, gsyn0_ptr, gmem0_ptr, palpha_ptr, pbeta_ptr, pthr_ptr, pg_ptr,            # outputs
    T, N, L, N_BUCKET, sg_a: "fp64", sg_b: "fp64",
    RESET: tl.constexpr, IMMEDIATE: tl.constexpr, SG: tl.constexpr, A_PN: tl.constexpr,
    BETA_PN: tl.constexpr, THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_SYN0: tl.constexpr,
    HAS_MEM0: tl.constexpr, HAS_GSPK: tl.constexpr, HAS_GSYN: tl.constexpr, HAS_GMEM: tl.constexpr,
    GRAD_ALPHA: tl.constexpr, BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    """``saved`` is forward's membrane (delayed reset) or pre-reset membrane u with the reset
    flags (immediate reset); ``syn`` forward's current, read only for alpha's gradient. The
    walk loads saved[t-1] once and carries it over as the next step's saved[t]."""
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, a, b, th, g, s_init, m_init = _start(alpha_ptr, beta_ptr, thr_ptr, g_ptr, syn0_ptr, mem0_ptr,
                                                     N, L, A_PN, BETA_PN, THR_PN, G_PN, HAS_SYN0, HAS_MEM0,
                                                     BLOCK)
    sga = tl.full([BLOCK], sg_a, CDT)
    sgb = tl.full([BLOCK], sg_b, CDT)
    carry_m = tl.zeros([BLOCK], dtype=CDT)
    carry_s = tl.zeros([BLOCK], dtype=CDT)
    ga = tl.zeros([BLOCK], dtype=CDT)
    gb = tl.zeros([BLOCK], dtype=CDT)
    gth = tl.zeros([BLOCK], dtype=CDT)
    gg = tl.zeros([BLOCK], dtype=CDT)
    u = tl.load(saved_ptr + (T - 1).to(tl.int64) * N + offs, mask=mask, other=0).to(CDT)
    for i in range(0, T):
        off = (T - 1 - i).to(tl.int64) * N + offs
        has_prev = i < T - 1
        pmask = mask & has_prev
        prev = tl.load(saved_ptr + off - N, mask=pmask, other=0).to(CDT)
        if IMMEDIATE:
            r_prev = tl.load(flags_ptr + off - N, mask=pmask, other=0).to(CDT)
            m0 = tl.where(has_prev, immediate_reset(prev, r_prev, heaviside(prev - th), th, g, RESET), m_init)
        else:
            m0 = tl.where(has_prev, prev, m_init)
        if GRAD_ALPHA:
            s0 = tl.where(has_prev, tl.load(syn_ptr + off - N, mask=pmask, other=0).to(CDT), s_init)
        if HAS_GMEM:
            gm = tl.load(gmem_ptr + off, mask=mask, other=0).to(CDT) + carry_m
        else:
            gm = carry_m
        if HAS_GSPK:
            gspk = tl.load(gspk_ptr + off, mask=mask, other=0).to(CDT)
        else:
            gspk = tl.zeros([BLOCK], dtype=CDT)
        if HAS_GSYN:
            gsy = tl.load(gsyn_ptr + off, mask=mask, other=0).to(CDT) + carry_s
        else:
            gsy = carry_s
        r = heaviside(m0 - th)
        z = u - th
        s = heaviside(z)
        gs = gspk * g
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
        gg += gspk * s
        gm1 = gu
        if RESET == RESET_SUBTRACT:
            gth -= r * gu
        elif RESET == RESET_ZERO:
            gm1 = gu * (1 - r)
        gs1 = gm1 + gsy
        tl.store(gx_ptr + off, cast(gs1, gx_ptr.dtype.element_ty), mask=mask)
        gb += gm1 * m0
        carry_m = gm1 * b
        if GRAD_ALPHA:
            ga += gs1 * s0
        carry_s = gs1 * a
        u = prev
    if HAS_MEM0:
        tl.store(gmem0_ptr + offs, carry_m, mask=mask)
    if HAS_SYN0:
        tl.store(gsyn0_ptr + offs, carry_s, mask=mask)
    tl.store(palpha_ptr + offs, ga, mask=mask)
    tl.store(pbeta_ptr + offs, gb, mask=mask)
    tl.store(pthr_ptr + offs, gth, mask=mask)
    tl.store(pg_ptr + offs, gg, mask=mask)


SYNAPTIC_FWD = C.FusedKernel(synaptic_fwd_kernel, _PARAM_FLAGS)
SYNAPTIC_BWD = C.FusedKernel(synaptic_bwd_kernel, {
    **_PARAM_FLAGS,
    "HAS_GSPK": lambda a: a["gspk_ptr"] is not None,
    "HAS_GSYN": lambda a: a["gsyn_ptr"] is not None,
    "HAS_GMEM": lambda a: a["gmem_ptr"] is not None,
    "GRAD_ALPHA": lambda a: a["syn_ptr"] is not None,
})

_NAMES = ("alpha", "beta", "threshold", "graded")


def synaptic_fwd(x, syn0, mem0, alpha, beta, threshold, graded, *, steps, reset_mode, reset_delay):
    C.check_dtype(x.dtype, "x")
    T, R, L = step_grid(x.shape, steps)
    N = R * L
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    dev = x.device
    params = [C.param_tensor(p, compute, dev, L, n) for p, n in zip((alpha, beta, threshold, graded), _NAMES)]
    immediate = is_immediate(reset_mode, reset_delay)
    spk = C.new(x.shape, x.dtype, dev)
    syn = C.new(x.shape, compute, dev)
    mem = C.new(x.shape, compute, dev)
    state = C.new(x.shape if immediate else (0,), compute, dev)
    flags = C.new(x.shape if immediate else (0,), torch.uint8, dev)
    if x.numel() == 0:
        return spk, syn, mem, state, flags
    syn0, mem0 = (None if s is None else s.to(compute).contiguous() for s in (syn0, mem0))
    with C.on_device(x):
        SYNAPTIC_FWD[C.grid(N)](
            x.contiguous(), syn0, mem0, *params, spk, syn, mem, state if immediate else None,
            flags if immediate else None, T, N, L, C.bucket(N),
            RESET=reset_mode, IMMEDIATE=immediate, enable_fp_fusion=False)
    return spk, syn, mem, state, flags


def synaptic_bwd(grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, alpha, beta, threshold,
                 graded, *, steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype):
    if not 0 <= int(surrogate_kind) <= NO_GRAD:
        raise ValueError(f"unknown surrogate kind {surrogate_kind}")
    immediate = is_immediate(reset_mode, reset_delay)
    saved = state if immediate else mem
    T, R, L = step_grid(saved.shape, steps)
    N = R * L
    compute = torch.float64 if x_dtype == torch.float64 else torch.float32
    dev = saved.device
    tensor_params = [isinstance(p, torch.Tensor) for p in (alpha, beta, threshold, graded)]
    params = [C.param_tensor(p, compute, dev, L, n) for p, n in zip((alpha, beta, threshold, graded), _NAMES)]
    grad_x = C.new(saved.shape, x_dtype, dev)
    grad_syn0 = None if syn0 is None else C.new(syn0.shape, compute, dev)
    grad_mem0 = None if mem0 is None else C.new(mem0.shape, compute, dev)
    partial = C.new((4, N), compute, dev)
    grads_in = [None if t is None else t.contiguous() for t in (grad_spk, grad_syn, grad_mem)]
    if saved.numel() == 0 or all(t is None for t in grads_in):
        grad_x.zero_()
        partial.zero_()
        for t in (grad_syn0, grad_mem0):
            if t is not None:
                t.zero_()
    else:
        sg_a, sg_b = C.surrogate_constants(surrogate_kind, surrogate_param)
        syn0, mem0 = (None if s is None else s.to(compute).contiguous() for s in (syn0, mem0))
        with C.on_device(saved):
            SYNAPTIC_BWD[C.grid(N)](
                *grads_in, None if syn is None else syn.contiguous(), saved.contiguous(),
                flags.contiguous() if immediate else None, syn0, mem0, *params,
                grad_x, grad_syn0, grad_mem0, partial[0], partial[1], partial[2], partial[3],
                T, N, L, C.bucket(N), sg_a, sg_b,
                RESET=reset_mode, IMMEDIATE=immediate, SG=int(surrogate_kind), enable_fp_fusion=False)
    grads = [C.reduce_param_grad(partial[k], p, R, L) if is_tensor else None
             for k, (p, is_tensor) in enumerate(zip(params, tensor_params))]
    if syn is None:
        grads[0] = None
    return (grad_x, grad_syn0, grad_mem0, *grads)


backends.register("synaptic", "triton", lambda: (synaptic_fwd, synaptic_bwd))
