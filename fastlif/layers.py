"""Layers between the neurons: :class:`SpikeLinear`, an ``nn.Linear`` that skips zero inputs
(its op family: :mod:`fastlif.ops.spike_linear`)."""
from torch import nn

from . import backends
from .ops.spike_linear import run

__all__ = ["SpikeLinear"]


class SpikeLinear(nn.Linear):
    """``nn.Linear`` whose forward visits only the non-zero inputs: for each row of the input it
    adds the weight columns of its non-zero entries, scaled by their values. Binary spikes,
    graded spikes and any real input give ``nn.Linear``'s result (within floating-point
    summation order); only the speed depends on the density of non-zeros.

    Same parameters (``weight [out, in]``, ``bias [out]``), initialisation and ``state_dict``
    keys as ``nn.Linear``, so state dicts load either way. :meth:`from_linear` converts a
    layer, sharing its parameters.

    ``forward(input)``: ``input`` is ``[..., in_features]`` (``[T, B, N]`` in ``nn.Sequential``),
    bool (0/1 spikes) or the layer's dtype, or a :class:`fastlif.events.SpikeEvents` of such a
    tensor (precomputed CSR events, e.g. from a spike encoder: nothing is scanned again; the
    events are trusted to describe ``events.dense``, only their shapes and indices are
    checked). Returns ``[..., out_features]`` in the layer's dtype.

    Backward: the weight and bias gradients come from the same events, in a fixed order that
    does not depend on the thread count (bitwise reproducible); the input gradient
    (``grad @ W``, dense) is computed only when the input requires grad.

    ``backend``: ``"auto"`` (default) runs the event kernels (C++, OpenMP) for CPU float32 /
    float64 layers when at most ``fastlif.ops.spike_linear.DENSE_ABOVE`` (25 %) of the inputs
    are non-zero (estimated from a sample of rows; exact for SpikeEvents), and the dense GEMM
    (``torch.nn.functional.linear``) above that, on CUDA, and for float16/bfloat16 layers;
    ``"cpp"`` always runs the event kernels (CPU fp32/fp64 only); ``"reference"`` always runs
    the dense GEMM. Zero inputs are skipped, so a zero input never meets an inf/NaN weight
    (a dense GEMM would give NaN there).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, backend="auto"):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if backends.check_name(backend) == "triton":
            raise ValueError("SpikeLinear has no triton kernels: backend='auto' runs the dense GEMM "
                             "on CUDA; expected 'auto', 'cpp' or 'reference'")
        self.backend = backend

    @classmethod
    def from_linear(cls, linear, backend="auto"):
        """A SpikeLinear that *shares* ``linear``'s weight and bias (the same Parameter objects:
        training either trains both). For an independent copy: ``from_linear(copy.deepcopy(l))``."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear takes an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device="meta", dtype=linear.weight.dtype, backend=backend)
        layer.weight = linear.weight
        if linear.bias is not None:
            layer.bias = linear.bias
        return layer

    def forward(self, input):
        return run(input, self.weight, self.bias, backend=self.backend)

    def extra_repr(self):
        return f"{super().extra_repr()}, backend={self.backend!r}"
