"""The ``atomic`` loader (RecBole atomic files, tasks declared in configuration), ml-100k on top of
it, ``datasets export`` and ``datasets info``'s task table.

Fixtures are written here in the real format: tab-separated, typed ``name:type`` headers,
``token_seq`` fields, optional files left out, numeric and non-numeric tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pmtrec_lab.cli import main as cli_main
from pmtrec_lab.config import load_config
from pmtrec_lab.data import load_dataset
from pmtrec_lab.data.export import export_dataset
from pmtrec_lab.data.loading import build_rec_dataset, dataset_info
from pmtrec_lab.data.sources import atomic, ml100k
from pmtrec_lab.data.types import RecDataset
from pmtrec_lab.errors import ConfigError, DataFormatError, MissingDataError, PmtrecError
from pmtrec_lab.reports.defaults import notebook_config
from pmtrec_lab.tasks import build_tasks, resolve_task_configs
from tests.ml100k_legacy import legacy_load_raw
from tests.test_hardening_data import SMALL_SYNTHETIC, write_ml100k

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    """Write ``<folder>/<folder name>.<suffix>`` for each ``suffix: text`` (other names as given)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = folder / (name if "." in name else f"{folder.name}.{name}")
        target.write_text(text, encoding="utf-8")
    return folder


def dense_inter(users: list[str], items: list[str]) -> str:
    """Every user rates every item (survives any k-core up to the smaller side), in file order."""
    rows = [
        f"{u}\t{i}\t{1 + (n % 5)}\t{1000 + n}"
        for n, (u, i) in enumerate((u, i) for u in users for i in items)
    ]
    return INTER + "\n".join(rows) + "\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("PMTREC_CACHE_DIR", str(path))
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A small shop: items with genres (``token_seq``) and a brand (``token``), users with an age
    (numeric tokens) and a city, a trust network, a knowledge graph; ids non-numeric for users."""
    users = ["ann", "bob", "cid", "dee", "eve", "fay"]
    items = ["2", "10", "1", "33", "4"]
    item = (
        "item_id:token\tgenre:token_seq\tbrand:token\tprice:float\n"
        "1\trock pop\tacme\t3.5\n2\tpop\tacme\t1\n10\tjazz rock rock\tzeta\t\n33\t\tzeta\t7\n"
        "4\tpop jazz\tacme\t2\n99\tpop\tghost\t1\n"  # item 99 is in no interaction
    )
    user = (
        "user_id:token\tage:token\tcity:token\n"
        "ann\t17\tparis\nbob\t25\tlyon\ncid\t33\tparis\ndee\t61\tnice\neve\t18\tparis\nfay\t\tlyon\n"
    )
    net = "source_id:token\ttarget_id:token\nann\tbob\nbob\tcid\ncid\tann\ndee\tdee\nzed\tann\n"
    kg = (
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "e1\tdirected_by\tp1\ne2\tdirected_by\tp1\ne10\tstars\tp2\ne33\tstars\tp2\ne4\tstars\tp2\n"
        "e1\tgenre\tg\ne2\tgenre\tg\ne10\tgenre\tg\n"
    )
    link = "item_id:token\tentity_id:token\n1\te1\n2\te2\n10\te10\n33\te33\n4\te4\n77\te77\n"
    return write(
        tmp_path / "shop",
        {"inter": dense_inter(users, items), "item": item, "user": user, "net": net, "kg": kg, "link": link},
    )


SHOP_TASKS: list[dict[str, Any]] = [
    {"type": "item_label", "field": "genre"},
    {"type": "item_label", "field": "brand"},
    {"type": "user_label", "name": "age", "field": "age", "bins": [18, 30, 60]},
    {"type": "social", "name": "trust", "symmetric": True},
    {"type": "item_item", "relations": ["directed_by", "stars"], "max_degree": 2},
]


def _load(folder: Path, **kw: Any) -> RecDataset:
    return load_dataset("atomic", path=str(folder), use_cache=False, k_core=kw.pop("k_core", 1), **kw)


# ============================================================ reading the format


def test_typed_headers_token_seq_and_tokens_read_as_declared(shop: Path) -> None:
    raw = atomic.load_raw(shop, fields={}, tasks=SHOP_TASKS)
    # user tokens are not numbers: ids in text order, tokens kept; item tokens are: their values
    assert raw.extra["user_tokens"].tolist() == ["ann", "bob", "cid", "dee", "eve", "fay"]
    assert "item_tokens" not in raw.extra and raw.items[:5].tolist() == [2, 10, 1, 33, 4]
    assert raw.ratings is not None and raw.ratings[:3].tolist() == [1.0, 2.0, 3.0]
    genre = raw.labels["genre"]
    assert genre.multi and genre.names == ["jazz", "pop", "rock"]
    pairs = sorted(zip(genre.entity.tolist(), [genre.names[i] for i in genre.label]))
    # token_seq rows as given (the repeated "rock" of item 10 kept), item 33's empty field: none,
    # item 99 (in no interaction) dropped
    assert pairs == [
        (1, "pop"),
        (1, "rock"),
        (2, "pop"),
        (4, "jazz"),
        (4, "pop"),
        (10, "jazz"),
        (10, "rock"),
        (10, "rock"),
    ]
    brand = raw.labels["brand"]
    assert not brand.multi and brand.names == ["acme", "ghost", "zeta"]  # ghost: vocabulary as given
    age = raw.labels["age"]
    assert age.names == ["<18", "[18,30)", "[30,60)", ">=60"]
    # ann 17 -> <18, bob 25, eve 18 (an edge belongs to the band above), cid 33, dee 61; fay empty
    assert dict(zip(age.entity.tolist(), age.label.tolist())) == {0: 0, 1: 1, 2: 2, 3: 3, 4: 1}
    assert raw.extra["unmatched"] == {"shop.item": 1, "shop.user": 0, "shop.net": 1, "shop.link": 1}


def test_missing_optional_files_and_fields_are_not_needed(tmp_path: Path) -> None:
    inter = "user_id:token\titem_id:token\n" + "".join(
        f"{u}\t{i}\n" for u in range(1, 5) for i in range(1, 4)
    )
    folder = write(tmp_path / "bare", {"inter": inter})
    ds = _load(folder)
    assert ds.num_users == 4 and ds.num_items == 3 and ds.relations == {} and ds.labels == {}
    assert dataset_info(ds)["tasks"] == []  # nothing offered: no .user, .item, .net, .kg
    with pytest.raises(MissingDataError, match=r"bare\.net"):
        _load(folder, tasks=[{"type": "social"}])


def test_integer_tokens_are_ordered_numerically(tmp_path: Path) -> None:
    users = ["10", "2", "1", "33"]
    folder = write(tmp_path / "nums", {"inter": dense_inter(users, ["9", "100", "11"])})
    ds = _load(folder)
    assert ds.user_ids.tolist() == [1, 2, 10, 33] and ds.item_ids.tolist() == [9, 11, 100]
    # non-canonical integers ("007" is not "7") keep their own tokens, still in numeric order
    folder = write(tmp_path / "zeros", {"inter": dense_inter(["007", "7", "10", "08"], ["a", "b", "c"])})
    ds = _load(folder)
    tokens = ds.extra["user_tokens"][ds.user_ids]
    assert tokens.tolist() == ["007", "7", "08", "10"] and ds.extra["item_tokens"].tolist() == ["a", "b", "c"]


def test_label_options_top_k_single_label_and_bins(tmp_path: Path) -> None:
    items = ["1", "2", "3", "4"]
    item = (
        "item_id:token\ttags:token_seq\tscore:float_seq\n"
        "1\tb a a c\t1 5\n2\tb b a\t9\n3\tc c b b\t5 5\n4\td\t0.5\n"
    )
    folder = write(tmp_path / "labels", {"inter": dense_inter(["u1", "u2", "u3"], items), "item": item})
    tasks = [
        {"type": "item_label", "name": "top", "field": "tags", "top_k": 2},
        {"type": "item_label", "name": "main", "field": "tags", "single_label": True},
        {"type": "item_label", "name": "main2", "field": "tags", "single_label": True, "top_k": 1},
        {
            "type": "item_label",
            "name": "band",
            "field": "score",
            "bins": [2, 6],
            "bin_names": ["lo", "mid", "hi"],
        },
    ]
    ds = _load(folder, tasks=tasks)
    top = ds.labels["top"]  # a, b (3 items each) beat c (2) and d (1)
    assert top.multi and top.names == ["a", "b"] and len(top) == 5
    main = ds.labels["main"]  # most frequent per item, ties (item 1: a twice; item 3: b/c) to lower id
    assert not main.multi and [main.names[i] for i in main.label] == ["a", "b", "b", "d"]
    main2 = ds.labels["main2"]  # top_k on a single-label set: items whose label is not kept lose it
    assert main2.names == ["b"] and main2.entity.tolist() == [1, 2]
    band = ds.labels["band"]
    assert band.multi and band.names == ["lo", "mid", "hi"]
    assert sorted(zip(band.entity.tolist(), band.label.tolist())) == [(0, 0), (0, 1), (1, 2), (2, 1), (3, 0)]


def test_social_from_net_symmetric_or_directed(shop: Path) -> None:
    directed = _load(shop, tasks=[{"type": "social", "name": "trust"}]).relations["trust"]
    pairs = set(zip(directed.src.tolist(), directed.dst.tolist()))
    assert pairs == {(0, 1), (1, 2), (2, 0)}  # self-loop dee-dee and the unknown zed dropped
    both = _load(shop, tasks=[{"type": "social", "name": "trust", "symmetric": True}]).relations["trust"]
    assert set(zip(both.src.tolist(), both.dst.tolist())) == pairs | {(b, a) for a, b in pairs}


def test_item_item_relation_filter_and_degree_cap(shop: Path) -> None:
    def kg(**decl: Any) -> set[tuple[int, int]]:
        rel = _load(shop, tasks=[{"type": "item_item", **decl}]).relations["kg"]
        ids = _load(shop).item_ids  # processed id -> raw id (the item's value)
        return {(int(ids[a]), int(ids[b])) for a, b in zip(rel.src, rel.dst)}

    # p2 links 3 items (10, 33, 4), above the cap of 2: only p1 (items 1, 2) counts
    assert kg(relations=["directed_by", "stars"], max_degree=2) == {(1, 2), (2, 1)}
    star = {(a, b) for a in (4, 10, 33) for b in (4, 10, 33) if a != b}
    assert kg(relations=["stars"], max_degree=None) == star
    assert kg(relations=None, max_degree=None) == star | {
        (a, b) for a in (1, 2, 10) for b in (1, 2, 10) if a != b
    }


def test_files_offer_tasks_off_by_default_and_declarations_win(shop: Path) -> None:
    ds = _load(shop)
    table = {row["name"]: row for row in dataset_info(ds)["tasks"]}
    assert set(table) == {
        "item_label:genre",
        "item_label:brand",
        "user_label:age",
        "user_label:city",
        "social:net",
        "item_item:kg",
    }
    assert table["item_label:genre"]["loss"] == "bce" and table["item_label:brand"]["loss"] == "softmax"
    cfg = load_config(overrides=["data.name=atomic", f"data.path={shop}"])
    assert [t.resolved_name() for t in resolve_task_configs(cfg)] == ["rec"]  # offered tasks are off
    (shop / "pmtrec.yaml").write_text(json.dumps({"tasks": SHOP_TASKS[:2], "k_core": 1}))
    cfg = load_config(overrides=["data.name=atomic", f"data.path={shop}"])
    assert [t.resolved_name() for t in resolve_task_configs(cfg)] == [
        "rec",
        "item_label:genre",
        "item_label:brand",
    ]
    cfg = load_config(
        overrides=["data.name=atomic", f"data.path={shop}", "data.tasks=[{type: social, name: trust}]"]
    )
    assert [t.resolved_name() for t in resolve_task_configs(cfg)] == ["rec", "social:trust"]
    tasks = build_tasks(cfg, _load(shop, tasks=cfg.data.tasks), out_dim=8)
    assert [t.name for t in tasks] == ["rec", "social:trust"]


def test_relative_path_is_under_the_data_directory(shop: Path, cache: Path) -> None:
    ds = load_dataset("atomic", shop.parent, path="shop", k_core=1)
    assert ds.name == "shop" and ds.num_users == 6
    cfg = notebook_config(dataset="atomic", data_path="shop", data_dir=str(shop.parent))
    assert cfg.data.path == "shop" and cfg.data.folder() == shop


def test_rating_field_names_follow_the_settings(tmp_path: Path) -> None:
    inter = "uid:token\tiid:token\tscore:float\n" + "".join(
        f"u{u}\ti{i}\t{u + i}\n" for u in range(3) for i in range(3)
    )
    folder = write(tmp_path / "named", {"inter": inter})
    raw = atomic.load_raw(folder, fields={"user": "uid", "item": "iid", "rating": "score"}, tasks=[])
    assert raw.ratings is not None and raw.ratings.tolist()[:3] == [0.0, 1.0, 2.0]
    raw = atomic.load_raw(folder, fields={"user": "uid", "item": "iid"}, tasks=[])
    assert raw.ratings is None and "timestamps" not in raw.extra  # default names absent: none


# ================================================================ errors, by family


HEADER_FAULTS = {
    "no type": ("user_id\titem_id:token\n1\t2\n", "has no type"),
    "unknown type": ("user_id:token\titem_id:int\n1\t2\n", "unknown type 'int'"),
    "empty name": ("user_id:token\t:token\n1\t2\n", "empty name"),
    "repeated name": ("user_id:token\tuser_id:float\n1\t2\n", "twice"),
}


@pytest.mark.parametrize("case", list(HEADER_FAULTS))
def test_header_faults_name_file_and_line(case: str, tmp_path: Path) -> None:
    text, expected = HEADER_FAULTS[case]
    folder = write(tmp_path / "bad", {"inter": text})
    with pytest.raises(DataFormatError) as info:
        _load(folder)
    assert info.value.path.name == "bad.inter" and info.value.line == 1
    assert expected in str(info.value)


MISSING_FIELDS = {  # (fields, tasks, file, field named)
    "fields.user": ({"user": "uid"}, [], "shop.inter", "'uid'"),
    "fields.rating under another name": ({"rating": "stars"}, [], "shop.inter", "'stars'"),
    "label field": ({}, [{"type": "item_label", "field": "colour"}], "shop.item", "'colour'"),
    "net source_id": ({}, [{"type": "social", "source_id": "from"}], "shop.net", "'from'"),
    "kg relation field": ({}, [{"type": "item_item", "relation_id": "rel"}], "shop.kg", "'rel'"),
}


@pytest.mark.parametrize("case", list(MISSING_FIELDS))
def test_configured_field_the_file_lacks(case: str, shop: Path) -> None:
    fields, tasks, file, named = MISSING_FIELDS[case]
    with pytest.raises(DataFormatError) as info:
        _load(shop, fields=fields, tasks=tasks)
    assert info.value.path.name == file and named in str(info.value) and "header" in str(info.value)


ROW_FAULTS = {  # (file, broken text, line)
    "inter, too many fields": ("inter", INTER + "a\t1\t5\t1\na\t2\t4\t2\t9\n", 3),
    "inter, too few fields": ("inter", INTER + "a\t1\t5\t1\n\na\t2\t4\n", 4),
    "item, missing tab": ("item", "item_id:token\tgenre:token_seq\n2\tpop\n10 rock\n", 3),
    "net, extra field": ("net", "source_id:token\ttarget_id:token\nann\tbob\nbob\tcid\tann\n", 3),
}


@pytest.mark.parametrize("case", list(ROW_FAULTS))
def test_row_with_wrong_field_count_names_file_and_line(case: str, shop: Path) -> None:
    suffix, text, line = ROW_FAULTS[case]
    (shop / f"shop.{suffix}").write_text(text)
    with pytest.raises(DataFormatError) as info:
        _load(shop, tasks=[{"type": "item_label", "field": "genre"}, {"type": "social"}])
    assert info.value.path.name == f"shop.{suffix}" and info.value.line == line
    assert "tab-separated fields" in str(info.value) and "got" in str(info.value)


VALUE_FAULTS = {  # (file, text, task, line, words)
    "rating not a number": ("inter", INTER + "a\t1\t5\t1\na\t2\tgood\t2\n", None, 3, "'good'"),
    "age band of a word": (
        "user",
        "user_id:token\tage:token\nann\t20\nbob\told\n",
        {"type": "user_label", "field": "age", "bins": [18]},
        3,
        "'old'",
    ),
    "none of the ids match": (
        "net",
        "source_id:token\ttarget_id:token\nx1\tx2\nx3\tx1\n",
        {"type": "social"},
        None,
        "none of the 3",
    ),
}


@pytest.mark.parametrize("case", list(VALUE_FAULTS))
def test_bad_values_name_file_line_and_value(case: str, shop: Path) -> None:
    suffix, text, task, line, words = VALUE_FAULTS[case]
    (shop / f"shop.{suffix}").write_text(text)
    with pytest.raises(DataFormatError) as info:
        _load(shop, tasks=[task] if task else [])
    assert info.value.path.name == f"shop.{suffix}" and info.value.line == line and words in str(info.value)


DECLARATION_FAULTS = {
    "label without field": ("data.tasks=[{type: item_label}]", "needs field"),
    "option of another type": ("data.tasks=[{type: social, top_k: 3}]", "top_k"),
    "bins not increasing": (
        "data.tasks=[{type: user_label, field: age, bins: [30, 18]}]",
        "strictly increasing",
    ),
    "bin_names count": (
        "data.tasks=[{type: user_label, field: age, bins: [18], bin_names: [a]}]",
        "2 distinct",
    ),
    "two tasks, one name": (
        "data.tasks=[{type: item_label, field: genre}, {type: user_label, field: genre}]",
        "share the name",
    ),
    "reserved name": ("data.tasks=[{type: social, name: interacts}]", "interacts"),
}


@pytest.mark.parametrize("case", list(DECLARATION_FAULTS))
def test_bad_declarations_are_config_errors(case: str, shop: Path) -> None:
    override, words = DECLARATION_FAULTS[case]
    with pytest.raises(ConfigError, match=words):
        load_config(overrides=["data.name=atomic", f"data.path={shop}", override])


def test_float_label_needs_bins_and_unknown_relations_are_named(shop: Path) -> None:
    with pytest.raises(ConfigError, match="give bins"):
        _load(shop, tasks=[{"type": "item_label", "field": "price"}])
    with pytest.raises(ConfigError, match="none of the relations"):
        _load(shop, tasks=[{"type": "item_item", "relations": ["film.film.actor"]}])
    with pytest.raises(ConfigError, match="only for folder datasets"):
        load_config(overrides=["data.path=somewhere"])
    with pytest.raises(ConfigError, match="tasks.include"):
        load_config(overrides=["data.name=atomic", f"data.path={shop}", "tasks.include=[social:trust]"])


# =============================================================== cache and info


def test_cache_key_follows_files_fields_and_tasks(shop: Path, cache: Path) -> None:
    base = load_dataset("atomic", path=str(shop), tasks=SHOP_TASKS[:1], k_core=1)
    again = load_dataset("atomic", path=str(shop), tasks=SHOP_TASKS[:1], k_core=1)
    assert again.fingerprint == base.fingerprint and len(list((cache / "preprocessed").iterdir())) == 1
    other_task = load_dataset("atomic", path=str(shop), tasks=SHOP_TASKS[:2], k_core=1)
    other_option = load_dataset("atomic", path=str(shop), tasks=[{**SHOP_TASKS[0], "top_k": 1}], k_core=1)
    (shop / "shop.item").write_text((shop / "shop.item").read_text() + "5\tpop\tacme\t1\n")
    other_file = load_dataset("atomic", path=str(shop), tasks=SHOP_TASKS[:1], k_core=1)
    keys = {base.fingerprint, other_task.fingerprint, other_option.fingerprint, other_file.fingerprint}
    assert len(keys) == 4
    assert not list(cache.rglob("*.pkl"))


def test_datasets_info_lists_tasks_as_a_table(shop: Path, cache: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["datasets", "info", "atomic", "--path", str(shop), "--k-core", "1"]
    decl = json.dumps(SHOP_TASKS)
    assert cli_main([*args, "--json", "--set", f"tasks={decl}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [set(r) for r in info["tasks"]] == [{"name", "type", "source", "loss", "rows"}] * 5
    rows = {r["name"]: (r["loss"], r["rows"]) for r in info["tasks"]}
    assert rows == {
        "item_label:genre": ("bce", 7),  # 8 rows less item 10's repeated rock
        "item_label:brand": ("softmax", 5),
        "user_label:age": ("softmax", 5),
        "social:trust": ("bpr", 6),
        "item_item:kg": ("bpr", 2),
    }
    assert info["unmatched"] == {"shop.item": 1, "shop.user": 0, "shop.net": 1, "shop.link": 1}
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "none declared" in text and "off by default" in text and "user_label:city" in text


# ====================================================================== ml-100k


def _assert_same_processed(a: RecDataset, b: RecDataset) -> None:
    for name in ("user_ids", "item_ids", "interactions"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for part in ("train", "valid", "test"):
        assert np.array_equal(getattr(a.split, part), getattr(b.split, part)), part
    assert list(a.relations) == list(b.relations) and list(a.labels) == list(b.labels)
    for name, rel in a.relations.items():
        assert np.array_equal(rel.src, b.relations[name].src) and np.array_equal(
            rel.dst, b.relations[name].dst
        )
    for name, lab in a.labels.items():
        other = b.labels[name]
        assert np.array_equal(lab.entity, other.entity) and np.array_equal(lab.label, other.label), name
        assert lab.multi == other.multi and lab.num_labels == other.num_labels
    assert a.processed_counts() == b.processed_counts()


def test_ml100k_fixture_equals_the_previous_loader(tmp_path: Path) -> None:
    root = write_ml100k(tmp_path / "ml-100k", users=12, items=9)
    old, new = legacy_load_raw(root), ml100k.load_raw(root)
    assert new.raw_counts == old.raw_counts
    _assert_same_processed(build_rec_dataset(old, 5, None, 0), build_rec_dataset(new, 5, None, 0))
    assert len(new.item_relations["kg"][0]) > 0  # the fixture does exercise the KG rule


@pytest.mark.realdata
def test_ml100k_release_equals_the_previous_loader() -> None:
    try:
        folder = ml100k.ensure_ml100k()
    except MissingDataError as exc:
        import os

        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            raise
        pytest.skip(f"ml-100k not available: {exc}")
    old, new = legacy_load_raw(folder), ml100k.load_raw(folder)
    assert new.raw_counts == old.raw_counts
    for key in ("kg_item_pairs", "kg_items", "kg_relations", "kg_max_entity_films"):
        assert new.extra[key] == old.extra[key], key
    a, b = build_rec_dataset(old, 5, None, 0), build_rec_dataset(new, 5, None, 0)
    _assert_same_processed(a, b)
    assert (b.num_users, b.num_items, len(b.interactions), len(b.relations["kg"])) == (
        943,
        1349,
        99287,
        55006,
    )


# ======================================================================= export


def test_export_synthetic_round_trip(tmp_path: Path, cache: Path) -> None:
    out = export_dataset("synthetic", tmp_path / "syn", loader_args=SMALL_SYNTHETIC)
    # friends -> .net, category -> .item, community (off by default) -> .user
    assert sorted(p.name for p in out.iterdir()) == [
        "pmtrec.yaml",
        "syn.inter",
        "syn.item",
        "syn.net",
        "syn.user",
    ]
    built = load_dataset("synthetic", loader_args=SMALL_SYNTHETIC, use_cache=False)
    back = load_dataset("atomic", path=str(out), use_cache=False)
    _assert_same_processed(built, back)
    assert dataset_info(back)["tasks"] == dataset_info(built)["tasks"]
    cfg = load_config(overrides=["data.name=atomic", f"data.path={out}"])
    assert [t.resolved_name() for t in resolve_task_configs(cfg)] == [
        "rec",
        "social:friends",
        "item_label:category",
    ]
    with pytest.raises(PmtrecError, match="not an empty folder"):
        export_dataset("synthetic", out)


def test_export_writes_groups_and_pairs_as_a_knowledge_graph(tmp_path: Path, cache: Path) -> None:
    from tests.test_hardening_data import write_amazon

    data = tmp_path / "data"
    write_amazon(data / "amazon")
    out = export_dataset("amazon", tmp_path / "amz", data_dir_=data)
    kg = (out / "amz.kg").read_text().splitlines()
    assert kg[0] == "head_id:token\trelation_id:token\ttail_id:token" and kg[1].startswith("item.")
    built = load_dataset("amazon", data, use_cache=False)
    back = load_dataset("atomic", path=str(out), use_cache=False)
    _assert_same_processed(built, back)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["lastfm", "amazon"])
def test_export_and_read_back_real_releases(
    name: str, shared_datasets: Path, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / f"{name}-atomic"
    assert (
        cli_main(
            [
                "datasets",
                "export",
                name,
                "--format",
                "atomic",
                "--out",
                str(out),
                "--data-dir",
                str(shared_datasets),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli_main(["datasets", "info", "atomic", "--path", str(out), "--json"]) == 0
    back_info = json.loads(capsys.readouterr().out)
    assert cli_main(["datasets", "info", name, "--data-dir", str(shared_datasets), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert back_info["processed"]["users"] == info["processed"]["users"]
    for key in ("users", "items", "interactions"):
        assert back_info["processed"][key] == info["processed"][key]
    assert {k: v for k, v in back_info["processed"].items() if k != "params"} == {
        k: v for k, v in info["processed"].items() if k != "params"
    }
    assert back_info["split"] == info["split"] and back_info["tasks"] == info["tasks"]
    _assert_same_processed(load_dataset(name, shared_datasets), load_dataset("atomic", path=str(out)))
    if name == "lastfm":
        assert back_info["unmatched"][f"{out.name}.item"] == 390  # tagged artists nobody listened to


# ======================================================================= report


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_report_runs_on_an_atomic_folder(tmp_path: Path, cache: Path) -> None:
    """``report --set dataset=atomic --set data_path=...``: notebook 01 trains on an exported
    folder found under ``data_dir`` and records the run's test metrics for that dataset."""
    data = tmp_path / "data"
    export_dataset("synthetic", data / "mine", loader_args=SMALL_SYNTHETIC)
    out = tmp_path / "out"
    sets = {
        "dataset": "atomic",
        "data_path": "mine",
        "data_dir": str(data),
        "k_core": "2",
        "dim": "8",
        "epochs": "2",
        "runs_dir": str(tmp_path / "runs"),
    }
    args = ["report", "--out", str(out), "--notebooks", "01"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert cli_main(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert [e["status"] for e in index["entries"]] == ["ok"]
    configs = list((tmp_path / "runs").rglob("config.yaml"))
    assert configs, "notebook 01 wrote no run"
    import yaml

    data_cfg = yaml.safe_load(configs[0].read_text())["data"]
    assert data_cfg["name"] == "atomic" and data_cfg["path"].endswith("mine")
