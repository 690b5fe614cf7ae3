"""``pmtrec-lab report`` checks its parameters and its output folder before any notebook runs:
one parametrized test per failure family, at the command line where a user meets it.

Families (issue "Hardening", item 9 and part of item 10):

(a) parameter names (and values) that would be pasted into papermill's injected cell as code;
(b) plain names the notebooks do not declare (``--set epoch=2`` used to train 15 epochs);
(c) values whose type does not match the declared default (``epochs=2.7`` used to become 2);
(d) report folders that cannot be written (they used to fail late, or with a bare OS message).

Every rejection must be one ``error: ...`` line, exit status 2, and happen before anything runs
or is written. Family (a) runs with the real papermill on a tiny stand-in notebook (so before
the fix the payloads really ran); the other families use the real report notebooks, with
``papermill.execute_notebook`` replaced by a recorder (``no_execution``) so that a check that
lets a bad parameter through shows up as a recorded call instead of a training run.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

from pmtrec_lab.cli import main
from pmtrec_lab.reports import defaults

pytestmark = pytest.mark.timeout(120)

#: parameters of the stand-in notebook 01 of family (a), in the style of the real ones
TINY_PARAMETERS = "dataset = 'ml-100k'  # dataset name\nepochs = 15  # maximum epochs\n"


def _report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``pmtrec-lab report ARGV``; return (exit status, stdout, stderr)."""
    rc = main(["report", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_error_line(err: str) -> str:
    """The single ``error: ...`` line the CLI must print for a rejected report."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


class _Recorder:
    """Stands in for ``papermill.execute_notebook``: records each call, runs nothing."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    def __call__(self, input_path: str, output_path: str, parameters: dict[str, Any], **kw: Any) -> None:
        self.calls.append({"input": Path(input_path).stem, "parameters": dict(parameters)})
        if self.fail:
            raise RuntimeError("test guard: this report should have been rejected before running")


@pytest.fixture
def no_execution(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    """papermill is replaced by a recorder that fails each notebook (the run goes on quickly)."""
    import papermill

    recorder = _Recorder(fail=True)
    monkeypatch.setattr(papermill, "execute_notebook", recorder)
    return recorder


@pytest.fixture
def recording_papermill(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    """papermill is replaced by a recorder that 'succeeds' without running or writing anything."""
    import papermill

    recorder = _Recorder(fail=False)
    monkeypatch.setattr(papermill, "execute_notebook", recorder)
    return recorder


@pytest.fixture
def tiny_notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook folder whose 01 is a tiny notebook (kernel start only), used by the CLI."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(
        {
            "kernelspec": {"name": "pmtrec-lab", "display_name": "pmtrec-lab", "language": "python"},
            "language_info": {"name": "python"},
        }
    )
    nb.cells = [
        nbformat.v4.new_code_cell(TINY_PARAMETERS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(dataset, epochs)"),
    ]
    nbformat.write(nb, folder / "01_train_and_evaluate.ipynb")
    monkeypatch.setattr(defaults, "NOTEBOOK_DIR", folder)
    return folder


# ------------------------------------------------------------------ (a) code in names and values

_BINARY_PAYLOAD = base64.b64encode(b'"+open("pwned_binary","w").name+"').decode()

INJECTIONS = {
    # name -> (argv after the notebook selection, file the payload creates in the kernel's cwd,
    #          what the error line must say)
    "open-call": (
        ["--set", "open('pwned_open','w')#=1"],
        "pwned_open",
        ["open('pwned_open','w')#", "01_train_and_evaluate"],
    ),
    "newline": (
        ["--set", "epochs\nopen('pwned_newline','w')#=1"],
        "pwned_newline",
        ['"epochs\\nopen(', "01_train_and_evaluate"],
    ),
    "import-in-params-file": (
        ["--params", "PARAMS"],
        "pwned_import",
        ["__import__('os').system('touch pwned_import')#", "01_train_and_evaluate"],
    ),
    "import-via-set": (
        # the "." makes it NOTEBOOK.KEY, and "__import__('os')" names no notebook
        ["--set", "__import__('os').system('touch pwned_set')#=1"],
        "pwned_set",
        ["unknown notebook"],
    ),
    "binary-value": (
        ["--set", f"dataset=!!binary {_BINARY_PAYLOAD}"],
        "pwned_binary",
        ["'dataset'", "bytes"],
    ),
}


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_code_in_parameter_names_or_values_never_runs(case, tiny_notebooks, tmp_path, capsys):
    argv, created, expected = INJECTIONS[case]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"common": {"__import__('os').system('touch pwned_import')#": 1}}))
    argv = [str(params) if a == "PARAMS" else a for a in argv]
    out = tmp_path / "out"
    rc, _, err = _report(capsys, "--out", str(out), "--notebooks", "01", "--timeout", "60", *argv)
    line = _one_error_line(err)
    assert rc == 2
    for fragment in expected:
        assert fragment in line, line
    assert not (tiny_notebooks / created).exists()  # the payload did not run
    assert not out.exists()  # nothing was executed or written


# ------------------------------------------------------------------ (b) names no notebook declares

UNKNOWN_NAMES = {
    "epoch": (["--notebooks", "01", "--set", "epoch=2"], "'epoch'", "01_train_and_evaluate", "'epochs'"),
    "Epochs": (["--notebooks", "01,02", "--set", "Epochs=2"], "'Epochs'", "02_task_weights", "'epochs'"),
    "lrr": (["--notebooks", "01", "--set", "lrr=0.01"], "'lrr'", "01_train_and_evaluate", "'lr'"),
    "per-notebook": (
        ["--notebooks", "03", "--set", "03.compare_align=true"],
        "'compare_align'",
        "03_gradient_conflicts",
        "'compare_align_off'",
    ),
    "other-notebooks-parameter": (
        ["--notebooks", "01", "--set", "01.results_dir=somewhere"],
        "'results_dir'",
        "01_train_and_evaluate",
        "runs_dir",
    ),
    "params-file": (
        ["--notebooks", "01", "--params", "PARAMS"],
        "'epoch'",
        "01_train_and_evaluate",
        "'epochs'",
    ),
}


@pytest.mark.parametrize("case", list(UNKNOWN_NAMES))
def test_unknown_parameter_names_are_rejected_with_the_known_ones(case, no_execution, tmp_path, capsys):
    argv, name, notebook, suggestion = UNKNOWN_NAMES[case]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"01": {"epoch": 3}}))
    argv = [str(params) if a == "PARAMS" else a for a in argv]
    out = tmp_path / "out"
    rc, _, err = _report(capsys, "--out", str(out), *argv)
    line = _one_error_line(err)
    assert rc == 2
    assert name in line and notebook in line and suggestion in line, line
    assert "batch_size" in line and "seed" in line  # the known names are listed
    assert no_execution.calls == [] and not out.exists()


# ------------------------------------------------------------------ (c) values of the wrong type

WRONG_TYPES = {
    "int-given-float": (
        ["--notebooks", "01", "--set", "epochs=2.7"],
        "'epochs'",
        "01_train_and_evaluate",
        "2.7",
    ),
    "int-given-bool": (
        ["--notebooks", "01", "--set", "epochs=true"],
        "'epochs'",
        "01_train_and_evaluate",
        "True",
    ),
    "float-given-str": (["--notebooks", "01", "--set", "lr=fast"], "'lr'", "01_train_and_evaluate", "'fast'"),
    "bool-given-str": (
        ["--notebooks", "05", "--set", "05.interactive=maybe"],
        "'interactive'",
        "05_ablation_explorer",
        "'maybe'",
    ),
    "bool-given-int": (
        ["--notebooks", "05", "--set", "05.interactive=2"],
        "'interactive'",
        "05_ablation_explorer",
        "2",
    ),
    "str-given-list": (
        ["--notebooks", "01", "--set", "dataset=[ml-100k]"],
        "'dataset'",
        "01_train_and_evaluate",
        "list",
    ),
    "dict-given-list": (
        ["--notebooks", "01", "--set", "method_params=[1, 2]"],
        "'method_params'",
        "01_train",
        "list",
    ),
    "int-given-null": (["--notebooks", "01", "--set", "dim=null"], "'dim'", "01_train_and_evaluate", "None"),
    "none-default-given-date": (
        ["--notebooks", "01", "--set", "tasks=2024-01-01"],
        "'tasks'",
        "01_train",
        "date",
    ),
    "non-string-key": (
        ["--notebooks", "01", "--set", "loader_args={1: 2}"],
        "'loader_args'",
        "01_train",
        "key",
    ),
    "params-file": (["--notebooks", "01", "--params", "PARAMS"], "'epochs'", "01_train_and_evaluate", "2.5"),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_values_must_match_the_declared_defaults(case, no_execution, tmp_path, capsys):
    argv, name, notebook, got = WRONG_TYPES[case]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"common": {"epochs": 2.5}}))
    argv = [str(params) if a == "PARAMS" else a for a in argv]
    out = tmp_path / "out"
    rc, _, err = _report(capsys, "--out", str(out), *argv)
    line = _one_error_line(err)
    assert rc == 2
    assert name in line and notebook in line and got in line, line
    assert no_execution.calls == [] and not out.exists()


# ------------------------------------------------------------------ (d) report folders that cannot be written


def _occupied_by_file(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "report.txt"
    target.write_text("keep me\n")
    return target, target


def _under_a_file(tmp_path: Path) -> tuple[Path, Path]:
    parent = tmp_path / "notes.txt"
    parent.write_text("keep me\n")
    return parent / "report", parent


def _index_is_a_folder(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    (out / "index.json").mkdir(parents=True)
    return out, out


def _name_too_long(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "new" / ("r" * 300), tmp_path / "new"


def _read_only(tmp_path: Path) -> tuple[Path, Path]:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "report", locked


UNWRITABLE = {
    "out-is-a-file": _occupied_by_file,
    "out-under-a-file": _under_a_file,
    "index-json-is-a-folder": _index_is_a_folder,
    "name-too-long": _name_too_long,
    "read-only-folder": _read_only,
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_unwritable_report_folder_is_one_clear_line(case, no_execution, tmp_path, capsys):
    if case == "read-only-folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the other instances fail as root too")
    out, shown = UNWRITABLE[case](tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        rc, _, err = _report(capsys, "--out", str(out), "--notebooks", "01", "--set", "epochs=1")
    finally:
        if case == "read-only-folder":
            (tmp_path / "locked").chmod(0o755)
    line = _one_error_line(err)
    assert rc == 2
    assert str(shown) in line and "--out" in line, line
    assert no_execution.calls == []
    # nothing half-written: the tree is as it was (no folders created, no files, no probes)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    for f in tmp_path.rglob("*.txt"):
        assert f.read_text() == "keep me\n"


# ------------------------------------------------------------------ valid parameters still go through

VALID = [
    "--notebooks", "01,03,04,05",
    "--set", "epochs=2",
    "--set", "lr=1",  # an int for a float parameter
    "--set", "k_core=null",  # None default: any plain value
    "--set", "tasks=[user_label:age]",
    "--set", "compare_align_off=true",  # common, declared by 03 only: still goes to every notebook
    "--set", "04.gmb_method=null",  # its comment documents None
    "--set", "03.hist_epoch=1",
]  # fmt: skip


def test_valid_parameters_pass_the_check_without_running(no_execution, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = _report(capsys, "--check", "--out", str(out), *VALID)
    assert rc == 0, err
    assert no_execution.calls == [] and not out.exists()
    for name in (
        "01_train_and_evaluate",
        "03_gradient_conflicts",
        "04_magnitude_balance",
        "05_ablation_explorer",
    ):
        assert name in stdout
    assert "'epochs': 2" in stdout and str(out) in stdout


def test_valid_parameters_reach_papermill_as_given(recording_papermill, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = _report(capsys, "--out", str(out), *VALID)
    assert rc == 0, err
    got = {c["input"]: c["parameters"] for c in recording_papermill.calls}
    assert list(got) == [
        "01_train_and_evaluate",
        "03_gradient_conflicts",
        "04_magnitude_balance",
        "05_ablation_explorer",
    ]
    common = {"epochs": 2, "lr": 1, "k_core": None, "tasks": ["user_label:age"], "compare_align_off": True}
    assert got["01_train_and_evaluate"] == common
    assert got["03_gradient_conflicts"] == {**common, "hist_epoch": 1}
    assert got["04_magnitude_balance"] == {**common, "gmb_method": None}
    assert got["05_ablation_explorer"] == {**common, "interactive": False}
    assert type(got["01_train_and_evaluate"]["lr"]) is int  # not converted
    assert (out / "index.json").is_file()


# ------------------------------------------------------------------ the library entry point too

LIBRARY_NAMES = ["open('x','w')#", "a b", "class", "epochs\nimport os"]


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_run_report_refuses_names_that_are_not_identifiers(name, tiny_notebooks, tmp_path):
    from pmtrec_lab.errors import ConfigError
    from pmtrec_lab.reports import run_report

    nb = tiny_notebooks / "01_train_and_evaluate.ipynb"
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="not a Python identifier"):
        run_report([nb], {"01_train_and_evaluate": {name: 1}}, out)
    with pytest.raises(ConfigError, match="not a Python identifier"):
        run_report([nb], None, out, common_params={name: 1})
    assert not out.exists()
