"""SpikingJelly 2.0's ``LIFNode`` and ``ParametricLIFNode`` as one family: the same charge, fire
and reset, with the leak divided by ``tau`` (LIF) or multiplied by ``q = sigmoid(w)`` (PLIF), as
SpikingJelly writes each. C++ step: ``csrc/families/sj_lif.cpp``. The modules:
:mod:`fastlif.spikingjelly`.

Parameters: ``k`` (``tau``, or ``q`` computed by torch from ``w``), ``v_threshold``, ``v_reset``
(0 for a soft reset, where SpikingJelly's charge uses 0 too). Options: ``leak``
(:data:`LEAK_DIVIDE`, :data:`LEAK_MULTIPLY`), ``decay_input``, ``hard_reset``, ``detach_reset``
(each 0 or 1).
"""
from .. import backends
from ..family import Family, cpp_bwd, cpp_fwd, register

LEAK_DIVIDE, LEAK_MULTIPLY = 0, 1


def step(x, states, params, options, spike_fn, **reference_options):
    """One step in SpikingJelly 2.0's operation order: ``charge`` of ``_ops/lif/reference.py``
    (or ``_ops/plif/reference.py``'s ``h``), ``spike = surrogate(h - threshold)``, and
    ``_ops/reset.py``'s ``voltage``."""
    if reference_options:
        raise ValueError(f"sj_lif has no reference options; got {sorted(reference_options)}")
    (v,) = states
    k, threshold, v_reset = params
    hard = bool(options["hard_reset"])
    r = v_reset if hard else 0.0
    if options["leak"] == LEAK_DIVIDE:
        h = v + (x - (v - r)) / k if options["decay_input"] else v - (v - r) / k + x
    else:
        h = v + (x - (v - r)) * k if options["decay_input"] else v - (v - r) * k + x
    spike = spike_fn(h - threshold)
    s = spike.detach() if options["detach_reset"] else spike
    v = s * r + (1.0 - s) * h if hard else h - s * threshold
    return spike, (v,)


def example(L, generator, dtype):
    import torch
    rand = (lambda lo, hi: torch.rand(L, generator=generator, dtype=dtype) * (hi - lo) + lo)  # noqa: E731
    return rand(0.6, 2.5), rand(0.75, 1.25), rand(-0.3, 0.3)


SJ_LIF = register(Family(
    name="sj_lif", states=("v",), params=("k", "v_threshold", "v_reset"),
    options=("leak", "decay_input", "hard_reset", "detach_reset"), choices=((0, 1),) * 4, step=step,
    example=example, surrogates=("sj_sigmoid", "sj_atan"),
    doc="SpikingJelly's LIFNode (leak=0: / tau) and ParametricLIFNode (leak=1: * sigmoid(w))"))

backends.register_cpp(SJ_LIF.name, cpp_fwd, cpp_bwd)
