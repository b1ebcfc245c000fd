"""``fastlif check``: every available backend against the reference loop on this machine (a few
shapes and options: forward spikes identical, membrane and gradients close), and a short speed
table."""
import copy
import platform
import time
import warnings

import torch

import fastlif
from fastlif import backends, testing
from fastlif.timing import time_call

__all__ = ["check"]


# (name, T, B, N, options): shapes and options the check runs; kept small so it takes seconds.
CASES = [
    ("atan subtract", 8, 4, 33, {}),
    ("fast_sigmoid, mem0", 50, 16, 128, {"surrogate": "fast_sigmoid", "mem0": True}),
    ("sigmoid zero-reset", 12, 3, 17, {"surrogate": "sigmoid", "reset_mechanism": "zero"}),
    ("no reset", 10, 2, 9, {"reset_mechanism": "none", "surrogate": "triangular"}),
    ("immediate reset", 16, 5, 24, {"reset_delay": False}),
    ("immediate zero-reset", 16, 5, 24, {"reset_delay": False, "reset_mechanism": "zero",
                                         "surrogate": "straight_through_estimator"}),
    ("learnable per-neuron", 20, 4, 32, {"learn": True, "mem0": True}),
    ("graded spikes", 9, 3, 8, {"graded": 0.5, "threshold": 0.7}),
    ("fp64", 7, 2, 5, {"dtype": "float64", "learn": True}),
    ("4-d input", 6, 2, 3, {"shape4": True}),
]
SPEED_SHAPES = [(50, 64, 128), (100, 32, 1024)]


def _synaptic(N, g, **kw):
    return fastlif.Synaptic(alpha=torch.rand(N, generator=g) * 0.6 + 0.3, beta=torch.rand(N, generator=g) * 0.5 + 0.5,
                            learn_alpha=True, learn_beta=True, learn_threshold=True, **kw)


def _rleaky(N, g, **kw):
    return fastlif.RLeaky(beta=torch.rand(N, generator=g) * 0.5 + 0.5, learn_beta=True, learn_threshold=True, **kw)


# (name, T, B, N, build(N, generator) -> module, exact): the other neuron families, run through
# their modules' ``sequence`` (random states, upstream gradients on every output). ``exact``:
# spikes must be identical; the dense RLeaky sums its recurrent matrix product in another order
# than torch's GEMM, so there a membrane within rounding of the threshold may flip a spike.
MODULE_CASES = [
    ("Synaptic atan subtract", 9, 3, 33, lambda N, g: _synaptic(N, g), True),
    ("Synaptic zero-reset immediate", 12, 2, 17,
     lambda N, g: _synaptic(N, g, reset_mechanism="zero", reset_delay=False,
                            spike_grad=fastlif.surrogate.fast_sigmoid()), True),
    ("RLeaky one-to-one V", 10, 3, 24,
     lambda N, g: _rleaky(N, g, all_to_all=False, V=torch.rand(N, generator=g) - 0.5), True),
    ("RLeaky one-to-one zero-reset", 8, 2, 9,
     lambda N, g: _rleaky(N, g, all_to_all=False, V=0.4, reset_mechanism="zero",
                          spike_grad=fastlif.surrogate.sigmoid()), True),
    ("RLeaky dense Linear", 8, 4, 33, lambda N, g: _rleaky(N, g, linear_features=N), False),
    ("Lapicque R C", 9, 3, 19, lambda N, g: fastlif.Lapicque(R=1.5, C=4.0, learn_threshold=True), True),
    ("Alpha zero-reset", 9, 3, 21,
     lambda N, g: fastlif.Alpha(alpha=0.9, beta=torch.rand(N, generator=g) * 0.3 + 0.5, learn_alpha=True,
                                learn_beta=True), True),
    ("RSynaptic one-to-one V", 10, 2, 17,
     lambda N, g: fastlif.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, V=torch.rand(N, generator=g) - 0.5,
                                    learn_beta=True), True),
]


def _make_case(T, B, N, opts, seed):
    """One CASES entry as a :class:`fastlif.testing.Case` (``testing.make_case``; ``testing.run``
    casts it to the case's dtype and moves it to the device): learnable parameters one per
    neuron, fixed ones the case's scalars."""
    learn = bool(opts.get("learn"))
    fixed = (lambda v: (float(v), float(v)))  # noqa: E731 - a range of one value
    return testing.make_case(T, (B, 2, N) if opts.get("shape4") else (B, N), per_neuron=(learn, learn, False),
                             mem0=bool(opts.get("mem0")), seed=seed, scale=0.6, offset=0.35,
                             beta_range=(0.5, 1.0) if learn else fixed(0.9),
                             threshold_range=(0.75, 1.25) if learn else fixed(opts.get("threshold", 1.0)),
                             graded_range=fixed(opts.get("graded", 1.0)))


def _run_case(backend, case, opts, device):
    """Forward + backward of lif_sequence on fresh leaves (fastlif.testing.run, the harness the
    test suites use); returns outputs and gradients by name."""
    return testing.run(case, backend, dtype=getattr(torch, opts.get("dtype", "float32")), device=device,
                       learn=("beta", "threshold") if opts.get("learn") else (),
                       reset_mechanism=opts.get("reset_mechanism", "subtract"),
                       reset_delay=opts.get("reset_delay", True),
                       surrogate=getattr(fastlif.surrogate, opts.get("surrogate", "atan"))())


def _rel_err(a, b):
    """max|a - b| / max(max|b|, 1); None is no gradient at all, equal only to zeros (a state only
    a detached reset reads)."""
    if a is None or b is None:
        other = b if a is None else a
        return 0.0 if other is None or not other.any() else float("inf")
    return testing.normwise(a, b, floor=1.0)


def _compare(backend, device, verbose_fail):
    """All CASES on ``backend``; returns (ok, n_cases, worst mem error, worst grad error)."""
    ok, worst_mem, worst_grad = True, 0.0, 0.0
    for i, (name, T, B, N, opts) in enumerate(CASES):
        case = _make_case(T, B, N, opts, seed=100 + i)
        tol = 1e-9 if opts.get("dtype") == "float64" else 1e-4
        try:
            spk_r, mem_r, gr = _run_case("reference", case, opts, device)
            spk_b, mem_b, gb = _run_case(backend, case, opts, device)
        except Exception as err:  # noqa: BLE001 - report any failure as a disagreement
            verbose_fail(f"{backend} on {device}, case '{name}': raised {type(err).__name__}: {err}")
            ok = False
            continue
        n_diff = int((spk_r != spk_b).sum())
        mem_err = _rel_err(mem_b, mem_r)
        grad_errs = {k: _rel_err(gb.get(k), gr[k]) for k in gr}
        grad_err = max(grad_errs.values(), default=0.0)
        worst_mem, worst_grad = max(worst_mem, mem_err), max(worst_grad, grad_err)
        problems = []
        if n_diff:
            problems.append(f"{n_diff} of {spk_r.numel()} spikes differ")
        if mem_err > tol:
            problems.append(f"membrane max error {mem_err:.2e} > {tol:g}")
        for k, e in grad_errs.items():
            if e > tol * 10:
                problems.append(f"grad {k} max error {e:.2e} > {tol * 10:g}")
        if problems:
            ok = False
            verbose_fail(f"{backend} on {device}, case '{name}' [T={T}, B={B}, N={N}]: "
                         + "; ".join(problems))
    return ok, len(CASES), worst_mem, worst_grad


def _run_module(layer, backend, x, states, upstream):
    """``layer.sequence`` on ``backend`` with fresh leaves; returns outputs and every gradient
    (input, states, parameters) by name."""
    layer = copy.deepcopy(layer)
    layer.backend = backend
    xl = x.clone().requires_grad_(True)
    sl = [s.clone().requires_grad_(True) for s in states]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference backend's own notes
        outs = layer.sequence(xl, *sl)
    torch.autograd.backward(list(outs), upstream[:len(outs)])
    grads = {"x": xl.grad, **{f"state{i}": s.grad for i, s in enumerate(sl)},
             **{name: p.grad for name, p in layer.named_parameters()}}
    return [o.detach() for o in outs], grads


def _compare_families(backend, device, verbose_fail):
    """Every spec'd family (fastlif/family.py) on ``backend`` against its reference step, built
    from the spec (fastlif.testing.compare_family): its first and last option sets, with its
    first surrogate. Returns (ok, n_cases, 0 (states are compared bit for bit), worst gradient
    error)."""
    import importlib
    import itertools
    import pkgutil

    import fastlif.families
    from fastlif.family import FAMILIES
    from fastlif.testing import compare_family
    for module in pkgutil.iter_modules(fastlif.families.__path__):
        importlib.import_module(f"fastlif.families.{module.name}")
    ok, n, worst = True, 0, 0.0
    for name, spec in sorted(FAMILIES.items()):
        sets = list(itertools.product(*spec.choices))
        sg = getattr(fastlif.surrogate, spec.surrogates[0])()
        for values in {sets[0], sets[-1]}:
            options = dict(zip(spec.options, values))
            n += 1
            try:
                problems, err = compare_family(spec, backend, options, sg, device=device)
                worst = max(worst, err)
            except Exception as err:  # noqa: BLE001 - report any failure as a disagreement
                problems = [f"raised {type(err).__name__}: {err}"]
            if problems:
                ok = False
                verbose_fail(f"{backend} on {device}, family {name} {options}: " + "; ".join(problems))
    return ok, n, 0.0, worst


def _compare_modules(backend, device, verbose_fail):
    """MODULE_CASES on ``backend``; returns (ok, n_cases, worst state error, worst grad error)."""
    ok, worst_state, worst_grad, n = True, 0.0, 0.0, 0
    for i, (name, T, B, N, build, exact) in enumerate(MODULE_CASES):
        g = torch.Generator().manual_seed(200 + i)
        layer = build(N, g).to(device)
        if not exact and (device != "cpu" or backend != "cpp"):
            continue  # the dense recurrent layer is fused by the cpp backend only
        n += 1
        x = (torch.randn(T, B, N, generator=g) * 0.6 + 0.35).to(device)
        n_states = len(layer._state_names)
        states = [torch.randn(B, N, generator=g).to(device) for _ in range(n_states)]
        if isinstance(layer, (fastlif.RLeaky, fastlif.RSynaptic)):
            states[0] = (states[0] > 0.5).float()  # previous spikes
        upstream = [torch.randn(T, B, N, generator=g).to(device) for _ in range(4)]
        try:
            want, want_grads = _run_module(layer, "reference", x, states, upstream)
            got, got_grads = _run_module(layer, backend, x, states, upstream)
        except Exception as err:  # noqa: BLE001 - report any failure as a disagreement
            verbose_fail(f"{backend} on {device}, case '{name}': raised {type(err).__name__}: {err}")
            ok = False
            continue
        problems = []
        n_diff = int((got[0] != want[0]).sum())
        allowed = 0 if exact else want[0].numel() // 100
        if n_diff > allowed:
            problems.append(f"{n_diff} of {want[0].numel()} spikes differ")
        tol = 1e-5 if exact else 1e-4
        if not n_diff:  # after a flipped spike the trajectories part; only the spike bound holds
            state_err = max(_rel_err(a, b) for a, b in zip(got[1:], want[1:]))
            grad_err = max(_rel_err(got_grads[k], want_grads[k]) for k in want_grads)
            worst_state, worst_grad = max(worst_state, state_err), max(worst_grad, grad_err)
            if state_err > tol:
                problems.append(f"state max error {state_err:.2e} > {tol:g}")
            if grad_err > tol * 10:
                problems.append(f"gradient max error {grad_err:.2e} > {tol * 10:g}")
        if problems:
            ok = False
            verbose_fail(f"{backend} on {device}, case '{name}' [T={T}, B={B}, N={N}]: " + "; ".join(problems))
    return ok, n, worst_state, worst_grad


def _time_ms(fn, device):
    return time_call(fn, device=device, warmup=1, repeat=7, min_time_s=0.15, max_repeat=200)[0]


def _speed(backend, device, shape):


    T, B, N = shape
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 0.6 + 0.35).to(device)
    sg = fastlif.surrogate.fast_sigmoid()

    def fwd():
        with torch.no_grad():
            fastlif.lif_sequence(x, 0.9, 1.0, surrogate=sg, backend=backend)

    xg = x.clone().requires_grad_(True)

    def fwd_bwd():
        spk, mem = fastlif.lif_sequence(xg, 0.9, 1.0, surrogate=sg, backend=backend)
        spk.sum().backward()
        xg.grad = None

    return _time_ms(fwd, device), _time_ms(fwd_bwd, device)


def check(device="all", speed=True, out=print):
    """``fastlif check``: returns the exit status (0 when every backend agrees)."""


    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if device != "all":
        devices = [device]
    out(f"fastlif check: fastlif {fastlif.__version__}, torch {torch.__version__}, "
        f"{platform.machine()}, {torch.get_num_threads()} CPU threads")
    out(f"backends: {backends.describe()}")
    failures = []
    all_ok = True
    rows = []
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            out(f"{dev}: no CUDA device here")
            return 2
        names = [b for b in backends.available(dev) if b != "reference"]
        if not names:
            out(f"{dev}: only the reference backend is available; nothing to compare")
            continue
        for name in names:
            where = f"{dev} (Triton interpreter)" if name == "triton" and dev == "cpu" else dev
            for what, compare in (("Leaky", _compare), ("Synaptic, RLeaky, Lapicque, Alpha, RSynaptic", _compare_modules),
                                  ("every spec'd family", _compare_families)):
                t0 = time.perf_counter()
                ok, n, mem_err, grad_err = compare(name, dev, failures.append)
                all_ok &= ok
                out(f"  {name:<9} on {where:<4} vs reference, {what}: {n} cases, "
                    f"{'spikes identical' if ok else 'DISAGREES'}, states max rel. error {mem_err:.1e}, "
                    f"gradients max rel. error {grad_err:.1e}  ({time.perf_counter() - t0:.1f} s)  "
                    f"{'OK' if ok else 'FAIL'}")
        if speed:
            interp = backends.triton_interpret() and dev == "cpu"
            for shape in SPEED_SHAPES:
                ref = _speed("reference", dev, shape)
                rows.append((dev, "reference", shape, ref, ref))
                for name in names:
                    if name == "triton" and interp:
                        continue  # the interpreter is for testing, its speed means nothing
                    rows.append((dev, name, shape, _speed(name, dev, shape), ref))
    for line in failures:
        out("  FAIL " + line)
    if rows:
        out("speed: median ms per call of lif_sequence (fp32, fast_sigmoid), and speed-up vs reference")
        out(f"  {'device':<6} {'backend':<10} {'T x B x N':<15} {'forward':>9} {'fwd+bwd':>9} "
            f"{'fwd x':>7} {'fwd+bwd x':>10}")
        for dev, name, shape, (f, fb), (rf, rfb) in rows:
            out(f"  {dev:<6} {name:<10} {'x'.join(map(str, shape)):<15} {f:>9.3f} {fb:>9.3f} "
                f"{rf / f:>6.1f}x {rfb / fb:>9.1f}x")
    out("all backends agree with the reference" if all_ok else
        "some backend DISAGREES with the reference (see FAIL lines above)")
    return 0 if all_ok else 1
