"""Surrogate gradients: Heaviside forward, a smooth derivative backward.

Each factory returns a :class:`Surrogate`: callable like snnTorch's (``spk = sg(mem - thr)``),
and carrying the ``kind`` and ``param`` the fused kernels need. The derivatives follow
snnTorch's code (not its docstrings), see api.md section 1.

snnTorch's own surrogate objects (``snntorch.surrogate.fast_sigmoid(slope=25)``, ...) are
recognised by :func:`resolve` and run fused too.
"""
import math
import warnings
from dataclasses import dataclass

import torch

from .codes import (ATAN, FAST_SIGMOID, NO_GRAD, SIGMOID, SJ_ATAN, SJ_SIGMOID, STRAIGHT_THROUGH, SURROGATE_NAMES,
                    TRIANGULAR)

KIND_NAMES = dict(enumerate(SURROGATE_NAMES))


def surrogate_backward(grad_out, z, kind, param):
    """The gradient reaching ``z`` from ``grad_out`` (the gradient of the Heaviside output), in
    exactly snnTorch's operation order (each ``backward`` in ``snntorch/surrogate.py``), so that
    it is bit-identical to snnTorch's; the C++ kernels (``csrc/common.h``) follow the same order.

    One deliberate difference (api.md): where the sigmoid's ``exp(-slope*z)`` overflows
    (``slope*z < -88``: a membrane far below threshold), snnTorch returns ``inf/inf = NaN``; here
    the same function in its stable form (``exp(slope*z)``) gives the finite, tiny, true value.
    """
    if kind == ATAN:
        return param / 2 / (1 + (math.pi / 2 * param * z).pow_(2)) * grad_out
    if kind == FAST_SIGMOID:
        return grad_out / (param * torch.abs(z) + 1.0) ** 2
    if kind == SIGMOID:
        e = torch.exp(-param * z)
        grad = grad_out * param * e / ((e + 1) ** 2)
        overflow = torch.isnan(grad) & ~torch.isnan(z) & ~torch.isnan(grad_out)  # inf/inf
        if overflow.any():
            f = torch.exp(param * z)
            grad = torch.where(overflow, grad_out * param * f / ((f + 1) ** 2), grad)
        return grad
    if kind == TRIANGULAR:
        grad = grad_out * param
        return torch.where(z >= 0, -grad, grad)
    if kind == STRAIGHT_THROUGH:
        return grad_out.clone()
    if kind == NO_GRAD:
        return torch.zeros_like(grad_out)
    if kind == SJ_SIGMOID:  # SpikingJelly 2.0, _ops/surrogate.py: _surrogate_gradient
        s = torch.sigmoid(param * z)
        return grad_out * ((1 - s) * s * param)
    if kind == SJ_ATAN:
        k = z * (math.pi / 2 * param)
        return grad_out * ((param / 2) / (1 + k * k))
    raise ValueError(f"unknown surrogate kind {kind!r}")


class _SpikeFn(torch.autograd.Function):
    """Heaviside forward (strict: z > 0; SpikingJelly's kinds: z >= 0), surrogate derivative
    backward."""

    @staticmethod
    def forward(ctx, z, kind, param):
        ctx.save_for_backward(z)
        ctx.kind, ctx.param = kind, param
        return ((z >= 0) if kind in (SJ_SIGMOID, SJ_ATAN) else (z > 0)).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (z,) = ctx.saved_tensors
        return surrogate_backward(grad_out, z, ctx.kind, ctx.param), None, None


@dataclass(frozen=True)
class Surrogate:
    """A surrogate the fused kernels understand: ``kind`` (an integer code) and ``param``."""

    kind: int
    param: float = 0.0

    def __post_init__(self):
        if self.kind not in KIND_NAMES:
            raise ValueError(f"unknown surrogate kind {self.kind!r}; use fastlif.surrogate.atan(), "
                             f"fast_sigmoid(), sigmoid(), triangular() or straight_through_estimator()")

    def __call__(self, z):
        if self.kind == NO_GRAD:
            return (z > 0).to(z.dtype)
        return _SpikeFn.apply(z, self.kind, self.param)

    @property
    def name(self):
        return KIND_NAMES[self.kind]

    def __repr__(self):
        if self.kind in _SJ_CLASSES:
            return f"fastlif.spikingjelly.surrogate.{_SJ_CLASSES[self.kind]}(alpha={self.param:g})"
        return f"fastlif.surrogate.{self.name}({self.param:g})"


def atan(alpha=2.0):
    """``alpha/2 / (1 + (pi/2*alpha*z)^2)``; snnTorch's default surrogate."""
    return Surrogate(ATAN, float(alpha))


def fast_sigmoid(slope=25):
    """``1 / (slope*|z| + 1)^2``."""
    return Surrogate(FAST_SIGMOID, float(slope))


def sigmoid(slope=25):
    """``slope*exp(-slope*z) / (exp(-slope*z) + 1)^2``."""
    return Surrogate(SIGMOID, float(slope))


def triangular(threshold=1):
    """``threshold``, negated where ``z >= 0`` (snnTorch's code)."""
    return Surrogate(TRIANGULAR, float(threshold))


def straight_through_estimator():
    """Derivative 1 everywhere."""
    return Surrogate(STRAIGHT_THROUGH, 0.0)


class _SpikeRateEscape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, beta, slope):
        ctx.save_for_backward(z)
        ctx.beta, ctx.slope = beta, slope
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (z,) = ctx.saved_tensors  # snnTorch's order: grad * slope * exp(-beta * |z - 1|)
        return grad_out * ctx.slope * torch.exp(-ctx.beta * torch.abs(z - 1)), None, None


class spike_rate_escape:  # noqa: N801 - snnTorch's factory name
    """snnTorch's ``spike_rate_escape(beta=1, slope=25)``: derivative
    ``slope * exp(-beta * |z - 1|)``, in snnTorch's operation order. It has two parameters, which
    the fused kernels do not take: a layer using it runs the reference loop (one warning says so)."""

    def __init__(self, beta=1, slope=25):
        self.beta, self.slope = beta, slope

    def __call__(self, z):
        return _SpikeRateEscape.apply(z, self.beta, self.slope)

    def __repr__(self):
        return f"fastlif.surrogate.spike_rate_escape(beta={self.beta:g}, slope={self.slope:g})"


def no_grad():
    """Spikes carry no gradient (``surrogate_disable=True``)."""
    return Surrogate(NO_GRAD, 0.0)


# snnTorch's factories return a closure ``inner`` over their parameter; we read it back.
_SNNTORCH_FACTORIES = {
    "atan": (ATAN, "alpha"),
    "fast_sigmoid": (FAST_SIGMOID, "slope"),
    "sigmoid": (SIGMOID, "slope"),
    "triangular": (TRIANGULAR, "threshold"),
    "straight_through_estimator": (STRAIGHT_THROUGH, None),
}


def _from_snntorch(fn):
    """The :class:`Surrogate` equal to an snnTorch surrogate closure, or None."""
    if getattr(fn, "__module__", "") != "snntorch.surrogate":
        return None
    factory = getattr(fn, "__qualname__", "").split(".<locals>")[0]
    if factory not in _SNNTORCH_FACTORIES:
        return None
    kind, param_name = _SNNTORCH_FACTORIES[factory]
    if param_name is None:
        return Surrogate(kind, 0.0)
    names = fn.__code__.co_freevars
    if param_name not in names:
        return None
    return Surrogate(kind, float(fn.__closure__[names.index(param_name)].cell_contents))


_warned_ids = set()


def _already_warned(fn):
    key = id(getattr(fn, "__code__", fn))  # one warning per surrogate function, not per call
    if key in _warned_ids:
        return True
    _warned_ids.add(key)
    return False


def resolve(spike_grad, surrogate_disable=False):
    """Turn what a user passed as ``spike_grad`` into ``(callable, Surrogate or None)``.

    The Surrogate is None when the kernels cannot run it (an arbitrary callable): the
    caller then uses the reference path, and this function warns once saying why.
    """
    if surrogate_disable:
        return no_grad(), no_grad()
    if spike_grad is None:
        sg = atan()
        return sg, sg
    if isinstance(spike_grad, Surrogate):
        return spike_grad, spike_grad
    recognised = _from_snntorch(spike_grad)
    if recognised is not None:
        return recognised, recognised
    if not callable(spike_grad):
        raise TypeError(f"spike_grad must be a fastlif.surrogate or snnTorch surrogate, or a "
                        f"callable; got {type(spike_grad).__name__}")
    name = getattr(spike_grad, "__qualname__", type(spike_grad).__name__)
    if _already_warned(spike_grad):
        return spike_grad, None
    warnings.warn(f"fastlif: spike_grad {name!r} is not a surrogate the fused kernels know "
                  f"({', '.join(_SNNTORCH_FACTORIES)}); this layer runs on the reference "
                  f"(plain PyTorch loop) backend.", stacklevel=3)
    return spike_grad, None


# --- SpikingJelly's surrogates (fastlif.spikingjelly) ----------------------------------------------

_SJ_CLASSES = {SJ_SIGMOID: "Sigmoid", SJ_ATAN: "ATan"}
_SJ_KINDS = {name: kind for kind, name in _SJ_CLASSES.items()}


def sj_sigmoid(alpha=4.0):
    """SpikingJelly's ``Sigmoid(alpha=4.)``: Heaviside ``z >= 0``, derivative
    ``(1 - s) * s * alpha`` with ``s = sigmoid(alpha*z)``."""
    return Surrogate(SJ_SIGMOID, float(alpha))


def sj_atan(alpha=2.0):
    """SpikingJelly's ``ATan(alpha=2.)``: Heaviside ``z >= 0``, derivative
    ``(alpha/2) / (1 + (pi/2*alpha*z)^2)``."""
    return Surrogate(SJ_ATAN, float(alpha))


def _from_spikingjelly(fn):
    """The :class:`Surrogate` equal to a SpikingJelly surrogate module, or None."""
    cls = type(fn)
    if cls.__module__ != "spikingjelly.activation_based.surrogate" or cls.__name__ not in _SJ_KINDS:
        return None
    alpha = getattr(fn, "alpha", None)
    if not getattr(fn, "spiking", True) or type(alpha) not in (int, float):
        return None
    return Surrogate(_SJ_KINDS[cls.__name__], float(alpha))


def resolve_spikingjelly(fn):
    """:func:`resolve` for SpikingJelly's neurons (:mod:`fastlif.spikingjelly`): ``None`` is
    SpikingJelly's default ``Sigmoid(alpha=4.)``; fastlif's SpikingJelly surrogates and
    SpikingJelly's own ``Sigmoid`` and ``ATan`` (spiking, a number alpha) run fused; anything
    else runs the reference loop, with one warning."""
    if fn is None:
        sg = sj_sigmoid()
        return sg, sg
    if isinstance(fn, Surrogate) and fn.kind in _SJ_CLASSES:
        return fn, fn
    recognised = _from_spikingjelly(fn)
    if recognised is not None:
        return recognised, recognised
    if not callable(fn):
        raise TypeError(f"surrogate_function must be a SpikingJelly surrogate (spikingjelly or "
                        f"fastlif.spikingjelly.surrogate), or a callable; got {type(fn).__name__}")
    if not _already_warned(fn):
        name = getattr(fn, "__qualname__", type(fn).__name__)
        warnings.warn(f"fastlif.spikingjelly: surrogate_function {name!r} is not one the fused kernels "
                      f"know (SpikingJelly's Sigmoid and ATan); this neuron runs on the reference "
                      f"(plain PyTorch loop) backend.", stacklevel=4)
    return fn, None


def __getattr__(name):
    """snnTorch's other surrogates and classes (``heaviside``, ``LSO``, ``SSO``,
    ``custom_surrogate``, ``ATan``, ...), so that ``import fastlif as snn`` serves
    ``snn.surrogate.<name>`` as snnTorch code uses it; layers using them run the reference loop."""
    try:
        import snntorch.surrogate as theirs
    except ImportError:
        raise AttributeError(f"module 'fastlif.surrogate' has no attribute {name!r} (snnTorch's "
                             f"surrogates need snnTorch: pip install snntorch)") from None
    if name.startswith("__") or not hasattr(theirs, name):
        raise AttributeError(f"module 'fastlif.surrogate' has no attribute {name!r}")
    return getattr(theirs, name)
