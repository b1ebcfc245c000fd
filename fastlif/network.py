"""``fastlif.sequence``: a per-step network over a whole sequence in one call, fused.

snnTorch teaches networks as per-step modules driven by a loop over time::

    utils.reset(net)
    out = torch.stack([net(x[t]) for t in range(T)])      # or net(x) T times, static input

``sequence(net, x)`` returns exactly what that loop stacks, but runs each stateless layer once
over the time-folded batch ``[T*B, ...]`` (a stateless prefix fed a static input once in all)
and each neuron once over ``[T, B, ...]`` with its fused op. It walks ``nn.Sequential``
containers (nested too); what it cannot run exactly it refuses, naming the module. See
api.md, "Whole sequences: fastlif.sequence".
"""
import weakref

import torch
from torch import nn

from .layers import SpikeLinear
from .ops.spike_linear import NARROW_OUT
from .neuron_base import SpikingNeuron, _snntorch

__all__ = ["sequence"]

# torch.nn's layers that act on each sample of a batch on its own and keep nothing between calls:
# folding time into the batch gives them the same work. Identified by the module that defines them.
_PER_SAMPLE_NAMESPACES = tuple(f"torch.nn.modules.{m}" for m in (
    "conv", "linear", "pooling", "dropout", "batchnorm", "normalization", "instancenorm",
    "activation", "flatten", "padding", "pixelshuffle", "upsampling", "channelshuffle", "fold",
    "sparse"))
# ... except those whose per-step result depends on the step: their statistics or masks.
_STEPWISE_IN_TRAINING = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
# torch.nn layers with a dimension argument that would act across the folded batch at 0
_DIM_ATTRS = ("dim", "start_dim")


class SequenceError(TypeError):
    """``fastlif.sequence`` cannot run this network exactly; the message names the module."""


def sequence(net, x, num_steps=None, *, per_step_stats=False, event_driven=False):
    """Run the per-step network ``net`` over a whole sequence; return what snnTorch's loop stacks.

    ``x`` is ``[T, B, ...]`` (a new input each step), or ``[B, ...]`` with ``num_steps=T`` (the
    same input every step, as snnTorch's tutorial 6 feeds an image). The result is a tensor
    ``[T, B, ...]``, or a tuple of them when the network's last module returns a tuple per step
    (a neuron with ``output=True`` or ``init_hidden=False``: ``(spk, mem)``, Synaptic's
    ``(spk, syn, mem)``).

    Every neuron starts from a reset (zero) state, as after ``snntorch.utils.reset(net)``, and
    is left holding its final state, as the loop leaves it. Gradients reach every parameter and
    ``x``; under ``torch.no_grad()`` nothing is kept for backward.

    ``per_step_stats=True`` runs BatchNorm and Dropout layers in training mode one step at a time,
    as the loop does (BatchNorm normalises each step with that step's batch statistics and
    updates its running statistics T times; Dropout draws a mask per step). By default they run
    once over the folded batch: BatchNorm's statistics then pool all T steps and its running
    statistics update once; Dropout's masks are drawn per (step, sample), the same law.

    ``event_driven=True`` runs each ``nn.Conv2d``, and each ``nn.Linear`` with at least 64
    outputs, on the time-varying path (fed by the input sequence or a neuron) as its event-driven
    twin, :class:`fastlif.SpikeConv2d` / :class:`fastlif.SpikeLinear`, sharing its parameters
    (results within fp32 summation order). The twins visit only the non-zero inputs and run the
    dense op themselves above 25 % non-zeros; a narrower Linear stays a dense GEMM (cheaper).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"fastlif.sequence: net must be an nn.Module, got {type(net).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fastlif.sequence: x must be a torch.Tensor, got {type(x).__name__}")
    if num_steps is None:
        if x.dim() < 2:
            raise ValueError(f"fastlif.sequence: x must be [T, B, ...] (time first), got shape "
                             f"{tuple(x.shape)}; for a static input [B, ...] pass num_steps=T")
        T = x.shape[0]
        h = _Folded(x.reshape(T * x.shape[1], *x.shape[2:]) if T else x.reshape(0, *x.shape[2:]), T, x.shape[1])
    else:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"fastlif.sequence: num_steps must be a positive int, got {num_steps!r}")
        T = num_steps
        h = _Static(x, T)
    runner = _Runner(T, per_step_stats, event_driven)
    runner.check(net, "net", top=True)
    out = runner.run(net, h, "net", last=True)
    return out.result() if not isinstance(out, tuple) else tuple(o.result() for o in out)


class _Static:
    """The same tensor at every step (not yet copied over T)."""

    def __init__(self, t, T):
        self.t, self.T = t, T

    def seq(self):  # [T, B, ...]: a broadcast view, no copy
        return self.t.unsqueeze(0).expand(self.T, *self.t.shape)

    def result(self):
        return self.seq().contiguous()


class _Folded:
    """A time-varying tensor, time folded into the batch: ``[T*B, ...]``."""

    def __init__(self, t, T, B):
        self.t, self.T, self.B = t, T, B

    @classmethod
    def from_seq(cls, seq):
        T, B = seq.shape[0], seq.shape[1] if seq.dim() > 1 else 1
        return cls(seq.reshape(T * B, *seq.shape[2:]), T, B)

    def seq(self):
        return self.t.reshape(self.T, self.B, *self.t.shape[1:])

    def result(self):
        return self.seq()


_twins = weakref.WeakKeyDictionary()  # nn.Linear / nn.Conv2d -> its event-driven twin


def _event_twin(module):
    twin = _twins.get(module)
    if twin is None:
        if isinstance(module, nn.Linear) and not isinstance(module, SpikeLinear):
            twin = SpikeLinear.from_linear(module)
        else:
            from . import layers
            spike_conv = getattr(layers, "SpikeConv2d", None)
            if spike_conv is None or not isinstance(module, nn.Conv2d) or isinstance(module, spike_conv):
                return module
            twin = spike_conv.from_conv(module)
        _twins[module] = twin
    return twin


class _Runner:
    def __init__(self, T, per_step_stats, event_driven):
        self.T, self.per_step_stats, self.event_driven = T, per_step_stats, event_driven

    # --- what can run: checked before anything runs, so a refused network changes nothing -------
    def check(self, module, path, top=False, last=True):
        kind = _kind(module)
        if kind == "sequential":
            children = list(module.named_children())
            for i, (name, child) in enumerate(children):
                self.check(child, f"{path}.{name}", last=last and i == len(children) - 1)
            return
        if kind == "neuron":
            if _returns_tuple(module) and not last:
                raise SequenceError(
                    f"fastlif.sequence: {path} ({type(module).__name__}) returns a tuple each step "
                    f"({'output=True' if module.output else 'init_hidden=False'}), which the next "
                    f"module of the per-step network cannot take either; only the last module may "
                    f"(use init_hidden=True, output=False inside the network)")
            return
        if kind == "stateless":
            return
        raise SequenceError(_refusal(module, path, kind))

    # --- running ----------------------------------------------------------------------------------
    def run(self, module, h, path, last=True):
        kind = _kind(module)
        if kind == "sequential":
            children = list(module.named_children())
            for i, (name, child) in enumerate(children):
                h = self.run(child, h, f"{path}.{name}", last=last and i == len(children) - 1)
            return h
        if isinstance(h, tuple):  # a tuple reaching a module: check() only lets it end the net
            raise SequenceError(f"fastlif.sequence: {path} receives a tuple")
        if kind == "neuron":
            return self._neuron(module, h)
        return self._stateless(module, h)

    def _stateless(self, module, h):
        stepwise = module.training and isinstance(module, _STEPWISE_IN_TRAINING)
        if isinstance(h, _Static):
            if not stepwise:
                return _Static(module(h.t), self.T)  # once in total: the same output every step
            h = _Folded.from_seq(h.seq().contiguous())  # a mask or statistics per step
        if stepwise and self.per_step_stats:
            seq = h.seq()
            return _Folded.from_seq(torch.stack([module(seq[t]) for t in range(self.T)]))
        if self.event_driven and _worth_twinning(module):
            module = _event_twin(module)
        return _Folded(module(h.t), h.T, h.B)

    def _neuron(self, neuron, h):
        x_seq = h.seq()
        outputs = neuron._sequence_from_reset(x_seq)
        if isinstance(outputs, tuple):
            return tuple(_Folded.from_seq(o) for o in outputs)
        return _Folded.from_seq(outputs)


# A Linear narrower than NARROW_OUT is cheaper as a dense GEMM than as a pass over its input's
# events (tutorial 5's 1000 -> 10 and TinySNN's 128 -> 10 ran slower as twins: bench_networks);
# SpikeLinear's own auto path draws the same line (fastlif.ops.spike_linear.NARROW_OUT).


def _worth_twinning(module):
    """Whether an event-driven twin should run ``module`` on the time-varying path. The twins
    measure their input's density per call and run the dense op above 25 %, so a dense input
    costs them a sample, not a slow path."""
    if isinstance(module, nn.Linear):
        return module.out_features >= NARROW_OUT
    return isinstance(module, nn.Conv2d)


def _returns_tuple(neuron):
    return bool(neuron.output) or not neuron.init_hidden


def _kind(module):
    if type(module) is nn.Sequential:
        return "sequential"
    if isinstance(module, SpikingNeuron):
        return "neuron"
    if _snntorch is not None and isinstance(module, _snntorch.SpikingNeuron):
        return "snntorch-neuron"
    cls_module = type(module).__module__
    if cls_module.startswith(_PER_SAMPLE_NAMESPACES) or cls_module == "fastlif.layers":
        for attr in _DIM_ATTRS:
            if getattr(module, attr, None) == 0:
                return "folds-batch"
        return "stateless"
    if cls_module.startswith("torch.nn"):
        return "torch-other"
    if any(isinstance(m, SpikingNeuron) or (_snntorch is not None and isinstance(m, _snntorch.SpikingNeuron))
           for m in module.modules()):
        return "custom-with-neurons"
    if any(True for _ in module.buffers()):
        return "custom-with-buffers"
    return "stateless"  # a module of the user's own, without neurons or buffers: per sample


def _refusal(module, path, kind):
    name = f"{path} ({type(module).__module__}.{type(module).__name__})"
    if kind == "snntorch-neuron":
        return (f"fastlif.sequence: {name} is an snnTorch neuron; convert the network first with "
                f"net = fastlif.from_snntorch(net) (same settings and parameters; build the optimizer "
                f"after converting), or use fastlif's neurons")
    if kind == "custom-with-neurons":
        return (f"fastlif.sequence: {name} has its own forward around its neurons (it may keep its own "
                f"state or loop over time), which fastlif.sequence cannot fold; write the per-step "
                f"network as nn.Sequential (neurons with init_hidden=True), or call each neuron's "
                f".sequence(x_seq) in your forward")
    if kind == "custom-with-buffers":
        return (f"fastlif.sequence: {name} holds buffers, which may be state carried from step to "
                f"step that folding time into the batch would break; fastlif.sequence runs "
                f"nn.Sequential networks of torch.nn layers, stateless modules and fastlif neurons")
    if kind == "folds-batch":
        return (f"fastlif.sequence: {name} acts along dimension 0, the batch, which holds T*B samples "
                f"once time is folded into it")
    return (f"fastlif.sequence: {name} is not a layer fastlif.sequence knows to act on each sample "
            f"on its own (recurrent layers carry state across the batch dimension it folds)")
