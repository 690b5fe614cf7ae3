"""Preprocessing, split, graph, cache and dataset CLI: unit tests on small real pipelines, plus the
real datasets (raw counts against the datasets README, processed counts it documents)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pmtrec_lab.data import load_dataset
from pmtrec_lab.data.graph import INTERACTS, build_graph, relation_split
from pmtrec_lab.data.preprocess import clean_labels, first_unique_pairs, k_core, preprocess
from pmtrec_lab.data.split import split_per_user
from pmtrec_lab.data.types import RawDataset, RawLabels
from pmtrec_lab.errors import MissingDataError, PmtrecError
from tests.helpers import README_RAW, assert_pairs_disjoint, tiny_synthetic


def test_first_unique_pairs_keeps_first_in_file_order():
    a = np.array([3, 1, 3, 2, 1])
    b = np.array([7, 5, 7, 9, 5])
    assert first_unique_pairs(a, b).tolist() == [0, 1, 3]


def test_k_core_is_iterative():
    # user 0 has 2 items; item 2 is only used by user 1; after dropping item 2, user 1 falls below k
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 0, 2, 0, 1, 0, 1])
    keep = k_core(users, items, 2)
    kept = set(zip(users[keep].tolist(), items[keep].tolist()))
    assert (1, 2) not in kept and (1, 0) not in kept
    assert kept == {(0, 0), (0, 1), (2, 0), (2, 1), (3, 0), (3, 1)}


def test_preprocess_relations_labels_restricted_and_self_loops_dropped():
    users = np.array([10, 10, 20, 20, 30, 30, 10])
    items = np.array([1, 2, 1, 2, 1, 2, 1])  # last row duplicates (10, 1)
    raw = RawDataset(
        name="toy",
        users=users,
        items=items,
        ratings=None,
        user_relations={"trust": (np.array([10, 10, 20, 99, 30]), np.array([10, 20, 30, 10, 20]))},
        labels={
            "cat": RawLabels(
                "item", np.array([1, 1, 1, 2, 7]), np.array([2, 0, 0, 1, 3]), ["a", "b", "c", "d"], False
            )
        },
    )
    pairs, u_ids, i_ids, rels, labels = preprocess(raw, k=1, rating_threshold=None)
    assert len(pairs) == 6
    assert u_ids.tolist() == [10, 20, 30] and i_ids.tolist() == [1, 2]
    trust = rels["trust"]
    # self-loop 10->10 and unknown user 99 dropped; ids remapped
    assert list(zip(trust.src.tolist(), trust.dst.tolist())) == [(0, 1), (1, 2), (2, 1)]
    cat = labels["cat"]
    # item 1: labels 2, 0, 0 -> most frequent 0; item 2: label 1; item 7 not kept; label 3 unused
    assert cat.entity.tolist() == [0, 1]
    assert [cat.names[i] for i in cat.label.tolist()] == ["a", "b"]


def test_single_label_ties_go_to_lower_id_and_top_k_multi():
    single = RawLabels("item", np.array([5, 5, 6]), np.array([3, 1, 2]), list("abcd"), multi=False)
    ls = clean_labels("x", single, np.array([5, 6]))
    assert [ls.names[i] for i in ls.label.tolist()] == ["b", "c"]
    multi = RawLabels(
        "item", np.array([5, 6, 7, 5, 6, 5, 5]), np.array([0, 0, 0, 1, 1, 2, 2]), list("abc"), True, top_k=2
    )
    ms = clean_labels("t", multi, np.array([5, 6, 7]))
    assert ms.num_labels == 2 and ms.names == ["a", "b"]  # c used on one entity only (duplicates)


def test_split_rule_and_determinism():
    rng = np.random.default_rng(0)
    counts = [1, 2, 3, 9, 10, 25]
    pairs = np.array([(u, i) for u, n in enumerate(counts) for i in rng.choice(100, n, replace=False)])
    s1 = split_per_user(pairs, len(counts), split_seed=3)
    s2 = split_per_user(pairs, len(counts), split_seed=3)
    s3 = split_per_user(pairs, len(counts), split_seed=4)
    assert np.array_equal(s1.test, s2.test) and np.array_equal(s1.valid, s2.valid)
    assert not np.array_equal(s1.test, s3.test)
    assert s1.train_only_users == 2
    for u, n in enumerate(counts):
        n_test = (s1.test[:, 0] == u).sum()
        n_val = (s1.valid[:, 0] == u).sum()
        expected = 0 if n < 3 else max(1, n // 10)
        assert n_test == expected and n_val == expected
    total = np.concatenate([s1.train, s1.valid, s1.test])
    assert len(total) == len(pairs)
    assert_pairs_disjoint(s1.train, s1.test)
    assert_pairs_disjoint(s1.valid, s1.test)


def test_graph_holds_every_relation_and_no_heldout_pairs():
    ds = tiny_synthetic()
    g = build_graph(ds)
    assert g.num_edges(INTERACTS) == len(ds.split.train)
    src, dst = g.edges(etype=INTERACTS)
    graph_pairs = np.stack([src.numpy(), dst.numpy()], 1)
    assert_pairs_disjoint(graph_pairs, ds.split.test)
    assert_pairs_disjoint(graph_pairs, ds.split.valid)
    assert g.num_edges(("user", "friends", "user")) == len(ds.relations["friends"])
    assert g.num_edges(("item", "has_category", "category_label")) == len(ds.labels["category"])
    assert g.num_nodes("category_label") == ds.labels["category"].num_labels
    g2 = build_graph(ds, exclude={"friends"})
    assert ("user", "friends", "user") not in g2.canonical_etypes


def test_relation_split_partitions_rows():
    msg, sup = relation_split(101, 0.6, seed=1)
    assert len(msg) == 61 and len(sup) == 40
    assert sorted(np.concatenate([msg, sup]).tolist()) == list(range(101))
    assert np.array_equal(msg, relation_split(101, 0.6, seed=1)[0])
    with pytest.raises(ValueError, match="message_fraction"):
        relation_split(10, 1.0, 0)


def test_cache_hit_is_fast_and_parameter_change_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    args = {"num_users": 3000, "num_items": 1500, "interactions_per_user": 30}
    t0 = time.perf_counter()
    a = load_dataset("synthetic", loader_args=args)
    first = time.perf_counter() - t0
    entries = list((tmp_path / "cache" / "preprocessed").glob("synthetic-*"))
    assert len(entries) == 1 and entries[0].is_dir()
    b = load_dataset("synthetic", loader_args=args)
    assert np.array_equal(a.split.test, b.split.test)
    c = load_dataset("synthetic", loader_args=args, k_core=5)
    assert len(list((tmp_path / "cache" / "preprocessed").glob("synthetic-*"))) == 2
    assert c.params["k_core"] == 5
    assert first > 0


def test_unknown_dataset_and_empty_result_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*ciao"):
        load_dataset("nope")
    with pytest.raises(PmtrecError, match="k_core=500"):
        load_dataset("synthetic", k_core=500, loader_args={"num_users": 50, "num_items": 40})


def test_missing_release_files_name_file_dir_and_source(tmp_path):
    (tmp_path / "ciao").mkdir()
    (tmp_path / "ciao" / "rating.mat").write_bytes(b"")
    with pytest.raises(MissingDataError) as err:
        load_dataset("ciao", tmp_path)
    msg = str(err.value)
    assert "trustnetwork.mat" in msg and str(tmp_path / "ciao") in msg and "msu.edu" in msg


def test_dgl_compat_stubs_only_when_library_missing(tmp_path):
    from pmtrec_lab import dgl_compat

    assert dgl_compat._needs_stub(tmp_path / "absent.so")
    present = tmp_path / "libgraphbolt_pytorch_2.13.0.so"
    present.write_bytes(b"")
    assert not dgl_compat._needs_stub(present)
    assert not dgl_compat._needs_stub(None)
    # simulate the present case in a fresh interpreter: the lookup finds a library, nothing stubbed
    code = (
        "import pmtrec_lab.dgl_compat as c, pathlib, sys\n"
        "print(c.graphbolt_stubbed, type(sys.modules.get('dgl.graphbolt')).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    stubbed_here = out.split()[0] == "True"
    lib = dgl_compat.graphbolt_library_path()
    assert stubbed_here == (lib is not None and not lib.exists())
    probe = (
        "import sys, types, pathlib\n"
        "import pmtrec_lab.dgl_compat as c\n"
        f"c.graphbolt_library_path = lambda: pathlib.Path({str(present)!r})\n"
        "print(c._needs_stub(c.graphbolt_library_path()))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pmtrec_lab.cli", *args], capture_output=True, text=True)


def test_datasets_list_cli():
    res = _cli("datasets", "list")
    assert res.returncode == 0
    for name in ("ml-100k", "ciao", "epinions", "lastfm", "amazon", "yelp", "filmtrust", "synthetic"):
        assert name in res.stdout


# ---------------------------------------------------------------------------------- real data
README_PROCESSED = {  # the datasets README's "after 5-core filtering" facts
    "ciao": (5858, 10685, 141900),
    "lastfm": (1859, 2823, 71355),
    "amazon": (6170, 2746, 195773),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(README_RAW))
def test_datasets_info_json_raw_counts_match_readme(name, shared_datasets, tmp_path):
    env_cache = {"PMTREC_CACHE_DIR": str(tmp_path)}
    import os

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmtrec_lab.cli",
            "datasets",
            "info",
            name,
            "--data-dir",
            str(shared_datasets),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env_cache},
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["raw"] == README_RAW[name]
    assert set(info) >= {"raw", "processed", "split"}
    if name in README_PROCESSED:
        p = info["processed"]
        assert (p["users"], p["items"], p["interactions"]) == README_PROCESSED[name]
    s = info["split"]
    assert s["train"] + s["valid"] + s["test"] == info["processed"]["interactions"]


@pytest.mark.realdata
def test_real_graph_has_no_leakage_and_relation_sizes(shared_datasets):
    ds = load_dataset("ciao", shared_datasets)
    g = build_graph(ds)
    assert g.num_edges(INTERACTS) == len(ds.split.train)
    assert g.num_edges(("user", "trust", "user")) == len(ds.relations["trust"])
    src, dst = g.edges(etype=INTERACTS)
    key = src.numpy().astype(np.int64) * ds.num_items + dst.numpy()
    test_key = ds.split.test[:, 0] * ds.num_items + ds.split.test[:, 1]
    assert not np.isin(test_key, key).any()
    assert (ds.relations["trust"].src != ds.relations["trust"].dst).all()
    assert torch.is_tensor(src)
