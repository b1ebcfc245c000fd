"""Rate coding: turn images (values in [0, 1]) into Poisson spike trains.

:func:`poisson` encodes every pixel value ``x`` as, at each of ``num_steps`` time steps, an
independent Bernoulli trial with probability ``p = clamp(x * max_rate_hz * dt, 0, 1)``, in one
of two ways:

* ``method="tutorial"`` (the default) is the tutorial's ``poisson_encode`` (section 3): given a
  ``torch.Generator`` in a given state it returns exactly the tutorial's spikes (same
  ``torch.rand`` call, same operation order), so a ported notebook produces the same numbers.
* ``method="fast"`` draws the same law with work in proportion to the pixels and the spikes
  rather than to T x B x N (geometric skips between a pixel's spikes, fused C++ on the CPU,
  :mod:`fastlif.ops.poisson`): at the tutorial's size (B=64, T=50, 784 pixels) some 30-45x
  faster than the tutorial's draw on two CPU threads (``python -m bench.bench_encode``). Its
  spikes are other draws of the same distribution, not the tutorial's.

One deliberate difference from the tutorial, when ``rng`` is None: the tutorial builds a
*fresh* ``torch.Generator`` inside the function, which always starts from the same default
seed, so every call with the same shape returns the same spike pattern and the "re-draw the
Poisson realisation every epoch" augmentation its text describes never happens. Here
``rng=None`` draws from torch's global generator instead (seeded by ``torch.manual_seed``),
so repeated calls give fresh realisations, as the tutorial intends.
"""
from .ops.poisson import encode_poisson

__all__ = ["poisson"]


def poisson(images, num_steps, max_rate_hz=100.0, dt=1e-3, rng=None, method="tutorial",
            return_events=False):
    """Encode images into Poisson spike trains: each pixel ``x`` fires at each step independently
    with probability ``p = clamp(x * max_rate_hz * dt, 0, 1)``.

    Args:
        images: ``[B, *]`` tensor with values in [0, 1] (e.g. ``[B, 1, 28, 28]`` or ``[B, N]``);
            NaN or inf raises ValueError.
        num_steps: number of time steps ``T`` (an integer >= 0).
        max_rate_hz: firing rate of a pixel equal to 1.0, in Hz (finite, >= 0).
        dt: duration of one time step, in seconds (finite, >= 0).
        rng: a ``torch.Generator`` on ``images``' device, for reproducible spikes; None draws
            from torch's global generator (see the module docstring).
        method: ``"tutorial"`` (default): the tutorial's draw, spike for spike. ``"fast"``: the
            same law by geometric skips (the gap to a pixel's next spike ~ Geometric(p), by
            inverse transform) in C++ with OpenMP, on CPU tensors; its random numbers come from
            a counter-based generator seeded by one draw from ``rng`` (or the global generator),
            so ``torch.manual_seed`` makes it reproducible and the spikes do not depend on the
            thread count. On CUDA tensors (or without the C++ extension) ``"fast"`` falls back
            to the vectorised torch draw of the same law (``torch.rand(...) < p``, the tutorial's).
        return_events: also return the spikes' :class:`fastlif.events.SpikeEvents` (rows
            ``t * B + b``, columns ascending, values None), as ``fastlif.SpikeLinear`` takes them;
            ``"fast"`` on the CPU builds them in the same pass, with no rescan of the spikes.

    Returns:
        ``[T, B, N]`` bool tensor on ``images``' device, ``N`` the number of values per image;
        with ``return_events``, ``(spikes, events)``.
    """
    return encode_poisson(images, num_steps, max_rate_hz, dt, rng, method, return_events)
