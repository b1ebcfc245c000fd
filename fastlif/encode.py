"""Rate coding: turn images (values in [0, 1]) into Poisson spike trains.

:func:`poisson` is the tutorial's ``poisson_encode`` (section 3): every pixel value ``x``
becomes, at each of ``num_steps`` time steps, an independent Bernoulli trial with
probability ``p = min(x * max_rate_hz * dt, 1)``. Given a ``torch.Generator`` in a given
state it returns exactly the tutorial's spikes (same ``torch.rand`` call, same operation
order), so a ported notebook produces the same numbers.

One deliberate difference, when ``rng`` is None: the tutorial builds a *fresh*
``torch.Generator`` inside the function, which always starts from the same default seed,
so every call with the same shape returns the same spike pattern and the "re-draw the
Poisson realisation every epoch" augmentation its text describes never happens. Here
``rng=None`` draws from torch's global generator instead (seeded by ``torch.manual_seed``),
so repeated calls give fresh realisations, as the tutorial intends.
"""
import numbers

import torch

__all__ = ["poisson"]


def poisson(images, num_steps, max_rate_hz=100.0, dt=1e-3, rng=None):
    """Encode images into Poisson spike trains.

    Args:
        images: ``[B, *]`` tensor with values in [0, 1] (e.g. ``[B, 1, 28, 28]`` or ``[B, N]``).
        num_steps: number of time steps ``T`` (an integer >= 0).
        max_rate_hz: firing rate of a pixel equal to 1.0, in Hz.
        dt: duration of one time step, in seconds.
        rng: a ``torch.Generator`` on ``images``' device, for reproducible spikes; None draws
            from torch's global generator (see the module docstring).

    Returns:
        ``[T, B, N]`` bool tensor on ``images``' device, ``N`` the number of values per image.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise TypeError(f"num_steps must be an integer, got {num_steps!r}")
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if images.dim() < 2:
        raise ValueError(f"images must be [B, ...] with a batch dimension, got shape "
                         f"{tuple(images.shape)}")
    if rng is not None and not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator or None, got {type(rng).__name__}")

    B = images.size(0)
    flat = images.reshape(B, -1)          # the tutorial's view(B, -1), also for non-contiguous input
    N = flat.size(1)

    lam = flat * max_rate_hz               # [B, N], same operation order as the tutorial
    p = torch.clamp(lam * dt, 0.0, 1.0)    # [B, N]

    # T independent Bernoulli trials per pixel: the tutorial's exact draw
    rand = torch.rand((int(num_steps), B, N), generator=rng, device=images.device)
    return rand < p                        # [T, B, N], bool
