"""The slice table: where methods differ, by kind of target item and by kind of user.

Target kinds, pooled per user: ``repurchase`` (bought by the user before; scored on the ``all``
ranking), and among items new to the user (scored on the ``new`` ranking): ``new_warm`` (sold
before the cutoff, first more than NEW_ARRIVAL_DAYS before it), ``new_arrival`` (first sold
within NEW_ARRIVAL_DAYS before the cutoff) and ``cold`` (never sold before it; where the catalog
comes from the log such an item was unknowable, listed for no method, and the slice is called
``unlisted``). User slice: ``few_baskets``, users with at most FEW_BASKETS distinct purchase
times (baskets, invoices) before the cutoff, on both rankings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.data.split import EvalSplit
from ecomrec.metrics import ranking_metrics

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
    history = split.history.interactions
    first = np.full(split.n_items, np.datetime64("NaT"), dtype="datetime64[ns]")
    earliest = history.groupby("item")["timestamp"].min()
    first[earliest.index.to_numpy()] = earliest.to_numpy()
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
    history = split.history.interactions
    baskets = history.drop_duplicates(["user", "timestamp"]).groupby("user").size()
    counts = baskets.reindex(split.users, fill_value=0).to_numpy()
    return counts <= FEW_BASKETS


def slice_table(split: EvalSplit, methods: dict[str, tuple[Any, Any, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One row per slice: users, targets, recall@10 and ndcg@10 per method, and paired-bootstrap
    intervals (per user) of :data:`SLICE_COMPARISONS` on the slice's metric (recall@10 for target
    kinds, ndcg@10 for user slices). ``methods``: name → (``all`` ranking, ``new`` ranking, …)."""
    from ecomrec.evaluation.protocol import paired_bootstrap

    few = few_basket_users(split)
    new_rows = split.new_rows
    slices: list[tuple[str, str, np.ndarray, sp.csr_matrix, str]] = [
        ("all", "all", np.arange(len(split.users)), split.targets_all, "ndcg@10"),
        ("new", "new", new_rows, split.targets_new, "ndcg@10"),
    ]
    for kind, targets in target_kinds(split).items():
        ranking = "all" if kind == "repurchase" else "new"
        rows = np.arange(len(split.users)) if ranking == "all" else new_rows
        slices.append((kind, ranking, rows[targets[rows].getnnz(axis=1) > 0], targets, "recall@10"))
    slices += [("few_baskets", "all", np.flatnonzero(few), split.targets_all, "ndcg@10"),
               ("few_baskets", "new", new_rows[few[new_rows]], split.targets_new, "ndcg@10")]
    table = []
    for name, ranking, rows, targets, metric in slices:
        positions = rows if ranking == "all" else np.searchsorted(new_rows, rows)  # rows of the new ranking
        row: dict[str, Any] = {"slice": name, "ranking": ranking, "metric": metric, "users": int(len(rows)),
                               "targets": int(targets[rows].nnz), "methods": {}, "comparisons": {}}
        per_user = {}
        for method, (ranked_all, ranked_new, _) in methods.items():
            ranked = ranked_all if ranking == "all" else ranked_new
            if not len(rows):
                continue
            means, per_user[method] = ranking_metrics(ranked.item_ids[positions], targets[rows], (10,), split.n_items, per_user=True)
            row["methods"][method] = {"recall@10": means["recall@10"], "ndcg@10": means["ndcg@10"]}
        for method, baseline in SLICE_COMPARISONS:
            if method in per_user and baseline in per_user:
                row["comparisons"][f"{method} - {baseline}"] = paired_bootstrap(per_user[method][metric], per_user[baseline][metric], seed=seed)
        table.append(row)
    return table
