"""Collaborative features of fused candidates: what the purchase model reads besides text.

Every feature comes from the candidate stage (per-source ranks and scores, the user's purchase
count and recency for the item) or from cheap counts over the training data (item popularity and
age, user activity). A rank a source did not give becomes a large rank plus a "found" flag of 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ecomrec.data.dataset import Dataset
from ecomrec.candidates import Candidates

#: Rank used for "this source did not find the item" (beyond any quota).
NOT_FOUND_RANK = 1000.0
#: Days used for "the user never bought the item".
NEVER_DAYS = 1000.0


@dataclasses.dataclass
class CollaborativeStats:
    """Per-item and per-user counts over the data the candidates were generated from."""

    item_buyers: np.ndarray  # float [n_items] distinct buyers, all history
    item_buyers_30d: np.ndarray  # float [n_items] distinct buyers, last 30 days
    user_purchases: np.ndarray  # float [n_users] purchase events
    user_items: np.ndarray  # float [n_users] distinct items
    item_age_days: np.ndarray  # float [n_items] days from the item's first sale to the end of the data (NEVER_DAYS: unsold)

    @classmethod
    def of(cls, data: Dataset) -> CollaborativeStats:
        counts = data.user_items("counts")
        age = np.full(data.n_items, NEVER_DAYS)
        if len(data):
            first = data.interactions.groupby("item")["timestamp"].min()
            age[first.index.to_numpy()] = (data.end - first).dt.total_seconds().to_numpy() / 86400.0
        return cls(item_buyers=data.item_popularity(), item_buyers_30d=data.item_popularity(30),
                   user_purchases=np.asarray(counts.sum(axis=1)).ravel(), user_items=np.diff(counts.indptr).astype(np.float64),
                   item_age_days=age)


def feature_names(sources: list[str]) -> list[str]:
    """Column names of :func:`candidate_features` for fused candidates from ``sources``."""
    names = ["fused_position", "fused_score", "own_count_log", "own_days_log", "own_bought"]
    for source in sources:
        names += [f"{source}_rank_log", f"{source}_score", f"{source}_found"]
    names += ["n_sources", "item_buyers_log", "item_buyers_30d_log", "item_age_log", "user_purchases_log", "user_items_log",
              "list_own_share"]
    return names


def candidate_features(candidates: Candidates, users: np.ndarray, stats: CollaborativeStats, sources: list[str]) -> np.ndarray:
    """float32 [n_queries, k, n_features] for each candidate (padding rows are zeros); ``users``:
    dense user of each query (-1 for a user unknown to ``stats``)."""
    n, k = candidates.item_ids.shape
    items = np.maximum(candidates.item_ids, 0)
    valid = candidates.item_ids >= 0
    src = candidates.sources
    own_count = np.nan_to_num(src.get("own_count", np.zeros((n, k))), nan=0.0)
    columns = [
        np.broadcast_to(np.arange(k, dtype=np.float64), (n, k)),
        np.where(valid, candidates.scores, 0.0),
        np.log1p(own_count),
        np.log1p(np.nan_to_num(src.get("own_days_since", np.full((n, k), np.nan)), nan=NEVER_DAYS)),
        (own_count > 0).astype(np.float64),
    ]
    found_count = np.zeros((n, k))
    for source in sources:
        rank = src.get(f"{source}_rank", np.full((n, k), np.nan))
        found = ~np.isnan(rank)
        found_count += found
        columns += [np.log1p(np.where(found, rank, NOT_FOUND_RANK)), np.nan_to_num(src.get(f"{source}_score", rank), nan=0.0), found]
    known = users >= 0
    user_purchases = np.where(known, stats.user_purchases[np.maximum(users, 0)], 0.0)[:, None]
    user_items = np.where(known, stats.user_items[np.maximum(users, 0)], 0.0)[:, None]
    # The share of the list the user bought before: 0 in lists without bought items (exclude="seen").
    own_share = ((own_count > 0) & valid).sum(axis=1, keepdims=True) / np.maximum(valid.sum(axis=1, keepdims=True), 1)
    columns += [found_count, np.log1p(stats.item_buyers[items]), np.log1p(stats.item_buyers_30d[items]),
                np.log1p(stats.item_age_days[items]), np.broadcast_to(np.log1p(user_purchases), (n, k)),
                np.broadcast_to(np.log1p(user_items), (n, k)), np.broadcast_to(own_share, (n, k))]
    out = np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=-1)
    out[~valid] = 0.0
    return out
