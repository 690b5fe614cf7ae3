"""A synthetic release with planted structure, for tests, demos and sanity checks of auxiliary tasks.

Users belong to communities and items to categories. Each community prefers a few categories;
interactions are drawn mostly from the user's community's preferred categories, and friendship
links mostly stay within a community (homophily, cf. McPherson et al., "Birds of a Feather",
Annu. Rev. Sociol. 2001; the premise of social recommendation, e.g. Ma et al., SoRec, CIKM'08).
So the social task and the category/community label tasks genuinely carry information about the
preferences the main ranking task has to learn. Fully vectorized: millions of interactions in
about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmtrec_lab.data.sources._io import count_unique, count_unique_pairs
from pmtrec_lab.data.types import RawDataset, RawLabels


def _balanced_assignment(rng: np.random.Generator, n: int, groups: int) -> np.ndarray:
    """Each of ``n`` entities gets one of ``groups`` groups, group sizes differing by at most one."""
    return rng.permutation(np.arange(n, dtype=np.int64) % groups)


def _pick_members(
    rng: np.random.Generator,
    group: np.ndarray,
    members_sorted: np.ndarray,
    start: np.ndarray,
    size: np.ndarray,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """A uniform random member of each row's group (``positions`` in [0, 1) override the uniform draw)."""
    u = rng.random(len(group)) if positions is None else positions
    offset = np.minimum((u * size[group]).astype(np.int64), size[group] - 1)
    return members_sorted[start[group] + offset]


def _mislabelled(
    community: np.ndarray, per_user: np.ndarray, share: float, groups: int, seed: int
) -> np.ndarray:
    """The community labels with the most active ``share`` of users (by rows, then id) given a
    uniformly random community (a generator of their own, so no other draw changes)."""
    if share <= 0:
        return community
    order = np.lexsort((np.arange(len(per_user)), per_user))  # least active first
    active = order[len(order) - int(round(share * len(order))) :]
    out = community.copy()
    out[active] = np.random.default_rng([seed, 1]).integers(groups, size=len(active))
    return out


def load_raw(
    root: Path | None = None,
    num_users: int = 2000,
    num_items: int = 1000,
    interactions_per_user: int = 20,
    num_communities: int = 8,
    num_categories: int = 10,
    friends_per_user: int = 6,
    homophily: float = 0.8,
    seed: int = 0,
    preferred_per_community: int = 2,
    preference_strength: float = 0.85,
    popularity_exponent: float = 1.5,
    activity_spread: float = 0.0,
    mislabel_active: float = 0.0,
) -> RawDataset:
    """Generate a dataset; ``root`` is ignored (nothing is read or written).

    - ``homophily``: probability a friend link stays inside the user's community (the rest go to
      uniformly random other users). Each user starts ``friends_per_user`` directed links.
    - ``preference_strength``: probability an interaction comes from one of the community's
      ``preferred_per_community`` categories; otherwise from a uniformly random category.
    - ``popularity_exponent`` (>= 1): within a category, item position ``floor(size * u**e)``
      makes low positions popular (1 = uniform).
    - ``activity_spread`` (>= 0): 0 gives every user ``interactions_per_user`` rows; above 0 a
      user's rows are ``interactions_per_user * exp(s z - s^2 / 2)`` (``z`` standard normal, so the
      mean stays about the same), at least 3: cold and active users.
    - ``mislabel_active`` (in [0, 1)): this share of the users, the most active ones (by rows, then
      id), carry a random community as their ``community`` label (drawn from a generator of its
      own): a user-label task that informs the cold and is noise for the active (the benefit
      map's planted test: with ``activity_spread`` 1 and a third mislabelled, EW's community task
      helps the cold third and hurts the active one).
    Interaction rows may repeat a (user, item) pair; ``raw_counts["interactions"]`` counts unique pairs.
    With ``activity_spread`` and ``mislabel_active`` at their defaults the release is what it was
    before they existed.
    """
    num_categories, preferred_per_community = _checked_sizes(
        num_users, num_items, interactions_per_user, num_communities, num_categories, friends_per_user,
        homophily, preference_strength, popularity_exponent, activity_spread, mislabel_active,
        preferred_per_community,
    )  # fmt: skip
    rng = np.random.default_rng(seed)  # one generator: the order of its draws below is the release
    community = _balanced_assignment(rng, num_users, num_communities)
    category = _balanced_assignment(rng, num_items, num_categories)
    # Each community's preferred categories: distinct categories per row (argsort of random keys).
    preferred = np.argsort(rng.random((num_communities, num_categories)), axis=1)[:, :preferred_per_community]
    per_user = _rows_per_user(rng, num_users, interactions_per_user, activity_spread)
    users, items = _interactions(
        rng, per_user, community, category, num_categories, preferred, preference_strength,
        popularity_exponent,
    )  # fmt: skip
    src, dst = _friend_links(rng, community, num_communities, friends_per_user, homophily)

    return RawDataset(
        name="synthetic",
        users=users,
        items=items.astype(np.int64),
        ratings=None,
        user_relations={"friends": (src, dst)},
        labels=_labels(category, num_categories, community, num_communities, per_user, mislabel_active, seed),
        raw_counts=_raw_counts(users, items, src, num_categories, num_communities),
        extra={
            "preferred_categories": preferred,
            "params": {
                "num_users": num_users,
                "num_items": num_items,
                "interactions_per_user": interactions_per_user,
                "num_communities": num_communities,
                "num_categories": num_categories,
                "friends_per_user": friends_per_user,
                "homophily": homophily,
                "seed": seed,
                "preferred_per_community": preferred_per_community,
                "preference_strength": preference_strength,
                "popularity_exponent": popularity_exponent,
                **({"activity_spread": activity_spread} if activity_spread else {}),
                **({"mislabel_active": mislabel_active} if mislabel_active else {}),
            },
        },
    )


def _raw_counts(
    users: np.ndarray, items: np.ndarray, src: np.ndarray, num_categories: int, num_communities: int
) -> dict[str, int | str]:
    """The release's ``raw_counts``: distinct users, items and (user, item) pairs, the rows
    (pairs may repeat), friend links, categories and communities."""
    return {
        "users": count_unique(users),
        "items": count_unique(items),
        "interactions": count_unique_pairs(users, items),
        "rows": len(users),
        "friends": len(src),
        "categories": int(num_categories),
        "communities": int(num_communities),
    }


def _checked_sizes(
    num_users: int,
    num_items: int,
    interactions_per_user: int,
    num_communities: int,
    num_categories: int,
    friends_per_user: int,
    homophily: float,
    preference_strength: float,
    popularity_exponent: float,
    activity_spread: float,
    mislabel_active: float,
    preferred_per_community: int,
) -> tuple[int, int]:
    """The number of categories and of preferred categories per community :func:`load_raw` uses
    (at most the items, and the categories), after a ValueError naming the first argument
    outside its range."""
    if min(num_users, num_items, num_communities, num_categories) < 1 or interactions_per_user < 0:
        raise ValueError("num_users, num_items, num_communities, num_categories must be >= 1")
    if num_users < 2 and friends_per_user > 0:
        raise ValueError("friends need at least 2 users")
    if not 0.0 <= homophily <= 1.0 or not 0.0 <= preference_strength <= 1.0:
        raise ValueError("homophily and preference_strength must lie in [0, 1]")
    if popularity_exponent <= 0:
        raise ValueError("popularity_exponent must be > 0")
    if not 0.0 <= mislabel_active < 1.0:
        raise ValueError(f"mislabel_active must lie in [0, 1), got {mislabel_active}")
    if activity_spread < 0:
        raise ValueError(f"activity_spread must be >= 0, got {activity_spread}")
    num_categories = min(num_categories, num_items)
    return num_categories, max(1, min(preferred_per_community, num_categories))


def _rows_per_user(
    rng: np.random.Generator, num_users: int, interactions_per_user: int, activity_spread: float
) -> np.ndarray:
    """Each user's number of interaction rows: ``interactions_per_user``, or log-normally spread
    around it (at least 3) when ``activity_spread`` > 0 (the only case that draws from ``rng``)."""
    per_user = np.full(num_users, interactions_per_user, dtype=np.int64)
    if activity_spread > 0:
        z = rng.standard_normal(num_users)
        spread = interactions_per_user * np.exp(activity_spread * z - activity_spread**2 / 2)
        per_user = np.maximum(np.rint(spread), 3).astype(np.int64)
    return per_user


def _interactions(
    rng: np.random.Generator,
    per_user: np.ndarray,
    community: np.ndarray,
    category: np.ndarray,
    num_categories: int,
    preferred: np.ndarray,
    preference_strength: float,
    popularity_exponent: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The interaction rows (users, items): each row's category is one of the user's community's
    preferred ones with probability ``preference_strength`` (else uniform), its item a member of
    that category, low positions popular (``popularity_exponent``)."""
    # Items grouped by category: sorted member list, group start and size.
    items_sorted = np.argsort(category, kind="stable")
    cat_size = np.bincount(category, minlength=num_categories)
    cat_start = np.concatenate([[0], np.cumsum(cat_size)[:-1]])
    users = np.repeat(np.arange(len(per_user), dtype=np.int64), per_user)
    n = len(users)
    from_pref = rng.random(n) < preference_strength
    pref_choice = preferred[community[users], rng.integers(preferred.shape[1], size=n)]
    cats = np.where(from_pref, pref_choice, rng.integers(num_categories, size=n))
    items = _pick_members(rng, cats, items_sorted, cat_start, cat_size, rng.random(n) ** popularity_exponent)
    return users, items


def _friend_links(
    rng: np.random.Generator,
    community: np.ndarray,
    num_communities: int,
    friends_per_user: int,
    homophily: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed friend links (source, target), ``friends_per_user`` from each user: with
    probability ``homophily`` to another member of the same community, the rest uniform."""
    num_users = len(community)
    src = np.repeat(np.arange(num_users, dtype=np.int64), friends_per_user)
    m = len(src)
    users_sorted = np.argsort(community, kind="stable")
    com_size = np.bincount(community, minlength=num_communities)
    com_start = np.concatenate([[0], np.cumsum(com_size)[:-1]])
    rank = np.empty(num_users, dtype=np.int64)  # position of each user in its community's list
    rank[users_sorted] = np.arange(num_users) - com_start[community[users_sorted]]
    c = community[src]
    inside = (rng.random(m) < homophily) & (com_size[c] > 1)
    # Uniform over the community minus the user itself: draw among size-1 slots, skip own slot.
    slot = np.minimum((rng.random(m) * (com_size[c] - 1)).astype(np.int64), np.maximum(com_size[c] - 2, 0))
    slot = slot + (slot >= rank[src])
    dst_in = users_sorted[com_start[c] + np.minimum(slot, com_size[c] - 1)]
    dst_out = (src + 1 + rng.integers(max(num_users - 1, 1), size=m)) % num_users
    return src, np.where(inside, dst_in, dst_out).astype(np.int64)


def _labels(
    category: np.ndarray,
    num_categories: int,
    community: np.ndarray,
    num_communities: int,
    per_user: np.ndarray,
    mislabel_active: float,
    seed: int,
) -> dict[str, RawLabels]:
    """The two label sets: each item's ``category`` and each user's ``community`` (the most
    active ``mislabel_active`` share of users carrying a random one, see :func:`_mislabelled`)."""
    community_labels = _mislabelled(community, per_user, mislabel_active, num_communities, seed)
    return {
        "category": _single_labels("item", category, "category", num_categories),
        "community": _single_labels("user", community_labels, "community", num_communities),
    }


def _single_labels(side: str, label: np.ndarray, prefix: str, count: int) -> RawLabels:
    """One label per entity of ``side`` (entity ``i`` has ``label[i]``), named ``<prefix>_<k>``."""
    return RawLabels(
        side=side,
        entity=np.arange(len(label), dtype=np.int64),
        label=label,
        names=[f"{prefix}_{k}" for k in range(count)],
        multi=False,
    )
