"""Fused LIF (snnTorch ``Leaky``) over a whole sequence, in Triton: forward and backward.

Template: fla's ``fused_recurrent``. Each program owns ``BLOCK`` neurons of the flattened
``[R, L]`` neuron grid (``N = R * L``), keeps their membrane in fp32 registers (fp64 for fp64
input) and walks the ``T`` steps of ``x [T, R, L]``; the backward walks ``T`` in reverse over
the saved membrane, carrying the membrane gradient in registers. Semantics, operation order
and backward derivation are those of ``csrc/lif_kernel.h`` (api.md section 1):

    r     = H(m[t-1] - thr)                               reset flag, no gradient
    u     = b*m + x - r*thr | b*((1-r)*m) + x | b*m + x   subtract | zero | none
    spk   = H(u - thr) * g                                surrogate gradient backward
    m[t]  = u, or with reset_delay=False: u - d*thr | u - d*u,  d = spk/g - r

Launcher contract (same as ``fastlif/cpu.py``, see ``fastlif/ops.py``)::

    lif_fwd(x, mem0, beta, threshold, graded, reset_mode, reset_delay, low_memory)
        -> (spk, mem, state, flags)
    lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded,
            reset_mode, reset_delay, surrogate_kind, surrogate_param)
        -> (grad_x, grad_mem0 | empty, grad_beta, grad_threshold, grad_graded)

What forward saves follows ``fastlif.ops.saved_layout``: with the default delayed reset the
backward rebuilds every step from the membrane alone (the ``mem`` output for fp32/fp64 input,
the fp32 membrane in ``state`` for fp16/bf16 input); an immediate reset also keeps the
pre-reset membrane ``u`` in ``state`` and the reset flag in ``flags`` (uint8).

``low_memory=True`` (bf16 ``state``, 2 bytes per neuron-step with the delayed reset) saves
``z = u - threshold`` rather than the membrane: the signs of z are the spikes and reset flags,
so backward recovers them exactly (bf16 rounding keeps the sign), and z keeps its relative
precision near the threshold, where the surrogates peak; only the membrane value itself (in
the beta gradient and the zero reset) carries bf16 rounding. Measured against the fp32 path:
normwise gradient errors ~1e-3 (x, beta, threshold), the graded-factor gradient exact. When
``saved_layout`` gives no state (bf16 input, delayed reset), backward reuses the bf16 ``mem``
output instead, and spikes near the threshold may then be rebuilt wrongly.

Exactness: forward values use snnTorch's operation order with no FMA contraction
(``enable_fp_fusion=False`` at launch) and IEEE division, so fp32 spikes and membrane equal
PyTorch eager bit for bit. Parameter gradients (beta, threshold, graded factor) are written
as per-neuron partial sums (over T) and reduced afterwards by ``torch.sum`` in fp64: no float
atomics, results do not depend on the block size the autotuner picks.

Launches allocate with ``torch.empty`` and never synchronise or read device values on the
host, so they can be captured in CUDA graphs; ``T`` is not specialised on, so a new sequence
length reuses the compiled kernel. Environment: ``FASTLIF_AUTOTUNE=0`` (read at import)
replaces autotuning by one fixed config; under ``TRITON_INTERPRET=1`` that is always so.
"""
import math
import os

import torch
import triton
import triton.language as tl

# Integer codes: keep in step with fastlif/ops.py, fastlif/surrogate.py and csrc/lif_kernel.h.
RESET_SUBTRACT, RESET_ZERO, RESET_NONE = 0, 1, 2
ATAN, FAST_SIGMOID, SIGMOID, TRIANGULAR, STRAIGHT_THROUGH, NO_GRAD = range(6)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _autotuning():
    return not _interpreting() and os.environ.get("FASTLIF_AUTOTUNE", "1") not in ("", "0")


# Element-wise and memory bound: 4 or 8 neurons per thread (16/32-byte vector accesses in
# fp32), blocks small enough to fill the GPU at small neuron counts. PREFETCH issues the loads
# of step t+1 before the stores of step t: the compiler cannot move a load above a store that
# may alias it, so without it each thread has one step's loads in flight at a time.
AUTOTUNE_CONFIGS = [
    triton.Config({"BLOCK": b, "PREFETCH": p}, num_warps=w)
    for b, w, prefetch in ((128, 1, (True,)), (256, 2, (True,)), (512, 4, (False, True)),
                           (1024, 4, (False, True)), (1024, 8, (False, True)),
                           (2048, 8, (True,)))
    for p in prefetch
]
# One fixed config under the interpreter (it runs programs one after another, so fewer,
# larger blocks are faster) and when autotuning is switched off (FASTLIF_AUTOTUNE=0).
FIXED_CONFIG = triton.Config({"BLOCK": 256, "PREFETCH": True}, num_warps=2) if _interpreting() \
    else triton.Config({"BLOCK": 1024, "PREFETCH": True}, num_warps=4)


def _configs():
    return list(AUTOTUNE_CONFIGS) if _autotuning() else [FIXED_CONFIG]


def _is_per_neuron(p):
    return p.numel() > 1


_PARAM_FLAGS = {
    "BETA_PN": lambda a: _is_per_neuron(a["beta_ptr"]),
    "THR_PN": lambda a: _is_per_neuron(a["thr_ptr"]),
    "G_PN": lambda a: _is_per_neuron(a["g_ptr"]),
    "HAS_MEM0": lambda a: a["mem0_ptr"] is not None,
}


@triton.jit
def _load_param(ptr, lidx, mask, PER_NEURON: tl.constexpr, CDT: tl.constexpr):
    if PER_NEURON:
        return tl.load(ptr + lidx, mask=mask, other=1).to(CDT)  # 1: no 0/0 in masked lanes
    else:
        return tl.load(ptr).to(CDT)


@triton.jit
def _block_start(beta_ptr, thr_ptr, g_ptr, mem0_ptr, N, L, BETA_PN: tl.constexpr,
                 THR_PN: tl.constexpr, G_PN: tl.constexpr, HAS_MEM0: tl.constexpr,
                 BLOCK: tl.constexpr):
    """What forward and backward both start from: this program's neurons (int64 offsets,
    mask, index along the last dimension), their parameters and initial membrane."""
    CDT: tl.constexpr = beta_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < N
    lidx = offs % L
    b = _load_param(beta_ptr, lidx, mask, BETA_PN, CDT)
    th = _load_param(thr_ptr, lidx, mask, THR_PN, CDT)
    g = _load_param(g_ptr, lidx, mask, G_PN, CDT)
    if HAS_MEM0:
        m0 = tl.load(mem0_ptr + offs, mask=mask, other=0).to(CDT)
    else:
        m0 = tl.zeros([BLOCK], dtype=CDT)
    return offs, mask, lidx, b, th, g, m0


@triton.jit
def _div(a, b):
    """IEEE round-to-nearest division (Triton's fp32 `/` may be approximate on GPUs; fp64 `/`
    is already correctly rounded, and the precise op exists for fp32 only)."""
    if b.dtype == tl.float64:
        return a / b
    else:
        return tl.fdiv(a, b, ieee_rounding=True)


@triton.jit
def _cast(v, DT: tl.constexpr):
    """``v.to(DT)`` rounding to nearest even. bf16 is rounded with integer ops (as c10 does):
    the same bits on GPUs and in the interpreter, whose own fp32->bf16 cast truncates."""
    if DT == tl.bfloat16:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = (bits + ((bits >> 16) & 1) + 0x7FFF) >> 16
        quiet_nan = (bits >> 16) | 0x40
        return tl.where(v != v, quiet_nan, rounded).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(DT)


@triton.jit
def _heaviside(z):
    return (z > 0).to(z.dtype)


@triton.jit
def _after_reset(u, r, s, th, g, RESET: tl.constexpr):
    """Membrane after an immediate reset (reset_delay=False): d = (s*g)/g - r, IEEE division."""
    d = _div(s * g, g) - r
    if RESET == 0:
        return u - d * th
    elif RESET == 1:
        return u - d * u
    else:
        return u


@triton.jit
def _surrogate(z, sg_a, sg_b, SG: tl.constexpr):
    """dS/dz in snnTorch's operation order (fastlif/surrogate.py). sg_a, sg_b: host constants:
    atan: alpha/2, pi/2*alpha; fast_sigmoid: slope, -; sigmoid: slope, -slope;
    triangular: threshold, -."""
    if SG == 0:  # atan
        k = sg_b * z
        return _div(tl.zeros_like(z) + sg_a, 1 + k * k)
    elif SG == 1:  # fast_sigmoid
        d = sg_a * tl.abs(z) + 1
        return _div(tl.zeros_like(z) + 1, d * d)
    elif SG == 2:  # sigmoid
        e = tl.exp(sg_b * z)
        return _div(sg_a * e, (e + 1) * (e + 1))
    elif SG == 3:  # triangular
        return tl.where(z >= 0, -sg_a, sg_a).to(z.dtype)
    elif SG == 4:  # straight-through
        return tl.zeros_like(z) + 1
    else:  # disabled
        return tl.zeros_like(z)


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


@triton.heuristics({
    **_PARAM_FLAGS,
    "X_CONTIG": lambda a: a["x_ptr"].is_contiguous(),
    "SAVE_STATE": lambda a: a["state_ptr"] is not None,
    # low_memory: the state is saved as z = u - threshold in bf16 (see lif_fwd)
    "STATE_Z": lambda a: a["state_ptr"] is not None and a["state_ptr"].dtype == torch.bfloat16,
})
@triton.autotune(configs=_configs(), key=["N"])
@triton.jit(do_not_specialize=["T"])
def lif_fwd_kernel(
    x_ptr, mem0_ptr, beta_ptr, thr_ptr, g_ptr,  # inputs
    spk_ptr, mem_ptr, state_ptr, flags_ptr,     # outputs ([T, N]; state/flags optional)
    T, N, L, sx_t, sx_r, sx_l,
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
    o_off = offs
    if PREFETCH:
        x_next = tl.load(x_ptr + x_off, mask=mask, other=0)
    for t in range(0, T):
        if PREFETCH:
            x = x_next.to(CDT)
            x_next = tl.load(x_ptr + x_off + sx_t, mask=mask & (t + 1 < T), other=0)
        else:
            x = tl.load(x_ptr + x_off, mask=mask, other=0).to(CDT)
        r = _heaviside(m - th)
        if RESET == 0:
            u = b * m + x - r * th
        elif RESET == 1:
            u = b * ((1 - r) * m) + x
        else:
            u = b * m + x
        z = u - th
        s = _heaviside(z)
        if SAVE_STATE:  # u (= m with a delayed reset), or z with low_memory
            if STATE_Z:
                tl.store(state_ptr + o_off, _cast(z, tl.bfloat16), mask=mask)
            else:
                tl.store(state_ptr + o_off, _cast(u, state_ptr.dtype.element_ty), mask=mask)
        if IMMEDIATE:
            m = _after_reset(u, r, s, th, g, RESET)
            tl.store(flags_ptr + o_off, r.to(tl.uint8), mask=mask)
        else:
            m = u
        tl.store(spk_ptr + o_off, _cast(s * g, spk_ptr.dtype.element_ty), mask=mask)
        tl.store(mem_ptr + o_off, _cast(m, mem_ptr.dtype.element_ty), mask=mask)
        x_off += sx_t
        o_off += N


@triton.heuristics({
    **_PARAM_FLAGS,
    "HAS_GSPK": lambda a: a["gspk_ptr"] is not None,
    "HAS_GMEM": lambda a: a["gmem_ptr"] is not None,
})
@triton.autotune(configs=_configs(), key=["N"])
@triton.jit(do_not_specialize=["T"])
def lif_bwd_kernel(
    gspk_ptr, gmem_ptr, saved_ptr, flags_ptr, mem0_ptr, beta_ptr, thr_ptr, g_ptr,  # inputs
    gx_ptr, gmem0_ptr, pbeta_ptr, pthr_ptr, pg_ptr,                                # outputs
    T, N, L, sg_a, sg_b,
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
    carry = tl.zeros([BLOCK], dtype=CDT)  # dL/dm[t], flowing back through the next step
    gb = tl.zeros([BLOCK], dtype=CDT)
    gth = tl.zeros([BLOCK], dtype=CDT)
    gg = tl.zeros([BLOCK], dtype=CDT)
    off = (T - 1).to(tl.int64) * N + offs
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
            m0 = tl.where(has_prev,
                          _after_reset(prev, r_prev, _heaviside(z_prev), th, g, RESET), m_init)
        else:
            m0 = tl.where(has_prev, prev, m_init)
            r = _heaviside(tl.where(has_prev, z_prev, m_init - th))
        z = zc
        s = _heaviside(z)
        gm = gm_in.to(CDT) + carry
        gspk = gspk_in.to(CDT)
        gs = gspk * g  # reaches the Heaviside output
        gu = gm        # reaches the pre-reset membrane u
        if IMMEDIATE:
            if RESET == 0:  # m = u - (s - r)*thr
                gs -= gm * th
                gth -= gm * (s - r)
            elif RESET == 1:  # m = u - (s - r)*u
                gs -= gm * u
                gu = gm * (1 - (s - r))
        gz = gs * _surrogate(z, sg_a, sg_b, SG)
        gu += gz
        gth -= gz
        if RESET == 0:
            gth -= r * gu
        gg += gspk * s
        tl.store(gx_ptr + off, _cast(gu, gx_ptr.dtype.element_ty), mask=mask)
        if RESET == 1:
            carry = gu * b * (1 - r)
            gb += gu * ((1 - r) * m0)
        else:
            carry = gu * b
            gb += gu * m0
        u = prev
        zc = z_prev
        if IMMEDIATE:
            r = r_prev
        off -= N
    if HAS_MEM0:
        tl.store(gmem0_ptr + offs, carry, mask=mask)
    tl.store(pbeta_ptr + offs, gb, mask=mask)
    tl.store(pthr_ptr + offs, gth, mask=mask)
    tl.store(pg_ptr + offs, gg, mask=mask)


# ----------------------------------------------------------------------------------------
# Launchers


def _new(shape, dtype, device):
    """Every output is allocated here (tests swap in a NaN-filled version)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _check_dtype(dtype, what):
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fastlif triton backend: {what} must be float32, bfloat16, float16 or "
                        f"float64, got {dtype}")


def _immediate(reset_mode, reset_delay):
    return not reset_delay and reset_mode != RESET_NONE


class _on_device:
    """Launch on the tensor's own GPU (Triton uses the current device); no-op on CPU."""

    def __init__(self, t):
        self.ctx = torch.cuda.device(t.device) if t.is_cuda else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _grid(N):
    return lambda meta: (triton.cdiv(N, meta["BLOCK"]),)


def lif_fwd(x, mem0, beta, threshold, graded, reset_mode, reset_delay, low_memory):
    from fastlif.ops import saved_layout  # lazily: fastlif.ops imports this module lazily too
    _check_dtype(x.dtype, "x")
    if x.dim() != 3:
        raise ValueError(f"x must be [T, R, L], got shape {tuple(x.shape)}")
    if reset_mode not in (RESET_SUBTRACT, RESET_ZERO, RESET_NONE):
        raise ValueError(f"reset_mode must be 0 (subtract), 1 (zero) or 2 (none), got {reset_mode}")
    T, R, L = x.shape
    N = R * L
    compute = beta.dtype
    for p, name in ((beta, "beta"), (threshold, "threshold"), (graded, "graded")):
        if p.numel() not in (1, L) or p.dtype != compute:
            raise ValueError(f"{name} must hold 1 or {L} values of dtype {compute}, got "
                             f"{tuple(p.shape)} {p.dtype}")
    dev = x.device
    state_shape, state_dtype, flags_shape = saved_layout(x.shape, x.dtype, reset_mode, reset_delay,
                                                         low_memory)
    spk = _new(x.shape, x.dtype, dev)
    mem = _new(x.shape, x.dtype, dev)
    state = _new(state_shape, state_dtype, dev)
    flags = _new(flags_shape, torch.uint8, dev)
    if x.numel() == 0:
        return spk, mem, state, flags
    immediate = _immediate(reset_mode, reset_delay)
    beta, threshold, graded = (p.contiguous() for p in (beta, threshold, graded))
    mem0 = None if mem0 is None else mem0.to(compute).contiguous()
    with _on_device(x):
        lif_fwd_kernel[_grid(N)](
            x, mem0, beta, threshold, graded,
            spk, mem, state if state.numel() else None, flags if immediate else None,
            T, N, L, x.stride(0), x.stride(1), x.stride(2),
            RESET=reset_mode, IMMEDIATE=immediate, enable_fp_fusion=False)
    return spk, mem, state, flags


def _surrogate_constants(kind, param):
    """Host-side constants of each surrogate, so the kernel computes in snnTorch's order."""
    p = float(param)
    if kind == ATAN:
        return p / 2, math.pi / 2 * p
    if kind == SIGMOID:
        return p, -p
    return p, 0.0


def _reduce_param_grad(partial, param, R, L):
    """Sum per-neuron partials [R*L] over rows (per-neuron param) or all (scalar), in fp64,
    in torch's fixed order: deterministic."""
    if param.numel() == 1:
        return partial.sum(dtype=torch.float64).to(param.dtype).reshape(param.shape)
    return partial.view(R, L).sum(0, dtype=torch.float64).to(param.dtype).reshape(param.shape)


def lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded,
            reset_mode, reset_delay, surrogate_kind, surrogate_param):
    """An empty ``grad_spk`` or ``grad_mem`` (numel 0) stands for zeros and is not read."""
    if not 0 <= int(surrogate_kind) <= NO_GRAD:
        raise ValueError(f"unknown surrogate kind {surrogate_kind}")
    has_gspk, has_gmem = grad_spk.numel() > 0, grad_mem.numel() > 0
    ref = grad_spk if has_gspk or not has_gmem else grad_mem
    _check_dtype(ref.dtype, "grad_spk")
    if ref.dim() != 3:
        raise ValueError(f"grad_spk must be [T, R, L], got shape {tuple(ref.shape)}")
    T, R, L = ref.shape
    N = R * L
    compute = beta.dtype
    dev = ref.device
    immediate = _immediate(reset_mode, reset_delay)
    saved = state if (immediate or state.numel()) else mem
    saved_z = state.numel() > 0 and state.dtype == torch.bfloat16  # low_memory: z in bf16
    grad_x = _new(ref.shape, ref.dtype, dev)
    grad_mem0 = _new(mem0.shape if mem0 is not None else (0,), compute, dev)
    partial = _new((3, N), compute, dev)
    if ref.numel() == 0 or not (has_gspk or has_gmem):
        grad_x.zero_()
        grad_mem0.zero_()
        partial.zero_()
    else:
        if tuple(saved.shape) != tuple(ref.shape) or (immediate and tuple(flags.shape) != tuple(ref.shape)):
            raise ValueError(f"backward needs what forward saved, of shape {tuple(ref.shape)}; got "
                             f"state {tuple(state.shape)}, mem {tuple(mem.shape)}, flags "
                             f"{tuple(flags.shape)}")
        sg_a, sg_b = _surrogate_constants(surrogate_kind, surrogate_param)
        beta, threshold, graded = (p.contiguous() for p in (beta, threshold, graded))
        mem0 = None if mem0 is None else mem0.to(compute).contiguous()
        with _on_device(ref):
            lif_bwd_kernel[_grid(N)](
                grad_spk.contiguous() if has_gspk else None,
                grad_mem.contiguous() if has_gmem else None,
                saved.contiguous(), flags.contiguous() if immediate else None, mem0,
                beta, threshold, graded,
                grad_x, grad_mem0 if mem0 is not None else None, partial[0], partial[1], partial[2],
                T, N, L, sg_a, sg_b,
                RESET=reset_mode, IMMEDIATE=immediate, SG=int(surrogate_kind), SAVED_Z=saved_z,
                enable_fp_fusion=False)
    grads = [_reduce_param_grad(partial[k], p, R, L) for k, p in enumerate((beta, threshold, graded))]
    return (grad_x, grad_mem0, *grads)
