"""What every op family shares: the dtype policy, the checks on a call's arguments, and the
hand-over of tensors to the C++ kernels.

Dtype policy (the one place it is decided):

* bool and integer inputs (spike trains) compute in torch's default dtype, as snnTorch does;
* the compute dtype is fp64 for fp64 input and fp32 for everything else: states,
  parameters and arithmetic are never kept in fp16/bf16;
* the C++ kernels take fp32 or fp64, so fp16/bf16 input is widened before them; the Triton
  kernels read fp16/bf16 directly and widen in registers;
* outputs come back in the input's dtype, except the states: LIF's membrane when the caller
  keeps it as its state (``mem_fp32=True``, what the neuron modules do), and the states of
  the families added since (Synaptic, RLeaky) always, stay in the compute dtype, so a state
  carried from call to call is never rounded to fp16/bf16.
"""
import math
import numbers
import os
import warnings

import numpy as np
import torch

from .. import backends
from ..layout import compute_dtype, grid, mem_dtype, param_tensor  # noqa: F401 - re-exported for the ops
from ..codes import FLOAT32, FLOAT64

HALF_DTYPES = (torch.float16, torch.bfloat16)
CPP_DTYPES = (torch.float32, torch.float64)
TRITON_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def float_input(x):
    """Spike trains (bool, integer) as floating point, as snnTorch accepts them."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def cpp_dtype_code(dtype):
    if dtype == torch.float32:
        return FLOAT32
    if dtype == torch.float64:
        return FLOAT64
    raise TypeError(f"fastlif cpp backend computes in float32 or float64, got {dtype}")


# --- the arguments of a call ------------------------------------------------------------------

def check_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _is_number(value):
    # type() first: isinstance against numbers.Number goes through the ABC machinery (slow)
    return type(value) in (float, int) or (isinstance(value, numbers.Number) and not isinstance(value, bool))


def check_param(value, name, n_last=None):
    """A scalar, or one value per neuron along the last dimension (``n_last`` of them), as given
    (a number or a tensor). ``n_last=None`` checks only that it is one of those two forms."""
    # a tensor first: _is_number's ABC check is slow on one, and the learnable case is a tensor
    if not isinstance(value, torch.Tensor):
        if _is_number(value):
            return value
        value = torch.as_tensor(value)
    if value.numel() == 1:
        return value
    if value.dim() != 1 or (n_last is not None and value.shape[0] != n_last):
        want = f"({n_last})" if n_last is not None else "(a 1-D tensor)"
        raise ValueError(f"{name} must be a scalar or hold one value per neuron along the last "
                         f"dimension {want}; got shape {tuple(value.shape)}")
    return value


def check_input(x, single_step):
    """A call's input, checked, as floating point: a sequence ``[T, ...]`` or one step."""
    check_tensor(x, "input" if single_step else "x_seq")
    if not single_step and x.dim() < 2:
        raise ValueError(f"x_seq must be [T, ...neurons] with at least 2 dimensions (time first); "
                         f"got shape {tuple(x.shape)}. For one step call the neuron module.")
    return x if x.is_floating_point() else float_input(x)


def check_states(x, single_step, **states):
    """Every initial state given (not None) has the shape of one step of ``x``."""
    for name, state in states.items():
        if state is None:  # the common call: no state given, and x's shape is not even read
            continue
        shape = x.shape if single_step else x.shape[1:]
        if state.shape != shape:  # the message only when it is needed
            check_state(state, f"{name} (the initial {'membrane' if name == 'mem' else name})", shape)


def initial_states(compute, *states):
    """A call's initial states as the launchers take them: in the compute dtype, contiguous,
    None where absent. No reshape: a state already in that form is passed as it is, so a
    per-step call adds no view (and no autograd node) to the graph."""
    return tuple(map(as_compute, states, (compute,) * len(states)))


def as_compute(t, dtype):
    """``t`` (a tensor or None) in ``dtype``, contiguous, without the dispatch of a no-op ``.to``."""
    if t is None:
        return None
    if t.dtype != dtype:
        t = t.to(dtype)
    return t if t.is_contiguous() else t.contiguous()  # no dispatch for what is already so


_warned = set()


def warn_once(key, message, stacklevel=3):
    """One warning per ``key`` per process: for what a user should hear of once, not per call."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=stacklevel)


def choose_backend(family, backend, x, surrogate, spike_fn, reference_options):
    """The backend a call runs on: the reference loop for a surrogate the kernels cannot run or
    for snnTorch's rarer options (an error if another backend was asked for explicitly), else
    :func:`fastlif.backends.select`'s choice."""
    if surrogate is None or reference_options:
        if backend not in ("auto", "reference"):
            why = (f"the surrogate {spike_fn!r}" if surrogate is None else
                   f"the options {', '.join(sorted(reference_options))}")
            raise backends.BackendUnavailable(
                f"backend={backend!r} cannot run {why}: only the reference loop does "
                f"(backend='reference' or 'auto')")
        return "reference"
    # is_cpu first: x.device builds a torch.device object on every call
    return backends.select(backend, "cpu" if x.is_cpu else x.device.type, family)


def kernel_params(x, values, names, clamped):
    """A call's parameters, already checked by :func:`check_param` (the family's ``run`` checks
    them once), as the launchers take them."""
    compute, dev = compute_dtype(x.dtype), x.device
    host = x.is_cpu and not torch.compiler.is_compiling()  # once per call, not per parameter
    return tuple(kernel_param(v, compute, dev, clamp=name in clamped, host=host) for v, name in zip(values, names))


def _clamp_edges_pass():
    """Whether this torch's clamp backward passes the gradient at the bounds themselves: torch
    2.11 does (``min <= x <= max``), 2.14 does not (``min < x < max``); asked of torch once."""
    t = torch.tensor([0.0, 1.0], requires_grad=True)
    with torch.inference_mode(False), torch.enable_grad():
        (g,) = torch.autograd.grad(t.clamp(0, 1).sum(), t)
    return bool(g[0] != 0) and bool(g[1] != 0)


CLAMP_EDGES_PASS = _clamp_edges_pass()  # at import: never traced by torch.compile; the C++ Functions are told it


def clamp_host(b):
    """``(clamped, inside)`` of a Python float ``b``: ``torch.clamp(b, 0, 1)``'s value (NaN and
    -0.0 as torch keeps them) and whether its backward passes the gradient (as this torch's does,
    :func:`_clamp_edges_pass`). For a one-value CPU parameter this replaces a clamp op and the
    read-back its backward needs: dispatcher calls that each cost tens of microseconds right
    after a kernel streamed the caches out (bench/overhead.py)."""
    inside = (0.0 <= b <= 1.0) if CLAMP_EDGES_PASS else (0.0 < b < 1.0)
    return min(max(b, 0.0), 1.0), inside


def learnable_clamped(values, names, clamped):
    """``(clamp_in, clamped_here)`` for a call's parameters: the indices of the clamped ones that
    need a gradient, which the fused autograd Function clamps itself (:func:`clamp_in_function`:
    no clamp node in the graph), and the names of the other clamped ones, for
    :func:`kernel_params` to clamp."""
    clamp_in, clamped_here = (), ()
    for k, (value, name) in enumerate(zip(values, names)):
        if name in clamped:
            if isinstance(value, torch.Tensor) and value.requires_grad:
                clamp_in += (k,)
            else:
                clamped_here += (name,)
    return clamp_in, clamped_here


def clamp_without_function(kparams, clamp_in):
    """The launchers' parameters for a call that records no graph: those of ``clamp_in``, which
    the Function would have clamped, clamped here."""
    return tuple(p.clamp(0, 1) if k in clamp_in else p for k, p in enumerate(kparams)) if clamp_in else kparams


def param_grad_buffers(params, float_grads=None, wanted=None):
    """A C++ backward's parameter-gradient outputs: one like each tensor parameter, and for a
    float that still owes a gradient (a host-clamped learnable parameter) one like its raw tensor
    in ``float_grads``; None where no gradient is computed (a float, or ``wanted[k]`` false)."""
    buffers = []
    for k, p in enumerate(params):
        like = p if isinstance(p, torch.Tensor) else (None if float_grads is None else float_grads[k])
        buffers.append(None if like is None or (wanted is not None and not wanted[k]) else torch.empty_like(like))
    return buffers


def clamp_in_function(raw, backend):
    """``(value, inside)``: a learnable parameter that a fused autograd Function clamps to [0, 1]
    itself, without a clamp node in the graph. A one-value CPU parameter on the C++ backend
    becomes a host-clamped float (:func:`clamp_host`; ``inside``: whether its gradient passes),
    anything else a clamped tensor (``inside`` None: :func:`clamp_grad` masks by the values)."""
    if backend == "cpp" and raw.numel() == 1 and not torch.compiler.is_compiling():
        return clamp_host(raw.item())
    return raw.clamp(0, 1), None


def clamp_inside(raw):
    """``(value, inside)`` of a learnable parameter that a C++ autograd Function clamps to
    [0, 1] (csrc/autograd.cpp, clamp_forward): one CPU value as :func:`clamp_in_function` clamps
    it on the host (a float, and 1 or 0: whether its gradient passes), more values as None and
    -1 (the Function clamps the tensor and masks its gradient by its values)."""
    if raw.numel() == 1:
        value, passes = clamp_in_function(raw, "cpp")
        return value, int(passes)
    return None, -1


def input_grads(ctx, *grads):
    """An autograd Function's backward return: ``grads`` for its leading inputs, None for each
    input after them (options and flags), as many as its forward took (``ctx.needs_input_grad``
    counts them), so that no backward counts its forward's arguments by hand."""
    return grads + (None,) * (len(ctx.needs_input_grad) - len(grads))


def clamp_grad(grad, raw, inside=None):
    """The gradient of ``raw.clamp(0, 1)``'s input given ``grad`` for its output, exactly as
    torch's clamp backward gives it: ``grad`` inside the bounds, 0 outside them and for NaN, and
    at the bounds as this torch does (:func:`_clamp_edges_pass`). ``inside``: for a one-value
    ``raw``, whether it was inside, when forward already knew (:func:`clamp_host`)."""
    if inside is None and raw.numel() == 1 and raw.is_cpu and not torch.compiler.is_compiling():
        inside = clamp_host(raw.item())[1]
    if inside is not None:
        return grad if inside else torch.zeros_like(grad)
    mask = (raw >= 0) & (raw <= 1) if CLAMP_EDGES_PASS else (raw > 0) & (raw < 1)
    return torch.where(mask, grad, 0)


def needs_autograd(*tensors):
    """Whether a call must record a graph: grad mode is on and something requires grad (floats,
    None: never). Under torch.compile the autograd Function is always used (it is traced)."""
    if torch.compiler.is_compiling():
        return True
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is not None and type(t) is not float and t.requires_grad:
            return True
    return False


def check_state(state, name, shape):
    if state is not None and state.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (the input without its time "
                         f"dimension); got {tuple(state.shape)}")


def kernel_param(value, dtype, device, clamp=False, host=None):
    """A parameter as the launchers take it: a Python float (clamped to [0, 1] if ``clamp``), or
    a tensor of 1 value (any shape) or L values (1-D) in the compute dtype on ``device`` (clamped
    with autograd, so that values outside [0, 1] get no gradient, as in snnTorch; not reshaped,
    which would add a view node to every call's graph). A single value on the CPU that
    needs no gradient (a module's fixed beta, say) becomes a float: no tensor op on the way.
    ``host``: ``device`` is the CPU and no torch.compile trace runs (computed if None)."""
    if not isinstance(value, torch.Tensor):
        value = as_default_float(value)
    elif (value.is_cpu and not value.requires_grad and value.numel() == 1
          and (host if host is not None else device.type == "cpu" and not torch.compiler.is_compiling())):
        value = value.item() if value.dtype in CPP_DTYPES else value.to(dtype).item()
    else:
        # as it is when it already is the launchers' form: .to and .contiguous are dispatcher
        # calls even when they change nothing, and each costs tens of microseconds right after a
        # kernel streamed the caches out (bench/overhead.py)
        if not (value.dtype == dtype and value.is_contiguous() and value.device == device):
            value = value.to(device=device, dtype=dtype).contiguous()
        return value.clamp(0, 1) if clamp else value
    return min(max(value, 0.0), 1.0) if clamp else value  # clamp_host's value, inline: every call with a fixed beta


_default_floats = {}


def as_default_float(value):
    """A Python number as snnTorch and the reference hold it, ``torch.as_tensor(value)``: a float
    in torch's default dtype (fp32 unless changed), which is what then enters fp64 arithmetic."""
    if type(value) is int or torch.get_default_dtype() == torch.float64:
        return float(value)
    rounded = _default_floats.get(value)
    if rounded is None:
        if len(_default_floats) > 1024:
            _default_floats.clear()
        rounded = _default_floats[value] = float(np.float32(value))
    return rounded


# --- C++ ------------------------------------------------------------------------------------

def ptr(t):
    """The data pointer the C++ kernels read or write (0: absent)."""
    return 0 if t is None else t.data_ptr()


def cpp_param(value):
    """``(pointer, count, value)`` of a launcher parameter, for the C++ binding."""
    if isinstance(value, torch.Tensor):
        return value.data_ptr(), value.numel(), 0.0
    return 0, 1, value


_thread_cap = None


def set_num_threads(n):
    """Cap the threads of fastlif's CPU kernels at ``n`` (None: no cap of fastlif's own). torch's
    ``torch.set_num_threads`` caps them too; each call then takes as many of those as its work
    pays for, and one while the machine is busy (api.md section 3, "Threads and memory")."""
    global _thread_cap
    if n is not None and (type(n) is not int or n < 1):
        raise ValueError(f"fastlif.set_num_threads: expected an integer >= 1 or None, got {n!r}")
    _thread_cap = n


def get_num_threads():
    """The most threads a fastlif CPU call may use: torch's setting, capped by
    :func:`set_num_threads`."""
    n = torch.get_num_threads()
    return n if _thread_cap is None else min(n, _thread_cap)


num_threads = get_num_threads  # what the launchers pass the kernels


# --- the torch ops fastlif runs itself ---------------------------------------------------------
# The event layers' dense paths (SpikeLinear's GEMM, SpikeConv2d's dense convolution) and the
# input gradients they leave to torch (grad @ W) are torch's own parallel regions. They take
# their thread count as fastlif's regions do from the work of the call (one thread per grain of
# memory moved, csrc/common.h's work_team; fastlif.set_num_threads caps it), but never from the
# machine's load: MKL's and oneDNN's results change with the thread count at some shapes
# (TinySNN's fc2 and fc1 weight gradients, fc1's forward at 50 % density), and a result must not
# depend on what else runs. So a small one (TinySNN's fc2: 1.6 MiB) runs on one thread, busy
# machine or not; a large one keeps torch's team, and no stall check (its threads cannot be seen).

class torch_threads:
    """``with torch_threads(nbytes): ...`` runs the torch ops inside on the team that a call
    moving ``nbytes`` gets from its work (torch's own setting restored after)."""
    __slots__ = ("threads", "team")

    def __init__(self, nbytes):
        self.threads, cap = torch.get_num_threads(), get_num_threads()
        self.team = backends.cpp_module()._work_team(cap, int(nbytes)) if cap > 1 else 1

    def __enter__(self):
        if self.team != self.threads:
            torch.set_num_threads(self.team)
        return self

    def __exit__(self, kind, value, traceback):
        if self.team != self.threads:
            torch.set_num_threads(self.threads)
        return False


# --- memory: the output pool (csrc/pool.cpp) ------------------------------------------------
# The C++ launchers take their outputs and saved tensors from fastlif's pool, not from malloc:
# with glibc's default thresholds a freed block of a few MiB goes back to the OS and the next
# call faults the same pages in again (at the tutorial size half of a forward+backward). The
# pool keeps them, for fastlif's own tensors only: no process-wide setting changes.

POOL_MIN_BYTES = 1 << 16  # below this malloc serves from its bins, which it does not give back
_DEFAULT_CACHE_LIMIT = 1 << 30
_pool_module = None  # None: FASTLIF_CPU_CACHE_MB not read yet; then the extension, or False (no pool)


def _pool():
    """The extension when the pool serves (a limit above 0), else None."""
    global _pool_module
    if _pool_module is None:
        C = backends.cpp_module()
        limit = _env_cache_limit()
        C._pool(limit=limit)
        _pool_module = C if limit > 0 else False
    return _pool_module or None


# Eager calls with a graph on the C++ backend record the C++ autograd Function
# (csrc/autograd.cpp, :func:`cpp_autograd`) where the extension has it: the same kernels,
# outputs and gradients as LifFunction, RLeakyFunction (one-to-one) and FamilyFunction, bit for
# bit, with no Python between the kernels. False: the Python Functions serve every call (the
# tests compare the two).
CPP_AUTOGRAD = True


def cpp_autograd(kind, x, states0, params, clamp_in, steps, options, surrogate, *, family="", spike_state=False,
                 needs_x=False, backward_reads=None):
    """A call with a graph on the C++ backend through the C++ autograd Function
    (csrc/autograd.cpp: the same kernels, saved tensors, clamps and gradients as the Python
    Function it stands in for, bit for bit): ``(spk, *states returned)``, or None where it does not
    serve the call: an extension built without torch's headers, a torch.compile trace, input
    other than float32/float64, or :data:`CPP_AUTOGRAD` off. ``kind``: ``"leaky"``,
    ``"rleaky"`` (one-to-one) or ``"family"`` (``family`` its spec's name; ``spike_state``,
    ``needs_x`` and ``backward_reads`` from the spec). ``states0``, ``params``: as the launchers
    take them, the raw learnable clamped ones at the indices ``clamp_in``; ``options``: the
    kernels' integer options (Leaky, RLeaky: the reset mode and whether it is immediate)."""
    if not CPP_AUTOGRAD or x.dtype not in CPP_DTYPES or torch.compiler.is_compiling():
        return None
    C = backends.cpp_module()
    train = getattr(C, "fused_train", None)
    if train is None:
        return None
    params, raws, inside = list(params), [None] * len(params), [1] * len(params)
    for k in clamp_in:  # clamped inside the Function, as the Python Functions clamp them
        raws[k] = params[k]
        params[k], inside[k] = clamp_inside(params[k])
    keep = [True] * len(states0)
    if backward_reads is not None:  # only what the C++ backward reads: memory held until backward
        learnable = [raw if raw is not None else p for raw, p in zip(raws, params)]  # what the caller passed
        keep = list(backward_reads(options, [isinstance(p, torch.Tensor) and p.requires_grad for p in learnable]))
    tensors = [p if isinstance(p, torch.Tensor) else None for p in params]
    values = [p if isinstance(p, float) else 0.0 for p in params]  # a tensor, or None: clamped in C++
    return train(C.FUSED_KINDS[kind], family, x, list(states0), tensors, values, raws, inside, CLAMP_EDGES_PASS,
                 keep, spike_state, needs_x, steps, list(options), surrogate.kind, float(surrogate.param),
                 num_threads(), POOL_MIN_BYTES if pool_serves() else -1)


def pool_serves():
    """Whether fastlif's large CPU outputs come from its pool (:func:`cpu_empty`)."""
    return _pool() is not None


def _env_cache_limit():
    raw = os.environ.get("FASTLIF_CPU_CACHE_MB")
    if raw is None or raw == "":
        return _DEFAULT_CACHE_LIMIT
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"FASTLIF_CPU_CACHE_MB must be a number of MiB (0: no cache), got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"FASTLIF_CPU_CACHE_MB must be >= 0, got {raw!r}")
    return int(mb * (1 << 20))


def cpu_empty(shape, dtype):
    """An uninitialised CPU tensor for a fused op's output, from the pool when it is large
    enough to matter (an ordinary CPU tensor either way; its memory returns to the pool when
    its storage is freed)."""
    nbytes = math.prod(shape) * dtype.itemsize
    C = _pool() if nbytes >= POOL_MIN_BYTES else None
    if C is None:
        return torch.empty(shape, dtype=dtype)
    # view(*ints), not view(torch.Size): the Size argument costs ~4 us more per call (torch 2.14)
    return torch.frombuffer(C.PoolBlock(nbytes), dtype=dtype).view(*shape)


_nothing = {}


def cpu_nothing(dtype):
    """An empty CPU tensor of ``dtype`` for a launcher's "nothing saved" slot, one per dtype
    (saved for backward, never returned to the user nor written: it holds no element)."""
    t = _nothing.get(dtype)
    if t is None:
        t = _nothing[dtype] = torch.empty((0,), dtype=dtype)
    return t


def fresh_outputs(outs):
    """A custom op's outputs with any shared empty tensor (:func:`cpu_nothing`) replaced by a
    fresh one: what torch.compile sees of an op must not alias another call's."""
    return tuple(o.clone() if o.numel() == 0 else o for o in outs)


def cpu_empty_like(t):
    return cpu_empty(t.shape, t.dtype)


def set_cpu_cache_limit(nbytes):
    """Keep at most ``nbytes`` of freed output memory for reuse (0: none; the memory of
    tensors alive now is not affected). Default 1 GiB, or ``FASTLIF_CPU_CACHE_MB``."""
    global _pool_module
    if type(nbytes) is not int or nbytes < 0:
        raise ValueError(f"fastlif.set_cpu_cache_limit: expected an integer number of bytes >= 0, got {nbytes!r}")
    _pool()  # read the environment first, so that it does not override this call later
    C = backends.cpp_module()
    C._pool(limit=nbytes)
    _pool_module = C if nbytes > 0 else False


def empty_cpu_cache():
    """Return the freed output memory fastlif keeps for reuse to the OS (as
    ``torch.cuda.empty_cache`` does for CUDA)."""
    backends.cpp_module()._pool(clear=True)


def cpu_cache_stats():
    """The output pool's counters: ``cached_bytes`` (freed, kept for reuse), ``in_use_bytes``,
    ``limit_bytes``, ``hits``, ``misses`` and ``evictions``."""
    _pool()
    return dict(backends.cpp_module()._pool())
