"""The tutorial's network, ``TinySNN`` (section 5.1): Linear -> LIF -> Linear -> LIF,
784-128-10, beta 0.9, fast-sigmoid surrogate (slope 25). The one copy that the demo, the
tests, the benchmarks and the DDP example use.

``fused=True`` (default) applies each Linear to all T steps at once and runs each LIF over the
whole sequence in one fused call (``Leaky.sequence``); ``fused=False`` is the tutorial's own
loop over time steps, one ``lif(x_t, mem)`` call per step. Both compute the same thing.
``spike_linear=True`` (the default with fastlif's neurons and ``fused=True``; with snnTorch's
neurons or the tutorial's step loop, the default is the tutorial's code, False) makes ``fc1`` and
``fc2`` :class:`fastlif.SpikeLinear` layers:
the same parameters and ``state_dict`` keys as the tutorial's ``nn.Linear``, but they visit only
the non-zero inputs (the input spikes are about 1 % ones); ``spike_linear=False`` is the
tutorial's ``nn.Linear``. ``forward`` also takes the :class:`fastlif.events.SpikeEvents` of the
input spikes (``fastlif.encode.poisson(..., method="fast", return_events=True)``), which
``fc1`` then uses without scanning the spikes again.
``lif_cls`` is ``fastlif.Leaky`` by default; ``snntorch.Leaky`` works too (with ``fused=False``),
which is how the tests and benchmarks run the tutorial's snnTorch code on the same weights.
``learn_beta`` / ``learn_threshold`` make them learnable, one value per neuron.
"""
import torch
from torch import nn

from .. import surrogate
from ..events import SpikeEvents
from ..layers import SpikeLinear
from ..neurons import Leaky


class TinySNN(nn.Module):
    """``forward(x_seq)`` takes spikes ``[T, B, in_dim]`` (bool or float, or their SpikeEvents)
    and returns the output spikes ``[T, B, out_dim]``; with ``return_mem=True`` also
    ``(mem1, mem2)``, the membrane traces, like the tutorial's ``TinySNN.forward``."""

    def __init__(self, in_dim=28 * 28, hidden=128, out_dim=10, beta_hidden=0.9, beta_out=0.9, *,
                 lif_cls=None, spike_grad=None, fused=True, backend="auto", learn_beta=False,
                 learn_threshold=False, spike_linear=None):
        super().__init__()
        lif_cls = Leaky if lif_cls is None else lif_cls
        ours = issubclass(lif_cls, Leaky)
        if fused and not ours:
            raise ValueError(f"fused=True needs fastlif.Leaky layers (a sequence() method), not "
                             f"{lif_cls.__module__}.{lif_cls.__name__}")
        spike_grad = surrogate.fast_sigmoid() if spike_grad is None else spike_grad

        def lif(beta, n):
            return lif_cls(beta=torch.full((n,), beta) if learn_beta else beta,
                           threshold=torch.ones(n) if learn_threshold else 1.0,
                           learn_beta=learn_beta, learn_threshold=learn_threshold,
                           spike_grad=spike_grad, **({"backend": backend} if ours else {}))

        self.in_dim, self.hidden, self.out_dim, self.fused = in_dim, hidden, out_dim, fused
        linear = SpikeLinear if ((ours and fused) if spike_linear is None else spike_linear) else nn.Linear
        self.fc1 = linear(in_dim, hidden, bias=True)
        self.lif1 = lif(beta_hidden, hidden)
        self.fc2 = linear(hidden, out_dim, bias=True)
        self.lif2 = lif(beta_out, out_dim)

    def forward(self, x_seq, return_mem=False):
        events = x_seq if isinstance(x_seq, SpikeEvents) else None
        if events is not None:
            x_seq = events.dense
        T, B, N = x_seq.shape
        if N != self.in_dim:
            raise ValueError(f"expected input dim {self.in_dim}, got {N}")
        if self.fused:
            if events is not None and isinstance(self.fc1, SpikeLinear):
                cur1 = self.fc1(events)
            elif isinstance(self.fc1, SpikeLinear):
                cur1 = self.fc1(x_seq)  # bool spikes as they are: no float copy
            else:
                cur1 = self.fc1(x_seq.to(self.fc1.weight.dtype))
            spk1, mem1 = self.lif1.sequence(cur1)
            spk2, mem2 = self.lif2.sequence(self.fc2(spk1))
            return (spk2, (mem1, mem2)) if return_mem else spk2
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem1_rec, mem2_rec = [], [], []
        for t in range(T):  # the tutorial's loop
            spk1, mem1 = self.lif1(self.fc1(x_seq[t].float()), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem1_rec.append(mem1)
            mem2_rec.append(mem2)
        spk_rec = torch.stack(spk_rec)
        if return_mem:
            return spk_rec, (torch.stack(mem1_rec), torch.stack(mem2_rec))
        return spk_rec
