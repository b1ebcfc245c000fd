"""The reference: plain PyTorch loops over time, one per op family, that implement api.md
literally, in snnTorch's own operation order.

This is the oracle every fast path is tested against, and the ``"reference"`` backend. It is
written for reading, not speed: one snnTorch step per iteration, with autograd doing the
backward.
"""
import torch

from .codes import RESET_MECHANISMS


def _as_tensor(value, device):
    return torch.as_tensor(value, device=device)


def _decay(value, device):
    """A decay factor (beta, alpha) as snnTorch uses it: clamped to [0, 1]."""
    return _as_tensor(value, device).clamp(0, 1)


def step_defaults(spike_fn, reset_mechanism):
    """A reference call's spike function (None: atan) and reset mechanism by name (a code
    allowed)."""
    if spike_fn is None:
        from .surrogate import atan
        spike_fn = atan()
    return spike_fn, RESET_MECHANISMS[reset_mechanism] if isinstance(reset_mechanism, int) else reset_mechanism


def scan(step, x_seq, states, spike_state=False):
    """``step(x_t, *states)`` over the leading time dimension of ``x_seq``, the loop every
    reference runs. ``step`` returns ``(spk, *new states)``, or with ``spike_state`` (the spikes
    are state 0) the new states alone. Returns the stacked ``(spk, *states)`` sequences, the
    spike state once; a state None starts at zeros; T == 0 gives empty sequences."""
    n_out = len(states) + (0 if spike_state else 1)
    if not len(x_seq):
        return tuple(torch.empty_like(x_seq) for _ in range(n_out))
    states = [torch.zeros_like(x_seq[0]) if s is None else s for s in states]
    seqs = [[] for _ in range(n_out)]
    for x in x_seq:
        values = step(x, *states)
        for seq, value in zip(seqs, values):
            seq.append(value)
        states = values if spike_state else values[1:]
    return tuple(torch.stack(seq) for seq in seqs)


# --- LIF (snnTorch's Leaky) ---------------------------------------------------------------------

def _fire(mem, reset, threshold, graded_spikes_factor, spike_fn, reset_mechanism, reset_delay,
          immediate_reset_mechanism, state_quant, inhibition):
    """The end of a step every LIF neuron shares, in snnTorch's order: the spike of the integrated
    membrane ``mem`` (``reset``: last step's reset flag), then the immediate reset when
    ``reset_delay`` is False. Returns ``(spk, mem)``."""
    if inhibition:                                      # snnTorch's fire_inhibition: no graded factor
        shifted = mem - threshold
        mask = torch.zeros_like(shifted)
        mask[torch.arange(mem.size(0)), torch.argmax(shifted, dim=1)] = 1
        spk = spike_fn(shifted) * mask
    else:
        spk = spike_fn((state_quant(mem) if state_quant else mem) - threshold) * graded_spikes_factor
    if not reset_delay:                                 # reset in the same step as the spike
        do_reset = spk / graded_spikes_factor - reset   # minus `reset`: never reset twice
        mechanism = immediate_reset_mechanism or reset_mechanism
        if mechanism == "subtract":
            mem = mem - do_reset * threshold
        elif mechanism == "zero":
            mem = mem - do_reset * mem
    return spk, mem


def lif_step(x, mem, beta, threshold, graded_spikes_factor, spike_fn,
             reset_mechanism="subtract", reset_delay=True, *, immediate_reset_mechanism=None,
             state_quant=None, inhibition=False):
    """One LIF step: returns ``(spk, mem)`` from input ``x`` and the previous membrane ``mem``.

    ``beta`` must already be clamped to [0, 1]; ``spike_fn(z)`` is Heaviside(z > 0) forward and
    the surrogate backward. The keyword options are snnTorch's rarer ones: the mechanism of the
    immediate reset when it differs from the one the state function was built with (snnTorch
    reads ``reset_mechanism_val`` there, which a loaded ``state_dict`` or a later assignment can
    change), ``state_quant`` (a quantiser applied to the membrane) and ``inhibition`` (only the
    neuron with the largest membrane of each row may spike).
    """
    reset = spike_fn(mem - threshold).detach()          # fired last step? carries no gradient
    if reset_mechanism == "subtract":
        mem = beta * mem + x - reset * threshold
    elif reset_mechanism == "zero":
        mem = beta * ((1 - reset) * mem) + x
    else:  # "none"
        mem = beta * mem + x
    if state_quant:
        mem = state_quant(mem)
    spk, mem = _fire(mem, reset, threshold, graded_spikes_factor, spike_fn, reset_mechanism, reset_delay,
                     immediate_reset_mechanism, state_quant, inhibition)
    return spk, mem


def lif_sequence_reference(x_seq, beta, threshold=1.0, *, mem=None, reset_mechanism="subtract",
                           reset_delay=True, spike_fn=None, graded_spikes_factor=1.0, **options):
    """Run :func:`lif_step` over the leading time dimension of ``x_seq`` ``[T, ...]``.

    Returns ``(spk_seq, mem_seq)``, both ``[T, ...]``. ``beta``, ``threshold`` and
    ``graded_spikes_factor`` are scalars or tensors broadcast over the last dimension;
    ``options`` are :func:`lif_step`'s keyword options.
    """
    spike_fn, mechanism = step_defaults(spike_fn, reset_mechanism)
    device = x_seq.device
    params = (_decay(beta, device), _as_tensor(threshold, device), _as_tensor(graded_spikes_factor, device))
    return scan(lambda x, m: lif_step(x, m, *params, spike_fn, mechanism, reset_delay, **options), x_seq, (mem,))


# --- Synaptic (snnTorch's Synaptic: a synaptic current feeding the membrane) ---------------------

def _base_reset(base, reset, threshold, reset_mechanism):
    """Synaptic's and RLeaky's reset, on the membrane after it integrated this step (snnTorch's
    ``_base_sub`` / ``_base_zero``; Leaky's zero reset acts before the decay instead)."""
    if reset_mechanism == "subtract":
        return base - reset * threshold
    if reset_mechanism == "zero":
        return base - base * reset
    return base


def synaptic_step(x, syn, mem, alpha, beta, threshold, graded_spikes_factor, spike_fn,
                  reset_mechanism="subtract", reset_delay=True, *, immediate_reset_mechanism=None,
                  state_quant=None, inhibition=False):
    """One Synaptic step: returns ``(spk, syn, mem)``. ``alpha`` and ``beta`` must already be
    clamped to [0, 1]. The reset to zero acts on the membrane after it integrated this step's
    current (snnTorch's ``_base_zero``), unlike Leaky's."""
    reset = spike_fn(mem - threshold).detach()
    syn = alpha * syn + x
    mem = _base_reset(beta * mem + syn, reset, threshold, reset_mechanism)
    if state_quant:
        mem, syn = state_quant(mem), state_quant(syn)
    spk, mem = _fire(mem, reset, threshold, graded_spikes_factor, spike_fn, reset_mechanism, reset_delay,
                     immediate_reset_mechanism, state_quant, inhibition)
    return spk, syn, mem


def synaptic_sequence_reference(x_seq, alpha, beta, threshold=1.0, *, syn=None, mem=None,
                                reset_mechanism="subtract", reset_delay=True, spike_fn=None,
                                graded_spikes_factor=1.0, **options):
    """Run :func:`synaptic_step` over the leading time dimension: ``(spk_seq, syn_seq, mem_seq)``."""
    spike_fn, mechanism = step_defaults(spike_fn, reset_mechanism)
    device = x_seq.device
    params = (_decay(alpha, device), _decay(beta, device), _as_tensor(threshold, device),
              _as_tensor(graded_spikes_factor, device))
    return scan(lambda x, s, m: synaptic_step(x, s, m, *params, spike_fn, mechanism, reset_delay, **options),
                x_seq, (syn, mem))


# --- RLeaky (snnTorch's recurrent Leaky: the last step's spikes feed back) ----------------------

def rleaky_step(x, spk, mem, beta, recurrent, threshold, graded_spikes_factor, spike_fn,
                reset_mechanism="subtract", reset_delay=True, *, immediate_reset_mechanism=None,
                state_quant=None, inhibition=False):
    """One RLeaky step: returns ``(spk, mem)`` from the input, the previous step's spikes and
    membrane. ``recurrent(spk)`` is the feedback: ``spk * V`` (one-to-one), or an ``nn.Linear``
    / ``nn.Conv2d`` (all-to-all). ``beta`` must already be clamped to [0, 1]."""
    reset = spike_fn(mem - threshold).detach()
    base = beta * mem + x + recurrent(spk)
    mem = _base_reset(base, reset, threshold, reset_mechanism)
    if state_quant:
        mem = state_quant(mem)
    spk, mem = _fire(mem, reset, threshold, graded_spikes_factor, spike_fn, reset_mechanism, reset_delay,
                     immediate_reset_mechanism, state_quant, inhibition)
    return spk, mem


def rleaky_sequence_reference(x_seq, beta, recurrent, threshold=1.0, *, spk=None, mem=None,
                              reset_mechanism="subtract", reset_delay=True, spike_fn=None,
                              graded_spikes_factor=1.0, **options):
    """Run :func:`rleaky_step` over the leading time dimension: ``(spk_seq, mem_seq)``."""
    spike_fn, mechanism = step_defaults(spike_fn, reset_mechanism)
    device = x_seq.device
    params = (_decay(beta, device), recurrent, _as_tensor(threshold, device), _as_tensor(graded_spikes_factor, device))
    return scan(lambda x, s, m: rleaky_step(x, s, m, *params, spike_fn, mechanism, reset_delay, **options),
                x_seq, (spk, mem), spike_state=True)
