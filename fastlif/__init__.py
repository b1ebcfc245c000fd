"""fastlif: snnTorch's exact neurons, run by fused kernels.

The core (torch and NumPy only):
  fastlif/neurons.py      the neurons (Leaky, Synaptic, RLeaky, ...); what they share: neuron_base.py
  fastlif/layers.py       SpikeLinear, the event-driven nn.Linear
  fastlif/ops/            one file per fused op family: custom ops, autograd, C++ launchers
  fastlif/reference.py    the plain PyTorch loops every fast path is tested against
  fastlif/backends.py     which backend runs a call (auto / cpp / triton / reference)
  csrc/, kernels/         the C++ CPU kernels (``fastlif._C``), the Triton GPU kernels
                          (``fastlif.kernels``)
  surrogate, encode, losses, codes, timing

Applications on top, which the core never imports: ``fastlif.sim`` (the Numba simulator,
extra ``[sim]``), ``fastlif.tutorial`` (the demo, its data, figures and network, extra
``[demo]``), ``fastlif.cli`` (the ``fastlif`` command).
"""
from . import backends, codes, encode, losses, surrogate
from .neurons import *  # noqa: F401,F403 - the neuron modules, listed in neurons.__all__
from .neurons import __all__ as _neurons
from .interop import export_to_nir, from_snntorch, import_from_nir
from .layers import SpikeConv2d, SpikeLinear
from .network import sequence
from .ops.common import cpu_cache_stats, empty_cpu_cache, get_num_threads, set_cpu_cache_limit, set_num_threads
from .ops.lif import lif_sequence
from .families.synaptic import synaptic_sequence
from .reference import lif_sequence_reference

__version__ = "0.2.0"
__all__ = [*_neurons, "SpikeLinear", "SpikeConv2d", "sequence", "lif_sequence", "synaptic_sequence",
           "lif_sequence_reference", "surrogate",
           "encode", "losses", "backends", "codes", "from_snntorch", "export_to_nir", "import_from_nir",
           "set_num_threads", "get_num_threads", "set_cpu_cache_limit", "empty_cpu_cache", "cpu_cache_stats"]


# --- names resolved on first access ------------------------------------------------------------
# The applications: imported only when used, so `import fastlif` never loads Numba or matplotlib.
_APPLICATIONS = {"sim": "sim", "tutorial": "demo", "cli": "demo"}
# `import fastlif as snn` keeps snnTorch code working: these resolve to snnTorch's own modules
# (which take fastlif's layers: they are snnTorch classes too) ...
_SNNTORCH_MODULES = ("utils", "functional", "spikegen", "spikeplot", "backprop", "spikevision")
# ... and snnTorch's neurons that fastlif does not fuse resolve to snnTorch's classes, with a warning.
_SNNTORCH_UNFUSED = ("SLSTM", "SConv2dLSTM", "LeakyParallel",
                     "BatchNormTT1d", "BatchNormTT2d", "SpikingNeuron", "LIF", "GradedSpikes",
                     "StateLeaky", "LinearLeaky", "DeltaLeaky", "AssociativeLeaky")


def __getattr__(name):
    import importlib
    if name in _APPLICATIONS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError as err:
            raise ImportError(f"fastlif.{name} needs the [{_APPLICATIONS[name]}] extra: pip install "
                              f"'fastlif[{_APPLICATIONS[name]}]' ({err})") from err
        globals()[name] = module
        return module
    if name in _SNNTORCH_MODULES or name in _SNNTORCH_UNFUSED:
        try:
            snntorch = importlib.import_module("snntorch")
        except ImportError:
            raise AttributeError(f"fastlif.{name} is snnTorch's {'module' if name in _SNNTORCH_MODULES else 'class'} "
                                 f"{name}, and snnTorch is not installed: pip install snntorch") from None
        if name in _SNNTORCH_MODULES:
            value = importlib.import_module(f"snntorch.{name}")
        else:
            value = getattr(snntorch, name)
            if name != "SpikingNeuron":  # the base class: fastlif's neurons are instances of it
                import warnings
                warnings.warn(f"fastlif.{name} is snnTorch's own {name}: fastlif does not fuse it yet, "
                              f"so it runs snnTorch's per-step PyTorch code (exact, not fast)", stacklevel=2)
        globals()[name] = value  # one warning: later lookups find it here
        return value
    raise AttributeError(f"module 'fastlif' has no attribute {name!r}")
