"""What every snnTorch-style neuron of fastlif shares, so that a neuron is its parameters plus
one op call: the instance registry and the hidden-state machinery (``init_hidden``,
``reset_hidden`` / ``detach_hidden``), the state's shape taken from the first input,
``step_mode``, the surrogate, the reset mechanism and its buffer, and snnTorch's public helpers
(``fire``, ``mem_reset``, ...), written as snnTorch writes them.

With snnTorch installed, each fastlif neuron is also a subclass of the snnTorch class it
replaces (:func:`snntorch_bases`), placed after fastlif's own classes in the method order:
fastlif's code runs, and snnTorch's helpers (``utils.reset``, ``backprop``,
``export_to_nir``), which test ``isinstance(m, snntorch.Leaky)`` and walk
``snntorch.SpikingNeuron.instances``, see fastlif's layers as their own. Without snnTorch
nothing changes but those ``isinstance`` answers.

State tensors are never views of a larger output, because snnTorch's helpers detach them in
place (``mem.detach_()``), which a view refuses.
"""
import warnings

import torch
from torch import nn

from . import backends, surrogate as surrogate_mod
from .codes import RESET_CODES, RESET_MECHANISMS, reset_code
from .ops.common import compute_dtype, warn_once

try:  # optional: see the module docstring
    import snntorch as _snntorch
except ImportError:  # pragma: no cover - exercised by the test without snnTorch
    _snntorch = None


def snntorch_bases(name):
    """``(snntorch.<name>,)`` when snnTorch is installed, else ``()``: extra bases of a neuron."""
    return (getattr(_snntorch, name),) if _snntorch is not None else ()



class SpikingNeuron(nn.Module):
    """Base of fastlif's neurons; snnTorch's ``SpikingNeuron`` surface.

    A subclass sets ``_state_names`` (its hidden states, e.g. ``("mem",)``), registers its own
    parameters after calling ``__init__``, and implements ``_fused`` (the op call) and the
    per-step snnTorch methods it has.
    """

    _state_names = ("mem",)
    reset_dict = dict(RESET_CODES)
    if _snntorch is None:
        instances = []  # with snnTorch, its SpikingNeuron.instances (inherited): one registry

    def __init__(self, threshold=1.0, spike_grad=None, surrogate_disable=False, init_hidden=False,
                 inhibition=False, learn_threshold=False, reset_mechanism="subtract",
                 state_quant=False, output=False, graded_spikes_factor=1.0,
                 learn_graded_spikes_factor=False, reset_delay=True, step_mode="single",
                 backend="auto"):
        nn.Module.__init__(self)  # not super(): the next class may be snnTorch's, not to be run
        reset_code(reset_mechanism)
        if step_mode not in ("single", "multi"):
            raise ValueError(f"step_mode must be 'single' or 'multi', got {step_mode!r}")
        backends.check_name(backend)
        if surrogate_disable:
            self.spike_grad = surrogate_mod.no_grad()
        elif spike_grad is None:
            self.spike_grad = surrogate_mod.atan()
        else:
            surrogate_mod.resolve(spike_grad)  # checks it, and warns once if it cannot be fused
            self.spike_grad = spike_grad
        self.init_hidden = init_hidden
        self.inhibition = inhibition
        self.output = output
        self.surrogate_disable = surrogate_disable
        if inhibition:
            warnings.warn("Inhibition is an unstable feature that has only been tested for dense "
                          "(fully-connected) layers. Use with caution!", UserWarning, stacklevel=3)
        self._register("threshold", threshold, learn_threshold)
        self._register("graded_spikes_factor", graded_spikes_factor, learn_graded_spikes_factor)
        self.register_buffer("reset_mechanism_val", torch.as_tensor(RESET_CODES[reset_mechanism]))
        self._reset_mechanism = reset_mechanism
        # snnTorch builds its state function from the mechanism given here and never again; only
        # the immediate reset (reset_delay=False) reads reset_mechanism_val afterwards.
        self._state_reset_mode = RESET_CODES[reset_mechanism]
        self._reset_val = self._state_reset_mode  # mirror of the buffer, read without a sync
        self.state_quant = state_quant
        self.reset_delay = reset_delay
        self.step_mode = step_mode
        self.backend = backend
        self._surrogate_cache = (None, None)
        for name in self._state_names:
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self._reset_source = None  # (membrane the last step started from,), or an assigned value
        # snnTorch's state_function, picked once from the mechanism given here (the class's
        # _base_sub / _base_zero / _base_int; from_snntorch reads the name back)
        self.state_function = getattr(self, ("_base_sub", "_base_zero", "_base_int")[self._state_reset_mode], None)
        _registry().instances.append(self)  # once its own arguments passed their checks
        if inhibition or state_quant:
            what = " and ".join(n for n, on in (("inhibition", inhibition), ("state_quant", state_quant)) if on)
            warn_once((type(self).__name__, what),
                      f"fastlif.{type(self).__name__}: {what} is not fused; layers that use it run "
                      f"the reference loop (exact, as snnTorch computes it, but a plain PyTorch loop).")

    def __setstate__(self, state):
        # A copy (copy.deepcopy, pickle, torch.load of a whole model) is a neuron too: register it,
        # so that snnTorch's utils.reset, which walks the registry, resets it (snnTorch's own
        # neurons are left out of the registry when copied, and keep their state across resets).
        super().__setstate__(state)
        _registry().instances.append(self)

    def _register(self, name, value, learnable):
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if learnable:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    # --- reset mechanism, as snnTorch ------------------------------------------------------------
    @property
    def reset_mechanism(self):
        """0: subtract, 1: zero, 2: none. Assigning it updates ``reset_mechanism_val``, which only
        the immediate reset reads (as in snnTorch: the state function keeps the mechanism given
        to the constructor)."""
        return self._reset_mechanism

    @reset_mechanism.setter
    def reset_mechanism(self, new):
        self._reset_cases(new)
        self.reset_mechanism_val = torch.as_tensor(RESET_CODES[new])
        self._reset_mechanism = new
        self._reset_val = RESET_CODES[new]

    def _reset_cases(self, reset_mechanism):
        reset_code(reset_mechanism)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._reset_val = int(self.reset_mechanism_val)  # a loaded value, as snnTorch reads it

    def _immediate_options(self):
        """The reference options of a mismatch between the state function's mechanism and the
        one the immediate reset reads (after an assignment or a loaded state_dict), if any."""
        if self.reset_delay or self._reset_val == self._state_reset_mode:
            return None
        warn_once((id(self), "immediate"), f"fastlif.{type(self).__name__}: reset_mechanism_val "
                  f"({self._reset_val}) differs from the mechanism the layer was built with "
                  f"({self._state_reset_mode}); as snnTorch, the immediate reset uses the first and "
                  f"the state update the second. That combination is not fused: the reference loop runs it.")
        return {"immediate_reset_mechanism": RESET_MECHANISMS[self._reset_val]
                if self._reset_val in (0, 1) else "none"}

    def _reference_options(self):
        options = {}
        if self.inhibition:
            options["inhibition"] = True
        if self.state_quant:
            options["state_quant"] = self.state_quant
        options.update(self._immediate_options() or {})
        return options or None

    # --- surrogate -------------------------------------------------------------------------------
    def _surrogate(self):
        """``(spike_fn, Surrogate or None)`` of the current ``spike_grad`` (assignable, as in
        snnTorch), resolved once per object assigned."""
        fn = self.spike_grad
        cached_fn, resolved = self._surrogate_cache
        if cached_fn is not fn:
            resolved = surrogate_mod.resolve(fn)
            self._surrogate_cache = (fn, resolved)
        return resolved

    # --- snnTorch's helpers --------------------------------------------------------------------
    def fire(self, mem):
        """Generates spike if mem > threshold. Returns spk."""
        if self.state_quant:
            mem = self.state_quant(mem)
        spk = self.spike_grad(mem - self.threshold)
        return spk * self.graded_spikes_factor

    def fire_inhibition(self, batch_size, mem):
        """Generates spike if mem > threshold, only for the largest membrane. Returns spk."""
        mem_shift = mem - self.threshold
        index = torch.argmax(mem_shift, dim=1)
        spk_tmp = self.spike_grad(mem_shift)
        mask_spk1 = torch.zeros_like(spk_tmp)
        mask_spk1[torch.arange(batch_size), index] = 1
        return spk_tmp * mask_spk1

    def mem_reset(self, mem):
        """Generates detached reset signal if mem > threshold. Returns reset."""
        return self.spike_grad(mem - self.threshold).clone().detach()

    @property
    def reset(self):
        """The reset flag of the last step (snnTorch's ``self.reset``), computed when read from
        the membrane the step started from."""
        source = self._reset_source
        return self.mem_reset(source[0]) if isinstance(source, tuple) else source

    @reset.setter
    def reset(self, value):
        self._reset_source = value

    @classmethod
    def init(cls):
        """Removes all items from ``instances`` when called."""
        _registry().instances = []

    @staticmethod
    def detach(*args):
        """Detach hidden states from the graph, in place (truncated backpropagation through time)."""
        for state in args:
            state.detach_()

    @staticmethod
    def zeros(*args):
        """snnTorch's helper of this name: it rebinds a local, so it changes nothing."""
        for state in args:
            state = torch.zeros_like(state)  # noqa: F841

    @staticmethod
    def _surrogate_bypass(input_):
        return (input_ > 0).float()

    # --- from snnTorch -------------------------------------------------------------------------
    _STATE_FUNCTIONS = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}

    @classmethod
    def from_snntorch(cls, layer):
        """This class's equivalent of an snnTorch neuron: the same constructor settings, then its
        parameters and buffers (``load_state_dict``), hidden state and reset mechanism value."""
        kwargs = cls._snntorch_settings(layer)
        state_function = getattr(getattr(layer, "state_function", None), "__name__", None)
        kwargs["reset_mechanism"] = cls._STATE_FUNCTIONS.get(state_function, layer.reset_mechanism)
        new = cls(**kwargs)
        new.load_state_dict(layer.state_dict())  # also reset_mechanism_val, as a loaded value
        new._reset_mechanism = layer.reset_mechanism
        for name in cls._state_names:
            state = getattr(layer, name, None)
            if state is not None:
                setattr(new, name, state)
        return new.to(next(iter(layer.buffers()), new.threshold).device)

    @staticmethod
    def _common_settings(layer, *learnable):
        """The SpikingNeuron-level constructor settings of an snnTorch neuron, and for each name
        in ``learnable`` its value (a copy) and ``learn_<name>``."""
        disabled = getattr(layer, "surrogate_disable", False)
        settings = dict(spike_grad=None if disabled else layer.spike_grad, surrogate_disable=disabled,
                        init_hidden=layer.init_hidden, inhibition=layer.inhibition,
                        state_quant=layer.state_quant, output=layer.output,
                        reset_delay=getattr(layer, "reset_delay", True))
        for name in ("threshold", *learnable):
            value = getattr(layer, name)
            settings[name] = value.detach().clone()
            settings[f"learn_{name}"] = isinstance(value, nn.Parameter)
        return settings

    # --- hidden state --------------------------------------------------------------------------
    @classmethod
    def detach_hidden(cls):
        """Detach every layer's hidden state from the graph, in place, as snnTorch does (a state
        that is a view, which ``detach_()`` refuses, e.g. what a ``state_quant`` returns, is
        replaced by a detached copy instead: snnTorch raises there)."""
        for layer in list(_registry().instances):
            if isinstance(layer, cls):
                for name in layer._state_names:
                    state = getattr(layer, name, None)  # None: a constructor that raised later
                    if state is None:
                        continue
                    if state._is_view():
                        setattr(layer, name, state.detach())
                    else:
                        state.detach_()

    @classmethod
    def reset_hidden(cls):
        """Clear every layer's hidden state to zeros (keeping its shape)."""
        for layer in list(_registry().instances):
            if isinstance(layer, cls):
                for name in layer._state_names:
                    state = getattr(layer, name, None)
                    if state is not None:
                        setattr(layer, name, torch.zeros_like(state, device=state.device))

    def _states_for(self, input_, given):
        """snnTorch's rule: a state whose shape is not the input's starts as zeros like it
        (fp32 for fp16/bf16 input: fastlif keeps states in fp32, see api.md)."""
        states = []
        buffers = self._buffers
        for name, value in zip(self._state_names, given):
            state = value if value is not None else buffers[name] if name in buffers else getattr(self, name)
            if state.shape != input_.shape:
                dtype = compute_dtype(input_.dtype if input_.is_floating_point() else torch.get_default_dtype())
                state = torch.zeros_like(input_, device=state.device, dtype=dtype)
            states.append(state)
        return states

    # --- one step, or a whole sequence: what every neuron's forward does ------------------------
    # A subclass implements ``_fused(x, *states, single_step) -> (spk, *new states)`` (states in
    # ``_state_names`` order), lists in ``_returned_states`` the states its calls return, and
    # its forward is these two lines, so that the route from forward to the kernel runs
    # downward (neuron -> op -> Function -> launcher) and does not come back up through here:
    #
    #     states, single_step = self._call_states(input_, (mem,))
    #     return self._call_result(states, single_step, *self._fused(input_, *states, single_step=single_step))
    _returned_states = ("mem",)
    _init_hidden_error = "`mem` should not be passed as an argument while `init_hidden=True`"

    def _call_states(self, input_, given):
        """Check a call and return ``(the states it starts from, whether it is one step)``."""
        if self.init_hidden and any(state is not None for state in given):
            raise TypeError(self._init_hidden_error)
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input_).__name__}")
        if self.step_mode != "multi":
            return self._states_for(input_, given), True
        if input_.dim() == 2:  # [B, N] of a per-step loop would silently be read as [T, N]
            raise ValueError(
                f"fastlif.{type(self).__name__}(step_mode='multi') takes a sequence [T, B, ...] "
                f"(time first, then batch); got a 2-D input of shape {tuple(input_.shape)}. For "
                f"one step [B, N] use step_mode='single' (or fastlif.sequence(net, x_seq) for "
                f"a whole per-step network); for an unbatched sequence [T, N] pass x.unsqueeze(1) "
                f"or call .sequence(x)")
        if self.init_hidden:
            given = [getattr(self, name) if getattr(self, name).shape == input_.shape[1:] else None
                     for name in self._state_names]
        return list(given), False

    def _call_result(self, states, single_step, spk, *new_states):
        """What the call returns, given what ``_fused`` gave; keeps the new states."""
        if not single_step:
            return self._sequence_result(states, spk, new_states)
        # only once the step succeeded: a rejected call changes nothing
        self.__dict__["_reset_source"] = (states[self._state_names.index("mem")],)  # a plain attribute
        self._set_states(new_states)
        if self._returned_states == self._state_names:
            returned = new_states
        else:
            returned = [new_states[self._state_names.index(name)] for name in self._returned_states]
        if self.output or not self.init_hidden:
            return (spk, *returned)
        return spk

    def _set_states(self, values):
        """``setattr(self, name, value)`` for each hidden state, without nn.Module's
        ``__setattr__`` (~3 us a state, a tenth of a small step) when the states are plain
        buffers of an unmodified nn.Module and no global buffer hook watches them."""
        buffers = self._buffers
        if _buffer_hooks or type(self).__setattr__ is not nn.Module.__setattr__:
            for name, value in zip(self._state_names, values):
                setattr(self, name, value)
            return
        for name, value in zip(self._state_names, values):
            if name in buffers:
                buffers[name] = value
            else:
                setattr(self, name, value)

    def _sequence_result(self, given, spk_seq, seqs):
        returned = [seqs[self._state_names.index(name)] for name in self._returned_states]
        if not self.init_hidden:
            return (spk_seq, *returned)
        if len(spk_seq):  # copies, not views: snnTorch's helpers detach states in place
            mem_seq = seqs[self._state_names.index("mem")]
            mem0 = given[self._state_names.index("mem")]
            self._reset_source = (mem_seq[-2] if len(mem_seq) > 1 else
                                  (mem0 if mem0 is not None else torch.zeros_like(mem_seq[0])),)
            for name, seq in zip(self._state_names, seqs):
                setattr(self, name, seq[-1].clone())
        return (spk_seq, *returned) if self.output else spk_seq

    def _sequence_from_reset(self, x_seq):
        """What ``fastlif.sequence`` runs: the whole ``[T, B, ...]`` sequence from zero states (as
        after ``utils.reset``), fused; returns what the per-step calls would stack (the spikes,
        or ``(spk, *returned states)`` when a step returns a tuple) and leaves the final states
        in the neuron, as those calls would."""
        spk_seq, *seqs = self._fused(x_seq, *([None] * len(self._state_names)), single_step=False)
        if len(spk_seq):  # copies, not views: snnTorch's helpers detach states in place
            mem_seq = seqs[self._state_names.index("mem")]
            self._reset_source = (mem_seq[-2] if len(mem_seq) > 1 else torch.zeros_like(mem_seq[0]),)
            for name, seq in zip(self._state_names, seqs):
                setattr(self, name, seq[-1].clone())
        if self.output or not self.init_hidden:
            return (spk_seq, *[seqs[self._state_names.index(name)] for name in self._returned_states])
        return spk_seq

    def reset_mem(self):
        """Every hidden state set to zeros of its current shape (zeros whose shape is taken from
        the first input, before one); returns them, one tensor or a tuple in the neuron's state
        order, as snnTorch's ``reset_mem``."""
        return self._clear_states()

    def _clear_states(self):
        for name in self._state_names:
            state = getattr(self, name)
            setattr(self, name, torch.zeros_like(state, device=state.device))
        states = tuple(getattr(self, name) for name in self._state_names)
        return states if len(states) > 1 else states[0]

    def extra_repr(self):
        return (f"reset_mechanism={self._reset_mechanism!r}, reset_delay={self.reset_delay}, "
                f"spike_grad={self.spike_grad!r}, step_mode={self.step_mode!r}, "
                f"backend={self.backend!r}")


try:  # what nn.Module.__setattr__ runs on a buffer assignment, besides storing it (_set_states)
    from torch.nn.modules.module import _global_buffer_registration_hooks as _buffer_hooks
except ImportError:  # pragma: no cover - another torch: always the plain setattr
    _buffer_hooks = (True,)


def _registry():
    """The class whose ``instances`` list is the registry: snnTorch's, when it is installed."""
    return _snntorch.SpikingNeuron if _snntorch is not None else SpikingNeuron
