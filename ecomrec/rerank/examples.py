"""Labelled candidates at a cutoff: what the reranker learns from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ecomrec.data.dataset import Dataset
from ecomrec.metrics import hits
from ecomrec.rerank.features import CollaborativeStats, candidate_features
from ecomrec.candidates import Candidates


@dataclasses.dataclass
class Examples:
    """The hybrid's top candidates for users active around one cutoff, with purchase labels."""

    cutoff: pd.Timestamp  # history ends here; labels are purchases in the ``window_days`` after it
    users: np.ndarray  # int64 [n] dense users (bought before the cutoff and inside the window)
    texts: list[str]  # the users' history texts at the cutoff (newest first)
    candidates: Candidates  # [n, k] with per-source ranks and scores
    labels: np.ndarray  # bool [n, k]: the user bought the candidate in the window
    features: np.ndarray  # float32 [n, k, f] collaborative features
    new_lists: np.ndarray  # bool [n]: the list leaves out what the user bought before, its labels are new items

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, keep: np.ndarray) -> Examples:
        """The examples of the users selected by ``keep`` (indices or mask)."""
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return Examples(self.cutoff, self.users[index], [self.texts[i] for i in index], self.candidates[index],
                        self.labels[index], self.features[index], self.new_lists[index])


def examples_at(probe, data: Dataset, cutoff: pd.Timestamp, window_days: int, k: int, history_items: int, history_chars: int,
                *, new_items_only: bool = False) -> Examples:
    """Candidates of ``probe`` (a hybrid as of ``cutoff``) for the users active on both sides of it.
    With ``new_items_only`` the lists leave out what each user bought before the cutoff, the labels
    are their purchases of items new to them, and users without one are left out."""
    before = data.between(None, cutoff)
    window = data.between(cutoff, cutoff + pd.Timedelta(days=window_days))
    past, future = before.user_items("binary"), window.user_items("binary")
    if new_items_only:
        future = (future - future.multiply(past)).tocsr()
        future.eliminate_zeros()
    users = np.flatnonzero((past.getnnz(axis=1) > 0) & (future.getnnz(axis=1) > 0)).astype(np.int64)
    if not len(users):
        raise ValueError(f"no user bought both before {cutoff} and in the {window_days} days after it")
    candidates = probe.candidates(users, k, exclude="seen" if new_items_only else None, allow=data.listed_at(cutoff))
    labels = hits(candidates.item_ids, future[users])
    texts = before.history_texts(users, max_items=history_items, max_chars=history_chars)
    features = candidate_features(candidates, users, CollaborativeStats.of(before), sorted(probe.quotas_))
    return Examples(pd.Timestamp(cutoff), users, texts, candidates, labels, features, np.full(len(users), new_items_only))
