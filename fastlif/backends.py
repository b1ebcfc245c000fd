"""Which backend runs a call: ``"cpp"`` (CPU), ``"triton"`` (CUDA, or CPU under
``TRITON_INTERPRET=1``), ``"reference"`` (anywhere), or ``"auto"`` (api.md section 3).

Automatic selection falls back to the reference loop with one warning that says why;
asking explicitly for a backend that cannot run raises an error that says how to get it.
"""
import os
import warnings

import torch

BACKENDS = ("auto", "cpp", "triton", "reference")


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says how to fix it."""


_status = {}  # a plain memo, not lru_cache: torch.compile traces through it without warnings


def _memo(fn):
    def wrapper():
        if fn.__name__ not in _status:
            _status[fn.__name__] = fn()
        return _status[fn.__name__]
    wrapper.__name__ = fn.__name__
    return wrapper


@_memo
def _cpp_status():
    try:
        from . import _C  # noqa: F401
    except ImportError as err:
        return None, (f"the C++ extension fastlif._C is not built ({err}); install a C++ compiler "
                      f"and pybind11, then reinstall: pip install --no-build-isolation -e .")
    return _C, ""


@_memo
def _triton_status():
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return None, f"Triton is not installed ({err}); pip install triton"
    try:
        from .kernels import lif as triton_lif
    except ImportError as err:
        return None, f"the Triton kernels fastlif.kernels.lif failed to import ({err})"
    return triton_lif, ""


def triton_interpret():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cpp_module():
    """The compiled extension, or raise BackendUnavailable saying how to build it."""
    mod, why = _cpp_status()
    if mod is None:
        raise BackendUnavailable(f"backend='cpp' is unavailable: {why}")
    return mod


def triton_module():
    mod, why = _triton_status()
    if mod is None:
        raise BackendUnavailable(f"backend='triton' is unavailable: {why}")
    return mod


def why_unavailable(name, device_type):
    """Empty string when backend ``name`` can run on ``device_type``, else the reason."""
    if name == "reference":
        return ""
    if name == "cpp":
        if device_type != "cpu":
            return f"the cpp backend runs on CPU tensors, not {device_type}; use backend='triton' or 'auto'"
        return _cpp_status()[1]
    if name == "triton":
        if device_type == "cpu" and not triton_interpret():
            return ("the triton backend needs CUDA tensors; for CPU tensors set TRITON_INTERPRET=1 "
                    "(Triton's interpreter, slow, for testing) or use backend='cpp'")
        if device_type not in ("cpu", "cuda"):
            return f"the triton backend does not run on {device_type} tensors"
        return _triton_status()[1]
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def available(device="cpu"):
    """Backends that can run on ``device`` here, fastest first, always ending with reference."""
    device_type = torch.device(device).type
    return [b for b in ("triton", "cpp", "reference") if not why_unavailable(b, device_type)]


_warned = set()


def select(backend, device_type):
    """Resolve ``backend`` (possibly "auto") for tensors on ``device_type``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        fast = "cpp" if device_type == "cpu" else "triton"
        why = why_unavailable(fast, device_type)
        if not why:
            return fast
        if (fast, device_type) not in _warned:
            _warned.add((fast, device_type))
            warnings.warn(f"fastlif: falling back to the reference backend (a plain PyTorch loop, "
                          f"much slower) for {device_type} tensors: {why}", stacklevel=3)
        return "reference"
    why = why_unavailable(backend, device_type)
    if why:
        raise BackendUnavailable(f"backend={backend!r} is unavailable: {why}")
    return backend


def describe():
    """One line per device type: what ``auto`` picks and what is available."""
    cpp_mod, cpp_why = _cpp_status()
    omp = "" if cpp_mod is None else (" (OpenMP)" if cpp_mod.openmp else " (no OpenMP: one thread)")
    lines = [f"cpu: {', '.join(available('cpu'))}{omp if 'cpp' in available('cpu') else ''}"
             + (f" [cpp: {cpp_why}]" if cpp_why else "")]
    if torch.cuda.is_available():
        lines.append(f"cuda: {', '.join(available('cuda'))}")
    else:
        lines.append("cuda: no CUDA device")
    return "; ".join(lines)
