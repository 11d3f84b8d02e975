"""The slice gate on hand-made validation lists: it refuses exactly the orders that lose a slice
to the fused order, and reads each kind of target from the features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecomrec.candidates import Candidates
from ecomrec.rerank.examples import Examples
from ecomrec.rerank.features import NEVER_DAYS, feature_names
from ecomrec.rerank.slice_gate import bought_first, refusals, slice_means, target_kinds

NAMES = feature_names(["als"])


def _examples(own: np.ndarray, age_days: np.ndarray, labels: np.ndarray, new_lists: np.ndarray) -> Examples:
    """Lists of items 0..k-1 in fused order with the given per-candidate own purchases, item ages and labels."""
    n, k = labels.shape
    features = np.zeros((n, k, len(NAMES)), np.float32)
    features[..., NAMES.index("own_bought")] = own > 0
    features[..., NAMES.index("item_age_log")] = np.log1p(age_days)
    items = np.broadcast_to(np.arange(k), (n, k))
    candidates = Candidates(items, -np.broadcast_to(np.arange(k, dtype=np.float32), (n, k)), {"own_count": own.astype(np.float32)})
    return Examples(pd.Timestamp("2024-01-01"), np.arange(n), [""] * n, candidates, labels, features, new_lists)


def test_kinds_of_target_come_from_the_features() -> None:
    own = np.array([[2, 0, 0, 0, 0]])
    age = np.array([[400.0, 400.0, 30.0, 31.0, NEVER_DAYS]])
    labels = np.array([[True, True, True, True, False]])
    kinds = target_kinds(_examples(own, age, labels, np.array([False])), NAMES)
    np.testing.assert_array_equal(kinds["repurchase"], [[True, False, False, False, False]])
    np.testing.assert_array_equal(kinds["new_warm"], [[False, True, False, True, False]])  # first sold more than 30 days before
    np.testing.assert_array_equal(kinds["new_arrival"], [[False, False, True, False, False]])
    np.testing.assert_array_equal(kinds["cold"], [[False, False, False, False, False]])  # the unsold item was not bought


def test_bought_first_puts_past_purchases_first_each_part_by_probability() -> None:
    p = np.array([[0.9, 0.1, 0.5, 0.3]])
    own = np.array([[0, 1, 0, 3]], np.float32)
    key = bought_first(p, Candidates(np.arange(4)[None], np.zeros((1, 4)), {"own_count": own}))
    np.testing.assert_array_equal(np.argsort(-key, axis=1), [[3, 1, 0, 2]])
    assert bought_first(p, Candidates(np.arange(4)[None], np.zeros((1, 4)))) is None


def test_an_order_that_trades_repurchases_away_is_refused_and_one_that_keeps_them_is_not() -> None:
    """Full lists: each customer re-buys the fused order's first item and buys a new item at 12.
    ``trades`` drops the repurchase below the top 10 and lifts the new item (a higher ndcg@10 on
    nothing else): refused on ``repurchase``; ``keeps`` lifts the new item only: eligible."""
    n, k = 300, 20
    own = np.zeros((n, k))
    own[:, 0] = 1
    labels = np.zeros((n, k), bool)
    labels[:, [0, 12]] = True
    valid = _examples(own, np.full((n, k), 400.0), labels, np.zeros(n, bool))
    fused = -np.broadcast_to(np.arange(k, dtype=np.float64), (n, k))
    trades, keeps = fused.copy(), fused.copy()
    trades[:, 0], trades[:, 12] = -15.0, 1.0
    trades[: n // 3, 0] = 0.5  # a third of the customers keep the repurchase at the top: a spread, not a constant
    keeps[:, 12] = -0.5
    few = np.zeros(n, bool)
    refused = refusals(valid, {"trades": trades, "fused": fused, "keeps": keeps}, NAMES, few, seed=0)
    assert set(refused["all"]) == {"trades"} and set(refused["all"]["trades"]) == {"repurchase"}
    assert np.isclose(refused["all"]["trades"]["repurchase"], -2 / 3)
    assert refused["new"] == {}  # no new-item lists here
    means = slice_means(valid, {"trades": trades, "fused": fused, "keeps": keeps}, NAMES, few)
    assert means["all"]["fused"] == {"repurchase": 1.0} and np.isclose(means["all"]["trades"]["repurchase"], 1 / 3)
    assert means["new"] == {"trades": {}, "fused": {}, "keeps": {}}  # nothing to judge: no slice reported


def test_new_item_lists_are_judged_on_new_arrivals_and_customers_with_few_baskets() -> None:
    """New-item lists: a new arrival at fused place 3 for every customer. ``late`` pushes it to
    place 15 for half of them: refused on ``new_arrival`` and, as those customers are all few-basket
    ones, on ``few_baskets``; on the full lists' slices it is not judged."""
    n, k = 200, 20
    age = np.full((n, k), 400.0)
    age[:, 3] = 5.0
    labels = np.zeros((n, k), bool)
    labels[:, 3] = True
    valid = _examples(np.zeros((n, k)), age, labels, np.ones(n, bool))
    fused = -np.broadcast_to(np.arange(k, dtype=np.float64), (n, k))
    late = fused.copy()
    late[: n // 2, 3] = -15.5
    few = np.arange(n) < n // 2
    refused = refusals(valid, {"fused": fused, "late": late}, NAMES, few, seed=0)
    assert refused["all"] == {}
    assert set(refused["new"]["late"]) == {"new_arrival", "few_baskets"}
    assert np.isclose(refused["new"]["late"]["new_arrival"], -0.5)
