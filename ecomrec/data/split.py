"""Temporal splits: history before a cutoff, targets in a window after it (the protocol of docs/evaluation.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.data.dataset import Dataset


@dataclasses.dataclass
class EvalSplit:
    """One temporal split, ready to score methods against.

    Attributes
    ----------
    history, target
        The data before ``test_from`` and in the target window (shared maps and catalog).
    users
        int64 [n] dense indices of the evaluated users.
    seen
        CSR [n, n_items]: the evaluated users' past purchases (1 = bought before ``test_from``).
    targets_all, targets_new
        CSR [n, n_items] binary targets; ``targets_new`` leaves out items in ``seen``.
    new_rows
        Rows of ``users`` with at least one ``new`` target (the users the ``new`` set averages).
    listed
        int64 indices of the items methods may list (``Dataset.listed_at(test_from)``), or None
        for all; purchases of items left out count as misses for every method.
    test_from
        The cutoff.
    """

    history: Dataset
    target: Dataset
    users: np.ndarray
    seen: sp.csr_matrix
    targets_all: sp.csr_matrix
    targets_new: sp.csr_matrix
    new_rows: np.ndarray
    listed: np.ndarray | None = None
    test_from: pd.Timestamp | None = None

    @property
    def n_items(self) -> int:
        return self.history.n_items

    def cold_target_share(self, which: str = "all") -> float:
        """Share of (user, target item) pairs whose item had no purchase in the history."""
        targets = self.targets_all if which == "all" else self.targets_new
        if targets.nnz == 0:
            return float("nan")
        warm = np.asarray(self.history.user_items("binary").getnnz(axis=0) > 0)
        return float(1.0 - warm[targets.indices].mean())


def make_split(data: Dataset, test_from: str | pd.Timestamp, test_to: str | pd.Timestamp | None = None) -> EvalSplit:
    """Apply the protocol's split and target definitions to ``data``."""
    history, target = data.split_by_time(test_from, test_to)
    if not len(history) or not len(target):
        raise ValueError(f"split at {test_from} leaves {len(history)} history and {len(target)} target rows; "
                         "both must be non-empty")
    past = history.user_items("binary")
    future = target.user_items("binary")
    users = np.flatnonzero((past.getnnz(axis=1) > 0) & (future.getnnz(axis=1) > 0)).astype(np.int64)
    seen, targets_all = past[users], future[users]
    targets_new = (targets_all - targets_all.multiply(seen)).tocsr()
    targets_new.eliminate_zeros()
    new_rows = np.flatnonzero(targets_new.getnnz(axis=1) > 0)
    return EvalSplit(history, target, users, seen, targets_all, targets_new, new_rows, data.listed_at(test_from), pd.Timestamp(test_from))


def validation_split(data: Dataset, test_from: str | pd.Timestamp, valid_days: int) -> EvalSplit:
    """The split used for tuning: history up to ``test_from - valid_days``, targets until ``test_from`` (excluded)."""
    start = pd.Timestamp(test_from) - pd.Timedelta(days=valid_days)
    last_day = pd.Timestamp(test_from) - pd.Timedelta(days=1)
    return make_split(data.between(None, test_from), start, last_day)


__all__ = ["EvalSplit", "make_split", "validation_split"]
