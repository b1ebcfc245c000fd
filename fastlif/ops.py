"""The fused LIF ops, registered with ``torch.library``: one op per direction.

``fastlif::lif_fwd`` runs the whole T-step recurrence; ``fastlif::lif_bwd`` its surrogate
backward. Both are opaque to ``torch.compile`` (``register_fake`` gives their shapes) and
``register_autograd`` connects them. The op body hands the call to a launcher module with
one contract, whichever backend it is:

    lif_fwd(x [T,R,L], mem0 [R*L] | None, beta [1|L], threshold [1|L], graded [1|L],
            reset_mode, reset_delay, low_memory) -> (spk, mem, state, flags)
    lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded,
            reset_mode, reset_delay, surrogate_kind, surrogate_param)
            -> (grad_x, grad_mem0 | empty, grad_beta, grad_threshold, grad_graded)

``x`` is contiguous; parameters and ``mem0`` are in the compute dtype (fp32, or fp64 for
fp64 input) with beta already clamped to [0, 1]; ``spk``/``mem`` come back in x's dtype.
An empty ``grad_spk`` or ``grad_mem`` (an output that got no gradient) means zeros.
``state``/``flags`` are what backward needs beyond ``mem``; their shapes follow
:func:`saved_layout`, so that the fake (meta) implementation knows them too.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

RESET_SUBTRACT, RESET_ZERO, RESET_NONE = 0, 1, 2
RESET_CODES = {"subtract": RESET_SUBTRACT, "zero": RESET_ZERO, "none": RESET_NONE}


def compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def saved_layout(shape, x_dtype, reset_mode, reset_delay, low_memory):
    """Shapes and dtypes of what forward keeps for backward besides its ``mem`` output.

    Returns ``(state_shape, state_dtype, flags_shape)``; a shape ``(0,)`` means "nothing".
    With the default delayed reset, backward rebuilds every step from the membrane alone, so
    fp32/fp64 input keeps nothing extra: 4 bytes per neuron-step in fp32. An immediate reset
    (reset_delay=False) also keeps the pre-reset membrane and one byte of reset flag.
    """
    shape = tuple(shape)
    compute = compute_dtype(x_dtype)
    immediate = not reset_delay and reset_mode != RESET_NONE
    flags_shape = shape if immediate else (0,)
    if immediate:
        return shape, (torch.bfloat16 if low_memory else compute), flags_shape
    if low_memory:  # bf16 z = u - threshold (kernels/lif.py): its sign is each step's spike
        return shape, torch.bfloat16, flags_shape
    return ((0,) if x_dtype == compute else shape), compute, flags_shape


def _launcher(backend):
    if backend == "cpp":
        from . import cpu
        return cpu
    if backend == "triton":
        from .backends import triton_module
        return triton_module()
    raise ValueError(f"fastlif ops run the 'cpp' or 'triton' backend, not {backend!r}")


@torch.library.custom_op("fastlif::lif_fwd", mutates_args=(), device_types=("cpu", "cuda"))
def lif_fwd(x: Tensor, mem0: Optional[Tensor], beta: Tensor, threshold: Tensor, graded: Tensor,
            reset_mode: int, reset_delay: bool, surrogate_kind: int, surrogate_param: float,
            low_memory: bool, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    # surrogate_kind/param are unused here: they ride along so that backward receives them.
    return _launcher(backend).lif_fwd(x, mem0, beta, threshold, graded, reset_mode, reset_delay,
                                      low_memory)


@lif_fwd.register_fake
def _(x, mem0, beta, threshold, graded, reset_mode, reset_delay, surrogate_kind, surrogate_param,
      low_memory, backend):
    state_shape, state_dtype, flags_shape = saved_layout(x.shape, x.dtype, reset_mode, reset_delay,
                                                         low_memory)
    return (torch.empty_like(x), torch.empty_like(x),
            x.new_empty(state_shape, dtype=state_dtype), x.new_empty(flags_shape, dtype=torch.uint8))


@torch.library.custom_op("fastlif::lif_bwd", mutates_args=(), device_types=("cpu", "cuda"))
def lif_bwd(grad_spk: Tensor, grad_mem: Tensor, mem: Tensor, state: Tensor, flags: Tensor,
            mem0: Optional[Tensor], beta: Tensor, threshold: Tensor, graded: Tensor,
            reset_mode: int, reset_delay: bool, surrogate_kind: int, surrogate_param: float,
            backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _launcher(backend).lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold,
                                      graded, reset_mode, reset_delay, surrogate_kind,
                                      surrogate_param)


@lif_bwd.register_fake
def _(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded, reset_mode,
      reset_delay, surrogate_kind, surrogate_param, backend):
    grad_mem0 = torch.empty_like(mem0) if mem0 is not None else beta.new_empty((0,))
    ref = grad_spk if grad_spk.dim() == 3 else grad_mem
    return (torch.empty_like(ref), grad_mem0, torch.empty_like(beta),
            torch.empty_like(threshold), torch.empty_like(graded))


def _setup_context(ctx, inputs, output):
    (x, mem0, beta, threshold, graded, reset_mode, reset_delay, surrogate_kind, surrogate_param,
     low_memory, backend) = inputs
    spk, mem, state, flags = output
    # Keep the mem output only when backward rebuilds the steps from it (state is empty):
    # what is saved here is all the memory backward holds on to.
    needs_mem = state.numel() == 0 and mem.numel() > 0
    ctx.save_for_backward(mem if needs_mem else None, state, flags, mem0, beta, threshold, graded)
    ctx.options = (reset_mode, reset_delay, surrogate_kind, surrogate_param, backend)
    ctx.mem_meta = (mem.shape, mem.dtype)
    ctx.has_mem0 = mem0 is not None


def _backward(ctx, grad_spk, grad_mem, _grad_state, _grad_flags, bwd=None):
    mem, state, flags, mem0, beta, threshold, graded = ctx.saved_tensors
    reset_mode, reset_delay, surrogate_kind, surrogate_param, backend = ctx.options
    shape, dtype = ctx.mem_meta
    if mem is None:
        mem = state.new_empty((0,), dtype=dtype)
    ref = state if state.numel() else mem
    # An output that got no gradient arrives as None: pass an empty tensor, which the
    # launchers read as zeros, rather than materialising T x N zeros to read back.
    if grad_spk is None:
        grad_spk = ref.new_empty((0,), dtype=dtype)
    if grad_mem is None:
        grad_mem = ref.new_empty((0,), dtype=dtype)
    grad_x, grad_mem0, grad_beta, grad_thr, grad_graded = (bwd or lif_bwd)(
        grad_spk.contiguous(), grad_mem.contiguous(), mem, state, flags, mem0, beta, threshold,
        graded, reset_mode, reset_delay, surrogate_kind, surrogate_param, backend)
    return (grad_x, grad_mem0 if ctx.has_mem0 else None, grad_beta, grad_thr, grad_graded,
            None, None, None, None, None, None)


lif_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerLif(torch.autograd.Function):
    """The same launchers and the same autograd logic as the custom ops, minus the
    torch.library dispatch, which costs a few hundred microseconds a call: at the tutorial's
    size that is a third of the whole step. Used in eager mode; torch.compile traces the
    custom ops (see :func:`lif_forward`)."""

    @staticmethod
    def forward(ctx, *inputs):
        outputs = _launcher(inputs[-1]).lif_fwd(*inputs[:7], inputs[9])
        _setup_context(ctx, inputs, outputs)
        ctx.mark_non_differentiable(outputs[2], outputs[3])
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, *grads, bwd=_eager_bwd)


def _eager_bwd(*args):
    return _launcher(args[-1]).lif_bwd(*args[:-1])


def lif_forward(*inputs):
    """Run ``lif_fwd`` with autograd: through the custom op when torch.compile is tracing,
    directly otherwise. Takes and returns what ``lif_fwd`` does."""
    if torch.compiler.is_compiling():
        return lif_fwd(*inputs)
    return _EagerLif.apply(*inputs)
