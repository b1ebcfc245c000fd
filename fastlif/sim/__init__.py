"""``fastlif.sim``: populations of LIF neurons in physical units, Numba-compiled, equal to Brian2
spike for spike (api.md section 4): independent neurons (``simulate_lif``) and recurrent
CUBA/COBA networks (``simulate_network``). An application on top of fastlif's core, which
never imports it; it needs the ``[sim]`` extra (Numba)."""
from .lif import LIFResult, simulate_lif, tutorial_current_step
from .network import (Input, NetworkResult, Projection, coba_params, cuba_params,
                      poisson_spikes, random_connections, simulate_network)

__all__ = ["simulate_lif", "LIFResult", "tutorial_current_step", "simulate_network",
           "NetworkResult", "Projection", "Input", "random_connections", "poisson_spikes",
           "cuba_params", "coba_params"]
