"""The Poisson encoder family (:func:`fastlif.encode.poisson`): images to ``[T, B, N]`` bool spike
trains, each (t, b, i) firing independently with ``p = clamp(x[b, i] * max_rate_hz * dt, 0, 1)``.

Two methods draw that law:

* ``"tutorial"`` (the default): the tutorial's ``poisson_encode``, draw for draw: one
  ``torch.rand`` of ``[T, B, N]``, compared with ``p`` (:func:`tutorial_draw`). Work and random
  numbers in proportion to T x B x N; the same spikes as the tutorial's code for a generator in
  the same state.
* ``"fast"``: the C++ kernel (``csrc/poisson.cpp``), geometric skips between a pixel's spikes:
  work in proportion to the pixels and the spikes, random numbers from a counter-based
  SplitMix64 seeded by one draw from the torch generator, so the spikes depend on the seed alone
  (not on the thread count); ``p`` is evaluated in double, ``(x * max_rate_hz) * dt`` (the
  tutorial's, in the images' dtype, differs by a rounding of that dtype). It can also return
  the spikes' :class:`fastlif.events.SpikeEvents` from the same pass. Where the kernel cannot
  run (CUDA tensors, or no built extension) it falls back to :func:`tutorial_draw`: the same
  law, and there the tutorial's very spikes.

Launcher contract (C++)::

    cpp_fwd(x, seed, *, steps, max_rate_hz, dt, events) -> (spikes, indptr, indices)

``x`` is ``[B, N]`` contiguous fp32/fp64 on the CPU, ``seed`` an int in [0, 2^63). ``spikes`` is
``[steps, B, N]`` bool; with ``events``, ``indptr`` ``[steps * B + 1]`` int64 and ``indices``
``[nnz]`` int32 (the CSR of ``spikes`` seen as ``steps * B`` rows of N), else both empty.
Non-finite pixels raise ValueError (checked by the kernel in its pass). There is no backward.
"""
import math
import numbers
from typing import Tuple

import torch
from torch import Tensor

from .. import backends
from ..events import SpikeEvents, from_dense
from .common import CPP_DTYPES, check_tensor, cpp_dtype_code, cpu_empty, num_threads

FAMILY = "poisson"
METHODS = ("tutorial", "fast")


# --- the arguments of a call --------------------------------------------------------------------

def _check_rate(value, name):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def check_args(images, num_steps, max_rate_hz, dt, rng, method):
    """Check a call's arguments (the one place they are checked). Returns ``(flat, steps,
    max_rate_hz, dt)``: ``images`` as ``[B, N]`` (a view where it can be), the rest as int/floats."""
    check_tensor(images, "images")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise TypeError(f"num_steps must be an integer, got {num_steps!r}")
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if images.dim() < 2:
        raise ValueError(f"images must be [B, ...] with a batch dimension, got shape "
                         f"{tuple(images.shape)}")
    if rng is not None and not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator or None, got {type(rng).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(map(repr, METHODS))}")
    rate, dt = _check_rate(max_rate_hz, "max_rate_hz"), _check_rate(dt, "dt")
    # the tutorial's view(B, -1), also for non-contiguous input (and for an empty batch)
    flat = images.reshape(images.size(0), math.prod(images.shape[1:]))
    return flat, int(num_steps), rate, dt


def check_finite(flat):
    """ValueError if a pixel is NaN or inf (the torch paths; the C++ kernel checks in its pass).
    Skipped under torch.compile, where it would break the graph."""
    if flat.is_floating_point() and not torch.compiler.is_compiling() and not bool(torch.isfinite(flat).all()):
        raise ValueError("poisson: images hold a non-finite value (NaN or inf)")


# --- the tutorial's draw: the default method, and the fast method's fallback --------------------

def tutorial_draw(flat, steps, max_rate_hz, dt, rng):
    """The tutorial's ``poisson_encode`` on ``flat`` ``[B, N]``: same operations, same order,
    same ``torch.rand`` call, so the same spikes for a generator in the same state."""
    lam = flat * max_rate_hz               # [B, N]
    p = torch.clamp(lam * dt, 0.0, 1.0)    # [B, N]
    rand = torch.rand((steps, *flat.shape), generator=rng, device=flat.device)
    return rand < p                        # [T, B, N], bool


# --- C++ launcher -------------------------------------------------------------------------------

def cpu_input(flat):
    """``[B, N]`` pixels as the kernel reads them: contiguous fp32/fp64 (other dtypes as fp32, as
    the tutorial's arithmetic would promote them; exact for fp16, bf16 and 8-bit integers)."""
    if flat.dtype not in CPP_DTYPES:
        flat = flat.to(torch.float32)
    return flat.contiguous()


def cpp_fwd(x, seed, *, steps, max_rate_hz, dt, events):
    B, N = x.shape
    spikes = cpu_empty((steps, B, N), torch.bool)
    out = []

    def alloc(nnz):  # called by the kernel once it knows how many spikes there are
        out.extend((torch.empty(steps * B + 1, dtype=torch.int64), torch.empty(nnz, dtype=torch.int32)))
        return out[0].data_ptr(), out[1].data_ptr()

    _C().poisson_fwd(cpp_dtype_code(x.dtype), steps, B, N, x.data_ptr(), max_rate_hz, dt, seed,
                     spikes.data_ptr(), alloc if events else None, num_threads())
    if not events:
        out = [torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int32)]
    return spikes, out[0], out[1]


_C = backends.cpp_module  # memoised: the extension, or BackendUnavailable saying how to build it


backends.register_cpp(FAMILY, cpp_fwd)


# --- custom op: what torch.compile sees ---------------------------------------------------------

@torch.library.custom_op("fastlif::poisson_fwd", mutates_args=(), device_types="cpu")
def poisson_fwd(x: Tensor, seed: Tensor, steps: int, max_rate_hz: float, dt: float,
                events: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return cpp_fwd(x, int(seed.item()), steps=steps, max_rate_hz=max_rate_hz, dt=dt, events=events)


@poisson_fwd.register_fake
def _(x, seed, steps, max_rate_hz, dt, events):
    B, N = x.shape
    spikes = x.new_empty((steps, B, N), dtype=torch.bool)
    if not events:
        return spikes, x.new_empty((0,), dtype=torch.int64), x.new_empty((0,), dtype=torch.int32)
    nnz = torch.library.get_ctx().new_dynamic_size()
    return spikes, x.new_empty((steps * B + 1,), dtype=torch.int64), x.new_empty((nnz,), dtype=torch.int32)


_SEED_END = 2 ** 63 - 1


def draw_seed(rng):
    """One seed in [0, 2^63 - 1) for the kernel's generator, drawn from ``rng`` (or torch's global
    CPU generator), which it advances: ``torch.manual_seed`` makes the spikes reproducible."""
    if rng is None:  # the spelling torch.compile traces (it cannot take a generator argument)
        return torch.randint(_SEED_END, (), dtype=torch.int64)
    return torch.randint(_SEED_END, (), dtype=torch.int64, generator=rng)


# --- the call encode.poisson makes --------------------------------------------------------------

def encode_poisson(images, num_steps, max_rate_hz=100.0, dt=1e-3, rng=None, method="tutorial", return_events=False):
    """Check the arguments and encode (see :func:`fastlif.encode.poisson`). Returns the spikes, or
    ``(spikes, events)`` with ``return_events``."""
    flat, steps, rate, dt = check_args(images, num_steps, max_rate_hz, dt, rng, method)
    if method == "fast" and flat.device.type == "cpu" and backends.select("auto", "cpu", FAMILY) == "cpp":
        x = cpu_input(flat)
        if torch.compiler.is_compiling():
            spikes, indptr, indices = poisson_fwd(x, draw_seed(rng), steps, rate, dt, bool(return_events))
        else:  # eager: the launcher itself, without the custom op's dispatch
            fwd = backends.launchers(FAMILY, "cpp")[0]
            spikes, indptr, indices = fwd(x, draw_seed(rng).item(), steps=steps, max_rate_hz=rate, dt=dt,
                                          events=return_events)
        if not return_events:
            return spikes
        return spikes, SpikeEvents(spikes, indptr, indices, None)
    check_finite(flat)
    spikes = tutorial_draw(flat, steps, rate, dt, rng)
    return (spikes, from_dense(spikes)) if return_events else spikes
