"""The one timer of fastlif's harness (``fastlif check``, the demo's epoch timing, ``bench/``):
wall time of a call, after warm-up calls, synchronising CUDA around each sample."""
import statistics
import time

import torch


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_samples(fn, *, device="cpu", warmup=2, repeat=10, min_time_s=0.0, max_repeat=None):
    """``fn()``'s wall times in milliseconds, in the order taken.

    Runs ``warmup`` calls, then at least ``repeat`` timed ones, and keeps going until
    ``min_time_s`` of measurement has passed (at most ``max_repeat`` samples), so fast cases
    get enough samples.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    start = time.perf_counter()
    while len(samples) < repeat or (time.perf_counter() - start < min_time_s
                                    and (max_repeat is None or len(samples) < max_repeat)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def summarize(samples):
    """``(median, q20, q80)`` of wall times."""
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=5) if len(samples) > 1 else samples * 4
    return statistics.median(samples), q[0], q[3]


def time_call(fn, *, device="cpu", warmup=2, repeat=10, min_time_s=0.0, max_repeat=None):
    """``(median, q20, q80)`` of ``fn()``'s wall time in milliseconds (:func:`time_samples`)."""
    return summarize(time_samples(fn, device=device, warmup=warmup, repeat=repeat, min_time_s=min_time_s,
                                  max_repeat=max_repeat))
