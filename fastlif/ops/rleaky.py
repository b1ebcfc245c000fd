"""The RLeaky op family: snnTorch's ``RLeaky`` (a Leaky whose spikes feed back into the next
step) over T steps, forward in one kernel call and its surrogate backward in another. The
feedback is one weight per neuron (``all_to_all=False``: ``spk * V``), fused on the CPU (C++)
and GPU (Triton), or a dense ``nn.Linear`` (``all_to_all=True``), fused on the CPU, where each
step adds only the weight columns of the neurons that spiked. The reference loop:
:func:`fastlif.reference.rleaky_sequence_reference`. Same shape as :mod:`fastlif.ops.lif`.

Launcher contract (C++ below; Triton, one-to-one only, in ``kernels/rleaky.py``)::

    fwd(x, spk0, mem0, beta, V, threshold, graded, weight, bias, *, steps, reset_mode,
        reset_delay) -> (spk, mem, state, flags)
    bwd(grad_spk, grad_mem, mem, state, flags, spk0, mem0, beta, V, threshold, graded, weight,
        *, steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype)
        -> (grad_x, grad_spk0, grad_mem0, grad_beta, grad_V, grad_threshold, grad_graded)

``weight`` [N, N] and ``bias`` [N] are the dense layer's (None: one-to-one, and then ``V`` is
used); with the dense layer, ``grad_x`` is also the gradient reaching each step's recurrent
input, from which :class:`RLeakyFunction` forms the layer's weight and bias gradients. Spikes
come back in x's dtype, the membrane in the compute dtype.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import backends
from ..codes import RESET_MECHANISMS, is_immediate
from ..reference import rleaky_sequence_reference, rleaky_step
from . import spike_linear
from .common import (CPP_DTYPES, HALF_DTYPES, as_compute, check_input, check_param, check_states, choose_backend,
                     clamp_grad, clamp_in_function, clamp_without_function, compute_dtype, cpp_autograd, cpp_dtype_code, cpp_param, cpu_empty, cpu_empty_like, cpu_nothing, fresh_outputs,
                     grid, initial_states, input_grads, kernel_params, learnable_clamped, needs_autograd, num_threads, param_grad_buffers,
                     param_tensor, ptr, warn_once)

FAMILY = "rleaky"
PARAM_NAMES = ("beta", "V", "threshold", "graded_spikes_factor")


# --- C++ launchers ------------------------------------------------------------------------------

def cpp_fwd(x, spk0, mem0, beta, V, threshold, graded, weight, bias, *, steps, reset_mode, reset_delay):
    if x.dtype not in CPP_DTYPES + HALF_DTYPES:
        raise TypeError(f"fastlif cpp backend computes in float32 or float64, got {x.dtype}")
    xc = x.contiguous() if x.dtype in CPP_DTYPES else x.to(torch.float32).contiguous()
    T, R, L = grid(x.shape, steps)
    immediate = is_immediate(reset_mode, reset_delay)
    spk, mem = cpu_empty_like(xc), cpu_empty_like(xc)
    state = cpu_empty_like(xc) if immediate else cpu_nothing(xc.dtype)
    flags = cpu_empty(x.shape, torch.uint8) if immediate else cpu_nothing(torch.uint8)
    wt = None if weight is None else weight.detach().to(xc.dtype).t().contiguous()
    bias = None if bias is None else bias.detach().to(xc.dtype).contiguous()
    params = [cpp_param(beta), cpp_param(V), cpp_param(threshold), cpp_param(graded)]
    _C().rleaky_fwd(cpp_dtype_code(xc.dtype), T, R, L, xc.data_ptr(), ptr(spk0), ptr(mem0), params, ptr(wt),
                    ptr(bias), spk.data_ptr(), mem.data_ptr(), ptr(state if immediate else None),
                    ptr(flags if immediate else None), reset_mode, immediate, num_threads())
    return (spk if spk.dtype == x.dtype else spk.to(x.dtype)), mem, state, flags


def cpp_bwd(grad_spk, grad_mem, mem, state, flags, spk0, mem0, beta, V, threshold, graded, weight, *, steps,
            reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype, float_grads=(None,) * 4):
    # float_grads: for a parameter passed as a float that still wants a gradient (RLeakyFunction's
    # host-clamped learnable beta), a tensor of the gradient's shape; None: no gradient
    immediate = is_immediate(reset_mode, reset_delay)
    ref = state if immediate else mem
    compute = ref.dtype
    T, R, L = grid(ref.shape, steps)
    grads_in = [as_compute(g, compute) for g in (grad_spk, grad_mem)]
    grad_x = cpu_empty(ref.shape, compute)
    grad_spk0 = None if spk0 is None else torch.empty_like(spk0)
    grad_mem0 = None if mem0 is None else torch.empty_like(mem0)
    params = (beta, V, threshold, graded)
    grads = param_grad_buffers(params, float_grads)
    if weight is not None:
        grads[1] = None  # V is not used with the dense layer
    w = None if weight is None else weight.detach().to(compute).contiguous()
    _C().rleaky_bwd(cpp_dtype_code(compute), T, R, L, *map(ptr, grads_in), ptr(None if immediate else ref),
                    ptr(state if immediate else None), ptr(flags if immediate else None), ptr(spk0), ptr(mem0),
                    [cpp_param(p) for p in params], ptr(w), grad_x.data_ptr(), ptr(grad_spk0),
                    ptr(grad_mem0), [ptr(g) for g in grads], reset_mode, immediate, surrogate_kind,
                    surrogate_param, num_threads())
    return (grad_x if x_dtype == compute else grad_x.to(x_dtype)), grad_spk0, grad_mem0, *grads


_C = backends.cpp_module


backends.register_cpp(FAMILY, cpp_fwd, cpp_bwd)  # the Triton ones (one-to-one): kernels/rleaky.py


# --- custom ops: what torch.compile sees ---------------------------------------------------------

@torch.library.custom_op("fastlif::rleaky_fwd", mutates_args=(), device_types=("cpu", "cuda"))
def rleaky_fwd(x: Tensor, spk0: Optional[Tensor], mem0: Optional[Tensor], beta: Tensor, V: Tensor,
               threshold: Tensor, graded: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], steps: int,
               reset_mode: int, reset_delay: bool, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return fresh_outputs(backends.launchers(FAMILY, backend)[0](
        x, spk0, mem0, beta, V, threshold, graded, weight, bias, steps=steps, reset_mode=reset_mode,
        reset_delay=reset_delay))


@rleaky_fwd.register_fake
def _(x, spk0, mem0, beta, V, threshold, graded, weight, bias, steps, reset_mode, reset_delay, backend):
    compute = compute_dtype(x.dtype)
    immediate = is_immediate(reset_mode, reset_delay)
    return (torch.empty_like(x), torch.empty_like(x, dtype=compute),
            x.new_empty(x.shape if immediate else (0,), dtype=compute),
            x.new_empty(x.shape if immediate else (0,), dtype=torch.uint8))


@torch.library.custom_op("fastlif::rleaky_bwd", mutates_args=(), device_types=("cpu", "cuda"))
def rleaky_bwd(grad_spk: Optional[Tensor], grad_mem: Optional[Tensor], mem: Optional[Tensor], state: Tensor,
               flags: Tensor, spk0: Optional[Tensor], mem0: Optional[Tensor], beta: Tensor, V: Tensor,
               threshold: Tensor, graded: Tensor, weight: Optional[Tensor], steps: int, reset_mode: int,
               reset_delay: bool, surrogate_kind: int, surrogate_param: float, x_dtype: torch.dtype,
               backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    outs = backends.launchers(FAMILY, backend)[1](
        grad_spk, grad_mem, mem, state, flags, spk0, mem0, beta, V, threshold, graded, weight, steps=steps,
        reset_mode=reset_mode, reset_delay=reset_delay, surrogate_kind=surrogate_kind,
        surrogate_param=surrogate_param, x_dtype=x_dtype)
    return tuple(beta.new_empty((0,)) if t is None else t for t in outs)  # distinct: no aliasing


@rleaky_bwd.register_fake
def _(grad_spk, grad_mem, mem, state, flags, spk0, mem0, beta, V, threshold, graded, weight, steps, reset_mode,
      reset_delay, surrogate_kind, surrogate_param, x_dtype, backend):
    ref = state if state.numel() else mem
    like = (lambda t: torch.empty_like(t) if t is not None else beta.new_empty((0,)))  # noqa: E731
    return (ref.new_empty(ref.shape, dtype=x_dtype), like(spk0), like(mem0), like(beta),
            like(V if weight is None else None), like(threshold), like(graded))


# --- autograd -----------------------------------------------------------------------------------

def _recurrent_weight_grads(g, spk, spk0, steps, need_bias):
    """The dense recurrent layer's weight and bias gradients, ``sum_t,b g[t,b] (x) spk[t-1,b]`` and
    ``sum_t,b g[t,b]`` (``spk[-1]``: the initial spikes ``spk0``, zeros if None), for ``g`` and
    ``spk`` holding ``steps`` steps, time first. On the CPU the weight gradient is SpikeLinear's,
    event-driven over the spikes (no shifted copy of them: steps 1.. pair with spikes 0..)."""
    n = spk.shape[-1]
    g, spk = g.reshape(steps, -1, n), spk.reshape(steps, -1, n)
    g_rows, s_rows = g[1:].reshape(-1, n), spk[:-1].reshape(-1, n)
    if g.device.type == "cpu" and g.dtype in CPP_DTYPES and g_rows.numel():
        # the bias gradient too, over steps 1.. (step 0's rows added below): a torch sum over all
        # T*B rows is a parallel region of torch's own, which a busy core stalls (2.7x slower
        # beside two spinning processes, bench_cpu --busy), where fastlif's regions go solo
        _, grad_w, grad_b = backends.launchers("spike_linear", "cpp")[1](
            g_rows, s_rows, None, None, None, torch.empty(n, n, dtype=g.dtype), need_input=False,
            need_weight=True, need_bias=need_bias, dense_above=spike_linear.DENSE_ABOVE)
        if need_bias:
            grad_b += g[0].reshape(-1, n).sum(0)  # B rows: under torch's parallel grain
    else:
        grad_w = g_rows.t() @ s_rows
        grad_b = g.reshape(-1, n).sum(0) if need_bias else None
    if spk0 is not None:
        grad_w += g[0].t() @ spk0.reshape(-1, n).to(g.dtype)
    return grad_w, grad_b


class RLeakyFunction(torch.autograd.Function):
    """The one autograd path (as :class:`fastlif.ops.lif.LifFunction`). With the dense layer,
    its weight and bias gradients come from the gradient reaching each step's recurrent input
    (grad x) and the spikes that fed it: ``sum_t,b g[t,b] (x) spk[t-1,b]``."""

    @staticmethod
    def forward(ctx, x, spk0, mem0, beta, V, threshold, graded, weight, bias, steps, reset_mode, reset_delay,
                surrogate_kind, surrogate_param, backend, clamp_beta=None):
        # clamp_beta: beta is the raw learnable tensor, clamped here (LifFunction's clamp_beta)
        beta_raw = beta if clamp_beta else None
        ctx.beta_inside = None
        if clamp_beta:
            beta, ctx.beta_inside = clamp_in_function(beta, backend)
        params = (beta, V, threshold, graded)
        options = dict(steps=steps, reset_mode=reset_mode, reset_delay=reset_delay)
        if torch.compiler.is_compiling():
            compute = compute_dtype(x.dtype)
            spk, mem, state, flags = rleaky_fwd(x, spk0, mem0, *(param_tensor(p, compute, x.device) for p in params),
                                                weight, bias, **options, backend=backend)
        else:
            spk, mem, state, flags = backends.launchers(FAMILY, backend)[0](x, spk0, mem0, *params, weight, bias,
                                                                            **options)
        tensor_params = [p if isinstance(p, Tensor) else None for p in params]
        keep_spk = weight is not None and (weight.requires_grad or (bias is not None and bias.requires_grad))
        ctx.save_for_backward(None if state.numel() else mem, state, flags, spk0, mem0, weight,
                              spk if keep_spk else None, *tensor_params, beta_raw)
        ctx.float_params = [None if isinstance(p, Tensor) else p for p in params]
        ctx.options = (steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x.dtype)
        ctx.backend = backend
        ctx.has_bias = bias is not None
        ctx.set_materialize_grads(False)
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        mem, state, flags, spk0, mem0, weight, spk, *tensor_params, beta_raw = ctx.saved_tensors
        if grad_spk is None and grad_mem is None:
            return input_grads(ctx)
        params = [t if t is not None else f for t, f in zip(tensor_params, ctx.float_params)]
        steps, reset_mode, reset_delay, surrogate_kind, surrogate_param, x_dtype = ctx.options
        options = dict(steps=steps, reset_mode=reset_mode, reset_delay=reset_delay,
                       surrogate_kind=surrogate_kind, surrogate_param=surrogate_param, x_dtype=x_dtype)
        if torch.compiler.is_compiling():
            ref = state if state.numel() else mem
            params = [param_tensor(p, compute_dtype(ref.dtype), ref.device) for p in params]
            grads = rleaky_bwd(grad_spk, grad_mem, mem, state, flags, spk0, mem0, *params, weight, **options,
                               backend=ctx.backend)
        else:
            if ctx.beta_inside is not None:  # beta went to the C++ kernels as a host-clamped float
                options["float_grads"] = (beta_raw, None, None, None)
            grads = backends.launchers(FAMILY, ctx.backend)[1](grad_spk, grad_mem, mem, state, flags, spk0, mem0,
                                                               *params, weight, **options)
        grad_x, grad_spk0, grad_mem0, *param_grads = grads
        # a gradient for each parameter that asked for one (the custom op returns one for all)
        param_grads = [g if wanted and g is not None and g.numel() else None
                       for g, wanted in zip(param_grads, ctx.needs_input_grad[3:7])]
        if beta_raw is not None and param_grads[0] is not None:
            param_grads[0] = clamp_grad(param_grads[0], beta_raw, inside=ctx.beta_inside)
        grad_w = grad_b = None
        if spk is not None:  # the dense layer's gradients: g[t] (x) spk[t-1], summed over t and batch
            grad_w, grad_b = _recurrent_weight_grads(grad_x.to(weight.dtype), spk.to(weight.dtype), spk0, steps,
                                                     ctx.has_bias)
        return input_grads(ctx, grad_x, grad_spk0 if spk0 is not None else None,
                           grad_mem0 if mem0 is not None else None, *param_grads, grad_w, grad_b)


# --- the call modules and rleaky_sequence share -------------------------------------------------

def run_rleaky(x, spk, mem, beta, recurrent, threshold, graded, *, single_step, reset_mode, reset_delay, spike_fn,
        surrogate, backend, reference_options=None):
    """Check a call's arguments and run it (as :func:`fastlif.ops.lif.run_lif`); returns
    ``(spk, mem)`` shaped like ``x``, the membrane in the compute dtype. ``recurrent`` is a
    number or tensor V (one-to-one) or an ``nn.Linear`` (all-to-all; any other module, e.g. a
    Conv2d, runs on the reference loop)."""
    x = check_input(x, single_step)
    check_states(x, single_step, spk=spk, mem=mem)
    n_last = x.shape[-1] if x.dim() else 1
    dense = isinstance(recurrent, torch.nn.Module)
    V = 1.0 if dense else check_param(recurrent, "V", n_last)
    beta, threshold, graded = (check_param(v, n, n_last) for v, n in
                               zip((beta, threshold, graded), ("beta", "threshold", "graded_spikes_factor")))
    unfused = dict(reference_options or {})  # what sends the call to the reference loop
    if dense and not isinstance(recurrent, torch.nn.Linear):
        unfused[f"a {type(recurrent).__name__} recurrent layer"] = True
    elif dense and (recurrent.in_features != n_last or recurrent.out_features != n_last):
        raise ValueError(f"the recurrent layer must map the {n_last} neurons to themselves; it is "
                         f"Linear({recurrent.in_features}, {recurrent.out_features})")
    elif dense and (x.device.type != "cpu" or backend == "triton"):
        unfused["a dense recurrent layer (fused on the CPU, by the cpp backend, only)"] = True
        if backend in ("auto", "reference") and x.device.type != "cpu":
            warn_once(("rleaky", "dense", x.device.type),
                      f"fastlif.RLeaky: the dense recurrent layer is fused on the CPU only; on "
                      f"{x.device.type} it runs the reference loop (per step, torch's Linear and the "
                      f"element-wise update; exact, as snnTorch computes it)", stacklevel=4)
    name = choose_backend(FAMILY, backend, x, surrogate, spike_fn, unfused)
    if name == "reference":
        options = {k: v for k, v in unfused.items() if k in (reference_options or {})}
        return _run_reference(x, spk, mem, beta, recurrent if dense else V, threshold, graded, single_step,
                              reset_mode, reset_delay, spike_fn, options)
    compute = compute_dtype(x.dtype)
    if x.numel() == 0:
        return x * 0, x.to(compute) * 0
    if dense and single_step:
        # One step: the recurrent input by torch's GEMM, as snnTorch computes it (bit for bit, and
        # per step faster than the event-driven sum, which needs W transposed: a copy of N*N per
        # call), then the one-to-one update with V = 1 (rec * 1 == rec); the gradient the kernel
        # returns for its spk0 (V * g_base) is the one reaching rec, and autograd takes it through
        # the Linear to W, the bias and the previous spikes.
        prev = torch.zeros_like(x, dtype=compute) if spk is None else spk.to(compute)
        spk = torch.nn.functional.linear(prev, recurrent.weight.to(compute),
                                         None if recurrent.bias is None else recurrent.bias.to(compute))
        V, dense = 1.0, False
    # A learnable beta is clamped by RLeakyFunction itself (or below), not by a clamp node
    clamp_in, clamped = learnable_clamped((beta, V, threshold, graded), PARAM_NAMES, ("beta",))
    params = kernel_params(x, (beta, V, threshold, graded), PARAM_NAMES, clamped=clamped)
    weight, bias = (recurrent.weight, recurrent.bias) if dense else (None, None)
    if dense:
        weight = weight.to(compute)
        bias = None if bias is None else bias.to(compute)
    spk0, mem0 = initial_states(compute, spk, mem)
    steps = 1 if single_step else x.shape[0]
    if not needs_autograd(x, spk0, mem0, *params, weight, bias):
        params = clamp_without_function(params, clamp_in)
        return backends.launchers(FAMILY, name)[0](x, spk0, mem0, *params, weight, bias, steps=steps,
                                                   reset_mode=reset_mode, reset_delay=bool(reset_delay))[:2]
    if name == "cpp" and not dense:  # eager: the C++ autograd Function, where it serves
        out = cpp_autograd("rleaky", x, (spk0, mem0), params, clamp_in, steps,
                           (reset_mode, int(is_immediate(reset_mode, reset_delay))), surrogate)
        if out is not None:
            return out
    return RLeakyFunction.apply(x, spk0, mem0, *params, weight, bias, steps, reset_mode, bool(reset_delay),
                                surrogate.kind, float(surrogate.param), name, bool(clamp_in))


def _run_reference(x, spk, mem, beta, recurrent, threshold, graded, single_step, reset_mode, reset_delay,
                   spike_fn, options):
    compute = compute_dtype(x.dtype)
    as_param = (lambda p: torch.as_tensor(p, device=x.device).to(compute))  # noqa: E731
    beta, threshold, graded = as_param(beta).clamp(0, 1), as_param(threshold), as_param(graded)
    if not isinstance(recurrent, torch.nn.Module):
        V = as_param(recurrent)
        recurrent = (lambda s: s * V)  # noqa: E731 - snnTorch's RecurrentOneToOne
    mechanism = RESET_MECHANISMS[reset_mode]
    xc = x.to(compute)
    if single_step:
        zeros = torch.zeros_like(xc)
        spk_out, mem = rleaky_step(xc, zeros if spk is None else spk.to(compute),
                                   zeros if mem is None else mem.to(compute), beta, recurrent, threshold, graded,
                                   spike_fn, mechanism, reset_delay, **options)
    else:
        spk_out, mem = rleaky_sequence_reference(
            xc, beta, recurrent, threshold, spk=None if spk is None else spk.to(compute),
            mem=None if mem is None else mem.to(compute), reset_mechanism=mechanism, reset_delay=reset_delay,
            spike_fn=spike_fn, graded_spikes_factor=graded, **options)
    return spk_out.to(x.dtype), mem
