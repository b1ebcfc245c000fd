"""Render the benchmark CSVs under bench/results/ as markdown tables.

    python -m bench.report cpu            # bench/results/cpu.csv (the README's CPU table)
    python -m bench.report                # every CSV under bench/results/
    python -m bench.report gpu sim --case large --extra all

For every (bench, case, shape, provider, direction) only the latest row is kept (the latest
run), and one table is printed per (bench, case). Any CSV with the columns of
``bench.common.FIELDS`` works (cpu.csv, gpu.csv, sim.csv, demo_epoch.csv, ...): columns that
are empty for a whole table are left out, and the well-known measurements of the ``extra``
column (roofline fraction, bytes kept for backward, compile time, spike equality, errors) get
their own columns when present.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

from bench.common import RESULTS

# extra keys shown as columns when a table has them: key -> (header, formatter)
KNOWN_EXTRA = {
    "roofline_frac": ("% of copy roofline", lambda v: f"{float(v) * 100:.0f}%"),
    "saved_B_per_ns": ("bytes kept for bwd / neuron-step", lambda v: f"{float(v):.2f}"),
    "spikes_equal": ("spikes = snnTorch", lambda v: {"True": "yes", "False": "**no**"}.get(v, v)),
    "compile_s": ("compile s", lambda v: _num(v, "{:.1f}" if _float(v) < 10 else "{:.0f}")),
    "error": ("note", str),
}
KEY = ("bench", "case", "shape", "provider", "direction")


def parse_extra(s):
    out = {}
    for item in (s or "").split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _num(v, spec):
    try:
        return spec.format(float(v))
    except (TypeError, ValueError):
        return str(v)


def _si(v):
    """1234567 -> '1.23 M'."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return "-"
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {prefix}"
    return f"{x:.3g}"


def _ms(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def _shape_label(shape):
    parts = shape.split("x")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"T={parts[0]}, B={parts[1]}, N={parts[2]}"
    return shape


def load(names):
    """Rows of the named CSVs (name, name.csv or a path); all CSVs under RESULTS when none."""
    if not names:
        paths = sorted(RESULTS.glob("*.csv"))
    else:
        paths = []
        for name in names:
            p = Path(name)
            if not p.suffix:
                p = p.with_suffix(".csv")
            if not p.is_absolute() and not p.exists():
                p = RESULTS / p.name
            paths.append(p)
    rows = []
    for p in paths:
        if not p.exists():
            raise SystemExit(f"no results file {p}; run the benchmark first (see bench/README.md)")
        with open(p, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def latest(rows):
    """The latest row per KEY, in the order the latest rows appear in the files."""
    best = {}
    for i, row in enumerate(rows):
        k = tuple(row.get(c, "") for c in KEY)
        if k not in best or row.get("timestamp", "") >= best[k][1].get("timestamp", ""):
            best[k] = (i, row)
    return [row for _, row in sorted(best.values(), key=lambda p: p[0])]


def render_group(bench, case, rows, extra_keys):
    shapes = list(dict.fromkeys(r.get("shape", "") for r in rows))
    dtypes = list(dict.fromkeys(r.get("dtype", "") for r in rows))
    units = list(dict.fromkeys(r.get("throughput_unit", "") for r in rows if r.get("throughput")))
    extras = [parse_extra(r.get("extra")) for r in rows]
    title = f"### {bench}: {case}"
    if len(shapes) == 1 and shapes[0]:
        title += f" ({_shape_label(shapes[0])})"
    if len(dtypes) == 1 and dtypes[0]:
        title += f", {dtypes[0]}"
    cols = []  # (header, cell function)
    if len(shapes) > 1:
        cols.append(("shape (T x B x N)" if all(len(s.split("x")) == 3 for s in shapes) else "shape",
                     lambda r, e: r.get("shape", "")))
    if len(dtypes) > 1:
        cols.append(("dtype", lambda r, e: r.get("dtype", "")))
    cols.append(("provider", lambda r, e: r.get("provider", "")))
    if any(r.get("direction") for r in rows):
        cols.append(("direction", lambda r, e: r.get("direction", "")))
    if any(r.get("median_ms") for r in rows):
        cols.append(("median ms", lambda r, e: _ms(r.get("median_ms"))))
    if any(r.get("q20_ms") for r in rows):
        cols.append(("q20–q80 ms", lambda r, e: f"{_ms(r.get('q20_ms'))}–{_ms(r.get('q80_ms'))}"
                     if r.get("q20_ms") else "-"))
    if units:
        head = f"throughput ({units[0]})" if len(units) == 1 else "throughput"
        cols.append((head, lambda r, e: (_si(r["throughput"]) + ("" if len(units) == 1 else
                                                                   " " + r.get("throughput_unit", "")))
                     if r.get("throughput") else "-"))
    if any(r.get("ratio_vs_fastlif") for r in rows):
        cols.append(("fastlif speed-up", lambda r, e: _num(r.get("ratio_vs_fastlif"), "{:.1f}x")
                     if r.get("ratio_vs_fastlif") else "-"))
    shown = [k for k in KNOWN_EXTRA if any(k in e for e in extras)] if extra_keys is None else \
        list(dict.fromkeys(k for e in extras for k in e)) if extra_keys == ["all"] else extra_keys
    for k in shown:
        if not any(k in e for e in extras):
            continue
        header, fmt = KNOWN_EXTRA.get(k, (k, str))
        cols.append((header, lambda r, e, k=k, fmt=fmt: fmt(e[k]) if k in e else ""))
    lines = [title, "", "| " + " | ".join(h for h, _ in cols) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i, _ in enumerate(cols)) + "|"]
    for r, e in zip(rows, extras):
        lines.append("| " + " | ".join(str(fn(r, e)).replace("|", "/") for _, fn in cols) + " |")
    return lines


def footer(rows):
    stamps = sorted({r.get("timestamp", "") for r in rows})
    devices = sorted({r.get("device", "") for r in rows if r.get("device")})
    torches = sorted({r.get("torch", "") for r in rows if r.get("torch")})
    commits = sorted({r.get("commit", "") for r in rows if r.get("commit")})
    threads = sorted({parse_extra(r.get("extra")).get("threads") for r in rows} - {None})
    parts = [f"run {', '.join(stamps)}" if len(stamps) <= 3 else f"runs {stamps[0]} … {stamps[-1]}"]
    if devices:
        parts.append("; ".join(devices))
    if threads:
        parts.append(f"{'/'.join(threads)} threads")
    if torches:
        parts.append(f"torch {', '.join(torches)}")
    if commits:
        parts.append(f"commit {', '.join(commits)}")
    busy = []
    for r in rows:
        e = parse_extra(r.get("extra"))
        busy.append(float(e.get("busy_during", e.get("busy_before", "nan"))))
    busy = [b for b in busy if math.isfinite(b)]
    if busy and max(busy) > 0.15:
        noisy = sum(b > 0.15 for b in busy)
        parts.append(f"{noisy} of {len(busy)} rows were measured while other processes kept up to "
                     f"{max(busy) * 100:.0f}% of the cores busy: those timings are noisy")
    return "_" + " · ".join(parts) + "_"


def render(rows, cases=None, extra_keys=None):
    rows = latest(rows)
    if cases:
        rows = [r for r in rows if r.get("case") in cases]
    if not rows:
        return "(no rows)"
    groups = {}
    for r in rows:
        groups.setdefault((r.get("bench", ""), r.get("case", "")), []).append(r)
    out = []
    for (bench, case), grp in groups.items():
        out += render_group(bench, case, grp, extra_keys) + [""]
    out.append(footer(rows))
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="Markdown tables from bench/results/*.csv")
    p.add_argument("names", nargs="*", help="CSV names (cpu, gpu, sim, demo_epoch, or paths); "
                                            "default: all under bench/results/")
    p.add_argument("--case", default=None, help="comma-separated cases to keep (e.g. tutorial,large)")
    p.add_argument("--extra", default=None,
                   help="comma-separated extra keys to show as columns, or 'all' "
                        "(default: the well-known ones present)")
    p.add_argument("--latest-run", action="store_true",
                   help="only the rows of each bench's latest run (its latest timestamp): no row "
                        "of an older run, another machine or allocator setting, fills a gap")
    args = p.parse_args(argv)
    cases = set(args.case.split(",")) if args.case else None
    extra_keys = args.extra.split(",") if args.extra else None
    rows = load(args.names)
    if args.latest_run:
        last = {}
        for r in rows:
            last[r.get("bench")] = max(last.get(r.get("bench"), ""), r.get("timestamp", ""))
        rows = [r for r in rows if r.get("timestamp", "") == last[r.get("bench")]]
    print(render(rows, cases, extra_keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
