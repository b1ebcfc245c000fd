"""One generic path for every element-wise neuron family described by a :class:`Family` spec.

A family is its spec (states, parameters, compile-time options, the reference step) in
``fastlif/families/<name>.py``, its C++ step in ``csrc/families/<name>.cpp`` and its Triton step in
``kernels/<name>.py``. Everything else is here, once: argument checks, the backend choice, the
reference loop, the autograd Function, the custom-op pair ``fastlif::family_fwd`` /
``family_bwd`` that ``torch.compile`` sees, and the launcher calls.

Launcher contract (the C++ launchers below, the Triton ones in ``kernels/scan.py``), every
argument keyword after the tensors::

    fwd(x, states0, params, *, family, steps, options) -> (spk, states)
    bwd(grad_spk, grad_states, x, states0, states, params, *, family, steps, options,
        surrogate_kind, surrogate_param, x_dtype) -> (grad_x, grad_states0, grad_params)

``x`` holds ``steps`` steps, time first (one step's ``[...]`` with ``steps=1``). ``states0``
lists the initial states (None: zeros), ``params`` the parameters (floats, or tensors of 1 or
L values in the compute dtype, already clamped), ``options`` the family's integer options in
its spec's order. ``spk`` comes back in x's dtype, ``states`` (one tensor per state, x's shape)
in the compute dtype. Backward rebuilds every step from the states before it and ``x``, so it
needs nothing else from forward. None upstream gradients mean zeros; a parameter gradient is
None where the parameter was a float.
"""
from typing import List, Optional

import torch
from torch import Tensor

from . import backends
from .spec import FAMILIES, Family, register  # noqa: F401 - the spec, re-exported here
from .reference import scan
from .ops.common import (CPP_DTYPES, HALF_DTYPES, as_compute, check_input, check_param, check_states,
                         choose_backend, clamp_grad, clamp_in_function, clamp_without_function, compute_dtype, cpp_autograd, cpp_dtype_code, cpp_param, cpu_empty, cpu_empty_like, grid,
                         initial_states, kernel_params, learnable_clamped, needs_autograd, num_threads,
                         param_grad_buffers, param_tensor, ptr)


# --- the reference loop ------------------------------------------------------------------------

def reference_sequence(family, x, states, params, options, spike_fn, single_step=False, **reference_options):
    """The family's reference step over the leading time dimension of ``x`` (or once, for
    ``single_step``): ``(spk, *states)`` with the states as sequences. Autograd does the
    backward, through ``spike_fn``'s surrogate. ``reference_options``: the peer's rarer options
    that only the reference step runs (``state_quant``, ``inhibition``, ...)."""
    def one_step(x_t, *carried):
        spk, carried = family.step(x_t, carried, params, options, spike_fn, **reference_options)
        return (spk, *carried)
    if single_step:
        return one_step(x, *(torch.zeros_like(x) if s is None else s for s in states))
    return scan(one_step, x, states)  # a spike state is returned as a sequence of its own


def _run_reference(family, x, states, params, options, spike_fn, single_step, reference_options):
    """The reference loop under the same dtype policy as the kernels."""
    compute = compute_dtype(x.dtype)
    values = []
    for name, p in zip(family.params, params):
        p = torch.as_tensor(p, device=x.device).to(compute)
        values.append(p.clamp(0, 1) if name in family.clamped else p)
    outs = reference_sequence(family, x.to(compute), [None if s is None else s.to(compute) for s in states],
                              tuple(values), options, spike_fn, single_step, **reference_options)
    return (outs[0].to(x.dtype), *outs[1:])


# --- C++ launchers ------------------------------------------------------------------------------

def cpp_fwd(x, states0, params, *, family, steps, options):
    spec = FAMILIES[family]
    if x.dtype not in CPP_DTYPES + HALF_DTYPES:
        raise TypeError(f"fastlif cpp backend computes in float32 or float64, got {x.dtype}")
    xc = as_compute(x, x.dtype if x.dtype in CPP_DTYPES else torch.float32)
    T, R, L = grid(x.shape, steps)
    spk = cpu_empty_like(xc)
    states = [spk if (spec.spike_state and k == 0) else cpu_empty_like(xc) for k in range(len(spec.states))]
    _C().family_fwd(family, cpp_dtype_code(xc.dtype), T, R, L, xc.data_ptr(), [ptr(s) for s in states0],
                    [cpp_param(p) for p in params], spk.data_ptr(), [s.data_ptr() for s in states],
                    list(options), num_threads())
    if spec.spike_state:  # the spike state is the spike output, kept in the compute dtype
        states[0] = spk
    return (spk if spk.dtype == x.dtype else spk.to(x.dtype)), states


def cpp_bwd(grad_spk, grad_states, x, states0, states, params, *, family, steps, options, surrogate_kind,
            surrogate_param, x_dtype, param_grads=None, float_grads=None):
    # param_grads: whether each parameter wants its gradient (None: every tensor parameter); a
    # gradient not wanted is not computed, and lets a state the spec's backward_reads dropped go.
    # float_grads: for a parameter passed as a float that still wants a gradient (a host-clamped
    # learnable parameter, FamilyFunction), a tensor of the gradient's shape; None: no gradient
    ref = next(s for s in states if s is not None)  # a state forward did not keep is None
    compute = ref.dtype
    T, R, L = grid(ref.shape, steps)
    xc = as_compute(x, compute)  # None when the family's backward does not read x
    grad_spk = as_compute(grad_spk, compute)
    grad_states = [as_compute(g, compute) for g in grad_states]
    grad_x = cpu_empty(ref.shape, compute)
    grad_states0 = [None if s is None else torch.empty_like(s) for s in states0]
    grad_params = param_grad_buffers(params, float_grads, param_grads)
    _C().family_bwd(family, cpp_dtype_code(compute), T, R, L, ptr(grad_spk), [ptr(g) for g in grad_states],
                    ptr(xc), [ptr(s) for s in states0], [ptr(s) for s in states],
                    [cpp_param(p) for p in params], grad_x.data_ptr(), [ptr(g) for g in grad_states0],
                    [ptr(g) for g in grad_params], list(options), surrogate_kind, surrogate_param,
                    num_threads())
    return (grad_x if x_dtype == compute else grad_x.to(x_dtype)), grad_states0, grad_params


_C = backends.cpp_module


def _launchers(spec, backend):
    """``(fwd, bwd)`` of ``backend``: the C++ ones are this module's own (no trip through the
    registry), the Triton ones come from it (kernels/<family>.py, imported on first use)."""
    return (cpp_fwd, cpp_bwd) if backend == "cpp" else backends.launchers(spec.name, backend)


# --- custom ops: what torch.compile sees ---------------------------------------------------------

def _like_or_empty(t, fallback):
    return torch.empty_like(t) if t is not None else fallback.new_empty((0,))


@torch.library.custom_op("fastlif::family_fwd", mutates_args=(), device_types=("cpu", "cuda"))
def family_fwd(family: str, x: Tensor, states0: List[Optional[Tensor]], params: List[Tensor], steps: int,
               options: List[int], backend: str) -> List[Tensor]:
    spk, states = _launchers(FAMILIES[family], backend)[0](x, states0, params, family=family, steps=steps,
                                                            options=tuple(options))
    spec = FAMILIES[family]
    return [spk, *(states[1:] if spec.spike_state else states)]  # no output aliases another


@family_fwd.register_fake
def _(family, x, states0, params, steps, options, backend):
    spec = FAMILIES[family]
    compute = compute_dtype(x.dtype)
    n = len(spec.states) - spec.spike_state
    return [torch.empty_like(x), *(torch.empty_like(x, dtype=compute) for _ in range(n))]


@torch.library.custom_op("fastlif::family_bwd", mutates_args=(), device_types=("cpu", "cuda"))
def family_bwd(family: str, grad_spk: Optional[Tensor], grad_states: List[Optional[Tensor]], x: Tensor,
               states0: List[Optional[Tensor]], states: List[Tensor], params: List[Tensor], steps: int,
               options: List[int], surrogate_kind: int, surrogate_param: float, x_dtype: torch.dtype,
               backend: str) -> List[Tensor]:
    grad_x, grad_states0, grad_params = _launchers(FAMILIES[family], backend)[1](
        grad_spk, grad_states, x, states0, states, params, family=family, steps=steps, options=tuple(options),
        surrogate_kind=surrogate_kind, surrogate_param=surrogate_param, x_dtype=x_dtype)
    return [grad_x, *(x.new_empty((0,)) if g is None else g for g in (*grad_states0, *grad_params))]


@family_bwd.register_fake
def _(family, grad_spk, grad_states, x, states0, states, params, steps, options, surrogate_kind,
      surrogate_param, x_dtype, backend):
    return [x.new_empty(x.shape, dtype=x_dtype), *(_like_or_empty(s, x) for s in states0),
            *(torch.empty_like(p) for p in params)]


# --- autograd -----------------------------------------------------------------------------------

class FamilyFunction(torch.autograd.Function):
    """The one autograd path of every spec'd family: the launchers in eager mode, the custom ops
    under torch.compile (which traces this Function and sees them through their fakes).

    ``apply(spec, steps, options, surrogate_kind, surrogate_param, backend, clamp_in, x, *states0,
    *params)``: the tensors come last, their count from the spec. ``clamp_in``: the indices of
    the parameters passed raw, which this Function clamps to [0, 1] itself (learnable clamped
    parameters: no clamp node in the graph; one value on the C++ backend is clamped on the host,
    as LifFunction's beta)."""

    @staticmethod
    def forward(ctx, spec, steps, options, surrogate_kind, surrogate_param, backend, clamp_in, x, *rest):
        n = len(spec.states)
        states0, params = list(rest[:n]), list(rest[n:])
        raws = [None] * len(params)
        ctx.inside = [None] * len(params)
        for k in clamp_in:
            raws[k] = params[k]
            params[k], ctx.inside[k] = clamp_in_function(params[k], backend)
        if torch.compiler.is_compiling():
            compute = compute_dtype(x.dtype)
            outs = family_fwd(spec.name, x, states0, [param_tensor(p, compute, x.device) for p in params],
                              steps, list(options), backend)
            spk, states = outs[0], list(outs[1:])
            if spec.spike_state:
                states.insert(0, spk)
        else:
            spk, states = _launchers(spec, backend)[0](x, states0, params, family=spec.name, steps=steps,
                                                       options=options)
        tensor_params = [p if isinstance(p, Tensor) else None for p in params]
        kept = states
        if spec.backward_reads is not None and backend == "cpp" and not torch.compiler.is_compiling():
            # only what the C++ backward reads for this call: memory held until backward
            reads = spec.backward_reads(options, _param_grads(ctx, n))
            kept = [s if read else None for s, read in zip(states, reads)]
        ctx.save_for_backward(x if spec.needs_x else None, *states0, *kept, *tensor_params, *raws)
        ctx.float_params = [None if isinstance(p, Tensor) else p for p in params]
        ctx.meta = (spec, steps, options, surrogate_kind, surrogate_param, backend, x.dtype)
        ctx.set_materialize_grads(False)
        returned = states[1:] if spec.spike_state else states
        return (spk, *returned)

    @staticmethod
    def backward(ctx, grad_spk, *grad_returned):
        spec, steps, options, surrogate_kind, surrogate_param, backend, x_dtype = ctx.meta
        n, n_params = len(spec.states), len(spec.params)
        x, *saved = ctx.saved_tensors
        states0, states = saved[:n], saved[n:2 * n]
        tensor_params, raws = saved[2 * n:2 * n + n_params], saved[2 * n + n_params:]
        none = (None,) * 7
        if grad_spk is None and all(g is None for g in grad_returned):
            return none + (None,) * (1 + n + n_params)
        params = [t if t is not None else f for t, f in zip(tensor_params, ctx.float_params)]
        grad_states = [None, *grad_returned] if spec.spike_state else list(grad_returned)
        options_kw = dict(steps=steps, surrogate_kind=surrogate_kind, surrogate_param=surrogate_param,
                          x_dtype=x_dtype)
        if torch.compiler.is_compiling():
            ref = states[-1]  # x's shape and device (x itself is not kept by every family)
            outs = family_bwd(spec.name, grad_spk, grad_states, x if x is not None else ref, list(states0),
                              list(states), [param_tensor(p, ref.dtype, ref.device) for p in params],
                              options=list(options),
                              backend=backend, **options_kw)
            grad_x, grad_states0, grad_params = outs[0], outs[1:1 + n], outs[1 + n:]
        else:
            if backend == "cpp":  # the C++ launcher skips the gradients no one asked for
                options_kw["param_grads"] = _param_grads(ctx, n)
                options_kw["float_grads"] = raws  # a host-clamped float owes its raw parameter a gradient
            grad_x, grad_states0, grad_params = _launchers(spec, backend)[1](
                grad_spk, grad_states, x, list(states0), list(states), params, family=spec.name,
                options=options, **options_kw)
        grad_states0 = [g if s is not None else None for g, s in zip(grad_states0, states0)]
        grad_params = [None if g is None or not wanted else g if raw is None else clamp_grad(g, raw, inside=inside)
                       for g, wanted, raw, inside in zip(grad_params, _param_grads(ctx, n), raws, ctx.inside)]
        return none + (grad_x, *grad_states0, *grad_params)


def _param_grads(ctx, n):
    """Whether each parameter needs a gradient: FamilyFunction.apply's inputs are seven options,
    x, the n initial states, then the parameters."""
    return ctx.needs_input_grad[8 + n:]


# --- the call every neuron of a spec'd family makes ----------------------------------------------

def run_family(spec, x, states, params, *, single_step, options, spike_fn, surrogate, backend,
               reference_options=None):
    """Check a call's arguments and run ``spec``'s family on ``backend``.

    ``x`` is a sequence ``[T, ...]`` or, with ``single_step``, one step; ``states`` the initial
    states in the spec's order (None: zeros), ``params`` its parameters (numbers or tensors of 1
    or L values), ``options`` a dict of its integer options. ``surrogate`` is the kernels' form
    of ``spike_fn`` (None: only the reference loop can run it). Returns ``(spk, *states)``
    shaped like ``x`` (without the spike state of a recurrent family), the states in the
    compute dtype.
    """
    x = check_input(x, single_step)
    check_states(x, single_step, **dict(zip(spec.states, states)))
    n_last = x.shape[-1] if x.dim() else 1
    params = tuple(check_param(v, name, n_last) for v, name in zip(params, spec.params))
    option_values = tuple(int(options[name]) for name in spec.options)
    for name, value, allowed in zip(spec.options, option_values, spec.choices):
        if value not in allowed:
            raise ValueError(f"{spec.name}: option {name}={value} is not one of {allowed}")
    name = choose_backend(spec.name, backend, x, surrogate, spike_fn, reference_options)
    returned = slice(1, None) if spec.spike_state else slice(None)
    if name == "reference":
        spk, *seqs = _run_reference(spec, x, states, params, dict(zip(spec.options, option_values)), spike_fn,
                                    single_step, reference_options or {})
        return (spk, *seqs[returned])
    compute = compute_dtype(x.dtype)
    if x.numel() == 0:
        return (x * 0, *(x.to(compute) * 0 for _ in spec.states[returned]))
    # a learnable clamped parameter is clamped by FamilyFunction itself (or below), not by a clamp node
    clamp_in, clamped = learnable_clamped(params, spec.params, spec.clamped)
    kparams = kernel_params(x, params, spec.params, clamped=clamped)
    states0 = initial_states(compute, *states)
    steps = 1 if single_step else x.shape[0]
    if not needs_autograd(x, *states0, *kparams):
        kparams = clamp_without_function(kparams, clamp_in)
        spk, seqs = _launchers(spec, name)[0](x, states0, kparams, family=spec.name, steps=steps,
                                              options=option_values)
        return (spk, *seqs[returned])
    if name == "cpp":  # eager: the C++ autograd Function, where it serves
        out = cpp_autograd("family", x, states0, kparams, clamp_in, steps, option_values, surrogate,
                           family=spec.name, spike_state=spec.spike_state, needs_x=spec.needs_x,
                           backward_reads=spec.backward_reads)
        if out is not None:
            return out
    return FamilyFunction.apply(spec, steps, option_values, surrogate.kind, float(surrogate.param), name, clamp_in,
                                x, *states0, *kparams)
