"""SpikingJelly 2.0's ``LIFNode`` and ``ParametricLIFNode``, fused on the CPU.

Same signatures and module behaviour as ``spikingjelly.activation_based.neuron.LIFNode`` and
``ParametricLIFNode``: ``step_mode`` ``'s'`` (one step ``[N, ...]``) or ``'m'`` (a sequence
``[T, N, ...]``, fused over T), the membrane ``.v`` (a float until the first step, then a
tensor), ``reset()``, ``store_v_seq`` / ``v_seq``, and ``spikingjelly.activation_based.
functional.reset_net``. Spikes and voltages equal SpikingJelly's fp32 ones bit for bit;
gradients agree to rounding (api.md, "fastlif.spikingjelly").

The neurons run the family ``sj_lif`` (:mod:`fastlif.families.sj_lif`) on the generic path
(:func:`fastlif.family.run_family`). Surrogates: SpikingJelly's own ``Sigmoid`` and ``ATan``
objects, or :attr:`surrogate` ``.Sigmoid`` / ``.ATan`` here, run fused; any other callable runs
the reference loop (one warning; an error if ``backend='cpp'`` was asked for).

With SpikingJelly installed, the neurons also subclass SpikingJelly's own classes (placed after
fastlif's in the method order, so fastlif's code runs): ``isinstance`` checks, ``reset_net``,
``detach_net`` and SpikingJelly's memory helpers see them as SpikingJelly neurons. Without it
they are plain ``nn.Module`` s with the same behaviour.
"""
import copy
import math
import numbers

import torch
from torch import nn

from . import backends
from . import surrogate as _surrogate_mod
from .families.sj_lif import LEAK_DIVIDE, LEAK_MULTIPLY, SJ_LIF
from .family import run_family

# Optional, as snnTorch is for fastlif's own neurons (see the module docstring).
try:
    from spikingjelly.activation_based import neuron as _sj_neuron
except ImportError:  # pragma: no cover - exercised without SpikingJelly
    _sj_neuron = None

__all__ = ["LIFNode", "ParametricLIFNode", "surrogate"]


def _sj_bases(name):
    """``(spikingjelly...neuron.<name>,)`` when SpikingJelly is installed, else ``()``."""
    return (getattr(_sj_neuron, name),) if _sj_neuron is not None else ()


class surrogate:  # noqa: N801 - SpikingJelly's module name
    """SpikingJelly's surrogate names: ``surrogate.Sigmoid(alpha=4.)``, ``surrogate.ATan(alpha=2.)``
    (Heaviside ``z >= 0`` forward, SpikingJelly's derivative backward)."""

    @staticmethod
    def Sigmoid(alpha=4.0, spiking=True):  # noqa: N802
        _check_spiking(spiking)
        return _surrogate_mod.sj_sigmoid(_number(alpha, "alpha"))

    @staticmethod
    def ATan(alpha=2.0, spiking=True):  # noqa: N802
        _check_spiking(spiking)
        return _surrogate_mod.sj_atan(_number(alpha, "alpha"))


def _check_spiking(spiking):
    if spiking is not True:
        raise ValueError("fastlif.spikingjelly surrogates are spiking only (spiking=True); for "
                         "spiking=False use SpikingJelly's own surrogate, which runs the reference loop")


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


class _PendingLastStep:
    """``v`` after a multi-step call before anyone read it: ``v_seq[-1]``, copied on first read
    (:class:`_Memories`) in the grad mode of the call that made it. The usual loop resets the
    network after each batch and never reads it; the copy, right after the kernels streamed the
    caches out, was 50 us of a tutorial-size call (``bench/overhead.py``)."""

    __slots__ = ("seq", "grad")

    def __init__(self, seq):
        self.seq, self.grad = seq, torch.is_grad_enabled()

    def value(self):
        with torch.inference_mode(False), torch.set_grad_enabled(self.grad):
            return self.seq[-1].clone()  # not a view of v_seq: SpikingJelly detaches memories in place


class _Memories(dict):
    """SpikingJelly's ``_memories`` dict whose every read gives values, never a pending copy:
    ``[]``, ``get``, ``values``, ``items``, ``copy``, ``pop``, ``setdefault`` and what pickle and
    ``copy.deepcopy`` use (``items``) turn a :class:`_PendingLastStep` into its tensor first."""

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if type(value) is _PendingLastStep:
            value = value.value()
            dict.__setitem__(self, key, value)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def values(self):
        return [self[key] for key in list(self.keys())]

    def items(self):
        return [(key, self[key]) for key in list(self.keys())]

    def copy(self):
        return _Memories(self.items())

    def pop(self, key, *default):
        if key in self:
            value = self[key]
            del self[key]
            return value
        return dict.pop(self, key, *default)

    def setdefault(self, key, default=None):
        return self[key] if key in self else dict.setdefault(self, key, default)

    def __repr__(self):
        return repr(dict(self.items()))


class _Node(nn.Module):
    """What LIFNode and ParametricLIFNode share: SpikingJelly's ``BaseNode`` / ``MemoryModule``
    surface (memories, step modes, ``reset``, ``v_seq``) over fastlif's fused family."""

    _leak = LEAK_DIVIDE

    def __init__(self, v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                 backend):
        nn.Module.__init__(self)  # not super(): the next class may be SpikingJelly's, not to be run
        self._memories, self._memories_rv = _Memories(), {}
        v_threshold = _number(v_threshold, "v_threshold")
        if v_reset is not None:
            v_reset = _number(v_reset, "v_reset")
        if not isinstance(detach_reset, bool):
            raise TypeError(f"detach_reset must be a bool, got {type(detach_reset).__name__}")
        backends.check_name(backend)
        _surrogate_mod.resolve_spikingjelly(surrogate_function)  # a bad type fails here, not at the first step
        self.register_memory("v", 0.0 if v_reset is None else v_reset)
        self.v_threshold, self.v_reset, self.detach_reset = v_threshold, v_reset, detach_reset
        self.surrogate_function = surrogate_function
        self.step_mode = step_mode
        self._neuron_precision = None  # SpikingJelly's attribute; fastlif has no precision modes
        self.store_v_seq = store_v_seq
        self.backend = backend

    # --- SpikingJelly's MemoryModule surface ---------------------------------------------------

    def supported_step_mode(self):
        return ("s", "m")

    @property
    def step_mode(self):
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value):
        if value not in self.supported_step_mode():
            raise ValueError(f"step_mode can only be {self.supported_step_mode()}, but got {value!r}")
        self._step_mode = value

    @property
    def store_v_seq(self):
        return self._store_v_seq

    @store_v_seq.setter
    def store_v_seq(self, value):
        self._store_v_seq = bool(value)
        self._set_v_seq(None)

    def _set_v_seq(self, value):
        # a plain attribute (never a parameter, buffer or memory): nn.Module.__setattr__'s checks
        # cost microseconds a call
        object.__setattr__(self, "v_seq", value)

    def register_memory(self, name, value):
        assert not hasattr(self, name), f"{name} has been set as a member variable!"
        self._memories[name] = value
        self.set_reset_value(name, value)

    def set_reset_value(self, name, value):
        self._memories_rv[name] = copy.deepcopy(value)

    def get_reset_value(self, name):
        return self._memories_rv[name]

    def memories(self):
        yield from self._memories.values()

    def named_memories(self):
        yield from self._memories.items()

    def reset(self):
        """Every memory back to its initial value (``v``: ``v_reset``, or 0. for a soft reset,
        a float again), and ``v_seq`` to None."""
        for key, rv in self._memories_rv.items():
            if type(rv) in (float, int) or rv is None:  # immutable: no deepcopy needed (nor a pending copy)
                self._memories[key] = rv
                continue
            cur = self._memories[key]
            if isinstance(rv, torch.Tensor) and isinstance(cur, torch.Tensor) and cur.shape == rv.shape:
                self._memories[key] = rv.detach().clone()
            else:
                self._memories[key] = copy.deepcopy(rv)
        self._set_v_seq(None)

    def detach(self):
        for key, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[key] = value.detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()

    def __getattr__(self, name):
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            return memories[name]
        return nn.Module.__getattr__(self, name)

    def __setattr__(self, name, value):
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            memories[name] = value
        else:
            nn.Module.__setattr__(self, name, value)

    def __delattr__(self, name):
        if name in self._memories:
            del self._memories[name]
            del self._memories_rv[name]
        else:
            nn.Module.__delattr__(self, name)

    def _apply(self, fn, *args, **kwargs):
        for store in (self._memories, self._memories_rv):
            for key, value in store.items():
                if isinstance(value, torch.Tensor):
                    store[key] = fn(value)
        return nn.Module._apply(self, fn, *args, **kwargs)

    def _replicate_for_data_parallel(self):
        replica = nn.Module._replicate_for_data_parallel(self)
        replica._memories = self._memories.copy()
        return replica

    def extra_repr(self):
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}")

    # --- the computation -------------------------------------------------------------------------

    def materialize_states(self, inputs, states, step_mode):
        """SpikingJelly's rule: a float ``v`` becomes a tensor of that value shaped like one
        step of the input; a tensor of another shape restarts at ``v_reset`` (0. for a soft
        reset)."""
        x = inputs[0]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the input must be a torch.Tensor, got {type(x).__name__}")
        if step_mode == "m":
            if x.dim() < 2:
                raise ValueError(f"step_mode='m' takes x_seq of shape [T, N, ...] (time first, at least 2 "
                                 f"dimensions); got shape {tuple(x.shape)}")
            if x.shape[0] == 0:
                raise ValueError(f"x_seq has no time steps (shape {tuple(x.shape)})")
        step_shape = x.shape[1:] if step_mode == "m" else x.shape  # one step's shape (no x[0] view)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        v = states[0]
        if type(v) is float or (isinstance(v, numbers.Real) and not isinstance(v, bool)):
            # A float 0. is the kernels' own zero start (None): no tensor to fill and read back.
            v = float(v)
            v = (None if v == 0.0 and math.copysign(1.0, v) > 0
                 else torch.full(step_shape, v, dtype=dtype, device=x.device))
        elif isinstance(v, torch.Tensor):
            if v.shape != step_shape:
                v = torch.full(step_shape, self.v_reset if self.v_reset is not None else 0.0, dtype=dtype,
                               device=x.device)
            elif v.dtype != dtype or v.device != x.device:
                v = v.to(dtype=dtype, device=x.device)
        else:
            raise TypeError(f"the membrane v must be a number or a tensor, got {type(v).__name__}")
        return (v, *states[1:])

    def _k(self, x):
        raise NotImplementedError

    def _run(self, x, v, single_step):
        """``(spikes, voltages)``: the voltages after every step (x's shape)."""
        spike_fn, sg = _surrogate_mod.resolve_spikingjelly(self.surrogate_function)
        hard = self.v_reset is not None
        leak, k = self._leak, self._k(x)
        if leak == LEAK_DIVIDE and _is_power_of_two(k):
            # y / 2**n and y * 2**-n round the same exact value: the same bits, without a division
            leak, k = LEAK_MULTIPLY, 1.0 / k
        params = [k, self.v_threshold, self.v_reset if hard else 0.0]
        if x.dtype == torch.float64:  # SpikingJelly's Python floats stay doubles in fp64 arithmetic
            params = [p if isinstance(p, torch.Tensor) else torch.tensor(p, dtype=torch.float64) for p in params]
        options = dict(leak=leak, decay_input=int(bool(self.decay_input)), hard_reset=int(hard),
                       detach_reset=int(bool(self.detach_reset)))
        spk, v_seq = run_family(SJ_LIF, x, (v,), params, single_step=single_step, options=options,
                                spike_fn=spike_fn, surrogate=sg, backend=self.backend)
        return spk, v_seq

    def single_step_functional_forward(self, inputs, states, **kwargs):
        spike, v = self._run(inputs[0], states[0], single_step=True)
        return (spike,), (v, *states[1:])

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        spikes, v_seq = self._run(inputs[0], states[0], single_step=False)
        return (spikes,), (v_seq[-1], *states[1:])

    def functional_forward(self, inputs, states, **kwargs):
        states = self.materialize_states(inputs, states, self.step_mode)
        if self.step_mode == "s":
            return self.single_step_functional_forward(inputs, states, **kwargs)
        return self.multi_step_functional_forward(inputs, states, **kwargs)

    def single_step_forward(self, x, *args, **kwargs):
        (v,) = self.materialize_states((x,), tuple(self._memories.values()), "s")
        spike, v = self._run(x, v, single_step=True)
        self._memories["v"] = v
        if self.store_v_seq:
            step = v.unsqueeze(0)
            seq = self.v_seq
            if seq is None or seq.shape[1:] != step.shape[1:] or seq.device != step.device or seq.dtype != step.dtype:
                self.v_seq = step.clone()
            else:
                self.v_seq = torch.cat((seq, step))
        return spike

    def multi_step_forward(self, x_seq, *args, **kwargs):
        (v,) = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        spikes, v_seq = self._run(x_seq, v, single_step=False)
        self._memories["v"] = _PendingLastStep(v_seq)  # v_seq[-1].clone() when first read
        self._set_v_seq(v_seq if self._store_v_seq else None)
        return spikes

    def forward(self, *args, **kwargs):
        if self.step_mode == "s":
            return self.single_step_forward(*args, **kwargs)
        return self.multi_step_forward(*args, **kwargs)


def _is_power_of_two(k):
    """``k`` a float 2**n whose reciprocal is a normal number in fp32 too (fp32 kernels round
    the parameters to fp32)."""
    return isinstance(k, float) and math.frexp(k)[0] == 0.5 and 1.0 < k <= 2.0 ** 64


def _check_tau(tau, name):
    tau = _number(tau, name)
    if not tau > 1.0:
        raise ValueError(f"{name} must be greater than 1 (SpikingJelly's condition), got {tau}")
    return tau


class LIFNode(_Node, *_sj_bases("LIFNode")):
    """SpikingJelly 2.0's ``LIFNode``: ``H = V + (X - (V - V_reset)) / tau`` (``decay_input``)
    or ``H = V - (V - V_reset) / tau + X``; spike ``H >= v_threshold``; then a hard reset to
    ``v_reset``, or a soft one (``v_reset=None``) that subtracts ``v_threshold``. ``backend``
    (fastlif's: ``'auto'``, ``'cpp'``, ``'reference'``) chooses what runs it."""

    _leak = LEAK_DIVIDE

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate_function=surrogate.Sigmoid(), detach_reset=False, step_mode="s",
                 store_v_seq=False, backend="auto"):
        tau = _check_tau(tau, "tau")
        _Node.__init__(self, v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                       backend)
        self.tau = tau
        self.decay_input = decay_input

    def _k(self, x):
        return _check_tau(self.tau, "tau")

    def extra_repr(self):
        return _Node.extra_repr(self) + f", tau={self.tau}"


class ParametricLIFNode(_Node, *_sj_bases("ParametricLIFNode")):
    """SpikingJelly 2.0's ``ParametricLIFNode``: ``LIFNode`` with ``1/tau`` learnt as
    ``sigmoid(w)``, ``w`` an ``nn.Parameter`` starting at ``-log(init_tau - 1)``:
    ``H = V + (X - (V - V_reset)) * sigmoid(w)`` (``decay_input``) or
    ``H = V - (V - V_reset) * sigmoid(w) + X``."""

    _leak = LEAK_MULTIPLY

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate_function=surrogate.Sigmoid(), detach_reset=False, step_mode="s",
                 store_v_seq=False, backend="auto"):
        init_tau = _check_tau(init_tau, "init_tau")
        _Node.__init__(self, v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                       backend)
        self.decay_input = decay_input
        self.w = nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))

    def _k(self, x):
        w = self.w  # SpikingJelly: w.float().sigmoid() (fp64 w: w.sigmoid(), rounded where it meets fp32)
        return w.sigmoid() if w.dtype == torch.float64 else w.float().sigmoid()

    def extra_repr(self):
        with torch.no_grad():
            tau = 1.0 / self.w.sigmoid()
        return _Node.extra_repr(self) + f", tau={tau}"
