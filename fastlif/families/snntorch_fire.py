"""snnTorch's ``fire`` and ``fire_inhibition``, as the spec'd families' reference steps end a
step: the reference options a step gets may hold the reference loop's
``state_quant`` (a quantiser: snnTorch's ``fire`` quantises the membrane it is given, already
quantised as the state) and ``inhibition`` (only the largest membrane of each row fires, with no
graded factor), which no kernel runs."""
import torch


def fire(mem, threshold, graded, spike_fn, options):
    if options.get("inhibition"):
        shift = mem - threshold
        index = torch.argmax(shift, dim=1)
        spk = spike_fn(shift)
        mask = torch.zeros_like(spk)
        mask[torch.arange(mem.size(0)), index] = 1
        return spk * mask
    quant = options.get("state_quant")
    return spike_fn((quant(mem) if quant else mem) - threshold) * graded
