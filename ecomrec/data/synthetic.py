"""Synthetic shops with planted structure, for tests with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecomrec.data.cleaning import CleaningReport
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap

#: One theme per cluster; every title of a cluster's items carries its theme words.
THEMES = ("red retrospot", "blue polkadot", "green garden", "pink fairy", "silver star", "vintage paisley", "wooden farm",
          "black skull")
NOUNS = ("lunch bag", "mug", "cake tin", "tea towel", "notebook", "candle", "doormat", "apron", "tote", "clock")


def synthetic(n_users: int = 200, n_items: int = 120, n_clusters: int = 4, purchases_per_user: int = 16, *, n_cold_items: int = 0,
              noise: float = 0.05, start: str = "2024-01-01", days: int = 90, seed: int = 0) -> Dataset:
    """A shop where users buy (almost only) items of their own cluster.

    User ``u{n:05d}`` belongs to cluster ``n % n_clusters``; item ``i{n:05d}`` to cluster
    ``n % n_clusters``; ids are zero-padded, so dense index == ``n``. Each purchase is from the
    user's cluster with probability ``1 - noise``, else uniform. Titles carry the cluster theme
    (``"red retrospot mug 4"``) and ``catalog.category`` names it. The last ``n_cold_items``
    items are listed but never bought. Timestamps are uniform over ``days`` from ``start``.

    Examples
    --------
    >>> data = synthetic(n_users=8, n_items=8, n_clusters=2, seed=1)
    >>> data.catalog["category"].tolist()[:3]
    ['red retrospot', 'blue polkadot', 'red retrospot']
    """
    if not 1 <= n_clusters <= len(THEMES):
        raise ValueError(f"n_clusters must be in 1..{len(THEMES)}, got {n_clusters}")
    if n_items - n_cold_items < n_clusters:
        raise ValueError("every cluster needs at least one item that is bought")
    rng = np.random.default_rng(seed)
    sold = np.arange(n_items - n_cold_items)
    by_cluster = [sold[sold % n_clusters == c] for c in range(n_clusters)]
    users = np.repeat(np.arange(n_users), purchases_per_user)
    own = rng.random(len(users)) >= noise
    items = np.empty(len(users), dtype=np.int64)
    for c in range(n_clusters):
        rows = np.flatnonzero(own & (users % n_clusters == c))
        items[rows] = rng.choice(by_cluster[c], size=len(rows))
    items[~own] = rng.choice(sold, size=int((~own).sum()))
    seconds = rng.integers(0, days * 86400, size=len(users))
    interactions = pd.DataFrame({"user": users.astype(np.int32), "item": items.astype(np.int32),
                                 "timestamp": pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s"),
                                 "quantity": rng.integers(1, 13, size=len(users)).astype(np.float32)})
    clusters = np.arange(n_items) % n_clusters
    catalog = pd.DataFrame({
        "item_id": [f"i{n:05d}" for n in range(n_items)],
        "text": [f"{THEMES[c]} {NOUNS[n // n_clusters % len(NOUNS)]} {n}" for n, c in enumerate(clusters)],
        "price": np.round(rng.uniform(0.5, 20.0, n_items), 2), "category": [THEMES[c] for c in clusters], "first_seen": pd.NaT,
    })
    report = CleaningReport(len(interactions), {}, len(interactions))
    users_map = IdMap(f"u{n:05d}" for n in range(n_users))
    return Dataset(interactions, catalog, users_map, IdMap(catalog["item_id"]), report, name=f"synthetic-{seed}")
