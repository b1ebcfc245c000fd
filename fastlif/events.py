"""Spike events: where the non-zero entries of a spike tensor are, so that event-driven ops
(``fastlif.SpikeLinear``) visit them without scanning the dense tensor again.

A :class:`SpikeEvents` describes a tensor of shape ``[..., N]`` seen as ``rows = prod(...)``
rows of N entries (for a ``[T, B, N]`` spike train, row ``t * B + b``), in compressed sparse
row form: the non-zeros of row r are at columns ``indices[indptr[r]:indptr[r+1]]`` (ascending),
with values ``values[...]`` (None: every one is 1, binary spikes). ``dense`` is the tensor the
events describe (for ops that fall back to a dense path, and for shape checks).
"""
from typing import NamedTuple, Optional

import torch

__all__ = ["SpikeEvents", "from_dense"]


class SpikeEvents(NamedTuple):
    dense: torch.Tensor             # [..., N], what the events describe
    indptr: torch.Tensor            # [rows + 1] int64
    indices: torch.Tensor           # [nnz] int32, the column (position along N) of each event
    values: Optional[torch.Tensor]  # [nnz] floating point, or None for binary spikes

    @property
    def rows(self):
        return self.indptr.numel() - 1

    @property
    def nnz(self):
        return self.indices.numel()

    @property
    def density(self):
        return self.nnz / max(self.dense.numel(), 1)


def from_dense(x):
    """The events of a dense tensor ``[..., N]`` (bool or floating point), in plain PyTorch: the
    reference that event-producing kernels are tested against."""
    flat = x.reshape(-1, x.shape[-1]) if x.dim() else x.reshape(1, 1)
    rows, cols = flat.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=flat.shape[0])
    indptr = torch.zeros(flat.shape[0] + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    values = None if x.dtype == torch.bool else flat[rows, cols]
    if values is not None and bool((values == 1).all()):
        values = None
    return SpikeEvents(x, indptr, cols.to(torch.int32), values)
