"""The slice table: where methods differ, by kind of target item and by kind of user.

Target kinds, pooled per user: ``repurchase`` (bought by the user before; on the ``all`` ranking),
and among items new to the user (on the ``new`` ranking): ``new_warm`` (first sold more than
NEW_ARRIVAL_DAYS before the cutoff), ``new_arrival`` (first sold within them) and ``cold`` (never
sold before it; ``unlisted`` where the catalog comes from the log). User slice: ``few_baskets``,
users with at most FEW_BASKETS distinct purchase times before the cutoff, on both rankings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.data.split import EvalSplit
from ecomrec.metrics import paired_bootstrap, ranking_metrics

#: An item first sold this many days before the cutoff or later is a new arrival.
NEW_ARRIVAL_DAYS = 30
#: Users with at most this many baskets before the cutoff form the ``few_baskets`` slice.
FEW_BASKETS = 2
#: Paired comparisons reported per slice (method, baseline).
SLICE_COMPARISONS = (("hybrid_rerank", "feature_rerank"), ("hybrid_rerank", "hybrid"), ("feature_rerank", "hybrid"))


def target_kinds(split: EvalSplit) -> dict[str, sp.csr_matrix]:
    """The evaluated users' targets by kind (rows as ``split.users``; see the module docstring)."""
    repurchase = sp.csr_matrix(split.targets_all.multiply(split.seen))
    new = sp.csr_matrix(split.targets_all - repurchase)
    first = split.history.first_sold()
    sold = ~np.isnat(first)
    cutoff = split.test_from if split.test_from is not None else split.target.start
    arrival = sold & (first >= np.datetime64(cutoff - pd.Timedelta(days=NEW_ARRIVAL_DAYS)))
    cold = "unlisted" if split.listed is not None else "cold"
    kinds = {"repurchase": repurchase}
    for name, items in (("new_warm", sold & ~arrival), ("new_arrival", arrival), (cold, ~sold)):
        kinds[name] = sp.csr_matrix(new.multiply(items[None, :].astype(np.float32)))
    for matrix in kinds.values():
        matrix.eliminate_zeros()
    return kinds


def few_basket_users(split: EvalSplit) -> np.ndarray:
    """bool [len(split.users)]: at most FEW_BASKETS distinct purchase times before the cutoff."""
    return few_baskets(split.history.interactions, split.users)


def few_baskets(history: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    """bool [len(users)]: the dense ``users`` with at most FEW_BASKETS distinct purchase times in
    ``history`` (interactions with ``user`` and ``timestamp``)."""
    baskets = history.drop_duplicates(["user", "timestamp"]).groupby("user").size()
    return baskets.reindex(users, fill_value=0).to_numpy() <= FEW_BASKETS


@dataclasses.dataclass
class SliceValues:
    """One slice's per-user values (for pooling over origins before summarising)."""

    slice: str
    ranking: str
    metric: str
    users: int
    targets: int
    per_user: dict[str, dict[str, np.ndarray]]  # method -> recall@10 / ndcg@10 per user
    customers: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # the dense user of each value

    @property
    def key(self) -> tuple[str, str]:
        return self.slice, self.ranking


def slice_values(split: EvalSplit, methods: dict[str, tuple[Any, Any, Any]]) -> list[SliceValues]:
    """Per-user recall@10 and ndcg@10 of each method on each slice (a slice's metric: recall@10
    for target kinds, ndcg@10 else). ``methods``: name → (``all`` ranking, ``new`` ranking, …)."""
    few = few_basket_users(split)
    everyone, new_rows = np.arange(len(split.users)), split.new_rows
    slices = [("all", "all", everyone, split.targets_all, "ndcg@10"), ("new", "new", new_rows, split.targets_new, "ndcg@10")]
    for kind, targets in target_kinds(split).items():
        ranking = "all" if kind == "repurchase" else "new"
        rows = everyone if ranking == "all" else new_rows
        slices.append((kind, ranking, rows[targets[rows].getnnz(axis=1) > 0], targets, "recall@10"))
    slices += [("few_baskets", "all", np.flatnonzero(few), split.targets_all, "ndcg@10"),
               ("few_baskets", "new", new_rows[few[new_rows]], split.targets_new, "ndcg@10")]
    out = []
    for name, ranking, rows, targets, metric in slices:
        positions = rows if ranking == "all" else np.searchsorted(new_rows, rows)  # rows of the new ranking
        per_user = {}
        for method, (ranked_all, ranked_new, _) in methods.items():
            ranked = ranked_all if ranking == "all" else ranked_new
            if len(rows):
                _, values = ranking_metrics(ranked.item_ids[positions], targets[rows], (10,), split.n_items, per_user=True)
            else:
                values = {"recall@10": np.zeros(0), "ndcg@10": np.zeros(0)}
            per_user[method] = {m: np.asarray(values[m], dtype=np.float64) for m in ("recall@10", "ndcg@10")}
        out.append(SliceValues(name, ranking, metric, int(len(rows)), int(targets[rows].nnz), per_user, split.users[rows]))
    return out


def pooled(origins: list[list[SliceValues]]) -> list[SliceValues]:
    """The slices of several origins (or seeds) as one: users (user-origin pairs) and targets added
    up, per-user values and their customers concatenated."""
    out: dict[tuple[str, str], SliceValues] = {}
    for values in origins:
        for v in values:
            merged = out.setdefault(v.key, SliceValues(v.slice, v.ranking, v.metric, 0, 0, {}))
            merged.users += v.users
            merged.targets += v.targets
            merged.customers = np.concatenate([merged.customers, v.customers])
            for method, metrics in v.per_user.items():
                have = merged.per_user.setdefault(method, {m: np.zeros(0) for m in metrics})
                for m, array in metrics.items():
                    have[m] = np.concatenate([have[m], array])
    return list(out.values())


def summarise(values: list[SliceValues], seed: int = 0) -> list[dict[str, Any]]:
    """The slice table: per slice users, targets, each method's mean recall@10 / ndcg@10 and the
    paired-bootstrap intervals of :data:`SLICE_COMPARISONS` on the slice's metric (a customer
    scored at several origins resampled as one)."""
    table = []
    for v in values:
        measured = {m: per for m, per in v.per_user.items() if len(per[v.metric])}
        table.append({"slice": v.slice, "ranking": v.ranking, "metric": v.metric, "users": v.users, "targets": v.targets,
                      "methods": {method: {m: float(a.mean()) for m, a in per.items()} for method, per in measured.items()},
                      "comparisons": {f"{m} - {b}": paired_bootstrap(measured[m][v.metric], measured[b][v.metric], seed=seed,
                                                                                 clusters=v.customers)
                                      for m, b in SLICE_COMPARISONS if m in measured and b in measured}})
    return table

