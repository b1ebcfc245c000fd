"""fastlif: snnTorch's exact neurons, run by fused kernels.

The core (torch and NumPy only):
  fastlif/neurons.py      the neurons (Leaky, Synaptic, RLeaky); what they share: neuron_base.py
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
from .layers import SpikeLinear
from .ops.common import get_num_threads, set_num_threads
from .ops.lif import lif_sequence
from .ops.synaptic import synaptic_sequence
from .reference import lif_sequence_reference

__version__ = "0.2.0"
__all__ = [*_neurons, "SpikeLinear", "lif_sequence", "synaptic_sequence", "lif_sequence_reference", "surrogate",
           "encode", "losses", "backends", "codes", "from_snntorch", "export_to_nir", "import_from_nir", "set_num_threads", "get_num_threads"]
