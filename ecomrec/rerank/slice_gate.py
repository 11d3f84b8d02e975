"""The slice gate: an order serves a kind of list only where, on the validation cutoff, it loses no
kind of target (nor the customers with few baskets) to the fused order it would reorder.

Validation keeps, per kind of list, the order that ranks its lists best by ndcg@10. An order can
win that mean by trading one kind of target away: on dunnhumby's full lists the purchase model
ranked customers' repurchases below where the fused order had them, for new items
(benchmarks/README.md, "The default at dunnhumby's August origin"). The gate applies the slice
table's bar (:mod:`ecomrec.evaluation.slices`) where the choice is made: an order whose
per-customer value on a slice is below the fused order's, with a paired 95 % bootstrap interval
wholly below zero, is not eligible. The slices are the table's: ``repurchase`` on full lists,
``new_warm``, ``new_arrival`` and ``cold`` on new-item lists (recall@10 of the labelled candidates
of that kind), ``few_baskets`` on both (ndcg@10). Beside the others it offers the purchase model's
order with the customer's past purchases first (:data:`BOUGHT_FIRST`), so a model refused for
trading repurchases away can still order both parts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecomrec.candidates import Candidates
from ecomrec.data.slices import NEW_ARRIVAL_DAYS
from ecomrec.metrics import ndcg_rows, paired_bootstrap
from ecomrec.rerank.examples import Examples
from ecomrec.rerank.features import NEVER_DAYS

#: The purchase model's order with the customer's past purchases (``own_count`` > 0) first.
BOUGHT_FIRST = "purchase_model_bought_first"
#: The slices judged on each kind of list (as the slice table ranks them).
SLICES = {"all": ("repurchase", "few_baskets"), "new": ("new_warm", "new_arrival", "cold", "few_baskets")}


def bought_first(p: np.ndarray, candidates: Candidates) -> np.ndarray | None:
    """float64 [n, k] sort keys (higher first): the candidates the customer bought before, then the
    rest, each part by ``p`` (probabilities in [0, 1]); None where the candidates carry no
    ``own_count`` (no purchase history was fused)."""
    own = candidates.sources.get("own_count")
    if own is None:
        return None
    return np.where(np.nan_to_num(own, nan=0.0) > 0, p + 2.0, p)


def target_kinds(valid: Examples, names: list[str]) -> dict[str, np.ndarray]:
    """bool [n, k]: the labelled candidates of each kind of target, read from the features
    (``names``: their columns): bought before, or by the item's age at the cutoff."""
    column = {name: valid.features[..., i] for i, name in enumerate(names)}
    labels = valid.labels.astype(bool) & (valid.candidates.item_ids >= 0)
    age = np.expm1(column["item_age_log"].astype(np.float64))  # days since the item's first sale; NEVER_DAYS if unsold
    sold, arrival = age < NEVER_DAYS - 0.5, age <= NEW_ARRIVAL_DAYS + 0.01  # (float32 features: a hundredth of a day's slack)
    bought = column["own_bought"] > 0
    new = labels & ~bought
    return {"repurchase": labels & bought, "new_warm": new & sold & ~arrival, "new_arrival": new & sold & arrival, "cold": new & ~sold}


def refusals(valid: Examples, keys: dict[str, np.ndarray], names: list[str], few: np.ndarray,
             seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """Kind of list → refused order → slice → its mean difference to the fused order there, for
    every order in ``keys`` (float [n, k] sort keys of ``valid``'s lists, ``fused`` among them)
    below the fused order on a slice of that kind with an interval wholly below zero. ``few``:
    bool [n], the lists of customers with few baskets. An order at or above the fused order on a
    slice's mean is not bootstrapped there (its interval cannot lie below zero)."""
    shown, labels = valid.candidates.item_ids >= 0, valid.labels.astype(bool)
    targets = target_kinds(valid, names)
    values = {name: _slice_values(key, shown, labels, targets, few) for name, key in keys.items()}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind, rows in (("all", ~valid.new_lists), ("new", valid.new_lists)):
        out[kind] = {}
        for name in keys:
            if name == "fused":
                continue
            for slice_ in SLICES[kind]:
                mine, fused = (values[n][slice_] for n in (name, "fused"))
                judged = rows & ~np.isnan(fused)
                if not judged.any() or (diff := float((mine[judged] - fused[judged]).mean())) >= 0:
                    continue
                if paired_bootstrap(mine[judged], fused[judged], seed=seed)["ci95"][1] < 0:
                    out[kind].setdefault(name, {})[slice_] = diff
    return out


def slice_means(valid: Examples, keys: dict[str, np.ndarray], names: list[str], few: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """Kind of list → order → slice → the order's mean on the slice (the lists :func:`refusals`
    judges), for the record: what each order traded on the validation cutoff, refused or not."""
    shown, labels = valid.candidates.item_ids >= 0, valid.labels.astype(bool)
    targets = target_kinds(valid, names)
    out: dict[str, dict[str, dict[str, float]]] = {"all": {}, "new": {}}
    for name, key in keys.items():
        values = _slice_values(key, shown, labels, targets, few)
        for kind, rows in (("all", ~valid.new_lists), ("new", valid.new_lists)):
            out[kind][name] = {s: float(np.nanmean(values[s][rows])) for s in SLICES[kind] if np.isfinite(values[s][rows]).any()}
    return out


def _slice_values(key: np.ndarray, shown: np.ndarray, labels: np.ndarray, targets: dict[str, np.ndarray],
                  few: np.ndarray) -> dict[str, np.ndarray]:
    """float64 [n] per list, NaN where the list is not in the slice: recall@10 of each kind of
    target, and ndcg@10 (``few_baskets``) of the few-basket customers' lists."""
    order = np.argsort(-np.where(shown, key, -np.inf), axis=1, kind="stable")[:, :10]
    top = np.zeros(shown.shape, bool)
    np.put_along_axis(top, order, True, axis=1)
    out: dict[str, Any] = {}
    for kind, mask in targets.items():
        count = mask.sum(axis=1)
        out[kind] = np.where(count > 0, (mask & top).sum(axis=1) / np.maximum(count, 1), np.nan)
    out["few_baskets"] = np.where(few, ndcg_rows(key, labels, shown), np.nan)
    return out
