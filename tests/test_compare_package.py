"""The ``compare`` package's seams: executors behind one interface, the method lists from the
registry, and the committed grid's tables rebuilt byte for byte from its runs."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from pmtrec_lab.cli import main as cli_main
from pmtrec_lab.compare import (
    EXECUTORS,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    baseline_methods,
    is_baseline,
    make_executor,
    pmtrec_family,
)
from pmtrec_lab.errors import ConfigError

GRID = Path(__file__).resolve().parents[1] / "results" / "grid"
GRID_YAML = GRID.parent / "grid.yaml"


def _square_or_fail(x: int) -> int:
    if x < 0:
        raise RuntimeError(f"unit {x} failed")
    return x * x


def test_sequential_and_process_executors_agree_and_keep_order():
    items = [5, 1, 4, 2, 3]
    assert SequentialExecutor().run(_square_or_fail, items) == [25, 1, 16, 4, 9]
    assert ProcessExecutor(2, threads=1).run(_square_or_fail, items) == [25, 1, 16, 4, 9]
    with pytest.raises(RuntimeError, match="unit -1 failed"):
        ProcessExecutor(2, threads=1).run(_square_or_fail, [1, -1, 2])


def test_make_executor_by_name_and_jobs():
    assert set(EXECUTORS) == {"sequential", "process", "ray"}
    assert isinstance(make_executor(None, 1), SequentialExecutor)
    assert isinstance(make_executor(None, 3), ProcessExecutor) and make_executor(None, 3).jobs == 3
    assert isinstance(make_executor("ray", 1), RayExecutor)  # made, not started: Ray is not imported
    assert isinstance(make_executor(None, 1, address="127.0.0.1:6379"), RayExecutor)  # implied
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        make_executor("dask", 1)
    with pytest.raises(ConfigError, match="--address only apply to --executor ray"):
        make_executor("process", 2, address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="--jobs 2 sizes the process executor"):
        make_executor("ray", 2)
    with pytest.raises(ConfigError, match="--jobs"):
        make_executor(None, 0)
    with pytest.raises(ConfigError, match="sequential runs one unit at a time"):
        make_executor("sequential", 2)


def test_method_lists_come_from_the_registry():
    assert baseline_methods()[:3] == ("single-task", "ew", "uw") and len(baseline_methods()) >= 14
    assert pmtrec_family()[0] == "pmtrec" and "ew-gmb" in pmtrec_family()
    assert not set(baseline_methods()) & set(pmtrec_family())
    assert is_baseline("ew") and not is_baseline("pmtrec-gmb") and not is_baseline("ew-align")
    assert is_baseline("my-variant") and not is_baseline("pmtrec-variant")  # unregistered labels


def test_committed_tables_rebuild_byte_identical(tmp_path):
    """``compare --tables-only`` on a copy of the committed grid rewrites every table exactly."""
    out = tmp_path / "grid"
    shutil.copytree(GRID, out)
    assert cli_main(["compare", "--grid", str(GRID_YAML), "--out", str(out), "--tables-only"]) == 0
    files = sorted(p.name for p in GRID.iterdir() if p.is_file())
    assert "summary.md" in files and "ablation.csv" in files
    match, mismatch, errors = filecmp.cmpfiles(GRID, out, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
