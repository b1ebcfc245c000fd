"""snnTorch's ``Synaptic``: a synaptic current decaying with alpha feeds a membrane decaying
with beta. C++ step: ``csrc/families/synaptic.cpp``; Triton step: ``kernels/synaptic.py``.
Backward rebuilds each step from the states alone (x is not kept)."""
import torch

from .. import backends, surrogate as surrogate_mod
from ..codes import RESET_MECHANISMS, reset_code
from ..family import Family, cpp_bwd, cpp_fwd, register, run_family
from ..reference import synaptic_step


def step(x, states, params, options, spike_fn, **reference_options):
    syn, mem = states
    alpha, beta, threshold, graded = params
    spk, syn, mem = synaptic_step(x, syn, mem, alpha, beta, threshold, graded, spike_fn,
                                  RESET_MECHANISMS[options["reset_mode"]], not options["immediate"],
                                  **reference_options)
    return spk, (syn, mem)


def example(L, generator, dtype):
    rand = (lambda lo, hi: torch.rand(L, generator=generator, dtype=dtype) * (hi - lo) + lo)  # noqa: E731
    return rand(-0.05, 1.1), rand(-0.05, 1.1), rand(0.75, 1.25), rand(0.5, 1.5)


def backward_reads(options, param_grads):
    """The current's sequence only for alpha's gradient or an immediate reset (csrc/families/
    synaptic.h): a delayed reset's backward takes u from the membrane alone, as the hand-written
    kernel before the spec did, so forward keeps 4 bytes per neuron-step in fp32, not 8."""
    immediate, alpha_grad = options[1], param_grads[0]
    return (bool(immediate or alpha_grad), True)


SYNAPTIC = register(Family(
    name="synaptic", states=("syn", "mem"), params=("alpha", "beta", "threshold", "graded_spikes_factor"),
    options=("reset_mode", "immediate"), choices=((0, 1, 2), (0, 1)), clamped=("alpha", "beta"),
    needs_x=False, step=step, example=example, backward_reads=backward_reads))

backends.register_cpp(SYNAPTIC.name, cpp_fwd, cpp_bwd)


def run_synaptic(x, syn, mem, alpha, beta, threshold, graded, *, single_step, reset_mode, reset_delay, spike_fn,
                 surrogate, backend, reference_options=None):
    """The call the Synaptic module and :func:`synaptic_sequence` make: ``(spk, syn, mem)``
    shaped like ``x``, the states in the compute dtype."""
    immediate = not reset_delay and reset_mode != 2
    return run_family(SYNAPTIC, x, (syn, mem), (alpha, beta, threshold, graded), single_step=single_step,
                      options=dict(reset_mode=reset_mode, immediate=immediate), spike_fn=spike_fn,
                      surrogate=surrogate, backend=backend, reference_options=reference_options)


def synaptic_sequence(x_seq, alpha, beta, threshold=1.0, *, syn=None, mem=None, reset_mechanism="subtract",
                      reset_delay=True, surrogate=None, graded_spikes_factor=1.0, backend="auto"):
    """snnTorch's ``Synaptic`` over the leading time dimension of ``x_seq`` ``[T, ...]``, fused.

    Returns ``(spk_seq, syn_seq, mem_seq)`` shaped like ``x_seq`` (the states in fp32 for
    fp16/bf16 input). ``alpha``, ``beta`` (both clamped to [0, 1]), ``threshold`` and
    ``graded_spikes_factor`` are scalars or one value per neuron along the last dimension;
    gradients flow to those that require grad, to ``x_seq``, ``syn`` and ``mem``."""
    spike_fn, sg = surrogate_mod.resolve(surrogate)
    return run_synaptic(x_seq, syn, mem, alpha, beta, threshold, graded_spikes_factor, single_step=False,
                        reset_mode=reset_code(reset_mechanism), reset_delay=reset_delay, spike_fn=spike_fn,
                        surrogate=sg, backend=backend)
