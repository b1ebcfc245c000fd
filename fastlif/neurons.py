"""The neurons: snnTorch's constructors, per-step behaviour and ``state_dict`` names, each run by
one fused op (``fastlif/ops/``) over a step or a whole sequence. What they share (hidden
states, ``init_hidden``, ``step_mode``, snnTorch's helpers) is in :mod:`fastlif.neuron_base`.
"""
import torch
from torch import nn

from .families.alpha import ALPHA, tau_alpha
from .families.lapicque import LAPICQUE
from .family import run_family
from .neuron_base import SpikingNeuron, snntorch_bases, warn_once
from .families import rsynaptic
from .families.synaptic import run_synaptic
from .ops import lif, rleaky

__all__ = ["Leaky", "Synaptic", "Lapicque", "Alpha", "RLeaky", "RSynaptic"]


class _MembraneStateFunctions:
    """snnTorch's state functions of a neuron whose reset acts on ``mem`` alone (Leaky, Lapicque,
    RLeaky), one step from its ``_base_state_function``, for code that calls them; the fused path
    does not use them."""

    def _base_sub(self, input_):
        return self._base_state_function(input_) - self.reset * self.threshold

    def _base_zero(self, input_):
        return self._base_state_function(input_) - self.reset * self._base_state_function(input_)

    def _base_int(self, input_):
        return self._base_state_function(input_)


class _SynapticStateFunctions:
    """snnTorch's state functions of Synaptic and RSynaptic (``_base_state_function`` returns
    ``(syn, mem)``; the zero reset clears mem only)."""

    def _base_state_reset_zero(self, input_):
        return 0, self._base_state_function(input_)[1]

    def _base_sub(self, input_):
        syn, mem = self._base_state_function(input_)
        return syn, mem - self.reset * self.threshold

    def _base_zero(self, input_):
        syn, mem = self._base_state_function(input_)
        syn2, mem2 = self._base_state_reset_zero(input_)
        return syn - syn2 * self.reset, mem - mem2 * self.reset

    def _base_int(self, input_):
        return self._base_state_function(input_)


class Leaky(_MembraneStateFunctions, SpikingNeuron, *snntorch_bases("Leaky")):
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

    @classmethod
    def _snntorch_settings(cls, layer):
        return cls._common_settings(layer, "beta", "graded_spikes_factor")

    def init_leaky(self):
        """Zeros whose shape is taken from the first input (snnTorch's behaviour)."""
        return self.reset_mem()

    # snnTorch's state functions (one step, from self.mem and self.reset), for code that calls them
    def _base_state_function(self, input_):
        return self.beta.clamp(0, 1) * self.mem + input_

    def _base_zero(self, input_):  # snnTorch's Leaky zeroes mem first, unlike its other neurons
        self.mem = (1 - self.reset) * self.mem
        return self._base_state_function(input_)

    def _fused(self, x, mem, single_step):
        spike_fn, sg = self._surrogate()
        return lif.run_lif(x, mem, self.beta, self.threshold, self.graded_spikes_factor,
                       single_step=single_step, reset_mode=self._state_reset_mode,
                       reset_delay=self.reset_delay, spike_fn=spike_fn, surrogate=sg,
                       backend=self.backend, mem_fp32=True,
                       reference_options=self._reference_options())

    def sequence(self, x_seq, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk_seq, mem_seq)``."""
        return self._fused(x_seq, mem, single_step=False)

    def forward(self, input_, mem=None):
        states, single_step = self._call_states(input_, (mem,))
        return self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))


class Synaptic(_SynapticStateFunctions, SpikingNeuron, *snntorch_bases("Synaptic")):
    """Second-order integrate-and-fire neuron: a synaptic current ``syn`` decaying with
    ``alpha`` feeds the membrane ``mem`` decaying with ``beta`` (snnTorch's ``Synaptic``).

    ``spk, syn, mem = lif(x_t, syn, mem)`` is one step; ``lif.sequence(x_seq, syn, mem)`` runs
    ``[T, B, ...]`` fused and returns ``(spk_seq, syn_seq, mem_seq)``; ``step_mode="multi"``
    as for :class:`Leaky`. snnTorch's Synaptic takes no graded-spike arguments (its factor is a
    buffer equal to 1); fastlif accepts them too.
    """

    _state_names = ("syn", "mem")
    _returned_states = ("syn", "mem")
    _init_hidden_error = "`mem` or `syn` should not be passed as an argument while `init_hidden=True`"

    def __init__(self, alpha, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_alpha=False, learn_beta=False,
                 learn_threshold=False, reset_mechanism="subtract", state_quant=False, output=False,
                 reset_delay=True, step_mode="single", backend="auto", graded_spikes_factor=1.0,
                 learn_graded_spikes_factor=False):
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                         learn_threshold, reset_mechanism, state_quant, output, graded_spikes_factor,
                         learn_graded_spikes_factor, reset_delay, step_mode, backend)
        self._register("beta", beta, learn_beta)
        self._register("alpha", alpha, learn_alpha)

    @classmethod
    def _snntorch_settings(cls, layer):
        return cls._common_settings(layer, "alpha", "beta", "graded_spikes_factor")

    def init_synaptic(self):
        """``(syn, mem)``: zeros whose shape is taken from the first input."""
        return self.reset_mem()

    # snnTorch's state functions (one step, from self.syn, self.mem and self.reset)
    def _base_state_function(self, input_):
        base_fn_syn = self.alpha.clamp(0, 1) * self.syn + input_
        return base_fn_syn, self.beta.clamp(0, 1) * self.mem + base_fn_syn

    def _fused(self, x, syn, mem, single_step):
        spike_fn, sg = self._surrogate()
        return run_synaptic(x, syn, mem, self.alpha, self.beta, self.threshold, self.graded_spikes_factor,
                            single_step=single_step, reset_mode=self._state_reset_mode,
                            reset_delay=self.reset_delay, spike_fn=spike_fn, surrogate=sg,
                            backend=self.backend, reference_options=self._reference_options())

    def sequence(self, x_seq, syn=None, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk, syn, mem) seqs``."""
        return self._fused(x_seq, syn, mem, single_step=False)

    def forward(self, input_, syn=None, mem=None):
        states, single_step = self._call_states(input_, (syn, mem))
        return self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))


def _cached(module, key_tensors, compute):
    """``compute()``, kept on ``module`` while ``key_tensors`` (the very objects, at the same
    version) are unchanged and none needs a gradient: a per-step call then runs no tensor op
    to rebuild parameters derived from buffers (Lapicque's ``1/(R*C)``, Alpha's ``tau_alpha``)."""
    if torch.compiler.is_compiling() or any(t.requires_grad for t in key_tensors):
        return compute()
    versions = tuple(t._version for t in key_tensors)
    cached = module.__dict__.get("_derived_cache")
    if (cached is not None and len(cached[0]) == len(key_tensors)
            and all(a is b for a, b in zip(cached[0], key_tensors)) and cached[1] == versions):
        return cached[2]
    value = compute()
    module.__dict__["_derived_cache"] = (tuple(key_tensors), versions, value)
    return value


def _check_recurrent_args(name, all_to_all, linear_features, conv2d_channels, kernel_size):
    """snnTorch's checks of a recurrent neuron's layer arguments (RLeaky's and RSynaptic's are the
    same), with its messages."""
    conv = bool(conv2d_channels) or bool(kernel_size)
    if all_to_all:
        if not linear_features:
            if not conv:
                raise TypeError(f"When `all_to_all=True`, {name} requires either `linear_features` or "
                                "(`conv2d_channels` and `kernel_size`) to be specified. The shape should "
                                "match the shape of the output spike of the layer.")
            if bool(conv2d_channels) ^ bool(kernel_size):
                raise TypeError("`conv2d_channels` and `kernel_size` must both be specified. The shape "
                                "of `conv2d_channels` should match the shape of the output spikes.")
        elif conv:
            raise TypeError("`linear_features` cannot be specified at the same time as `conv2d_channels` "
                            "or `kernel_size`. A linear layer and conv2d layer cannot both be specified "
                            "at the same time.")
    elif linear_features or conv:
        raise TypeError("When `all_to_all`=False, none of `linear_features`, `conv2d_channels`, or "
                        "`kernel_size` should be specified. The weight `V` is used instead.")


class _FamilyNeuron(SpikingNeuron):
    """A neuron run by a spec'd family (:mod:`fastlif.family`)."""

    _family = None

    def _check_reset_delay(self, reset_delay):
        if not reset_delay:
            raise ValueError(f"fastlif.{type(self).__name__}: reset_delay=False is not available (snnTorch's "
                             f"{type(self).__name__} has no immediate reset)")

    def _run_family(self, x, states, params, single_step):
        spike_fn, sg = self._surrogate()
        return run_family(self._family, x, states, params, single_step=single_step,
                          options={"reset_mode": self._state_reset_mode}, spike_fn=spike_fn, surrogate=sg,
                          backend=self.backend, reference_options=self._reference_options())


class Lapicque(_MembraneStateFunctions, _FamilyNeuron, *snntorch_bases("Lapicque")):
    """snnTorch's ``Lapicque``: a leaky neuron given by its RC circuit, ``mem' = ((x*R)*(1/(R*C)))
    *time_step + (1 - time_step/(R*C))*mem`` with snnTorch's resets (api.md section 1). Give beta,
    or R and C, or beta and one of them (the other is derived, as snnTorch derives it).

    ``spk, mem = lif(x_t, mem)`` is one step; ``lif.sequence(x_seq, mem)`` runs ``[T, B, ...]``
    fused and returns ``(spk_seq, mem_seq)``; ``step_mode="multi"`` as for :class:`Leaky`.
    With ``learn_beta=True`` the derived C (or R) follows beta: it is computed from it at every
    call (snnTorch computes it once, at construction, inside beta's graph; api.md).
    """

    _state_names = ("mem",)
    _family = LAPICQUE

    def __init__(self, beta=False, R=False, C=False, time_step=1, threshold=1.0, spike_grad=None,
                 surrogate_disable=False, init_hidden=False, inhibition=False, learn_beta=False,
                 learn_threshold=False, reset_mechanism="subtract", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True,
                 step_mode="single", backend="auto"):
        self._check_reset_delay(reset_delay)
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                         learn_threshold, reset_mechanism, state_quant, output, graded_spikes_factor,
                         learn_graded_spikes_factor, reset_delay, step_mode, backend)
        self._lapicque_cases(time_step, beta, R, C, learn_beta)

    def _lapicque_cases(self, time_step, beta, R, C, learn_beta):
        """snnTorch's cases, its derivations and messages; what it cannot run raises here."""
        time_step = time_step if isinstance(time_step, torch.Tensor) else torch.as_tensor(time_step)
        self.register_buffer("time_step", time_step)
        values = {}
        for name, value in (("beta", beta), ("R", R), ("C", C), ("time_step", time_step)):
            value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
            if value.numel() != 1:
                raise ValueError(f"fastlif.Lapicque: {name} must be a single value (snnTorch's Lapicque takes "
                                 f"scalar beta, R, C and time_step); got shape {tuple(value.shape)}")
            values[name] = value
        has_beta, has_R, has_C = bool(values["beta"]), bool(values["R"]), bool(values["C"])
        if not has_beta and not (has_R and has_C):
            raise ValueError("Either beta or 2 of beta, R and C must be specified as an input argument.")
        if has_beta and has_R and has_C:
            raise ValueError("fastlif.Lapicque: give beta, or R and C, or beta and one of R and C, not all "
                             "three (the fourth is derived from the others; snnTorch's Lapicque registers "
                             "neither R nor C then, and its forward fails)")
        self._derived = None  # the one of R, C that a learnable beta drives
        if not has_beta:
            if learn_beta:
                raise ValueError("fastlif.Lapicque: learn_beta=True needs beta (with R and C given, beta is "
                                 "derived from them and drives nothing; snnTorch's Lapicque fails there too)")
            beta = torch.exp(torch.ones(1) * (-self.time_step / (R * C)))
            self.register_buffer("beta", beta)
            self.register_buffer("R", values["R"] if isinstance(R, torch.Tensor) else torch.as_tensor(R))
            self.register_buffer("C", values["C"] if isinstance(C, torch.Tensor) else torch.as_tensor(C))
            return
        self._register("beta", values["beta"], learn_beta)
        beta_now = self.beta.detach()
        if not has_C:
            R = torch.as_tensor(1) if not has_R else R
            self.register_buffer("C", self.time_step / (R * torch.log(1 / beta_now)))
            self.register_buffer("R", R if isinstance(R, torch.Tensor) else torch.as_tensor(R))
            self._derived = "C" if learn_beta else None
        else:
            self.register_buffer("C", C if isinstance(C, torch.Tensor) else torch.as_tensor(C))
            self.register_buffer("R", self.time_step / (self.C * torch.log(1 / beta_now)))
            self._derived = "R" if learn_beta else None

    @classmethod
    def _snntorch_settings(cls, layer):
        settings = dict(cls._common_settings(layer, "beta"), time_step=layer.time_step.detach().clone())
        if not settings["learn_beta"]:  # R given too (C then derived, and loaded from the state_dict)
            settings["R"] = layer.R.detach().clone()
        return settings

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The RC buffers take the saved shape and dtype: which of beta, R, C snnTorch derived
        # (beta as shape (1,), R as int64, ...) depends on what its constructor was given.
        for name in ("beta", "R", "C", "time_step"):
            saved = state_dict.get(prefix + name)
            if name in self._buffers and isinstance(saved, torch.Tensor):
                self._buffers[name] = torch.empty_like(saved, device=self._buffers[name].device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def init_lapicque(self):
        """Deprecated, use :class:`Lapicque.reset_mem` instead"""
        return self.reset_mem()

    def _rc(self):
        """``(R, C)`` as this call uses them: the buffers, or the one a learnable beta drives,
        derived from it as snnTorch derives it (and stored back in its buffer, detached)."""
        R, C = self.R, self.C
        if self._derived == "C":
            C = self.time_step / (R * torch.log(1 / self.beta))
        elif self._derived == "R":
            R = self.time_step / (C * torch.log(1 / self.beta))
        if self._derived is not None:
            buffer = self._buffers[self._derived]
            with torch.no_grad():
                if buffer.shape == (R if self._derived == "R" else C).shape:
                    buffer.copy_(R if self._derived == "R" else C)
        return R, C

    def _params(self):
        """The family's parameters, computed by torch in snnTorch's order."""
        def compute():
            R, C = self._rc()
            ts = self.time_step
            return R, 1 / (R * C), ts, 1 - (ts / (R * C))
        keys = (self.R, self.C, self.time_step) + ((self.beta,) if self._derived else ())
        return (*_cached(self, keys, compute), self.threshold, self.graded_spikes_factor)

    # snnTorch's state functions (one step, from self.mem and self.reset), for code that calls them
    def _base_state_function(self, input_):
        return (input_ * self.R * (1 / (self.R * self.C)) * self.time_step
                + (1 - (self.time_step / (self.R * self.C))) * self.mem)

    def _fused(self, x, mem, single_step):
        return self._run_family(x, (mem,), self._params(), single_step)

    def sequence(self, x_seq, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk_seq, mem_seq)``."""
        return self._fused(x_seq, mem, single_step=False)

    def forward(self, input_, mem=None):
        states, single_step = self._call_states(input_, (mem,))
        return self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))


class Alpha(_FamilyNeuron, *snntorch_bases("Alpha")):
    """snnTorch's ``Alpha``: an excitatory current ``syn_exc`` (decaying with alpha, fed +x) and
    an inhibitory one ``syn_inh`` (decaying with beta, fed -x) whose sum, scaled by
    ``tau_alpha = log(alpha)/(log(beta) - log(alpha)) + 1``, is the membrane; snnTorch's resets,
    quirks included (api.md section 1). alpha must be greater than beta.

    ``spk, syn_exc, syn_inh, mem = lif(x_t, syn_exc, syn_inh, mem)`` is one step;
    ``lif.sequence(x_seq, syn_exc, syn_inh, mem)`` runs ``[T, B, ...]`` fused and returns the
    four sequences; ``step_mode="multi"`` as for :class:`Leaky`. ``learn_alpha=True`` works
    (snnTorch raises a TypeError there).
    """

    _state_names = ("syn_exc", "syn_inh", "mem")
    _returned_states = ("syn_exc", "syn_inh", "mem")
    _init_hidden_error = "When `init_hidden=True`, Alpha expects 1 input argument."
    _family = ALPHA

    def __init__(self, alpha, beta, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_alpha=False, learn_beta=False,
                 learn_threshold=False, reset_mechanism="zero", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True,
                 step_mode="single", backend="auto"):
        self._check_reset_delay(reset_delay)
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                         learn_threshold, reset_mechanism, state_quant, output, graded_spikes_factor,
                         learn_graded_spikes_factor, reset_delay, step_mode, backend)
        self._register("beta", beta, learn_beta)
        alpha = alpha if isinstance(alpha, torch.Tensor) else torch.as_tensor(alpha)
        # snnTorch keeps alpha clamped to [0, 1] (a learnable one is clamped where it is used)
        self._register("alpha", alpha if learn_alpha else alpha.clamp(0, 1), learn_alpha)
        self._alpha_cases()

    def _alpha_cases(self):
        alpha, beta = self.alpha.detach(), self.beta.detach()
        if (alpha.clamp(0, 1) <= beta).any():
            raise ValueError("alpha must be greater than beta.")
        if (beta == 1).any():
            raise ValueError("beta cannot be '1' otherwise ZeroDivisionError occurs: "
                             "tau_alpha = log(alpha)/log(beta) - log(alpha) + 1")

    @classmethod
    def _snntorch_settings(cls, layer):
        return cls._common_settings(layer, "alpha", "beta", "graded_spikes_factor")

    def init_alpha(self):
        """Deprecated, use :class:`Alpha.reset_mem` instead"""
        return self.reset_mem()

    def _params(self):
        tau = _cached(self, (self.alpha, self.beta), lambda: tau_alpha(self.alpha, self.beta))
        return self.alpha, self.beta, tau, self.threshold, self.graded_spikes_factor

    # snnTorch's state functions (one step, from self.syn_exc, self.syn_inh, self.mem, self.reset)
    def _base_state_function(self, input_):
        base_fn_syn_exc = self.alpha.clamp(0, 1) * self.syn_exc + input_
        base_fn_syn_inh = self.beta.clamp(0, 1) * self.syn_inh - input_
        return base_fn_syn_exc, base_fn_syn_inh, tau_alpha(self.alpha, self.beta) * (base_fn_syn_exc + base_fn_syn_inh)

    def _base_state_reset_sub_function(self, input_):
        return self.threshold, self.beta.clamp(0, 1) * self.syn_inh - input_, -self.syn_inh

    def _base_sub(self, input_):
        syn_exc, syn_inh, mem = self._base_state_function(input_)
        syn_exc2, syn_inh2, mem2 = self._base_state_reset_sub_function(input_)
        return syn_exc - syn_exc2 * self.reset, syn_inh - syn_inh2 * self.reset, mem - mem2 * self.reset

    def _base_zero(self, input_):
        syn_exc, syn_inh, mem = self._base_state_function(input_)
        syn_exc2, syn_inh2, mem2 = self._base_state_function(input_)
        return syn_exc - syn_exc2 * self.reset, syn_inh - syn_inh2 * self.reset, mem - mem2 * self.reset

    def _base_int(self, input_):
        return self._base_state_function(input_)

    def _fused(self, x, syn_exc, syn_inh, mem, single_step):
        return self._run_family(x, (syn_exc, syn_inh, mem), self._params(), single_step)

    def sequence(self, x_seq, syn_exc=None, syn_inh=None, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk, syn_exc, syn_inh,
        mem)`` sequences."""
        return self._fused(x_seq, syn_exc, syn_inh, mem, single_step=False)

    def forward(self, input_, syn_exc=None, syn_inh=None, mem=None):
        states, single_step = self._call_states(input_, (syn_exc, syn_inh, mem))
        return self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))


class RecurrentOneToOne(nn.Module):
    """RLeaky's one-to-one feedback, as snnTorch's: ``spk * V`` (V: one value, or one per neuron)."""

    def __init__(self, V):
        super().__init__()
        self.V = V

    def forward(self, x):
        return x * self.V


class _RecurrentFeedback:
    """The recurrent layer of RLeaky and RSynaptic, built, checked and described as snnTorch's."""

    def _build_recurrent(self, name, V, all_to_all, linear_features, conv2d_channels, kernel_size, learn_recurrent):
        self.all_to_all, self.learn_recurrent = all_to_all, learn_recurrent
        self.linear_features, self.kernel_size, self.conv2d_channels = linear_features, kernel_size, conv2d_channels
        _check_recurrent_args(name, all_to_all, linear_features, conv2d_channels, kernel_size)
        if all_to_all:
            self._init_recurrent_net()
        else:
            self._register("V", V, learn_recurrent)
            self.recurrent = RecurrentOneToOne(self.V)
        if not learn_recurrent:
            for param in self.recurrent.parameters():
                param.requires_grad = False
        if isinstance(self.recurrent, nn.Conv2d):
            warn_once((name, "conv2d"), f"fastlif.{name}: a Conv2d recurrent layer is not fused; layers that use "
                      "it run the reference loop (exact, as snnTorch computes it, but a plain PyTorch loop).")

    def _init_recurrent_net(self):
        if self.linear_features:
            self.recurrent = nn.Linear(self.linear_features, self.linear_features)
        else:
            k = self.kernel_size
            self.padding = (k // 2, k // 2) if isinstance(k, int) else (k[0] // 2, k[1] // 2)
            self.recurrent = nn.Conv2d(self.conv2d_channels, self.conv2d_channels, kernel_size=k,
                                       padding=self.padding)

    @staticmethod
    def _recurrent_settings(layer):
        """The recurrent layer's constructor settings of an snnTorch RLeaky or RSynaptic."""
        settings = dict(all_to_all=layer.all_to_all, linear_features=layer.linear_features,
                        conv2d_channels=layer.conv2d_channels, kernel_size=layer.kernel_size,
                        learn_recurrent=layer.learn_recurrent)
        if not layer.all_to_all:
            settings["V"] = layer.V.detach().clone()
        return settings


class RLeaky(_RecurrentFeedback, _MembraneStateFunctions, SpikingNeuron, *snntorch_bases("RLeaky")):
    """Recurrent leaky integrate-and-fire neuron (snnTorch's ``RLeaky``): each step's spikes feed
    back into the next step's membrane through ``recurrent``: one weight per neuron
    (``all_to_all=False``: ``spk * V``; fused on CPU and GPU), a dense ``nn.Linear``
    (``linear_features``; fused and event-driven on the CPU, a per-step loop on GPUs) or an
    ``nn.Conv2d`` (``conv2d_channels``, ``kernel_size``; the reference loop, with one warning).

    ``spk, mem = lif(x_t, spk, mem)`` is one step; ``lif.sequence(x_seq, spk, mem)`` runs
    ``[T, B, ...]`` and returns ``(spk_seq, mem_seq)``; ``step_mode="multi"`` as for :class:`Leaky`.
    """

    _state_names = ("spk", "mem")
    _returned_states = ("mem",)
    _init_hidden_error = "When `init_hidden=True`,RLeaky expects 1 input argument."

    def __init__(self, beta, V=1.0, all_to_all=True, linear_features=None, conv2d_channels=None,
                 kernel_size=None, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_beta=False, learn_threshold=False,
                 learn_recurrent=True, reset_mechanism="subtract", state_quant=False, output=False,
                 reset_delay=True, step_mode="single", backend="auto"):
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                         learn_threshold, reset_mechanism, state_quant, output, 1.0, False, reset_delay,
                         step_mode, backend)
        self._register("beta", beta, learn_beta)
        self._build_recurrent("RLeaky", V, all_to_all, linear_features, conv2d_channels, kernel_size, learn_recurrent)

    @classmethod
    def _snntorch_settings(cls, layer):
        return dict(cls._common_settings(layer, "beta"), **cls._recurrent_settings(layer))

    def init_rleaky(self):
        """``(spk, mem)``: zeros whose shape is taken from the first input."""
        return self.reset_mem()

    # snnTorch's state functions (one step, from self.spk, self.mem and self.reset)
    def _base_state_function(self, input_):
        return self.beta.clamp(0, 1) * self.mem + input_ + self.recurrent(self.spk)

    def _fused(self, x, spk, mem, single_step):
        spike_fn, sg = self._surrogate()
        recurrent = self.recurrent if self.all_to_all else self.V  # the fused ops take V itself
        spk_out, mem_out = rleaky.run_rleaky(x, spk, mem, self.beta, recurrent, self.threshold,
                                      self.graded_spikes_factor, single_step=single_step,
                                      reset_mode=self._state_reset_mode, reset_delay=self.reset_delay,
                                      spike_fn=spike_fn, surrogate=sg, backend=self.backend,
                                      reference_options=self._reference_options())
        return spk_out, spk_out, mem_out  # the spikes are also the next step's state

    def sequence(self, x_seq, spk=None, mem=None):
        """Fused over the leading time dimension: ``x_seq [T, B, ...] -> (spk_seq, mem_seq)``."""
        spk_seq, _, mem_seq = self._fused(x_seq, spk, mem, single_step=False)
        return spk_seq, mem_seq

    def forward(self, input_, spk=None, mem=None):
        states, single_step = self._call_states(input_, (spk, mem))
        return self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))


class RSynaptic(_RecurrentFeedback, _SynapticStateFunctions, SpikingNeuron, *snntorch_bases("RSynaptic")):
    """Recurrent second-order neuron (snnTorch's ``RSynaptic``): a :class:`Synaptic` whose spikes
    feed back into the next step's synaptic current through ``recurrent``: one weight per neuron
    (``all_to_all=False``: ``spk * V``; fused over the whole sequence on the CPU), a dense
    ``nn.Linear`` (``linear_features``: per step, torch's Linear on the previous spikes as
    snnTorch computes it, then the fused one-step update) or an ``nn.Conv2d``
    (``conv2d_channels``, ``kernel_size``; the reference loop, with one warning).

    ``spk, syn, mem = lif(x_t, spk, syn, mem)`` is one step; ``lif.sequence(x_seq, spk, syn,
    mem)`` runs ``[T, B, ...]`` and returns ``(spk_seq, syn_seq, mem_seq)``;
    ``step_mode="multi"`` as for :class:`Leaky`. The immediate reset (``reset_delay=False``)
    is RLeaky's (snnTorch 1.0's raises or does nothing: docs/api.md, deliberate differences).
    """

    _state_names = ("spk", "syn", "mem")
    _returned_states = ("syn", "mem")
    _init_hidden_error = "When `init_hidden=True`, RSynaptic expects 1 input argument."

    def __init__(self, alpha, beta, V=1.0, all_to_all=True, linear_features=None, conv2d_channels=None,
                 kernel_size=None, threshold=1.0, spike_grad=None, surrogate_disable=False,
                 init_hidden=False, inhibition=False, learn_alpha=False, learn_beta=False,
                 learn_threshold=False, learn_recurrent=True, reset_mechanism="subtract",
                 state_quant=False, output=False, reset_delay=True, step_mode="single", backend="auto"):
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition,
                         learn_threshold, reset_mechanism, state_quant, output, 1.0, False, reset_delay,
                         step_mode, backend)
        self._register("beta", beta, learn_beta)
        self._build_recurrent("RSynaptic", V, all_to_all, linear_features, conv2d_channels, kernel_size,
                              learn_recurrent)
        self._register("alpha", alpha, learn_alpha)  # after V, as snnTorch registers them
        self.__dict__["_own_states"] = None  # the states the last step left (see forward)

    @classmethod
    def _snntorch_settings(cls, layer):
        return dict(cls._common_settings(layer, "alpha", "beta"), **cls._recurrent_settings(layer))

    def init_rsynaptic(self):
        """``(spk, syn, mem)``: zeros whose shape is taken from the first input."""
        return self.reset_mem()

    # snnTorch's state functions (one step, from self.spk, self.syn, self.mem and self.reset)
    def _base_state_function(self, input_):
        base_fn_syn = self.alpha.clamp(0, 1) * self.syn + input_ + self.recurrent(self.spk)
        return base_fn_syn, self.beta.clamp(0, 1) * self.mem + base_fn_syn

    def _fused(self, x, spk, syn, mem, single_step):
        spike_fn, sg = self._surrogate()
        options = self._reference_options()
        recurrent = self.recurrent if self.all_to_all else self.V  # the fused ops take V itself
        spk_out, syn_out, mem_out = rsynaptic.run_rsynaptic(
            x, spk, syn, mem, self.alpha, self.beta, recurrent, self.threshold, self.graded_spikes_factor,
            single_step=single_step, reset_mode=self._state_reset_mode, reset_delay=self.reset_delay,
            spike_fn=spike_fn, surrogate=sg, backend=self.backend, reference_options=options)
        return spk_out, spk_out, syn_out, mem_out  # the spikes are also the next step's state

    def sequence(self, x_seq, spk=None, syn=None, mem=None):
        """Over the leading time dimension (fused for one-to-one feedback):
        ``x_seq [T, B, ...] -> (spk_seq, syn_seq, mem_seq)``."""
        spk_seq, _, syn_seq, mem_seq = self._fused(x_seq, spk, syn, mem, single_step=False)
        return spk_seq, syn_seq, mem_seq

    def forward(self, input_, spk=None, syn=None, mem=None):
        # snnTorch's RSynaptic.reset_hidden (what snntorch.utils.reset calls) replaces syn and mem
        # by zeros but keeps spk, the last batch's spikes and their graph: the next step would feed
        # them back (and a backward then fails). Spikes whose syn and mem were both replaced since
        # the step that left them restart at zeros.
        own, buffers = self._own_states, self._buffers
        if (spk is None and own is not None and own[0] is buffers.get("spk") and own[1] is not buffers.get("syn")
                and own[2] is not buffers.get("mem")):
            buffers["spk"] = torch.zeros_like(own[0])
        states, single_step = self._call_states(input_, (spk, syn, mem))
        out = self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))
        self._mark_own_states()
        return out

    def _mark_own_states(self):
        buffers = self._buffers
        self.__dict__["_own_states"] = (buffers.get("spk"), buffers.get("syn"), buffers.get("mem"))

    def _sequence_from_reset(self, x_seq):
        out = super()._sequence_from_reset(x_seq)
        self._mark_own_states()
        return out

    @classmethod
    def from_snntorch(cls, layer):
        new = super().from_snntorch(layer)
        new._mark_own_states()
        return new
