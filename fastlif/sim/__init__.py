"""``fastlif.sim``: populations of LIF neurons in physical units, Numba-compiled, equal to Brian2
spike for spike (api.md section 4). An application on top of fastlif's core, which never
imports it; it needs the ``[sim]`` extra (Numba)."""
from .lif import LIFResult, simulate_lif, tutorial_current_step

__all__ = ["simulate_lif", "LIFResult", "tutorial_current_step"]
