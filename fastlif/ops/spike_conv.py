"""The SpikeConv2d op family: a 2-D convolution that visits only the non-zero inputs (the
module: :class:`fastlif.SpikeConv2d`; the reference: ``torch.nn.functional.conv2d``).

Launcher contract (the C++ launchers below; there are no Triton ones: on CUDA the dense
convolution is the path)::

    fwd(x, indptr, indices, values, weight, bias, *, stride, padding, dilation, groups,
        dense_above) -> y
    bwd(grad, x, indptr, indices, values, weight, *, input_size, stride, padding, dilation,
        groups, need_input, need_weight, need_bias, dense_above) -> (grad_x, grad_weight, grad_bias)

``x`` is the input as images ``[N, C, H, W]`` contiguous: bool (0/1 spikes) or the weight's
dtype (fp32/fp64). ``indptr`` / ``indices`` / ``values`` are the CSR events of ``x`` with a row
per image (:class:`fastlif.events.SpikeEvents` with ``item_dims=3``: column
``c * H * W + y * W + x``), or all None: then the kernels scan ``x`` for its non-zeros.
``weight`` is ``[O, C / groups, KH, KW]``, ``bias`` ``[O]`` or None; ``stride`` and ``dilation``
are ``[sh, sw]``, ``padding`` ``[top, bottom, left, right]`` (zeros; asymmetric for
``padding='same'`` with an even kernel); ``y`` is ``[N, O, OH, OW]`` in the weight's dtype. As
for SpikeLinear (and with its plumbing, :mod:`fastlif.events`): a dense ``x`` above
``dense_above`` density runs the dense convolution instead, forward and backward each deciding
on its own; events always run the event kernels. Backward returns None for a gradient not asked
for; ``grad_x`` is torch's dense transposed convolution (``torch.nn.grad.conv2d_input``), the
weight and bias gradients come from the events, bitwise the same for every thread count.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from .. import backends
from ..events import (DENSE_ALWAYS, SpikeEvents, as_float, check_events, choose_path, dense_wins,
                      estimated_density, kernel_args, needs_autograd, save_for_backward, saved)
from .common import check_tensor, cpp_dtype_code, cpu_empty, num_threads, ptr, torch_threads

FAMILY = "spike_conv2d"

# backend="auto" runs the dense convolution (torch.nn.functional.conv2d, oneDNN) above this
# density of non-zero inputs, the event kernels at or below it. Measured by
# bench/bench_spike_conv.py (fp32, 2 threads, a shared 2-core Xeon, 0.5-50 %): the event kernels
# and nn.Conv2d cost the same at the N-MNIST input layer (3200 x 2x34x34 -> 12, 5x5) at 40 %
# (forward) and above 50 % (forward+backward); at the hidden layer (3200 x 12x12x12 -> 64, 5x5)
# at 30 %, 39 % and 38 % (with the input gradient). With the input gradient at the input layer
# both paths are the same dense transposed convolution plus a small rest, equal within the
# noise. Set below the crossovers; near one the two paths cost about the same.
DENSE_ABOVE = 0.25

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _symmetric(padding):
    pt, pb, pl, pr = padding
    return pt == pb and pl == pr


def _pad(x, padding):
    pt, pb, pl, pr = padding
    return F.pad(x, (pl, pr, pt, pb))


def dense_forward(x, weight, bias, stride, padding, dilation, groups):
    """The dense path (and the reference): ``F.conv2d`` on ``x`` as the weight's dtype."""
    x = as_float(x, weight.dtype)
    if _symmetric(padding):
        return F.conv2d(x, weight, bias, stride, (padding[0], padding[2]), dilation, groups)
    return F.conv2d(_pad(x, padding), weight, bias, stride, 0, dilation, groups)


def grad_input(grad, weight, input_size, stride, padding, dilation, groups):
    """The input gradient: torch's dense transposed convolution (aten's convolution backward,
    as nn.Conv2d's; the input it takes is only read for its shape, so an untouched empty one
    serves: torch.nn.grad.conv2d_input's expanded stand-in sends oneDNN to a slower path)."""
    N, C, H, W = input_size
    pt, pb, pl, pr = padding
    sym = _symmetric(padding)
    shape = (N, C, H, W) if sym else (N, C, H + pt + pb, W + pl + pr)
    g = torch.ops.aten.convolution_backward(grad, grad.new_empty(shape, dtype=weight.dtype), weight, None,
                                            stride, [pt, pl] if sym else [0, 0], dilation, False, [0, 0], groups,
                                            [True, False, False])[0]
    return g if sym else g[:, :, pt:pt + H, pl:pl + W].contiguous()


def output_size(H, W, weight, stride, padding, dilation):
    KH, KW = weight.shape[2:]
    OH = (H + padding[0] + padding[1] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + padding[2] + padding[3] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    return OH, OW


def _geom(x_shape, weight, stride, padding, dilation, groups):
    N, C, H, W = x_shape
    O, _, KH, KW = weight.shape
    OH, OW = output_size(H, W, weight, stride, padding, dilation)
    return (N, C, H, W, O, KH, KW, OH, OW, stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1],
            groups), (N, O, OH, OW)


def _wt(weight, groups):
    """The weight as [C, KH, KW, O / groups]: an event's tap reads one contiguous run."""
    O, Cg, KH, KW = weight.shape
    return weight.reshape(groups, O // groups, Cg, KH, KW).permute(0, 2, 3, 4, 1).contiguous()


# --- C++ launchers ------------------------------------------------------------------------------

def _nnz_hint(x, indptr):
    """How many events a dense input holds, estimated from a sample (-1 for events: the kernel
    knows): the kernels size their thread team by it."""
    return -1 if indptr is not None or x is None else int(estimated_density(x) * x.numel())


def cpp_fwd(x, indptr, indices, values, weight, bias, *, stride, padding, dilation, groups, dense_above):
    if indptr is None and dense_wins(x, dense_above):
        out_numel = math.prod(_geom(x.shape, weight, stride, padding, dilation, groups)[1])
        with torch_threads((x.numel() + weight.numel() + out_numel) * weight.element_size()):
            return dense_forward(x, weight, bias, stride, padding, dilation, groups)
    geom, out_shape = _geom(x.shape, weight, stride, padding, dilation, groups)
    out = cpu_empty(out_shape, weight.dtype)
    wt = _wt(weight, groups)
    args, _keep = kernel_args(x.contiguous() if indptr is None else None, indptr, indices, values,
                              weight.dtype, x.shape[0], FAMILY)
    _C().spike_conv2d_fwd(cpp_dtype_code(weight.dtype), geom, *args, _nnz_hint(x, indptr), wt.data_ptr(),
                          ptr(None if bias is None else bias.contiguous()), out.data_ptr(), num_threads())
    return out


def cpp_bwd(grad, x, indptr, indices, values, weight, *, input_size, stride, padding, dilation, groups,
            need_input, need_weight, need_bias, dense_above):
    grad = grad.contiguous()
    gx = None
    if need_input:
        with torch_threads((grad.numel() + weight.numel() + math.prod(input_size)) * weight.element_size()):
            gx = grad_input(grad, weight, input_size, stride, padding, dilation, groups)
    if not (need_weight or need_bias):
        return gx, None, None
    if indptr is None and dense_wins(x, dense_above):  # as nn.Conv2d's backward
        xf = as_float(x, weight.dtype)
        sym = _symmetric(padding)
        with torch_threads((x.numel() + grad.numel() + weight.numel()) * weight.element_size()):
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, xf if sym else _pad(xf, padding), weight, [weight.shape[0]], stride,
                [padding[0], padding[2]] if sym else [0, 0], dilation, False, [0, 0], groups,
                [False, need_weight, need_bias])
        return gx, gw, gb
    geom, _ = _geom(input_size, weight, stride, padding, dilation, groups)
    gw = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else None
    gb = torch.empty(weight.shape[0], dtype=weight.dtype) if need_bias else None
    args, _keep = kernel_args(None if x is None else x.contiguous(), indptr, indices, values, weight.dtype,
                              input_size[0], FAMILY)
    _C().spike_conv2d_bwd(cpp_dtype_code(weight.dtype), geom, *args, _nnz_hint(x, indptr), grad.data_ptr(),
                          ptr(gw), ptr(gb), num_threads())
    return gx, gw, gb


_C = backends.cpp_module


backends.register_cpp(FAMILY, cpp_fwd, cpp_bwd)


# --- custom ops: what torch.compile sees ---------------------------------------------------------

@torch.library.custom_op("fastlif::spike_conv2d_fwd", mutates_args=(), device_types=("cpu",))
def spike_conv2d_fwd(x: Tensor, indptr: Optional[Tensor], indices: Optional[Tensor], values: Optional[Tensor],
                     weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                     dilation: List[int], groups: int, dense_above: float, backend: str) -> Tensor:
    fwd = backends.launchers(FAMILY, backend)[0]
    return fwd(x, indptr, indices, values, weight, bias, stride=stride, padding=padding, dilation=dilation,
               groups=groups, dense_above=dense_above)


@spike_conv2d_fwd.register_fake
def _(x, indptr, indices, values, weight, bias, stride, padding, dilation, groups, dense_above, backend):
    OH, OW = output_size(x.shape[2], x.shape[3], weight, stride, padding, dilation)
    return x.new_empty((x.shape[0], weight.shape[0], OH, OW), dtype=weight.dtype)


@torch.library.custom_op("fastlif::spike_conv2d_bwd", mutates_args=(), device_types=("cpu",))
def spike_conv2d_bwd(grad: Tensor, x: Optional[Tensor], indptr: Optional[Tensor], indices: Optional[Tensor],
                     values: Optional[Tensor], weight: Tensor, input_size: List[int], stride: List[int],
                     padding: List[int], dilation: List[int], groups: int, need_input: bool, need_weight: bool,
                     need_bias: bool, dense_above: float, backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    bwd = backends.launchers(FAMILY, backend)[1]
    grads = bwd(grad, x, indptr, indices, values, weight, input_size=input_size, stride=stride, padding=padding,
                dilation=dilation, groups=groups, need_input=need_input, need_weight=need_weight,
                need_bias=need_bias, dense_above=dense_above)
    return tuple(g if g is not None else weight.new_empty((0,)) for g in grads)


@spike_conv2d_bwd.register_fake
def _(grad, x, indptr, indices, values, weight, input_size, stride, padding, dilation, groups, need_input,
      need_weight, need_bias, dense_above, backend):
    return (grad.new_empty(tuple(input_size) if need_input else (0,), dtype=weight.dtype),
            weight.new_empty(weight.shape if need_weight else (0,)),
            weight.new_empty((weight.shape[0],) if need_bias else (0,)))


# --- autograd -----------------------------------------------------------------------------------

class SpikeConv2dFunction(torch.autograd.Function):
    """The one autograd path, as SpikeLinearFunction's: eager calls the launchers, compiled
    graphs the custom ops; forward keeps the events (fastlif.events.save_for_backward) and the
    weight (for the input gradient)."""

    @staticmethod
    def forward(ctx, x, weight, bias, indptr, indices, values, geometry, dense_above, backend):
        stride, padding, dilation, groups = geometry
        options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, dense_above=dense_above)
        if torch.compiler.is_compiling():
            out = spike_conv2d_fwd(x, indptr, indices, values, weight, bias, **options, backend=backend)
        else:
            out = backends.launchers(FAMILY, backend)[0](x, indptr, indices, values, weight, bias, **options)
        save_for_backward(ctx, x, indptr, indices, values, weight)
        ctx.options = (list(x.shape), geometry, dense_above, backend)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, indptr, indices, values, weight = saved(ctx)
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        input_size, (stride, padding, dilation, groups), dense_above, backend = ctx.options
        options = dict(input_size=input_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       need_input=need_input, need_weight=need_weight, need_bias=need_bias, dense_above=dense_above)
        if torch.compiler.is_compiling():
            grads = spike_conv2d_bwd(grad, x, indptr, indices, values, weight, **options, backend=backend)
            grads = [g if need else None for g, need in zip(grads, (need_input, need_weight, need_bias))]
        else:
            grads = backends.launchers(FAMILY, backend)[1](grad, x, indptr, indices, values, weight, **options)
        return (*grads, None, None, None, None, None, None)


# --- the call the module and the functional form share ----------------------------------------

def padding_of(padding, weight, dilation):
    """``[top, bottom, left, right]`` from nn.Conv2d's ``padding`` (an int, a pair, ``'valid'``
    or ``'same'``: for an even kernel, the extra row and column go at the bottom and right, as
    torch pads)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        out = []
        for d, k in zip(dilation, weight.shape[2:]):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return out
    ph, pw = _pair(padding)
    return [int(ph), int(ph), int(pw), int(pw)]


def run_spike_conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
        backend="auto"):
    """Check a call's arguments (the one place they are checked) and run it.

    ``input``: a tensor ``[..., C, H, W]`` (bool spikes, or the weight's dtype) or a
    :class:`fastlif.events.SpikeEvents` of one (``item_dims=3``); ``weight``
    ``[O, C / groups, KH, KW]``, ``bias`` ``[O]`` or None; ``stride``, ``padding``, ``dilation``,
    ``groups`` and ``padding_mode`` as ``nn.Conv2d`` takes them. Returns ``[..., O, OH, OW]``.
    ``backend``: ``"auto"`` (event kernels at or below DENSE_ABOVE density on the CPU in
    fp32/fp64 with zero padding, else the dense convolution), ``"cpp"`` (the event kernels
    always; zero padding only), ``"reference"`` (``torch.nn.functional.conv2d``).
    """
    events = input if isinstance(input, SpikeEvents) else None
    x = check_tensor(events.dense if events is not None else input,
                     "SpikeEvents.dense" if events is not None else "input")
    check_tensor(weight, "weight")
    if weight.dim() != 4:
        raise ValueError(f"weight must be [out_channels, in_channels / groups, kH, kW], got shape "
                         f"{tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got {weight.dtype}")
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups must be a positive int dividing out_channels={weight.shape[0]}, got {groups!r}")
    O, Cg, KH, KW = weight.shape
    C = Cg * groups
    if x.dim() < 3 or x.shape[-3] != C:
        raise ValueError(f"input must be [..., C={C}, H, W] (channels, height, width last); got shape "
                         f"{tuple(x.shape)}")
    if x.dtype != torch.bool and x.dtype != weight.dtype:
        raise TypeError(f"input must be bool (0/1 spikes) or {weight.dtype} (the layer's dtype), got "
                        f"{x.dtype}; convert it with .to({weight.dtype})")
    if bias is not None and (bias.shape != (O,) or bias.dtype != weight.dtype):
        raise ValueError(f"bias must be [{O}] of {weight.dtype}, got {tuple(bias.shape)} {bias.dtype}")
    for t, what in ((x, "input"), (bias, "bias")):
        if t is not None and t.device != weight.device:
            raise ValueError(f"{what} is on {t.device} but the weight is on {weight.device}")
    stride, dilation = [int(s) for s in _pair(stride)], [int(d) for d in _pair(dilation)]
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"stride and dilation must be positive, got stride={stride} dilation={dilation}")
    if padding == "same" and stride != [1, 1]:
        raise ValueError("padding='same' is not supported for strided convolutions (as in nn.Conv2d)")
    pads = padding_of(padding, weight, dilation)
    if min(pads) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    lead, (H, W) = x.shape[:-3], x.shape[-2:]
    OH, OW = output_size(H, W, weight, stride, pads, dilation)
    if OH < 1 or OW < 1:
        raise ValueError(f"the kernel ({KH}x{KW}, dilation {tuple(dilation)}) is larger than the padded input "
                         f"({H}x{W} with padding {padding!r}): no output")
    images = math.prod(lead)
    if events is not None:
        if events.item_dims != 3:
            raise ValueError(f"SpikeEvents for a convolution need a row per image: from_dense(x, item_dims=3), "
                             f"got item_dims={events.item_dims}")
        check_events(events, images, x.device)
    x4 = x.reshape(images, C, H, W)
    if padding_mode != "zeros":  # not the event kernels': torch pads, then convolves
        if backend == "cpp":
            raise backends.BackendUnavailable(f"backend='cpp' (the event kernels) pads with zeros only; "
                                              f"padding_mode={padding_mode!r} runs the dense convolution "
                                              f"(backend='auto')")
        pt, pb, pl, pr = pads
        xf = F.pad(as_float(x4, weight.dtype), (pl, pr, pt, pb), mode=padding_mode)
        out = F.conv2d(xf, weight, bias, stride, 0, dilation, groups)
        return out.reshape(*lead, O, OH, OW)
    name = choose_path(backend, x, weight, events, family=FAMILY, dense_above=DENSE_ABOVE,
                       dense_name="the dense convolution")
    if name == "reference":
        return dense_forward(x4, weight, bias, stride, pads, dilation, groups).reshape(*lead, O, OH, OW)
    if name == "dense":  # the convolution, by the C++ launchers on the threads its work pays for (torch_threads)
        name, events, dense_above = "cpp", None, DENSE_ALWAYS
        x4 = as_float(x4, weight.dtype)  # once, here: backward reads the same copy (as nn.Conv2d keeps it)
    else:
        if images >= 2**31 or C * H * W >= 2**31 or O * OH * OW >= 2**31:
            raise ValueError(f"the event kernels take fewer than 2**31 images and entries per image, got "
                             f"{images} images of {C}x{H}x{W} -> {O}x{OH}x{OW}")
        dense_above = DENSE_ABOVE if backend == "auto" else math.inf
    indptr = indices = values = None
    if events is not None:
        indptr, indices, values = events.indptr, events.indices, events.values
    elif not x4.is_contiguous():
        x4 = x4.contiguous()  # here, not in the launcher: backward reads the same copy
    geometry = (stride, pads, dilation, groups)
    if needs_autograd(x, weight, bias):
        out = SpikeConv2dFunction.apply(x4, weight, bias, indptr, indices, values, geometry, dense_above, name)
    else:
        out = backends.launchers(FAMILY, name)[0](x4, indptr, indices, values, weight, bias, stride=stride,
                                                  padding=pads, dilation=dilation, groups=groups,
                                                  dense_above=dense_above)
    return out.reshape(*lead, O, OH, OW)


def spike_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend="auto"):
    """``torch.nn.functional.conv2d`` that skips zero inputs: the functional form of
    :class:`fastlif.SpikeConv2d` (see there). ``input``: a tensor ``[..., C, H, W]`` (bool or
    the weight's dtype) or a :class:`fastlif.events.SpikeEvents` of one (``item_dims=3``)."""
    return run_spike_conv(input, weight, bias, stride, padding, dilation, groups, backend=backend)
