"""Raw release loaders: exact raw counts on the real releases, small generated Epinions/Yelp files,
the synthetic generator's planted structure, and clear errors on bad input."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pmtrec_lab.data.sources import amazon, ciao, filmtrust, lastfm, ml100k, synthetic, yelp
from pmtrec_lab.data.sources._io import co_membership_pairs, count_unique_pairs
from pmtrec_lab.errors import DataFormatError, MissingDataError
from tests.helpers import README_RAW

LOADERS = {
    "ciao": ciao.load_raw,
    "lastfm": lastfm.load_raw,
    "amazon": amazon.load_raw,
    "filmtrust": filmtrust.load_raw,
}


def _check_ids(raw) -> None:
    assert raw.users.dtype == np.int64 and raw.items.dtype == np.int64
    assert len(raw.users) == len(raw.items) == raw.raw_counts["rows"]
    for src, dst in [*raw.user_relations.values(), *raw.item_relations.values()]:
        assert src.dtype == np.int64 and dst.dtype == np.int64 and len(src) == len(dst)
    for lab in raw.labels.values():
        assert lab.entity.dtype == np.int64 and lab.label.dtype == np.int64
        assert len(lab.entity) == len(lab.label)
        # 0-based label ids, one name per id
        assert lab.label.min() >= 0 and lab.label.max() < len(lab.names)
        if lab.names[0] != "<18":  # ids encoded from the values used: contiguous (age bands are fixed)
            assert np.array_equal(np.unique(lab.label), np.arange(len(lab.names)))


# ---------------------------------------------------------------- real releases


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(README_RAW))
def test_real_raw_counts_match_readme(shared_datasets: Path, name: str) -> None:
    raw = LOADERS[name](shared_datasets / name)
    assert raw.raw_counts == README_RAW[name]
    _check_ids(raw)


@pytest.mark.realdata
def test_ciao_details(shared_datasets: Path) -> None:
    raw = ciao.load_raw(shared_datasets / "ciao")
    lab = raw.labels["category"]
    assert lab.side == "item" and not lab.multi and len(lab.entity) == raw.raw_counts["rows"]
    assert lab.names[:2] == ["DVDs", "Books"] and lab.names[-1] == "Finance"
    assert set(raw.user_relations) == {"trust"} and raw.ratings is not None
    assert int((raw.ratings == 0).sum()) == 34  # README: 34 rows with rating 0


@pytest.mark.realdata
def test_lastfm_details(shared_datasets: Path) -> None:
    raw = lastfm.load_raw(shared_datasets / "lastfm")
    tag = raw.labels["tag"]
    assert tag.multi and tag.top_k == 100 and tag.side == "item"
    assert len(tag.names) == 9749 and "metal" in tag.names
    assert raw.ratings is not None and raw.ratings.dtype == np.float64


@pytest.mark.realdata
def test_amazon_coview(shared_datasets: Path) -> None:
    raw = amazon.load_raw(shared_datasets / "amazon")
    src, dst = raw.item_relations["coview"]
    # README: the co-view source covers 1,435 items (items with a view row).
    assert raw.extra["view_items"] == 1435
    covered = np.unique(np.concatenate([src, dst]))
    assert covered.size == raw.extra["coview_items"] <= 1435
    assert covered.size == 1174  # items sharing a view node with another item
    assert not np.any(src == dst)
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((b, a) in pairs for a, b in pairs)  # both directions
    assert raw.labels["category"].multi and not raw.labels["brand"].multi
    assert len(raw.labels["brand"].names) == 334


@pytest.mark.realdata
def test_ml100k_from_pypi_wheel() -> None:
    try:
        raw = ml100k.load_raw(None)
    except MissingDataError as exc:  # offline machine: the loader says what it tried
        import os

        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            raise
        pytest.skip(f"ml-100k not available: {exc}")
    assert raw.raw_counts == {
        "users": 943,
        "items": 1682,
        "interactions": 100000,
        "rows": 100000,
        "genres": 19,
        "occupations": 21,
        "age_min": 7,
        "age_max": 73,
        "kg_triples": 91631,
        "links": 1598,
    }
    _check_ids(raw)
    assert "unknown" in raw.labels["genre"].names and raw.labels["genre"].multi
    assert raw.labels["age"].names == ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    assert 38_000 <= raw.extra["kg_item_pairs"] <= 46_000
    src, dst = raw.item_relations["kg"]
    assert len(src) == 2 * raw.extra["kg_item_pairs"] and not np.any(src == dst)
    assert raw.extra["kg_relations"] == list(ml100k.KG_RELATIONS)


# ---------------------------------------------------------------- ml-100k fetching (offline)


def test_ml100k_download_failure_says_what_was_tried(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        ml100k, "_pip_download_command", lambda dest: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    target = tmp_path / "cache" / "ml-100k"
    with pytest.raises(MissingDataError) as info:
        ml100k.ensure_ml100k(target)
    msg = str(info.value)
    assert "exit 3" in msg and "recbole-1.2.1-py3-none-any.whl" in msg and str(target) in msg
    assert not target.exists() and list((tmp_path / "cache").iterdir()) == []  # nothing half-written


def test_ml100k_hash_mismatch_is_refused(tmp_path: Path, monkeypatch) -> None:
    script = (
        "import sys, pathlib; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True); "
        "(d / 'recbole-1.2.1-py3-none-any.whl').write_bytes(b'not a wheel')"
    )
    monkeypatch.setattr(
        ml100k, "_pip_download_command", lambda dest: [sys.executable, "-c", script, str(dest)]
    )
    target = tmp_path / "ml-100k"
    with pytest.raises(MissingDataError, match="sha256"):
        ml100k.ensure_ml100k(target)
    assert not target.exists()


def test_ml100k_reads_files_under_root(tmp_path: Path) -> None:
    root = tmp_path / "ml-100k"
    root.mkdir()
    (root / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t1\n2\t10\t3\t2\n2\t11\t5\t3\n"
    )
    (root / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t17\tM\tstudent\t00000\n2\t56\tF\tother\t11111\n"
    )
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tA\t1995\tAction Comedy\n11\tB\t1996\tDrama\n12\tC\t1997\tAction\n"
    )
    (root / "ml-100k.link").write_text("item_id:token\tentity_id:token\n10\tm.a\n11\tm.b\n12\tm.c\n")
    (root / "ml-100k.kg").write_text(
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.a\tfilm.film.actor\tm.x\nm.b\tfilm.film.actor\tm.x\nm.c\tfilm.film.genre\tm.x\n"
        "m.x\tfilm.actor.film\tm.c\n"
    )
    raw = ml100k.load_raw(root)
    assert raw.extra["source_dir"] == str(root)
    assert (
        raw.raw_counts["genres"] == 3 and raw.raw_counts["kg_triples"] == 4 and raw.raw_counts["links"] == 3
    )
    assert raw.labels["age"].label.tolist() == [0, 6]
    assert sorted(zip(*[a.tolist() for a in raw.item_relations["kg"]])) == [(10, 11), (11, 10)]
    _check_ids(raw)


# ---------------------------------------------------------------- generated Epinions / Yelp files


def test_epinions_four_column_mat_with_self_loops(tmp_path: Path) -> None:
    root = tmp_path / "epinions"
    root.mkdir()
    rating = np.array(
        [[1, 10, 3, 5], [1, 11, 1, 4], [2, 10, 3, 2], [2, 10, 1, 3], [3, 12, 27, 1]], dtype=np.float64
    )
    scipy.io.savemat(root / "rating.mat", {"rating": rating})
    scipy.io.savemat(
        root / "trustnetwork.mat", {"trust": np.array([[1, 2], [2, 2], [3, 1]], dtype=np.uint16)}
    )
    raw = ciao.load_raw(root, name="epinions")
    assert raw.name == "epinions"
    assert raw.raw_counts == {
        "users": 3,
        "items": 3,
        "interactions": 4,
        "rows": 5,
        "trust": 3,
        "categories": 3,
        "multi_category_items": 1,
    }
    src, dst = raw.user_relations["trust"]
    assert int((src == dst).sum()) == 1  # self-loop kept in raw rows
    lab = raw.labels["category"]
    assert lab.label.tolist() == [1, 0, 1, 0, 2] and lab.names == ["category_1", "category_3", "category_27"]
    assert raw.ratings.tolist() == [5, 4, 2, 3, 1]
    _check_ids(raw)


def test_ciao_five_columns_and_category_names(tmp_path: Path) -> None:
    root = tmp_path / "ciao"
    root.mkdir()
    scipy.io.savemat(
        root / "rating.mat", {"rating": np.array([[1, 1, 2, 4, 1], [2, 1, 2, 3, 0]], dtype=np.int32)}
    )
    scipy.io.savemat(root / "trustnetwork.mat", {"trustnetwork": np.array([[1, 2]], dtype=np.uint16)})
    (root / "category.txt").write_bytes(b"1 DVDs\r\n2 Ciao Caf\xe9\r\n")
    raw = ciao.load_raw(root)
    assert raw.labels["category"].names == ["Ciao Caf\xe9"] and raw.labels["category"].label.tolist() == [
        0,
        0,
    ]


def test_mat_with_wrong_column_count(tmp_path: Path) -> None:
    root = tmp_path / "ciao"
    root.mkdir()
    scipy.io.savemat(root / "rating.mat", {"rating": np.ones((3, 3))})
    scipy.io.savemat(root / "trustnetwork.mat", {"trust": np.ones((3, 2))})
    with pytest.raises(DataFormatError, match=r"rating\.mat.*got 3"):
        ciao.load_raw(root)


def _write_yelp(root: Path) -> None:
    """The HERec Yelp release's shape as published: tab-separated, three columns in every file."""
    root.mkdir(parents=True)
    (root / "user_business.dat").write_text("1\t1\t5\n1\t2\t3\n2\t2\t4\n3\t1\t2\n3\t1\t1\n")
    (root / "user_user.dat").write_text("1\t2\t1\n2\t1\t1\n3\t1\t1\n")
    (root / "business_category.dat").write_text("1\t1\t1\n1\t3\t1\n2\t3\t1\n")
    (root / "business_city.dat").write_text("1\t2\t1\n2\t2\t1\n")
    (root / "user_compliment.dat").write_text("1\t1\t1\n2\t5\t1\n3\t1\t1\n")


def test_yelp_one_based_ids(tmp_path: Path) -> None:
    root = tmp_path / "yelp"
    _write_yelp(root)
    raw = yelp.load_raw(root)
    assert raw.raw_counts == {
        "users": 3,
        "items": 2,
        "interactions": 4,
        "rows": 5,
        "friends": 3,
        "categories": 2,
        "cities": 1,
        "compliments": 2,
    }
    assert raw.users.tolist() == [0, 0, 1, 2, 2] and raw.items.tolist() == [0, 1, 1, 0, 0]
    src, dst = raw.user_relations["friends"]
    assert src.tolist() == [0, 1, 2] and dst.tolist() == [1, 0, 0]
    cat = raw.labels["category"]
    assert cat.entity.tolist() == [0, 0, 1] and cat.label.tolist() == [0, 1, 1] and cat.multi
    assert not raw.labels["city"].multi and raw.labels["compliment"].side == "user"
    _check_ids(raw)


def test_yelp_zero_id_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "yelp"
    _write_yelp(root)
    (root / "user_user.dat").write_text("1\t2\t1\n0\t1\t1\n")
    with pytest.raises(DataFormatError, match=r"user_user\.dat, line 2: id 0 in column user"):
        yelp.load_raw(root)


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_sized() -> None:
    a = synthetic.load_raw(seed=3)
    b = synthetic.load_raw(seed=3)
    c = synthetic.load_raw(seed=4)
    assert np.array_equal(a.items, b.items) and np.array_equal(
        a.user_relations["friends"][1], b.user_relations["friends"][1]
    )
    assert not np.array_equal(a.items, c.items)
    assert a.raw_counts["rows"] == 2000 * 20 and a.raw_counts["friends"] == 2000 * 6
    assert a.raw_counts["users"] == 2000 and a.raw_counts["items"] <= 1000
    assert a.raw_counts["categories"] == 10 and a.raw_counts["communities"] == 8
    assert a.raw_counts["interactions"] == count_unique_pairs(a.users, a.items)
    assert a.items.min() >= 0 and a.items.max() < 1000
    _check_ids(a)


def test_synthetic_planted_structure() -> None:
    raw = synthetic.load_raw(num_users=3000, num_items=1500, seed=1)
    src, dst = raw.user_relations["friends"]
    community = raw.labels["community"].label
    category = raw.labels["category"].label
    assert not np.any(src == dst)
    assert (community[src] == community[dst]).mean() > 0.6  # homophily 0.8 planted
    preferred = raw.extra["preferred_categories"]
    in_pref = (preferred[community[raw.users]] == category[raw.items][:, None]).any(axis=1)
    # 0.85 from preferred + 0.15 * 2/10 by chance, against 0.2 without preferences
    assert in_pref.mean() > 0.75
    no_homophily = synthetic.load_raw(num_users=3000, num_items=1500, homophily=0.0, seed=1)
    s0, d0 = no_homophily.user_relations["friends"]
    assert (community[s0] == community[d0]).mean() < 0.25


def test_synthetic_scales_to_a_million_interactions() -> None:
    start = time.perf_counter()
    raw = synthetic.load_raw(num_users=50_000, num_items=20_000, interactions_per_user=20, num_communities=40)
    elapsed = time.perf_counter() - start
    assert raw.raw_counts["rows"] == 1_000_000 and len(raw.items) == 1_000_000
    print(f"synthetic 1M interactions generated in {elapsed:.2f}s")


# ---------------------------------------------------------------- helpers and bad input


def test_co_membership_pairs_drops_large_groups() -> None:
    entity = np.array([1, 2, 3, 1, 2, 4])
    group = np.array([7, 7, 7, 8, 8, 9])
    src, dst = co_membership_pairs(entity, group)
    assert list(zip(src.tolist(), dst.tolist())) == [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]
    src, dst = co_membership_pairs(entity, group, max_group_size=2)
    assert list(zip(src.tolist(), dst.tolist())) == [(1, 2), (2, 1)]


def _copy_filmtrust(tmp_path: Path, shared: Path | None = None) -> Path:
    root = tmp_path / "filmtrust"
    root.mkdir()
    if shared is not None:
        for f in ("ratings.txt", "trust.txt"):
            shutil.copy(shared / "filmtrust" / f, root / f)
    else:
        (root / "ratings.txt").write_text("1 1 2\n1 2 4\n2 1 3.5\n")
        (root / "trust.txt").write_text("1 2 1\n")
    return root


def test_missing_files_named_with_directory(tmp_path: Path) -> None:
    root = tmp_path / "lastfm"
    root.mkdir()
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n")
    with pytest.raises(MissingDataError) as info:
        lastfm.load_raw(root)
    msg = str(info.value)
    for f in ("user_friends.dat", "user_taggedartists.dat", "tags.dat"):
        assert f in msg
    assert "user_artists.dat" not in msg.split(" in ")[0]
    assert str(root) in msg and "grouplens" in msg


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"rating\.mat, trustnetwork\.mat"):
        ciao.load_raw(tmp_path / "nowhere", name="epinions")


def test_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    root = _copy_filmtrust(tmp_path)
    (root / "ratings.txt").write_text("1 1 2\n1 2 4\n2 1\n3 3 3\n")
    with pytest.raises(DataFormatError) as info:
        filmtrust.load_raw(root)
    assert info.value.line == 3 and info.value.path.name == "ratings.txt"
    assert "expected 3 whitespace-separated fields, got 2" in str(info.value)


def test_extra_field_names_line(tmp_path: Path) -> None:
    root = tmp_path / "amazon"
    root.mkdir()
    (root / "user_item.dat").write_text("0\t0\t5\t1\n0\t1\t5\t1\n")
    (root / "item_view.dat").write_text("0,0\n1,0\n1,0,9\n")
    (root / "item_category.dat").write_text("0,0\n")
    (root / "item_brand.dat").write_text("0,0\n")
    with pytest.raises(
        DataFormatError, match=r"item_view\.dat, line 3: expected 2 comma-separated fields, got 3"
    ):
        amazon.load_raw(root)


def test_non_numeric_id_names_file_line_and_column(tmp_path: Path) -> None:
    root = tmp_path / "lastfm"
    root.mkdir()
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t51\t13\n2\tabc\t7\n")
    (root / "user_friends.dat").write_text("userID\tfriendID\n2\t3\n")
    (root / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t51\t1\t1\t1\t2009\n"
    )
    (root / "tags.dat").write_bytes("tagID\ttagValue\n1\tm\xe9tal\n".encode("latin-1"))
    with pytest.raises(DataFormatError) as info:
        lastfm.load_raw(root)
    assert info.value.line == 3 and info.value.path.name == "user_artists.dat"
    assert "non-numeric id 'abc' in column artist" in str(info.value)
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t51\t13\n")
    raw = lastfm.load_raw(root)
    assert raw.labels["tag"].names == ["m\xe9tal"]


@pytest.mark.realdata
def test_bad_line_in_real_copy(shared_datasets: Path, tmp_path: Path) -> None:
    root = _copy_filmtrust(tmp_path, shared_datasets)
    with open(root / "trust.txt", "a") as fh:
        fh.write("12 x7 1\n")
    with pytest.raises(DataFormatError) as info:
        filmtrust.load_raw(root)
    assert info.value.line == 1854 and "non-numeric id 'x7' in column trustee" in str(info.value)


def test_header_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "lastfm"
    root.mkdir()
    for f in lastfm.FILES:
        (root / f).write_text("wrong\theader\n")
    with pytest.raises(DataFormatError, match=r"user_artists\.dat, line 1: expected a header"):
        lastfm.load_raw(root)
