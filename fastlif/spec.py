"""What describes an element-wise neuron family, once (:class:`Family`), and the registry of the
families by name. The bottom of the house: the generic path (:mod:`fastlif.family`) and the
Triton scan (``kernels/scan.py``) both import it; it imports nothing of fastlif's."""
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple


@dataclass(frozen=True)
class Family:
    """What describes an element-wise neuron family, once.

    ``states``: the states carried from step to step, in the kernels' order (each comes back as
    a ``[T, ...]`` sequence). ``spike_state``: the first state is the previous step's spike
    output (a recurrent neuron); it is then not returned twice. ``params``: the per-call
    parameters, each a scalar or one value per neuron along the last dimension; those in
    ``clamped`` are clamped to [0, 1] (with no gradient outside, as snnTorch clamps).
    ``options``: the integer compile-time options, in the kernels' order; ``choices`` the
    values each may take (what the tests cross). ``needs_x``: the backward step reads x (else
    it rebuilds each step from the states alone, and x is not kept for backward). ``step``: the
    reference step ``step(x, states, params, options, spike_fn, **reference_options) -> (spk,
    states)`` in the peer's own operation order (the oracle every kernel is tested against;
    ``reference_options`` are the peer's rarer options, which only it runs). ``surrogates``:
    the ``fastlif.surrogate`` factories its kernels run (what the tests cross). ``example``:
    ``example(L, generator, dtype)`` -> parameters for tests and benchmarks, in the spec's
    order. ``backward_reads``: ``backward_reads(options, param_grads)`` -> one bool per state,
    whether the C++ backward reads that state's saved sequence, given the call's option values
    (in ``options``' order) and whether each parameter needs a gradient; forward keeps only
    those (None: all). The C++ step allows exactly these absences (``may_skip_state``).
    """
    name: str
    states: Tuple[str, ...]
    params: Tuple[str, ...]
    step: Callable
    options: Tuple[str, ...] = ()
    choices: Tuple[Tuple[int, ...], ...] = ()
    clamped: Tuple[str, ...] = ()
    spike_state: bool = False
    needs_x: bool = True
    surrogates: Tuple[str, ...] = ("atan", "fast_sigmoid", "sigmoid", "triangular")
    example: Optional[Callable] = field(default=None, compare=False)
    backward_reads: Optional[Callable] = field(default=None, compare=False)
    doc: str = field(default="", compare=False)


FAMILIES = {}


def register(family):
    """Make ``family`` known by name (the custom ops and the launchers look it up)."""
    if len(family.choices) != len(family.options):
        raise ValueError(f"family {family.name}: give the choices of each of its options {family.options}")
    FAMILIES[family.name] = family
    return family
