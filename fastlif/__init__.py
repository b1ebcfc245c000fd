"""fastlif: snnTorch's exact ``Leaky`` neuron, run by fused kernels.

Where things live:
  fastlif/reference.py   the plain PyTorch loop every fast path is tested against
  fastlif/ops.py         the torch.library custom ops and their autograd
  fastlif/backends.py    which backend runs a call (auto / cpp / triton / reference)
  csrc/                  the C++ CPU kernels (``fastlif._C``)
  kernels/lif.py         the Triton GPU kernels (``fastlif.kernels``)
  fastlif/functional.py  ``lif_sequence``;  fastlif/leaky.py  the ``Leaky`` module
"""
import importlib

from . import surrogate
from .functional import lif_sequence
from .leaky import Leaky
from .reference import lif_sequence_reference

__version__ = "0.1.0"
__all__ = ["Leaky", "lif_sequence", "lif_sequence_reference", "surrogate",
           "sim", "encode", "plot", "backends"]

# Heavier submodules (Numba, matplotlib) load on first use, so `import fastlif` stays quick.
_LAZY = {"sim", "encode", "plot", "backends", "data", "losses", "demo", "cli"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fastlif' has no attribute {name!r}")
