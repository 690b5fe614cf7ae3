"""The multi-relation encoder in training: relations an active task predicts are left out of
message passing, or split into message and supervision edges that the encoder and the task share."""

from __future__ import annotations

import numpy as np
import pytest

from pmtrec_lab.data.graph import relation_split
from pmtrec_lab.train import build_model, train
from tests.helpers import tiny_synthetic
from tests.test_training import small_cfg


@pytest.fixture(scope="module")
def ds():
    return tiny_synthetic()


def _etypes(model):
    return {et[1] for et in model.encoder.graph.canonical_etypes}


def test_predicted_relations_are_left_out_of_message_passing(ds):
    cfg = small_cfg(encoder={"name": "hetero", "dim": 8, "num_layers": 2})
    model = build_model(cfg, ds)
    etypes = _etypes(model)
    assert "friends" not in etypes and "has_category" not in etypes and "has_community" not in etypes
    assert "interacts" in etypes


def test_split_relation_shares_edges_between_encoder_and_task(ds):
    cfg = small_cfg(
        encoder={"name": "hetero", "dim": 8, "num_layers": 2, "split_relations": {"friends": 0.6}}
    )
    model = build_model(cfg, ds)
    rel = ds.relations["friends"]
    msg, sup = relation_split(len(rel), 0.6, cfg.data.split_seed)
    g = model.encoder.graph
    src, dst = g.edges(etype=("user", "friends", "user"))
    graph_pairs = set(zip(src.tolist(), dst.tolist()))
    assert graph_pairs == set(zip(rel.src[msg].tolist(), rel.dst[msg].tolist()))
    social = next(t for t in model.tasks if t.name == "social:friends")
    task_pairs = set(zip(social.src.tolist(), social.dst.tolist()))
    assert task_pairs == set(zip(rel.src[sup].tolist(), rel.dst[sup].tolist()))
    assert not graph_pairs & task_pairs
    # negatives still reject every observed link, message edges included
    assert social.observed is not None and len(social.observed.keys) == len(
        np.unique(rel.src * ds.num_users + rel.dst)
    )


@pytest.mark.slow
def test_hetero_pmtrec_trains(ds, tmp_path):
    cfg = small_cfg(
        encoder={"name": "hetero", "dim": 8, "num_layers": 2, "split_relations": {"friends": 0.5}},
        method={"name": "pmtrec", "params": {}},
    )
    run = train(cfg, tmp_path / "r", dataset=ds)
    assert run.finished and run.metrics["test"]["ndcg@20"] > 0
