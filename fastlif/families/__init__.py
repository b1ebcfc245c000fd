"""The neuron families described by a :class:`fastlif.family.Family` spec, one module each: its
spec and its reference step (the peer's operation order). Its C++ step is
``csrc/families/<name>.cpp``, its Triton step ``kernels/<name>.py``; everything else is generic
(:mod:`fastlif.family`). Importing a family module registers it."""
