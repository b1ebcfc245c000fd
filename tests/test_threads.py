"""Threads and memory (api.md section 3): the C++ kernels pick their team from the work of the
call (csrc/common.h, team_size), drop to one thread while the machine is busy, and advise
huge pages for large fresh outputs. None of it may change a bit:

* every family gives the same bits on a team of 1, 2 and 3 (more threads than cores);
* work just below and just above the grain (where the team goes from 1 to 2) gives the same
  bits, and the team really changes there;
* with another process spinning on every core, fused calls finish and give the same bits;
* fastlif.set_num_threads caps the team.
"""
import time

import pytest
import torch

import fastlif
import fastlif.encode
from fastlif import backends
from fastlif.testing import Spinners

pytestmark = pytest.mark.skipif(backends._cpp_status()[0] is None, reason="no C++ extension")


def _C():
    return backends.cpp_module()


@pytest.fixture
def policy():
    """The team policy, restored after the test (forced team off, adaptive on, default grain)."""
    before = _C()._team_policy()
    threads = torch.get_num_threads()
    yield _C()._team_policy
    _C()._team_policy(grain=before["default_grain"], forced=0, adaptive=1, huge=1)
    fastlif.set_num_threads(None)
    torch.set_num_threads(threads)


def _family_layer(family, N):
    if family == "leaky":
        return fastlif.Leaky(torch.linspace(0.6, 0.95, N), threshold=0.8, learn_beta=True, reset_delay=False)
    if family == "leaky_delayed":
        return fastlif.Leaky(0.9, learn_beta=True, learn_threshold=True)
    if family == "synaptic":
        return fastlif.Synaptic(alpha=0.9, beta=torch.linspace(0.7, 0.95, N), learn_alpha=True, learn_beta=True)
    if family == "rleaky":
        return fastlif.RLeaky(beta=0.9, V=0.5, all_to_all=False, learn_beta=True, learn_recurrent=True)
    if family == "rleaky_dense":
        torch.manual_seed(3)
        return fastlif.RLeaky(beta=0.9, linear_features=N, learn_beta=True)
    raise ValueError(family)


FAMILIES = ["leaky", "leaky_delayed", "synaptic", "rleaky", "rleaky_dense"]


def run_family(family, T=20, B=24, N=300, seed=0):
    """Forward and backward of a family's sequence: every output and every gradient."""
    layer = _family_layer(family, N)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N, generator=g) * 1.6 - 0.3).requires_grad_()
    outs = layer.sequence(x)
    grads = [torch.rand(o.shape, generator=g) * 2 - 1 for o in outs]
    torch.autograd.backward(list(outs), grads)
    return [o.detach() for o in outs] + [x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]


def run_encoder(T=30, B=16, N=784):
    g = torch.Generator().manual_seed(5)
    img = torch.rand(B, N, generator=g)
    spikes, events = fastlif.encode.poisson(img, T, method="fast", rng=torch.Generator().manual_seed(9),
                                            return_events=True)
    return [spikes, events.indptr, events.indices]


def run_linear(M=600, K=300, N=200):
    torch.manual_seed(11)
    lin = fastlif.SpikeLinear(K, N)
    g = torch.Generator().manual_seed(12)
    x = (torch.rand(M, K, generator=g) < 0.2).float()
    y = lin(x)
    y.backward(torch.rand(y.shape, generator=g))
    return [y.detach(), lin.weight.grad, lin.bias.grad]


def same_bits(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert torch.equal(u.view(-1).view(torch.uint8) if u.is_floating_point() else u,
                           v.view(-1).view(torch.uint8) if v.is_floating_point() else v)


RUNS = {**{f: (lambda f=f: run_family(f)) for f in FAMILIES}, "encoder": run_encoder, "linear": run_linear}


@pytest.mark.parametrize("what", sorted(RUNS))
def test_bitwise_whatever_the_team(what, policy):
    torch.set_num_threads(3)  # more than this machine's cores: a team of 3 must still give the bits
    policy(adaptive=0)
    results = {}
    for team in (1, 2, 3):
        policy(forced=team)
        results[team] = RUNS[what]()
        assert policy()["last_team"] == team
    same_bits(results[1], results[2])
    same_bits(results[1], results[3])


def _leaky_fwd_bytes(T, B, N):
    return T * B * N * 3 * 4  # csrc/lif.cpp: forward moves x, spk and mem (fp32)


@pytest.mark.parametrize("side", ["below", "above"])
def test_grain_edges_give_the_same_bits(side, policy):
    """A forward of Leaky whose bytes lie just below / just above two grains (the team of 2
    starts at 2 grains), against the forced team of 1."""
    torch.set_num_threads(2)
    policy(adaptive=0, forced=0)
    grain = policy()["default_grain"]
    T, B, N = 16, 8, 1024
    nbytes = _leaky_fwd_bytes(T, B, N)
    # put the call's bytes 1 byte below or at exactly two grains
    policy(grain=(nbytes + 1) // 2 + 1 if side == "below" else nbytes // 2)
    lif = fastlif.Leaky(0.9, learn_beta=True)
    x = torch.rand(T, B, N, generator=torch.Generator().manual_seed(1)) * 1.5
    with torch.no_grad():
        edge = lif.sequence(x)
    team = policy()["last_team"]
    assert team == (1 if side == "below" else 2)
    policy(forced=1)
    with torch.no_grad():
        one = lif.sequence(x)
    same_bits(list(edge), list(one))
    policy(grain=grain, forced=0)


def test_default_grain_edges():
    """The shipped grain: a Leaky forward just under two grains runs on one thread, just over
    on two (with torch's 2 threads and the busy fallback off); the bits agree."""
    pol = _C()._team_policy
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pol(adaptive=0, forced=0)
        grain = pol()["default_grain"]
        B, N = 16, 1024
        per_step = _leaky_fwd_bytes(1, B, N)
        T_below = (2 * grain - 1) // per_step  # bytes < 2 grains
        lif = fastlif.Leaky(0.9)
        outs, teams = [], []
        for T in (T_below, T_below + 1):
            x = torch.rand(T, B, N, generator=torch.Generator().manual_seed(2)) * 1.5
            with torch.no_grad():
                out = lif.sequence(x)
            teams.append(pol()["last_team"])
            pol(forced=1)
            with torch.no_grad():
                ref = lif.sequence(x)
            pol(forced=0)
            same_bits(list(out), list(ref))
        assert teams == [1, 2]
    finally:
        pol(forced=0, adaptive=1)
        torch.set_num_threads(threads)


def test_set_num_threads_caps_the_team(policy):
    torch.set_num_threads(2)
    policy(adaptive=0, forced=0, grain=1)  # any work pays for a second thread
    fastlif.set_num_threads(1)
    assert fastlif.get_num_threads() == 1
    ref = run_family("leaky")
    assert policy()["last_team"] == 1
    fastlif.set_num_threads(None)
    assert fastlif.get_num_threads() == 2
    same_bits(ref, run_family("leaky"))
    assert policy()["last_team"] == 2
    with pytest.raises(ValueError):
        fastlif.set_num_threads(0)


def test_busy_machine_finishes_and_matches(policy):
    """Fused calls of every family while other processes spin on every core: they finish (no
    deadlock: a bounded wall time) and give the bits of a quiet run."""
    torch.set_num_threads(2)
    quiet = {what: run() for what, run in RUNS.items()}
    t0 = time.monotonic()
    with Spinners(seconds=60):
        for _ in range(3):
            for what, run in RUNS.items():
                same_bits(quiet[what], run())
    assert time.monotonic() - t0 < 60, "fused calls beside a busy process took over a minute"


# --- the torch ops fastlif runs itself (fastlif.ops.common.torch_threads) ----------------------

class _ThreadsAtDispatch(torch.utils._python_dispatch.TorchDispatchMode):
    """Records torch.get_num_threads() as each dense op (GEMM, convolution) is dispatched."""

    OPS = ("aten.mm", "aten.addmm", "aten.convolution", "aten.convolution_backward")

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in self.OPS:
            self.seen.append((str(func.overloadpacket), torch.get_num_threads()))
        return func(*args, **(kwargs or {}))


def run_dense():
    """Forward and backward of every dense path auto takes on the CPU: the narrow GEMM (a float
    hidden layer into 10 outputs), the GEMM for dense input and for dense events, the dense
    convolution, and the event path's input gradient; every output and gradient."""
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(5)
    narrow, wide = fastlif.SpikeLinear(128, 10), fastlif.SpikeLinear(128, 70)
    conv = fastlif.SpikeConv2d(3, 4, 3, padding=1)
    hidden = (torch.rand(300, 128, generator=g) < 0.05).float().requires_grad_()
    dense = (torch.rand(300, 128, generator=g) < 0.6).float()
    sparse = (torch.rand(300, 128, generator=g) < 0.05).float().requires_grad_()
    img = (torch.rand(5, 3, 8, 8, generator=g) < 0.6).float()
    outs = [narrow(hidden), wide(dense), wide(fastlif.events.from_dense(dense)), conv(img), wide(sparse)]
    torch.autograd.backward(outs, [torch.rand(o.shape, generator=g) for o in outs])
    params = [p.grad for m in (narrow, wide, conv) for p in m.parameters()]
    return [o.detach() for o in outs] + [hidden.grad, sparse.grad] + params


def test_dense_paths_take_their_threads_from_the_work(policy):
    """auto's dense paths run torch's ops on the team their work pays for (the grain rule, capped
    by fastlif.set_num_threads), not on all of torch's threads, and torch's setting is restored."""
    torch.set_num_threads(2)
    policy(adaptive=0, forced=0)
    with _ThreadsAtDispatch() as mode:
        small = run_dense()  # each op moves well under two grains
    ops_seen = {op for op, _ in mode.seen}
    assert ops_seen >= {"aten.mm", "aten.convolution", "aten.convolution_backward"}, ops_seen
    assert {threads for _, threads in mode.seen} == {1}, mode.seen
    assert torch.get_num_threads() == 2
    policy(grain=1)  # any work pays for a second thread
    with _ThreadsAtDispatch() as mode:
        two = run_dense()
    assert {threads for _, threads in mode.seen} == {2}, mode.seen
    fastlif.set_num_threads(1)
    with _ThreadsAtDispatch() as mode:
        run_dense()
    assert {threads for _, threads in mode.seen} == {1}, mode.seen
    assert torch.get_num_threads() == 2
    # torch's GEMM and convolution on one thread and on two: equal up to the order of their sums
    for a, b in zip(small, two):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reference_backend_is_torch_as_it_runs(policy):
    """backend='reference' stays torch's own call, on torch's threads."""
    torch.set_num_threads(2)
    policy(adaptive=0, forced=0)
    lin = fastlif.SpikeLinear(40, 10, backend="reference")
    with _ThreadsAtDispatch() as mode:
        lin(torch.rand(30, 40, requires_grad=True)).sum().backward()
    assert mode.seen and {threads for _, threads in mode.seen} == {2}, mode.seen


def test_dense_paths_on_a_busy_machine_give_the_quiet_bits(policy):
    """The dense paths' thread counts do not follow the machine's load (torch's results may
    change with them): beside processes spinning on every core they give a quiet run's bits."""
    torch.set_num_threads(2)
    quiet = run_dense()
    with Spinners(seconds=60):
        for _ in range(3):
            same_bits(quiet, run_dense())
