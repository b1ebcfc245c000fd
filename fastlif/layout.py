"""The dtype policy and the kernels' view of a call, which the ops (``fastlif/ops``,
:mod:`fastlif.family`) and the kernels (``kernels/``) both follow: imported downward by both,
so that no kernel imports an op module. The policy itself is described in
:mod:`fastlif.ops.common`."""
import torch

from .codes import is_immediate


def compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def mem_dtype(x_dtype, mem_fp32):
    return compute_dtype(x_dtype) if mem_fp32 else x_dtype


def param_tensor(value, dtype, device):
    """A launcher parameter as a tensor (Triton reads parameters from memory; custom ops take
    tensors). A fill, not a host-to-device copy, so that CUDA graphs can capture it."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.full((1,), value, dtype=dtype, device=device)


def grid(shape, steps):
    """``(T, R, L)``: the kernels' view of an input of ``shape`` holding ``steps`` steps."""
    L = shape[-1] if len(shape) else 1
    n = shape.numel() if isinstance(shape, torch.Size) else torch.Size(shape).numel()
    return steps, (n // (steps * L) if steps and L else 0), L


def saved_layout(shape, x_dtype, reset_mode, reset_delay, low_memory, mem_fp32=False):
    """Shapes and dtypes of what forward keeps for backward besides its ``mem`` output.

    Returns ``(state_shape, state_dtype, flags_shape)``; a shape ``(0,)`` means "nothing".
    With the default delayed reset, backward rebuilds every step from the membrane alone, so
    when ``mem`` is in the compute dtype nothing else is kept: 4 bytes per neuron-step in fp32.
    An immediate reset (reset_delay=False) keeps the pre-reset membrane and one byte of reset
    flag instead. ``low_memory`` (Triton) keeps ``z = u - threshold`` in bf16.
    """
    shape = tuple(shape)
    compute = compute_dtype(x_dtype)
    immediate = is_immediate(reset_mode, reset_delay)
    flags_shape = shape if immediate else (0,)
    if immediate:
        return shape, (torch.bfloat16 if low_memory else compute), flags_shape
    if low_memory:
        return shape, torch.bfloat16, flags_shape
    return ((0,) if mem_dtype(x_dtype, mem_fp32) == compute else shape), compute, flags_shape
