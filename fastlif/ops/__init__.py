"""The fused op families, one file each, all of the same shape (``lif.py`` is the model):

* what forward keeps for backward (``saved_layout``);
* the C++ launchers (torch tensors in, pointers to ``fastlif._C``, tensors out) and the
  registration of those and of the Triton launchers (``kernels/<family>.py``) with
  :mod:`fastlif.backends`;
* the ``torch.library`` custom ops ``fastlif::<family>_fwd`` / ``_bwd`` with their fake
  (shape) implementations: what ``torch.compile`` sees;
* one ``torch.autograd.Function``, used in eager mode and traced by ``torch.compile``;
* the call that modules and the functional API share (``run``), where a call's arguments are
  checked once.

A forward-only family (``poisson.py``, the Poisson encoder) has no backward, nothing saved and
no autograd Function; the rest applies. The reference form of each family is in
:mod:`fastlif.reference` (the encoder's: the tutorial's draw, ``poisson.tutorial_draw``); what
the families share (dtype policy, argument checks, pointers for C++) is in
:mod:`fastlif.ops.common`.
"""
