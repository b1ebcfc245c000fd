"""The reference: a plain PyTorch loop over time that implements api.md section 1 literally.

This is the oracle every fast path is tested against, and the ``"reference"`` backend.
It is written for reading, not speed: one snnTorch ``Leaky`` step per iteration, in
snnTorch's own operation order, with autograd doing the backward.
"""
import torch

RESET_MECHANISMS = ("subtract", "zero", "none")


def lif_step(x, mem, beta, threshold, graded_spikes_factor, spike_fn,
             reset_mechanism="subtract", reset_delay=True):
    """One LIF step: returns ``(spk, mem)`` from input ``x`` and the previous membrane ``mem``.

    ``beta`` must already be clamped to [0, 1]; ``spike_fn(z)`` is Heaviside(z > 0) forward
    and the surrogate backward.
    """
    reset = spike_fn(mem - threshold).detach()          # fired last step? carries no gradient
    if reset_mechanism == "subtract":
        mem = beta * mem + x - reset * threshold
    elif reset_mechanism == "zero":
        mem = beta * ((1 - reset) * mem) + x
    else:  # "none"
        mem = beta * mem + x
    spk = spike_fn(mem - threshold) * graded_spikes_factor
    if not reset_delay:                                 # reset in the same step as the spike
        do_reset = spk / graded_spikes_factor - reset   # minus `reset`: never reset twice
        if reset_mechanism == "subtract":
            mem = mem - do_reset * threshold
        elif reset_mechanism == "zero":
            mem = mem - do_reset * mem
    return spk, mem


def lif_sequence_reference(x_seq, beta, threshold=1.0, *, mem=None, reset_mechanism="subtract",
                           reset_delay=True, spike_fn=None, graded_spikes_factor=1.0):
    """Run :func:`lif_step` over the leading time dimension of ``x_seq`` ``[T, ...]``.

    Returns ``(spk_seq, mem_seq)``, both ``[T, ...]``. ``beta``, ``threshold`` and
    ``graded_spikes_factor`` are scalars or tensors broadcast over the last dimension.
    """
    if spike_fn is None:
        from .surrogate import atan
        spike_fn = atan()
    beta = torch.as_tensor(beta, device=x_seq.device).clamp(0, 1)
    threshold = torch.as_tensor(threshold, device=x_seq.device)
    graded_spikes_factor = torch.as_tensor(graded_spikes_factor, device=x_seq.device)
    if mem is None:
        mem = torch.zeros_like(x_seq[0])
    spikes, mems = [], []
    for x in x_seq:
        spk, mem = lif_step(x, mem, beta, threshold, graded_spikes_factor, spike_fn,
                            reset_mechanism, reset_delay)
        spikes.append(spk)
        mems.append(mem)
    if not spikes:  # T == 0
        return torch.empty_like(x_seq), torch.empty_like(x_seq)
    return torch.stack(spikes), torch.stack(mems)


def run_per_step(layer, x_seq, mem=None):
    """Step a per-step LIF module (``snntorch.Leaky`` or ``fastlif.Leaky``) over the leading
    time dimension of ``x_seq``, the way snnTorch's tutorials do, and stack its outputs.

    Returns ``(spk_seq, mem_seq)``: the loop every fused result is compared with.
    """
    mem = layer.init_leaky() if mem is None else mem
    spikes, mems = [], []
    for x in x_seq:
        spk, mem = layer(x, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)
