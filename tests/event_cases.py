"""Inputs shared by the event-driven layers' tests (SpikeLinear, SpikeConv2d)."""
import torch

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
KINDS = ("bool", "binary", "graded", "real")


def make_input(shape, density, kind, dtype=torch.float32, seed=0):
    """``kind``: bool spikes, 0/1 spikes as floats, graded spikes (random positive values at the
    non-zeros) or any real values (a random sign and size at the non-zeros)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < density
    if kind == "bool":
        return mask
    if kind == "binary":
        return mask.to(dtype)
    values = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
    if kind == "real":
        values = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    return (mask * values).to(dtype)
