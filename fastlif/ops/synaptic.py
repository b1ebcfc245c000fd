"""The Synaptic op family: snnTorch's ``Synaptic`` (a synaptic current decaying with alpha that
feeds a membrane decaying with beta) over T steps, forward in one kernel call and its
surrogate backward in another. The reference loop:
:func:`fastlif.reference.synaptic_sequence_reference`. Same shape as :mod:`fastlif.ops.lif`.

Launcher contract (the C++ launchers below, the Triton ones in ``kernels/synaptic.py``)::

    fwd(x, syn0, mem0, alpha, beta, threshold, graded, *, steps, reset_mode, reset_delay)
        -> (spk, syn, mem, state, flags)
    bwd(grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, alpha, beta,
        threshold, graded, *, steps, reset_mode, reset_delay, surrogate_kind, surrogate_param,
        x_dtype) -> (grad_x, grad_syn0, grad_mem0, grad_alpha, grad_beta, grad_threshold,
                     grad_graded)

``x`` holds ``steps`` steps, time first (one step's ``[...]`` with ``steps=1``); ``spk`` comes
back in x's dtype, the states ``syn`` and ``mem`` in the compute dtype (fp32 for fp16/bf16
input). ``state``/``flags`` are the pre-reset membrane and reset flags of an immediate reset
(empty otherwise). In backward, ``syn`` is forward's syn output when alpha needs a gradient
(None otherwise: it is then not read, and ``grad_alpha`` is None), ``mem`` forward's mem output
with a delayed reset (None with an immediate one); None upstream gradients mean zeros.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import backends, surrogate as surrogate_mod
from ..codes import RESET_MECHANISMS, is_immediate, reset_code
from ..reference import synaptic_sequence_reference, synaptic_step
from .common import (CPP_DTYPES, HALF_DTYPES, as_compute, check_input, check_param, check_states, choose_backend,
                     compute_dtype, cpp_dtype_code, cpp_param, grid, initial_states, kernel_params, needs_autograd,
                     num_threads, param_tensor, ptr)

FAMILY = "synaptic"
PARAM_NAMES = ("alpha", "beta", "threshold", "graded_spikes_factor")


# --- C++ launchers ------------------------------------------------------------------------------

def cpp_fwd(x, syn0, mem0, alpha, beta, threshold, graded, *, steps, reset_mode, reset_delay):
    if x.dtype not in CPP_DTYPES + HALF_DTYPES:
        raise TypeError(f"fastlif cpp backend computes in float32 or float64, got {x.dtype}")
    xc = x.contiguous() if x.dtype in CPP_DTYPES else x.to(torch.float32).contiguous()
    T, R, L = grid(x.shape, steps)
    immediate = is_immediate(reset_mode, reset_delay)
    spk, syn, mem = torch.empty_like(xc), torch.empty_like(xc), torch.empty_like(xc)
    state = torch.empty_like(xc) if immediate else xc.new_empty((0,))
    flags = torch.empty(x.shape if immediate else (0,), dtype=torch.uint8)
    params = (*cpp_param(alpha), *cpp_param(beta), *cpp_param(threshold), *cpp_param(graded))
    _C().synaptic_fwd(cpp_dtype_code(xc.dtype), T, R, L, xc.data_ptr(), ptr(syn0), ptr(mem0), params,
                      spk.data_ptr(), syn.data_ptr(), mem.data_ptr(), ptr(state if immediate else None),
                      ptr(flags if immediate else None), reset_mode, immediate, num_threads())
    return (spk if spk.dtype == x.dtype else spk.to(x.dtype)), syn, mem, state, flags


def cpp_bwd(grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, alpha, beta, threshold,
            graded, *, steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype):
    immediate = is_immediate(reset_mode, reset_delay)
    ref = state if immediate else mem
    compute = ref.dtype
    T, R, L = grid(ref.shape, steps)
    grads_in = [as_compute(g, compute) for g in (grad_spk, grad_syn, grad_mem)]
    grad_x = torch.empty(ref.shape, dtype=compute)
    grad_syn0 = None if syn0 is None else torch.empty_like(syn0)
    grad_mem0 = None if mem0 is None else torch.empty_like(mem0)
    params = (alpha, beta, threshold, graded)
    grads = [torch.empty_like(p) if isinstance(p, Tensor) else None for p in params]
    if syn is None:
        grads[0] = None  # alpha needs no gradient: forward's syn was not kept
    _C().synaptic_bwd(cpp_dtype_code(compute), T, R, L, *map(ptr, grads_in), ptr(syn),
                      ptr(None if immediate else ref), ptr(state if immediate else None),
                      ptr(flags if immediate else None), ptr(syn0), ptr(mem0),
                      tuple(v for p in params for v in cpp_param(p)), grad_x.data_ptr(), ptr(grad_syn0),
                      ptr(grad_mem0), tuple(map(ptr, grads)), reset_mode, immediate, surrogate_kind,
                      surrogate_param, num_threads())
    return (grad_x if x_dtype == compute else grad_x.to(x_dtype)), grad_syn0, grad_mem0, *grads


_C = backends.cpp_module


backends.register_cpp(FAMILY, cpp_fwd, cpp_bwd)  # the Triton ones: kernels/synaptic.py


# --- custom ops: what torch.compile sees ---------------------------------------------------------

@torch.library.custom_op("fastlif::synaptic_fwd", mutates_args=(), device_types=("cpu", "cuda"))
def synaptic_fwd(x: Tensor, syn0: Optional[Tensor], mem0: Optional[Tensor], alpha: Tensor, beta: Tensor,
                 threshold: Tensor, graded: Tensor, steps: int, reset_mode: int, reset_delay: bool,
                 backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return backends.launchers(FAMILY, backend)[0](x, syn0, mem0, alpha, beta, threshold, graded, steps=steps,
                                                   reset_mode=reset_mode, reset_delay=reset_delay)


@synaptic_fwd.register_fake
def _(x, syn0, mem0, alpha, beta, threshold, graded, steps, reset_mode, reset_delay, backend):
    compute = compute_dtype(x.dtype)
    immediate = is_immediate(reset_mode, reset_delay)
    return (torch.empty_like(x), torch.empty_like(x, dtype=compute), torch.empty_like(x, dtype=compute),
            x.new_empty(x.shape if immediate else (0,), dtype=compute),
            x.new_empty(x.shape if immediate else (0,), dtype=torch.uint8))


@torch.library.custom_op("fastlif::synaptic_bwd", mutates_args=(), device_types=("cpu", "cuda"))
def synaptic_bwd(grad_spk: Optional[Tensor], grad_syn: Optional[Tensor], grad_mem: Optional[Tensor],
                 syn: Optional[Tensor], mem: Optional[Tensor], state: Tensor, flags: Tensor,
                 syn0: Optional[Tensor], mem0: Optional[Tensor], alpha: Tensor, beta: Tensor, threshold: Tensor,
                 graded: Tensor, steps: int, reset_mode: int, reset_delay: bool, surrogate_kind: int,
                 surrogate_param: float, x_dtype: torch.dtype,
                 backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    outs = backends.launchers(FAMILY, backend)[1](
        grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, alpha, beta, threshold, graded,
        steps=steps, reset_mode=reset_mode, reset_delay=reset_delay, surrogate_kind=surrogate_kind,
        surrogate_param=surrogate_param, x_dtype=x_dtype)
    return tuple(beta.new_empty((0,)) if t is None else t for t in outs)  # distinct: no aliasing


@synaptic_bwd.register_fake
def _(grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, alpha, beta, threshold, graded,
      steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype, backend):
    ref = state if state.numel() else mem
    like = (lambda t: torch.empty_like(t) if t is not None else beta.new_empty((0,)))  # noqa: E731
    return (ref.new_empty(ref.shape, dtype=x_dtype), like(syn0), like(mem0),
            like(alpha if syn is not None else None), like(beta), like(threshold), like(graded))


# --- autograd -----------------------------------------------------------------------------------

class SynapticFunction(torch.autograd.Function):
    """The one autograd path (as :class:`fastlif.ops.lif.LifFunction`): the launchers in eager
    mode, the custom ops under torch.compile."""

    @staticmethod
    def forward(ctx, x, syn0, mem0, alpha, beta, threshold, graded, steps, reset_mode, reset_delay,
                surrogate_kind, surrogate_param, backend):
        params = (alpha, beta, threshold, graded)
        options = dict(steps=steps, reset_mode=reset_mode, reset_delay=reset_delay)
        if torch.compiler.is_compiling():
            compute = compute_dtype(x.dtype)
            spk, syn, mem, state, flags = synaptic_fwd(
                x, syn0, mem0, *(param_tensor(p, compute, x.device) for p in params), **options,
                backend=backend)
        else:
            spk, syn, mem, state, flags = backends.launchers(FAMILY, backend)[0](x, syn0, mem0, *params, **options)
        grad_alpha = isinstance(alpha, Tensor) and alpha.requires_grad
        tensor_params = [p if isinstance(p, Tensor) else None for p in params]
        ctx.save_for_backward(syn if grad_alpha else None, None if state.numel() else mem, state, flags,
                              syn0, mem0, *tensor_params)
        ctx.float_params = [None if isinstance(p, Tensor) else p for p in params]
        ctx.options = (steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x.dtype)
        ctx.backend = backend
        ctx.set_materialize_grads(False)
        return spk, syn, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_syn, grad_mem):
        syn, mem, state, flags, syn0, mem0, *tensor_params = ctx.saved_tensors
        if grad_spk is None and grad_syn is None and grad_mem is None:
            return (None,) * 13
        params = [t if t is not None else f for t, f in zip(tensor_params, ctx.float_params)]
        steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype = ctx.options
        options = dict(steps=steps, reset_mode=reset_mode, reset_delay=reset_delay,
                       surrogate_kind=surrogate_kind, surrogate_param=surrogate_param, x_dtype=x_dtype)
        if torch.compiler.is_compiling():
            ref = state if state.numel() else mem
            params = [param_tensor(p, compute_dtype(ref.dtype), ref.device) for p in params]
            grads = synaptic_bwd(grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, *params,
                                 **options, backend=ctx.backend)
        else:
            grads = backends.launchers(FAMILY, ctx.backend)[1](
                grad_spk, grad_syn, grad_mem, syn, mem, state, flags, syn0, mem0, *params, **options)
        grad_x, grad_syn0, grad_mem0, *param_grads = grads
        param_grads = [g if t is not None and (g is not None and g.numel()) else None
                       for g, t in zip(param_grads, tensor_params)]
        return (grad_x, grad_syn0 if syn0 is not None else None, grad_mem0 if mem0 is not None else None,
                *param_grads) + (None,) * 6


# --- the call modules and synaptic_sequence share -----------------------------------------------

def run(x, syn, mem, alpha, beta, threshold, graded, *, single_step, reset_mode, reset_delay, spike_fn,
        surrogate, backend, reference_options=None):
    """Check a call's arguments and run it (as :func:`fastlif.ops.lif.run`); returns
    ``(spk, syn, mem)`` shaped like ``x``, the states in the compute dtype."""
    x = check_input(x, single_step)
    check_states(x, single_step, syn=syn, mem=mem)
    n_last = x.shape[-1] if x.dim() else 1
    alpha, beta, threshold, graded = (check_param(v, n, n_last) for v, n in
                                      zip((alpha, beta, threshold, graded), PARAM_NAMES))
    name = choose_backend(FAMILY, backend, x.device.type, surrogate, spike_fn, reference_options)
    if name == "reference":
        return _run_reference(x, syn, mem, alpha, beta, threshold, graded, single_step, reset_mode,
                              reset_delay, spike_fn, reference_options or {})
    compute = compute_dtype(x.dtype)
    if x.numel() == 0:
        return x * 0, x.to(compute) * 0, x.to(compute) * 0
    params = kernel_params(x, (alpha, beta, threshold, graded), PARAM_NAMES, clamped=("alpha", "beta"))
    syn0, mem0 = initial_states(compute, syn, mem)
    steps = 1 if single_step else x.shape[0]
    if not needs_autograd(x, syn0, mem0, *params):
        return backends.launchers(FAMILY, name)[0](x, syn0, mem0, *params, steps=steps, reset_mode=reset_mode,
                                                   reset_delay=bool(reset_delay))[:3]
    return SynapticFunction.apply(x, syn0, mem0, *params, steps, reset_mode, bool(reset_delay), surrogate.kind,
                                  float(surrogate.param), name)


def _run_reference(x, syn, mem, alpha, beta, threshold, graded, single_step, reset_mode, reset_delay,
                   spike_fn, options):
    compute = compute_dtype(x.dtype)
    as_param = (lambda p: torch.as_tensor(p, device=x.device).to(compute))  # noqa: E731
    alpha, beta = as_param(alpha).clamp(0, 1), as_param(beta).clamp(0, 1)
    threshold, graded = as_param(threshold), as_param(graded)
    mechanism = RESET_MECHANISMS[reset_mode]
    xc = x.to(compute)
    if single_step:
        zeros = torch.zeros_like(xc)
        spk, syn, mem = synaptic_step(xc, zeros if syn is None else syn.to(compute),
                                      zeros if mem is None else mem.to(compute), alpha, beta, threshold,
                                      graded, spike_fn, mechanism, reset_delay, **options)
    else:
        spk, syn, mem = synaptic_sequence_reference(
            xc, alpha, beta, threshold, syn=None if syn is None else syn.to(compute),
            mem=None if mem is None else mem.to(compute), reset_mechanism=mechanism,
            reset_delay=reset_delay, spike_fn=spike_fn, graded_spikes_factor=graded, **options)
    return spk.to(x.dtype), syn, mem


def synaptic_sequence(x_seq, alpha, beta, threshold=1.0, *, syn=None, mem=None, reset_mechanism="subtract",
                      reset_delay=True, surrogate=None, graded_spikes_factor=1.0, backend="auto"):
    """snnTorch's ``Synaptic`` over the leading time dimension of ``x_seq`` ``[T, ...]``, fused.

    Returns ``(spk_seq, syn_seq, mem_seq)`` shaped like ``x_seq`` (the states in fp32 for
    fp16/bf16 input). ``alpha``, ``beta`` (both clamped to [0, 1]), ``threshold`` and
    ``graded_spikes_factor`` are scalars or one value per neuron along the last dimension;
    gradients flow to those that require grad, to ``x_seq``, ``syn`` and ``mem``."""
    spike_fn, sg = surrogate_mod.resolve(surrogate)
    return run(x_seq, syn, mem, alpha, beta, threshold, graded_spikes_factor, single_step=False,
               reset_mode=reset_code(reset_mechanism), reset_delay=reset_delay, spike_fn=spike_fn,
               surrogate=sg, backend=backend)
