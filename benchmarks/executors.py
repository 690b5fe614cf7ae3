"""Benchmark of ``compare``'s executors: one small grid through ``sequential``, ``process --jobs N``
and ``ray``, and Ray's overhead per run.

The same grid (default ``benchmarks/executor_grid.yaml``: synthetic data, MF dim 16, 3 epochs,
3 methods x 2 seeds = 6 runs) runs into a fresh temporary folder per executor (nothing resumes),
in this process. Wall seconds are the grid's (``run_grid`` / ``remote_grid.run_grid_remote``), not
the command's (no imports, no summary tables). The driver first runs the grid once, untimed (its
lazy imports and first calls), so that the sequential row, like the warm Ray rows, times warm
code; the process executor's spawned workers import everything again in every grid (what
``--jobs`` costs).

Ray starts as ``compare --executor ray`` starts it: a local instance through
``pmtrec_lab.execution.ray_connect.connect`` (loopback only), every run a task of 1 CPU. Rows:

- ``ray, fresh instance``: the grid right after ``ray.init`` (its workers still import torch and
  the package: what one ``compare --executor ray`` pays, without the instance's start, printed
  apart);
- ``ray, warm instance``: the same grid again into another fresh folder, the workers warm;
- ``ray, warm, one run at a time``: the grid one method after another (a method's seed 1 waits
  for its seed 0), so that no run waits for a free CPU. Its per-run figure is Ray's overhead:
  round trip as the driver saw it (submit to the run folder written, ``dispatch.RunTiming``)
  minus the training time inside the worker; median and max over the runs (target: median < 1 s).
  In the concurrent rows the same difference also holds the time a run waited for a CPU, so it is
  printed apart, not as overhead.

Every executor's test metrics are checked against the sequential ones (exact equality).
Prints only; exits 1 when the metrics differ. Example:

    .venv/bin/python benchmarks/executors.py
    .venv/bin/python benchmarks/executors.py --executors sequential,process --jobs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pmtrec_lab.compare import run_grid, run_path
from pmtrec_lab.compare.remote_grid import run_grid_remote
from pmtrec_lab.compare.spec import GridSpec, load_grid, unit_lrs, validate_grid
from pmtrec_lab.execution.dispatch import RunTiming
from pmtrec_lab.execution.executors import ProcessExecutor, SequentialExecutor
from pmtrec_lab.execution.ray_executor import RayExecutor
from pmtrec_lab.train import load_run

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GRID = ROOT / "benchmarks" / "executor_grid.yaml"
EXECUTORS = ("sequential", "process", "ray")


def run_keys(spec: GridSpec) -> list[tuple[str, str, float, int]]:
    """Every (dataset, method, lr, seed) of a one-lr-per-unit grid."""
    keys = []
    for dataset in spec.datasets:
        for method in spec.methods:
            lrs = unit_lrs(spec, dataset, method)
            if len(lrs) != 1:
                raise SystemExit(
                    f"benchmarks/executors.py: one learning rate per unit, got {lrs} for {method}"
                )
            keys += [(dataset, method, lrs[0], seed) for seed in spec.seeds]
    return keys


def test_metrics(spec: GridSpec, out: Path) -> dict[tuple, dict]:
    metrics = {}
    for key in run_keys(spec):
        run = load_run(run_path(out, spec, *key))
        if not run.finished:
            raise SystemExit(f"benchmarks/executors.py: run {key} did not finish in {out}")
        metrics[key] = run.metrics["test"]
    return metrics


def overheads(timings: list[RunTiming]) -> list[float]:
    return [t.round_trip - t.train_seconds for t in timings]


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default=str(DEFAULT_GRID), help="grid YAML (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="grid overrides")
    p.add_argument("--executors", default=",".join(EXECUTORS), help="comma-separated (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes of the process executor")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.executors.split(",") if n.strip()]
    unknown = sorted(set(names) - set(EXECUTORS))
    if unknown or "sequential" not in names:
        p.error(f"--executors: from {', '.join(EXECUTORS)}, sequential among them; got {a.executors}")
    spec = load_grid(a.grid, a.set)
    n_runs = len(run_keys(spec))
    print(
        f"grid: {a.grid} ({n_runs} runs); {os.cpu_count()} CPUs; load average at start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        flush=True,
    )

    rows: list[tuple[str, float, str, str]] = []  # executor, wall, overhead median, overhead max
    notes: list[str] = []
    outs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="pmtrec-executors-") as tmp:
        root = Path(tmp)

        def fresh(label: str) -> Path:
            out = root / f"g{len(outs)}"
            out.mkdir()
            outs[label] = out
            return out

        # untimed: the driver's first grid pays the lazy imports and first calls of training
        warm, _ = timed(run_grid, spec, root / "warm-up", executor=SequentialExecutor())
        notes.append(f"warm-up: the same grid once, sequential, in this process first: {warm:.1f} s, untimed")
        wall, _ = timed(run_grid, spec, fresh("sequential"), executor=SequentialExecutor())
        rows.append((f"sequential ({torch.get_num_threads()} torch threads)", wall, "", ""))
        threads = torch.get_num_threads()
        if threads > 1:  # what a Ray task or a --jobs worker gets here: one thread
            torch.set_num_threads(1)
            wall, _ = timed(run_grid, spec, fresh("sequential, 1 thread"), executor=SequentialExecutor())
            torch.set_num_threads(threads)
            rows.append(("sequential (1 torch thread)", wall, "", ""))
        if "process" in names:
            label = f"process --jobs {a.jobs}"
            wall, _ = timed(run_grid, spec, fresh(label), executor=ProcessExecutor(a.jobs))
            rows.append((label, wall, "", ""))
        if "ray" in names:
            from pmtrec_lab.execution.ray_connect import connect, disconnect

            start, ray = timed(connect)
            cpus = int(ray.cluster_resources().get("CPU", 0))
            notes.append(f"ray.init (local instance, loopback, {cpus} CPUs): {start:.1f} s, not in the rows")
            try:
                with RayExecutor() as ex:
                    for label in ("ray, fresh instance", "ray, warm instance"):
                        wall, (_, timings) = timed(run_grid_remote, spec, fresh(label), None, ex)
                        rows.append((label, wall, "", ""))
                        queued = overheads(timings)
                        notes.append(
                            f"{label}: round trip - train per run, waiting for a CPU included: median "
                            f"{statistics.median(queued):.2f} s, max {max(queued):.2f} s"
                        )
                    label = "ray, warm, one run at a time"
                    out = fresh(label)
                    serial: list[RunTiming] = []
                    t0 = time.perf_counter()
                    for method in spec.methods:
                        one = validate_grid({**spec.model_dump(), "methods": [method]}, "grid")
                        serial += run_grid_remote(one, out, None, ex)[1]
                    wall = time.perf_counter() - t0
                    ov = overheads(serial)
                    rows.append((label, wall, f"{statistics.median(ov):.2f}", f"{max(ov):.2f}"))
                    train = [t.train_seconds for t in serial]
                    notes.append(
                        f"{label}: training inside the worker per run: median "
                        f"{statistics.median(train):.2f} s; "
                        f"round trip - worker time (transport, scheduling, driver's write): median "
                        f"{statistics.median(t.round_trip - t.worker_seconds for t in serial):.2f} s"
                    )
            finally:
                disconnect()

        reference = test_metrics(spec, outs["sequential"])
        same = {label: test_metrics(spec, out) == reference for label, out in outs.items()}

    seq = rows[0][1]
    header = ("executor", "wall s", "x sequential", "Ray overhead/run median s", "max s")
    table = [header, *[(r[0], f"{r[1]:.1f}", f"{r[1] / seq:.2f}", r[2] or "-", r[3] or "-") for r in rows]]
    print()
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in table[1:]:
        print("| " + " | ".join(row) + " |")
    print()
    for note in notes:
        print(f"- {note}")
    print("- load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ok = all(same.values())
    differ = [label for label, s in same.items() if not s]
    verdict = "yes" if ok else "NO: " + ", ".join(differ)
    print(f"- test metrics identical to sequential for every run: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
