"""fastlif.encode.poisson is the tutorial's poisson_encode (same draw, same spikes)."""
import pytest
import torch

from fastlif import encode


def tutorial_poisson_encode(images, num_steps, max_rate_hz=100.0, dt=1e-3, rng=None):
    """The tutorial's function, verbatim (section 3): the oracle."""
    if images.dim() > 2:
        B = images.size(0)
        N = images[0].numel()
        flat = images.view(B, -1)
    else:
        B, N = images.shape
        flat = images

    if rng is None:
        rng = torch.Generator(device=images.device)

    lam = flat * max_rate_hz               # [B, N]
    p = torch.clamp(lam * dt, 0.0, 1.0)    # [B, N]

    # sample T independent Bernoulli trials per pixel
    rand = torch.rand((num_steps, B, N), generator=rng, device=images.device)
    spikes = rand < p                       # [T, B, N], bool
    return spikes


@pytest.mark.parametrize("shape, num_steps, rate, dt", [
    ((8, 1, 28, 28), 50, 100.0, 1e-3),
    ((5, 784), 13, 100.0, 1e-3),
    ((3, 2, 4, 4), 7, 400.0, 2e-3),     # p up to 0.8
    ((2, 10), 9, 2000.0, 1e-3),         # p clamped at 1
    ((4, 6), 0, 100.0, 1e-3),           # no steps
])
def test_identical_to_tutorial(shape, num_steps, rate, dt):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    ours = encode.poisson(images, num_steps, max_rate_hz=rate, dt=dt,
                          rng=torch.Generator().manual_seed(42))
    oracle = tutorial_poisson_encode(images, num_steps, max_rate_hz=rate, dt=dt,
                                     rng=torch.Generator().manual_seed(42))
    assert ours.dtype == torch.bool
    assert ours.shape == (num_steps, shape[0], oracle.shape[-1])
    assert torch.equal(ours, oracle)


def test_generator_state_advances_the_same_way():
    images = torch.rand(4, 1, 28, 28)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):  # successive batches, as in a training loop
        assert torch.equal(encode.poisson(images, 10, rng=g1), tutorial_poisson_encode(images, 10, rng=g2))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_float64_and_non_contiguous_images():
    images = torch.rand(3, 28, 28, dtype=torch.float64)
    assert torch.equal(encode.poisson(images, 5, rng=torch.Generator().manual_seed(0)),
                       tutorial_poisson_encode(images, 5, rng=torch.Generator().manual_seed(0)))
    nc = torch.rand(28, 28, 3).permute(2, 0, 1)  # tutorial's .view would fail; same values here
    ref = tutorial_poisson_encode(nc.contiguous(), 5, rng=torch.Generator().manual_seed(0))
    assert torch.equal(encode.poisson(nc, 5, rng=torch.Generator().manual_seed(0)), ref)


def test_rng_none_uses_the_global_generator():
    images = torch.full((2, 50), 0.5)
    torch.manual_seed(3)
    a = encode.poisson(images, 20)
    b = encode.poisson(images, 20)
    torch.manual_seed(3)
    assert torch.equal(encode.poisson(images, 20), a)
    assert not torch.equal(a, b)  # a fresh realisation every call (the tutorial's intent)


def test_rate():
    images = torch.tensor([[0.0, 0.25, 1.0]])
    spk = encode.poisson(images, 20000, max_rate_hz=100.0, dt=1e-3, rng=torch.Generator().manual_seed(0))
    rate = spk.float().mean(0)[0]
    assert rate[0] == 0
    assert abs(rate[1] - 0.025) < 0.005 and abs(rate[2] - 0.1) < 0.01


def test_validation():
    images = torch.rand(2, 4)
    with pytest.raises(ValueError, match="num_steps"):
        encode.poisson(images, -1)
    with pytest.raises(TypeError, match="num_steps"):
        encode.poisson(images, 2.5)
    with pytest.raises(TypeError, match="images"):
        encode.poisson([[0.1]], 3)
    with pytest.raises(ValueError, match="batch"):
        encode.poisson(torch.rand(4), 3)
    with pytest.raises(TypeError, match="rng"):
        encode.poisson(images, 3, rng=0)


def test_lazy_attribute():
    import fastlif
    assert fastlif.encode.poisson is encode.poisson
