"""Purchase model, calibration and candidate features: known answers on small planted data."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.rerank.features import NEVER_DAYS, NOT_FOUND_RANK, CollaborativeStats, candidate_features, feature_names
from ecomrec.metrics import expected_calibration_error
from ecomrec.rerank.purchase import PurchaseModel, fit_platt
from ecomrec.metrics import ndcg_from_labels
from ecomrec.candidates import Candidates


def test_expected_calibration_error_by_hand() -> None:
    ece, table = expected_calibration_error(np.array([0.2, 0.2, 0.8, 0.8]), np.array([0, 1, 1, 1]), bins=2)
    # bin [0, .5): predicted .2, observed .5; bin [.5, 1]: predicted .8, observed 1.0; half the pairs each
    assert ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    assert [(row["count"], row["observed"]) for row in table] == [(2, 0.5), (2, 1.0)]


def test_ndcg_from_labels_by_hand() -> None:
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, -np.inf]])
    labels = np.array([[False, True, False], [True, False, False]])
    valid = np.array([[True, True, True], [True, True, False]])
    # user 0: hit at rank 2 -> (1/log2 3) / 1; user 1: hit at rank 2 of two -> same
    assert ndcg_from_labels(scores, labels, valid) == pytest.approx(1 / np.log2(3))


def _planted(users: int, per_user: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature 0 drives P(buy) = sigmoid(3 x0 - 3); feature 1 is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(users * per_user, 2)).astype(np.float32)
    y = rng.random(len(x)) < 1 / (1 + np.exp(-(3 * x[:, 0] - 3)))
    return x, y, np.full(users, per_user)


def test_purchase_model_learns_the_planted_signal_and_calibrates(tmp_path) -> None:
    x, y, groups = _planted(400, 25, seed=1)
    x_valid, y_valid, groups_valid = _planted(200, 25, seed=2)
    x_test, y_test, _ = _planted(400, 25, seed=3)
    model = PurchaseModel(trees=200, leaves=7, learning_rate=0.1, min_child_samples=20, seed=0)
    model.fit(x, y, groups, x_valid, y_valid, groups_valid, ["signal", "noise"])
    margin = model.margin(x_test)
    rank_correlation = np.corrcoef(np.argsort(np.argsort(margin)), np.argsort(np.argsort(x_test[:, 0])))[0, 1]
    assert rank_correlation > 0.9  # orders by the signal
    assert model.importance()["signal"] > 0.8
    a, b = fit_platt(model.margin(x_valid), y_valid)  # Platt-scaled on validation
    p = 1 / (1 + np.exp(-(a * margin + b)))
    assert abs(p.mean() - y_test.mean()) < 0.02  # calibrated to the base rate ...
    assert expected_calibration_error(p, y_test)[0] < 0.04  # ... and bin by bin
    contributions = model.contributions(x_test[:50])
    np.testing.assert_allclose(contributions.sum(axis=1), margin[:50], rtol=1e-5, atol=1e-6)
    model.save(tmp_path, "model")
    np.testing.assert_array_equal(PurchaseModel.load(tmp_path, "model").margin(x_test), margin)


def test_purchase_model_seed_ensemble_averages_its_boosters(tmp_path) -> None:
    import json

    x, y, groups = _planted(400, 25, seed=1)
    x_valid, y_valid, groups_valid = _planted(200, 25, seed=2)
    x_test, _, _ = _planted(100, 25, seed=3)
    single = PurchaseModel(trees=200, leaves=7, learning_rate=0.1, min_child_samples=20, seed=0)
    single.fit(x, y, groups, x_valid, y_valid, groups_valid, ["signal", "noise"])
    model = PurchaseModel(trees=200, leaves=7, learning_rate=0.1, min_child_samples=20, seed=0, models=3)
    model.fit(x, y, groups, x_valid, y_valid, groups_valid, ["signal", "noise"])
    each = [b.predict(x_test, raw_score=True, num_iteration=b.best_iteration) for b in model.boosters]
    assert len(each) == 3 and len(model.best_iterations) == 3
    np.testing.assert_array_equal(each[0], single.margin(x_test))  # the first booster is the single model
    assert not np.allclose(each[0], each[1]) and not np.allclose(each[1], each[2])  # their own bagging seeds
    margin = model.margin(x_test)
    np.testing.assert_allclose(margin, np.mean(each, axis=0))
    np.testing.assert_allclose(model.contributions(x_test[:20]).sum(axis=1), margin[:20], rtol=1e-5, atol=1e-6)
    assert sum(model.importance().values()) == pytest.approx(1.0, abs=1e-3) and model.importance()["signal"] > 0.8
    model.save(tmp_path, "model")
    np.testing.assert_array_equal(PurchaseModel.load(tmp_path, "model").margin(x_test), margin)
    single.save(tmp_path, "old")  # saved before ensembles: no "models" in its description
    meta = json.loads((tmp_path / "old.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "models"}))
    np.testing.assert_array_equal(PurchaseModel.load(tmp_path, "old").margin(x_test), each[0])


def test_candidate_features_by_hand() -> None:
    candidates = Candidates(
        np.array([[2, 0, -1]]),
        np.array([[0.5, 0.25, -np.inf]], dtype=np.float32),
        {
            "own_count": np.array([[3.0, 0.0, 0.0]]),
            "own_days_since": np.array([[6.0, np.nan, np.nan]]),
            "als_rank": np.array([[np.nan, 1.0, np.nan]]),
            "als_score": np.array([[np.nan, 0.9, np.nan]]),
        },
    )
    stats = CollaborativeStats(
        item_buyers=np.array([9.0, 1.0, 4.0]), item_buyers_30d=np.array([1.0, 0.0, 2.0]),
        user_purchases=np.array([7.0]), user_items=np.array([3.0]), item_age_days=np.array([40.0, 2.0, NEVER_DAYS]),
    )
    f = candidate_features(candidates, np.array([0]), stats, ["als"])
    row = dict(zip(feature_names(["als"]), f[0, 0]))
    assert row["fused_position"] == 0 and row["fused_score"] == 0.5
    assert row["own_count_log"] == pytest.approx(np.log1p(3)) and row["own_days_log"] == pytest.approx(np.log1p(6))
    assert row["own_bought"] == 1 and row["als_found"] == 0 and row["n_sources"] == 0
    assert row["als_rank_log"] == pytest.approx(np.log1p(NOT_FOUND_RANK))
    assert row["item_buyers_log"] == pytest.approx(np.log1p(4.0)) and row["user_purchases_log"] == pytest.approx(np.log1p(7.0))
    second = dict(zip(feature_names(["als"]), f[0, 1]))
    assert second["own_days_log"] == pytest.approx(np.log1p(NEVER_DAYS)) and second["als_found"] == 1
    assert second["als_score"] == pytest.approx(0.9) and second["item_buyers_log"] == pytest.approx(np.log1p(9.0))
    assert second["item_age_log"] == pytest.approx(np.log1p(40.0)) and row["item_age_log"] == pytest.approx(np.log1p(NEVER_DAYS))
    assert (f[0, 2] == 0).all()  # padding


def test_item_age_counts_days_from_the_first_sale_to_the_end_of_the_data(tmp_path) -> None:
    import pandas as pd

    from ecomrec.datasets import InteractionColumns, from_files

    pd.DataFrame({"user": ["u0", "u1", "u0"], "item": ["i0", "i0", "i1"],
                  "time": ["2024-01-01 00:00", "2024-01-11 00:00", "2024-01-08 12:00"]}).to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"item_id": ["i0", "i1", "i2"], "title": ["a", "b", "c"]}).to_csv(tmp_path / "catalog.csv", index=False)
    data = from_files(tmp_path / "log.csv", tmp_path / "catalog.csv", columns=InteractionColumns("user", "item", "time"))
    age = CollaborativeStats.of(data).item_age_days
    np.testing.assert_allclose(age[data.items.index(["i0", "i1", "i2"])], [10.0, 2.5, NEVER_DAYS])
