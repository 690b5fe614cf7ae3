"""``pmtrec-lab report``: parameter layering (defaults < --params file < --set), notebook
selection, and the exit status when a notebook fails."""

from __future__ import annotations

import json

import pytest
import yaml

from pmtrec_lab.cli import main
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.reports.cli import build_report_params
from pmtrec_lab.reports.defaults import NOTEBOOKS, resolve_notebook


def test_params_file_and_set_overrides_layer(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        yaml.safe_dump({"common": {"epochs": 20, "dataset": "synthetic"}, "03": {"compare_align_off": True}})
    )
    common, per = build_report_params(str(f), ["epochs=5", "05.controls={gmb: false}"], list(NOTEBOOKS))
    assert common == {"epochs": 5, "dataset": "synthetic"}
    assert per["03_gradient_conflicts"] == {"compare_align_off": True}
    assert per["05_ablation_explorer"] == {"interactive": False, "controls": {"gmb": False}}
    # parameters of notebooks that are not run are dropped (run_report rejects them)
    _, only = build_report_params(str(f), [], ["01_train_and_evaluate"])
    assert only == {}


def test_bad_report_parameters_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown notebook"):
        build_report_params(None, ["99.x=1"], list(NOTEBOOKS))
    with pytest.raises(ConfigError, match="not found"):
        build_report_params(str(tmp_path / "missing.yaml"), [], list(NOTEBOOKS))
    assert resolve_notebook("04") == "04_magnitude_balance"
    assert resolve_notebook("06_method_comparison.ipynb") == "06_method_comparison"


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_report_command_exits_nonzero_when_a_notebook_fails(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "report",
            "--out",
            str(out),
            "--notebooks",
            "02,06",
            "--set",
            "dataset=synthetic",
            "--set",
            "loader_args={num_users: 120, num_items: 80, interactions_per_user: 12}",
            "--set",
            "k_core=2",
            "--set",
            "dim=8",
            "--set",
            "epochs=2",
            "--set",
            f"runs_dir={tmp_path / 'runs'}",
            "--set",
            "02.entity=999999",  # no such user: the notebook raises
            "--set",
            f"06.results_dir={tmp_path / 'none'}",
        ]
    )
    assert code == 1
    index = json.loads((out / "index.json").read_text())
    status = {e["name"]: e["status"] for e in index["entries"]}
    assert status == {"02_task_weights": "failed", "06_method_comparison": "ok"}
    failed = next(e for e in index["entries"] if e["name"] == "02_task_weights")
    assert "no recorded weights" in failed["error"]
    assert (out / "index.html").is_file() and (out / "02_task_weights.html").is_file()
    assert "1 notebook(s) failed" in capsys.readouterr().err


def test_relative_paths_are_resolved_where_they_were_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common, _ = build_report_params(
        None, ["data_dir=../shared/datasets", "epochs=2"], ["01_train_and_evaluate"]
    )
    assert common["data_dir"] == str((tmp_path / ".." / "shared" / "datasets").resolve())
    assert common["epochs"] == 2
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "params.yaml").write_text(
        yaml.safe_dump({"common": {"runs_dir": "runs"}, "01": {"data_dir": "data"}})
    )
    common, per = build_report_params(str(sub / "params.yaml"), [], ["01_train_and_evaluate"])
    assert common["runs_dir"] == str(sub / "runs")
    assert per["01_train_and_evaluate"]["data_dir"] == str(sub / "data")
