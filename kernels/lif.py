"""The LIF family (snnTorch's ``Leaky``) in Triton: the whole T-step recurrence forward, and
its surrogate backward walking T in reverse, with their launchers.

Template: fla's ``fused_recurrent``. Each program owns ``BLOCK`` neurons of the flattened
``[R, L]`` neuron grid (``N = R * L``), keeps their membrane in fp32 registers (fp64 for fp64
input) and walks the ``T`` steps of ``x [T, R, L]``; the backward walks ``T`` in reverse over
the saved membrane, carrying the membrane gradient in registers. Semantics, operation order
and backward derivation are those of ``csrc/lif.cpp`` (api.md section 1).

Launchers: the contract of ``fastlif/ops/lif.py``; they register themselves with
``fastlif.backends`` (which imports this module on the first Triton call). What forward saves
follows ``fastlif.ops.lif.saved_layout``: with the default delayed reset the backward rebuilds
every step from the membrane alone (the ``mem`` output when it is in the compute dtype, else
the fp32 membrane in ``state``); an immediate reset keeps the pre-reset membrane ``u`` in
``state`` and the reset flag in ``flags`` (uint8).

``low_memory=True`` (bf16 ``state``, 2 bytes per neuron-step with the delayed reset) saves
``z = u - threshold`` rather than the membrane: the signs of z are the spikes and reset flags,
so backward recovers them exactly (bf16 rounding keeps the sign), and z keeps its relative
precision near the threshold, where the surrogates peak; only the membrane value itself (in
the beta gradient and the zero reset) carries bf16 rounding. Measured against the fp32 path:
normwise gradient errors ~1e-3 (x, beta, threshold), the graded-factor gradient exact.

Exactness: forward values use snnTorch's operation order with no FMA contraction
(``enable_fp_fusion=False`` at launch) and IEEE division, so fp32 spikes and membrane equal
PyTorch eager bit for bit. Parameter gradients are written as per-neuron partial sums (over T)
and reduced afterwards by ``torch.sum`` in fp64: no float atomics.

Launches allocate with ``torch.empty`` and never synchronise or read device values on the
host, so they can be captured in CUDA graphs; ``T`` is not specialised on, so a new sequence
length reuses the compiled kernel.
"""
import torch
import triton
import triton.language as tl

from fastlif import backends
from fastlif.codes import NO_GRAD, RESET_CODES, is_immediate
from fastlif.layout import compute_dtype, grid as step_grid, saved_layout

from . import common as C
from .common import RESET_SUBTRACT, RESET_ZERO, cast, heaviside, immediate_reset, load_param

_PARAM_FLAGS = {
    "BETA_PN": lambda a: a["beta_ptr"].numel() > 1,
    "THR_PN": lambda a: a["thr_ptr"].numel() > 1,
    "G_PN": lambda a: a["g_ptr"].numel() > 1,
    "HAS_MEM0": lambda a: a["mem0_ptr"] is not None,
}


@triton.jit
def _block_start(beta_ptr, thr_ptr, g_ptr, mem0_ptr, N, L, BETA_PN: tl.constexpr,
                 THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_MEM0: tl.constexpr,
                 BLOCK: tl.constexpr):
    """What forward and backward both start from: this program's neurons, their parameters
    and initial membrane."""
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, lidx = C.block_offsets(N, L, BLOCK)
    b = load_param(beta_ptr, lidx, mask, BETA_PN, CDT)
    th = load_param(thr_ptr, lidx, mask, THR_PN, CDT)
    g = load_param(g_ptr, lidx, mask, G_PN, CDT)
    m0 = C.load_state(mem0_ptr, offs, mask, HAS_MEM0, CDT, BLOCK)
    return offs, mask, lidx, b, th, g, m0


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def lif_fwd_kernel(
    x_ptr, mem0_ptr, beta_ptr, thr_ptr, g_ptr,  # inputs
    spk_ptr, mem_ptr, state_ptr, flags_ptr,     # outputs (x's shape; state/flags optional)
    T, N, L, N_BUCKET, sx_t, sx_r, sx_l,
    RESET: tl.constexpr, IMMEDIATE: tl.constexpr,
    BETA_PN: tl.constexpr, THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_MEM0: tl.constexpr,
    X_CONTIG: tl.constexpr, SAVE_STATE: tl.constexpr, STATE_Z: tl.constexpr,
    BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    CDT: tl.constexpr = beta_ptr.dtype.element_ty  # compute dtype: fp32 (fp64 for fp64 input)
    offs, mask, lidx, b, th, g, m = _block_start(beta_ptr, thr_ptr, g_ptr, mem0_ptr, N, L,
                                                   BETA_PN, THR_PN, G_PN, HAS_MEM0, BLOCK)
    if X_CONTIG:
        x_off = offs
    else:
        x_off = (offs // L) * sx_r + lidx * sx_l
    # Offsets are computed from the step index, not carried from step to step: the compiler
    # cannot see the alignment of a loop-carried offset, and then stores one element per thread
    # through a shared-memory layout conversion (two bar.sync per step).
    if PREFETCH:
        x_next = tl.load(x_ptr + x_off, mask=mask, other=0)
    for t in range(0, T):
        t64 = tl.cast(t, tl.int64)
        if PREFETCH:
            x = x_next.to(CDT)
            x_next = tl.load(x_ptr + (t64 + 1) * sx_t + x_off, mask=mask & (t + 1 < T), other=0)
        else:
            x = tl.load(x_ptr + t64 * sx_t + x_off, mask=mask, other=0).to(CDT)
        o_off = t64 * N + offs
        r = heaviside(m - th)
        if RESET == RESET_SUBTRACT:
            u = b * m + x - r * th
        elif RESET == RESET_ZERO:
            u = b * ((1 - r) * m) + x
        else:
            u = b * m + x
        z = u - th
        s = heaviside(z)
        if SAVE_STATE:  # u (= m with a delayed reset), or z with low_memory
            if STATE_Z:
                tl.store(state_ptr + o_off, cast(z, tl.bfloat16), mask=mask)
            else:
                tl.store(state_ptr + o_off, cast(u, state_ptr.dtype.element_ty), mask=mask)
        if IMMEDIATE:
            m = immediate_reset(u, r, s, th, g, RESET)
            tl.store(flags_ptr + o_off, r.to(tl.uint8), mask=mask)
        else:
            m = u
        tl.store(spk_ptr + o_off, cast(s * g, spk_ptr.dtype.element_ty), mask=mask)
        tl.store(mem_ptr + o_off, cast(m, mem_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_loads(gmem_ptr, gspk_ptr, saved_ptr, flags_ptr, off, N, mask, has_prev,
               IMMEDIATE: tl.constexpr, HAS_GSPK: tl.constexpr, HAS_GMEM: tl.constexpr):
    """What backward step t reads, in storage dtypes: grad_mem[t], grad_spk[t] (zeros when
    absent), saved[t-1] and, for an immediate reset, flags[t-1] (zeros at t = 0)."""
    if HAS_GMEM:
        gm = tl.load(gmem_ptr + off, mask=mask, other=0)
    else:
        gm = tl.zeros(off.shape, dtype=tl.float32)
    if HAS_GSPK:
        gspk = tl.load(gspk_ptr + off, mask=mask, other=0)
    else:
        gspk = tl.zeros(off.shape, dtype=tl.float32)
    pmask = mask & has_prev
    prev = tl.load(saved_ptr + off - N, mask=pmask, other=0)
    if IMMEDIATE:
        rp = tl.load(flags_ptr + off - N, mask=pmask, other=0)
    else:
        rp = tl.zeros(off.shape, dtype=tl.uint8)
    return gm, gspk, prev, rp


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def lif_bwd_kernel(
    gspk_ptr, gmem_ptr, saved_ptr, flags_ptr, mem0_ptr, beta_ptr, thr_ptr, g_ptr,  # inputs
    gx_ptr, gmem0_ptr, pbeta_ptr, pthr_ptr, pg_ptr,                                # outputs
    T, N, L, N_BUCKET, sg_a: "fp64", sg_b: "fp64",
    RESET: tl.constexpr, IMMEDIATE: tl.constexpr, SG: tl.constexpr,
    BETA_PN: tl.constexpr, THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_MEM0: tl.constexpr,
    HAS_GSPK: tl.constexpr, HAS_GMEM: tl.constexpr, SAVED_Z: tl.constexpr,
    BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    """``saved`` is the membrane m[t] (delayed reset) or the pre-reset membrane u[t]
    (immediate reset, with the reset flags r[t] in ``flags``); step t is rebuilt from
    saved[t], saved[t-1] (and flags), and each value is loaded once: the walk carries
    saved[t-1] over as the next step's saved[t]. With SAVED_Z (low_memory) ``saved`` holds
    z = saved - threshold instead, in bf16: spikes and reset flags (signs of z) are then
    exact, and z keeps its relative precision near the threshold, where surrogates peak."""
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    offs, mask, lidx, b, th, g, m_init = _block_start(beta_ptr, thr_ptr, g_ptr, mem0_ptr, N, L,
                                                        BETA_PN, THR_PN, G_PN, HAS_MEM0, BLOCK)
    sga, sgb = C.surrogate_vectors(sg_a, sg_b, CDT, BLOCK)
    carry = tl.zeros([BLOCK], dtype=CDT)  # dL/dm[t], flowing back through the next step
    gb = tl.zeros([BLOCK], dtype=CDT)
    gth = tl.zeros([BLOCK], dtype=CDT)
    gg = tl.zeros([BLOCK], dtype=CDT)
    off = (T - 1).to(tl.int64) * N + offs  # step T-1 (see the forward on step offsets)
    u = tl.load(saved_ptr + off, mask=mask, other=0).to(CDT)
    if SAVED_Z:
        zc = u
        u = zc + th
    else:
        zc = u - th
    if IMMEDIATE:
        r = tl.load(flags_ptr + off, mask=mask, other=0).to(CDT)
    if PREFETCH:  # step T-1's loads; each iteration then loads the step after (t-1)
        gm_next, gspk_next, prev_next, rp_next = _bwd_loads(
            gmem_ptr, gspk_ptr, saved_ptr, flags_ptr, off, N, mask, T > 1,
            IMMEDIATE, HAS_GSPK, HAS_GMEM)
    for i in range(0, T):
        off = (T - 1 - i).to(tl.int64) * N + offs
        has_prev = i < T - 1
        if PREFETCH:
            gm_in, gspk_in, prev_in, rp_in = gm_next, gspk_next, prev_next, rp_next
            gm_next, gspk_next, prev_next, rp_next = _bwd_loads(
                gmem_ptr, gspk_ptr, saved_ptr, flags_ptr, off - N, N, mask & has_prev,
                i < T - 2, IMMEDIATE, HAS_GSPK, HAS_GMEM)
        else:
            gm_in, gspk_in, prev_in, rp_in = _bwd_loads(
                gmem_ptr, gspk_ptr, saved_ptr, flags_ptr, off, N, mask, has_prev,
                IMMEDIATE, HAS_GSPK, HAS_GMEM)
        if SAVED_Z:
            z_prev = prev_in.to(CDT)
            prev = z_prev + th
        else:
            prev = prev_in.to(CDT)
            z_prev = prev - th
        if IMMEDIATE:
            r_prev = rp_in.to(CDT)
            m0 = tl.where(has_prev, immediate_reset(prev, r_prev, heaviside(z_prev), th, g, RESET),
                          m_init)
        else:
            m0 = tl.where(has_prev, prev, m_init)
            r = heaviside(tl.where(has_prev, z_prev, m_init - th))
        z = zc
        s = heaviside(z)
        gm = gm_in.to(CDT) + carry
        gspk = gspk_in.to(CDT)
        gs = gspk * g  # reaches the Heaviside output
        gu = gm        # reaches the pre-reset membrane u
        if IMMEDIATE:
            if RESET == RESET_SUBTRACT:  # m = u - (s - r)*thr
                gs -= gm * th
                gth -= gm * (s - r)
            elif RESET == RESET_ZERO:  # m = u - (s - r)*u
                gs -= gm * u
                gu = gm * (1 - (s - r))
        gz = C.surrogate_backward(gs, z, sga, sgb, SG)
        gu += gz
        gth -= gz
        if RESET == RESET_SUBTRACT:
            gth -= r * gu
        gg += gspk * s
        tl.store(gx_ptr + off, cast(gu, gx_ptr.dtype.element_ty), mask=mask)
        if RESET == RESET_ZERO:
            carry = gu * b * (1 - r)
            gb += gu * ((1 - r) * m0)
        else:
            carry = gu * b
            gb += gu * m0
        u = prev
        zc = z_prev
        if IMMEDIATE:
            r = r_prev
    if HAS_MEM0:
        tl.store(gmem0_ptr + offs, carry, mask=mask)
    tl.store(pbeta_ptr + offs, gb, mask=mask)
    tl.store(pthr_ptr + offs, gth, mask=mask)
    tl.store(pg_ptr + offs, gg, mask=mask)


LIF_FWD = C.FusedKernel(lif_fwd_kernel, {
    **_PARAM_FLAGS,
    "X_CONTIG": lambda a: a["x_ptr"].is_contiguous(),
    "SAVE_STATE": lambda a: a["state_ptr"] is not None,
    # low_memory: the state is saved as z = u - threshold in bf16
    "STATE_Z": lambda a: a["state_ptr"] is not None and a["state_ptr"].dtype == torch.bfloat16,
})
LIF_BWD = C.FusedKernel(lif_bwd_kernel, {
    **_PARAM_FLAGS,
    "HAS_GSPK": lambda a: a["gspk_ptr"] is not None,
    "HAS_GMEM": lambda a: a["gmem_ptr"] is not None,
})


# ----------------------------------------------------------------------------------------
# Launchers


def _check_options(reset_mode):
    if reset_mode not in RESET_CODES.values():
        raise ValueError(f"reset_mode must be 0 (subtract), 1 (zero) or 2 (none), got {reset_mode}")


def lif_fwd(x, mem0, beta, threshold, graded, *, steps, reset_mode, reset_delay, low_memory,
            mem_fp32):
    C.check_dtype(x.dtype, "x")
    _check_options(reset_mode)
    T, R, L = step_grid(x.shape, steps)
    N = R * L
    compute = compute_dtype(x.dtype)
    dev = x.device
    beta, threshold, graded = (C.launch_param(p, compute, dev, L, name) for p, name in
                               ((beta, "beta"), (threshold, "threshold"), (graded, "graded")))
    state_shape, state_dtype, flags_shape = saved_layout(x.shape, x.dtype, reset_mode, reset_delay,
                                                         low_memory, mem_fp32)
    spk = C.new(x.shape, x.dtype, dev)
    mem = C.new(x.shape, compute if mem_fp32 else x.dtype, dev)
    state = C.new(state_shape, state_dtype, dev)
    flags = C.new(flags_shape, torch.uint8, dev)
    if x.numel() == 0:
        return spk, mem, state, flags
    immediate = is_immediate(reset_mode, reset_delay)
    x3 = x.reshape(T, R, L)
    mem0 = None if mem0 is None else mem0.to(compute).contiguous()
    with C.on_device(x):
        LIF_FWD[C.grid(N)](
            x3, mem0, beta, threshold, graded,
            spk, mem, state if state.numel() else None, flags if immediate else None,
            T, N, L, C.bucket(N), x3.stride(0), x3.stride(1), x3.stride(2),
            RESET=reset_mode, IMMEDIATE=immediate, enable_fp_fusion=False)
    return spk, mem, state, flags


def lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded, *, steps,
            reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype):
    """A None ``grad_spk`` or ``grad_mem`` stands for zeros and is not read."""
    if not 0 <= int(surrogate_kind) <= NO_GRAD:
        raise ValueError(f"unknown surrogate kind {surrogate_kind}")
    _check_options(reset_mode)
    immediate = is_immediate(reset_mode, reset_delay)
    saved = state if (immediate or state.numel()) else mem
    T, R, L = step_grid(saved.shape, steps)
    N = R * L
    compute = compute_dtype(x_dtype)
    dev = saved.device
    tensor_params = [isinstance(p, torch.Tensor) for p in (beta, threshold, graded)]
    beta, threshold, graded = (C.launch_param(p, compute, dev, L, name) for p, name in
                               ((beta, "beta"), (threshold, "threshold"), (graded, "graded")))
    saved_z = state.numel() > 0 and state.dtype == torch.bfloat16  # low_memory: z in bf16
    grad_x = C.new(saved.shape, x_dtype, dev)
    grad_mem0 = None if mem0 is None else C.new(mem0.shape, compute, dev)
    partial = C.new((3, N), compute, dev)
    if saved.numel() == 0 or (grad_spk is None and grad_mem is None):
        grad_x.zero_()
        partial.zero_()
        if grad_mem0 is not None:
            grad_mem0.zero_()
    else:
        for g, name in ((grad_spk, "grad_spk"), (grad_mem, "grad_mem")):
            if g is not None and tuple(g.shape) != tuple(saved.shape):
                raise ValueError(f"{name} must have shape {tuple(saved.shape)}, got {tuple(g.shape)}")
        if immediate and tuple(flags.shape) != tuple(saved.shape):
            raise ValueError(f"backward needs the reset flags forward saved, of shape "
                             f"{tuple(saved.shape)}; got {tuple(flags.shape)}")
        sg_a, sg_b = C.surrogate_constants(surrogate_kind, surrogate_param)
        mem0 = None if mem0 is None else mem0.to(compute).contiguous()
        with C.on_device(saved):
            LIF_BWD[C.grid(N)](
                None if grad_spk is None else grad_spk.contiguous(),
                None if grad_mem is None else grad_mem.contiguous(),
                saved.contiguous(), flags.contiguous() if immediate else None, mem0,
                beta, threshold, graded,
                grad_x, grad_mem0, partial[0], partial[1], partial[2],
                T, N, L, C.bucket(N), sg_a, sg_b,
                RESET=reset_mode, IMMEDIATE=immediate, SG=int(surrogate_kind), SAVED_Z=saved_z,
                enable_fp_fusion=False)
    grads = [C.reduce_param_grad(partial[k], p, R, L) if is_tensor else None
             for k, (p, is_tensor) in enumerate(zip((beta, threshold, graded), tensor_params))]
    return (grad_x, grad_mem0, *grads)


backends.register("lif", "triton", lambda: (lif_fwd, lif_bwd))
