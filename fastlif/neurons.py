"""The neurons: snnTorch's constructors, per-step behaviour and ``state_dict`` names, each run by
one fused op (``fastlif/ops/``) over a step or a whole sequence. What they share is in
:mod:`fastlif.neuron_base`.
"""
import torch
from torch import nn

from .neuron_base import SpikingNeuron, snntorch_bases
from .ops import lif

__all__ = ["Leaky"]


class Leaky(SpikingNeuron, *snntorch_bases("Leaky")):
    """First-order leaky integrate-and-fire neuron (snnTorch semantics, api.md section 1).

    ``step_mode="single"`` (default): ``spk, mem = lif(x_t, mem)`` is one step, exactly as
    ``snntorch.Leaky``. ``step_mode="multi"``: ``lif(x_seq)`` runs the whole ``[T, B, ...]``
    sequence fused (with ``init_hidden=True`` it returns spikes only and keeps the final
    membrane, so it fits in ``nn.Sequential``). ``lif.sequence(x_seq, mem)`` is always fused.
    """

    _state_names = ("mem",)

    def __init__(self, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True,
                 step_mode="single", backend="auto"):
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                         learn_threshold, reset_mechanism, state_quant, output, graded_spikes_factor,
                         learn_graded_spikes_factor, reset_delay, step_mode, backend)
        self._register("beta", beta, learn_beta)
        self.state_function = {0: self._base_sub, 1: self._base_zero, 2: self._base_int}[self._state_reset_mode]

    @classmethod
    def _snntorch_settings(cls, layer):
        return dict(cls._common_settings(layer), beta=layer.beta.detach().clone(),
                    learn_beta=isinstance(layer.beta, nn.Parameter),
                    graded_spikes_factor=layer.graded_spikes_factor.detach().clone(),
                    learn_graded_spikes_factor=isinstance(layer.graded_spikes_factor, nn.Parameter))

    # --- state, as snnTorch ----------------------------------------------------------------------
    def reset_mem(self):
        self.mem = torch.zeros_like(self.mem, device=self.mem.device)
        return self.mem

    def init_leaky(self):
        """Zeros whose shape is taken from the first input (snnTorch's behaviour)."""
        return self.reset_mem()

    # snnTorch's state functions (one step, from self.mem and self.reset), for code that calls them
    def _base_state_function(self, input_):
        return self.beta.clamp(0, 1) * self.mem + input_

    def _base_sub(self, input_):
        return self._base_state_function(input_) - self.reset * self.threshold

    def _base_zero(self, input_):
        self.mem = (1 - self.reset) * self.mem
        return self._base_state_function(input_)

    def _base_int(self, input_):
        return self._base_state_function(input_)

    # --- computation -----------------------------------------------------------------------------
    def _fused(self, x, mem, single_step):
        spike_fn, sg = self._surrogate()
        return lif.run(x, mem, self.beta, self.threshold, self.graded_spikes_factor,
                       single_step=single_step, reset_mode=self._state_reset_mode,
                       reset_delay=self.reset_delay, spike_fn=spike_fn, surrogate=sg,
                       backend=self.backend, mem_fp32=True,
                       reference_options=self._reference_options())

    def sequence(self, x_seq, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk_seq, mem_seq)``."""
        return self._fused(x_seq, mem, single_step=False)

    def forward(self, input_, mem=None):
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input_).__name__}")
        if self.step_mode == "multi":
            return self._forward_multi(input_, mem)
        (state,) = self._states_for(input_, (mem,))
        spk, new_mem = self._fused(input_, state, single_step=True)
        self._reset_source = (state,)
        self.mem = new_mem  # only once the step succeeded: a rejected call leaves the state alone
        if self.output:
            return spk, self.mem
        if self.init_hidden:
            return spk
        return spk, self.mem

    def _forward_multi(self, x_seq, mem):
        if self.init_hidden:
            mem = self.mem if self.mem.shape == x_seq.shape[1:] else None
        spk_seq, mem_seq = self._fused(x_seq, mem, single_step=False)
        if self.init_hidden:
            if len(mem_seq):  # a copy, not a view: snnTorch's helpers detach states in place
                self._reset_source = (mem_seq[-2] if len(mem_seq) > 1 else
                                      (mem if mem is not None else torch.zeros_like(mem_seq[0])),)
                self.mem = mem_seq[-1].clone()
            return (spk_seq, mem_seq) if self.output else spk_seq
        return spk_seq, mem_seq
