"""The SpikeLinear op family: ``y = x W^T + b`` that visits only the non-zero entries of ``x``
(the module: :class:`fastlif.SpikeLinear`; the reference: ``torch.nn.functional.linear``).

Launcher contract (the C++ launchers below; there are no Triton ones: on CUDA the dense GEMM
is the path)::

    fwd(x, indptr, indices, values, weight, bias, *, dense_above) -> y
    bwd(grad, x, indptr, indices, values, weight, *, need_input, need_weight, need_bias,
        dense_above) -> (grad_x, grad_weight, grad_bias)

``x`` is the input as rows ``[M, K]``: bool (0/1 spikes) or the weight's dtype (fp32/fp64).
``indptr`` (int64 ``[M + 1]``), ``indices`` (int32 ``[nnz]``) and ``values`` (``[nnz]`` or None
for binary spikes) are the CSR events of ``x`` (:class:`fastlif.events.SpikeEvents`), or all
None: then the kernels scan ``x`` for its non-zeros. ``weight`` is ``[N, K]``, ``bias`` ``[N]``
or None; ``y`` is ``[M, N]`` in the weight's dtype. A dense ``x`` whose density (estimated from
a sample of its rows, :func:`estimated_density`) is above ``dense_above`` runs the dense GEMM
instead, forward and backward each deciding on its own; events always run the event kernels
(:func:`run_spike_linear` sends dense-enough events to the GEMM before they get here). Backward returns
None for a gradient not asked for; ``grad_x`` is ``grad @ W`` (torch's GEMM), the weight and
bias gradients come from the events, bitwise the same for every thread count. Backward reads
the events again from what forward saved: ``x`` when it scanned ``x``, else the CSR.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import backends
# SAMPLE_ROWS and estimated_density stay importable from here, where they were first
from ..events import (DENSE_ALWAYS, SAMPLE_ROWS, SpikeEvents, as_float, check_events, choose_path,  # noqa: F401
                      dense_wins, estimated_density, kernel_args, needs_autograd, save_for_backward, saved)
from .common import check_tensor, cpp_dtype_code, cpu_empty, num_threads, ptr, torch_threads

FAMILY = "spike_linear"

# backend="auto" runs the dense GEMM (torch.nn.functional.linear, MKL) above this density of
# non-zero inputs, the event kernels at or below it. Measured by bench/bench_spike_linear.py
# (fp32, 2 threads, AMD EPYC; three runs of the final kernels): the event kernels and nn.Linear
# cost the same at fc1 (3200x784 -> 128) at 43-50 % (forward), 47 to over 50 %
# (forward+backward), 41-44 % (with the input grad); at large (6400x2048 -> 1024) at 34-44 %,
# 23-38 % and 17-37 %: the event kernels are bandwidth-bound, so the large layer's crossovers
# drop when another process shares the L3 (the lowest figures). Set below most of them; near a
# crossover the two paths cost about the same, so the exact figure matters little.
DENSE_ABOVE = 0.25

# backend="auto" also runs the dense GEMM, at any density, for a dense floating-point input
# (a hidden layer's spikes as a neuron returns them) into fewer outputs than this: each of its
# entries costs the event kernels a scan, which a narrow GEMM's few multiply-adds per entry do
# not outweigh. Measured (fp32, 2 threads, this project's Xeon VM, M = 3200 rows at 1.3 % and
# 5 %; bench/bench_spike_linear.py's fc2 size): with 10 and 16 outputs the GEMM took 0.63-0.98x
# the event kernels' time (forward, forward+backward, with and without the input gradient),
# with 32 outputs 0.78-1.36x, with 64 1.03-2.75x; TinySNN's training step (128 -> 10 as fc2)
# ran 5-16 % faster with it (15 alternated rounds). Bool spikes and SpikeEvents need no scan
# of floats, and the GEMM would first convert them: they keep the event kernels.
NARROW_OUT = 64

# The GEMMs auto runs in the event kernels' place (the dense path: forward, weight and input
# gradients) count as 1/DENSE_GEMM_GRAINS of the bytes they move when their thread count is taken
# from the work (fastlif.ops.common.torch_threads): a second thread joins from 64 MiB moved, not
# 2 MiB. Measured beside one and two spinning processes (bench_spike_linear --busy N --density
# 0.5): torch's GEMM on two threads took 1.5-2.7x its one-thread time at fc1 (3200x784 -> 128,
# 12 MiB a GEMM; its threads wait at torch's barriers for a preempted one), 0.8-1.1x at large
# (6400x2048 -> 1024, 86 MiB). Their thread count cannot follow the load (their results'
# bits would), so the mid-sized ones run on one thread: quiet, that gives up the 1.4-1.5x the
# second thread gains at fc1.
DENSE_GEMM_GRAINS = 32

# Where that leaves the GEMM on one thread while the event kernels have more (fc1's size on two
# threads), auto runs the event kernels up to this density instead of DENSE_ABOVE. Measured
# (bench_spike_linear, fc1, bool spikes, 2 threads, a01de21): the GEMM path on one thread took
# 6.8, 15.3 and 13.8 ms at 30 % (forward, forward+backward, with the input gradient) against the
# event kernels' 2.9, 6.7 and 11.6; at 50 % 6.7, 13.6 and 13.7 against 4.5, 10.5 and 15.8; at
# 75 % (forward, forward+backward) 10.6-10.9 and 21.9-23.4 against 7.1-8.2 and 17.2-18.6; at
# 100 % 6.6-7.2 and 14.2-16.1 against 8.0-8.4 and 20.0-23.7. Not when the input's gradient is
# wanted: grad @ W is a GEMM on either path, so the event kernels gained little there (at 30 %
# 11.6 against 13.8 ms; at 50 % 15.8 against 13.7), and beside busy cores the event path, its
# kernels solo and its grad @ W on torch's two threads, took 1.9-2.05x the GEMM path's time (at
# 30 % and 50 %); grad @ W on one thread instead cost the quiet hidden layer 1.5x (fc1 at 1.25 %,
# forward+backward_input 9.4 against 6.0-6.5 ms).
#
# 40 %, not the quiet crossover (between 75 and 100 %): beside busy cores the event kernels run
# solo, and then the one-thread GEMM is as fast from about the one-thread crossover on. Measured
# beside one and two spinning processes (--busy N --density D, the GEMM path as the 1-thread
# provider): at 30 % 0.51-1.00x, at 50 % 1.00-1.57x (forward beside two).
DENSE_ABOVE_BESIDE_ONE_THREAD_GEMM = 0.4


def dense_threads(moved):
    """The threads of the dense path's torch ops (its GEMMs, and the bool input's conversion to
    floats, which stalls alike), moving ``moved`` bytes: see DENSE_GEMM_GRAINS."""
    return torch_threads(moved // DENSE_GEMM_GRAINS)


def gemm_bytes(rows, K, N, dtype):
    """What the forward GEMM ``[rows, K] x [K, N]`` moves: its input, weight and output."""
    return (rows * K + N * K + rows * N) * dtype.itemsize


def gemm_alone(rows, K, N, dtype):
    """Whether the dense path's GEMM for ``rows`` inputs would run on one thread while fastlif's
    kernels may take more (see DENSE_ABOVE_BESIDE_ONE_THREAD_GEMM, which applies to inputs that
    need no gradient)."""
    if num_threads() < 2 or backends._cpp_status()[0] is None:
        return False
    return dense_threads(gemm_bytes(rows, K, N, dtype)).team < 2


# --- C++ launchers (the event plumbing they share with SpikeConv2d: fastlif.events) -------------

def cpp_fwd(x, indptr, indices, values, weight, bias, *, dense_above):
    if indptr is None and dense_wins(x, dense_above):
        with dense_threads(gemm_bytes(x.shape[0], x.shape[1], weight.shape[0], weight.dtype)):
            return F.linear(as_float(x, weight.dtype), weight, bias)
    M, K = x.shape
    N = weight.shape[0]
    wt = weight.t().contiguous()  # [K, N]: an event adds one contiguous row
    out = cpu_empty((M, N), weight.dtype)
    args, _keep = kernel_args(x.contiguous() if indptr is None else None, indptr, indices, values,
                              weight.dtype, M, FAMILY)
    _C().spike_linear_fwd(cpp_dtype_code(weight.dtype), M, K, N, *args, wt.data_ptr(),
                          ptr(None if bias is None else bias.contiguous()), out.data_ptr(), num_threads())
    return out


def cpp_bwd(grad, x, indptr, indices, values, weight, *, need_input, need_weight, need_bias, dense_above):
    grad = grad.contiguous()
    dense = indptr is None and x is not None and dense_wins(x, dense_above)
    grad_x = None
    if need_input:  # grad @ W: on the dense path's threads there, on the work's in the event path
        moved = (grad.numel() + weight.numel() + grad.shape[0] * weight.shape[1]) * weight.element_size()
        with (dense_threads(moved) if dense else torch_threads(moved)):
            grad_x = grad.mm(weight)
    if not (need_weight or need_bias):
        return grad_x, None, None
    if dense:  # as nn.Linear's backward
        with dense_threads((x.numel() + grad.numel() + weight.numel()) * weight.element_size()):
            grad_w = grad.t().mm(as_float(x, weight.dtype)) if need_weight else None
            return grad_x, grad_w, (grad.sum(0) if need_bias else None)
    M, N, K = grad.shape[0], weight.shape[0], weight.shape[1]
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else None
    grad_b = torch.empty(N, dtype=weight.dtype) if need_bias else None
    args, _keep = kernel_args(None if x is None else x.contiguous(), indptr, indices, values,
                              weight.dtype, M, FAMILY)
    _C().spike_linear_bwd(cpp_dtype_code(weight.dtype), M, K, N, *args, grad.data_ptr(), ptr(grad_w),
                          ptr(grad_b), num_threads())
    return grad_x, grad_w, grad_b


_C = backends.cpp_module  # memoised: the extension, or BackendUnavailable saying how to build it


backends.register_cpp(FAMILY, cpp_fwd, cpp_bwd)


# --- custom ops: what torch.compile sees ---------------------------------------------------------

@torch.library.custom_op("fastlif::spike_linear_fwd", mutates_args=(), device_types=("cpu",))
def spike_linear_fwd(x: Tensor, indptr: Optional[Tensor], indices: Optional[Tensor],
                     values: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
                     dense_above: float, backend: str) -> Tensor:
    fwd = backends.launchers(FAMILY, backend)[0]
    return fwd(x, indptr, indices, values, weight, bias, dense_above=dense_above)


@spike_linear_fwd.register_fake
def _(x, indptr, indices, values, weight, bias, dense_above, backend):
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=weight.dtype)


@torch.library.custom_op("fastlif::spike_linear_bwd", mutates_args=(), device_types=("cpu",))
def spike_linear_bwd(grad: Tensor, x: Optional[Tensor], indptr: Optional[Tensor],
                     indices: Optional[Tensor], values: Optional[Tensor], weight: Tensor,
                     need_input: bool, need_weight: bool, need_bias: bool, dense_above: float,
                     backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    bwd = backends.launchers(FAMILY, backend)[1]
    grads = bwd(grad, x, indptr, indices, values, weight, need_input=need_input,
                need_weight=need_weight, need_bias=need_bias, dense_above=dense_above)
    return tuple(g if g is not None else weight.new_empty((0,)) for g in grads)


@spike_linear_bwd.register_fake
def _(grad, x, indptr, indices, values, weight, need_input, need_weight, need_bias, dense_above, backend):
    N, K = weight.shape
    return (grad.new_empty((grad.shape[0], K) if need_input else (0,), dtype=weight.dtype),
            weight.new_empty((N, K) if need_weight else (0,)),
            weight.new_empty((N,) if need_bias else (0,)))


# --- autograd -----------------------------------------------------------------------------------

class SpikeLinearFunction(torch.autograd.Function):
    """The one autograd path. In eager mode it calls the backend's launchers directly;
    ``torch.compile`` traces this Function, and there it calls the custom ops. Forward keeps
    the events for backward (the CSR when it was given, else the input it scanned) and the
    weight (for ``grad @ W``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, indptr, indices, values, dense_above, backend):
        if torch.compiler.is_compiling():
            out = spike_linear_fwd(x, indptr, indices, values, weight, bias, dense_above=dense_above,
                                   backend=backend)
        else:
            out = backends.launchers(FAMILY, backend)[0](x, indptr, indices, values, weight, bias,
                                                        dense_above=dense_above)
        save_for_backward(ctx, x, indptr, indices, values, weight)
        ctx.options = (dense_above, backend)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, indptr, indices, values, weight = saved(ctx)
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        dense_above, backend = ctx.options
        options = dict(need_input=need_input, need_weight=need_weight, need_bias=need_bias,
                       dense_above=dense_above)
        if torch.compiler.is_compiling():
            grads = spike_linear_bwd(grad, x, indptr, indices, values, weight, **options, backend=backend)
            grads = [g if need else None for g, need in zip(grads, (need_input, need_weight, need_bias))]
        else:
            grads = backends.launchers(FAMILY, backend)[1](grad, x, indptr, indices, values, weight, **options)
        return (*grads, None, None, None, None, None)


# --- the call the module and the functional form share ----------------------------------------

def run_spike_linear(input, weight, bias=None, *, backend="auto"):
    """Check a call's arguments (the one place they are checked) and run it.

    ``input`` is a tensor ``[..., K]`` (bool spikes, or the weight's dtype) or a
    :class:`fastlif.events.SpikeEvents` of one; ``weight`` ``[N, K]``, ``bias`` ``[N]`` or None.
    Returns ``[..., N]``. ``backend``: ``"auto"`` (event kernels at or below DENSE_ABOVE
    density on the CPU in fp32/fp64, else the dense GEMM, on the threads its work pays for
    (:class:`fastlif.ops.common.torch_threads`) on the CPU), ``"cpp"`` (the event kernels always),
    ``"reference"`` (the dense GEMM, ``torch.nn.functional.linear``, as torch runs it).
    """
    events = input if isinstance(input, SpikeEvents) else None
    x = check_tensor(events.dense if events is not None else input,
                     "SpikeEvents.dense" if events is not None else "input")
    check_tensor(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [out_features, in_features], got shape {tuple(weight.shape)}")
    N, K = weight.shape
    if x.dim() == 0 or x.shape[-1] != K:
        raise ValueError(f"input must be [..., in_features={K}] (the last dimension is the layer's "
                         f"input); got shape {tuple(x.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got {weight.dtype}")
    if x.dtype != torch.bool and x.dtype != weight.dtype:
        raise TypeError(f"input must be bool (0/1 spikes) or {weight.dtype} (the layer's dtype), got "
                        f"{x.dtype}; convert it with .to({weight.dtype})")
    if bias is not None and (bias.shape != (N,) or bias.dtype != weight.dtype):
        raise ValueError(f"bias must be [{N}] of {weight.dtype}, got {tuple(bias.shape)} {bias.dtype}")
    for t, what in ((x, "input"), (bias, "bias")):
        if t is not None and t.device != weight.device:
            raise ValueError(f"{what} is on {t.device} but the weight is on {weight.device}")
    lead = x.shape[:-1]
    rows = math.prod(lead)
    if events is not None:
        if events.item_dims != 1:
            raise ValueError(f"SpikeEvents for a linear layer need a row per input vector: from_dense(x) "
                             f"(item_dims=1), got item_dims={events.item_dims}")
        check_events(events, rows, x.device)
    auto_above = DENSE_ABOVE
    # (not in a torch.compile trace, which cannot read the thread count: there DENSE_ABOVE)
    if backend == "auto" and x.device.type == "cpu" and not x.requires_grad \
            and not torch.compiler.is_compiling() and gemm_alone(rows, K, N, weight.dtype):
        auto_above = DENSE_ABOVE_BESIDE_ONE_THREAD_GEMM
    name = choose_path(backend, x, weight, events, family=FAMILY, dense_above=auto_above,
                       dense_name="the dense GEMM")
    if name == "cpp" and backend == "auto" and narrow_gemm_wins(x, events, N):
        name = "dense"
    if name == "reference":
        return F.linear(as_float(x, weight.dtype), weight, bias)
    if name == "dense":  # the GEMM, by the C++ launchers on the threads its work pays for (torch_threads)
        name, events, dense_above = "cpp", None, DENSE_ALWAYS
        with dense_threads(x.numel() * (x.element_size() + weight.element_size())):
            x = as_float(x, weight.dtype)  # once, here: backward reads the same copy (as nn.Linear keeps it)
    else:
        if rows >= 2**31:
            raise ValueError(f"the event kernels take fewer than 2**31 rows, got {rows}")
        dense_above = auto_above if backend == "auto" else math.inf
    x2 = x.reshape(rows, K)
    indptr = indices = values = None
    if events is not None:
        indptr, indices, values = events.indptr, events.indices, events.values
    elif not x2.is_contiguous():
        x2 = x2.contiguous()  # here, not in the launcher: backward reads the same copy
    if needs_autograd(x, weight, bias):
        out = SpikeLinearFunction.apply(x2, weight, bias, indptr, indices, values, dense_above, name)
    else:  # nothing to differentiate: the launcher itself, without the autograd Function around it
        out = backends.launchers(FAMILY, name)[0](x2, indptr, indices, values, weight, bias,
                                                  dense_above=dense_above)
    return out.reshape(*lead, N)


def narrow_gemm_wins(x, events, out_features):
    """Whether ``auto`` runs the dense GEMM for a dense floating-point input into fewer than
    NARROW_OUT outputs, whatever its density (see NARROW_OUT)."""
    return events is None and x.is_floating_point() and out_features < NARROW_OUT


def spike_linear(input, weight, bias=None, *, backend="auto"):
    """``torch.nn.functional.linear`` that skips zero inputs: the functional form of
    :class:`fastlif.SpikeLinear` (see there). ``input``: a tensor ``[..., in]`` (bool or the
    weight's dtype) or a :class:`fastlif.events.SpikeEvents`."""
    return run_spike_linear(input, weight, bias, backend=backend)
