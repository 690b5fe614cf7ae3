"""Raw release -> clean implicit-feedback dataset with contiguous ids.

Steps, in order (each vectorized; the k-core loop iterates until stable, a few rounds):
1. optional rating threshold (rows with rating >= threshold are positives);
2. duplicate (user, item) pairs removed, the first row in file order kept;
3. iterative k-core: users and items with fewer than k interactions removed until none is left;
4. contiguous re-indexing, ordered by raw id;
5. relations restricted to kept entities, self-loops and duplicate rows dropped (first kept);
6. labels restricted to kept entities; single-label sets reduced to each entity's most frequent
   label (ties to the lower label id); multi-label sets de-duplicated; with ``top_k``, either kind
   is cut to the labels used on the most distinct kept entities (a single-label entity whose label
   is not among them loses it); label ids compacted to those in use.
"""

from __future__ import annotations

import numpy as np

from pmtrec_lab.data.types import LabelSet, RawDataset, RawLabels, Relation
from pmtrec_lab.errors import PmtrecError


def first_unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each (a, b) pair, in file order."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = np.stack([a, b], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    return np.sort(first)


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the rows that survive iterative k-core filtering on both sides."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        u_deg = np.bincount(users[keep], minlength=int(users.max()) + 1 if len(users) else 0)
        i_deg = np.bincount(items[keep], minlength=int(items.max()) + 1 if len(items) else 0)
        new_keep = keep & (u_deg[users] >= k) & (i_deg[items] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def remap(raw: np.ndarray, kept_sorted: np.ndarray) -> np.ndarray:
    """New id of each raw id (position in ``kept_sorted``), -1 where the raw id is not kept."""
    if len(kept_sorted) == 0:
        return np.full(len(raw), -1, dtype=np.int64)
    pos = np.searchsorted(kept_sorted, raw)
    pos_clipped = np.minimum(pos, len(kept_sorted) - 1)
    found = kept_sorted[pos_clipped] == raw
    return np.where(found, pos_clipped, -1).astype(np.int64)


def _dense_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique raw ids and the dense index of each element."""
    uniq, inverse = np.unique(raw, return_inverse=True)
    return uniq, inverse.astype(np.int64)


def clean_relation(name: str, side: str, src: np.ndarray, dst: np.ndarray, kept: np.ndarray) -> Relation:
    s, d = remap(src, kept), remap(dst, kept)
    ok = (s >= 0) & (d >= 0) & (s != d)
    s, d = s[ok], d[ok]
    first = first_unique_pairs(s, d)
    return Relation(name=name, side=side, src=s[first], dst=d[first])  # type: ignore[arg-type]


def clean_labels(name: str, raw: RawLabels, kept: np.ndarray) -> LabelSet | None:
    ent = remap(raw.entity, kept)
    ok = ent >= 0
    ent, lab = ent[ok], raw.label[ok].astype(np.int64)
    if len(ent) == 0:
        return None
    if raw.multi:
        first = first_unique_pairs(ent, lab)
        ent, lab = ent[first], lab[first]
    else:
        # most frequent label per entity, ties to the lower label id
        pairs = np.stack([ent, lab], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
        uniq = uniq[order]
        first_of_entity = np.r_[True, uniq[1:, 0] != uniq[:-1, 0]]
        ent, lab = uniq[first_of_entity, 0], uniq[first_of_entity, 1]
    if raw.top_k is not None:
        usage = np.bincount(lab, minlength=len(raw.names))  # distinct entities per label
        order = np.lexsort((np.arange(len(usage)), -usage))  # most used first, ties to lower id
        chosen = np.sort(order[: raw.top_k][usage[order[: raw.top_k]] > 0])
        keep = np.isin(lab, chosen)
        ent, lab = ent[keep], lab[keep]
        if len(ent) == 0:
            return None
    used, lab_dense = _dense_ids(lab)
    names = [raw.names[i] if i < len(raw.names) else f"{name}_{i}" for i in used]
    order = np.lexsort((lab_dense, ent))
    return LabelSet(
        name=name,
        side=raw.side,
        entity=ent[order],
        label=lab_dense[order],
        num_labels=len(used),
        multi=raw.multi,
        names=names,
    )


def preprocess(
    raw: RawDataset, k: int, rating_threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Relation], dict[str, LabelSet]]:
    """Return (pairs [n, 2] new ids, raw user ids, raw item ids, relations, labels)."""
    if len(raw.users) == 0:
        raise PmtrecError(
            f"dataset {raw.name!r}: the release has no interaction rows (its interaction file is empty, "
            "or the generator was asked for none); nothing to train on"
        )
    users, items = raw.users.astype(np.int64), raw.items.astype(np.int64)
    if rating_threshold is not None:
        if raw.ratings is None:
            raise PmtrecError(
                f"rating_threshold={rating_threshold} given, but dataset {raw.name!r} has no ratings"
            )
        pos = raw.ratings >= rating_threshold
        users, items = users[pos], items[pos]
    first = first_unique_pairs(users, items)
    users, items = users[first], items[first]
    # k-core on dense ids (raw ids can be sparse and large)
    u_ids, u_dense = _dense_ids(users)
    i_ids, i_dense = _dense_ids(items)
    keep = k_core(u_dense, i_dense, k)
    if not keep.any():
        raise PmtrecError(
            f"dataset {raw.name!r}: nothing left after {k}-core filtering "
            f"(parameter k_core={k}, rating_threshold={rating_threshold}); try a lower k_core"
        )
    users, items = users[keep], items[keep]
    kept_users, new_u = _dense_ids(users)
    kept_items, new_i = _dense_ids(items)
    pairs = np.stack([new_u, new_i], axis=1)
    relations: dict[str, Relation] = {}
    for name, (src, dst) in raw.user_relations.items():
        relations[name] = clean_relation(name, "user", src.astype(np.int64), dst.astype(np.int64), kept_users)
    for name, (src, dst) in raw.item_relations.items():
        relations[name] = clean_relation(name, "item", src.astype(np.int64), dst.astype(np.int64), kept_items)
    labels: dict[str, LabelSet] = {}
    for name, rl in raw.labels.items():
        kept = kept_users if rl.side == "user" else kept_items
        ls = clean_labels(name, rl, kept)
        if ls is not None:
            labels[name] = ls
    return pairs, kept_users, kept_items, relations, labels
