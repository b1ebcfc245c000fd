"""snnTorch's ``Alpha``: an excitatory and an inhibitory synaptic current (decaying with alpha
and beta, fed +x and -x) whose sum, scaled by ``tau_alpha = log(alpha)/(log(beta) -
log(alpha)) + 1``, is the membrane; with snnTorch's resets, quirks included. C++ step:
``csrc/families/alpha.cpp``.

``tau_alpha`` is a parameter of the family, computed by torch from the clamped alpha and beta
(:func:`tau_alpha`) as snnTorch computes it, so that the kernels see the very value snnTorch
multiplies by (a C++ ``log`` may differ from torch's by an ulp); its gradient reaches alpha and
beta through torch's autograd.
"""
import torch

from .. import backends
from ..codes import RESET_MECHANISMS
from ..family import Family, cpp_bwd, cpp_fwd, register
from .snntorch_fire import fire


def tau_alpha(alpha, beta):
    """snnTorch's ``tau_alpha``, in its operation order, from the unclamped alpha and beta."""
    alpha, beta = torch.as_tensor(alpha), torch.as_tensor(beta)
    return torch.log(alpha.clamp(0, 1)) / (torch.log(beta.clamp(0, 1)) - torch.log(alpha.clamp(0, 1))) + 1


def step(x, states, params, options, spike_fn, **reference_options):
    """snnTorch 0.9.4 / 1.0 ``Alpha.forward``, one step (alpha and beta come clamped, tau_alpha
    computed from them): the reset flag from the previous membrane; subtract resets syn_exc by
    the threshold, syn_inh to zero and adds ``syn_inh * reset`` of the *previous* syn_inh to the
    membrane (snnTorch's ``mem -= -self.syn_inh * reset``); zero resets all three to zero.
    ``reference_options`` may hold the reference loop's ``state_quant`` and ``inhibition``."""
    syn_exc, syn_inh, mem = states
    alpha, beta, tau, threshold, graded = params
    reset = spike_fn(mem - threshold).detach()
    base_exc = alpha * syn_exc + x
    base_inh = beta * syn_inh - x
    base_mem = tau * (base_exc + base_inh)
    mechanism = RESET_MECHANISMS[options["reset_mode"]]
    if mechanism == "subtract":
        new_exc = base_exc - threshold * reset
        new_inh = base_inh - (beta * syn_inh - x) * reset
        new_mem = base_mem - (-syn_inh) * reset
    elif mechanism == "zero":
        new_exc = base_exc - (alpha * syn_exc + x) * reset
        new_inh = base_inh - (beta * syn_inh - x) * reset
        new_mem = base_mem - (tau * ((alpha * syn_exc + x) + (beta * syn_inh - x))) * reset
    else:
        new_exc, new_inh, new_mem = base_exc, base_inh, base_mem
    quant = reference_options.get("state_quant")
    if quant:
        new_exc, new_inh, new_mem = quant(new_exc), quant(new_inh), quant(new_mem)
    return fire(new_mem, threshold, graded, spike_fn, reference_options), (new_exc, new_inh, new_mem)


def example(L, generator, dtype):
    """Per-neuron alpha > beta (snnTorch requires it), tau_alpha from them."""
    beta = torch.rand(L, generator=generator, dtype=dtype) * 0.5 + 0.2
    alpha = beta + torch.rand(L, generator=generator, dtype=dtype) * 0.2 + 0.15  # tau_alpha 1.5-4
    threshold = torch.rand(L, generator=generator, dtype=dtype) * 0.5 + 0.75
    return alpha, beta, tau_alpha(alpha, beta), threshold, torch.rand(L, generator=generator, dtype=dtype) + 0.5


ALPHA = register(Family(
    name="alpha", states=("syn_exc", "syn_inh", "mem"),
    params=("alpha", "beta", "tau_alpha", "threshold", "graded_spikes_factor"),
    options=("reset_mode",), choices=((0, 1, 2),), clamped=("alpha", "beta"), step=step, example=example))

backends.register_cpp(ALPHA.name, cpp_fwd, cpp_bwd)
