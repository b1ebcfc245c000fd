"""Spike events: where the non-zero entries of a spike tensor are, so that event-driven ops
(``fastlif.SpikeLinear``, ``fastlif.SpikeConv2d``) visit them without scanning the dense tensor
again, and the plumbing those ops share (one copy): the density estimate that picks the dense
path, the checks of events, the hand-over to the C++ kernels and what backward keeps.

A :class:`SpikeEvents` describes a tensor of shape ``[..., *item]`` (``item_dims`` trailing
dimensions per item: 1 for SpikeLinear's ``[..., N]``, 3 for SpikeConv2d's ``[..., C, H, W]``)
seen as ``rows = prod(...)`` rows of ``K = prod(item)`` entries (for a ``[T, B, N]`` spike
train, row ``t * B + b``; for ``[T, B, C, H, W]`` images, row ``t * B + b`` and column
``c * H * W + y * W + x``), in compressed sparse row form: the non-zeros of row r are at
columns ``indices[indptr[r]:indptr[r+1]]`` (ascending), with values ``values[...]`` (None: every
one is 1, binary spikes). ``dense`` is the tensor the events describe (for ops that fall back to
a dense path, and for shape checks).
"""
import math
from typing import NamedTuple, Optional

import numpy as np
import torch

from . import backends
from .ops.common import CPP_DTYPES, HALF_DTYPES, ptr

__all__ = ["SpikeEvents", "from_dense"]


class SpikeEvents(NamedTuple):
    dense: torch.Tensor             # [..., *item], what the events describe
    indptr: torch.Tensor            # [rows + 1] int64
    indices: torch.Tensor           # [nnz] int32, the column (flat position in the item) of each event
    values: Optional[torch.Tensor]  # [nnz] floating point, or None for binary spikes
    item_dims: int = 1              # trailing dimensions of dense that make one row

    @property
    def rows(self):
        return self.indptr.numel() - 1

    @property
    def nnz(self):
        return self.indices.numel()

    @property
    def density(self):
        return self.nnz / max(self.dense.numel(), 1)


def from_dense(x, item_dims=1):
    """The events of a dense tensor ``[..., *item]`` (bool or floating point; ``item_dims``
    trailing dimensions per row: 3 for images ``[..., C, H, W]``), in plain PyTorch: the
    reference that event-producing kernels are tested against."""
    if x.dim() < item_dims:
        raise ValueError(f"from_dense: a tensor of {x.dim()} dimensions has no {item_dims}-dimensional items")
    K = math.prod(x.shape[x.dim() - item_dims:])
    flat = x.reshape(-1, K) if x.dim() else x.reshape(1, 1)
    rows, cols = flat.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=flat.shape[0])
    indptr = torch.zeros(flat.shape[0] + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    values = None if x.dtype == torch.bool else flat[rows, cols]
    if values is not None and bool((values == 1).all()):
        values = None
    return SpikeEvents(x, indptr, cols.to(torch.int32), values, item_dims)


# --- what the event-driven ops share ------------------------------------------------------------

SAMPLE_ROWS = 64  # rows of a dense input that estimated_density counts, evenly spaced


def estimated_density(x):
    """The fraction of non-zero entries of ``x`` ``[M, ...]``, counted in about SAMPLE_ROWS
    evenly spaced rows (all of them when there are fewer): a few microseconds, where counting
    all of a large input would cost as much as a scan by the kernel. Only the choice of path
    depends on it, never a result's correctness. Counted by NumPy on the CPU (the same memory,
    one thread): torch's count_nonzero is a parallel op, and on a busy machine waking its
    second thread for a few microseconds of work cost 10-16 ms (measured, 2 cores)."""
    rows = x.shape[0]
    if rows > SAMPLE_ROWS:
        x = x[::rows // SAMPLE_ROWS]
    if x.device.type == "cpu":
        return int(np.count_nonzero(x.detach().numpy())) / max(x.numel(), 1)
    return int(torch.count_nonzero(x)) / max(x.numel(), 1)


# The launchers' dense_above for a call that auto sends to the dense path (choose_path's
# "dense"): the launcher runs it whatever the input's density, forward and backward, on the
# threads its work pays for (fastlif.ops.common.torch_threads), where torch alone would take
# all of torch's.
DENSE_ALWAYS = -1.0


def dense_wins(x, dense_above):
    """Whether a dense input ``[M, ...]`` goes to the dense path (events never do, in a launcher:
    :func:`choose_path` sends dense-enough events there before)."""
    return dense_above < 0.0 or (dense_above < 1.0 and x.numel() > 0 and estimated_density(x) > dense_above)


def as_float(x, dtype):
    return x if x.dtype == dtype else x.to(dtype)


def kernel_args(x, indptr, indices, values, dtype, rows, family):
    """The arguments the C++ kernels take for the input (csrc/events.h): a dense ``x`` (rows
    contiguous) or the CSR events. The layout the kernels rely on is checked here too (the ops
    can be called directly); the contents of the CSR are checked by the kernels. Returns the
    arguments and what must stay alive until the kernel returns."""
    if indptr is None:
        if x.dtype != torch.bool and x.dtype != dtype:
            raise TypeError(f"{family}: input must be bool or {dtype}, got {x.dtype}")
        return (x.data_ptr(), x.dtype == torch.bool, 0, 0, 0, 0), None
    if indptr.dtype != torch.int64 or indices is None or indices.dtype != torch.int32 \
            or indptr.numel() != rows + 1 or (values is not None and values.numel() != indices.numel()):
        raise ValueError(f"{family}: events must be int64 indptr [{rows + 1}], int32 indices [nnz] "
                         f"and values [nnz] or None")
    if values is not None:
        values = as_float(values, dtype).contiguous()
    indptr, indices = indptr.contiguous(), indices.contiguous()
    keep = (indptr, indices, values)
    return (0, False, indptr.data_ptr(), indices.data_ptr(), ptr(values), indices.numel()), keep


def save_for_backward(ctx, x, indptr, indices, values, *others):
    """What forward keeps: the CSR when it was given, else the input it scanned (backward reads
    the same events again), then ``others``. :func:`saved` returns them in this order."""
    ctx.save_for_backward(x if indptr is None else None, indptr, indices, values, *others)


def saved(ctx):
    return ctx.saved_tensors


def choose_path(backend, x, weight, events, *, family, dense_above, dense_name):
    """``"cpp"`` (the event kernels), ``"dense"`` (the dense path, ``dense_name``, run by the C++
    launchers on the threads its work pays for: the caller passes them the events' dense tensor
    and ``dense_above=DENSE_ALWAYS``) or ``"reference"`` (the dense path as torch runs it) for a call: the
    reference on CUDA and for fp16/bf16 under ``auto`` (an error for ``cpp``); under ``auto``,
    "dense" for events denser than ``dense_above``."""
    if backend == "reference":
        return "reference"
    if backend not in ("auto", "cpp"):
        backends.check_name(backend)  # an unknown name: ValueError listing the names
        raise backends.BackendUnavailable(
            f"backend={backend!r} cannot run {family}: fastlif has no {backend} kernels for it "
            f"(backend='auto' runs {dense_name} on CUDA)")
    if x.device.type != "cpu" or weight.dtype not in CPP_DTYPES:
        if backend == "auto":
            return "reference"
        why = (f"{x.device.type} tensors" if x.device.type != "cpu" else
               f"{weight.dtype} ({'use' if weight.dtype in HALF_DTYPES else 'the kernels compute in'} "
               f"float32 or float64)")
        raise backends.BackendUnavailable(f"backend='cpp' (the event kernels) runs CPU float32/float64 "
                                          f"layers, not {why}; backend='auto' runs {dense_name} there")
    name = backends.select(backend, "cpu", family)
    if name == "cpp" and backend == "auto" and events is not None and events.density > dense_above:
        return "dense"  # dense enough events: the dense path, on events.dense
    return name


def check_events(events, rows, device):
    """The shapes, dtypes and devices of SpikeEvents (their contents are checked by the kernels)."""
    indptr, indices, values = events.indptr, events.indices, events.values
    for t, what, dtype in ((indptr, "indptr", torch.int64), (indices, "indices", torch.int32)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != dtype:
            got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"SpikeEvents.{what} must be a 1-D {dtype} tensor, got {got}")
    if indptr.numel() != rows + 1:
        raise ValueError(f"SpikeEvents do not match their dense tensor: indptr has {indptr.numel()} "
                         f"entries, the dense tensor of shape {tuple(events.dense.shape)} has {rows} rows "
                         f"(indptr must have rows + 1)")
    if values is not None and (not isinstance(values, torch.Tensor) or values.shape != indices.shape
                               or not values.is_floating_point()):
        raise ValueError(f"SpikeEvents.values must be None (binary spikes) or a floating point tensor "
                         f"of one value per index ({indices.numel()}), got "
                         f"{getattr(values, 'dtype', type(values).__name__)} {tuple(getattr(values, 'shape', ()))}")
    for t, what in ((indptr, "indptr"), (indices, "indices"), (values, "values")):
        if t is not None and t.device != device:
            raise ValueError(f"SpikeEvents.{what} is on {t.device}, the dense tensor on {device}")


def needs_autograd(x, weight, bias):
    """Whether a call goes through its autograd Function (else the launcher runs bare)."""
    return (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                         or (bias is not None and bias.requires_grad))) \
        or torch.compiler.is_compiling()
