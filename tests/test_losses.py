"""fastlif.losses.ce_count_loss equals snntorch.functional.ce_count_loss (value and gradient)."""
import pytest
import torch

from fastlif import losses

SF = pytest.importorskip("snntorch.functional")


def _spikes(shape, seed, graded=False):
    g = torch.Generator().manual_seed(seed)
    spk = torch.rand(shape, generator=g)
    spk = spk if graded else (spk < 0.3).float()
    return spk.requires_grad_(True)


@pytest.mark.parametrize("kwargs", [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": torch.linspace(0.5, 2.0, 10)},
    {"weight": torch.linspace(0.5, 2.0, 10), "reduction": "sum"},
])
@pytest.mark.parametrize("graded", [False, True])
def test_equal_to_snntorch(kwargs, graded):
    targets = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    ours_in, theirs_in = _spikes((25, 16, 10), 0, graded), _spikes((25, 16, 10), 0, graded)
    ours = losses.ce_count_loss(**kwargs)(ours_in, targets)
    theirs = SF.ce_count_loss(**kwargs)(theirs_in, targets)
    assert torch.equal(ours, theirs)
    grad_out = torch.rand_like(ours)
    ours.backward(grad_out)
    theirs.backward(grad_out)
    assert torch.equal(ours_in.grad, theirs_in.grad)


def test_population_code():
    targets = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))
    a, b = _spikes((12, 8, 20), 3), _spikes((12, 8, 20), 3)
    ours = losses.ce_count_loss(population_code=True, num_classes=5)(a, targets)
    theirs = SF.ce_count_loss(population_code=True, num_classes=5)(b, targets)
    assert torch.equal(ours, theirs)
    ours.backward()
    theirs.backward()
    assert torch.equal(a.grad, b.grad)


def test_errors():
    with pytest.raises(ValueError, match="num_classes"):
        losses.ce_count_loss(population_code=True)
    with pytest.raises(ValueError, match="multiple"):
        losses.ce_count_loss(population_code=True, num_classes=3)(torch.ones(2, 2, 10), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        losses.ce_count_loss(reduction="avg")
