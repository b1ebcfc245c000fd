"""SpikingJelly 2.0's ``LIFNode`` and ``ParametricLIFNode`` as one family: the same charge, fire
and reset, with the leak divided by ``tau`` (LIF) or multiplied by ``q = sigmoid(w)`` (PLIF), as
SpikingJelly writes each. C++ step: ``csrc/families/sj_lif.h``. The modules:
:mod:`fastlif.spikingjelly`.

Parameters: ``k`` (``tau``, or ``q`` computed by torch from ``w``), ``v_threshold``, ``v_reset``
(0 for a soft reset, where SpikingJelly's charge uses 0 too). Options: ``leak``
(:data:`LEAK_DIVIDE`, :data:`LEAK_MULTIPLY`), ``decay_input``, ``hard_reset``, ``detach_reset``
(each 0 or 1).
"""
from .. import backends
from ..family import Family, cpp_bwd, cpp_fwd, register

LEAK_DIVIDE, LEAK_MULTIPLY = 0, 1


def step(x, states, params, options, spike_fn):
    """One step in SpikingJelly 2.0's operation order: ``charge`` of ``_ops/lif/reference.py``
    (or ``_ops/plif/reference.py``'s ``h``), ``spike = surrogate(h - threshold)``, and
    ``_ops/reset.py``'s ``voltage``."""
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


SJ_LIF = register(Family(
    name="sj_lif", states=("v",), params=("k", "v_threshold", "v_reset"),
    options=("leak", "decay_input", "hard_reset", "detach_reset"), step=step,
    doc="SpikingJelly's LIFNode (leak=0: / tau) and ParametricLIFNode (leak=1: * sigmoid(w))"))

backends.register_cpp(SJ_LIF.name, cpp_fwd, cpp_bwd)
