"""Data for the demo: MNIST as the tutorial loads it, or an offline stand-in.

MNIST (``dataset="mnist"``) is loaded exactly as the tutorial does:
``torchvision.datasets.MNIST(root=data_dir, download=True, transform=ToTensor())`` for the
train and test sets (downloaded once, then read from ``data_dir/MNIST/raw``), and a random
training subset of ``subset`` images (the tutorial's ``torch.randperm(60000)[:10000]``,
here drawn from a generator seeded with ``seed`` so runs are reproducible).

Digits (``dataset="digits"``) is the offline stand-in: scikit-learn's bundled handwritten
digits (1797 images, 8x8 pixels, integer values 0..16, ten classes), which need no
download. Each image is brought into MNIST's format the way MNIST itself was made: values
scaled to [0, 1] (divided by 16), resized bilinearly to 20x20 (MNIST's digit box) and padded
with 4 zero pixels on each side to 28x28, as ``[1, 28, 28]`` float32 like ``ToTensor()``
gives. The split is fixed (independent of ``seed``): a permutation from a generator seeded
with 0 puts 360 images (20 %) in the test set (centred, as above) and 1437 in the training
set. 1437 images would make an epoch ~7x shorter than the tutorial's 10k, so the training
pool holds every training image at the 9 offsets of -1/0/+1 pixel in x and y (12933
images, a standard shift augmentation; test images are never shifted and never in it), and
``subset`` draws from that pool like for MNIST.

``dataset="auto"`` (the demo's default) tries MNIST (saying so when it has to download it)
and, when it cannot be had (offline, or a download error), prints one line saying so and
uses digits.

Both give a :class:`DataSplit` of in-memory tensors; :func:`batches` iterates over them
like the tutorial's ``DataLoader(..., shuffle=True, drop_last=True)`` without the per-item
overhead of a Dataset.
"""
import contextlib
import io
import os
import socket
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DataSplit", "DatasetUnavailable", "load", "load_mnist", "load_digits", "mnist_datasets",
           "mnist_cached", "to_tensors", "batches", "num_batches", "DIGITS_TEST_SIZE"]

DIGITS_TEST_SIZE = 360
DIGITS_SHIFTS = (-1, 0, 1)
DOWNLOAD_TIMEOUT_S = 30


@dataclass
class DataSplit:
    """Train and test tensors: images ``[N, 1, 28, 28]`` float32 in [0, 1], labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str          # "MNIST" or "digits"
    source: str        # where it came from, for the console

    def __repr__(self):
        return (f"DataSplit({self.name}: {len(self.train_y)} train, {len(self.test_y)} test, "
                f"from {self.source})")


class DatasetUnavailable(RuntimeError):
    """MNIST could not be loaded (not cached and not downloadable)."""


def _subset_indices(n, subset, seed):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    if subset is None or subset <= 0 or subset >= n:
        return perm
    return perm[:subset]


def mnist_cached(data_dir):
    """Whether torchvision's raw MNIST files are already in ``data_dir`` (no download needed)."""
    raw = os.path.join(str(data_dir), "MNIST", "raw")
    return all(os.path.isfile(os.path.join(raw, f"{prefix}-{kind}-idx{dim}-ubyte"))
               for prefix in ("train", "t10k") for kind, dim in (("images", 3), ("labels", 1)))


# The hosts of torchvision's MNIST mirrors (torchvision.datasets.MNIST.mirrors), looked up before
# torchvision is imported: offline, none resolves, and the demo falls back at once instead of
# importing torchvision (about 1.5 s) only to fail on its first request.
MNIST_MIRROR_HOSTS = ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com")


def unreachable_reason(hosts=MNIST_MIRROR_HOSTS):
    """None if one of ``hosts`` resolves, else why not (the last lookup's error)."""
    reason = "no host to try"
    for host in hosts:
        try:
            socket.getaddrinfo(host, 443)
            return None
        except OSError as err:
            reason = err.strerror or str(err)
    return reason


def mnist_datasets(data_dir="./data", subset=10000, seed=0, download=True):
    """The tutorial's objects: ``(Subset(MNIST train, random subset), MNIST test)``.

    Raises :class:`DatasetUnavailable` (with the reason) when MNIST is neither in
    ``data_dir`` nor downloadable. torchvision's own download messages are kept off the
    console; a download that gets no answer gives up after 30 s per request.
    """
    if download and not mnist_cached(data_dir):
        reason = unreachable_reason()
        if reason is not None:
            raise DatasetUnavailable(f"offline? {reason}")
    import torchvision
    from torch.utils.data import Subset
    from torchvision import transforms

    transform = transforms.ToTensor()  # keeps pixels in [0, 1]
    captured = io.StringIO()
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            train_ds = torchvision.datasets.MNIST(root=data_dir, train=True, download=download,
                                                  transform=transform)
            test_ds = torchvision.datasets.MNIST(root=data_dir, train=False, download=download,
                                                 transform=transform)
    except Exception as err:  # noqa: BLE001 - offline, mirror down, disk full: all mean "no MNIST"
        reason = " ".join(str(err).split())
        for hint in ("Name or service not known", "Temporary failure in name resolution",
                     "Network is unreachable", "timed out", "Connection refused"):
            if hint in reason:
                reason = f"offline? {hint}"
                break
        raise DatasetUnavailable(reason[:200]) from err
    finally:
        socket.setdefaulttimeout(old_timeout)
    indices = _subset_indices(len(train_ds), subset, seed)
    return Subset(train_ds, indices.tolist()), test_ds


def to_tensors(ds):
    """``(images [N, 1, 28, 28] float32, labels [N] int64)`` of an MNIST dataset or Subset of one.

    Equal to stacking ``ds[i]`` (``ToTensor()``: uint8 / 255 in float32) but without decoding
    one PIL image at a time.
    """
    from torch.utils.data import Subset

    indices = None
    base = ds
    if isinstance(ds, Subset):
        indices = torch.as_tensor(ds.indices, dtype=torch.long)
        base = ds.dataset
    data, targets = base.data, base.targets
    if indices is not None:
        data, targets = data[indices], targets[indices]
    images = data.unsqueeze(1).to(dtype=torch.get_default_dtype()).div(255)
    return images.contiguous(), targets.to(torch.long)


def load_mnist(data_dir="./data", subset=10000, seed=0, download=True):
    """MNIST as a :class:`DataSplit` (see :func:`mnist_datasets`)."""
    train_ds, test_ds = mnist_datasets(data_dir, subset, seed, download)
    train_x, train_y = to_tensors(train_ds)
    test_x, test_y = to_tensors(test_ds)
    return DataSplit(train_x, train_y, test_x, test_y, "MNIST",
                     os.path.join(str(data_dir), "MNIST"))


def digits_to_mnist_format(images8, dy=0, dx=0):
    """scikit-learn digit images ``[N, 8, 8]`` (values 0..16) -> ``[N, 1, 28, 28]`` float32 in [0, 1].

    Scale to [0, 1], bilinear resize to MNIST's 20x20 digit box, zero-pad 4 pixels a side
    (the box moved by ``dy``, ``dx`` pixels, |dy|, |dx| <= 4).
    """
    x = torch.as_tensor(images8, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0)
    return F.pad(x, (4 + dx, 4 - dx, 4 + dy, 4 - dy)).contiguous()


def sklearn_digits():
    """``(images [1797, 8, 8] float64, targets [1797] int)``: ``sklearn.datasets.load_digits()``.

    Reads scikit-learn's bundled ``digits.csv.gz`` directly when it can find it, which
    saves importing scikit-learn (seconds); otherwise asks scikit-learn.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise DatasetUnavailable("scikit-learn is not installed (pip install scikit-learn), so the "
                                 "offline digits are not available either")
    for folder in spec.submodule_search_locations or []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            table = np.loadtxt(path, delimiter=",")
            if table.shape == (1797, 65):
                return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn.datasets import load_digits as _sk_load_digits
    bunch = _sk_load_digits()
    return bunch.images, bunch.target


def load_digits(subset=10000, seed=0, shifts=DIGITS_SHIFTS):
    """scikit-learn's handwritten digits in MNIST's format, as a :class:`DataSplit`.

    The test set is the 360 held-out images, centred. The training pool is the other 1437
    images at every offset ``(dy, dx)`` in ``shifts x shifts`` (default -1, 0, +1 pixel: 9
    copies, 12933 images), then ``subset`` of them drawn at random; ``shifts=(0,)`` gives
    the plain 1437.
    """
    images8, target = sklearn_digits()
    y = torch.as_tensor(target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test_idx, train_idx = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
    images8 = torch.as_tensor(images8, dtype=torch.float32)
    test_x = digits_to_mnist_format(images8[test_idx])
    train_x = torch.cat([digits_to_mnist_format(images8[train_idx], dy, dx)
                         for dy in shifts for dx in shifts])
    train_y = y[train_idx].repeat(len(shifts) ** 2)
    pick = _subset_indices(len(train_y), subset, seed)
    return DataSplit(train_x[pick].contiguous(), train_y[pick], test_x, y[test_idx], "digits",
                     "scikit-learn's bundled 8x8 digits, upscaled to 28x28")


def load(dataset="auto", data_dir="./data", subset=10000, seed=0, log=print):
    """Load ``"mnist"``, ``"digits"`` or ``"auto"`` (MNIST, else digits with a one-line note).

    ``dataset="mnist"`` raises :class:`DatasetUnavailable` when MNIST cannot be had.
    """
    if dataset not in ("auto", "mnist", "digits"):
        raise ValueError(f"dataset must be 'auto', 'mnist' or 'digits', got {dataset!r}")
    if dataset in ("auto", "mnist"):
        if not mnist_cached(data_dir) and log is not None:
            log(f"MNIST is not in {os.path.join(str(data_dir), 'MNIST')}: downloading it (once, ~12 MB) ...")
        try:
            return load_mnist(data_dir, subset, seed)
        except DatasetUnavailable as err:
            if dataset == "mnist":
                raise
            if log is not None:
                log(f"MNIST could not be downloaded ({err}); using scikit-learn's digits instead "
                    f"(8x8 upscaled to 28x28; --dataset digits skips this attempt).")
    return load_digits(subset, seed)


def batches(x, y, batch_size, *, shuffle=False, drop_last=False, generator=None):
    """Yield ``(x[idx], y[idx])`` mini-batches, like ``DataLoader(TensorDataset(x, y), ...)``."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def num_batches(n, batch_size, drop_last=False):
    return n // batch_size if drop_last else -(-n // batch_size)
