"""snnTorch's ``RSynaptic``: a Synaptic neuron whose last spikes feed back into its synaptic
current, ``syn' = alpha*syn + x + rec(spk)``, ``mem' = beta*mem + syn'``, with snnTorch's
resets (only the membrane is reset). The family runs the one-to-one feedback ``rec(spk) =
spk * V``; the dense one (``nn.Linear``) runs per step, the Linear by torch and then the
family's single step with its output as the spike state and ``V = 1`` (``fastlif.RSynaptic``).
C++ step: ``csrc/families/rsynaptic.cpp``.
"""
import torch

from .. import backends
from ..codes import RESET_MECHANISMS, is_immediate
from ..family import Family, cpp_bwd, cpp_fwd, register, run_family
from ..ops.common import check_input, check_param, check_states, choose_backend, compute_dtype
from ..reference import _base_reset, _fire, scan, step_defaults


def rsynaptic_step(x, spk, syn, mem, alpha, beta, recurrent, threshold, graded_spikes_factor, spike_fn,
                   reset_mechanism="subtract", reset_delay=True, *, immediate_reset_mechanism=None,
                   state_quant=None, inhibition=False):
    """One RSynaptic step, snnTorch 0.9.4 / 1.0 ``RSynaptic.forward`` in its operation order:
    returns ``(spk, syn, mem)`` from the input, the previous spikes, current and membrane.
    ``recurrent(spk)`` is the feedback (``spk * V``, or the module's Linear / Conv2d);
    ``alpha`` and ``beta`` must already be clamped to [0, 1].

    snnTorch's zero reset subtracts ``0 * reset`` from the current (no change) and
    ``base * reset`` from the membrane. The immediate reset (``reset_delay=False``) is
    RLeaky's, ``d = spk/g - reset`` on the membrane after it fired: snnTorch 1.0's RSynaptic
    computes ``d`` from the *previous* spikes given as an argument and assigns the result to a
    local, so it raises (no spikes given) or does nothing (docs/api.md, deliberate differences).
    """
    reset = spike_fn(mem - threshold).detach()
    syn = alpha * syn + x + recurrent(spk)
    mem = _base_reset(beta * mem + syn, reset, threshold, reset_mechanism)
    if state_quant:
        syn, mem = state_quant(syn), state_quant(mem)
    spk, mem = _fire(mem, reset, threshold, graded_spikes_factor, spike_fn, reset_mechanism, reset_delay,
                     immediate_reset_mechanism, state_quant, inhibition)
    return spk, syn, mem


def step(x, states, params, options, spike_fn, **reference_options):
    """The family's reference step (one-to-one feedback ``spk * V``, snnTorch's
    ``RecurrentOneToOne``)."""
    spk, syn, mem = states
    alpha, beta, V, threshold, graded = params
    spk, syn, mem = rsynaptic_step(x, spk, syn, mem, alpha, beta, lambda s: s * V, threshold, graded, spike_fn,
                                   RESET_MECHANISMS[options["reset_mode"]], not options["immediate"],
                                   **reference_options)
    return spk, (spk, syn, mem)


def example(L, generator, dtype):
    rand = (lambda lo, hi: torch.rand(L, generator=generator, dtype=dtype) * (hi - lo) + lo)  # noqa: E731
    return rand(-0.05, 1.1), rand(-0.05, 1.1), rand(-0.8, 0.8), rand(0.75, 1.25), rand(0.5, 1.5)


def rsynaptic_sequence_reference(x_seq, alpha, beta, recurrent, threshold=1.0, *, spk=None, syn=None, mem=None,
                                 reset_mechanism="subtract", reset_delay=True, spike_fn=None,
                                 graded_spikes_factor=1.0, **options):
    """:func:`rsynaptic_step` over the leading time dimension: ``(spk_seq, syn_seq, mem_seq)``.
    ``recurrent``: a module or callable (``V`` given as a number or tensor: ``spk * V``);
    ``options``: :func:`rsynaptic_step`'s keyword options (state_quant, inhibition, ...)."""
    spike_fn, mechanism = step_defaults(spike_fn, reset_mechanism)
    dev = x_seq.device
    if not callable(recurrent):
        V = torch.as_tensor(recurrent, device=dev)
        recurrent = (lambda s: s * V)  # noqa: E731 - snnTorch's RecurrentOneToOne
    params = (torch.as_tensor(alpha, device=dev).clamp(0, 1), torch.as_tensor(beta, device=dev).clamp(0, 1),
              recurrent, torch.as_tensor(threshold, device=dev), torch.as_tensor(graded_spikes_factor, device=dev))
    return scan(lambda x, *s: rsynaptic_step(x, *s, *params, spike_fn, mechanism, reset_delay, **options),
                x_seq, (spk, syn, mem), spike_state=True)


RSYNAPTIC = register(Family(
    name="rsynaptic", states=("spk", "syn", "mem"),
    params=("alpha", "beta", "V", "threshold", "graded_spikes_factor"),
    options=("reset_mode", "immediate"), choices=((0, 1, 2), (0, 1)), clamped=("alpha", "beta"),
    spike_state=True, step=step, example=example,
    doc="snnTorch's RSynaptic with one-to-one feedback spk * V"))

backends.register_cpp(RSYNAPTIC.name, cpp_fwd, cpp_bwd)


# --- the call fastlif.RSynaptic makes -------------------------------------------------------------

def run_rsynaptic(x, spk, syn, mem, alpha, beta, recurrent, threshold, graded, *, single_step, reset_mode, reset_delay,
        spike_fn, surrogate, backend, reference_options=None):
    """Check a call's arguments and run it: ``(spk, syn, mem)`` shaped like ``x`` (a sequence
    ``[T, ...]``, or one step with ``single_step``), the states in the compute dtype.
    ``recurrent``: a number or tensor V (one-to-one: the family, fused over the sequence), an
    ``nn.Linear`` (per step: torch's Linear on the previous spikes, then the family's fused
    step with that as its spike state and V = 1), or another module (a Conv2d: the reference
    loop). ``reference_options``: snnTorch's rarer options, which only the reference loop runs."""
    x = check_input(x, single_step)
    check_states(x, single_step, spk=spk, syn=syn, mem=mem)
    n_last = x.shape[-1] if x.dim() else 1
    dense = isinstance(recurrent, torch.nn.Module)
    unfused = dict(reference_options or {})
    if dense and not isinstance(recurrent, torch.nn.Linear):
        unfused[f"a {type(recurrent).__name__} recurrent layer"] = True
    elif dense and (recurrent.in_features != n_last or recurrent.out_features != n_last):
        raise ValueError(f"the recurrent layer must map the {n_last} neurons to themselves; it is "
                         f"Linear({recurrent.in_features}, {recurrent.out_features})")
    options = dict(reset_mode=reset_mode, immediate=int(is_immediate(reset_mode, reset_delay)))
    if unfused:
        choose_backend(RSYNAPTIC.name, backend, x, surrogate, spike_fn, unfused)  # raises if not allowed
        rec = recurrent if dense else check_param(recurrent, "V", n_last)
        return _run_reference(x, spk, syn, mem, alpha, beta, rec, threshold, graded, single_step, reset_mode,
                              reset_delay, spike_fn, reference_options or {}, n_last)
    params = dict(spike_fn=spike_fn, surrogate=surrogate, backend=backend, options=options)
    if not dense:
        return run_family(RSYNAPTIC, x, (spk, syn, mem), (alpha, beta, recurrent, threshold, graded),
                          single_step=single_step, **params)
    step_params = (alpha, beta, 1.0, threshold, graded)
    if single_step:
        return _dense_step(x, spk, syn, mem, recurrent, step_params, params)
    outs = [], [], []
    for x_t in x:
        spk, syn, mem = _dense_step(x_t, spk, syn, mem, recurrent, step_params, params)
        for seq, value in zip(outs, (spk, syn, mem)):
            seq.append(value)
    if not outs[0]:
        compute = compute_dtype(x.dtype)
        return x * 0, x.to(compute) * 0, x.to(compute) * 0
    return tuple(torch.stack(seq) for seq in outs)


def _dense_step(x, spk, syn, mem, linear, step_params, params):
    """One step with a dense recurrent layer: the recurrent input by torch's Linear, as snnTorch
    computes it (bit for bit), then the family's step with that input as the spike state and
    V = 1 (``rec * 1 == rec``); the gradient the step returns for its spike state reaches rec,
    and autograd takes it through the Linear to W, the bias and the previous spikes."""
    compute = compute_dtype(x.dtype)
    prev = torch.zeros_like(x, dtype=compute) if spk is None else spk.to(compute)
    rec = torch.nn.functional.linear(prev, linear.weight.to(compute),
                                     None if linear.bias is None else linear.bias.to(compute))
    return run_family(RSYNAPTIC, x, (rec, syn, mem), step_params, single_step=True, **params)


def _run_reference(x, spk, syn, mem, alpha, beta, recurrent, threshold, graded, single_step, reset_mode,
                   reset_delay, spike_fn, options, n_last):
    """The reference loop, with snnTorch's rarer options, in the kernels' dtype policy."""
    compute = compute_dtype(x.dtype)
    def as_param(p, name):
        return torch.as_tensor(check_param(p, name, n_last), device=x.device).to(compute)
    alpha, beta = as_param(alpha, "alpha").clamp(0, 1), as_param(beta, "beta").clamp(0, 1)
    threshold, graded = as_param(threshold, "threshold"), as_param(graded, "graded_spikes_factor")
    if not isinstance(recurrent, torch.nn.Module):
        V = as_param(recurrent, "V")
        recurrent = (lambda s: s * V)  # noqa: E731 - snnTorch's RecurrentOneToOne
    xc = x.to(compute)
    states = [None if s is None else s.to(compute) for s in (spk, syn, mem)]
    mechanism = RESET_MECHANISMS[reset_mode]
    if single_step:
        zeros = torch.zeros_like(xc)
        out = rsynaptic_step(xc, *(zeros if s is None else s for s in states), alpha, beta, recurrent, threshold,
                             graded, spike_fn, mechanism, reset_delay, **options)
    else:
        out = rsynaptic_sequence_reference(xc, alpha, beta, recurrent, threshold, spk=states[0], syn=states[1],
                                           mem=states[2], reset_mechanism=mechanism, reset_delay=reset_delay,
                                           spike_fn=spike_fn, graded_spikes_factor=graded, **options)
    return (out[0].to(x.dtype), *out[1:])
