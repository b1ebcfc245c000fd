"""Data loading: the real torchvision MNIST path on small IDX files, and the offline digits."""
import socket
import struct

import numpy as np
import pytest
import torch

from fastlif.tutorial import data


def _write_idx_images(path, images):
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, *images.shape))
        f.write(images.astype(np.uint8).tobytes())


def _write_idx_labels(path, labels):
    with open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    """A tiny MNIST in torchvision's raw layout: root/MNIST/raw/{train,t10k}-*-ubyte."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sets = {}
    for prefix, n in (("train", 40), ("t10k", 12)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", imgs)
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        sets[prefix] = (imgs, labels)
    return tmp_path, sets


def test_mnist_from_idx_files(fake_mnist):
    root, sets = fake_mnist
    split = data.load("mnist", data_dir=str(root), subset=25, seed=3, log=None)
    assert split.name == "MNIST"
    assert split.train_x.shape == (25, 1, 28, 28) and split.train_x.dtype == torch.float32
    assert split.test_x.shape == (12, 1, 28, 28)
    assert split.train_y.dtype == torch.long
    # the subset is the tutorial's randperm(60000)[:subset], from a seeded generator
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:25]
    imgs, labels = sets["train"]
    assert torch.equal(split.train_x[:, 0], torch.from_numpy(imgs)[idx].float() / 255)
    assert torch.equal(split.train_y, torch.from_numpy(labels)[idx].long())
    test_imgs, test_labels = sets["t10k"]
    assert torch.equal(split.test_y, torch.from_numpy(test_labels).long())
    assert torch.equal(split.test_x[:, 0], torch.from_numpy(test_imgs).float() / 255)


def test_to_tensors_equals_totensor_items(fake_mnist):
    root, _ = fake_mnist
    train_ds, test_ds = data.mnist_datasets(str(root), subset=10, seed=0)
    x, y = data.to_tensors(train_ds)
    stacked = torch.stack([train_ds[i][0] for i in range(len(train_ds))])
    assert torch.equal(x, stacked)  # ToTensor(): uint8 / 255 in float32, bit for bit
    assert y.tolist() == [train_ds[i][1] for i in range(len(train_ds))]
    x, y = data.to_tensors(test_ds)
    assert torch.equal(x[3], test_ds[3][0])


def test_auto_falls_back_to_digits(monkeypatch):
    def offline(*args, **kwargs):
        raise data.DatasetUnavailable("offline? (Name or service not known)")
    monkeypatch.setattr(data, "mnist_datasets", offline)
    lines = []
    split = data.load("auto", subset=100, seed=0, log=lines.append)
    assert split.name == "digits" and len(split.train_y) == 100
    fallback = [line for line in lines if "digits" in line]
    assert len(fallback) == 1 and "MNIST" in fallback[0]  # one line says what happened
    with pytest.raises(data.DatasetUnavailable):
        data.load("mnist", log=None)


def test_digits_format_and_split():
    split = data.load_digits(subset=10000, seed=0)
    assert split.train_x.shape == (10000, 1, 28, 28)
    assert split.test_x.shape == (data.DIGITS_TEST_SIZE, 1, 28, 28)
    for x in (split.train_x, split.test_x):
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    # centred in a 20x20 box: a 4-pixel empty border on the test images
    border = split.test_x.clone()
    border[:, :, 4:24, 4:24] = 0
    assert border.abs().sum() == 0
    assert set(split.test_y.tolist()) == set(range(10))
    # the test set does not depend on the seed; the training subset does
    other = data.load_digits(subset=500, seed=1)
    assert torch.equal(other.test_x, split.test_x) and torch.equal(other.test_y, split.test_y)
    plain = data.load_digits(subset=0, shifts=(0,))
    assert len(plain.train_y) == 1797 - data.DIGITS_TEST_SIZE


def test_digits_scaling():
    img = np.zeros((1, 8, 8))
    img[0, 2:6, 3:5] = 16
    x = data.digits_to_mnist_format(img)
    assert x.shape == (1, 1, 28, 28) and float(x.max()) == 1.0
    shifted = data.digits_to_mnist_format(img, dy=1, dx=-1)
    assert torch.equal(shifted[0, 0, 1:, :-1], x[0, 0, :-1, 1:])


def test_batches():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    out = list(data.batches(x, y, 4))
    assert [len(b[1]) for b in out] == [4, 4, 2]
    out = list(data.batches(x, y, 4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in out] == [4, 4]
    seen = torch.cat([b[1] for b in out])
    assert len(set(seen.tolist())) == 8
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in out)
    assert data.num_batches(10, 4) == 3 and data.num_batches(10, 4, drop_last=True) == 2


def test_offline_is_found_before_torchvision_is_asked(monkeypatch, tmp_path):
    """With no MNIST cached and no mirror host resolving, mnist_datasets says "offline?" at once."""
    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(data.DatasetUnavailable, match="offline\\? Name or service not known"):
        data.mnist_datasets(str(tmp_path), subset=10)
    assert data.unreachable_reason(()) == "no host to try"


def test_cached_mnist_needs_no_lookup(fake_mnist, monkeypatch):
    root, _ = fake_mnist
    def no_dns(*args, **kwargs):
        raise AssertionError("looked up a host although MNIST is cached")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    train_ds, _ = data.mnist_datasets(str(root), subset=10, seed=0)
    assert len(train_ds) == 10
