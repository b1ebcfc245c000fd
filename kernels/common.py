"""What the Triton kernels of every op family share: the integer codes, the per-block prologue,
exact arithmetic helpers, the surrogates, and how a kernel is configured and launched.

Configs: element-wise and memory bound, 16 bytes of the compute dtype per thread (4 neurons
in fp32, 2 in fp64: one vector access) in every config; a config picks the warps, and BLOCK
follows. With more per thread, kernels that mix element widths (uint8 flags, bf16 state, half
input with fp32 state) compile to 2-10 ``bar.sync`` per time step and 125-166 registers in the
backward (Triton 3.6, sm_90): a thread then holds a different number of elements in two
tensors, and they meet through shared memory. tests/test_ptx.py checks every variant. PREFETCH issues
the loads of step t+1 before the stores of step t: the compiler cannot move a load above a
store that may alias it, so without it each thread has one step's loads in flight at a time.

Autotuning is keyed on the next power of two of the neuron count, so variable batch sizes do
not benchmark every new size; it is replaced by one fixed config under the interpreter (which
runs programs one after another), with ``FASTLIF_AUTOTUNE=0`` (read at import), and while a
CUDA graph is being captured for a size not tuned before (autotuning benchmarks and
synchronises, which a capture forbids).
"""
import os

import torch
import triton
import triton.language as tl

from fastlif import backends, codes
from fastlif.layout import param_tensor

# The codes of fastlif/codes.py, as compile-time constants the kernels can name.
RESET_SUBTRACT = tl.constexpr(codes.RESET_SUBTRACT)
RESET_ZERO = tl.constexpr(codes.RESET_ZERO)
RESET_NONE = tl.constexpr(codes.RESET_NONE)
ATAN = tl.constexpr(codes.ATAN)
FAST_SIGMOID = tl.constexpr(codes.FAST_SIGMOID)
SIGMOID = tl.constexpr(codes.SIGMOID)
TRIANGULAR = tl.constexpr(codes.TRIANGULAR)
STRAIGHT_THROUGH = tl.constexpr(codes.STRAIGHT_THROUGH)
SJ_SIGMOID = tl.constexpr(codes.SJ_SIGMOID)
SJ_ATAN = tl.constexpr(codes.SJ_ATAN)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
VECTOR_BYTES = 16


def autotuning():
    return not backends.triton_interpret() and os.environ.get("FASTLIF_AUTOTUNE", "1") not in ("", "0")


def _config(num_warps, prefetch):
    return triton.Config({"PREFETCH": prefetch}, num_warps=num_warps)


def block_size(num_warps, compute_dtype):
    """Neurons per program: one 16-byte vector of the compute dtype per thread."""
    itemsize = compute_dtype.itemsize if isinstance(compute_dtype, torch.dtype) else \
        compute_dtype.element_ty.primitive_bitwidth // 8
    return 32 * num_warps * (VECTOR_BYTES // itemsize)


AUTOTUNE_CONFIGS = [_config(w, p) for w, p in ((1, True), (2, True), (4, True), (4, False),
                                               (8, True), (8, False), (16, True))]
FIXED_CONFIG = _config(2, True) if backends.triton_interpret() else _config(8, True)


def bucket(n):
    """The autotuning key of a neuron count: its next power of two."""
    return 1 << max(int(n) - 1, 0).bit_length()


class FusedKernel:
    """A ``@triton.jit`` kernel with its heuristics, launched autotuned or with FIXED_CONFIG.

    ``kernel[grid](*args, **kwargs)`` launches it. The kernel takes an ``N_BUCKET`` argument
    (:func:`bucket` of its neuron count), the autotuning key, and a ``BLOCK`` meta-parameter,
    derived from the config's warps and the dtype of its ``compute_arg`` pointer. While a CUDA
    graph is being captured, a signature autotuning has already seen launches its tuned config
    (a cache hit, nothing is benchmarked); any other launches FIXED_CONFIG. ``jit`` is the
    JITFunction itself.
    """

    def __init__(self, jit, heuristics, compute_arg="beta_ptr"):
        self.jit = jit
        heuristics = dict(heuristics, BLOCK=lambda a: block_size(a["num_warps"], a[compute_arg].dtype))
        self.fixed = triton.heuristics(heuristics)(jit)
        self.tuned = (triton.autotune(AUTOTUNE_CONFIGS, key=["N_BUCKET"])(triton.heuristics(heuristics)(jit))
                      if autotuning() else None)
        self._bucket_at = jit.arg_names.index("N_BUCKET")
        self._tuned_signatures = set()

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if self.tuned is not None:
                signature = (args[self._bucket_at], *(str(a.dtype) for a in args if hasattr(a, "dtype")))
                capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
                if not capturing or signature in self._tuned_signatures:
                    self._tuned_signatures.add(signature)
                    return self.tuned[grid](*args, **kwargs)
            return self.fixed[grid](*args, **kwargs, **FIXED_CONFIG.all_kwargs())
        return launch


def new(shape, dtype, device):
    """Every output is allocated here (tests swap in a NaN-filled version)."""
    return torch.empty(shape, dtype=dtype, device=device)


def check_dtype(dtype, what):
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fastlif triton backend: {what} must be float32, bfloat16, float16 or "
                        f"float64, got {dtype}")


def launch_param(value, dtype, device, L, name):
    """A launcher parameter (a float, or 1 or L values) as the kernels read it: a contiguous
    tensor of ``dtype`` (layout.param_tensor's fill for a float), its size checked."""
    if not isinstance(value, torch.Tensor):
        return param_tensor(float(value), dtype, device)
    if value.numel() not in (1, L) or value.dtype != dtype:
        raise ValueError(f"{name} must hold 1 or {L} values of dtype {dtype}, got "
                         f"{tuple(value.shape)} {value.dtype}")
    return value.reshape(-1).contiguous()


class on_device:
    """Launch on the tensor's own GPU (Triton uses the current device); no-op on CPU."""

    def __init__(self, t):
        self.ctx = torch.cuda.device(t.device) if t.is_cuda else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def grid(N):
    return lambda meta: (triton.cdiv(N, meta["BLOCK"]),)


def reduce_param_grad(partial, param, R, L):
    """Sum per-neuron partials [R*L] over rows (per-neuron param) or all (scalar), in fp64, in
    torch's fixed order: deterministic, and independent of the block size autotuning picks."""
    if param.numel() == 1:
        return partial.sum(dtype=torch.float64).to(param.dtype).reshape(param.shape)
    return partial.view(R, L).sum(0, dtype=torch.float64).to(param.dtype).reshape(param.shape)


# --- device functions ---------------------------------------------------------------------------

@triton.jit
def load_param(ptr, lidx, mask, PER_NEURON: tl.constexpr, CDT: tl.constexpr):
    if PER_NEURON:
        return tl.load(ptr + lidx, mask=mask, other=1).to(CDT)  # 1: no 0/0 in masked lanes
    else:
        return tl.load(ptr).to(CDT)


@triton.jit
def load_state(ptr, offs, mask, PRESENT: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """An optional initial state of this program's neurons: loaded if ``PRESENT``, else zeros."""
    if PRESENT:
        return tl.load(ptr + offs, mask=mask, other=0).to(CDT)
    else:
        return tl.zeros([BLOCK], dtype=CDT)


@triton.jit
def surrogate_vectors(sg_a, sg_b, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """A backward's two surrogate constants (fp64 arguments, :func:`surrogate_constants`) as
    vectors of the compute dtype, each rounded once."""
    return tl.full([BLOCK], sg_a, CDT), tl.full([BLOCK], sg_b, CDT)


@triton.jit
def step_input(x_ptr, off, step, mask, t, T, x_next, PREFETCH: tl.constexpr, CDT: tl.constexpr):
    """A forward's input at step ``t`` (``off``) in the compute dtype, and what the loop carries
    on: with ``PREFETCH`` the next step's input (``step`` elements on), loaded now so that it
    arrives while this step computes (``x_next`` came in the same way; before the loop, the
    first step's load), else ``x_next`` untouched."""
    if PREFETCH:
        x = x_next.to(CDT)
        x_next = tl.load(x_ptr + off + step, mask=mask & (t + 1 < T), other=0)
    else:
        x = tl.load(x_ptr + off, mask=mask, other=0).to(CDT)
    return x, x_next


@triton.jit
def base_reset(base, r, th, RESET: tl.constexpr):
    """Synaptic's and RLeaky's reset, on the membrane after it integrated this step (snnTorch's
    ``_base_sub`` / ``_base_zero``; see fastlif.reference._base_reset)."""
    if RESET == RESET_SUBTRACT:
        return base - r * th
    elif RESET == RESET_ZERO:
        return base - base * r
    else:
        return base


@triton.jit
def block_offsets(N, L, BLOCK: tl.constexpr):
    """This program's neurons: int64 offsets into the flattened [R, L] grid, the mask, and the
    index along the last dimension (for per-neuron parameters)."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < N
    return offs, mask, offs % L


@triton.jit
def div(a, b):
    """IEEE round-to-nearest division. Triton's fp32 ``/`` may be approximate on GPUs, and
    ``tl.fdiv(..., ieee_rounding=True)`` is too under Triton 3.6 (``div.full.f32``, up to 2 ulp);
    ``div_rn`` gives ``div.rn.f32`` on every version. fp64 ``/`` is correctly rounded already."""
    if b.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def cast(v, DT: tl.constexpr):
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
def heaviside(z):
    return (z > 0).to(z.dtype)


@triton.jit
def immediate_reset(u, r, s, th, g, RESET: tl.constexpr):
    """Membrane after an immediate reset (reset_delay=False): d = (s*g)/g - r, IEEE division."""
    return base_reset(u, div(s * g, g) - r, th, RESET)  # the same rule, with d for the flag


@triton.jit
def surrogate_backward(gs, z, sg_a, sg_b, SG: tl.constexpr):
    """The gradient reaching z from gs (the Heaviside output's gradient), in snnTorch's operation
    order (fastlif/surrogate.py: surrogate_backward; csrc/common.h). sg_a, sg_b: host constants
    in the compute dtype (see surrogate_constants). Where the sigmoid's exp overflows (inf/inf),
    its stable form runs (finite; snnTorch gives NaN there, api.md)."""
    if SG == ATAN:
        k = sg_b * z
        return (div(tl.zeros_like(z) + 1, k * k + 1) * sg_a) * gs
    elif SG == FAST_SIGMOID:
        d = sg_a * tl.abs(z) + 1
        return div(gs, d * d)
    elif SG == SIGMOID:
        e = tl.exp(sg_b * z)
        grad = div((gs * sg_a) * e, (e + 1) * (e + 1))
        f = tl.exp(-(sg_b * z))
        stable = div((gs * sg_a) * f, (f + 1) * (f + 1))
        inf_over_inf = (grad != grad) & (z == z) & (gs == gs)  # NaN from finite inputs
        return tl.where(inf_over_inf, stable, grad)
    elif SG == TRIANGULAR:
        g = gs * sg_a
        return tl.where(z >= 0, -g, g)
    elif SG == STRAIGHT_THROUGH:
        return gs
    elif SG == SJ_SIGMOID:  # SpikingJelly's: s = sigmoid(alpha*z); gs * ((1 - s) * s * alpha)
        sig = div(tl.zeros_like(z) + 1, 1 + tl.exp(-(sg_a * z)))
        return gs * (((1 - sig) * sig) * sg_a)
    elif SG == SJ_ATAN:  # SpikingJelly's: k = z*(pi/2*alpha); gs * ((alpha/2) / (1 + k*k))
        k = z * sg_b
        return gs * (div(tl.zeros_like(z) + 1, 1 + k * k) * sg_a)
    else:  # disabled
        return tl.zeros_like(z)


@triton.jit
def membrane_grad(gm, gspk, u, r, th, g, sg_a, sg_b, RESET: tl.constexpr, IMMEDIATE: tl.constexpr,
                  SG: tl.constexpr):
    """The gradient core of a membrane that integrated to u (csrc/common.h, membrane_grad): its
    spike, immediate reset and base reset. Returns (gradient reaching w, the threshold's, the
    graded factor's), from gm (the membrane after the step) and gspk (the spike output)."""
    z = u - th
    h = heaviside(z)
    gh = gspk * g
    gu = gm
    gth = tl.zeros_like(gm)
    if IMMEDIATE and RESET == RESET_SUBTRACT:
        gh -= gm * th
        gth -= gm * (h - r)
    elif IMMEDIATE and RESET == RESET_ZERO:
        gh -= gm * u
        gu = gm * (1 - (h - r))
    gg = gspk * h
    gz = surrogate_backward(gh, z, sg_a, sg_b, SG)
    gu += gz
    gth -= gz
    if RESET == RESET_SUBTRACT:
        gth -= r * gu
        gw = gu
    elif RESET == RESET_ZERO:
        gw = gu - gu * r
    else:
        gw = gu
    return gw, gth, gg


def surrogate_constants(kind, param):
    """Host-side constants of each surrogate, computed in double, so that the kernel works in
    snnTorch's order: atan: alpha/2, pi/2*alpha; fast_sigmoid: slope; sigmoid: slope, -slope;
    triangular: threshold. Kernels declare them fp64 (compiled Triton would otherwise pass
    Python floats as fp32, rounding them for fp64 kernels) and convert them to their compute
    dtype, as PyTorch rounds a Python scalar to a tensor's dtype."""
    import math
    p = float(param)
    if kind in (codes.ATAN, codes.SJ_ATAN):
        return p / 2, math.pi / 2 * p
    if kind == codes.SIGMOID:
        return p, -p
    return p, 0.0
