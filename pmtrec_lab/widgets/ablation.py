"""``AblationExplorer``: switch PMTRec's modules on and off, train a small model, compare.

Controls and how they map onto the run configuration (:func:`config_from_controls`); the
method is always ``pmtrec`` and its parameters start from its defaults (``resolve_params``, the
one resolution; merged with the base configuration's own PMTRec parameters):

| control                 | on                                   | off                     |
| ----------------------- | ------------------------------------ | ----------------------- |
| Personalization         | ``weight_mode="personalized"``       | ``weight_mode="shared"`` |
| TF alignment            | ``align=True``                       | ``align=False``          |
| TF schedule             | ``schedule`` = the default (linear)  | ``schedule="none"``      |
| GMB                     | ``rho`` = the rho slider             | ``rho=0``                |
| GMB per entity (v3)     | ``gmb_mode="entity_reduce"`` (ignored while GMB is off) | ``"side"`` |
| Frequency-free (v3)     | ``norm_mode``: the default, or ``fitted`` if that is raw | ``"raw"``   |
| Focusing everywhere (v3) | ``focus_everywhere=True``           | ``False``                |
| tau slider              | ``tau``                              |                          |
| beta_max slider         | ``beta_max`` (ignored, and disabled, while the schedule is off) |  |
| rho slider              | ``rho`` (shows 0, disabled, while GMB is off) | 0: GMB off      |
| epochs slider           | ``optim.epochs``                     |                          |

rho and GMB agree: switching GMB off sets the slider to 0 (what runs) and disables it; switching
it on brings back the last rho used (or set in code while GMB was off); dragging rho to 0
switches GMB off.

Only parameters that differ from the defaults are written into ``method.params``, so "all on,
default sliders" is exactly the configuration ``method.name=pmtrec`` that notebooks 01-04
train: ``cached_run`` finds that run instead of training it again, and any configuration
explored once is reused when the switches come back to it.

Training happens on the "Train" button (or :meth:`AblationExplorer.run`, synchronous, for
scripts and tests): the trainer's progress bar appears in the progress area, then the learning
curves and test metrics of every run of this session, overlaid and each named by its setting
(the latest drawn thicker), and a table of every configuration run in this session
(:attr:`AblationExplorer.metrics_html`). "Clear earlier runs" (:meth:`AblationExplorer.clear`)
keeps the latest run only. Figures are plain plotly figures re-displayed into an ``Output``
widget: nothing large is kept in widget state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd
from IPython.display import display

from pmtrec_lab.config import RunConfig
from pmtrec_lab.mtl import resolve_params
from pmtrec_lab.mtl.presets import GMB_ON_RHO
from pmtrec_lab.train import Run, cached_run

__all__ = ["CONTROL_DEFAULTS", "AblationExplorer", "config_from_controls", "describe_controls"]

#: The parameters ``pmtrec`` runs with when none are given (written once, in ``PMTRecParams``).
PMTREC_DEFAULTS: Mapping[str, Any] = resolve_params("pmtrec")

#: Control values when nothing is given: every module on, sliders at PMTRec's defaults.
CONTROL_DEFAULTS: dict[str, Any] = {
    "personalization": True,
    "align": bool(PMTREC_DEFAULTS["align"]),
    "schedule": PMTREC_DEFAULTS["schedule"] != "none",
    "gmb": float(PMTREC_DEFAULTS["rho"]) > 0,
    "tau": float(PMTREC_DEFAULTS["tau"]),
    "beta_max": float(PMTREC_DEFAULTS["beta_max"]),
    "rho": float(PMTREC_DEFAULTS["rho"]) if float(PMTREC_DEFAULTS["rho"]) > 0 else GMB_ON_RHO,
    "gmb_per_entity": PMTREC_DEFAULTS["gmb_mode"] == "entity_reduce",
    "freq_free": PMTREC_DEFAULTS["norm_mode"] != "raw",
    "focus_everywhere": bool(PMTREC_DEFAULTS["focus_everywhere"]),
}

_LABELS = {
    "personalization": "Personalization",
    "align": "TF alignment",
    "schedule": "TF schedule",
    "gmb": "GMB",
    "gmb_per_entity": "GMB per entity",
    "freq_free": "Frequency-free norms",
    "focus_everywhere": "Focusing everywhere",
}
_HEADLINE = ("ndcg@20", "recall@20")


def _pmtrec_base_params(base_cfg: RunConfig) -> dict[str, Any]:
    """The parameters the controls start from: the base configuration's own (resolved when it
    loaded) when it runs ``pmtrec``, else PMTRec's defaults."""
    if base_cfg.method.name == "pmtrec":
        return base_cfg.method.resolved_dict()
    return dict(PMTREC_DEFAULTS)


def config_from_controls(values: Mapping[str, Any], base_cfg: RunConfig) -> RunConfig:
    """The ``RunConfig`` the explorer trains for control ``values`` (mapping: module docstring).

    ``values`` keys: ``personalization``, ``align``, ``schedule``, ``gmb``, ``gmb_per_entity``,
    ``freq_free``, ``focus_everywhere`` (bools), ``tau``,
    ``beta_max``, ``rho`` (floats), optionally ``epochs``; missing keys take
    :data:`CONTROL_DEFAULTS`. Unknown keys are an error.
    """
    unknown = set(values) - set(CONTROL_DEFAULTS) - {"epochs"}
    if unknown:
        raise ValueError(
            f"unknown controls {sorted(unknown)}; known: {sorted(CONTROL_DEFAULTS)} and 'epochs'"
        )
    v = {**CONTROL_DEFAULTS, **values}
    params = _pmtrec_base_params(base_cfg)
    params["weight_mode"] = "personalized" if v["personalization"] else "shared"
    params["align"] = bool(v["align"])
    params["tau"] = round(float(v["tau"]), 6)
    if v["schedule"]:
        if params["schedule"] == "none":
            params["schedule"] = "linear"
        params["beta_max"] = round(float(v["beta_max"]), 6)
    else:
        params["schedule"] = "none"
    params["rho"] = round(float(v["rho"]), 6) if v["gmb"] else 0.0
    if v["gmb"]:
        params["gmb_mode"] = "entity_reduce" if v["gmb_per_entity"] else "side"
    if v["freq_free"]:
        if params["norm_mode"] == "raw":
            params["norm_mode"] = "fitted"
    else:
        params["norm_mode"] = "raw"
    params["focus_everywhere"] = bool(v["focus_everywhere"])
    minimal = {k: p for k, p in params.items() if k not in PMTREC_DEFAULTS or p != PMTREC_DEFAULTS[k]}
    changes: dict[str, Any] = {"method": {"name": "pmtrec", "params": minimal}}
    if values.get("epochs") is not None:
        changes["optim"] = {"epochs": int(values["epochs"])}
    cfg = base_cfg.model_copy(deep=True)
    cfg.method.params = {}  # replaced, not merged: stale base parameters must not leak in
    return cfg.updated(changes)


def describe_controls(values: Mapping[str, Any]) -> str:
    """A short label for a control setting, e.g. ``"pers+align+sched(b=2)+gmb(rho=0.25), tau=1"``."""
    v = {**CONTROL_DEFAULTS, **values}
    parts = []
    if v["personalization"]:
        parts.append("pers")
    if v["align"]:
        parts.append("align")
    if v["schedule"]:
        parts.append(f"sched(b={v['beta_max']:g})")
    if v["gmb"]:
        per_entity = "/entity" if v["gmb_per_entity"] else ""
        parts.append(f"gmb{per_entity}(rho={v['rho']:g})")
    if v["freq_free"]:
        parts.append("freq-free")
    if v["focus_everywhere"]:
        parts.append("focus-all")
    text = "+".join(parts) or "none"
    text += f", tau={v['tau']:g}"
    if v.get("epochs") is not None:
        text += f", {int(v['epochs'])} ep"
    return text


class AblationExplorer:
    """Checkboxes for PMTRec's modules, sliders for its parameters, a Train button, and the
    resulting curves and metrics. Display it in a notebook (it is its own ``_ipython_display_``)
    or drive it from code: :meth:`set_values`, :meth:`run`, :attr:`last_run`,
    ``metrics_html.value``.

    Args:
        base_cfg: everything but the PMTRec switches (dataset, encoder, epochs, seed, ...).
        runs_dir: root of the config-keyed run cache (None: ``PMTREC_RUNS_DIR`` or .cache/runs).
        show_figures: display curves and metrics into the figure area after each run (off in
            batch reports, where the notebook displays :meth:`figure` itself as a plain output).
        max_epochs: upper end of the epochs slider.
        **values: initial control values (see :func:`config_from_controls`).
    """

    def __init__(
        self,
        base_cfg: RunConfig,
        runs_dir: str | Path | None = None,
        show_figures: bool = True,
        max_epochs: int = 100,
        **values: Any,
    ):
        self.base_cfg = base_cfg
        self.runs_dir = runs_dir
        self.show_figures = show_figures
        self.last_run: Run | None = None
        self.last_config: RunConfig | None = None
        self.last_values: dict[str, Any] = {}
        self.results: list[dict[str, Any]] = []
        #: this session's runs by run folder, in the order last run: (setting, run)
        self.session: dict[str, tuple[str, Run]] = {}
        init = {**CONTROL_DEFAULTS, "epochs": base_cfg.optim.epochs, **values}
        # rho 0 is GMB off; while GMB is off the slider shows 0 and keeps the rho to come back to
        self._rho_when_on = float(init["rho"]) if float(init["rho"]) > 0 else float(CONTROL_DEFAULTS["rho"])
        init["gmb"] = bool(init["gmb"]) and float(init["rho"]) > 0
        init["rho"] = self._rho_when_on if init["gmb"] else 0.0
        style = {"description_width": "initial"}
        self.checkboxes: dict[str, w.Checkbox] = {
            key: w.Checkbox(value=bool(init[key]), description=label, indent=False)
            for key, label in _LABELS.items()
        }
        self.sliders: dict[str, w.Widget] = {
            "tau": w.FloatLogSlider(
                value=init["tau"], base=10, min=-1, max=1, step=0.05, description="tau", style=style
            ),
            "beta_max": w.FloatSlider(
                value=init["beta_max"], min=0.0, max=5.0, step=0.25, description="beta_max", style=style
            ),
            "rho": w.FloatSlider(
                value=init["rho"], min=0.0, max=1.0, step=0.05, description="rho", style=style
            ),
            "epochs": w.IntSlider(
                value=int(init["epochs"]),
                min=1,
                max=max(max_epochs, int(init["epochs"])),
                description="epochs",
                style=style,
            ),
        }
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.clear_button = w.Button(
            description="Clear earlier runs",
            icon="trash",
            tooltip="keep only the latest run in the figures and the table",
            disabled=True,
        )
        self.status = w.HTML(value="<i>Set the switches and press Train.</i>")
        self.progress_output = w.Output()
        self.figure_output = w.Output()
        self.metrics_html = w.HTML(value="")
        # GMB and rho first, so that the status line describes both after either changed
        self.checkboxes["gmb"].observe(self._on_gmb, names="value")
        self.sliders["rho"].observe(self._on_rho, names="value")
        for cb in self.checkboxes.values():
            cb.observe(self._on_change, names="value")
        for sl in self.sliders.values():
            sl.observe(self._on_change, names="value")
        self.train_button.on_click(self._on_click)
        self.clear_button.on_click(lambda _button: self.clear())
        self._sync_enabled()
        self._on_change()
        self.widget = w.VBox(
            [
                w.HTML("<b>PMTRec ablation explorer</b>"),
                w.HBox([self.checkboxes[k] for k in ("personalization", "align", "schedule", "gmb")]),
                w.HBox([self.checkboxes[k] for k in ("gmb_per_entity", "freq_free", "focus_everywhere")]),
                w.HBox([self.sliders["tau"], self.sliders["beta_max"]]),
                w.HBox([self.sliders["rho"], self.sliders["epochs"]]),
                w.HBox([self.train_button, self.clear_button, self.status]),
                self.progress_output,
                self.figure_output,
                self.metrics_html,
            ]
        )

    # ------------------------------------------------------------------ controls

    def values(self) -> dict[str, Any]:
        """The current control values (``config_from_controls`` input)."""
        out: dict[str, Any] = {k: cb.value for k, cb in self.checkboxes.items()}
        out.update({k: sl.value for k, sl in self.sliders.items()})
        return out

    def set_values(self, **values: Any) -> None:
        """Set controls by key (``personalization=False, rho=0.5, epochs=5``); unknown keys raise."""
        for key, value in values.items():
            if key in self.checkboxes:
                self.checkboxes[key].value = bool(value)
            elif key in self.sliders:
                self.sliders[key].value = value
            else:
                raise ValueError(
                    f"unknown control {key!r}; known: {sorted([*self.checkboxes, *self.sliders])}"
                )

    def config(self) -> RunConfig:
        """The configuration the current controls select."""
        return config_from_controls(self.values(), self.base_cfg)

    def _on_gmb(self, change: Mapping[str, Any]) -> None:
        """GMB switched: on brings rho back to its last value, off shows (and runs) rho 0."""
        rho = self.sliders["rho"]
        if change["new"]:
            rho.value = self._rho_when_on
        else:
            if rho.value > 0:
                self._rho_when_on = float(rho.value)
            rho.value = 0.0

    def _on_rho(self, change: Mapping[str, Any]) -> None:
        """rho moved: 0 switches GMB off; a value set while GMB is off is kept for when it is on."""
        value = float(change["new"])
        gmb = self.checkboxes["gmb"]
        if value > 0:
            self._rho_when_on = value
            if not gmb.value:
                self.sliders["rho"].value = 0.0  # GMB is off: rho stays 0 until it is switched on
        elif gmb.value:
            gmb.value = False

    def _sync_enabled(self) -> None:
        self.sliders["beta_max"].disabled = not self.checkboxes["schedule"].value
        self.sliders["rho"].disabled = not self.checkboxes["gmb"].value
        self.checkboxes["gmb_per_entity"].disabled = not self.checkboxes["gmb"].value

    def _on_change(self, _change: Any = None) -> None:
        self._sync_enabled()
        params = self.config().method.params
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "PMTRec defaults"
        self.status.value = f"Next run: <code>pmtrec</code> with {html.escape(shown)}"

    # ------------------------------------------------------------------ training

    def _on_click(self, _button: Any) -> None:
        # Exceptions in widget callbacks vanish (or land in the log); show them in the panel.
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - reported to the user in the panel
            self.status.value = f"<span style='color:#b00020'>Training failed: {html.escape(str(exc))}</span>"

    def run(self) -> Run:
        """Train (or reuse from the run cache) the configuration the controls select; synchronous.

        Updates :attr:`last_run`, the session table in :attr:`metrics_html` and, with
        ``show_figures``, the figure area. Returns the run.
        """
        cfg = self.config()
        values = self.values()
        self.train_button.disabled = True
        self.status.value = "Training ..."
        self.progress_output.clear_output()
        try:
            with self.progress_output:
                run = cached_run(cfg, self.runs_dir)
        finally:
            self.train_button.disabled = False
        self.progress_output.clear_output()
        self.last_run, self.last_config, self.last_values = run, cfg, values
        self.session.pop(str(run.path), None)  # a setting run again moves to the end (the latest)
        self.session[str(run.path)] = (describe_controls(values), run)
        self.clear_button.disabled = len(self.session) <= 1
        test, valid = run.metrics.get("test", {}), run.metrics.get("valid", {})
        self.results.append(
            {
                "setting": describe_controls(values),
                "best_epoch": run.metrics.get("best_epoch"),
                "valid ndcg@20": valid.get("ndcg@20"),
                **{f"test {m}": test.get(m) for m in _HEADLINE},
                "seconds": run.metrics.get("seconds"),
                "run": run.path.name,
            }
        )
        self.metrics_html.value = self.results_html()
        ndcg = test.get("ndcg@20")
        self.status.value = (
            f"Done: test ndcg@20 = {ndcg:.4f} (best epoch {run.metrics.get('best_epoch')})"
            if ndcg is not None
            else "Done."
        )
        self._show_figures()
        return run

    def clear(self) -> None:
        """Forget every run of this session but the latest: its curves and its table row stay."""
        if self.session:
            key = next(reversed(self.session))
            self.session = {key: self.session[key]}
        self.results = self.results[-1:]
        self.metrics_html.value = self.results_html()
        self.clear_button.disabled = True
        self._show_figures()

    def _show_figures(self) -> None:
        if self.show_figures:
            self.figure_output.clear_output(wait=True)
            with self.figure_output:
                for fig in self.figures():
                    display(fig)

    # ------------------------------------------------------------------ results

    def results_table(self) -> pd.DataFrame:
        """One row per run of this session (latest last), duplicates kept: the order clicked."""
        return pd.DataFrame(self.results)

    def results_html(self) -> str:
        """The session table as HTML (latest run highlighted)."""
        table = self.results_table()
        if table.empty:
            return ""
        fmt = {c: "{:.4f}".format for c in table.columns if c.startswith(("valid", "test"))}
        fmt["seconds"] = "{:.1f}".format
        styled = table.style.format(fmt, na_rep="-").hide(axis="index")
        styled = styled.apply(
            lambda row: ["font-weight: bold" if row.name == len(table) - 1 else "" for _ in row], axis=1
        )
        return "<b>Runs in this session</b>" + styled.to_html()

    def figures(self) -> list:
        """Plain plotly figures of this session's runs (:attr:`session`, until :meth:`clear`):
        learning curves and test metrics, every run named by its setting, the latest thickest."""
        from pmtrec_lab.viz import compare_learning_curves, compare_test_metrics

        if not self.session:
            return []
        labelled: dict[str, Run] = {}
        for setting, run in self.session.values():
            label = setting if setting not in labelled else f"{setting} ({run.path.name})"
            labelled[label] = run
        latest = next(reversed(labelled))
        histories = {label: run.history for label, run in labelled.items()}
        best = {label: run.metrics.get("best_epoch") for label, run in labelled.items()}
        return [
            compare_learning_curves(histories, best_epochs=best, latest=latest),
            compare_test_metrics({label: run.metrics for label, run in labelled.items()}),
        ]

    def _ipython_display_(self) -> None:
        display(self.widget)
