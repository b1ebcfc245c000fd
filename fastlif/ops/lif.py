"""The LIF op family: snnTorch's ``Leaky`` over T steps, forward in one kernel call and its
surrogate backward in another (semantics: api.md section 1; the reference loop:
:func:`fastlif.reference.lif_sequence_reference`).

Launcher contract, the same for the C++ launchers below and the Triton ones
(``kernels/lif.py``); every argument after ``graded`` is a keyword::

    fwd(x, mem0, beta, threshold, graded, *, steps, reset_mode, reset_delay, low_memory,
        mem_fp32) -> (spk, mem, state, flags)
    bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded, *, steps,
        reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype)
        -> (grad_x, grad_mem0, grad_beta, grad_threshold, grad_graded)

``x`` holds ``steps`` time steps, time first: ``[T, ...]`` for a sequence, or one step's
``[...]`` with ``steps=1``; every output of forward has x's shape (so a single step's membrane
is no view of a larger tensor: snnTorch's helpers ``detach_()`` it in place). ``mem0`` is the
initial membrane (contiguous, any shape holding one step) or None (zeros). Parameters are Python
floats or tensors of 1 value or L values (L = x's last dimension) in the compute dtype, beta
already clamped to [0, 1].
``spk`` comes back in x's dtype, ``mem`` too unless ``mem_fp32`` (then in the compute dtype).
``state`` and ``flags`` are what backward needs beyond ``mem`` (:func:`saved_layout`). In
backward a None ``grad_spk`` / ``grad_mem`` (an output that got no gradient) means zeros, and
``mem`` is None when ``state`` holds what backward needs; a parameter gradient is None where the
parameter was a float.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import backends, surrogate as surrogate_mod
from ..layout import saved_layout  # noqa: F401 - the LIF ops' saved-layout contract, re-exported
from ..codes import RESET_MECHANISMS, is_immediate, reset_code
from ..reference import lif_sequence_reference, lif_step
from .common import (CPP_DTYPES, HALF_DTYPES, as_compute, check_input, check_param, check_states, choose_backend,
                     clamp_grad, clamp_in_function, clamp_without_function, compute_dtype, cpp_autograd, cpp_dtype_code, cpp_param, cpu_empty, cpu_empty_like, cpu_nothing,
                     fresh_outputs, grid, initial_states, input_grads, kernel_params, learnable_clamped, mem_dtype, needs_autograd, num_threads,
                     param_grad_buffers, param_tensor, ptr)

FAMILY = "lif"
PARAM_NAMES = ("beta", "threshold", "graded_spikes_factor")


# --- C++ launchers ------------------------------------------------------------------------------

def cpp_fwd(x, mem0, beta, threshold, graded, *, steps, reset_mode, reset_delay, low_memory,
            mem_fp32):
    if low_memory:
        raise ValueError("low_memory=True (membrane saved in bf16) exists on the triton backend only")
    out_dtype = x.dtype
    if out_dtype in CPP_DTYPES:
        xc = x if x.is_contiguous() else x.contiguous()
    elif out_dtype in HALF_DTYPES:
        xc = x.to(torch.float32).contiguous()
    else:
        raise TypeError(f"fastlif cpp backend computes in float32 or float64, got {out_dtype} "
                        f"(float16/bfloat16 input is widened to float32)")
    T, R, L = grid(x.shape, steps)
    immediate = is_immediate(reset_mode, reset_delay)
    spk = cpu_empty_like(xc)
    mem = cpu_empty_like(xc)
    u = cpu_empty_like(xc) if immediate else None
    flags = cpu_empty(x.shape, torch.uint8) if immediate else cpu_nothing(torch.uint8)
    _C().lif_fwd(cpp_dtype_code(xc.dtype), T, R, L, xc.data_ptr(), ptr(mem0),
                 [cpp_param(beta), cpp_param(threshold), cpp_param(graded)], spk.data_ptr(), mem.data_ptr(),
                 ptr(u), ptr(flags if immediate else None), reset_mode, immediate, num_threads())
    if immediate:
        state = u  # what saved_layout says: the pre-reset membrane, and the flags
    elif out_dtype != xc.dtype and not mem_fp32:
        state = mem  # fp16/bf16 input, rounded mem output: backward needs the fp32 membrane
    else:
        state = cpu_nothing(xc.dtype)
    if out_dtype != xc.dtype:
        spk = spk.to(out_dtype)
        mem = mem if mem_fp32 else mem.to(out_dtype)
    return spk, mem, state, flags


def cpp_bwd(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded, *, steps,
            reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype, float_grads=(None,) * 3):
    # float_grads: for a parameter passed as a float that still wants a gradient (LifFunction's
    # host-clamped learnable beta), a tensor of the gradient's shape; None: no gradient
    ref = state if state.numel() else mem
    compute = ref.dtype
    T, R, L = grid(ref.shape, steps)
    immediate = is_immediate(reset_mode, reset_delay)
    grad_spk, grad_mem = as_compute(grad_spk, compute), as_compute(grad_mem, compute)
    mem_saved = None if immediate else as_compute(ref, compute)
    grad_x = cpu_empty(ref.shape, compute)
    grad_mem0 = None if mem0 is None else torch.empty_like(mem0)
    grads = param_grad_buffers((beta, threshold, graded), float_grads)
    _C().lif_bwd(cpp_dtype_code(compute), T, R, L, ptr(grad_spk), ptr(grad_mem), ptr(mem_saved),
                 ptr(state if immediate else None), ptr(flags if immediate else None), ptr(mem0),
                 [cpp_param(beta), cpp_param(threshold), cpp_param(graded)], grad_x.data_ptr(), ptr(grad_mem0),
                 [ptr(g) for g in grads], reset_mode, immediate, surrogate_kind, surrogate_param, num_threads())
    return (grad_x if x_dtype == compute else grad_x.to(x_dtype)), grad_mem0, *grads


_C = backends.cpp_module  # memoised: the extension, or BackendUnavailable saying how to build it


backends.register_cpp(FAMILY, cpp_fwd, cpp_bwd)  # the Triton ones: kernels/lif.py


def _launchers(backend):
    """``(fwd, bwd)`` of ``backend``: the C++ ones are this module's own (no trip through the
    registry), the Triton ones come from it (kernels/lif.py, imported on first use)."""
    return (cpp_fwd, cpp_bwd) if backend == "cpp" else backends.launchers(FAMILY, backend)


# --- custom ops: what torch.compile sees ---------------------------------------------------------

@torch.library.custom_op("fastlif::lif_fwd", mutates_args=(), device_types=("cpu", "cuda"))
def lif_fwd(x: Tensor, mem0: Optional[Tensor], beta: Tensor, threshold: Tensor, graded: Tensor,
            steps: int, reset_mode: int, reset_delay: bool, low_memory: bool, mem_fp32: bool,
            backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    outs = _launchers(backend)[0](x, mem0, beta, threshold, graded, steps=steps, reset_mode=reset_mode,
                                  reset_delay=reset_delay, low_memory=low_memory, mem_fp32=mem_fp32)
    return fresh_outputs(outs)


@lif_fwd.register_fake
def _(x, mem0, beta, threshold, graded, steps, reset_mode, reset_delay, low_memory, mem_fp32, backend):
    state_shape, state_dtype, flags_shape = saved_layout(x.shape, x.dtype, reset_mode, reset_delay,
                                                         low_memory, mem_fp32)
    return (torch.empty_like(x), torch.empty_like(x, dtype=mem_dtype(x.dtype, mem_fp32)),
            x.new_empty(state_shape, dtype=state_dtype), x.new_empty(flags_shape, dtype=torch.uint8))


@torch.library.custom_op("fastlif::lif_bwd", mutates_args=(), device_types=("cpu", "cuda"))
def lif_bwd(grad_spk: Optional[Tensor], grad_mem: Optional[Tensor], mem: Optional[Tensor],
            state: Tensor, flags: Tensor, mem0: Optional[Tensor], beta: Tensor, threshold: Tensor,
            graded: Tensor, steps: int, reset_mode: int, reset_delay: bool, surrogate_kind: int,
            surrogate_param: float, x_dtype: torch.dtype,
            backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    bwd = _launchers(backend)[1]
    grad_x, grad_mem0, *grads = bwd(
        grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded, steps=steps,
        reset_mode=reset_mode, reset_delay=reset_delay, surrogate_kind=surrogate_kind,
        surrogate_param=surrogate_param, x_dtype=x_dtype)
    return (grad_x, grad_mem0 if grad_mem0 is not None else beta.new_empty((0,)), *grads)


@lif_bwd.register_fake
def _(grad_spk, grad_mem, mem, state, flags, mem0, beta, threshold, graded, steps, reset_mode,
      reset_delay, surrogate_kind, surrogate_param, x_dtype, backend):
    ref = state if state.numel() else mem
    grad_mem0 = torch.empty_like(mem0) if mem0 is not None else beta.new_empty((0,))
    return (ref.new_empty(ref.shape, dtype=x_dtype), grad_mem0, torch.empty_like(beta),
            torch.empty_like(threshold), torch.empty_like(graded))


# --- autograd -----------------------------------------------------------------------------------

class LifFunction(torch.autograd.Function):
    """The one autograd path. In eager mode it calls the backend's launchers directly (the
    ``torch.library`` dispatch of a custom op costs ~15 us per forward+backward, a third of a small
    call); ``torch.compile`` traces this Function, and there it calls the custom ops, which it
    sees through their fake implementations."""

    @staticmethod
    def forward(ctx, x, mem0, beta, threshold, graded, steps, reset_mode, reset_delay, low_memory,
                mem_fp32, surrogate_kind, surrogate_param, backend, clamp_beta=None):
        # clamp_beta: beta is the raw learnable tensor, clamped to [0, 1] here and its gradient
        # masked in backward as torch's clamp would, without a clamp node in the graph (40-60 us
        # of a tutorial-size call). None (not given) or False: beta comes clamped.
        beta_raw = beta if clamp_beta else None
        ctx.beta_inside = None  # set: beta was clamped on the host, and its gradient passes or not
        if clamp_beta:
            beta, ctx.beta_inside = clamp_in_function(beta, backend)
        params = (beta, threshold, graded)
        if torch.compiler.is_compiling():
            compute = compute_dtype(x.dtype)
            spk, mem, state, flags = lif_fwd(x, mem0, *(param_tensor(p, compute, x.device) for p in params),
                                             steps=steps, reset_mode=reset_mode, reset_delay=reset_delay,
                                             low_memory=low_memory, mem_fp32=mem_fp32, backend=backend)
        else:
            spk, mem, state, flags = _launchers(backend)[0](
                x, mem0, beta, threshold, graded, steps=steps, reset_mode=reset_mode,
                reset_delay=reset_delay, low_memory=low_memory, mem_fp32=mem_fp32)
        # Keep the mem output only when backward rebuilds the steps from it (state is empty):
        # what is saved here is all the memory backward holds on to.
        tensor_params = [p if isinstance(p, Tensor) else None for p in params]
        ctx.save_for_backward(mem if state.numel() == 0 else None, state, flags, mem0, *tensor_params, beta_raw)
        ctx.float_params = [None if isinstance(p, Tensor) else p for p in params]
        ctx.options = (steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x.dtype)
        ctx.backend = backend
        ctx.set_materialize_grads(False)
        return spk, mem  # state and flags are saved, not returned: nothing differentiates them

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        mem, state, flags, mem0, *tensor_params, beta_raw = ctx.saved_tensors
        params = [t if t is not None else f for t, f in zip(tensor_params, ctx.float_params)]
        if grad_spk is None and grad_mem is None:
            return input_grads(ctx)
        steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype = ctx.options
        options = dict(steps=steps, reset_mode=reset_mode, reset_delay=reset_delay,
                       surrogate_kind=surrogate_kind, surrogate_param=surrogate_param, x_dtype=x_dtype)
        if torch.compiler.is_compiling():
            ref = state if state.numel() else mem
            compute = compute_dtype(ref.dtype)
            params = [param_tensor(p, compute, ref.device) for p in params]
            grad_x, grad_mem0, *grads = lif_bwd(grad_spk, grad_mem, mem, state, flags, mem0, *params,
                                                **options, backend=ctx.backend)
        else:
            if ctx.beta_inside is not None:  # beta went to the C++ kernels as a host-clamped float
                options["float_grads"] = (beta_raw, None, None)
            bwd = _launchers(ctx.backend)[1]
            grad_x, grad_mem0, *grads = bwd(grad_spk, grad_mem, mem, state, flags, mem0, *params, **options)
        # a gradient for each parameter that asked for one (the custom op returns one for all)
        grads = [g if wanted else None for g, wanted in zip(grads, ctx.needs_input_grad[2:5])]
        if beta_raw is not None and grads[0] is not None:
            grads[0] = clamp_grad(grads[0], beta_raw, inside=ctx.beta_inside)
        return input_grads(ctx, grad_x, grad_mem0 if mem0 is not None else None, *grads)


# --- the call modules and lif_sequence share ----------------------------------------------------

def run_lif(x, mem, beta, threshold, graded, *, single_step, reset_mode, reset_delay, spike_fn,
        surrogate, backend, low_memory=False, mem_fp32=False, reference_options=None):
    """Check a call's arguments (the one place they are checked) and run it on ``backend``.

    ``x`` is a sequence ``[T, ...]``, or with ``single_step`` one step's ``[...]``; ``mem`` is the
    initial membrane (the shape of one step) or None. ``surrogate`` is the
    :class:`fastlif.surrogate.Surrogate` of ``spike_fn``, or None when ``spike_fn`` is a callable
    the kernels cannot run (the reference loop runs it). ``reference_options`` (snnTorch's rarer
    options, see :func:`fastlif.reference.lif_step`) also send the call to the reference loop.
    Returns ``(spk, mem)`` shaped like ``x``.
    """
    x = check_input(x, single_step)
    check_states(x, single_step, mem=mem)
    shape = x.shape
    n_last = shape[-1] if len(shape) else 1
    beta, threshold, graded = (check_param(beta, "beta", n_last), check_param(threshold, "threshold", n_last),
                               check_param(graded, "graded_spikes_factor", n_last))
    name = choose_backend(FAMILY, backend, x, surrogate, spike_fn, reference_options)
    if name == "reference":
        return _run_reference(x, mem, beta, threshold, graded, single_step, reset_mode, reset_delay,
                              spike_fn, mem_fp32, reference_options or {})
    if shape.numel() == 0:  # no steps, or an empty batch: nothing to run
        return x * 0, x.to(mem_dtype(x.dtype, mem_fp32)) * 0
    # A learnable beta is clamped by LifFunction itself (or below), not by a clamp node
    clamp_in, clamped = learnable_clamped((beta, threshold, graded), PARAM_NAMES, ("beta",))
    params = kernel_params(x, (beta, threshold, graded), PARAM_NAMES, clamped=clamped)
    mem0 = None if mem is None else as_compute(mem, compute_dtype(x.dtype))
    steps = 1 if single_step else shape[0]
    if not needs_autograd(x, mem0, *params):  # the launcher itself, no autograd Function around it
        params = clamp_without_function(params, clamp_in)
        spk, mem_out, _, _ = _launchers(name)[0](
            x, mem0, *params, steps=steps, reset_mode=reset_mode, reset_delay=bool(reset_delay),
            low_memory=bool(low_memory), mem_fp32=bool(mem_fp32))
        return spk, mem_out
    if name == "cpp" and not low_memory:  # eager: the C++ autograd Function, where it serves
        out = cpp_autograd("leaky", x, (mem0,), params, clamp_in, steps,
                           (reset_mode, int(is_immediate(reset_mode, reset_delay))), surrogate)
        if out is not None:
            return out
    return LifFunction.apply(x, mem0, *params, steps, reset_mode, bool(reset_delay), bool(low_memory),
                             bool(mem_fp32), surrogate.kind, float(surrogate.param), name, bool(clamp_in))


def _run_reference(x, mem, beta, threshold, graded, single_step, reset_mode, reset_delay, spike_fn,
                   mem_fp32, options):
    """The reference loop, under the same dtype policy as the kernels."""
    compute = compute_dtype(x.dtype)
    as_param = (lambda p: torch.as_tensor(p, device=x.device).to(compute))
    beta, threshold, graded = as_param(beta).clamp(0, 1), as_param(threshold), as_param(graded)
    mechanism = RESET_MECHANISMS[reset_mode]
    if single_step:  # lif_step itself: its outputs are no views of a stacked sequence
        mem = torch.zeros_like(x, dtype=compute) if mem is None else mem.to(compute)
        spk, mem = lif_step(x.to(compute), mem, beta, threshold, graded, spike_fn, mechanism,
                            reset_delay, **options)
    else:
        spk, mem = lif_sequence_reference(
            x.to(compute), beta, threshold, mem=None if mem is None else mem.to(compute),
            reset_mechanism=mechanism, reset_delay=reset_delay, spike_fn=spike_fn,
            graded_spikes_factor=graded, **options)
    return spk.to(x.dtype), mem.to(mem_dtype(x.dtype, mem_fp32))


def lif_sequence(x_seq, beta, threshold=1.0, *, mem=None, reset_mechanism="subtract",
                 reset_delay=True, surrogate=None, graded_spikes_factor=1.0, backend="auto",
                 low_memory=False):
    """snnTorch's ``Leaky`` over the leading time dimension of ``x_seq`` ``[T, ...]``, fused.

    Returns ``(spk_seq, mem_seq)``, both shaped like ``x_seq``. ``beta`` (clamped to [0, 1]),
    ``threshold`` and ``graded_spikes_factor`` are scalars or tensors with one value per
    neuron along the last dimension; gradients flow to them when they require grad, to
    ``x_seq`` and to ``mem``. ``surrogate`` is a ``fastlif.surrogate`` (default atan), an
    snnTorch surrogate, or any callable (which runs on the reference backend).
    ``low_memory`` keeps the saved membrane in bf16 (triton backend only).
    """
    spike_fn, sg = surrogate_mod.resolve(surrogate)
    return run_lif(x_seq, mem, beta, threshold, graded_spikes_factor, single_step=False,
               reset_mode=reset_code(reset_mechanism), reset_delay=reset_delay, spike_fn=spike_fn,
               surrogate=sg, backend=backend, low_memory=low_memory)
