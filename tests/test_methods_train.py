"""Every registered method trains a few epochs on ml-100k through the same trainer without NaN."""

from __future__ import annotations

import math

import pytest

from pmtrec_lab.config import load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.mtl import METHODS, make_method
from pmtrec_lab.train import train

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

ALL_METHODS = sorted(n for n in METHODS if not n.startswith("test-"))


@pytest.fixture(scope="module")
def ml100k():
    try:
        return load_dataset("ml-100k")
    except Exception as exc:  # the wheel download needs PyPI
        import os

        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            raise
        pytest.skip(f"ml-100k unavailable: {exc}")


def test_all_issue_methods_are_registered():
    expected = {
        "single-task",
        "ew",
        "uw",
        "dwa",
        "gradnorm",
        "mgda",
        "pcgrad",
        "cagrad",
        "imtl-g",
        "aligned-mtl",
        "nash-mtl",
        "famo",
        "db-mtl",
        "metabalance",
        "pmtrec",
        "pmtrec-no-personalization",
        "pmtrec-no-align",
        "pmtrec-no-schedule",
        "pmtrec-no-gmb",
        "ew-align",
        "ew-gmb",
    }
    assert expected <= set(ALL_METHODS)


@pytest.fixture(scope="module")
def ml100k_meta(ml100k):
    """ml-100k with PMTRec v3's meta split, for the methods that read the meta loss."""
    return load_dataset("ml-100k", meta_split=True)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_trains_on_ml100k_without_nan(method, request, tmp_path):
    needs_meta = make_method(method, 5).reads_meta_split
    cfg = load_config(
        base={
            "data": {"meta_split": needs_meta},
            "method": {"name": method},
            "optim": {"epochs": 2, "lr": 3e-3},
            "encoder": {"dim": 32},
            "progress": "none",
        }
    )
    dataset = request.getfixturevalue("ml100k_meta" if needs_meta else "ml100k")
    run = train(cfg, tmp_path / method, dataset=dataset)
    assert run.finished
    losses = run.history.filter(like="loss/").to_numpy()
    assert losses.shape == (2, 5) and all(math.isfinite(v) for v in losses.reshape(-1))
    assert run.metrics["test"]["ndcg@20"] > 0.0
