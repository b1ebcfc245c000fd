"""snnTorch's ``Lapicque``: an RC circuit's membrane, ``m' = ((x*R)*(1/(R*C)))*ts +
(1 - ts/(R*C))*m``, with snnTorch's resets. C++ step: ``csrc/families/lapicque.cpp``; Triton
step: ``kernels/lapicque.py``."""
from .. import backends
from ..family import Family, cpp_bwd, cpp_fwd, register
from ..codes import RESET_MECHANISMS
from .snntorch_fire import fire


def step(x, states, params, options, spike_fn, **reference_options):
    """snnTorch 0.9.4 / 1.0 ``Lapicque.forward``, one step: ``k1 = 1/(R*C)`` and
    ``k2 = 1 - ts/(R*C)`` come computed by torch, as snnTorch computes them."""
    (mem,) = states
    R, k1, ts, k2, threshold, graded = params
    reset = spike_fn(mem - threshold).detach()
    base = x * R * k1 * ts + k2 * mem
    mechanism = RESET_MECHANISMS[options["reset_mode"]]
    if mechanism == "subtract":
        mem = base - reset * threshold
    elif mechanism == "zero":
        mem = base - reset * base
    else:
        mem = base
    quant = reference_options.get("state_quant")  # the reference loop's options (snntorch_fire.py)
    if quant:
        mem = quant(mem)
    return fire(mem, threshold, graded, spike_fn, reference_options), (mem,)


def example(L, generator, dtype):
    """Per-neuron R and C, a scalar time step; k1 and k2 as the module computes them."""
    import torch
    R = torch.rand(L, generator=generator, dtype=dtype) * 1.5 + 0.5
    C = torch.rand(L, generator=generator, dtype=dtype) * 2 + 1
    ts = torch.tensor(1.0, dtype=dtype)
    threshold = torch.rand(L, generator=generator, dtype=dtype) * 0.5 + 0.75
    return R, 1 / (R * C), ts, 1 - (ts / (R * C)), threshold, torch.tensor(1.0, dtype=dtype)


LAPICQUE = register(Family(
    name="lapicque", states=("mem",),
    params=("R", "inv_RC", "time_step", "decay", "threshold", "graded_spikes_factor"),
    options=("reset_mode",), choices=((0, 1, 2),), step=step, example=example))

backends.register_cpp(LAPICQUE.name, cpp_fwd, cpp_bwd)
