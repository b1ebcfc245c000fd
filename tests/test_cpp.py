"""The fused C++ CPU kernels against the reference loop: every option, awkward shapes."""
import pytest
import torch

import fastlif
from lif_cases import (SURROGATES, assert_grads_close, fused, make_input, make_params,
                       option_grid, reference, run)

pytestmark = pytest.mark.skipif("cpp" not in fastlif.backends.available("cpu"),
                                reason="the C++ extension fastlif._C is not built")
cpp = fused("cpp")


def compare(shape, reset, delay, sg_name, layout, with_mem0=True, dtype=torch.float32, seed=0,
            x=None, grad_tol=1e-5):
    x = make_input(shape, dtype, seed) if x is None else x
    params = make_params(shape[-1], layout, dtype, seed)
    mem0 = make_input(shape[1:], dtype, seed + 1) if with_mem0 else None
    upstream = (make_input(shape, dtype, seed + 2), make_input(shape, dtype, seed + 3))
    opts = dict(reset_mechanism=reset, reset_delay=delay, surrogate=SURROGATES[sg_name])
    spk_f, mem_f, grads_f = run(cpp, x, params, mem0, upstream, **opts)
    spk_r, mem_r, grads_r = run(reference, x, params, mem0, upstream, **opts)
    assert torch.equal(spk_f, spk_r), "spikes differ"
    assert torch.equal(mem_f, mem_r), f"membrane differs (max {(mem_f - mem_r).abs().max():.3g})"
    assert spk_f.dtype == x.dtype and mem_f.shape == x.shape
    assert_grads_close(grads_f, grads_r, grad_tol)
    return spk_f


@pytest.mark.parametrize("reset,delay,sg_name,layout", option_grid())
def test_every_option_fp32(reset, delay, sg_name, layout):
    spk = compare((17, 3, 37), reset, delay, sg_name, layout)
    assert 0 < spk.count_nonzero() < spk.numel(), "inputs should make some, not all, neurons spike"


@pytest.mark.parametrize("reset,delay,sg_name,layout", option_grid()[::5])
def test_every_option_fp64(reset, delay, sg_name, layout):
    compare((9, 2, 21), reset, delay, sg_name, layout, dtype=torch.float64, grad_tol=1e-10)


@pytest.mark.parametrize("shape", [(1, 4, 5), (63, 2, 7), (5, 300), (4, 2, 513), (6, 3, 2, 5),
                                   (3, 2, 3, 4, 5), (2, 1, 1)])
@pytest.mark.parametrize("layout", ["scalar", "per_neuron"])
@pytest.mark.parametrize("delay", [True, False])
def test_shapes(shape, layout, delay):
    """T=1 and T=63; neuron counts that are no multiple of the kernel's 256-neuron chunk;
    1-D to 4-D neuron shapes."""
    compare(shape, "subtract", delay, "atan", layout)


@pytest.mark.parametrize("with_mem0", [True, False])
def test_without_initial_membrane(with_mem0):
    compare((8, 4, 9), "zero", False, "fast_sigmoid", "per_neuron", with_mem0=with_mem0)


def test_non_contiguous_input():
    big = make_input((12, 5, 40))
    x = big[::2, :, 3:30:2]  # strided in time and neurons
    assert not x.is_contiguous()
    compare(tuple(x.shape), "subtract", True, "atan", "per_neuron", x=x)
    compare(tuple(x.shape), "zero", False, "sigmoid", "scalar", x=x.transpose(1, 2).transpose(1, 2))


def test_only_some_parameters_learnable():
    x = make_input((6, 3, 8)).requires_grad_()
    beta = torch.tensor(0.9, requires_grad=True)
    spk, mem = fastlif.lif_sequence(x, beta, 1.0, backend="cpp")
    gx, gb = torch.autograd.grad(spk.sum() + mem.sum(), [x, beta])
    rx = x.detach().clone().requires_grad_()
    rb = beta.detach().clone().requires_grad_()
    spk_r, mem_r = fastlif.lif_sequence(rx, rb, 1.0, backend="reference")
    hx, hb = torch.autograd.grad(spk_r.sum() + mem_r.sum(), [rx, rb])
    torch.testing.assert_close(gx, hx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb, hb, rtol=1e-5, atol=1e-5)


def test_spikes_only_or_membrane_only_gradient():
    """An unused output gets no upstream gradient: backward must treat it as zeros."""
    for pick in (0, 1):
        x = make_input((7, 2, 6)).requires_grad_()
        out = fastlif.lif_sequence(x, 0.8, backend="cpp")[pick]
        (g,) = torch.autograd.grad(out.sum(), [x])
        xr = x.detach().clone().requires_grad_()
        outr = fastlif.lif_sequence(xr, 0.8, backend="reference")[pick]
        (gr,) = torch.autograd.grad(outr.sum(), [xr])
        torch.testing.assert_close(g, gr, rtol=1e-5, atol=1e-6)


def test_threshold_on_the_spike_edge():
    """Values that land exactly on the threshold: strict z > 0 fires nothing there."""
    x = torch.tensor([[1.0, 0.5, 0.25]] * 4).unsqueeze(1)  # [T=4, B=1, 3]
    compare(tuple(x.shape), "subtract", True, "atan", "scalar", x=x)
