"""The CPU launcher: torch tensors in and out of the C++ kernels (``fastlif._C``).

Same contract as the Triton launcher ``fastlif.kernels.lif`` (see ``fastlif.ops``): x is
``[T, R, L]`` contiguous, parameters are 1-D of length 1 or L. Outputs are allocated here as
torch tensors and handed to C++ as NumPy views, so nothing is copied. fp16/bf16 inputs
(autocast) are computed in fp32 and their outputs cast back: the state is always fp32.
"""
import torch

from .backends import cpp_module
from .ops import RESET_NONE, saved_layout


def _np(t):
    return None if t is None else t.detach().numpy()


def _threads():
    return torch.get_num_threads()


def lif_fwd(x, mem0, beta, threshold, graded, reset_mode, reset_delay, low_memory):
    if low_memory:
        raise ValueError("low_memory=True (membrane saved in bf16) exists on the triton backend only")
    ext = cpp_module()
    out_dtype = x.dtype
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    spk = torch.empty_like(x)
    mem = torch.empty_like(x)
    state_shape, state_dtype, flags_shape = saved_layout(x.shape, out_dtype, reset_mode, reset_delay,
                                                         low_memory)
    immediate = not reset_delay and reset_mode != RESET_NONE
    u = torch.empty(x.shape if immediate else (0,), dtype=x.dtype)
    flags = torch.empty(flags_shape, dtype=torch.uint8)
    ext.lif_fwd(_np(x), _np(mem0), _np(beta), _np(threshold), _np(graded), _np(spk), _np(mem),
                _np(u) if immediate else None, _np(flags) if immediate else None,
                reset_mode, reset_delay, _threads())
    if state_shape == (0,):
        state = torch.empty(0, dtype=state_dtype)
    elif immediate:
        state = u
    else:  # fp16/bf16 input: backward needs the fp32 membrane, not its rounded output copy
        state = mem
    return spk.to(out_dtype), mem.to(out_dtype), state, flags


def lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded,
            reset_mode, reset_delay, surrogate_kind, surrogate_param):
    ext = cpp_module()
    out_dtype = grad_spk.dtype
    compute = beta.dtype
    shape = grad_spk.shape if grad_spk.dim() == 3 else grad_mem.shape
    grad_spk = grad_spk.to(compute).contiguous() if grad_spk.dim() == 3 else torch.zeros(shape, dtype=compute)
    grad_mem = grad_mem.to(compute).contiguous() if grad_mem.dim() == 3 else torch.zeros(shape, dtype=compute)
    immediate = not reset_delay and reset_mode != RESET_NONE
    mem_saved = None if immediate else (state if state.numel() else mem.to(compute)).contiguous()
    grad_x = torch.empty_like(grad_spk)
    grad_mem0 = torch.empty(mem0.shape if mem0 is not None else (0,), dtype=compute)
    grad_beta, grad_thr, grad_graded = (torch.empty_like(p) for p in (beta, threshold, graded))
    ext.lif_bwd(_np(grad_spk), _np(grad_mem), _np(mem_saved), _np(state) if immediate else None,
                _np(flags) if immediate else None, _np(mem0), _np(beta), _np(threshold), _np(graded),
                _np(grad_x), _np(grad_mem0) if mem0 is not None else None,
                _np(grad_beta), _np(grad_thr), _np(grad_graded),
                reset_mode, reset_delay, surrogate_kind, surrogate_param, _threads())
    return grad_x.to(out_dtype), grad_mem0, grad_beta, grad_thr, grad_graded
