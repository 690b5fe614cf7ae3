"""The Ray pieces that need no Ray: the package and every non-Ray command import no ray, the
``--resources-per-run`` and search-space files are refused in one line naming the item, and a
run's artefacts travel as bytes and land in the driver's run folder, failed runs recorded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pmtrec_lab.compare import GridSpec, SequentialExecutor, grid_progress, run_path
from pmtrec_lab.compare.artefacts import RunArtefacts, pack_run, write_run
from pmtrec_lab.compare.dispatch import RunsFailedError, run_grid_remote
from pmtrec_lab.compare.resources import RunResources, parse_resources
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.train import load_run
from pmtrec_lab.tune.space import load_space, split_sample

REPO = Path(__file__).resolve().parents[1]


def test_package_and_non_ray_commands_never_import_ray(tmp_path):
    # one committed unit, so that --tables-only has finished runs to tabulate
    unit = Path("runs") / "lastfm" / "single-task"
    shutil.copytree(REPO / "results" / "grid" / unit, tmp_path / "g" / unit)
    code = (
        "import sys\n"
        "import pmtrec_lab, pmtrec_lab.compare, pmtrec_lab.tune, pmtrec_lab.viz\n"
        "from pmtrec_lab.cli import main\n"
        "assert main(['methods', '--names']) == 0\n"
        f"assert main(['compare', '--grid', {str(REPO / 'results' / 'grid.yaml')!r}, '--out', "
        f"{str(tmp_path / 'g')!r}, '--tables-only', '--set', 'datasets=[lastfm]', "
        "'--set', 'methods=[single-task]']) == 0\n"
        "for bad in (['compare', '--resources-per-run', 'cpu=x', '--out', 'x'], ['tune', '--help']):\n"
        "    try:\n"
        "        main(bad)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna'))\n"
        "assert not loaded, loaded\n"
    )
    env = {"PYTHONPATH": str(REPO), "DGLBACKEND": "pytorch", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cpu=x", "cpu='x' is not a number"),
        ("tpu=1", "unknown resource 'tpu'"),
        ("cpu", "is not NAME=NUMBER"),
        ("gpu=1.5", "fractional GPUs must be below 1"),
        ("cpu=0,gpu=0", "must reserve some CPU or GPU"),
        ("cpu=1,cpu=2", "cpu given more than once"),
        ("cpu=-1", "must be a finite number >= 0"),
    ],
)
def test_bad_resources_per_run_is_one_line_naming_it(text, expected):
    with pytest.raises(ConfigError, match="--resources-per-run") as err:
        parse_resources(text)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_resources_parse_with_fractional_gpus():
    assert parse_resources("cpu=2,gpu=0.25") == RunResources(2.0, 0.25)
    assert parse_resources(None) == RunResources(1.0, 0.0) and parse_resources("gpu=2").cpu == 1.0
    assert RunResources(0.5, 0).threads == 1 and RunResources(3.7, 0).threads == 3


@pytest.mark.parametrize(
    "method, text, expected",
    [
        ("gradnorm", "alpah: {uniform: [0, 1]}\n", "'alpah' is not a typed parameter of method 'gradnorm'"),
        ("cagrad", "c: {uniform: [1.0, 0.5]}\n", "c: uniform needs low < high"),
        ("cagrad", "c: {normal: [0, 1]}\n", "c: expected one of"),
        ("nash-mtl", "update_weights_every: {int: [0, 5]}\n", "update_weights_every: 0 is refused"),
        ("ew", "optim.lr: {loguniform: [0, 0.1]}\n", "loguniform needs low > 0"),
        ("ew", "optim.momentum: 0.9\n", "only optim.lr and optim.weight_decay"),
        ("static-lambda", "task_weights: {uniform: [0, 1]}\n", "searched per entry"),
        ("static-lambda", "weight.x: {uniform: [0, 1]}\n", "has no keys"),
        ("pmtrec", "tau: [0.1, 1]\n", "write {choice: [...]}"),
    ],
)
def test_bad_search_space_is_one_line_naming_file_and_key(tmp_path, method, text, expected):
    path = tmp_path / f"{method}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(path, method)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_search_space_keys_and_samples():
    space = load_space(REPO / "search_spaces" / "ciao" / "static-lambda.yaml", "static-lambda")
    assert space.keys()[:2] == ["optim.lr", "optim.weight_decay"]
    optim, params = split_sample({"optim.lr": 0.01, "task_weights.social:trust": 0.3, "weight": 0.5})
    assert optim == {"lr": 0.01} and params == {"task_weights": {"social:trust": 0.3}, "weight": 0.5}
    for f in sorted((REPO / "search_spaces").rglob("*.yaml")):  # every shipped space loads
        load_space(f, f.stem)


def test_pack_and_write_run_round_trip(tmp_path):
    src = tmp_path / "src"
    (src / "diagnostics").mkdir(parents=True)
    for name, data in {
        "config.yaml": b"a: 1\n",
        "last.pt": b"x",
        ".lock": b"",
        "diagnostics/e.parquet": b"p",
    }.items():
        (src / name).write_bytes(data)
    files = pack_run(src)
    assert sorted(files) == ["config.yaml", "diagnostics/e.parquet"]  # no last.pt, no hidden files
    with pytest.raises(ValueError, match="not a relative path"):
        write_run(RunArtefacts(files={"../escape": b""}), tmp_path / "dst")


@pytest.mark.slow
def test_remote_dispatch_writes_runs_and_records_failures(tmp_path):
    """The run-by-run path the Ray executor takes, here through the in-process executor."""
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew", "broken"],
        seeds=[0, 1],
        lrs=[0.01],
        base={
            "data": {"loader_args": {"num_users": 120, "num_items": 80}},
            "encoder": {"name": "mf", "dim": 8},
            "optim": {"epochs": 1, "batch_size": 512},
            "progress": "none",
        },
        variants={"broken": {"name": "static-lambda", "params": {"task_weights": {"nope": 1.0}}}},
    )
    with pytest.raises(RunsFailedError, match="1 run\\(s\\) failed.*broken/lr0.01-seed0.*nope") as err:
        run_grid_remote(spec, tmp_path, None, SequentialExecutor())
    assert err.value.trained == 2
    for seed in (0, 1):
        assert load_run(run_path(tmp_path, spec, "synthetic", "ew", 0.01, seed)).finished
    prog = grid_progress(tmp_path, spec).set_index("method")
    assert "nope" in prog.loc["broken", "failed"] and prog.loc["ew", "failed"] == ""
    ok = spec.model_copy(update={"methods": ["ew"]})
    assert run_grid_remote(ok, tmp_path, None, SequentialExecutor())[0] == 0  # resumes: nothing to redo


class _RecordingExecutor(SequentialExecutor):
    """The in-process executor, keeping every job it was given (what a Ray worker would get)."""

    def __init__(self) -> None:
        self.jobs: list = []

    def submit(self, fn, job):
        self.jobs.append(job)
        return super().submit(fn, job)


def test_remote_jobs_carry_an_absolute_data_dir(tmp_path, monkeypatch):
    """A Ray worker runs in a folder of its own, so ``--data-dir ../shared/datasets`` must reach it
    made absolute against the driver's working directory (a relative one made every tuning trial
    look for ciao under Ray's session folder)."""
    from pmtrec_lab.compare.remote import remote_config
    from pmtrec_lab.config import load_config

    monkeypatch.chdir(tmp_path)
    spec = GridSpec(
        datasets=["synthetic"],
        methods=["ew"],
        seeds=[0],
        lrs=[0.01],
        base={
            "data": {"loader_args": {"num_users": 120, "num_items": 80}},
            "encoder": {"name": "mf", "dim": 8},
            "optim": {"epochs": 1, "batch_size": 512},
            "progress": "none",
        },
    )
    executor = _RecordingExecutor()
    run_grid_remote(spec, tmp_path / "grid", "../shared/datasets", executor)
    assert [job.config["data"]["data_dir"] for job in executor.jobs] == [
        str((tmp_path / "../shared/datasets").resolve())
    ]
    absolute = load_config(base={"data": {"data_dir": "/srv/data"}})
    assert remote_config(absolute)["data"]["data_dir"] == "/srv/data"
    assert remote_config(load_config(base={}))["data"]["data_dir"] is None  # the worker's own default


def test_tune_journal_records_replays_and_refuses_a_mismatch(tmp_path):
    """A resumable unit's partial file (``pmtrec_lab.tune.resume``, no Ray): finished trials are
    appended with their reports (NaN kept), read back, marked for replay when the sampler
    proposes the recorded configuration, and a different proposal is one error naming the file."""
    from pmtrec_lab.tune.resume import REPLAY_KEY, Journal, read_partial

    path = tmp_path / "u" / "trials.partial.jsonl"
    first = Journal(path, stop_after=None)
    reports = [{"valid_ndcg20": float("nan"), "best_valid_ndcg20": float("nan"), "epoch": 1}]
    assert first.propose("a", {"optim.lr": 0.01}) == {"optim.lr": 0.01}
    first.trial_finished("a", reports, True)
    assert first.propose("b", {"optim.lr": 0.02}) == {"optim.lr": 0.02}  # not finished: not recorded
    recorded = read_partial(path)
    assert list(recorded) == [1] and recorded[1].stopped_early and recorded[1].config == {"optim.lr": 0.01}
    assert recorded[1].reports[0]["epoch"] == 1 and recorded[1].reports[0]["valid_ndcg20"] != 0.0
    again = Journal(path, read_partial(path), stop_after=1)
    assert again.replays() == {1: recorded[1].reports}
    assert again.propose("c", {"optim.lr": 0.01}) == {"optim.lr": 0.01, REPLAY_KEY: 1}
    again.trial_finished("c", recorded[1].reports, True)
    assert len(path.read_text().splitlines()) == 1 and again.should_stop()  # replayed: not appended
    other = Journal(path, read_partial(path), stop_after=None)
    assert other.propose("d", {"optim.lr": 0.011}) is None
    with pytest.raises(ConfigError, match=f"^{path}: trial 1's sampled configuration .* delete {path}"):
        other.check()
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match=f"^{path}, line 1: not a recorded trial"):
        read_partial(path)
