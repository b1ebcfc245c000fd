"""Autocast (bf16 on CPU; bf16 and fp16 on CUDA): activations arrive in low precision, but the
membrane, the neuron's state, stays fp32.

So a low-precision run equals the fp32 computation on the low-precision inputs: the same
spikes, the membrane rounded only on output. The decisive case is a neuron integrating a small
input: in bf16 (8 significant bits) 0.5 + 2**-9 rounds back to 0.5 (and in fp16, 0.5 + 2**-12),
so a low-precision state stalls and never fires, where an fp32 state reaches the threshold.
"""
import pytest
import torch
from torch import nn

import fastlif
from conftest import needs_cuda

CASES = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
         pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=needs_cuda),
         pytest.param("cuda", torch.float16, id="cuda-fp16", marks=needs_cuda)]

# Half a unit in the last place of 0.5: a state in that dtype stays at 0.5 forever.
STEP = {torch.bfloat16: 2.0 ** -9, torch.float16: 2.0 ** -12}


def slow_input(device, dtype, batch=2, n=3):
    """A Linear that turns ones into ``STEP`` (half of it in the last neuron), and ones for
    enough steps that an fp32 state crosses a threshold of 1 (after 1/STEP + 1 steps)."""
    step = STEP[dtype]
    lin = nn.Linear(1, n, bias=False).to(device)
    with torch.no_grad():
        lin.weight.fill_(step)
        lin.weight[-1] = step / 2
    return lin, torch.ones(int(1 / step) + 50, batch, 1, device=device)


def reference(x_low, **kwargs):
    """The fp32 computation on the low-precision input values."""
    with torch.autocast(x_low.device.type, enabled=False):
        return fastlif.lif_sequence_reference(x_low.float(), **kwargs)


@pytest.mark.parametrize("device,dtype", CASES)
def test_fused_sequence_state_is_fp32(device, dtype):
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(20, 16).to(device)
    x = torch.rand(30, 4, 20, generator=g).to(device)
    beta = torch.rand(16, generator=g).to(device)
    with torch.autocast(device, dtype=dtype):
        h = lin(x)
        spk, mem = fastlif.lif_sequence(h, beta, 0.5, reset_delay=False)
    assert h.dtype == dtype, "autocast should hand the layer low-precision activations"
    assert spk.dtype == dtype and mem.dtype == dtype  # outputs in the activations' dtype
    ref_spk, ref_mem = reference(h, beta=beta, threshold=0.5, reset_delay=False)
    assert ref_spk.any()
    assert torch.equal(spk.float(), ref_spk)
    assert torch.equal(mem, ref_mem.to(dtype))

    lin, ones = slow_input(device, dtype)
    with torch.autocast(device, dtype=dtype):
        spk, _ = fastlif.lif_sequence(lin(ones), 1.0)
    ref_spk, _ = reference(lin(ones).to(dtype), beta=1.0)
    assert ref_spk[:, :, 0].sum() > 0 and ref_spk[:, :, -1].sum() == 0
    assert torch.equal(spk.float(), ref_spk), "a low-precision state stalls below threshold"


@pytest.mark.parametrize("device,dtype", CASES)
def test_leaky_multi_step_keeps_fp32_state(device, dtype):
    """init_hidden=True in nn.Sequential: the membrane kept between calls is fp32, and two
    chunks of a sequence give what the whole sequence gives."""
    lin, ones = slow_input(device, dtype)
    lif = fastlif.Leaky(1.0, init_hidden=True, step_mode="multi").to(device)
    net = nn.Sequential(lin, lif)
    half = len(ones) // 2
    with torch.autocast(device, dtype=dtype):
        first = net(ones[:half])
        assert lif.mem.dtype == torch.float32, "the state kept between calls must stay fp32"
        second = net(ones[half:])
    ref_spk, ref_mem = reference(lin(ones).to(dtype), beta=1.0)
    assert torch.equal(lif.mem, ref_mem[-1])
    assert torch.equal(torch.cat([first, second]).float(), ref_spk)


@pytest.mark.parametrize("device,dtype", CASES)
def test_leaky_single_step_keeps_fp32_state(device, dtype):
    """Step by step (snnTorch's loop), the membrane carried from step to step stays fp32:
    the loop equals the fused sequence."""
    lin, ones = slow_input(device, dtype, batch=1)
    lif = fastlif.Leaky(1.0).to(device)
    mem = lif.init_leaky()
    spikes = []
    with torch.autocast(device, dtype=dtype):
        h = lin(ones)
        for x_t in h:
            spk, mem = lif(x_t, mem)
            spikes.append(spk)
        assert mem.dtype == torch.float32, "the membrane carried between steps must stay fp32"
        fused_spk, fused_mem = fastlif.Leaky(1.0).to(device).sequence(h)
    assert torch.equal(torch.stack(spikes).float(), fused_spk.float())
    assert torch.equal(mem.to(fused_mem.dtype), fused_mem[-1])


@pytest.mark.parametrize("device,dtype", CASES)
def test_gradients_under_autocast(device, dtype):
    """Backward from low-precision upstream gradients: computed in fp32 (equal to the fp32
    reference on the same values), x's gradient in x's dtype, parameter gradients fp32."""
    g = torch.Generator().manual_seed(1)
    T, Bn, N = 25, 3, 12
    x_low = (torch.rand(T, Bn, N, generator=g) * 1.5).to(device=device, dtype=dtype)
    beta = torch.rand(N, generator=g).to(device)
    thr = (torch.rand(N, generator=g) + 0.5).to(device)
    g_spk, g_mem = (torch.randn(T, Bn, N, generator=g).to(device=device, dtype=dtype)
                    for _ in range(2))

    leaves = [x_low.clone().requires_grad_(), beta.clone().requires_grad_(),
              thr.clone().requires_grad_()]
    with torch.autocast(device, dtype=dtype):
        spk, mem = fastlif.lif_sequence(*leaves)
    torch.autograd.backward((spk, mem), (g_spk, g_mem))

    ref = [x_low.float().requires_grad_(), beta.clone().requires_grad_(),
           thr.clone().requires_grad_()]
    ref_spk, ref_mem = fastlif.lif_sequence_reference(ref[0], ref[1], ref[2])
    torch.autograd.backward((ref_spk, ref_mem), (g_spk.float(), g_mem.float()))

    assert torch.equal(spk.float(), ref_spk)
    assert leaves[0].grad.dtype == dtype
    assert leaves[1].grad.dtype == leaves[2].grad.dtype == torch.float32
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(leaves[0].grad.float(), ref[0].grad, rtol=eps, atol=1e-5)
    for got, want in zip(leaves[1:], ref[1:]):
        assert (got.grad - want.grad).abs().max() <= 1e-4 * want.grad.abs().max()
