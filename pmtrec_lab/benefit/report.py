"""Build a benefit-map grid folder's tables: ``python -m pmtrec_lab.benefit results/benefit-map/ciao``.

Gathers the finished runs' per-entity validation metrics into ``per_entity_valid.parquet`` (where
the run files are present; on a fresh clone the committed table is read instead), then writes
beside it ``benefit_overall.csv`` (mean benefit per task and side with bootstrap intervals),
``reliability.csv``, ``benefit_bins.csv`` (by bins of each entity feature), ``structure.csv``
(variance explained by each feature against its permutation floor and the reliability) and
``benefit.md`` (the same, readable). Nothing is written when no run has finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pmtrec_lab.benefit.analysis import (
    FEATURES,
    benefit_per_seed,
    bootstrap_mean_ci,
    by_bins,
    reliability,
    score_weighting,
    structure,
    summarize,
    transfer,
)
from pmtrec_lab.benefit.measure import (
    ENTITY_FILE,
    TEST_ENTITY_FILE,
    WEIGHTS_FILE,
    entity_features,
    gather,
    gather_weights,
)

__all__ = ["TABLES", "BenefitTables", "build", "find_maps", "headlines", "load_tables", "main"]

#: the tables a benefit-map folder holds (file stems; ``weight_scores`` only where scored)
TABLES = ("benefit_overall", "reliability", "benefit_bins", "structure", "transfer", "weight_scores")


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A frame as a Markdown table, floats with ``digits`` decimals, NaN as ``-``."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if value != value else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


class BenefitTables:
    """The tables of one benefit-map folder (attributes named as their files)."""

    def __init__(
        self,
        entities: pd.DataFrame,
        features: pd.DataFrame,
        n_boot: int = 1000,
        weights: pd.DataFrame | None = None,
        test_entities: pd.DataFrame | None = None,
    ):
        self.entities = entities
        self.per_seed = benefit_per_seed(entities)
        self.map = summarize(self.per_seed)
        self.reliability = reliability(self.per_seed)
        self.overall = self._overall(n_boot)
        self.bins = pd.concat(
            [by_bins(self.map, features, f, n_boot=n_boot) for f in FEATURES], ignore_index=True
        )
        self.structure = structure(self.map, features, self.reliability)
        self.scores = self._scores(weights, features) if weights is not None and len(weights) else None
        self.transfer = None
        if test_entities is not None and len(test_entities):
            self.transfer = transfer(self.map, summarize(benefit_per_seed(test_entities)))

    def _scores(self, weights: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        """Each weighting run scored against the map of the seeds that did not train it."""
        frames = []
        seeds = sorted(self.per_seed["seed"].unique())
        for (method, seed, epoch), frame in weights.groupby(["method", "seed", "epoch"], sort=True):
            others = [s for s in seeds if s != seed]
            per_seed = self.per_seed[self.per_seed["seed"].isin(others)]
            scored = score_weighting(
                frame[["dataset", "task", "side", "entity", "weight"]],
                summarize(per_seed),
                features,
                reliability(per_seed),
            )
            scored.insert(0, "method", method)
            scored.insert(1, "seed", seed)
            scored.insert(2, "epoch", epoch)
            scored.insert(3, "map_seeds", ",".join(map(str, others)))
            frames.append(scored)
        return pd.concat(frames, ignore_index=True)

    def _overall(self, n_boot: int) -> pd.DataFrame:
        rows = []
        for (dataset, task, side), frame in self.map.groupby(["dataset", "task", "side"], sort=True):
            lo, hi = bootstrap_mean_ci(frame["benefit"].to_numpy(), n_boot)
            rows.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "side": side,
                    "entities": len(frame),
                    "seeds": int(frame["seeds"].min()),
                    "full": frame["full"].mean(),
                    "without": frame["without"].mean(),
                    "benefit": frame["benefit"].mean(),
                    "ci_low": lo,
                    "ci_high": hi,
                    "share_helped": float((frame["benefit"] > 0).mean()),
                }
            )
        out = pd.DataFrame(rows)
        return out.merge(self.reliability[["dataset", "task", "side", "pair_r", "reliability"]], how="left")

    def markdown(self) -> str:
        """The overall table, the reliability and the structure, as Markdown (NDCG@20 x100)."""
        overall = self.overall.copy()
        for col in ("full", "without", "benefit", "ci_low", "ci_high"):
            overall[col] = overall[col] * 100
        structure = self.structure.copy()
        parts = [
            "# Benefit map (validation NDCG@20 x100; benefit = EW minus EW without the task)",
            "",
            _markdown(overall),
            "",
            "## Structure: variance of the seed-mean benefit explained by bins of each feature",
            "",
            _markdown(structure) if len(structure) else "(no feature varies)",
            "",
        ]
        if self.transfer is not None:
            parts += [
                "## Transfer: validation benefit against test benefit per entity (a check; chooses nothing)",
                "",
                _markdown(self.transfer),
                "",
            ]
        if self.scores is not None:
            parts += [
                "## Weightings scored against the map (within training-degree bins, over sqrt(reliability))",
                "",
                _markdown(self.scores),
                "",
            ]
        return "\n".join(parts)

    def write(self, out: Path) -> list[Path]:
        written = []
        for name, frame in (
            ("benefit_overall.csv", self.overall),
            ("reliability.csv", self.reliability),
            ("benefit_bins.csv", self.bins),
            ("structure.csv", self.structure),
            *((("weight_scores.csv", self.scores),) if self.scores is not None else ()),
            *((("transfer.csv", self.transfer),) if self.transfer is not None else ()),
        ):
            frame.to_csv(out / name, index=False)
            written.append(out / name)
        (out / "benefit.md").write_text(self.markdown())
        written.append(out / "benefit.md")
        return written


def _dataset(out: Path, data_dir: str | None):
    """The dataset of the grid (one dataset per benefit-map grid), loaded as its runs trained it."""
    from pmtrec_lab.compare.layout import finished_runs
    from pmtrec_lab.compare.spec import load_grid, run_config
    from pmtrec_lab.config import load_run_config
    from pmtrec_lab.data import dataset_for_config

    spec = load_grid(out / "grid.resolved.yaml")
    if len(spec.datasets) != 1:
        raise ValueError(f"{out}: a benefit-map grid has one dataset, this one has {spec.datasets}")
    run = next(finished_runs(out, spec), None)
    if run is not None:  # as a run recorded it (a grid from before a default changed keeps its data)
        data = load_run_config(run[4] / "config.yaml").data
        return dataset_for_config(data.model_copy(update={"data_dir": data_dir or data.data_dir}))
    cfg = run_config(spec, spec.datasets[0], spec.methods[0], spec.lrs[0], spec.seeds[0], data_dir)
    return dataset_for_config(cfg.data)


def _gathered(folder: Path, gather_fn, name: str) -> pd.DataFrame | None:
    """``gather_fn(folder)`` written to ``folder/name`` when any run finished; else the committed
    ``folder/name``; None when neither exists."""
    frame = gather_fn(folder)
    committed = folder / name
    if len(frame):
        tmp = committed.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(committed)
        return frame
    return pd.read_parquet(committed) if committed.is_file() else None


def build(
    out: str | Path, data_dir: str | None = None, n_boot: int = 1000, weights: str | Path | None = None
) -> BenefitTables | None:
    """Gather (where run files exist), then compute and write the tables; None when no run finished.
    ``weights``: a weightings grid folder (``plan.weights_grid``) whose runs are scored."""
    out = Path(out)
    entities = _gathered(out, gather, ENTITY_FILE)
    if entities is None:
        return None
    test_entities = _gathered(out, lambda folder: gather(folder, split="test"), TEST_ENTITY_FILE)
    learned = _gathered(Path(weights), gather_weights, WEIGHTS_FILE) if weights is not None else None
    features = entity_features(_dataset(out, data_dir))
    tables = BenefitTables(entities, features, n_boot=n_boot, weights=learned, test_entities=test_entities)
    tables.write(out)
    return tables


def load_tables(folder: str | Path) -> dict[str, pd.DataFrame]:
    """The committed tables of one benefit-map folder (empty when it has none)."""
    folder = Path(folder)
    return {
        name: pd.read_csv(folder / f"{name}.csv") for name in TABLES if (folder / f"{name}.csv").is_file()
    }


def find_maps(root: str | Path, datasets: list[str] | None = None) -> dict[str, dict[str, pd.DataFrame]]:
    """Dataset -> tables of every benefit-map folder under ``root`` (``results/benefit-map``) that
    has its overall table, in ``datasets`` order when given (else sorted)."""
    root = Path(root)
    if datasets is not None:
        names = list(datasets)
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    out = {}
    for name in names:
        tables = load_tables(root / name)
        if "benefit_overall" in tables:
            out[name] = tables
    return out


def headlines(maps: dict[str, dict[str, pd.DataFrame]]) -> dict:
    """The values a report records: per dataset, ``task/side`` -> mean benefit (NDCG@20 x100) and
    its reliability, and the best weighting score where scored."""
    values: dict = {"datasets": list(maps)}
    for dataset, tables in maps.items():
        overall = tables["benefit_overall"]
        values[dataset] = {
            f"{r.task}/{r.side}": {
                "benefit_x100": round(float(r.benefit) * 100, 4),
                "reliability": round(float(r.reliability), 4),
            }
            for r in overall.itertuples(index=False)
        }
        scores = tables.get("weight_scores")
        if scores is not None and scores["score"].notna().any():
            best = scores.loc[scores["score"].idxmax()]
            values[dataset]["best_weighting_score"] = {
                "method": best["method"],
                "task": best["task"],
                "side": best["side"],
                "score": float(best["score"]),
            }
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pmtrec_lab.benefit", description=__doc__.split("\n")[0])
    parser.add_argument(
        "out", help="a benefit-map grid folder (compare --out of results/benefit-map/<dataset>.yaml)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the datasets live (default: the configured one)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--weights", default=None, help="a weightings grid folder to score against the map")
    args = parser.parse_args(argv)
    tables = build(args.out, args.data_dir, args.bootstrap, args.weights)
    if tables is None:
        print(f"{args.out}: no finished run and no {ENTITY_FILE}; nothing written", file=sys.stderr)
        return 2
    print(tables.markdown())
    return 0
