"""Where a grid run's wall time goes: one run per dataset and method on the grid's settings.

The setting is ``results/grid-v3.yaml``'s (MF, dim 64, the meta split on, validation every epoch,
one torch thread, as ``compare`` runs it), for a fixed number of epochs at lr 1e-3. Each run
trains in this process with timers wrapped around the trainer's own functions (nothing in the
library changes), after one untimed warm-up run that fills the data cache, so "data loading" is
a cache hit as in a grid. Process start and imports are timed separately, in fresh interpreters.

Printed: the interpreter start and the imports (``python -c "import pmtrec_lab.compare.grid"``
minus an empty interpreter), which a grid's worker process pays once for many runs, then each
phase's share of one run's wall time:

- ``data+setup``: the dataset from the cache, the model, method, optimizer (``_setup``);
- ``sampling``: the tasks' ``start_epoch`` and ``next_batch`` (and the meta batch);
- ``forward``, ``task_gradients``, ``combine``, ``backward``: ``train_step``'s own phases
  (``backward`` includes its finiteness check and the heads' gradients);
- ``optimizer``: ``optimizer.step``;
- ``diagnostics``: the recorder's per-step update;
- ``validation``: split into ``valid:scoring`` (embeddings, scores, masking), ``valid:top-k``
  (``rank_masked``) and ``valid:metrics`` (``metrics_from_hits_np``);
- ``writing``: checkpoints, history and diagnostics each epoch (``_save_progress``) and the
  final test evaluation with its files (``_finish``);
- ``other``: what the run's wall time leaves (the loop, loss bookkeeping, early stopping).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_run.py [--datasets ciao,lastfm,amazon,ml-100k]
        [--methods ew,pmtrec] [--epochs 5] [--data-dir ../shared/datasets] [--grid FILE]
        [--set optim.task_gradients=analytic --set data.aux_holdout=0.1]

``results/grid-v3.yaml`` pins the two settings that became defaults after it (autograd task
gradients, no auxiliary holdout); ``--set`` puts today's defaults back for a measurement of them.

Timers add a few microseconds per call; phases are shares of one run, so compare them within a
run, and compare code versions by running this script from each (``PYTHONPATH`` or a worktree)
in one sitting.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PHASES = (
    "start",
    "imports",
    "data+setup",
    "sampling",
    "forward",
    "task_gradients",
    "meta_gradients",
    "combine",
    "backward",
    "optimizer",
    "diagnostics",
    "valid:scoring",
    "valid:top-k",
    "valid:metrics",
    "writing",
    "other",
)


def interpreter_seconds(code: str, repeats: int = 3) -> float:
    """The best of ``repeats`` wall times of a fresh interpreter running ``code`` with the
    pmtrec_lab this script imported (also when that is another checkout's, put first on the path
    ahead of an editable install: how old and new code are profiled side by side)."""
    import pmtrec_lab

    root = str(Path(pmtrec_lab.__file__).resolve().parents[1])
    prelude = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if not getattr(f, '__module__', '').startswith('__editable__')]; "
        f"sys.path.insert(0, {root!r}); "
    )
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", prelude + code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def patched(owner: Any, name: str, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def timer(acc: dict[str, float], phase: str) -> Callable[[Callable], Callable]:
    """A wrapper adding each call's wall time to ``acc[phase]``."""

    def wrap(fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[phase] += time.perf_counter() - t0

        return timed

    return wrap


def _task_classes() -> list[type]:
    from pmtrec_lab.tasks import Task

    seen, todo = [], [Task]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def profile_run(cfg: Any, out: Path) -> dict[str, float]:
    """Train ``cfg`` into ``out`` with the phase timers; seconds per phase (imports excluded)."""
    import torch

    from pmtrec_lab.eval import evaluator
    from pmtrec_lab.tasks.meta import MetaPairs
    from pmtrec_lab.train import trainer
    from pmtrec_lab.train.diagnostics import DiagnosticsRecorder

    acc: dict[str, float] = defaultdict(float)
    step_phases: dict[str, float] = defaultdict(float)

    def with_timings(fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            kwargs["timings"] = step_phases
            return fn(*args, **kwargs)

        return timed

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(trainer, "_setup", timer(acc, "data+setup")))
        stack.enter_context(patched(trainer, "train_step", with_timings))
        stack.enter_context(patched(trainer, "_validate", timer(acc, "validation")))
        stack.enter_context(patched(trainer, "_save_progress", timer(acc, "writing")))
        stack.enter_context(patched(trainer, "_finish", timer(acc, "writing")))
        stack.enter_context(patched(evaluator, "rank_masked", timer(acc, "top-k")))
        stack.enter_context(patched(evaluator, "metrics_from_hits_np", timer(acc, "metrics")))
        stack.enter_context(patched(torch.optim.Adam, "step", timer(acc, "optimizer")))
        stack.enter_context(patched(DiagnosticsRecorder, "update", timer(acc, "diagnostics")))
        stack.enter_context(patched(MetaPairs, "for_batches", timer(acc, "sampling")))
        for cls in _task_classes():
            for name in ("next_batch", "start_epoch"):
                if name in vars(cls):
                    stack.enter_context(patched(cls, name, timer(acc, "sampling")))
        t0 = time.perf_counter()
        trainer.train(cfg, out, resume=False)
        wall = time.perf_counter() - t0
    # validation inside _finish (the test evaluation) counts as writing's; split _validate's part
    valid_eval = acc.pop("validation")
    top_k, metrics = acc.pop("top-k", 0.0), acc.pop("metrics", 0.0)
    share_in_valid = valid_eval / max(valid_eval + acc["writing"], 1e-12)
    phases = {
        "data+setup": acc["data+setup"],
        "sampling": acc["sampling"],
        **{k: step_phases.get(k, 0.0) for k in ("forward", "task_gradients", "meta_gradients", "combine")},
        "backward": step_phases.get("backward", 0.0),
        "optimizer": acc["optimizer"],
        "diagnostics": acc["diagnostics"],
        # top-k and metrics ran in both validation and the final test; attribute them pro rata
        "valid:top-k": top_k * share_in_valid,
        "valid:metrics": metrics * share_in_valid,
    }
    phases["valid:scoring"] = valid_eval - phases["valid:top-k"] - phases["valid:metrics"]
    phases["writing"] = acc["writing"]
    phases["other"] = wall - sum(phases.values())
    phases["wall"] = wall
    return phases


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="ciao,lastfm,amazon,ml-100k")
    ap.add_argument("--methods", default="ew,pmtrec")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument(
        "--grid",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "results" / "grid-v3.yaml",
        help="the grid file whose settings the runs take (default: results/grid-v3.yaml); an older "
        "commit's code on PYTHONPATH needs that commit's grid file",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run setting over the grid's base, e.g. optim.task_gradients=analytic (repeatable); "
        "grid-v3.yaml pins the settings that became defaults after it: --set "
        "optim.task_gradients=analytic --set data.aux_holdout=0.1 measures today's defaults",
    )
    args = ap.parse_args(argv)

    start = interpreter_seconds("pass")
    imports = interpreter_seconds("import pmtrec_lab.compare.grid") - start
    import torch

    from pmtrec_lab.compare.spec import load_grid, run_config
    from pmtrec_lab.config import apply_overrides

    torch.set_num_threads(1)
    spec = load_grid(args.grid)
    spec = spec.model_copy(update={"base": apply_overrides(copy.deepcopy(spec.base), args.set)})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            for i, method in enumerate(args.methods.split(",")):
                cfg = run_config(spec, dataset, method, 1e-3, 0, args.data_dir)
                cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": args.epochs})})
                cfg = cfg.model_copy(update={"progress": "none"})
                if i == 0:  # warm-up: the data cache, torch's first-call costs
                    one = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 1})})
                    profile_run(one, Path(tmp) / f"warm-{dataset}")
                phases = profile_run(cfg, Path(tmp) / f"{dataset}-{method}")
                rows.append((dataset, method, {"start": start, "imports": imports, **phases}))
    settings = "grid-v3 settings" + (f" with {', '.join(args.set)}" if args.set else "")
    print(f"one run per (dataset, method): {args.epochs} epochs at lr 1e-3, {settings}, one thread")
    print(
        f"per process, not per run: interpreter start {start:.2f} s, imports {imports:.2f} s (a grid's "
        "worker processes pay them once and then run many runs)"
    )
    print("| phase (share of the run's wall time) | " + " | ".join(f"{d} {m}" for d, m, _ in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for phase in PHASES[2:]:
        cells = [f"{100 * p.get(phase, 0.0) / p['wall']:.1f}%" for _, _, p in rows]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("| **run seconds** | " + " | ".join(f"{p['wall']:.1f}" for _, _, p in rows) + " |")
    per_epoch = " | ".join(f"{p['wall'] / args.epochs:.2f}" for _, _, p in rows)
    print(f"| **seconds per epoch** | {per_epoch} |")

if __name__ == "__main__":
    main()
