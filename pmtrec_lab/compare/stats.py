"""Paired statistics over users: per-user test NDCG@20 averaged over a method's seeds, users
paired between two methods, and the Wilcoxon signed-rank test (``eval.significance``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pmtrec_lab.compare.spec import METRIC
from pmtrec_lab.eval.significance import wilcoxon_paired

__all__ = ["paired_test", "paired_users", "per_user_mean"]


def paired_users(a: pd.DataFrame | None, b: pd.DataFrame | None) -> pd.DataFrame | None:
    """The users of both per-user tables (:func:`per_user_mean`), columns suffixed ``_a`` / ``_b``;
    None when either table is missing or they share no user."""
    if a is None or b is None:
        return None
    merged = a.merge(b, on="user", suffixes=("_a", "_b"))
    return None if merged.empty else merged


def paired_test(merged: pd.DataFrame) -> dict[str, Any]:
    """Both means and the Wilcoxon test of ``<METRIC>_a`` vs ``<METRIC>_b`` (one row per user)."""
    a, b = merged[f"{METRIC}_a"], merged[f"{METRIC}_b"]
    return {
        "pmtrec_ndcg20": float(a.mean()),
        "baseline_ndcg20": float(b.mean()),
        **wilcoxon_paired(a.to_numpy(), b.to_numpy()),
    }


def per_user_mean(runs: pd.DataFrame, per_user: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Per-user test NDCG@20 averaged over the given runs, with the user's groups; None when
    there is none. Read from each run's ``per_user_test.parquet`` (``run_dir``) or, when
    ``per_user`` is given, from its rows of the runs' (dataset, method, seed), and learning rate
    where both tables have one (a grid keeps every run's rows, at every learning rate)."""
    if per_user is not None:
        on = ["dataset", "method", *(["lr"] if "lr" in runs and "lr" in per_user else []), "seed"]
        allf = per_user.merge(runs[on].drop_duplicates(), on=on)
    else:
        frames = [
            pd.read_parquet(Path(rd) / "per_user_test.parquet")
            for rd in runs["run_dir"]
            if (Path(rd) / "per_user_test.parquet").is_file()
        ]
        allf = pd.concat(frames) if frames else pd.DataFrame()
    if allf.empty:
        return None
    cols = [c for c in ("activity", "social") if c in allf.columns]
    mean = allf.groupby("user")[METRIC].mean().reset_index()
    if cols:
        mean = mean.merge(allf.drop_duplicates("user")[["user", *cols]], on="user")
    return mean
