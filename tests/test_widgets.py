"""AblationExplorer: the control -> configuration mapping, training on demand through the run
cache, and that switching a module changes the run and its metrics (widgets work outside a
kernel: setting ``.value`` fires observers synchronously)."""

from __future__ import annotations

import pytest

from pmtrec_lab.config import RunConfig
from pmtrec_lab.mtl import resolve_params
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.train import config_key
from pmtrec_lab.widgets import CONTROL_DEFAULTS, AblationExplorer, config_from_controls, describe_controls

PMTREC_DEFAULTS = resolve_params("pmtrec")
SYN = {"num_users": 120, "num_items": 80, "interactions_per_user": 12}


@pytest.fixture(scope="module")
def base_cfg():
    return notebook_config(
        dataset="synthetic", loader_args=SYN, k_core=2, dim=16, epochs=3, lr=0.01, batch_size=256
    )


def test_all_on_with_default_sliders_is_exactly_method_pmtrec(base_cfg):
    cfg = config_from_controls({}, base_cfg)
    assert cfg.method.name == "pmtrec" and cfg.method.params == {}
    # the same run directory as the notebooks' pmtrec run: the cache is shared
    assert config_key(cfg) == config_key(base_cfg.updated({"method": {"name": "pmtrec", "params": {}}}))


@pytest.mark.parametrize(
    ("controls", "expected"),
    [
        ({"personalization": False}, {"weight_mode": "shared"}),
        ({"align": False}, {"align": False}),
        ({"schedule": False}, {"schedule": "none"}),
        ({"gmb": False}, {"rho": 0.0}),
        ({"tau": 0.5}, {"tau": 0.5}),
        ({"gmb": True}, {"rho": 1.0, "gmb_mode": "entity_reduce"}),  # v3's default: on, per entity, rho 1
        ({"gmb": True, "gmb_per_entity": False}, {"rho": 1.0, "gmb_mode": "side"}),  # v2's per-side rule
        ({"gmb": True, "rho": 0.75}, {"rho": 0.75}),
        ({"beta_max": 4.0}, {"beta_max": 4.0}),
        # sliders of a module that is off are ignored (one configuration, one cached run)
        ({"schedule": False, "beta_max": 4.0}, {"schedule": "none"}),
        ({"gmb": False, "rho": 0.75}, {"rho": 0.0}),
        # the v3 switches
        ({"gmb": True, "gmb_per_entity": True, "rho": 0.5}, {"rho": 0.5, "gmb_mode": "entity_reduce"}),
        ({"gmb": False, "gmb_per_entity": True}, {"rho": 0.0}),  # ignored while GMB is off
        ({"freq_free": True}, {"norm_mode": "fitted"}),
        ({"freq_free": False}, {"norm_mode": "raw"}),
        ({"focus_everywhere": True}, {"focus_everywhere": True}),
        ({"focus_everywhere": True, "freq_free": True}, {"focus_everywhere": True, "norm_mode": "fitted"}),
        (
            {"personalization": False, "align": False, "schedule": False, "gmb": False},
            {"weight_mode": "shared", "align": False, "schedule": "none", "rho": 0.0},
        ),
    ],
)
def test_control_mapping(base_cfg, controls, expected):
    params = config_from_controls(controls, base_cfg).method.params
    # only what differs from PMTRec's defaults is written (defaults may change: compare to them)
    want = {k: v for k, v in expected.items() if PMTREC_DEFAULTS.get(k) != v}
    assert params == want


def test_epochs_and_unknown_controls(base_cfg):
    assert config_from_controls({"epochs": 7}, base_cfg).optim.epochs == 7
    assert config_from_controls({}, base_cfg).optim.epochs == base_cfg.optim.epochs
    with pytest.raises(ValueError, match="unknown controls"):
        config_from_controls({"gmbb": True}, base_cfg)


def test_base_method_params_do_not_leak_unless_pmtrec(base_cfg):
    ew_base = base_cfg.updated({"method": {"name": "cagrad", "params": {"c": 0.5}}})
    assert config_from_controls({}, ew_base).method.params == {}
    tuned = base_cfg.updated({"method": {"name": "pmtrec", "params": {"schedule": "cosine"}}})
    assert config_from_controls({}, tuned).method.params == {"schedule": "cosine"}
    assert config_from_controls({"schedule": False}, tuned).method.params == {"schedule": "none"}


def test_explorer_set_values_updates_controls_and_config(base_cfg, tmp_path):
    ex = AblationExplorer(base_cfg, runs_dir=tmp_path)
    assert ex.values()["epochs"] == 3
    assert {k: ex.values()[k] for k in CONTROL_DEFAULTS} == pytest.approx(CONTROL_DEFAULTS)
    ex.set_values(gmb=False, tau=0.5)
    assert ex.sliders["rho"].disabled and not ex.sliders["beta_max"].disabled
    assert (
        ex.config().method.params == config_from_controls({"gmb": False, "tau": 0.5}, base_cfg).method.params
    )
    assert "tau=0.5" in ex.status.value and "rho=0.0" in ex.status.value  # described before training
    ex.set_values(gmb=True)  # back to the default GMB (v3: on, rho 1): no longer a change to describe
    assert not ex.sliders["rho"].disabled and "rho" not in ex.status.value
    ex.set_values(rho=0.5)
    assert "rho=0.5" in ex.status.value
    ex.checkboxes["schedule"].value = False  # a click in the browser does the same
    assert ex.sliders["beta_max"].disabled
    with pytest.raises(ValueError, match="unknown control"):
        ex.set_values(nope=1)


def test_explorer_trains_reuses_and_metrics_change_with_a_switch(base_cfg, tmp_path):
    ex = AblationExplorer(base_cfg, runs_dir=tmp_path, show_figures=False)
    assert ex.last_run is None and ex.metrics_html.value == ""
    first = ex.run()
    assert ex.last_run is first and first.finished
    assert first.config.method.params == PMTREC_DEFAULTS  # recorded resolved (config.yaml, issue 26)
    html_one = ex.metrics_html.value
    assert f"{first.metrics['test']['ndcg@20']:.4f}" in html_one

    ex.set_values(personalization=False, gmb=False)
    second = ex.run()
    assert second.path != first.path
    chosen = config_from_controls({"personalization": False, "gmb": False}, base_cfg).method.params
    assert second.config.method.params == resolve_params("pmtrec", chosen)
    assert second.metrics["test"] != first.metrics["test"]  # the switch changed training
    assert ex.metrics_html.value != html_one
    assert f"{second.metrics['test']['ndcg@20']:.4f}" in ex.metrics_html.value
    assert len(ex.results_table()) == 2
    assert ex.results_table()["setting"].tolist() == [
        describe_controls(CONTROL_DEFAULTS | {"epochs": 3}),
        describe_controls(CONTROL_DEFAULTS | {"personalization": False, "gmb": False, "epochs": 3}),
    ]

    # back to the first setting: the cached run is returned, not retrained
    ex.set_values(personalization=True, gmb=True)
    third = ex.run()
    assert third.path == first.path and third.metrics == first.metrics
    assert [f.layout.title.text for f in ex.figures()][0] == "Learning curves of 2 runs"  # this session's


def test_button_click_reports_errors_in_the_panel(base_cfg, tmp_path):
    # a configuration that loads but fails in training: the dataset's files are not there (the
    # synthetic generator's loader_args are dropped: ciao's loader does not take them)
    raw = base_cfg.to_dict()
    raw["data"] = {**raw["data"], "name": "ciao", "data_dir": str(tmp_path / "no-data"), "loader_args": {}}
    bad = RunConfig.model_validate(raw)
    ex = AblationExplorer(bad, runs_dir=tmp_path, show_figures=False)
    ex.train_button.click()  # the button's handler catches and shows the error
    assert "Training failed" in ex.status.value
    assert not ex.train_button.disabled


# --- issue 26, item 5: rho follows GMB; earlier runs' curves stay, labelled, until cleared ------


def _gmb_off_by_set_values(ex):
    ex.set_values(gmb=False)


def _gmb_off_by_click(ex):
    ex.checkboxes["gmb"].value = False  # what a click in the browser does


def _gmb_off_by_rho_zero(ex):
    ex.set_values(rho=0.0)  # rho 0 is GMB off (config_from_controls): the checkbox follows


def _gmb_off_and_rho_set_while_off(ex):
    ex.set_values(gmb=False, rho=0.75)  # a slider of a module that is off: kept for when it is on


@pytest.mark.parametrize(
    ("switch_off", "rho_back"),
    [
        (_gmb_off_by_set_values, 0.5),
        (_gmb_off_by_click, 0.5),
        (_gmb_off_by_rho_zero, 0.5),
        (_gmb_off_and_rho_set_while_off, 0.75),
    ],
)
def test_rho_slider_shows_zero_and_is_disabled_while_gmb_is_off(base_cfg, tmp_path, switch_off, rho_back):
    ex = AblationExplorer(base_cfg, runs_dir=tmp_path, show_figures=False)
    ex.set_values(rho=0.5)
    switch_off(ex)
    rho = ex.sliders["rho"]
    assert ex.checkboxes["gmb"].value is False
    assert rho.disabled and rho.value == 0.0  # shows what runs: no GMB
    assert ex.values()["rho"] == 0.0 and ex.config().method.params["rho"] == 0.0
    assert ex.checkboxes["gmb_per_entity"].disabled
    ex.set_values(gmb=True)  # back on: the last rho used (or set) while on, not 0 or a default
    assert not rho.disabled and rho.value == pytest.approx(rho_back)
    assert ex.config().method.params.get("rho", PMTREC_DEFAULTS["rho"]) == pytest.approx(rho_back)


@pytest.mark.parametrize("controls", [{"gmb": False}, {"gmb": False, "rho": 0.25}, {"rho": 0.0}])
def test_explorer_built_with_gmb_off_shows_rho_zero(base_cfg, tmp_path, controls):
    ex = AblationExplorer(base_cfg, runs_dir=tmp_path, show_figures=False, **controls)
    assert ex.checkboxes["gmb"].value is False
    assert ex.sliders["rho"].disabled and ex.sliders["rho"].value == 0.0
    assert ex.config().method.params == config_from_controls({"gmb": False}, base_cfg).method.params
    ex.set_values(gmb=True)
    want = controls.get("rho") or CONTROL_DEFAULTS["rho"]
    assert ex.sliders["rho"].value == pytest.approx(want)


@pytest.fixture(scope="module")
def session_runs(tmp_path_factory):
    """The run cache every overlay test shares (the all-on run is trained once)."""
    return tmp_path_factory.mktemp("session-runs")


def _curve_names(fig) -> set[str]:
    return {t.name for t in fig.data if t.name}


@pytest.mark.parametrize(
    "switch", [{"personalization": False}, {"align": False}, {"gmb": False}], ids=["pers", "align", "gmb"]
)
def test_explorer_overlays_earlier_runs_labelled_until_cleared(base_cfg, session_runs, switch):
    ex = AblationExplorer(base_cfg, runs_dir=session_runs, show_figures=False)
    first = ex.run()
    first_label = describe_controls(ex.last_values)
    ex.set_values(**switch)
    second = ex.run()
    second_label = describe_controls(ex.last_values)
    assert second.path != first.path and first_label != second_label
    curves, metrics = ex.figures()
    assert curves.layout.title.text.startswith("Learning curves")
    for fig in (curves, metrics):  # both runs, each under its setting
        assert {first_label, second_label} <= _curve_names(fig), _curve_names(fig)
    valid = {t.name: t for t in curves.data if t.name in (first_label, second_label) and t.xaxis == "x2"}
    assert list(valid[first_label].y) == pytest.approx(first.history["valid/ndcg@20"].dropna().tolist())
    assert list(valid[second_label].y) == pytest.approx(second.history["valid/ndcg@20"].dropna().tolist())
    bars = {t.name: t for t in metrics.data}
    assert bars[second_label].y[0] == pytest.approx(second.metrics["test"]["ndcg@20"])

    ex.set_values(**{k: CONTROL_DEFAULTS[k] for k in switch})
    ex.run()  # the first setting again: its curve is drawn once, as the latest
    assert sum(t.name == first_label for t in ex.figures()[1].data) == 1

    assert not ex.clear_button.disabled
    ex.clear_button.click()  # keeps the latest run only, in the figures and in the table
    curves, metrics = ex.figures()
    assert first_label in _curve_names(curves) and second_label not in _curve_names(curves)
    assert second_label not in _curve_names(metrics)
    assert len(ex.results_table()) == 1 and ex.clear_button.disabled
