"""The future is never read: scrambling every row on or after ``test_from`` changes nothing a
method fitted on the protocol's history returns, bit for bit.

The scramble keeps the id maps and the catalog (user and item columns are permuted separately
within the window, so each id still occurs), and changes who bought what and how much. A
negative control fitted on all the data shows the scramble is visible to anything that reads it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.config import (
    ALSConfig, BiEncoderConfig, CrossEncoderConfig, EngineConfig, FusionConfig, HybridConfig, ItemKNNConfig, RerankConfig,
)
from ecomrec.data.dataset import Dataset
from ecomrec.data.synthetic import synthetic
from ecomrec.data.split import make_split
from ecomrec.engine import Engine
from ecomrec.rerank import RerankedRetriever
from ecomrec.retrieval import RETRIEVERS
from ecomrec.retrieval.fusion import HybridRetriever

pytestmark = pytest.mark.slow


def scramble_future(data: Dataset, test_from: str, seed: int = 0) -> Dataset:
    """``data`` with every row on or after ``test_from`` given a random user, item and quantity."""
    frame = data.interactions.copy()
    future = np.flatnonzero((frame["timestamp"] >= np.datetime64(test_from)).to_numpy())
    rng = np.random.default_rng(seed)
    for column in ("user", "item", "quantity"):
        values = frame[column].to_numpy().copy()
        values[future] = values[future][rng.permutation(len(future))]
        frame[column] = values
    return data._with(frame, data.name)


def assert_same_candidates(fit, original: Dataset, scrambled: Dataset, test_from: str, users: np.ndarray, k: int = 100) -> None:  # type: ignore[no-untyped-def]
    a = fit(make_split(original, test_from).history).candidates(users, k)
    b = fit(make_split(scrambled, test_from).history).candidates(users, k)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert set(a.sources) == set(b.sources)
    for name in a.sources:
        np.testing.assert_array_equal(a.sources[name], b.sources[name])


@pytest.fixture(scope="module")
def retail(real_data_path):  # type: ignore[no-untyped-def]
    from ecomrec.datasets import online_retail

    data = online_retail(real_data_path)
    return data, scramble_future(data, "2011-10-01")


@pytest.mark.parametrize("method", ["popularity", "repurchase", "itemknn", "als"])
def test_cheap_methods_on_real_data_never_read_the_future(retail, method: str) -> None:
    original, scrambled = retail
    assert not original.interactions.equals(scrambled.interactions)
    users = make_split(original, "2011-10-01").users
    config = ALSConfig(factors=64, iterations=5) if method == "als" else None  # the fit path, at test cost
    assert_same_candidates(lambda history: RETRIEVERS[method](config, show_progress=False).fit(history), original, scrambled, "2011-10-01", users)


def test_the_scramble_is_visible_to_a_method_fitted_on_everything(retail) -> None:
    original, scrambled = retail
    users = make_split(original, "2011-10-01").users[:200]
    fit = lambda data: RETRIEVERS["itemknn"](ItemKNNConfig()).fit(data)  # noqa: E731
    a, b = fit(original).candidates(users, 100), fit(scrambled).candidates(users, 100)
    assert not np.array_equal(a.item_ids, b.item_ids)  # the negative control: the test can fail


SMALL_HYBRID = HybridConfig(
    als=ALSConfig(factors=8, iterations=5),
    bi_encoder=BiEncoderConfig(layers=1, max_pairs=96, batch_size=16, eval_every=3, patience=1, valid_users=30, valid_days=10),
    fusion=FusionConfig(tune=True),
)
SMALL_RERANK = RerankConfig(
    text=True, cutoffs=3, window_days=10, candidates=30, trees=40, min_child_samples=10, example_bi_encoder_pairs=64,
    cross_encoder=CrossEncoderConfig(layers=2, user_tokens=32, item_tokens=8, max_pairs=128, eval_every=8, patience=1),
)


@pytest.fixture(scope="module")
def shop():  # type: ignore[no-untyped-def]
    data = synthetic(n_users=160, n_items=60, n_clusters=4, purchases_per_user=24, n_cold_items=4, days=120, seed=5)
    return data, scramble_future(data, "2024-04-01")


def test_bi_encoder_and_hybrid_never_read_the_future(shop) -> None:
    original, scrambled = shop
    users = make_split(original, "2024-04-01").users
    assert_same_candidates(lambda h: HybridRetriever(SMALL_HYBRID, show_progress=False).fit(h), original, scrambled, "2024-04-01", users)


def test_the_purchase_reranker_with_bert_never_reads_the_future(shop) -> None:
    original, scrambled = shop
    users = make_split(original, "2024-04-01").users

    def fit(history: Dataset) -> RerankedRetriever:  # the engine's path, its bi-encoder fine-tuned once and continued
        config = EngineConfig(hybrid=SMALL_HYBRID.replace(fusion=FusionConfig(tune=False)), rerank=SMALL_RERANK, fine_tune_once=True)
        engine = Engine(config, show_progress=False).fit(history)
        assert {"bi_encoder_examples", "bi_encoder", "rerank_examples"} <= set(engine.fit_stages_)
        return engine.model_

    assert_same_candidates(fit, original, scrambled, "2024-04-01", users, k=30)
