"""Determinism: the same inputs give bitwise the same spikes, membranes and gradients, run after
run, and on CPU whether the kernels run on 1 or 2 OpenMP threads (fastlif hands
torch.get_num_threads() to the C++ kernels; parameter gradients, sums over batch and time, are
reduced in a fixed order).

Shapes are chosen so that the work really splits: 40 rows of 300 neurons are 80 items of at
most 256 neurons for the C++ kernel's parallel loop.
"""
import pytest
import torch

import fastlif
from conftest import DEVICES

# 36 x 40 x 300 = 432,000 neuron-steps: enough work (3 grains of 2**17) that the C++
# kernel really runs on 2 threads, split into 80 items.
T, BATCH, N = 36, (8, 5), 300
CONFIGS = [
    dict(reset_mechanism="subtract", reset_delay=True, per_neuron=True),
    dict(reset_mechanism="subtract", reset_delay=False, per_neuron=False),
    dict(reset_mechanism="zero", reset_delay=False, per_neuron=True),
    dict(reset_mechanism="none", reset_delay=True, per_neuron=False),
]


def run_sequence(device, reset_mechanism, reset_delay, per_neuron, dtype=torch.float32):
    """lif_sequence forward and backward with random upstream gradients for both outputs."""
    g = torch.Generator().manual_seed(42)
    shape = (T, *BATCH, N)
    pshape = (N,) if per_neuron else ()

    def rand(*s, lo=0.0, hi=1.0):
        return (torch.rand(s, generator=g, dtype=dtype) * (hi - lo) + lo).to(device)

    x = rand(*shape, lo=-0.5, hi=1.5).requires_grad_()
    mem0 = rand(*BATCH, N, lo=-1, hi=1).requires_grad_()
    beta = rand(*pshape, lo=0.5, hi=1).requires_grad_()
    thr = rand(*pshape, lo=0.5, hi=1.5).requires_grad_()
    graded = rand(*pshape, lo=0.5, hi=2).requires_grad_()
    g_spk, g_mem = rand(*shape, lo=-1, hi=1), rand(*shape, lo=-1, hi=1)
    spk, mem = fastlif.lif_sequence(x, beta, thr, mem=mem0, reset_mechanism=reset_mechanism,
                                    reset_delay=reset_delay, graded_spikes_factor=graded,
                                    surrogate=fastlif.surrogate.fast_sigmoid())
    torch.autograd.backward((spk, mem), (g_spk, g_mem))
    return [spk.detach(), mem.detach(), x.grad, mem0.grad, beta.grad, thr.grad, graded.grad]


def run_leaky(device):
    """A training-style step through two multi-step Leaky layers with learnable parameters."""
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(T, 40, N, generator=g) * 1.2).to(device).requires_grad_()
    layers = [fastlif.Leaky(torch.linspace(0.6, 0.95, N), threshold=torch.full((N,), 0.8),
                            learn_beta=True, learn_threshold=True, step_mode="multi",
                            reset_delay=False).to(device),
              fastlif.Leaky(0.9, learn_beta=True, learn_threshold=True, step_mode="multi",
                            reset_mechanism="zero").to(device)]
    spk1, mem1 = layers[0](x)
    spk2, mem2 = layers[1](spk1 * 0.7 + mem1 * 0.5)
    (spk2.sum() + (mem2 * mem2).mean()).backward()
    return [spk2.detach(), mem2.detach(), x.grad] + [p.grad for lif in layers
                                                     for p in (lif.beta, lif.threshold)]


def assert_bitwise_equal(a, b, what):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        assert u is not None and v is not None, f"{what}: output {i} missing"
        assert u.dtype == v.dtype and u.shape == v.shape
        assert torch.equal(u, v), f"{what}: output {i} differs (max {(u - v).abs().max()})"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_cpu_bitwise_across_runs_and_threads(config, restore_threads):
    results = {}
    for threads in (1, 2, 2, 1):
        torch.set_num_threads(threads)
        out = run_sequence("cpu", **config)
        if threads in results:
            assert_bitwise_equal(results[threads], out, f"run after run, {threads} thread(s)")
        results[threads] = out
    assert results[1][0].any() and not results[1][0].all()
    assert_bitwise_equal(results[1], results[2], "1 vs 2 threads")


def test_cpu_fp64_bitwise_across_threads(restore_threads):
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(run_sequence("cpu", "subtract", False, True, dtype=torch.float64))
    assert_bitwise_equal(*outs, "fp64, 1 vs 2 threads")


def test_cpu_leaky_layers_bitwise_across_threads(restore_threads):
    outs = []
    for threads in (2, 1, 2):
        torch.set_num_threads(threads)
        outs.append(run_leaky("cpu"))
    assert_bitwise_equal(outs[0], outs[1], "Leaky, 2 vs 1 threads")
    assert_bitwise_equal(outs[0], outs[2], "Leaky, run after run")


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_cuda_bitwise_run_after_run(device, config):
    first = run_sequence(device, **config)
    assert_bitwise_equal(first, run_sequence(device, **config), "run after run")
    assert_bitwise_equal(run_leaky(device), run_leaky(device), "Leaky, run after run")
