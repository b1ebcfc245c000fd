"""The output pool (csrc/pool.cpp, fastlif.ops.common.cpu_empty; api.md section 3, "Threads
and memory"): the C++ launchers take their outputs and saved tensors from memory fastlif keeps
for reuse, so that a training loop does not fault the same pages in on every call with glibc's
default allocator settings. What must hold:

* a pooled tensor's memory is never handed out again while any view of it is alive;
* results are the same bits with the pool on and off;
* in a steady loop the fused calls reuse their memory (hits, no page faults);
* the limit is kept, and the settings' errors name the problem.
"""
import gc
import os
import resource
import subprocess
import sys
import threading

import pytest
import torch

import fastlif
from fastlif import backends
from fastlif.ops import common

pytestmark = pytest.mark.skipif(backends._cpp_status()[0] is None, reason="no C++ extension")

# The tutorial's size: each output (1.6 MiB) is far above the pool's minimum.
T, B, N = 50, 64, 128


@pytest.fixture
def pool_limit():
    """The pool on (whatever FASTLIF_CPU_CACHE_MB says: the sanitizer run sets it to 0, so that
    the other tests' outputs come from the instrumented malloc), and the environment's limit
    restored after the test."""
    common.set_cpu_cache_limit(1 << 30)
    yield
    common.set_cpu_cache_limit(common._env_cache_limit())


def _fwd_bwd(x, g, **kw):
    xx = x.detach().requires_grad_()
    spk, mem = fastlif.lif_sequence(xx, 0.9, **kw)
    torch.autograd.backward([spk, mem], [g, g])
    return spk.detach(), mem.detach(), xx.grad


def test_outputs_come_from_the_pool_and_return_to_it(pool_limit):
    common.empty_cpu_cache()
    x = torch.randn(T, B, N)
    before = common.cpu_cache_stats()
    spk, mem = fastlif.lif_sequence(x, 0.9)
    during = common.cpu_cache_stats()
    assert during["in_use_bytes"] - before["in_use_bytes"] >= 2 * x.numel() * 4
    del spk, mem
    gc.collect()
    after = common.cpu_cache_stats()
    assert after["in_use_bytes"] == before["in_use_bytes"]
    assert after["cached_bytes"] >= 2 * x.numel() * 4
    fastlif.lif_sequence(x, 0.9)
    assert common.cpu_cache_stats()["hits"] >= after["hits"] + 2


def test_a_live_view_keeps_its_memory(pool_limit):
    """A view outliving its base must keep the memory: a later call may not write into it."""
    x = torch.randn(T, B, N)
    spk, mem = fastlif.lif_sequence(x, 0.9)
    view = mem[3, 5]
    kept = view.clone()
    del spk, mem
    gc.collect()
    for _ in range(3):  # calls that would reuse the block if it had been given back
        fastlif.lif_sequence(torch.randn(T, B, N) * 7, 0.5)
    assert torch.equal(view, kept)


@pytest.mark.parametrize("family", ["leaky", "leaky_immediate", "synaptic", "rleaky", "lapicque"])
def test_same_bits_with_the_pool_on_and_off(family, pool_limit):
    torch.manual_seed(0)
    x = torch.randn(T, B, N)
    g = torch.randn(T, B, N)

    def run():
        xx = x.detach().requires_grad_()
        if family.startswith("leaky"):
            outs = fastlif.lif_sequence(xx, 0.9, reset_delay=family == "leaky")
        elif family == "synaptic":
            outs = fastlif.synaptic_sequence(xx, 0.8, 0.9)[::2]
        elif family == "rleaky":
            outs = fastlif.RLeaky(0.9, V=0.3, all_to_all=False).sequence(xx)
        else:
            outs = fastlif.Lapicque(beta=0.9).sequence(xx)[:2]
        torch.autograd.backward(list(outs), [g] * len(outs))
        return [o.detach().clone() for o in outs] + [xx.grad.clone()]

    pooled = run()
    pooled_again = run()  # from reused blocks, which hold the previous call's values
    common.set_cpu_cache_limit(0)
    plain = run()
    for a, b, c in zip(pooled, pooled_again, plain):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_steady_loop_reuses_memory_without_page_faults(pool_limit):
    """The issue's point: with glibc's default settings a loop of fused forward+backward calls
    faults nothing in after the first calls."""
    x, g = torch.randn(T, B, N), torch.randn(T, B, N)
    for _ in range(3):
        _fwd_bwd(x, g)
    hits = common.cpu_cache_stats()["hits"]
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        _fwd_bwd(x, g)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20
    # 4 outputs of 1.6 MiB = 1,600 pages a call if each were faulted in afresh
    assert faults < 40, f"{faults:.0f} page faults per call"
    assert common.cpu_cache_stats()["hits"] - hits >= 20 * 3


def test_the_limit_is_kept(pool_limit):
    common.set_cpu_cache_limit(3 << 20)  # room for one 1.6 MiB block, not two
    outs = [fastlif.lif_sequence(torch.randn(T, B, N), 0.9) for _ in range(3)]
    del outs
    gc.collect()
    stats = common.cpu_cache_stats()
    assert stats["cached_bytes"] <= 3 << 20 and stats["evictions"] > 0
    common.empty_cpu_cache()
    assert common.cpu_cache_stats()["cached_bytes"] == 0
    assert common.cpu_cache_stats()["limit_bytes"] == 3 << 20  # emptying keeps the limit


def test_limit_zero_means_plain_tensors(pool_limit):
    common.set_cpu_cache_limit(0)
    in_use = common.cpu_cache_stats()["in_use_bytes"]
    spk, mem = fastlif.lif_sequence(torch.randn(T, B, N), 0.9)
    assert common.cpu_cache_stats()["in_use_bytes"] == in_use
    spk.resize_(spk.numel() * 2)  # an ordinary, resizable tensor


def test_small_outputs_skip_the_pool(pool_limit):
    in_use = common.cpu_cache_stats()["in_use_bytes"]
    spk, _ = fastlif.lif_sequence(torch.randn(4, 3, 5), 0.9)
    assert common.cpu_cache_stats()["in_use_bytes"] == in_use
    assert spk.untyped_storage().resizable()


def test_pooled_outputs_behave_as_tensors(tmp_path, pool_limit):
    spk, mem = fastlif.lif_sequence(torch.randn(T, B, N), 0.9)
    path = tmp_path / "mem.pt"
    torch.save(mem, path)
    assert torch.equal(torch.load(path), mem)
    assert mem.numpy().shape == (T, B, N)
    mem.add_(1)  # writable
    assert mem.data_ptr() % 64 == 0


def test_freed_on_another_thread(pool_limit):
    """Storage freed from a thread that is not the one that made it (autograd's, a loader's)."""
    outs = [fastlif.lif_sequence(torch.randn(T, B, N), 0.9) for _ in range(4)]
    before = common.cpu_cache_stats()["in_use_bytes"]

    def drop():
        outs.clear()
        gc.collect()

    t = threading.Thread(target=drop)
    t.start()
    t.join()
    assert common.cpu_cache_stats()["in_use_bytes"] <= before - 4 * 2 * T * B * N * 4


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="set_cpu_cache_limit"):
        fastlif.set_cpu_cache_limit(-1)
    with pytest.raises(ValueError, match="set_cpu_cache_limit"):
        fastlif.set_cpu_cache_limit(1.5)
    with pytest.raises(ValueError, match="PoolBlock: size must be positive"):
        backends.cpp_module().PoolBlock(0)
    code = "import torch, fastlif; fastlif.lif_sequence(torch.randn(50, 64, 128), 0.9)"
    env = dict(os.environ, FASTLIF_CPU_CACHE_MB="lots")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "FASTLIF_CPU_CACHE_MB must be a number of MiB" in r.stderr


def test_environment_sets_the_limit():
    code = ("import fastlif; s = fastlif.cpu_cache_stats(); "
            "print(s['limit_bytes'])")
    env = dict(os.environ, FASTLIF_CPU_CACHE_MB="64")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == 64 << 20


@pytest.mark.parametrize("family", ["lif", "rleaky"])
def test_nothing_saved_slots_are_shared_in_eager_and_fresh_from_the_custom_op(family):
    """A delayed reset saves no pre-reset membrane and no flags: the eager launcher hands back one
    shared empty tensor per dtype for those slots (no allocation a call), and the custom op that
    torch.compile sees gets fresh ones, so that no two calls' outputs alias."""
    from fastlif.ops import lif, rleaky
    x = torch.randn(3, 2, 5)
    if family == "lif":
        fwd = lambda: lif.cpp_fwd(x, None, 0.9, 1.0, 1.0, steps=3, reset_mode=0, reset_delay=True,  # noqa: E731
                                  low_memory=False, mem_fp32=True)
        op = lambda: lif.lif_fwd(x, None, *(torch.tensor([v]) for v in (0.9, 1.0, 1.0)), 3, 0, True,  # noqa: E731
                                 False, True, "cpp")
    else:
        fwd = lambda: rleaky.cpp_fwd(x, None, None, 0.9, 0.5, 1.0, 1.0, None, None, steps=3,  # noqa: E731
                                     reset_mode=0, reset_delay=True)
        op = lambda: rleaky.rleaky_fwd(x, None, None, *(torch.tensor([v]) for v in (0.9, 0.5, 1.0, 1.0)),  # noqa: E731
                                       None, None, 3, 0, True, "cpp")
    first, second, from_op = fwd(), fwd(), op()
    assert first[2].numel() == 0 and first[3].numel() == 0
    assert first[2] is second[2] and first[3] is second[3]
    assert from_op[2] is not first[2] and from_op[3] is not first[3]
    assert from_op[2].numel() == 0 and from_op[3].dtype == torch.uint8
    assert torch.equal(from_op[0], first[0]) and torch.equal(from_op[1], first[1])
