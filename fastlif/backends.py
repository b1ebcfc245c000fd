"""Which backend runs a call: ``"cpp"`` (CPU), ``"triton"`` (CUDA, or CPU under
``TRITON_INTERPRET=1``), ``"reference"`` (anywhere), or ``"auto"`` (api.md section 3).

This module only chooses. Each backend registers the launchers it has for an op family
(:func:`register`): the C++ ones in ``fastlif/ops/<family>.py``, the Triton ones in
``kernels/<family>.py`` (``fastlif.kernels.<family>``). The Triton modules are imported here on
first use, by name, because importing Triton costs a second and is pointless on a machine that
runs no Triton kernel; callers fetch launchers with :func:`launchers`.

Automatic selection falls back to the reference loop with one warning that says why; asking
explicitly for a backend that cannot run raises :class:`BackendUnavailable`, saying how to
get it.
"""
import importlib
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
        from . import _C
    except ImportError as err:
        return None, (f"the C++ extension fastlif._C is not built ({err}); install a C++ compiler "
                      f"and pybind11, then reinstall: pip install --no-build-isolation -e .")
    return _C, ""


@_memo
def _triton_status():
    try:
        import triton
    except ImportError as err:
        return None, f"Triton is not installed ({err}); pip install triton"
    return triton, ""


def triton_interpret():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cpp_module():
    """The compiled extension, or raise BackendUnavailable saying how to build it."""
    mod, why = _cpp_status()
    if mod is None:
        raise BackendUnavailable(f"backend='cpp' is unavailable: {why}")
    return mod


# --- the launchers each family registers ------------------------------------------------------

_loaders = {}    # (family, backend) -> zero-argument callable returning the launchers
_launchers = {}  # (family, backend) -> the loaded launchers, or the error that loading raised


def register(family, backend, loader):
    """Declare that ``backend`` runs ``family``: ``loader()`` returns its launchers (for
    example ``(fwd, bwd)``), and is called once, on the first call that needs them."""
    if backend not in ("cpp", "triton"):
        raise ValueError(f"launchers are registered for 'cpp' or 'triton', not {backend!r}")
    _loaders[(family, backend)] = loader


def register_cpp(family, *launchers):
    """Register ``family``'s C++ launchers: they run once the extension loads (until then
    :func:`launchers` raises BackendUnavailable, saying how to build it)."""
    def loader():
        cpp_module()
        return launchers
    register(family, "cpp", loader)


def _load(family, backend):
    key = (family, backend)
    if key not in _launchers:
        try:
            if backend == "triton" and key not in _loaders:
                importlib.import_module(f"fastlif.kernels.{family}")  # registers its launchers
            if key not in _loaders:
                raise LookupError(f"fastlif has no {backend} kernels for {family}")
            _launchers[key] = (_loaders[key](), "")
        except ImportError as err:
            if getattr(err, "name", None) == f"fastlif.kernels.{family}":
                why = f"fastlif has no {backend} kernels for {family}"
            else:
                where = "fastlif._C" if backend == "cpp" else f"fastlif.kernels.{family}"
                why = f"{where} failed to import ({err})"
            _launchers[key] = (None, why)
        except (LookupError, BackendUnavailable) as err:
            _launchers[key] = (None, str(err))
    return _launchers[key]


def launchers(family, backend):
    """The launchers ``backend`` registered for ``family``; BackendUnavailable if there are none."""
    loaded, why = _load(family, backend)
    if loaded is None:
        raise BackendUnavailable(f"backend={backend!r} cannot run {family}: {why}")
    return loaded


def why_unavailable(name, device_type, family=None):
    """Empty string when backend ``name`` can run (``family``, when given) on ``device_type``
    tensors, else the reason."""
    if name == "reference":
        return ""
    if name == "cpp":
        if device_type != "cpu":
            return f"the cpp backend runs on CPU tensors, not {device_type}; use backend='triton' or 'auto'"
        why = _cpp_status()[1]
    elif name == "triton":
        if device_type == "cpu" and not triton_interpret():
            return ("the triton backend needs CUDA tensors; for CPU tensors set TRITON_INTERPRET=1 "
                    "(Triton's interpreter, slow, for testing) or use backend='cpp'")
        if device_type not in ("cpu", "cuda"):
            return f"the triton backend does not run on {device_type} tensors"
        why = _triton_status()[1]
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if why or family is None:
        return why
    return _load(family, name)[1]


def available(device="cpu", family=None):
    """Backends that can run on ``device`` here, fastest first, always ending with reference."""
    device_type = torch.device(device).type
    return [b for b in ("triton", "cpp", "reference") if not why_unavailable(b, device_type, family)]


_warned = set()


def select(backend, device_type, family=None):
    """Resolve ``backend`` (possibly "auto") for ``family`` on ``device_type`` tensors."""
    if backend == "auto":
        fast = "cpp" if device_type == "cpu" else "triton"
        why = why_unavailable(fast, device_type, family)
        if not why:
            return fast
        if (fast, device_type, family) not in _warned:
            _warned.add((fast, device_type, family))
            warnings.warn(f"fastlif: falling back to the reference backend (a plain PyTorch loop, "
                          f"much slower) for {device_type} tensors: {why}", stacklevel=3)
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    why = why_unavailable(backend, device_type, family)
    if why:
        raise BackendUnavailable(f"backend={backend!r} is unavailable: {why}")
    return backend


def check_name(backend):
    """A backend name as a constructor takes it (checked before any call)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def describe():
    """One line per device type: what ``auto`` picks and what is available."""
    cpp_mod, cpp_why = _cpp_status()
    cpu = available("cpu")
    omp = ""
    if cpp_mod is not None:  # csrc/autograd.cpp is built when torch's headers were there
        omp = " ({}, {})".format("OpenMP" if cpp_mod.openmp else "no OpenMP: one thread",
                                 "C++ autograd Function" if hasattr(cpp_mod, "fused_train")
                                 else "no C++ autograd Function: built without torch's headers")
    lines = [f"cpu: {', '.join(cpu)}{omp if 'cpp' in cpu else ''}" + (f" [cpp: {cpp_why}]" if cpp_why else "")]
    lines.append(f"cuda: {', '.join(available('cuda'))}" if torch.cuda.is_available()
                 else "cuda: no CUDA device")
    return "; ".join(lines)
