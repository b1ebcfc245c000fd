"""The option grids of the LIF equivalence tests (the harness itself is fastlif.testing)."""
import itertools

from fastlif import surrogate as sg

RESETS = ("subtract", "zero", "none")
SURROGATES = {
    "atan": sg.atan(2.0), "fast_sigmoid": sg.fast_sigmoid(25),
    # slope 5: snnTorch's sigmoid formula overflows (inf/inf = nan) for z < -88/slope, and with
    # slope 25 random test membranes get there; the formula is the same.
    "sigmoid": sg.sigmoid(5),
    "triangular": sg.triangular(1), "ste": sg.straight_through_estimator(), "disabled": sg.no_grad(),
}
# which parameters are per neuron (last dimension) rather than scalars
PARAM_LAYOUTS = ("scalar", "per_neuron", "mixed")


def option_grid():
    return list(itertools.product(RESETS, (True, False), SURROGATES, PARAM_LAYOUTS))
