"""Write the report notebooks (``notebooks/0*.ipynb``) from this script, so they are reviewed as code.

Run ``.venv/bin/python notebooks/build_notebooks.py`` after editing; commit both this script and
the notebooks it writes. ``--check`` exits 1 when a committed notebook differs from what the
script would write (a CI/test guard against hand edits).

Every notebook: a title, a cell tagged ``parameters`` (papermill injects overrides after it),
calls into ``pmtrec_lab`` and figures, and ONE ``record({...})`` of its headline values. No
outputs are stored; kernelspec ``pmtrec-lab`` and ``language_info`` are set (papermill needs
both). Cell ids are derived from the notebook and cell position, so rebuilding is byte-stable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import nbformat

from pmtrec_lab.config import DEFAULT_DIM, DEFAULT_LR, SHORT_RUN_LR
from pmtrec_lab.encoders.registry import DISPLAY_ORDER as BUILTIN_ENCODERS
from pmtrec_lab.reports.defaults import COMMON_PARAMS

HERE = Path(__file__).resolve().parent

KERNEL_METADATA = {
    "kernelspec": {"name": "pmtrec-lab", "display_name": "pmtrec-lab (.venv)", "language": "python"},
    "language_info": {"name": "python", "pygments_lexer": "ipython3", "file_extension": ".py"},
}

# The common training parameters, in the order shown; defaults from pmtrec_lab.reports.defaults,
# whose embedding width and learning rate are the library's (pmtrec_lab.config: DEFAULT_DIM, and
# SHORT_RUN_LR, the learning rate for short runs, with its reason). A notebook that disagrees with
# them is not written: the values have one owner.
_LIBRARY_DEFAULTS = {"dim": DEFAULT_DIM, "lr": SHORT_RUN_LR}
_COMMENTS = {
    "dataset": "registered dataset name (ml-100k is embedded; synthetic is generated)",
    "encoder": " | ".join(BUILTIN_ENCODERS),  # the built-ins (a plug-in must not change the notebooks)
    "dim": "embedding dimension (pmtrec_lab.config.DEFAULT_DIM)",
    "method": "weighting method (pmtrec_lab.mtl.METHODS)",
    "method_params": "method hyper-parameters, e.g. {'tau': 0.5}",
    "epochs": "maximum epochs (early stopping on validation ndcg@20, patience 5)",
    "lr": f"Adam learning rate of short runs (config.SHORT_RUN_LR; 100-epoch runs: {DEFAULT_LR:g})",
    "batch_size": "main-task batch size",
    "seed": "run seed (the split seed stays 0)",
    "device": "torch device",
    "data_dir": "None: PMTREC_DATA_DIR or the default data directory",
    "data_path": "folder of RecBole atomic files, for dataset atomic (relative: under data_dir)",
    "loader_args": "dataset loader arguments, e.g. {'num_users': 300} for synthetic",
    "k_core": "None: the dataset's default k-core filter",
    "aux_holdout": "share of each auxiliary relation and label set held out to measure it (0 or None: off)",
    "tasks": "auxiliary tasks to include (None: the dataset's defaults)",
    "runs_dir": "run cache root (None: PMTREC_RUNS_DIR or .cache/runs)",
}
_DRIFT = {k: (COMMON_PARAMS[k], v) for k, v in _LIBRARY_DEFAULTS.items() if COMMON_PARAMS[k] != v}
if _DRIFT:
    raise SystemExit(
        "pmtrec_lab.reports.defaults.COMMON_PARAMS disagrees with pmtrec_lab.config "
        + ", ".join(f"({k}: {have!r}, expected {want!r})" for k, (have, want) in _DRIFT.items())
    )
COMMON = {key: (value, _COMMENTS[key]) for key, value in COMMON_PARAMS.items()}
CFG_CALL = (
    "cfg = notebook_config(\n"
    + "".join(f"    {k}={k},\n" for k in COMMON if k != "runs_dir")
    + ")\n"
    + "run = cached_run(cfg, runs_dir)"
)


def _params_source(extra: dict[str, tuple[Any, str]] | None = None, common: bool = True) -> str:
    items = dict(COMMON) if common else {}
    items.update(extra or {})
    width = max(len(f"{k} = {v!r}") for k, (v, _) in items.items())
    lines = ["# Parameters (papermill injects overrides after this cell)"]
    for key, (value, comment) in items.items():
        assign = f"{key} = {value!r}"
        lines.append(f"{assign:<{width}}  # {comment}")
    return "\n".join(lines)


class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.cells: list[Any] = []

    def md(self, text: str) -> _Builder:
        self.cells.append(nbformat.v4.new_markdown_cell(text.strip()))
        return self

    def code(self, text: str, tags: list[str] | None = None) -> _Builder:
        cell = nbformat.v4.new_code_cell(text.strip())
        if tags:
            cell.metadata["tags"] = tags
        self.cells.append(cell)
        return self

    def params(self, extra: dict[str, tuple[Any, str]] | None = None, common: bool = True) -> _Builder:
        return self.code(_params_source(extra, common), tags=["parameters"])

    def notebook(self) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.metadata.update(KERNEL_METADATA)
        for i, cell in enumerate(self.cells):
            cell["id"] = f"{self.name[:2]}-{i:02d}"
        nb.cells = self.cells
        return nb


_BASE_IMPORTS = (
    "from pmtrec_lab import viz",
    "from pmtrec_lab.reports import record",
    "from pmtrec_lab.reports.defaults import notebook_config",
    "from pmtrec_lab.train import cached_run",
)


def setup(*imports: str) -> str:
    """The first code cell's imports (sorted, as ruff would), ending with a blank line."""
    lines = sorted({*_BASE_IMPORTS, *imports})
    return "from IPython.display import HTML, Markdown, display\n\n" + "\n".join(lines) + "\n\n"


def nb01() -> _Builder:
    b = _Builder("01_train_and_evaluate")
    b.md(
        """
# 01 · Train and evaluate

Trains one configuration (PMTRec on ml-100k by default) or reuses the finished run with the same
configuration from the run cache, then shows its learning curves, validation-selected test
metrics (full ranking, training and validation items masked), the same setting trained with EW
and with the main task alone, and the test metric by user group. Notebooks 02-04 read the same
run.
"""
    )
    b.params()
    b.code(
        setup(
            "from pmtrec_lab.reports.headlines import train_headlines",
            "from pmtrec_lab.reports.references import reference_headlines, reference_runs, "
            "reference_summary, reference_table",
        )
        + CFG_CALL
    )
    b.code(
        'display(Markdown(f"Run `{run.path.name}`: {run.config.data.name}, {run.config.method.name}, "\n'
        "                 f\"{run.metrics['epochs_run']} epochs ({run.metrics['stopped']}), \"\n"
        "                 f\"best epoch {run.metrics['best_epoch']}\"))"
    )
    b.md(
        "## Learning curves\n"
        "Losses are relative to their first epoch; the dashed line marks the selected epoch."
    )
    b.code('viz.learning_curves(run.history, best_epoch=run.metrics["best_epoch"])')
    b.md("## Test metrics")
    b.code("display(viz.metrics_table(run.metrics).round(4))\nviz.metrics_bar(run.metrics)")
    b.md(
        "## Beside EW and single-task training\n"
        "The same setting trained with equal task weights (EW) and with the main task alone "
        "(single-task), from the run cache when they exist. EW above single-task: the auxiliary tasks "
        "help here; the method against single-task: whether it kept that help or avoided the harm. "
        "Single runs' test metrics: they show the setting and choose nothing."
    )
    b.code(
        "refs = reference_runs(cfg, runs_dir)\n"
        "ref_table = reference_table({run.config.method.name: run, **refs})\n"
        "display(ref_table.round(4))\n"
        'viz.method_comparison(reference_summary(ref_table, run.config.data.name), title="Test NDCG@20")'
    )
    b.md(
        "## By user group\nActivity thirds of training interactions (coldest to most active) and, where the "
        "dataset has social links, users with and without links."
    )
    b.code("display(viz.group_metrics_table(run.groups).round(4))\nviz.group_metrics_figure(run.groups)")
    b.md(
        "## By item popularity, and beyond accuracy\n"
        "Items in thirds of their training interactions (tail to head) and the top 20%; an item's value "
        "is its share of its users' NDCG (`pmtrec_lab/eval/items.py`). Then catalogue coverage, average "
        "popularity, Gini index and long-tail share of the top-k lists, as RecBole defines them "
        "(`pmtrec_lab/eval/beyond.py`)."
    )
    b.code("items = viz.read_items(run.path)\nviz.item_group_figure(items)")
    b.code("display(viz.beyond_table(items).round(4))")
    b.md(
        "## The auxiliary tasks themselves\n"
        "With `aux_holdout` (on by default, 0.1), a share of each auxiliary relation and label set is held "
        "out of training "
        "and each auxiliary task is measured on it by its own head: AUC and Hit@10 of a held-out edge "
        "against 100 non-edges for link tasks, accuracy (or micro-F1) for label tasks "
        "(`pmtrec_lab/eval/auxiliary.py`). What the main task's gain cost the auxiliary tasks, or "
        "whether a weighting learned them at all."
    )
    b.code(
        "aux = viz.aux_metrics_table(run.metrics)\nif len(aux):\n    display(aux.round(4))\n"
        'viz.aux_metrics_over_epochs(run.history, best_epoch=run.metrics["best_epoch"])'
    )
    b.code(
        'values = {**train_headlines(run), "references": reference_headlines(ref_table),\n'
        '          "beyond@20": viz.beyond_at(items, 20),\n'
        '          "aux_test": (run.metrics.get("aux") or {}).get("test", {})}\n'
        "_ = record(values)\nvalues"
    )
    return b


def nb02() -> _Builder:
    b = _Builder("02_task_weights")
    b.md(
        """
# 02 · Per-entity task weights

PMTRec gives every user and item its own task weights, from the relative size of each task's
gradient for that entity (docs: `pmtrec-method.md`, step 4). This notebook shows how those
weights are distributed per task, how they relate to an entity's activity and (where the dataset
has social links) to its social degree, how they move over training, and one entity's trajectory.
"""
    )
    b.params(
        {
            "weight_epoch": (None, "epoch of the weights shown (None: the last recorded)"),
            "entity_side": ("user", "side of the entity whose trajectory is shown"),
            "entity": (None, "entity id (None: the one touched by the most steps)"),
        }
    )
    b.code(
        setup("from pmtrec_lab.reports.headlines import weight_headlines")
        + CFG_CALL
        + "\n"
        + """ew = run.diagnostics()["entity_weights"]
ds = viz.dataset_for_config(run.config)
activity = viz.entity_activity(ds)
if ew.empty:
    display(Markdown(f"**{run.config.method.name} records no per-entity weights**: the panels below say so."))
if not viz.has_social_links(ds):
    display(Markdown(f"**{ds.name} has no social links**: panels against social degree are skipped."))"""
    )
    b.md("## Distribution per task\nOne violin per task and side; its width is the personalization.")
    b.code(
        """
display(viz.mean_task_weights(ew, weight_epoch).round(4))
viz.weight_distributions(ew, weight_epoch)"""
    )
    b.md(
        "## Against activity and social degree\nMean weight per activity bin (quantiles of training "
        "interactions), with standard errors; Spearman correlations below."
    )
    b.code(
        "display(viz.weights_vs_activity(ew, activity, epoch=weight_epoch))\n"
        "viz.weight_activity_correlation(ew, activity, weight_epoch).round(3)"
    )
    b.md("## Over training\nMean and 10-90% band at each recorded epoch.")
    b.code("viz.weights_over_epochs(ew)")
    b.md(
        "## PMTRec v3 signals\nDoes the magnitude signal follow sampling luck (in-batch counts, within "
        "activity deciles; v2's raw norm does)? And, with the meta split, the usefulness scales lambda "
        "per task and side and the size of the per-entity deviations delta."
    )
    b.code(
        'v3_epochs = run.diagnostics()["epochs"]\n'
        'for metric in ("count_spearman", "usefulness_scale", "delta_abs"):\n'
        "    display(viz.v3_signal(v3_epochs, metric))"
    )
    b.md(
        "## PMTRec v4: auxiliary levels chosen in the run\nWith `level_select` (and the meta split), "
        "a level per auxiliary task scales its weight in the combination; before the epochs of "
        "`level_at` the run branches one short continuation per candidate level and keeps the one "
        "that ranks the held-out meta pairs best (docs/pmtrec-method.md, \"PMTRec v4\")."
    )
    b.code(
        "rounds = run.level_rounds()\nif rounds:\n    display(viz.level_rounds_table(rounds).round(4))\n"
        "viz.level_rounds_figure(rounds)"
    )
    b.md("## One entity")
    b.code(
        "picked = viz.pick_entity(ew, entity_side, entity)\nviz.entity_trajectory(ew, entity_side, picked)"
    )
    b.code(
        """
values = {**weight_headlines(ew, activity, weight_epoch), "has_social_links": viz.has_social_links(ds),
          "entity_side": entity_side, "entity": picked, "run": run.path.name}
_ = record(values)
values"""
    )
    return b


def nb03() -> _Builder:
    b = _Builder("03_gradient_conflicts")
    b.md(
        """
# 03 · Gradient conflicts and Task Focusing

For every touched entity the trainer measures the cosine between each auxiliary task's gradient
and the main-task gradient. A negative cosine is a conflict: following that task would undo
progress on recommendation for this entity. Task Focusing's alignment projects the conflicting
component out, so the *combined* gradient never opposes the main task. Compare the raw cosines
with the combined ones (and, with `compare_align_off=True`, with a run whose alignment is off).
"""
    )
    b.params(
        {
            "hist_epoch": (None, "epoch of the before/after histograms (None: the last)"),
            "compare_align_off": (False, "also train pmtrec-no-align and compare its conflicts"),
            "compare_task_adam": (False, "also train the run with PMTRec v4's task_adam and compare"),
        }
    )
    b.code(
        setup("from pmtrec_lab.reports.headlines import conflict_headlines")
        + CFG_CALL
        + "\ndiag = run.diagnostics()"
    )
    b.md(
        "## Conflict fraction over training\nSolid: per auxiliary task (raw); dashed: the combined gradient."
    )
    b.code(
        'display(viz.conflict_summary(diag["epochs"]).round(3))\nviz.conflict_fraction_over_epochs(diag["epochs"])'
    )
    b.md("## Cosine distributions over training (raw)")
    b.code('viz.cosine_histograms(diag["cosine_hist"], "raw")')
    b.md("## Before and after Task Focusing")
    b.code('viz.cosine_before_after(diag["cosine_hist"], hist_epoch)')
    b.md(
        "## Reach and meta cosines (PMTRec v3)\nThe share of each task's row-updates that focusing "
        "reaches (v2: only entities with a main gradient in the step; `focus_everywhere`: all with a "
        "memory), and, with the meta split, the cosine of the meta-loss gradient with each task's."
    )
    b.code('for metric in ("focus_share", "meta_cos"):\n    display(viz.v3_signal(diag["epochs"], metric))')
    b.md("## Alignment off")
    b.code(
        """values = conflict_headlines(diag["epochs"], hist_epoch)
if compare_align_off:
    cfg_off = cfg.updated({"method": {"name": "pmtrec-no-align", "params": method_params}})
    run_off = cached_run(cfg_off, runs_dir)
    diag_off = run_off.diagnostics()
    display(Markdown(f"Run `{run_off.path.name}` (pmtrec-no-align)"))
    display(viz.conflict_fraction_over_epochs(diag_off["epochs"]))
    display(viz.cosine_before_after(diag_off["cosine_hist"]))
    off = conflict_headlines(diag_off["epochs"])
    values["align_off_conflict_fraction_combined"] = off["conflict_fraction_combined"]
    values["align_off_test_ndcg@20"] = run_off.metrics["test"]["ndcg@20"]
else:
    display(Markdown("Set `compare_align_off=True` to train `pmtrec-no-align` and compare."))"""
    )
    b.md(
        "## PMTRec v4: per-task Adam\nWith `task_adam`, each task's gradient is replaced by its own Adam "
        "direction before the combination: the raw cosines above are unchanged, but the combined "
        "gradient follows the directions, so its conflicts with the main task can differ."
    )
    b.code(
        """if compare_task_adam:
    cfg_ta = cfg.updated({"method": {"name": method, "params": {**method_params, "task_adam": True}}})
    run_ta = cached_run(cfg_ta, runs_dir)
    display(Markdown(f"Run `{run_ta.path.name}` (task_adam)"))
    display(viz.conflict_fraction_over_epochs(run_ta.diagnostics()["epochs"]))
    values["task_adam_conflict_fraction_combined"] = conflict_headlines(
        run_ta.diagnostics()["epochs"])["conflict_fraction_combined"]
else:
    display(Markdown("Set `compare_task_adam=True` to train the run with `task_adam` and compare."))"""
    )
    b.code(
        """
values.update(run=run.path.name, test_ndcg20=run.metrics["test"]["ndcg@20"])
_ = record(values)
values"""
    )
    return b


def nb04() -> _Builder:
    b = _Builder("04_magnitude_balance")
    b.md(
        """
# 04 · Gradient magnitude balance

Auxiliary tasks can have gradients far larger (or smaller) than the main task's: summed as they
are, the largest would dominate every update. Gradient Magnitude Balancing (GMB, after
MetaBalance) moves each task's magnitude towards the main task's, with strength `rho`. This
notebook shows the GMB of the report's run (notebooks 01-03's: by default `pmtrec`, PMTRec v3,
whose GMB is per entity and reduce-only, `gmb_mode=entity_reduce`, chosen on validation data:
docs/pmtrec-method.md): the factor by which it reduces each auxiliary task, each task's magnitude
relative to the main task's, and which tasks would dominate without balancing. Beside it, for
comparison, `pmtrec-gmb` (v2's per-side rule, rho = 0.5) shows the per-side balancing, which
the per-entity rule leaves unchanged.
"""
    )
    b.params(
        {
            "dominance_factor": (2.0, "ratio above which a task 'dominates' (below 1/x: 'vanishes')"),
            "gmb_method": (None, "method whose balancing is shown (None: `method`, the report's run)"),
            "compare_gmb_method": ("pmtrec-gmb", "per-side GMB shown beside it (v2's rule); None: none"),
            "compare_v4": (None, "a PMTRec v4 switch trained beside the run: 'task_adam' or 'level_select'"),
        }
    )
    b.code(
        setup(
            "from pmtrec_lab.reports.headlines import gmb_setting, magnitude_headlines, side_gmb_headlines",
            "from pmtrec_lab.reports.references import reference_config",
        )
        + "method = gmb_method or method\n"
        + CFG_CALL
        + '\nepochs_table = run.diagnostics()["epochs"]\n'
        + "gmb = gmb_setting(method, run.config.method.params)\n"
        + 'display(Markdown(f"Run `{run.path.name}`: {gmb[\'gmb\']}"))'
    )
    b.md(
        "## The reduce factor per task (per-entity GMB, PMTRec v3)\nThe mean factor "
        "`gmb_mode=entity_reduce` applies to each task's rows, over the entities of each epoch (1: "
        "never reduced; the main task is never reduced)."
    )
    b.code('viz.v3_signal(epochs_table, "gmb_reduce")')
    b.md(
        "## Magnitude ratios over training\nSolid: before GMB; dashed: after. 1 is the main task's scale. "
        "The per-entity rule leaves these per-side ratios as they are (its dashed lines lie on the solid "
        "ones); the per-side rule, below, pulls them towards 1."
    )
    b.code("viz.norm_ratio_over_epochs(epochs_table)")
    b.md("## Raw gradient norms")
    b.code("viz.grad_norm_over_epochs(epochs_table)")
    b.md("## Which tasks would dominate without GMB (last epoch)")
    b.code("viz.magnitude_summary(epochs_table, factor=dominance_factor).round(3)")
    b.md("## Beside it: per-side GMB")
    b.code(
        """values = {**magnitude_headlines(epochs_table, factor=dominance_factor), "run": run.path.name,
          "method": method, "rho": gmb["rho"], "gmb_mode": gmb["gmb_mode"]}
if compare_gmb_method and compare_gmb_method != method:
    run_side = cached_run(reference_config(cfg, compare_gmb_method), runs_dir)
    side = gmb_setting(compare_gmb_method, run_side.config.method.params)
    display(Markdown(f"Run `{run_side.path.name}`: {side['gmb']}"))
    display(viz.norm_ratio_over_epochs(run_side.diagnostics()["epochs"]))
    values.update(side_gmb_headlines(run_side, factor=dominance_factor))
else:
    display(Markdown("Set `compare_gmb_method='pmtrec-gmb'` to train v2's per-side GMB and show it here."))"""
    )
    b.md(
        "## PMTRec v4: per-task Adam and auxiliary levels\n`task_adam` replaces each task's gradient "
        "by its own Adam direction before GMB, so no task's size can shrink another's steps (the ratios "
        "after it are those of the directions); `level_select` scales each auxiliary task by a level "
        "chosen in the run on held-out meta pairs. Set `compare_v4` to train the run with one of them."
    )
    b.code(
        """if compare_v4 in ("task_adam", "level_select"):
    params = {**(run.config.method.params or {}), compare_v4: True}
    change = {"method": {"name": method, "params": params}}
    if compare_v4 == "level_select":  # it chooses on the meta split (one training pair per user held out)
        change["data"] = {"meta_split": True}
    run_v4 = cached_run(cfg.updated(change), runs_dir)
    display(Markdown(f"Run `{run_v4.path.name}` ({compare_v4}): test NDCG@20 "
                     f"{run_v4.metrics['test']['ndcg@20']:.4f} against {run.metrics['test']['ndcg@20']:.4f}"))
    display(viz.norm_ratio_over_epochs(run_v4.diagnostics()["epochs"]))
    display(viz.level_rounds_figure(run_v4.level_rounds()))
    values[f"{compare_v4}_test_ndcg@20"] = run_v4.metrics["test"]["ndcg@20"]
else:
    display(Markdown("Set `compare_v4='task_adam'` (or `'level_select'`) to train it beside the run."))"""
    )
    b.code("_ = record(values)\nvalues")
    return b


def nb05() -> _Builder:
    b = _Builder("05_ablation_explorer")
    b.md(
        """
# 05 · Ablation explorer

Switch PMTRec's modules on and off (personalization, TF alignment, TF schedule, GMB), set `tau`,
`beta_max` and `rho`, press **Train**: a small model is trained (or a run of the same
configuration reused), then its curves and metrics are shown next to every configuration tried
in this session. In a batch report (`interactive=False`) the configuration in `controls` is run
once and its figures and metrics are shown as plain outputs.
"""
    )
    b.params(
        {
            "controls": ({}, "initial switches/sliders, e.g. {'gmb': False, 'tau': 0.5}"),
            "interactive": (True, "show the widget (JupyterLab); False: plain outputs (reports)"),
        }
    )
    b.code(
        setup(
            "from pmtrec_lab.reports.headlines import train_headlines",
            "from pmtrec_lab.widgets import AblationExplorer",
        )
        + "base_cfg = notebook_config(\n"
        + "".join(f"    {k}={k},\n" for k in COMMON if k != "runs_dir")
        + ")\n"
        + "explorer = AblationExplorer(base_cfg, runs_dir=runs_dir, show_figures=interactive, **controls)\n"
        + "run = explorer.run()"
    )
    b.code(
        """if interactive:
    display(explorer)
else:
    for fig in explorer.figures():
        display(fig)
    display(HTML(explorer.metrics_html.value))"""
    )
    b.code(
        'values = {**train_headlines(run), "controls": explorer.values(),\n'
        '          "method_params": dict(explorer.last_config.method.params)}\n'
        "_ = record(values)\nvalues"
    )
    return b


def nb06() -> _Builder:
    b = _Builder("06_method_comparison")
    b.md(
        """
# 06 · Method comparison

Test metrics of PMTRec, its ablations and the baselines across datasets and seeds, the strongest
baseline per dataset (by validation NDCG@20) and a Wilcoxon signed-rank test of PMTRec against it
over per-user test NDCG@20. By default the committed tables of the PMTRec v3 grid under
`results/grid-v3/` are read (written by `pmtrec-lab compare --grid results/grid-v3.yaml`; `pmtrec`
there is the v3 default, `pmtrec-v2` the v2 method), with the v2 grid (`results/grid/`, where
`pmtrec` *is* v2) and a tuned grid beside them where one is committed; with `run_small_grid=True`
a small grid is trained here instead (a few methods x seeds x epochs, reused from the run cache
when repeated). Every table is shown whole.
"""
    )
    b.params(
        {
            "results_dir": (None, "None: results/grid-v3, the committed PMTRec v3 comparison grid"),
            "show_other_grids": (True, "also show the committed v2 grid and tuned grids, labelled"),
            "run_small_grid": (False, "train a small grid here instead of reading results/"),
            "grid_methods": (
                ["ew", "pcgrad", "pmtrec", "pmtrec-no-personalization", "pmtrec-gmb"],
                "grid methods",
            ),
            "grid_datasets": (None, "grid datasets (None: [dataset])"),
            "grid_seeds": ([0], "grid seeds"),
            "dataset_params": ({}, "per-dataset overrides, e.g. {'synthetic': {'loader_args': {...}}}"),
        }
    )
    b.code(
        setup(
            "from pmtrec_lab.paths import PROJECT_ROOT",
            "from pmtrec_lab.reports.headlines import grid_headlines",
            "from pmtrec_lab.reports import small_grid",
            "from pmtrec_lab import compare",
            "import pandas as pd",
        )
        + """if run_small_grid:
    base_params = dict(encoder=encoder, dim=dim, method_params=method_params, epochs=epochs, lr=lr,
                       batch_size=batch_size, device=device, data_dir=data_dir, data_path=data_path,
                       loader_args=loader_args, k_core=k_core, tasks=tasks)
    runs = small_grid.run_small_grid(grid_methods, grid_datasets or [dataset], grid_seeds, base_params,
                          dataset_params, runs_dir)
    tables = small_grid.summarize_grid(runs)
    source = "small grid"
else:
    source = str(results_dir or PROJECT_ROOT / "results" / "grid-v3")
    tables = small_grid.find_results(source)
pd.set_option("display.max_rows", None)  # every table whole, never "63 rows x 10 columns"
pd.set_option("display.max_columns", None)
if not tables:
    display(Markdown(f"**No result tables in `{source}` yet** (run `pmtrec-lab compare`, or set "
                     "`run_small_grid=True`): the panels below are empty."))
else:
    display(Markdown(f"Tables from: `{source}`"))"""
    )
    b.md("## Test metrics (mean ± std over seeds)")
    b.code(
        """
summary = tables.get("summary")
if summary is not None:
    display(Markdown(compare.wide_table(summary)))
    display(summary.round(4))
viz.method_comparison(summary)"""
    )
    b.md(
        "## Accuracy against catalogue coverage\n"
        "Test NDCG@20 against item coverage@20 per method (grids whose runs record `items.json`)."
    )
    b.code("viz.accuracy_coverage(summary)")
    b.md("## Ablations: difference to PMTRec")
    b.code("viz.ablation_figure(summary)")
    b.md("## Strongest baseline and significance")
    b.code(
        'for name in ("strongest_baseline", "significance", "significance_groups", "ablation"):\n'
        "    if name in tables and not tables[name].empty:\n"
        '        display(Markdown(f"**{name}**"), tables[name].round(4))'
    )
    b.md("## Other committed grids (labelled by the PMTRec they ran)")
    b.code(
        """
others = []
if show_other_grids and not run_small_grid:
    others = small_grid.other_grids(PROJECT_ROOT / "results", source)
for label, folder, other in others:
    display(Markdown(f"### {label} (`{folder}`)"))
    display(Markdown(compare.wide_table(other["summary"])))
    if "strongest_baseline" in other:
        display(other["strongest_baseline"])"""
    )
    b.md(
        "## Tuned grids: best validation NDCG@20 against the number of trials (does the budget suffice?)\n"
        "For the grid shown and every committed grid run by `compare --tuned` (its studies' `trials.csv`)."
    )
    b.code(
        """
from pmtrec_lab.tune import grid_trials, tuning_curves
tuned_grids = [] if run_small_grid else [("shown", source)]
tuned_grids += [(label, str(PROJECT_ROOT / "results" / folder)) for label, folder, _ in others]
curves = [(label, tuning_curves(grid_trials(folder))) for label, folder in tuned_grids]
curves = [(label, c) for label, c in curves if not c.empty]
if not curves:
    viz.tuning_curve(None).show()
for label, c in curves:
    display(Markdown(f"### {label}"))
    viz.tuning_curve(c).show()"""
    )
    b.code(
        "values = grid_headlines(tables, source)\n"
        'values["other_grids"] = [label for label, _, _ in others]\n'
        'values["tuning_curves"] = [label for label, _ in curves]\n'
        "_ = record(values)\nvalues"
    )
    return b


def nb07() -> _Builder:
    b = _Builder("07_benefit_map")
    b.md(
        """
# 07 · Benefit map: who gains from which auxiliary task

For auxiliary task k and entity x, **benefit** = validation NDCG@20 under EW with every task minus
the same under EW with task k left out (task `all`: EW minus single-task), per user and per item
(items through the users whose held-out items they are), the mean over 3 seeds, at EW's learning
rate of the v3 grid and under its protocol (`results/benefit-map/<dataset>.yaml`). Its **reliability**
(Spearman-Brown over seeds) says how much of its spread across entities is not seed noise; the
**structure** says how much of that spread bins of training degree, link degree or label count
explain, against the same with the bins permuted. The per-entity weightings (PMTRec v3, v2, GCS,
learned delta) are **scored** by how well their weights follow benefit within degree bins, on
benefit from seeds that did not train them. Tables: `python -m pmtrec_lab.benefit
results/benefit-map/<dataset> --weights results/benefit-map/<dataset>-weights`. Nothing is
trained here. Definitions: `docs/pmtrec-method.md`, "PMTRec v4".
"""
    )
    b.params(
        {
            "results_dir": (None, "None: results/benefit-map, the committed benefit maps"),
            "datasets": (None, "None: every dataset with a committed map"),
            "features": (["train_degree", "link_degree"], "entity features the figures bin by"),
        },
        common=False,
    )
    b.code(
        "from IPython.display import Markdown, display\n\n"
        "import pandas as pd\n\n"
        "from pmtrec_lab import viz\n"
        "from pmtrec_lab.benefit.report import find_maps, headlines\n"
        "from pmtrec_lab.paths import PROJECT_ROOT\n"
        "from pmtrec_lab.reports import record\n\n"
        """source = str(results_dir or PROJECT_ROOT / "results" / "benefit-map")
maps = find_maps(source, datasets)
pd.set_option("display.max_rows", None)
pd.set_option("display.max_columns", None)
if not maps:
    display(Markdown(f"**No benefit-map tables in `{source}` yet** (train the maps' grids with "
                     "`pmtrec-lab compare`, then build them): the panels below are empty."))
else:
    display(Markdown(f"Maps from `{source}`: {', '.join(maps)}"))"""
    )
    b.md("## Mean benefit per task and side (NDCG@20 x100, bootstrap 95% interval) and its reliability")
    b.code(
        """
for name, tables in maps.items():
    overall = tables["benefit_overall"].copy()
    for col in ("full", "without", "benefit", "ci_low", "ci_high"):
        overall[col] = overall[col] * 100
    display(Markdown(f"### {name}"), overall.round(3))"""
    )
    b.md("## Benefit by bins of each entity feature")
    b.code(
        """
figures = []
for name, tables in maps.items():
    for feature in features:
        bins = tables.get("benefit_bins")
        figures.append(viz.benefit_by_bins(bins, feature, title=f"{name}: by {feature}"))
if not figures:
    figures.append(viz.benefit_by_bins(None))
for fig in figures:
    fig.show()"""
    )
    b.md("## Structure: variance of benefit the bins explain, against permuted bins and the reliability")
    b.code(
        """
for name, tables in maps.items():
    if "structure" in tables:
        display(Markdown(f"### {name}"), tables["structure"].round(4))"""
    )
    b.md("## Weightings scored against the map (within training-degree bins, over sqrt(reliability))")
    b.code(
        """
for name, tables in maps.items():
    scores = tables.get("weight_scores")
    display(Markdown(f"### {name}"), scores.round(3) if scores is not None else
            Markdown("not scored yet (`results/benefit-map/<dataset>-weights`)"))"""
    )
    b.code("values = headlines(maps)\n_ = record(values)\nvalues")
    return b


BUILDERS = (nb01, nb02, nb03, nb04, nb05, nb06, nb07)


def build() -> dict[Path, str]:
    """Notebook path -> the exact text this script writes."""
    out = {}
    for fn in BUILDERS:
        b = fn()
        out[HERE / f"{b.name}.ipynb"] = nbformat.writes(b.notebook()) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from the script")
    args = parser.parse_args(argv)
    stale = []
    for path, text in build().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run notebooks/build_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
