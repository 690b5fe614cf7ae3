"""Shared fixtures. Real-data tests use ../shared/datasets (or PMTREC_DATA_DIR): they skip when it is
missing, except under CI=true, where a missing dataset fails the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = (REPO.parent / "shared" / "datasets").resolve()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Derived files of the test session go to the project cache unless PMTREC_CACHE_DIR is set."""
    os.environ.setdefault("DGLBACKEND", "pytorch")
    yield


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets directory; skip (or fail under CI=true) when absent."""
    path = Path(os.environ.get("PMTREC_DATA_DIR", SHARED_DATASETS))
    if not (path / "ciao").is_dir():
        msg = f"real datasets not found at {path} (expected ../shared/datasets beside the checkout)"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_dataset(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        msg = f"dataset {name!r} not found at {folder}"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return folder
