"""``fastlif.Leaky``: snnTorch's ``snn.Leaky``, same constructor, same per-step behaviour,
same parameter and buffer names (so it loads an snnTorch ``state_dict``), plus a fused
``sequence()`` over the time dimension and ``step_mode="multi"`` for ``nn.Sequential``.
"""
import weakref

import torch
from torch import nn

from . import surrogate as surrogate_mod
from .backends import BACKENDS
from .functional import check_reset_mechanism, lif_sequence


class Leaky(nn.Module):
    """First-order leaky integrate-and-fire neuron (snnTorch semantics, api.md section 1).

    ``step_mode="single"`` (default): ``spk, mem = lif(x_t, mem)`` is one step, exactly as
    ``snntorch.Leaky``. ``step_mode="multi"``: ``lif(x_seq)`` runs the whole ``[T, B, ...]``
    sequence fused (with ``init_hidden=True`` it returns spikes only and keeps the final
    membrane, so it fits in ``nn.Sequential``). ``lif.sequence(x_seq, mem)`` is always fused.
    """

    instances = weakref.WeakSet()
    reset_dict = {"subtract": 0, "zero": 1, "none": 2}

    def __init__(self, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True,
                 step_mode="single", backend="auto"):
        super().__init__()
        if inhibition:
            raise NotImplementedError("fastlif.Leaky does not implement inhibition; use snntorch.Leaky")
        if state_quant:
            raise NotImplementedError("fastlif.Leaky does not implement state_quant; use snntorch.Leaky")
        if step_mode not in ("single", "multi"):
            raise ValueError(f"step_mode must be 'single' or 'multi', got {step_mode!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        check_reset_mechanism(reset_mechanism)
        self.spike_grad, self._surrogate = surrogate_mod.resolve(spike_grad, surrogate_disable)
        self.surrogate_disable = surrogate_disable
        self.init_hidden = init_hidden
        self.inhibition = inhibition
        self.state_quant = state_quant
        self.output = output
        self.reset_delay = reset_delay
        self.step_mode = step_mode
        self.backend = backend
        self._register("threshold", threshold, learn_threshold)
        self._register("graded_spikes_factor", graded_spikes_factor, learn_graded_spikes_factor)
        self.register_buffer("reset_mechanism_val", torch.as_tensor(self.reset_dict[reset_mechanism]))
        self._reset_mechanism = reset_mechanism
        self._register("beta", beta, learn_beta)
        self.register_buffer("mem", torch.zeros(0), persistent=False)
        Leaky.instances.add(self)

    def _register(self, name, value, learnable):
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if learnable:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def reset_mechanism(self):
        return self._reset_mechanism

    @reset_mechanism.setter
    def reset_mechanism(self, new):
        check_reset_mechanism(new)
        self.reset_mechanism_val = torch.as_tensor(self.reset_dict[new])
        self._reset_mechanism = new

    # --- state, as snnTorch ---------------------------------------------------------------
    def reset_mem(self):
        self.mem = torch.zeros_like(self.mem, device=self.mem.device)
        return self.mem

    def init_leaky(self):
        """Zeros whose shape is taken from the first input (snnTorch's behaviour)."""
        return self.reset_mem()

    @classmethod
    def detach_hidden(cls):
        for layer in list(cls.instances):
            layer.mem = layer.mem.detach()  # not detach_(): the state may be a view of mem_seq

    @classmethod
    def reset_hidden(cls):
        for layer in list(cls.instances):
            layer.reset_mem()

    # --- computation ------------------------------------------------------------------------
    def _run(self, x_seq, mem):
        # fp16/bf16 input (autocast): run on its fp32 value, so that the membrane handed back,
        # the state carried to the next call or step, stays fp32; spikes keep the input's dtype.
        low = x_seq.dtype in (torch.float16, torch.bfloat16)
        spk, mem_seq = lif_sequence(x_seq.float() if low else x_seq, self.beta, self.threshold,
                                    mem=mem, reset_mechanism=self._reset_mechanism,
                                    reset_delay=self.reset_delay,
                                    surrogate=self._surrogate or self.spike_grad,
                                    graded_spikes_factor=self.graded_spikes_factor,
                                    backend=self.backend)
        return (spk.to(x_seq.dtype) if low else spk), mem_seq

    def sequence(self, x_seq, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk_seq, mem_seq)``."""
        return self._run(x_seq, mem)

    def forward(self, input_, mem=None):
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input_).__name__}")
        if self.step_mode == "multi":
            return self._forward_multi(input_, mem)
        state = self.mem if mem is None else mem
        if state.shape != input_.shape:  # snnTorch: state takes its shape from the input
            state = torch.zeros_like(input_, device=state.device,
                                     dtype=input_.dtype if input_.is_floating_point() else None)
        if input_.dim() == 0:  # one neuron, no batch: run it as shape [1]
            spk, new_mem = self._run(input_.reshape(1, 1), state.reshape(1))
            spk, new_mem = spk.reshape(()), new_mem.reshape(())
        else:
            spk, new_mem = self._run(input_.unsqueeze(0), state)
            spk, new_mem = spk[0], new_mem[0]
        self.mem = new_mem  # only once the step succeeded: a rejected call leaves the state alone
        if self.output:
            return spk, self.mem
        if self.init_hidden:
            return spk
        return spk, self.mem

    def _forward_multi(self, x_seq, mem):
        if self.init_hidden:
            mem = self.mem if self.mem.shape == x_seq.shape[1:] else None
        spk_seq, mem_seq = self._run(x_seq, mem)
        if self.init_hidden:
            self.mem = mem_seq[-1] if len(mem_seq) else self.mem
            return (spk_seq, mem_seq) if self.output else spk_seq
        return spk_seq, mem_seq

    def extra_repr(self):
        sg = self._surrogate if self._surrogate is not None else self.spike_grad
        return (f"reset_mechanism={self._reset_mechanism!r}, reset_delay={self.reset_delay}, "
                f"spike_grad={sg!r}, step_mode={self.step_mode!r}, backend={self.backend!r}")
