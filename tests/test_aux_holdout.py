"""Auxiliary-task metrics behind ``data.aux_holdout`` (issue 28, item 1): the holdout (disjoint
from training, out of every graph, identical across loads, in the fingerprint only when on), the
metrics against hand-computed values on planted cases, and a short training run that writes them
into ``history.json`` and ``metrics.json``, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pmtrec_lab.config import load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.data.aux_holdout import aux_holdout_of
from pmtrec_lab.data.graph import build_graph
from pmtrec_lab.data.loading import dataset_info, identity_for_config
from pmtrec_lab.errors import ConfigError
from pmtrec_lab.eval.auxiliary import N_NEGATIVES, label_metric, link_metrics, sample_non_edges
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.tasks import LabelTask, SocialTask
from pmtrec_lab.train import train
from pmtrec_lab.train.auxiliary import AuxiliaryEvaluator
from pmtrec_lab.train.trainer import Model
from tests.helpers import FixedEncoder

SYN = {"num_users": 150, "num_items": 90, "interactions_per_user": 12}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _undirected(src: np.ndarray, dst: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(np.minimum(src, dst).tolist(), np.maximum(src, dst).tolist()))


# ------------------------------------------------------------------------------- the holdout


def test_holdout_is_disjoint_from_training_and_identical_across_loads(cache) -> None:
    plain = load_dataset("synthetic", loader_args=SYN)
    on = load_dataset("synthetic", loader_args=SYN, aux_holdout=0.2)
    again = load_dataset("synthetic", loader_args=SYN, aux_holdout=0.2)  # from the cache
    rebuilt = load_dataset("synthetic", loader_args=SYN, aux_holdout=0.2, use_cache=False)
    held = aux_holdout_of(on)
    assert held is not None and aux_holdout_of(plain) is None
    assert sorted(held.valid) == sorted([*plain.relations, *plain.labels])
    for other in (again, rebuilt):
        other_held = aux_holdout_of(other)
        assert other_held is not None
        for split in ("valid", "test"):
            for name, part in getattr(held, split).items():
                twin = getattr(other_held, split)[name]
                cols = ("src", "dst") if hasattr(part, "src") else ("entity", "label")
                assert all(np.array_equal(getattr(part, c), getattr(twin, c)) for c in cols)
    # the main task's split is untouched
    assert all(
        np.array_equal(getattr(on.split, s), getattr(plain.split, s)) for s in ("train", "valid", "test")
    )

    rel, full = on.relations["friends"], plain.relations["friends"]
    valid, test = held.valid["friends"], held.test["friends"]
    train_pairs = _undirected(rel.src, rel.dst)
    valid_pairs, test_pairs = _undirected(valid.src, valid.dst), _undirected(test.src, test.dst)
    assert (
        not (train_pairs & valid_pairs) and not (train_pairs & test_pairs) and not (valid_pairs & test_pairs)
    )
    assert len(rel) + len(valid) + len(test) == len(full)  # every row in exactly one part
    n_pairs = len(_undirected(full.src, full.dst))
    assert len(valid_pairs) + len(test_pairs) == round(0.2 * n_pairs)
    assert abs(len(valid_pairs) - len(test_pairs)) <= 1  # half validation, half test

    for name in plain.labels:
        tr = set(on.labels[name].entity.tolist())
        va, te = set(held.valid[name].entity.tolist()), set(held.test[name].entity.tolist())
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == set(plain.labels[name].entity.tolist())
        assert abs(len(va) - len(te)) <= 1 and len(va) > 0

    # no graph an encoder builds holds a held-out edge or label
    graph = build_graph(on)
    s, d = (t.numpy() for t in graph.edges(etype=("user", "friends", "user")))
    assert _undirected(s, d) == train_pairs
    info = dataset_info(on)
    assert info["aux_holdout"]["friends"] == {"valid": len(valid), "test": len(test)}
    assert "aux_holdout" not in dataset_info(plain)


def test_holdout_depends_on_the_split_seed(cache) -> None:
    a = aux_holdout_of(load_dataset("synthetic", loader_args=SYN, aux_holdout=0.2, split_seed=0))
    b = aux_holdout_of(load_dataset("synthetic", loader_args=SYN, aux_holdout=0.2, split_seed=1))
    assert a is not None and b is not None
    assert not np.array_equal(a.valid["friends"].src, b.valid["friends"].src)


def test_fingerprint_and_cache_key_change_only_when_on(cache) -> None:
    plain = load_dataset("synthetic", loader_args=SYN)
    for off in (None, 0, 0.0):
        same = load_dataset("synthetic", loader_args=SYN, aux_holdout=off)
        assert same.fingerprint == plain.fingerprint and "aux_holdout" not in same.params
    on = load_dataset("synthetic", loader_args=SYN, aux_holdout=0.1)
    other = load_dataset("synthetic", loader_args=SYN, aux_holdout=0.2)
    assert len({plain.fingerprint, on.fingerprint, other.fingerprint}) == 3
    assert on.params["aux_holdout"] == 0.1
    entries = sorted(p.name for p in (cache / "preprocessed").iterdir())
    assert len(entries) == 3  # one cache entry each: off, 0.1, 0.2

    def ident(value):
        cfg = load_config(overrides=["data.name=synthetic", f"data.loader_args={json.dumps(SYN)}"])
        return identity_for_config(cfg.data.model_copy(update={"aux_holdout": value}))

    assert ident(None).fingerprint == ident(0).fingerprint == plain.fingerprint
    assert ident(None).cache_key == ident(0.0).cache_key
    assert ident(0.1).fingerprint == on.fingerprint and ident(0.1).cache_key != ident(None).cache_key


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5", ".nan"])
def test_bad_values_name_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.aux_holdout"):
        load_config(overrides=["data.name=synthetic", f"data.aux_holdout={value}"])


def test_bad_values_name_the_setting_when_loading(cache) -> None:
    for value in (-0.5, 1.0):
        with pytest.raises(ValueError, match=r"data\.aux_holdout"):
            load_dataset("synthetic", loader_args=SYN, aux_holdout=value)


# ------------------------------------------------------------------------------- the metrics


def test_link_metrics_by_hand() -> None:
    pos = torch.tensor([5.0, 5.0])
    neg = torch.tensor([[7.0, 5.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    m = link_metrics(pos, neg, k=2)
    # edge 0: one above, one tied, two below: AUC (2 + 0.5) / 4; rank 2 or 3 at random: hit@2 1/2
    assert m["auc"].tolist() == [0.625, 1.0]
    assert m["hit@2"].tolist() == [0.5, 1.0]
    worst = link_metrics(torch.tensor([0.0]), torch.ones(1, 100))
    assert float(worst["auc"]) == 0.0 and float(worst["hit@10"]) == 0.0
    const = link_metrics(torch.zeros(3), torch.zeros(3, 100))
    assert torch.allclose(const["auc"], torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(const["hit@10"], torch.full((3,), 10 / 101, dtype=torch.float64))


def test_label_metrics_by_hand() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert label_metric(logits, torch.tensor([0, 1, 0, 0]), multi=False) == {"accuracy": 0.75}
    multi_logits = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # predicted {0}, {0, 1}; true {0}, {1}: tp 2, fp 1, fn 0 -> 2*2 / (2*2 + 1)
    assert label_metric(multi_logits, target, multi=True) == {"micro_f1": pytest.approx(0.8)}


def test_negatives_are_never_edges_nor_the_anchor() -> None:
    n = 30
    rng = np.random.default_rng(0)
    src, dst = rng.integers(n, size=200), rng.integers(n, size=200)
    keys = np.unique(np.concatenate([src * n + dst, dst * n + src]))
    anchors = np.arange(n)
    neg = sample_non_edges(anchors, n, keys, np.random.default_rng(1))
    assert neg.shape == (n, N_NEGATIVES)
    assert not np.isin(anchors[:, None] * n + neg, keys).any()
    assert not (neg == anchors[:, None]).any()
    assert np.array_equal(neg, sample_non_edges(anchors, n, keys, np.random.default_rng(1)))



def test_a_model_that_ranks_held_out_links_first_scores_one_and_a_constant_one_half(cache) -> None:
    ds = load_dataset("synthetic", loader_args=SYN, aux_holdout=0.3)
    held = aux_holdout_of(ds)
    assert held is not None
    friends, cats = ds.relations["friends"], ds.labels["category"]
    n_labels = cats.num_labels
    social = SocialTask("social:friends", friends.src, friends.dst, ds.num_users, None, True)
    label = LabelTask("item_label:category", cats, n_labels, None)
    evaluator = AuxiliaryEvaluator.build(ds, [social, label], ["friends", "category"], trains_auxiliary=True)
    assert evaluator is not None
    # users: c I + A over the held-out links A, so a held-out pair scores >= 2c and any other
    # pair at most the number of held-out neighbours shared (< c)
    n_u, c = ds.num_users, 100.0
    adj = torch.zeros(n_u, n_u)
    for split in (held.valid, held.test):
        rel = split["friends"]
        adj[torch.as_tensor(rel.src), torch.as_tensor(rel.dst)] = 1.0
        adj[torch.as_tensor(rel.dst), torch.as_tensor(rel.src)] = 1.0
    users = c * torch.eye(n_u) + adj
    # items: one-hot of their category (held out or not), read by an identity head
    items = torch.zeros(ds.num_items, n_labels)
    for part in (cats, held.valid["category"], held.test["category"]):
        items[torch.as_tensor(part.entity), torch.as_tensor(part.label)] = 1.0
    with torch.no_grad():
        label.head.weight.copy_(torch.eye(n_labels))
        label.head.bias.zero_()
    model = Model(FixedEncoder(users, items), [social, label])
    for which in ("valid", "test"):
        m = evaluator.evaluate(model, which)
        assert m["social:friends"] == {"auc": 1.0, "hit@10": 1.0}
        assert m["item_label:category"] == {"accuracy": 1.0}
    zeros = FixedEncoder(torch.zeros(n_u, n_labels), torch.zeros(ds.num_items, n_labels))
    constant = Model(zeros, [social, label])
    with torch.no_grad():
        label.head.weight.zero_()
    m = evaluator.evaluate(constant, "test")
    assert m["social:friends"]["auc"] == pytest.approx(0.5)
    assert m["social:friends"]["hit@10"] == pytest.approx(10 / 101)
    # a constant head predicts label 0: accuracy is the share of held-out items in category 0
    share = float(np.mean(held.test["category"].label == 0))
    assert m["item_label:category"]["accuracy"] == pytest.approx(share)
    assert (
        AuxiliaryEvaluator.build(ds, [social, label], ["friends", "category"], False).evaluate(model, "test")
        == {}
    )  # a method that trains no auxiliary head reports nothing


# ------------------------------------------------------------------------------- training


def _run(
    tmp_path: Path, name: str, method: str, holdout: float | None, epochs: int = 2, pause: int | None = None
) -> Path:
    cfg = notebook_config(
        dataset="synthetic",
        method=method,
        epochs=epochs,
        dim=16,
        loader_args=SYN,
        tasks=["social:friends", "item_label:category"],
        overrides={"data": {"aux_holdout": holdout}, "progress": "none"},
    )
    out = tmp_path / name
    train(cfg, out, max_epochs_this_call=pause)
    return out


def _read(out: Path) -> tuple[dict, list[dict]]:
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "history.json").read_text())


def test_a_training_run_writes_the_auxiliary_metrics_deterministically(cache, tmp_path) -> None:
    a_metrics, a_hist = _read(_run(tmp_path, "a", "ew", 0.2))
    b_metrics, b_hist = _read(_run(tmp_path, "b", "ew", 0.2))
    aux = a_metrics["aux"]
    assert set(aux) == {"valid", "test"}
    for which in ("valid", "test"):
        assert set(aux[which]) == {"social:friends", "item_label:category"}
        assert set(aux[which]["social:friends"]) == {"auc", "hit@10"}
        assert set(aux[which]["item_label:category"]) == {"accuracy"}
        assert all(0.0 <= v <= 1.0 for m in aux[which].values() for v in m.values())
    for record in a_hist:
        assert {"valid_aux/social:friends/auc", "valid_aux/social:friends/hit@10"} <= set(record)
        assert "valid_aux/item_label:category/accuracy" in record
    best = next(r for r in a_hist if r["epoch"] == a_metrics["best_epoch"])
    assert best["valid_aux/social:friends/auc"] == aux["valid"]["social:friends"]["auc"]
    assert a_metrics["aux"] == b_metrics["aux"] and a_metrics["test"] == b_metrics["test"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a_hist]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b_hist]

    single, single_hist = _read(_run(tmp_path, "single", "single-task", 0.2))
    assert single["aux"] == {"valid": {}, "test": {}}  # single-task trains no auxiliary head
    assert not any(k.startswith("valid_aux/") for r in single_hist for k in r)
    off, off_hist = _read(_run(tmp_path, "off", "ew", None))
    assert "aux" not in off and not any(k.startswith("valid_aux/") for r in off_hist for k in r)


def test_grid_tables_carry_a_column_per_task_and_metric(cache, tmp_path) -> None:
    from pmtrec_lab.compare import GridSpec, run_grid, summarize
    from pmtrec_lab.compare.layout import collect

    base = {
        "data": {"loader_args": SYN, "aux_holdout": 0.2},
        "encoder": {"name": "mf", "dim": 16},
        "optim": {"epochs": 2, "batch_size": 512},
        "progress": "none",
    }
    spec = GridSpec(
        datasets=["synthetic"], methods=["ew", "single-task", "pcgrad"], seeds=[0], lrs=[0.01], base=base
    )
    run_grid(spec, tmp_path / "grid")
    runs = collect(tmp_path / "grid", spec).set_index("method")
    summary = summarize(tmp_path / "grid", spec)["summary"].set_index("method")
    assert (
        "aux/social:friends/auc" in summary.columns and "aux/item_label:category/accuracy" in summary.columns
    )
    col = "test_aux/social:friends/hit@10"
    assert summary.loc["ew", "aux/social:friends/hit@10"] == pytest.approx(runs.loc["ew", col])
    assert np.isnan(summary.loc["single-task", "aux/social:friends/auc"])  # no head trained: nothing
    # each metric's change against EW, right after it
    cols = list(summary.columns)
    assert cols[cols.index("aux/social:friends/auc") + 1] == "aux/social:friends/auc/vs_ew"
    auc = runs["test_aux/social:friends/auc"]
    assert summary.loc["pcgrad", "aux/social:friends/auc/vs_ew"] == pytest.approx(auc["pcgrad"] - auc["ew"])
    assert summary.loc["ew", "aux/social:friends/auc/vs_ew"] == 0.0
    assert np.isnan(summary.loc["single-task", "aux/social:friends/auc/vs_ew"])
    # summary.md: a table per dataset, x100 with the change against EW, "-" where no head trained
    text = (tmp_path / "grid" / "summary.md").read_text()
    assert "### Auxiliary tasks (test, mean over seeds, x100; in brackets: the change against EW)" in text
    header = next(line for line in text.splitlines() if line.startswith("| method | ") and "auc" in line)
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    col = names.index("social:friends/auc")
    pc_cell = rows["pcgrad"].strip("|").split("|")[1 + col].strip()
    pc, ew_auc = summary.loc["pcgrad", "aux/social:friends/auc"], summary.loc["ew", "aux/social:friends/auc"]
    assert pc_cell == f"{100 * pc:.2f} ({100 * (pc - ew_auc):+.2f})"
    assert rows["single-task"].strip("|").split("|")[1 + col].strip() == "-"
    for path in (tmp_path / "grid").rglob("metrics.json"):  # runs without the setting: no columns
        metrics = json.loads(path.read_text())
        metrics.pop("aux", None)
        path.write_text(json.dumps(metrics))
    assert not any(c.startswith("aux/") for c in summarize(tmp_path / "grid", spec)["summary"].columns)
    assert "### Auxiliary tasks" not in (tmp_path / "grid" / "summary.md").read_text()


def test_a_paused_run_resumes_to_the_same_auxiliary_metrics(cache, tmp_path) -> None:
    whole_metrics, whole_hist = _read(_run(tmp_path, "whole", "ew", 0.2, epochs=3))
    _run(tmp_path, "paused", "ew", 0.2, epochs=3, pause=1)
    resumed_metrics, resumed_hist = _read(_run(tmp_path, "paused", "ew", 0.2, epochs=3))
    assert resumed_metrics["aux"] == whole_metrics["aux"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed_hist]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole_hist]
