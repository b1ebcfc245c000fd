"""snnTorch interop: fastlif's neurons where snnTorch's were, and NIR.

With snnTorch installed, fastlif's neurons already are subclasses of the snnTorch classes they
replace (:mod:`fastlif.neuron_base`), so snnTorch's own helpers (``utils.reset``,
``backprop``, ``export_to_nir``) take them as they are. This module goes the other way:

* :func:`from_snntorch` turns an snnTorch neuron, or every snnTorch neuron in a network (in
  place), into its fastlif equivalent: same settings, parameters, buffers and state;
* :func:`export_to_nir` / :func:`import_from_nir`: snnTorch's NIR export of a network of fastlif
  (or snnTorch) layers, and its NIR import with fastlif layers in place of snnTorch's.

Everything here needs snnTorch (and ``nir``/``nirtorch`` for NIR); without them it says so.
"""
import importlib

from .neuron_base import SpikingNeuron

__all__ = ["from_snntorch", "export_to_nir", "import_from_nir"]


def _snntorch(what):
    try:
        return importlib.import_module("snntorch")
    except ImportError as err:
        raise ImportError(f"{what} needs snnTorch: pip install snntorch ({err})") from None


def _replacements():
    """snnTorch class -> fastlif class, for the neurons fastlif has."""
    snn = _snntorch("fastlif.from_snntorch")
    from . import neurons
    return [(getattr(snn, name), getattr(neurons, name)) for name in neurons.__all__
            if hasattr(snn, name)]


def _equivalent(module, pairs):
    if isinstance(module, SpikingNeuron):  # fastlif's own (an snnTorch class too)
        return None
    for snn_cls, ours in pairs:
        if type(module) is snn_cls:
            return ours
    return None


def from_snntorch(module):
    """The fastlif equivalent of an snnTorch neuron (a new module with its settings, parameters,
    buffers and hidden state), or, given any other module, the same module with every snnTorch
    neuron inside it replaced so, in place. fastlif's own layers are left as they are."""
    pairs = _replacements()
    ours = _equivalent(module, pairs)
    if ours is not None:
        return ours.from_snntorch(module)
    for name, child in list(module.named_children()):
        replacement = from_snntorch(child)
        if replacement is not child:
            module._modules[name] = replacement
    return module


def export_to_nir(module, sample_data, model_name="snntorch", model_fwd_args=(), ignore_dims=None):
    """snnTorch's ``export_to_nir`` (fastlif's neurons export as the snnTorch ones they are)."""
    _snntorch("fastlif.export_to_nir")
    from snntorch.export_nir import export_to_nir as export
    return export(module, sample_data, model_name=model_name, model_fwd_args=list(model_fwd_args),
                  ignore_dims=ignore_dims)


def import_from_nir(graph):
    """A NIR graph as a network of fastlif layers: snnTorch's ``import_from_nir`` (its reading of
    NIR's LIF, CubaLIF and recurrent subgraphs), with each snnTorch neuron it builds replaced by
    its fastlif equivalent."""
    _snntorch("fastlif.import_from_nir")
    from snntorch.import_nir import import_from_nir as load
    return from_snntorch(load(graph))
