"""Triton GPU kernels, installed as ``fastlif.kernels``. See ``lif.py``."""
