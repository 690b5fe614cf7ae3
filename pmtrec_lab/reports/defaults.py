"""Defaults shared by the report notebooks: which notebooks exist, and the run they train.

Notebooks 01-04 train (or reuse) ONE configuration through :func:`notebook_config` +
``cached_run``: with the same parameters they build the same ``RunConfig``, hence the same
config-keyed run directory, so the model is trained once and read four times. The defaults are
sized for a 2-core CPU (MF, dim 64 = ``config.DEFAULT_DIM``, 15 epochs, lr 3e-3 =
``config.SHORT_RUN_LR`` on ml-100k: about a minute when idle), not for paper-grade numbers;
``pmtrec-lab report --set epochs=60`` (or a params file) scales them up.

``progress`` is always ``"auto"`` here: the run cache (``pmtrec_lab.train.cache``) keys runs
without the progress setting, but ``train`` refuses to reuse a directory whose ``config.yaml``
text differs, progress included; one fixed value keeps notebooks, the explorer and the CLI on
the same runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pmtrec_lab.config import DEFAULT_AUX_HOLDOUT, DEFAULT_DIM, SHORT_RUN_LR, RunConfig, load_config
from pmtrec_lab.paths import PROJECT_ROOT

NOTEBOOK_DIR: Path = PROJECT_ROOT / "notebooks"

#: The report notebooks in run order (file stems in ``notebooks/``).
NOTEBOOKS: tuple[str, ...] = (
    "01_train_and_evaluate",
    "02_task_weights",
    "03_gradient_conflicts",
    "04_magnitude_balance",
    "05_ablation_explorer",
    "06_method_comparison",
    "07_benefit_map",
)

#: Parameters every training notebook accepts, with their defaults (the ``parameters`` cells
#: are generated from this by ``notebooks/build_notebooks.py``).
COMMON_PARAMS: dict[str, Any] = {
    "dataset": "ml-100k",
    "encoder": "mf",
    "dim": DEFAULT_DIM,
    "method": "pmtrec",
    "method_params": {},
    "epochs": 15,
    "lr": SHORT_RUN_LR,
    "batch_size": 2048,
    "seed": 0,
    "device": "cpu",
    "data_dir": None,
    "data_path": None,
    "loader_args": {},
    "k_core": None,
    "tasks": None,
    "aux_holdout": DEFAULT_AUX_HOLDOUT,
    "runs_dir": None,
}


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb``; ``name`` may be a stem, a ``01``-style prefix or a file name."""
    return NOTEBOOK_DIR / f"{resolve_notebook(name)}.ipynb"


def resolve_notebook(name: str) -> str:
    """The notebook stem that ``name`` (``"03"``, ``"03_gradient_conflicts"``, ``"x.ipynb"``) names."""
    key = Path(name).stem
    matches = [n for n in NOTEBOOKS if n == key or n.split("_", 1)[0] == key]
    if len(matches) != 1:
        raise ValueError(f"unknown notebook {name!r}; known: {', '.join(NOTEBOOKS)} (or their 01..07 prefix)")
    return matches[0]


def notebook_config(
    dataset: str = "ml-100k",
    encoder: str = "mf",
    dim: int = DEFAULT_DIM,
    method: str = "pmtrec",
    method_params: dict[str, Any] | None = None,
    epochs: int = 15,
    lr: float = SHORT_RUN_LR,
    batch_size: int = 2048,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    data_path: str | None = None,
    loader_args: dict[str, Any] | None = None,
    k_core: int | None = None,
    tasks: list[str] | None = None,
    aux_holdout: float | None = DEFAULT_AUX_HOLDOUT,
    overrides: dict[str, Any] | None = None,
    **ignored: Any,
) -> RunConfig:
    """The ``RunConfig`` a report notebook trains, from its parameters.

    Extra keyword arguments (other notebook parameters passed as ``**params``) are ignored, so a
    notebook can call ``notebook_config(**params)`` with its whole parameter set. ``overrides``
    is a nested dict merged last (e.g. ``{"eval": {"patience": 3}}``). ``data_path`` is
    ``data.path``: the folder of atomic files of ``dataset="atomic"`` (relative: under the data
    directory); its tasks are those its ``pmtrec.yaml`` declares (or those its files offer, off).
    ``aux_holdout`` is ``data.aux_holdout`` (the auxiliary tasks' own metrics; 0 or None: off).
    """
    base: dict[str, Any] = {
        "data": {
            "name": dataset,
            "data_dir": data_dir,
            **({"path": data_path} if data_path is not None else {}),
            "k_core": k_core,
            "loader_args": dict(loader_args or {}),
            "aux_holdout": aux_holdout,
        },
        "encoder": {"name": encoder, "dim": int(dim)},
        "method": {"name": method, "params": dict(method_params or {})},
        "optim": {"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size)},
        "tasks": {"include": tasks},
        "seed": int(seed),
        "device": device,
        "progress": "auto",
    }
    cfg = load_config(base=base)
    if overrides:
        cfg = cfg.updated(overrides)
    return cfg.updated({"progress": "auto"})


#: Per-notebook parameters a batch report always uses unless overridden (the explorer runs its
#: one configuration without the widget, so no widget state lands in the report).
REPORT_NOTEBOOK_PARAMS: dict[str, dict[str, Any]] = {
    "05_ablation_explorer": {"interactive": False},
}
