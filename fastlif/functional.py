"""``lif_sequence``: the fused LIF over a whole sequence, and the checks in front of it."""
import numbers

import torch

from . import backends, surrogate as surrogate_mod
from .ops import RESET_CODES, compute_dtype, lif_forward
from .reference import lif_sequence_reference


def check_reset_mechanism(reset_mechanism):
    if reset_mechanism not in RESET_CODES:
        raise ValueError(f"unknown reset_mechanism {reset_mechanism!r}; expected one of "
                         f"{', '.join(map(repr, RESET_CODES))}")
    return RESET_CODES[reset_mechanism]


def _check_param(value, name, n_last):
    """A scalar or per-neuron (last dimension) parameter, as given (a number or a tensor)."""
    if isinstance(value, numbers.Number):
        return value
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.numel() != 1 and (value.dim() != 1 or value.shape[0] != n_last):
        raise ValueError(f"{name} must be a scalar or hold one value per neuron along the last "
                         f"dimension ({n_last}); got shape {tuple(value.shape)}")
    return value


def _as_param(value, device):
    """A parameter that passed :func:`_check_param`, as a tensor on ``device``."""
    if isinstance(value, numbers.Number):
        return torch.full((), float(value), device=device)  # a fill, so CUDA graphs can capture it
    return value.to(device)


def _check_sequence(x_seq, mem):
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, ...neurons] with at least 2 dimensions (time first); "
                         f"got shape {tuple(x_seq.shape)}. For one step use Leaky(...)(x, mem).")
    if mem is not None and tuple(mem.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(f"mem (the initial membrane) must have shape {tuple(x_seq.shape[1:])} "
                         f"(x_seq without its time dimension); got {tuple(mem.shape)}")


def lif_sequence(x_seq, beta, threshold=1.0, *, mem=None, reset_mechanism="subtract",
                 reset_delay=True, surrogate=None, graded_spikes_factor=1.0, backend="auto",
                 low_memory=False):
    """snnTorch's ``Leaky`` over the leading time dimension of ``x_seq`` ``[T, ...]``, fused.

    Returns ``(spk_seq, mem_seq)``, both shaped like ``x_seq``. ``beta`` (clamped to [0, 1]),
    ``threshold`` and ``graded_spikes_factor`` are scalars or tensors with one value per
    neuron along the last dimension; gradients flow to them when they require grad, to
    ``x_seq`` and to ``mem``. ``surrogate`` is a ``fastlif.surrogate`` (default atan), an
    snnTorch surrogate, or any callable (which runs on the reference backend).
    ``low_memory`` keeps the saved membrane in bf16 (triton backend only).
    """
    _check_sequence(x_seq, mem)
    n_last = x_seq.shape[-1]  # checked before dispatch, so every backend names a misfit
    beta = _check_param(beta, "beta", n_last)
    threshold = _check_param(threshold, "threshold", n_last)
    graded_spikes_factor = _check_param(graded_spikes_factor, "graded_spikes_factor", n_last)
    reset_mode = check_reset_mechanism(reset_mechanism)
    spike_fn, sg = surrogate_mod.resolve(surrogate)
    if not x_seq.is_floating_point():  # bool / integer spike trains, as snnTorch accepts them
        x_seq = x_seq.to(torch.get_default_dtype())
    name = backends.select(backend, x_seq.device.type) if sg is not None else "reference"
    if name == "reference":
        if backend not in ("auto", "reference") and sg is None:
            raise backends.BackendUnavailable(
                f"backend={backend!r} cannot run the surrogate {spike_fn!r}; use one of "
                f"fastlif.surrogate's or snnTorch's built-in surrogates, or backend='reference'")
        return lif_sequence_reference(x_seq, beta, threshold, mem=mem,
                                      reset_mechanism=reset_mechanism, reset_delay=reset_delay,
                                      spike_fn=spike_fn, graded_spikes_factor=graded_spikes_factor)
    T = x_seq.shape[0]
    dev, dtype = x_seq.device, compute_dtype(x_seq.dtype)
    params = [_as_param(v, dev) for v in (beta, threshold, graded_spikes_factor)]
    params[0] = params[0].clamp(0, 1)  # as snnTorch: beta outside [0, 1] gets no gradient
    params = [p.to(dtype).reshape(-1) for p in params]
    if x_seq.numel() == 0:  # T == 0 or an empty batch: nothing to run
        return x_seq * 0, x_seq * 0
    x3 = x_seq.contiguous().view(T, -1, n_last)
    mem0 = None if mem is None else mem.to(dtype).contiguous().view(-1)
    spk, mem_seq, _, _ = lif_forward(x3, mem0, *params, reset_mode, bool(reset_delay), sg.kind,
                                 float(sg.param), bool(low_memory), name)
    return spk.view(x_seq.shape), mem_seq.view(x_seq.shape)

