"""Configurations that cannot train something else than they say: one parametrized test per
failure family of issue 26's "Poor" list, item 1, at the command line where a user meets it.

Each family was seen failing before its fix: ``optim.epochs=true`` trained 1 epoch,
``optim.lr=inf`` passed the check and died at step 1, an unknown ``data.loader_args`` key was
found only after the run folder existed, and a YAML syntax error in ``--config`` or ``--params``
printed PyYAML's 6-7 lines against ``"<unicode string>"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pmtrec_lab.cli import main
from pmtrec_lab.config import load_config
from pmtrec_lab.errors import ConfigError

#: the fast run of test_hardening_runs (about a second on a laptop's CPU)
FAST = [
    "data.name=synthetic",
    "data.loader_args={num_users: 120, num_items: 80}",
    "optim.epochs=2",
    "encoder.dim=8",
    "progress=none",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))


def _train(capsys, out: Path, extra: list[str] = (), *flags: str) -> tuple[int, str]:
    sets = [a for s in [*FAST, *extra] for a in ("--set", s)]
    rc = main(["train", *sets, "--out", str(out), *flags])
    return rc, capsys.readouterr().err


def _one_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


# --- booleans are not numbers; numeric strings still are --------------------------------------


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("optim.epochs=true", "optim.epochs"),  # trained 1 epoch
        ("seed=false", "seed"),  # trained seed 0
        ("encoder.dim=true", "encoder.dim"),  # an embedding of width 1
        ("optim.lr=true", "optim.lr"),  # a learning rate of 1.0
        ("eval.ks=[10, true]", "eval.ks"),  # NDCG@1 among the cutoffs
        ("data.rating_threshold=true", "data.rating_threshold"),
    ],
)
def test_boolean_where_a_number_is_expected_is_refused(capsys, tmp_path, setting, named):
    rc, err = _train(capsys, tmp_path / "run", [setting])
    assert rc == 2 and named in err and "boolean" in err, err
    _one_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("setting", "key", "value"),
    [
        ("optim.lr=1e-3", ("optim", "lr"), 1e-3),  # YAML 1.1 reads 1e-3 as a string
        ("optim.weight_decay=5e-4", ("optim", "weight_decay"), 5e-4),
        ("optim.epochs='3'", ("optim", "epochs"), 3),
        ("data.rating_threshold='3.5'", ("data", "rating_threshold"), 3.5),
    ],
)
def test_numeric_strings_are_still_numbers(setting, key, value):
    cfg = load_config(overrides=[*FAST, setting])
    got = getattr(getattr(cfg, key[0]), key[1])
    assert got == value and type(got) is type(value)


# --- learning rates that cannot train --------------------------------------------------------


@pytest.mark.parametrize(
    "lr", ["inf", ".inf", "-.inf", ".nan", "0", "-0.001", "1e309"], ids=lambda v: f"lr={v}"
)
def test_non_finite_or_non_positive_learning_rate_is_refused_at_load(capsys, tmp_path, lr):
    rc, err = _train(capsys, tmp_path / "run", [f"optim.lr={lr}"])
    assert rc == 2 and "optim.lr" in err and "positive finite" in err, err
    _one_line(err)
    assert not (tmp_path / "run").exists()


# --- loader arguments are checked against the loader when the configuration loads ---------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (["data.loader_args={num_users: 120, num_items: 80, bogus: 1}"], ["'bogus'", "num_users"]),
        (["data.loader_args={num_user: 120}"], ["'num_user'", "num_users"]),  # a typo
        (["data.name=filmtrust", "data.loader_args={num_users: 120}"], ["'num_users'", "filmtrust", "none"]),
        (["data.name=lastfm", "data.loader_args={root: /tmp}"], ["'root'"]),  # set by the tool
        (["data.loader_args={num_users: true}"], ["num_users", "boolean"]),
    ],
    ids=["unknown", "typo", "loader-takes-none", "root", "boolean"],
)
def test_bad_loader_argument_is_refused_before_the_run_folder_exists(capsys, tmp_path, settings, expected):
    rc, err = _train(capsys, tmp_path / "run", settings)
    assert rc == 2 and "data.loader_args" in err, err
    for fragment in expected:
        assert fragment in err, err
    _one_line(err)
    assert not (tmp_path / "run").exists()


def test_loader_arguments_the_loader_takes_still_load():
    args = "data.loader_args={num_users: 50, homophily: 0.5, seed: 3}"
    cfg = load_config(overrides=["data.name=synthetic", args])
    assert cfg.data.loader_args == {"num_users": 50, "homophily": 0.5, "seed": 3}
    assert load_config(overrides=["data.name=epinions"]).data.loader_args == {}


# --- YAML syntax errors: one line with file, line and column ---------------------------------------

UNCLOSED = "optim:\n  lr: [1\n  epochs: 3\n"
BAD_INDENT = "optim:\n  lr: 0.001\n epochs: 3\n"
TAB = "optim:\n\tlr: 0.001\n"
COLON = "seed: 0: 1\n"


@pytest.mark.parametrize(
    ("command", "text", "line"),
    [
        (["train", "--out", "{tmp}/run"], UNCLOSED, 3),
        (["train", "--out", "{tmp}/run"], BAD_INDENT, 3),
        (["train", "--out", "{tmp}/run"], TAB, 2),
        (["datasets", "info", "synthetic"], COLON, 1),
        (["report", "--check", "--out", "{tmp}/report", "--params"], UNCLOSED, 3),
        (["report", "--check", "--out", "{tmp}/report", "--params"], COLON, 1),
    ],
    ids=["train-unclosed", "train-indent", "train-tab", "datasets-info", "report-unclosed", "report-colon"],
)
def test_yaml_syntax_error_is_one_line_naming_file_line_and_column(capsys, tmp_path, command, text, line):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    args += [str(path)] if args[-1] == "--params" else ["--config", str(path)]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    _one_line(err)
    assert str(path) in err and f"line {line}, column " in err and "not valid YAML" in err, err
    assert "<unicode string>" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "report").exists()


def test_yaml_reader_is_shared():
    """The grid's message (file, line, column) is the configuration's: one reader."""
    from pmtrec_lab.compare.spec import load_grid

    for loader, what in ((lambda p: load_config(p), "config file"), (load_grid, "grid file")):
        path = Path(__file__).parent / "no-such.yaml"
        with pytest.raises(ConfigError, match=f"{what} .*no-such.yaml: not found"):
            loader(path)
