"""Retrain a finished run from its own ``config.yaml`` and check that it reproduces bit for bit.

Two jobs share this: a grid's evidence (a run whose per-user file was not kept, such as the v3
grid's lastfm ``static0.1`` runs once static-lambda joined the strongest-baseline pool, gets its
per-user test rows back only by retraining, and the retrained run must be the committed one), and
the guard of every refactor or speed-up that promises to move no number (the reference runs of
``tests/test_reference_runs.py``).

"Identical" means ``metrics.json`` and ``history.json`` equal after dropping every ``seconds``
field (wall time is the one thing a rerun may change), compared as parsed JSON, so floats must
match to the last bit. Training runs on one torch thread, as the grids do
(``OMP_NUM_THREADS=1``), since a different thread count may reorder float sums.

Command: ``python -m pmtrec_lab.compare.reproduce RUN_DIR [RUN_DIR ...] [--keep-per-user]``;
with ``--keep-per-user`` a run that reproduced gets the retrained ``per_user_test.parquet``
copied into its folder (``compare --tables-only`` then gathers it). Exits 1 if any run differs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmtrec_lab.train.run import read_json

__all__ = ["Reproduction", "reproduce", "without_seconds", "main"]

COMPARED = ("metrics.json", "history.json")
PER_USER = "per_user_test.parquet"


def without_seconds(obj: Any) -> Any:
    """``obj`` (parsed JSON) with every ``seconds`` key dropped, at any depth."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Reproduction:
    """One retrained run: which of ``COMPARED`` differ (empty: bit for bit) and, for the first
    difference, a short description."""

    run_dir: Path
    differing: tuple[str, ...]
    first_difference: str

    @property
    def identical(self) -> bool:
        return not self.differing


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if type(a) is not type(b):
        return f"{where or '/'}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}/{k}: only in {'the committed run' if k in a else 'the rerun'}"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{where}/{k}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where or '/'}: {len(a)} entries != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where or '/'}: {a!r} != {b!r}"


def reproduce(
    run_dir: str | Path,
    keep_per_user: bool = False,
    work: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> Reproduction:
    """Retrain ``run_dir``'s configuration in a temporary folder (under ``work`` if given) and
    compare its ``COMPARED`` files with the committed ones; with ``keep_per_user``, copy the
    rerun's per-user test file into ``run_dir`` when everything matched (never otherwise: rows
    from a different run must not stand for this one). ``data_dir`` replaces the recorded
    ``data.data_dir`` (a relative one is read from the working directory)."""
    import torch

    from pmtrec_lab.config import load_run_config
    from pmtrec_lab.train import train

    run_dir = Path(run_dir)
    for name in ("config.yaml", *COMPARED):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: no {name}; only a finished run can be reproduced")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(dir=work, prefix="reproduce-") as tmp:
            rerun = Path(tmp) / "run"
            sets = [f"data.data_dir={Path(data_dir).resolve()}"] if data_dir is not None else []
            train(load_run_config(run_dir / "config.yaml", sets), rerun, resume=False)
            differing, first = [], ""
            for name in COMPARED:
                old = without_seconds(read_json(run_dir / name))
                new = without_seconds(read_json(rerun / name))
                if old != new:
                    differing.append(name)
                    first = first or f"{name}{_first_difference(old, new)}"
            if keep_per_user and not differing and (rerun / PER_USER).is_file():
                shutil.copy2(rerun / PER_USER, run_dir / PER_USER)
    finally:
        torch.set_num_threads(threads)
    return Reproduction(run_dir, tuple(differing), first)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders (with config.yaml)")
    ap.add_argument(
        "--keep-per-user",
        action="store_true",
        help=f"copy the rerun's {PER_USER} into each run folder that reproduced",
    )
    ap.add_argument("--data-dir", type=Path, help="the datasets folder (default: each run's own)")
    args = ap.parse_args(argv)
    failed = 0
    for run_dir in args.run_dirs:
        result = reproduce(run_dir, keep_per_user=args.keep_per_user, data_dir=args.data_dir)
        failed += not result.identical
        verdict = (
            "identical"
            if result.identical
            else f"DIFFERS in {', '.join(result.differing)} (first: {result.first_difference})"
        )
        print(f"{run_dir}: {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
