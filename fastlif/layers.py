"""Layers between the neurons: :class:`SpikeLinear`, an ``nn.Linear`` that skips zero inputs,
and :class:`SpikeConv2d`, an ``nn.Conv2d`` that does (their op families:
:mod:`fastlif.ops.spike_linear`, :mod:`fastlif.ops.spike_conv`)."""
from torch import nn

from . import backends
from .ops import spike_conv
from .ops.spike_linear import run_spike_linear

__all__ = ["SpikeLinear", "SpikeConv2d"]


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
        return run_spike_linear(input, self.weight, self.bias, backend=self.backend)

    def extra_repr(self):
        return f"{super().extra_repr()}, backend={self.backend!r}"


class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward visits only the non-zero inputs: each non-zero input pixel
    scatters its value times the kernel into the outputs it reaches. Binary spikes, graded
    spikes and any real input give ``nn.Conv2d``'s result (within floating-point summation
    order); only the speed depends on the density of non-zeros.

    Same constructor, parameters (``weight [out, in / groups, kH, kW]``, ``bias [out]``),
    initialisation and ``state_dict`` keys as ``nn.Conv2d``. :meth:`from_conv` converts a layer,
    sharing its parameters.

    ``forward(input)``: ``input`` is ``[..., C, H, W]`` (``[T, B, C, H, W]`` or ``[T*B, C, H, W]``
    or one image ``[C, H, W]``), bool (0/1 spikes) or the layer's dtype, any strides (channels-last
    is copied to contiguous once), or a :class:`fastlif.events.SpikeEvents` of such a tensor with a
    row per image (``from_dense(x, item_dims=3)``). Returns ``[..., out, OH, OW]`` in the layer's
    dtype, contiguous.

    The event kernels take every stride, dilation, groups, ``padding`` (ints, pairs,
    ``'valid'``, ``'same'``) and bias setting with ``padding_mode='zeros'``; the other padding
    modes run the dense convolution (torch pads, then convolves). Backward: the weight and bias
    gradients come from the same events, in a fixed order that does not depend on the thread
    count (bitwise reproducible); the input gradient (a dense transposed convolution, torch's)
    only when the input requires grad.

    ``backend``: ``"auto"`` (default) runs the event kernels (C++, OpenMP) for CPU float32 /
    float64 layers when at most ``fastlif.ops.spike_conv.DENSE_ABOVE`` of the inputs are non-zero
    (estimated from a sample of images; exact for SpikeEvents), and the dense convolution
    (``torch.nn.functional.conv2d``) above that, on CUDA, and for float16/bfloat16 layers;
    ``"cpp"`` always runs the event kernels (CPU fp32/fp64, zero padding); ``"reference"``
    always runs the dense convolution.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, backend="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        if backends.check_name(backend) == "triton":
            raise ValueError("SpikeConv2d has no triton kernels: backend='auto' runs the dense convolution "
                             "on CUDA; expected 'auto', 'cpp' or 'reference'")
        if backend == "cpp" and padding_mode != "zeros":
            raise ValueError(f"backend='cpp' (the event kernels) pads with zeros only, not "
                             f"padding_mode={padding_mode!r}; use backend='auto' (the dense convolution)")
        self.backend = backend

    @classmethod
    def from_conv(cls, conv, backend="auto"):
        """A SpikeConv2d that *shares* ``conv``'s weight and bias (the same Parameter objects:
        training either trains both). For an independent copy: ``from_conv(copy.deepcopy(c))``."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv takes an nn.Conv2d, got {type(conv).__name__}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, device="meta", dtype=conv.weight.dtype, backend=backend)
        layer.weight = conv.weight
        if conv.bias is not None:
            layer.bias = conv.bias
        return layer

    def forward(self, input):
        return spike_conv.run_spike_conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                              padding_mode=self.padding_mode, backend=self.backend)

    def extra_repr(self):
        return f"{super().extra_repr()}, backend={self.backend!r}"
