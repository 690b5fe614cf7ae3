"""``pmtrec-lab compare``: a resumable grid of methods x datasets x seeds, and its result tables.

Modules, one job each: ``spec`` (the grid and each run's configuration), ``grid`` (running it
on an executor of ``pmtrec_lab.execution``), ``remote_grid`` (its schedule on Ray), ``layout``
(where runs and tables live, reading them), ``tuned`` (reading ``pmtrec-lab tune``'s choices),
``stats`` (paired per-user tests), ``tables`` (the tables and their Markdown), ``cli``. The
executors live in ``pmtrec_lab.execution`` (below compare and tune); ``executors``,
``dispatch``, ``remote``, ``artefacts``, ``resources``, ``ray_executor`` here re-export them.

Protocol (issue 4; ``../shared/docs/pmtrec-method.md``):
1. every method gets the same budget (MF, dim 64, at most ``epochs`` epochs, patience 5); the
   learning rate is chosen per (dataset, method) among ``lrs`` on seed 0's validation NDCG@20;
2. the chosen learning rate is run with the remaining seeds;
3. tables: mean and standard deviation of test Recall@20 and NDCG@20 per (dataset, method);
   the strongest baseline per dataset by mean validation NDCG@20; a Wilcoxon signed-rank test of
   PMTRec against it over per-user test NDCG@20 averaged over seeds; the same by user group.
4. the ablation table: PMTRec against its named configurations and EW.
Finished runs are never redone (``train`` returns them); unfinished ones resume from ``last.pt``.
``--jobs N`` runs the (dataset, method) units in N processes with the same results (an
``Executor``: ``execution.executors``); ``--executor ray`` runs every run as a Ray task on a
local Ray instance or a cluster (``--address``), the runs' files returning to the driver
(``remote_grid``; ``execution.dispatch``, ``.artefacts``, ``.remote``), so the nodes share no
filesystem. ``--tuned DIR`` runs every seed
from the configurations ``pmtrec-lab tune`` chose (``GridSpec.tuned``).
Test metrics never choose anything.

Layout under ``<out>/`` (commit everything but checkpoints and per-user files):
``grid.resolved.yaml`` (the grid as run), ``runs/<dataset>/<method>/lr<lr>-seed<seed>-<hash>/``
(run directories; the hash is over the run's resolved parameters, and committed runs in the older
``lr<lr>-seed<seed>/`` folders are still read: ``layout``), ``summary.csv``, ``lr_choice.csv``,
``strongest_baseline.csv``, ``significance.csv``, ``significance_groups.csv``, ``ablation.csv``,
``summary.md`` (the tables as Markdown).
"""

from __future__ import annotations

from pmtrec_lab.lazy import lazy_exports

_EXPORTS = {
    "add_compare_command": "cli",
    "EXECUTORS": "executors",
    "Executor": "executors",
    "ProcessExecutor": "executors",
    "RayExecutor": "executors",
    "SequentialExecutor": "executors",
    "make_executor": "executors",
    "UnitJob": "grid",
    "run_grid": "grid",
    "run_unit": "grid",
    "PER_USER_FILE": "layout",
    "TABLES": "layout",
    "choose_lr": "layout",
    "collect": "layout",
    "gather_per_user": "layout",
    "grid_progress": "layout",
    "load_results": "layout",
    "run_key": "layout",
    "run_name": "layout",
    "run_path": "layout",
    "run_prefix": "layout",
    "GROUP_ORDER": "spec",
    "METRIC": "spec",
    "GridSpec": "spec",
    "baseline_methods": "spec",
    "is_baseline": "spec",
    "load_grid": "spec",
    "lr_label": "spec",
    "method_of": "spec",
    "pmtrec_family": "spec",
    "resolved_method": "spec",
    "run_config": "spec",
    "validate_grid": "spec",
    "paired_test": "stats",
    "paired_users": "stats",
    "per_user_mean": "stats",
    "ABLATION_COLUMNS": "tables",
    "ablation_table": "tables",
    "grid_baselines": "tables",
    "markdown_tables": "tables",
    "method_switches": "tables",
    "summarize": "tables",
    "tables_from_runs": "tables",
    "wide_table": "tables",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "ABLATION_COLUMNS",
    "EXECUTORS",
    "GROUP_ORDER",
    "METRIC",
    "PER_USER_FILE",
    "TABLES",
    "Executor",
    "GridSpec",
    "ProcessExecutor",
    "RayExecutor",
    "SequentialExecutor",
    "UnitJob",
    "ablation_table",
    "add_compare_command",
    "baseline_methods",
    "choose_lr",
    "collect",
    "gather_per_user",
    "grid_baselines",
    "grid_progress",
    "is_baseline",
    "load_grid",
    "load_results",
    "lr_label",
    "make_executor",
    "markdown_tables",
    "method_of",
    "method_switches",
    "paired_test",
    "paired_users",
    "per_user_mean",
    "pmtrec_family",
    "resolved_method",
    "run_config",
    "run_grid",
    "run_key",
    "run_name",
    "run_path",
    "run_prefix",
    "run_unit",
    "summarize",
    "tables_from_runs",
    "validate_grid",
    "wide_table",
]
