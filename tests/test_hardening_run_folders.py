"""Run folders whose damage, interruption or mix-up is said as it is: one parametrized test per
failure family of issue 26's "Poor" list, item 2, at the command line where a user meets it.

Each family was seen failing before its fix: a damaged ``status.json`` was "not a pmtrec-lab run
folder", an unreadable ``config.yaml`` "a different configuration", a full disk named no path
and left ``status.json`` at ``running``, SIGTERM left it at ``running``, ``evaluate`` gave an
unfinished run's early metrics with exit 0, another run's ``best.pt`` was an "unexpected
RuntimeError" and its ``last.pt`` "changed data" (or was resumed from without a word), a crafted
checkpoint's message quoted torch's advice to load it with ``weights_only=False``, and a resumed
run did not say so.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pmtrec_lab.cli import main
from pmtrec_lab.config import load_config
from pmtrec_lab.mtl import METHODS, CombineResult, MethodParams, WeightingMethod, register
from pmtrec_lab.train import load_run, train
from pmtrec_lab.train.run import CHECKPOINT_FORMAT, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
#: a three-epoch run on the generated dataset: about a second on a laptop's CPU
FAST = [
    "data.name=synthetic",
    "data.loader_args={num_users: 120, num_items: 80}",
    "optim.epochs=3",
    "encoder.dim=8",
    "progress=none",
]
LOG = "pmtrec_lab.train"


def _sets(extra: list[str] = ()) -> list[str]:
    return [a for s in [*FAST, *extra] for a in ("--set", s)]


def _train(capsys, out: Path, extra: list[str] = (), *flags: str) -> tuple[int, str]:
    rc = main(["train", *_sets(extra), "--out", str(out), *flags])
    return rc, capsys.readouterr().err


def _one_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _status(out: Path) -> dict:
    return json.loads((out / "status.json").read_text())


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))


def _paused(out: Path, epochs: int = 1, extra: list[str] = ()) -> Path:
    """A run of FAST stopped after ``epochs`` epochs (``last.pt`` and ``best.pt`` on disk)."""
    train(load_config(overrides=[*FAST, *extra]), out, max_epochs_this_call=epochs)
    return out


# --- a damaged status.json: named, and the run resumes from last.pt ------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short by a crash
        lambda text: "",  # emptied
        lambda text: "\x00\x01\x7f garbage",
        lambda text: "[1, 2]",  # JSON, but not a status
    ],
    ids=["truncated", "empty", "garbage", "a-list"],
)
def test_damaged_status_is_named_and_the_run_resumes_from_last_pt(capsys, caplog, tmp_path, damage):
    out = _paused(tmp_path / "run", epochs=2)
    capsys.readouterr()
    (out / "status.json").write_text(damage((out / "status.json").read_text()))
    with caplog.at_level(logging.WARNING, logger=LOG):
        rc, err = _train(capsys, out)
    assert rc == 0, err
    notices = caplog.text
    assert str(out / "status.json") in notices and "damaged" in notices, notices
    assert "resuming from epoch 3" in notices, notices
    run = load_run(out)
    assert run.finished and run.history["epoch"].tolist() == [1, 2, 3]


def test_a_folder_of_user_files_with_a_broken_status_is_still_refused(capsys, tmp_path):
    """The damaged-status rule needs a pmtrec-lab configuration and checkpoint beside it."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "status.json").write_text("{broken")
    (out / "config.yaml").write_text("my: own file\n")
    (out / "last.pt").write_bytes(b"mine")
    before = _snapshot(out)
    rc, err = _train(capsys, out)
    assert rc == 2 and "not a pmtrec-lab run folder" in err and _snapshot(out) == before


# --- an unreadable config.yaml is said to be unreadable -------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "optim: {lr: [0.001\n",  # not YAML
        b"\xff\xfe\x00binary",  # not text
        "encoder:\n  dim: -3\n",  # not a valid configuration
        "- a list\n",  # not a mapping
    ],
    ids=["yaml-syntax", "binary", "invalid-value", "a-list"],
)
def test_unreadable_config_is_named_not_called_another_configuration(capsys, tmp_path, content):
    out = _paused(tmp_path / "run")
    capsys.readouterr()
    path = out / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = _snapshot(out)
    rc, err = _train(capsys, out)
    assert rc == 2 and str(path) in err and "unreadable" in err, err
    assert "different configuration" not in err and "--restart" in err, err
    _one_line(err)
    assert _snapshot(out) == before  # nothing written
    rc, err = _train(capsys, out, [], "--restart")  # the way out named
    assert rc == 0, err


# --- a full disk: the path is named and the run is marked failed ----------------------------------


class _DiskFills(WeightingMethod):
    """Test-only method: EW that fills the disk (turns on ``_FULL``) at the end of epoch 2."""

    name = "test-disk-fills"

    def combine(self, grads, active, side, losses, ctx):
        return CombineResult(grads.sum(0), torch.ones(grads.shape[0]))

    def on_epoch_end(self, mean_losses, epoch):
        if epoch == 1:
            _FULL["on"] = True


_FULL = {"on": False, "broken": ()}


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as the kernel gives it: no file name


@pytest.fixture
def disk(monkeypatch):
    """Writers that fail as on a full disk once ``_FULL["on"]``; in-place rewrites of an existing
    file's blocks (os.write) still work, as they do on a full ext4."""
    if _DiskFills.name not in METHODS:
        register(_DiskFills)
    _FULL.update(on=False, broken=())
    originals = {
        "text": Path.write_text,
        "checkpoint": torch.save,
        "parquet": pd.DataFrame.to_parquet,
    }

    def guarded(kind, fault):
        def call(*args, **kwargs):
            if _FULL["on"] and kind in _FULL["broken"]:
                return fault()
            return originals[kind](*args, **kwargs)

        return call

    def short_write():
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 55104 vs 54992")

    monkeypatch.setattr(Path, "write_text", guarded("text", _enospc))
    monkeypatch.setattr(torch, "save", guarded("checkpoint", short_write))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", guarded("parquet", _enospc))
    yield _FULL
    _FULL.update(on=False, broken=())


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        (("text",), "history.json"),
        (("checkpoint", "text"), ".pt"),
        (("parquet",), "diagnostics"),
    ],
    ids=["text-files", "checkpoints-and-text", "parquet"],
)
def test_full_disk_names_the_path_and_marks_the_run_failed(capsys, tmp_path, disk, broken, named):
    out = tmp_path / "run"
    disk["broken"] = broken
    rc, err = _train(capsys, out, ["method.name=test-disk-fills"])
    assert rc == 2, err
    _one_line(err)
    assert str(out) in err and named in err and ("no space" in err or "disk full" in err), err
    disk.update(on=False, broken=())
    status = _status(out)
    assert status["state"] == "failed" and str(out) in status["error"], status
    assert status["pid"] == os.getpid() and status["epoch"] >= 1, status
    assert load_checkpoint(out / "last.pt")["epoch"] in (1, 2)  # an epoch kept whole
    rc, err = _train(capsys, out, ["method.name=test-disk-fills"])
    assert rc == 0, err
    assert load_run(out).finished


# --- SIGTERM is handled as Ctrl-C -----------------------------------------------------------------

_TERMINATED = """
import os, signal, sys
from pathlib import Path
import torch
from pmtrec_lab.cli import main
from pmtrec_lab.mtl import CombineResult, MethodParams, WeightingMethod, register

class P(MethodParams):
    at_epoch: int = 0

class Term(WeightingMethod):
    name = "test-sigterm"
    Params = P

    def combine(self, grads, active, side, losses, ctx):
        return CombineResult(grads.sum(0), torch.ones(grads.shape[0]))

    def on_epoch_end(self, mean_losses, epoch):
        if epoch == self.hparams.at_epoch:
            os.kill(os.getpid(), signal.SIGTERM)

register(Term)
sys.exit(main(sys.argv[1:]))
"""


class _TermParams(MethodParams):
    at_epoch: int = 0


class _NoTerm(WeightingMethod):
    """The subprocess's ``test-sigterm`` without the signal: the rerun in this process."""

    name = "test-sigterm"
    Params = _TermParams

    def combine(self, grads, active, side, losses, ctx):
        return CombineResult(grads.sum(0), torch.ones(grads.shape[0]))


@pytest.mark.parametrize("at_epoch", [0, 1, 2])
def test_sigterm_marks_the_run_interrupted_as_ctrl_c_does(capsys, tmp_path, at_epoch):
    out = tmp_path / "run"
    extra = ["method.name=test-sigterm", f"method.params.at_epoch={at_epoch}"]
    env = {**os.environ, "PMTREC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_TERMINATED), "train", *_sets(extra), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "SIGTERM" in proc.stderr and "resumes" in proc.stderr, proc.stderr
    status = _status(out)
    assert status["state"] == "failed" and status["error"] == "interrupted", status
    assert status["epoch"] == at_epoch  # the epoch during which it came was not finished
    if _NoTerm.name not in METHODS:
        register(_NoTerm)
    rc, err = _train(capsys, out, extra)
    assert rc == 0, err
    assert load_run(out).finished


# --- evaluate refuses an unfinished run, naming its best checkpoint's epoch ------------------------


def _hold_lock(out: Path):
    code = "import sys, time\nfrom pmtrec_lab.train.lock import RunLock\n"
    code += "with RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize(
    ("epochs", "state", "said"),
    [
        (1, "paused", "paused"),
        (2, "paused", "paused"),
        (2, "killed", "stopped"),  # status.json says running, no process holds the lock
        (2, "training", "still training"),  # a live process holds the lock
        (2, "failed", "failed"),
    ],
)
def test_evaluate_refuses_an_unfinished_run_naming_its_best_epoch(
    capsys, caplog, tmp_path, epochs, state, said
):
    out = _paused(tmp_path / "run", epochs=epochs)
    best = load_checkpoint(out / "best.pt")["epoch"]
    status = _status(out)
    if state in ("killed", "training"):
        status["state"] = "running"
    elif state == "failed":
        status.update(state="failed", error="TrainingDivergedError: ...")
    (out / "status.json").write_text(json.dumps(status))
    holder = _hold_lock(out) if state == "training" else None
    try:
        capsys.readouterr()
        rc = main(["evaluate", str(out)])
        err = capsys.readouterr().err
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert rc == 2 and "unfinished" in err and said in err, err
    assert f"best checkpoint is from epoch {best}" in err and "--allow-unfinished" in err, err
    _one_line(err)
    with caplog.at_level(logging.WARNING, logger=LOG):
        rc = main(["evaluate", str(out), "--allow-unfinished"])
    assert rc == 0 and "ndcg@20" in json.loads(capsys.readouterr().out)
    assert f"from epoch {best}" in caplog.text and "unfinished" in caplog.text, caplog.text


# --- another run's checkpoint: the file and what differs are named --------------------------------


def _other_run(tmp_path: Path, extra: list[str]) -> Path:
    return _paused(tmp_path / "other", epochs=1, extra=extra)


@pytest.mark.parametrize(
    ("file", "other", "named"),
    [
        ("best.pt", ["encoder.dim=16"], ["encoder.dim", "16", "8"]),
        ("best.pt", ["method.name=pcgrad"], ["method.name", "pcgrad", "ew"]),
        ("last.pt", ["data.loader_args={num_users: 150, num_items: 80}"], ["data.loader_args"]),
        ("last.pt", ["seed=1"], ["seed"]),  # the same shapes and data: it was resumed from
        ("last.pt", ["encoder.dim=16"], ["encoder.dim"]),
    ],
    ids=["best-dim", "best-method", "last-data", "last-seed", "last-dim"],
)
def test_another_runs_checkpoint_is_named_with_what_differs(capsys, tmp_path, file, other, named):
    out = _paused(tmp_path / "run")
    shutil.copy(_other_run(tmp_path, other) / file, out / file)
    capsys.readouterr()
    if file == "best.pt":
        (out / "status.json").write_text(json.dumps({**_status(out), "state": "finished"}))
        rc = main(["evaluate", str(out)])
        err = capsys.readouterr().err
    else:
        rc, err = _train(capsys, out)
    assert rc == 2 and str(out / file) in err and "another run" in err, err
    assert "data changed" not in err and "unexpected" not in err, err
    for fragment in named:
        assert fragment in err, err
    _one_line(err)


@pytest.mark.parametrize("dim", [4, 16, 32])
def test_a_checkpoint_without_its_configuration_that_does_not_fit_is_named(capsys, tmp_path, dim):
    """Checkpoints from before the configuration was stored in them: the shapes are compared."""
    out = _paused(tmp_path / "run")
    other = _other_run(tmp_path, [f"encoder.dim={dim}"])
    state = load_checkpoint(other / "best.pt")
    state.pop("config")
    torch.save({"format": CHECKPOINT_FORMAT, "state": state}, out / "best.pt")
    (out / "status.json").write_text(json.dumps({**_status(out), "state": "finished"}))
    capsys.readouterr()
    rc = main(["evaluate", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and str(out / "best.pt") in err and "does not fit" in err, err
    assert f"[120, {dim}]" in err or f"{dim}]" in err, err
    _one_line(err)


# --- crafted checkpoints: refused without torch's advice to load them unsafely ---------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _craft(kind: str, path: Path, marker: Path) -> None:
    if kind == "pickle-payload":
        torch.save({"model": _Payload(marker)}, path)
    elif kind == "raw-pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    elif kind == "numpy-inside":  # our container, holding an object weights-only loading refuses
        torch.save({"format": CHECKPOINT_FORMAT, "state": {"model": np.zeros(3)}}, path)


@pytest.mark.parametrize("file", ["last.pt", "best.pt"])
@pytest.mark.parametrize("kind", ["pickle-payload", "raw-pickle", "numpy-inside"])
def test_crafted_checkpoint_is_refused_without_unsafe_advice(capsys, tmp_path, kind, file):
    out = _paused(tmp_path / "run")
    marker = tmp_path / "code-ran"
    _craft(kind, out / file, marker)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if file == "last.pt":
            rc, err = _train(capsys, out)
        else:
            (out / "status.json").write_text(json.dumps({**_status(out), "state": "finished"}))
            rc = main(["evaluate", str(out)])
            err = capsys.readouterr().err
    assert rc == 2 and str(out / file) in err and "not a checkpoint pmtrec-lab wrote" in err, err
    for advice in ("weights_only", "trust", "add_safe_globals", "\x1b["):
        assert advice not in err, err
    _one_line(err)
    assert not marker.exists()
    assert not [w for w in caught if "pickle" in str(w.message)]  # torch's protocol warning


# --- a resumed run says so -------------------------------------------------------------------------


@pytest.mark.parametrize(("done", "epochs"), [(1, 3), (2, 3), (2, 5)])
def test_resumed_run_says_from_which_epoch(capsys, caplog, tmp_path, done, epochs):
    out = _paused(tmp_path / "run", epochs=done, extra=[f"optim.epochs={epochs}"])
    with caplog.at_level(logging.WARNING, logger=LOG):
        rc, err = _train(capsys, out, [f"optim.epochs={epochs}"])
    assert rc == 0, err
    assert f"resuming from epoch {done + 1} of {epochs}" in caplog.text, caplog.text
    assert str(out) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOG):
        rc, err = _train(capsys, tmp_path / "fresh", [f"optim.epochs={epochs}"])
    assert rc == 0 and "resuming" not in caplog.text
