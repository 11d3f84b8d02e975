"""Known answers for each baseline, and ALS recovering the synthetic shop's planted clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import ALSConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.datasets import InteractionColumns, from_files
from ecomrec.retrieval import ALSRetriever, Candidates, ItemKNNRetriever, PopularityRetriever, RepurchaseRetriever, top_k


@pytest.fixture
def shop(tmp_path: Path):
    """u1 bought x 3 times (long ago) and y once (recently); u2 bought y, z; u3 bought z, w. w is the most recent."""
    frame = pd.DataFrame(
        {
            "user": ["u1", "u1", "u1", "u1", "u2", "u2", "u3", "u3"],
            "item": ["x", "x", "x", "y", "y", "z", "z", "w"],
            "ts": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"],
        }
    )
    frame.to_csv(tmp_path / "log.csv", index=False)
    return from_files(tmp_path / "log.csv", columns=InteractionColumns("user", "item", "ts"))


def _ids(data, result: Candidates, row: int = 0) -> list[str]:
    return [i for i in data.items.ids_of(result.item_ids[row]).tolist() if i is not None]


def test_popularity_counts_distinct_buyers_in_window(shop) -> None:
    model = PopularityRetriever(window_days=30).fit(shop)
    # window Feb 5 .. Mar 5: y (u1, u2) and z (u2, u3) have 2 buyers, w 1, x 0 (bought in January)
    assert _ids(shop, model.candidates([0], k=4)) == ["y", "z", "w", "x"]
    assert model.candidates([0], k=4).scores[0].tolist() == [2, 2, 1, 0]


def test_repurchase_own_items_by_count_then_popularity(shop) -> None:
    model = RepurchaseRetriever().fit(shop)
    u1, u3 = shop.users.index(["u1", "u3"])
    assert _ids(shop, model.candidates([u1], k=4)) == ["x", "y", "z", "w"]  # x thrice, y once, then popular
    assert _ids(shop, model.candidates([u3], k=4)) == ["w", "z", "y", "x"]  # z and w once each: w is more recent
    assert _ids(shop, model.candidates([u1], k=4, exclude="seen")) == ["z", "w"]


def test_itemknn_recommends_co_purchased_items(shop) -> None:
    model = ItemKNNRetriever(neighbours=10).fit(shop)
    u1 = shop.users.index(["u1"])[0]
    # y co-occurs with z (u2); nothing links u1 to w except z's neighbour w, two hops away
    assert _ids(shop, model.candidates([u1], k=2, exclude="seen")) == ["z", "w"]
    result = model.candidates([u1], k=2, exclude="seen")
    assert result.scores[0, 0] > 0 > result.scores[0, 1]  # w is reached only through the popularity fallback


def test_als_recovers_planted_clusters() -> None:
    data = synthetic(n_users=300, n_items=120, n_clusters=4, purchases_per_user=20, noise=0.05, seed=3)
    model = ALSRetriever(ALSConfig(factors=8, iterations=15), show_progress=False).fit(data)
    result = model.candidates(np.arange(data.n_users), k=10, exclude="seen")
    same_cluster = result.item_ids % 4 == (np.arange(data.n_users) % 4)[:, None]
    assert same_cluster.mean() > 0.95  # chance level is 0.25
    # item factors of the same cluster point the same way
    factors = model.item_factors_ / np.linalg.norm(model.item_factors_, axis=1, keepdims=True)
    cosine = factors @ factors.T
    clusters = np.arange(data.n_items) % 4
    same = clusters[:, None] == clusters[None, :]
    assert cosine[same].mean() > 0.5 > cosine[~same].mean()


def test_als_never_returns_cold_items() -> None:
    data = synthetic(n_users=60, n_items=40, n_cold_items=8, seed=2)
    model = ALSRetriever(factors=4, iterations=5, show_progress=False).fit(data)
    result = model.candidates(np.arange(60), k=40)
    assert not np.isin(result.item_ids, np.arange(32, 40)).any()
    assert (result.item_ids[:, 32:] == -1).all()  # only 32 warm items to rank


def test_als_fold_in_is_implicits_exact_user_step() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    data = synthetic(n_users=100, n_items=40, seed=5)
    model = ALSRetriever(factors=6, iterations=10, regularization=0.05, alpha=4.0, show_progress=False).fit(data)
    history = data.user_items(model.config.weighting)[:10]
    reference = AlternatingLeastSquares(factors=6, regularization=0.05, alpha=4.0)
    reference.user_factors, reference.item_factors = model.user_factors_.copy(), model.item_factors_.copy()
    expected = reference.recalculate_user(np.arange(10), history)  # implicit's Cholesky solve
    np.testing.assert_allclose(model.fold_in(history), expected, rtol=1e-3, atol=1e-4)


def assert_same_factors(actual: np.ndarray, expected: np.ndarray) -> None:
    """Row by row the same direction and length, to conjugate gradient's precision."""
    cosine = (actual * expected).sum(axis=1) / (np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-3)


def test_als_update_solves_the_exact_half_steps() -> None:
    """with_interactions's conjugate-gradient half-steps give what implicit's exact (Cholesky)
    recalculate_user / recalculate_item give: users from their whole history, then items."""
    from implicit.cpu.als import AlternatingLeastSquares

    data = synthetic(n_users=120, n_items=40, seed=6, days=90)
    before = data.between(None, "2024-03-15")
    model = ALSRetriever(factors=16, iterations=10, regularization=0.5, alpha=4.0, show_progress=False).fit(before)
    updated = model.with_interactions(data)
    weighted = data.user_items(model.config.weighting)
    changed = (weighted != before.user_items(model.config.weighting)).tocoo()
    users, items = np.unique(changed.row), np.unique(changed.col)
    assert len(users) > 50 and len(items) > 20
    reference = AlternatingLeastSquares(factors=16, regularization=0.5, alpha=4.0)
    reference.user_factors, reference.item_factors = model.user_factors_.copy(), model.item_factors_.copy()
    expected_users = reference.recalculate_user(users, weighted[users])
    assert_same_factors(updated.user_factors_[users], expected_users)
    reference.user_factors = updated.user_factors_.copy()
    expected_items = reference.recalculate_item(items, weighted.T.tocsr()[items])
    assert_same_factors(updated.item_factors_[items], expected_items)
    untouched = np.setdiff1d(np.arange(data.n_users), users)
    np.testing.assert_array_equal(updated.user_factors_[untouched], model.user_factors_[untouched])


def test_top_k_ties_break_by_lower_index_regardless_of_batch() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [5.0, 5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    result = top_k(scores, 2)
    assert result.item_ids.tolist() == [[1, 2], [0, 1]]
    assert top_k(scores[1:], 2).item_ids.tolist() == [[0, 1]]
    masked = np.array([[-np.inf, 2.0, -np.inf]], dtype=np.float32)
    padded = top_k(masked, 3)
    assert padded.item_ids.tolist() == [[1, -1, -1]] and np.isneginf(padded.scores[0, 1:]).all()


def test_candidates_validation_and_helpers() -> None:
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        Candidates(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="source"):
        Candidates(np.zeros((1, 2)), np.zeros((1, 2)), {"als": np.zeros((1, 3))})
    result = Candidates(np.array([[3, 1, -1]]), np.array([[0.5, 0.2, -np.inf]]), {"als": np.array([[1.0, 2.0, np.nan]])})
    assert result.to_lists() == [[3, 1]]
    both = Candidates.concat([result, result])
    assert both.n_queries == 2 and both.sources["als"].shape == (2, 3) and both[1:].n_queries == 1
