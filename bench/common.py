"""Shared benchmark plumbing: a CPU timer with warm-up, the CSV row format, the environment.

Every benchmark appends rows to a CSV under bench/results/ with the columns in ``FIELDS``
(extra measurements go in ``extra`` as ``key=value;...``), and the README's tables are
rendered from those files by ``bench/report.py``.
"""
import csv
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from fastlif.testing import Spinners  # noqa: F401 - the benchmarks' --busy, one copy
from fastlif.timing import time_call

RESULTS = Path(__file__).resolve().parent / "results"

FIELDS = ["timestamp", "bench", "case", "shape", "dtype", "provider", "direction",
          "median_ms", "q20_ms", "q80_ms", "ratio_vs_fastlif", "throughput", "throughput_unit",
          "device", "torch", "commit", "extra"]


def git_commit(tree=None):
    """The short commit of this checkout, or of ``tree``, with ``+modified`` where a tracked
    file other than the results differs from it (a row measured on uncommitted code says so)."""
    where = tree or Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=where, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                  ":(top,exclude)bench/results"], capture_output=True, text=True, cwd=where,
                                 check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + "+modified" if changed else commit


def run_in_tree(script, tree, args, env=None, timeout=600):
    """Run the benchmark ``script`` (a path, run by path so that an older tree needs nothing of
    it) in a fresh process that imports fastlif and ``bench`` from checkout ``tree``; returns the
    JSON object its last line of output holds (the --base comparisons' workers)."""
    import json
    import sys
    env = dict(os.environ, PYTHONPATH=str(tree), **(env or {}))
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          cwd=str(tree), timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"the worker in {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_cpu(fn, *, warmup=2, repeat=10, min_time_s=0.0):
    """Median and 20/80 % quantiles of ``fn()``'s wall time in milliseconds (fastlif's one
    timer, :func:`fastlif.timing.time_call`)."""
    return time_call(fn, warmup=warmup, repeat=repeat, min_time_s=min_time_s)


def append_rows(csv_name, rows):
    """Append dict rows (keys from FIELDS; missing ones left empty) to bench/results/<csv_name>."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / csv_name
    new = not path.exists()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            unknown = set(row) - set(FIELDS)
            if unknown:
                raise KeyError(f"unknown CSV fields {sorted(unknown)}; put them in 'extra'")
            writer.writerow({"timestamp": stamp, "commit": git_commit(), **row})
    return path


def read_rows(csv_name):
    path = RESULTS / csv_name
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def torch_version():
    try:
        import torch
        return torch.__version__
    except ImportError:
        return ""


def extra(**kv):
    """Format extra measurements for the ``extra`` column."""
    return ";".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items())


def cpu_steal_jiffies():
    """The machine's CPU time stolen by the hypervisor so far (/proc/stat's ``steal``, in clock
    ticks), or None where it cannot be read: its growth over a timing says whether the VM's host,
    not the processes on it, took the time."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8])
    except (OSError, ValueError, IndexError):
        return None


def wait_policy_label():
    """``", OMP_WAIT_POLICY=<value>"`` when the process was started with that variable set (a
    labelled extra row: users run with OpenMP's default, active waiting), else ``""``."""
    value = os.environ.get("OMP_WAIT_POLICY")
    return f", OMP_WAIT_POLICY={value}" if value else ""


def threads():
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
