"""The sequence model on data with known answers: what it reads from a log, what it is trained
to find, and that it learns order, which no bag-of-items retriever can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import BiEncoderConfig, FusionConfig, HybridConfig, SequenceConfig
from ecomrec.data import Catalog, Dataset, IdMap
from ecomrec.retrieval import ALSRetriever, HybridRetriever, SequenceRetriever
from ecomrec.retrieval.sequence import future_targets, gaps, purchase_sequences, shuffled_baskets

N_ITEMS, CHAIN, GAP_DAYS = 30, 6, 20


def log(rows: list[tuple[int, int, str]], n_users: int, n_items: int) -> Dataset:
    users, items, times = zip(*rows)
    frame = pd.DataFrame({"user": np.array(users, np.int32), "item": np.array(items, np.int32),
                          "timestamp": pd.to_datetime(list(times)), "quantity": np.float32(1.0)})
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    catalog = pd.DataFrame({"item_id": [f"i{n}" for n in range(n_items)], "text": [f"item number {n}" for n in range(n_items)],
                            "price": 1.0, "category": "", "first_seen": pd.NaT})
    return Dataset(frame, catalog, IdMap(f"u{n}" for n in range(n_users)), IdMap(catalog["item_id"]))


def chains(n_users: int = 150) -> Dataset:
    """User u buys items s, s+1, ..., s+CHAIN-1 (mod N_ITEMS, s = u mod N_ITEMS), one every GAP_DAYS:
    the item after a user's last is s+CHAIN, and only the order says it is not s-1."""
    start = pd.Timestamp("2024-01-01")
    rows = [(u, (u + j) % N_ITEMS, str(start + pd.Timedelta(days=GAP_DAYS * j + u % 3))) for u in range(n_users) for j in range(CHAIN)]
    return log(rows, n_users, N_ITEMS)


def test_sequences_are_the_latest_purchases_in_time_order_left_padded() -> None:
    data = log([(0, 2, "2024-01-03"), (0, 1, "2024-01-01"), (0, 3, "2024-01-10"), (1, 4, "2024-01-02")], 3, 5)
    seq, days = purchase_sequences(data, 2)
    assert seq.tolist() == [[2, 3], [-1, 4], [-1, -1]]
    epoch = pd.Timestamp("2024-01-01").value // 86_400_000_000_000
    assert (days[0] - epoch).tolist() == [2.0, 9.0] and np.isnan(days[2]).all()
    assert gaps(days).tolist() == [[0, 3], [0, 0], [0, 0]]  # 7 days: bucket 1 + floor(log2 7)
    before, _ = purchase_sequences(data, 3, until=pd.Timestamp("2024-01-05"))
    assert before.tolist() == [[-1, 1, 2], [-1, -1, 4], [-1, -1, -1]]


def test_targets_are_later_purchases_within_the_horizon() -> None:
    seq = np.array([[-1, 5, 6, 7, 8]])
    days = np.array([[np.nan, 0.0, 10.0, 50.0, 50.0]])
    rng = np.random.default_rng(0)
    for _ in range(20):  # 5 -> 6 (7 and 8 are 50 days on); 6 -> nothing within 30 days; 7 -> 8 (the same day)
        assert future_targets(seq, days, 30, rng).tolist() == [[-1, 6, -1, 8, -1]]
    shuffled, shuffled_days = shuffled_baskets(seq, days, rng)
    assert shuffled[0, :3].tolist() == [-1, 5, 6] and sorted(shuffled[0, 3:]) == [7, 8]
    np.testing.assert_array_equal(shuffled_days, days)


@pytest.fixture(scope="module")
def chain_model() -> tuple[Dataset, SequenceRetriever]:
    data = chains()
    model = SequenceRetriever(dim=32, heads=2, layers=1, dropout=0.0, learning_rate=0.01, epochs=40, patience=40,
                              show_progress=False)
    return data, model.fit(data)


def test_the_sequence_model_learns_order_which_als_cannot(chain_model) -> None:
    data, model = chain_model
    users = np.arange(data.n_users)
    after = (users + CHAIN) % N_ITEMS
    found = model.candidates(users, k=1, exclude="seen").item_ids[:, 0]
    assert (found == after).mean() >= 0.9
    als = ALSRetriever(factors=8, iterations=10, regularization=0.01, show_progress=False).fit(data)
    assert (als.candidates(users, k=1, exclude="seen").item_ids[:, 0] == after).mean() <= 0.6


def test_a_new_item_joins_through_its_title_vector(chain_model, tmp_path: Path) -> None:
    """Given the title vectors of an extended item map, a new item is indexed by its projected
    title: a copy of item 7's title vector is found where item 7 is."""
    data, model = chain_model
    items = IdMap([*data.items.ids, "new"])
    titles = np.vstack([model.titles_, model.titles_[7]])
    catalog = Catalog.of(items.ids, [*data.item_texts, data.item_texts[7]])
    grown = model.with_catalog(catalog, items=items, title_vectors=titles)
    assert grown.index_.n_items == N_ITEMS + 1 and len(grown.items_) == N_ITEMS + 1
    with pytest.raises(ValueError, match="extend"):
        model.with_catalog(catalog, items=IdMap(["new", *data.items.ids]), title_vectors=titles)
    np.testing.assert_allclose(grown.item_vectors_[N_ITEMS], grown.item_vectors_[7] - _id_part(model, 7), atol=1e-5)
    users = np.arange(10)
    np.testing.assert_array_equal(model.candidates(users, k=3).item_ids, grown.candidates(users, k=3, allow=np.arange(N_ITEMS)).item_ids)
    assert N_ITEMS in grown.candidates(users, k=3, allow=[N_ITEMS, 0]).item_ids
    dropped = model.with_catalog(Catalog.of(data.items.ids[1:], data.item_texts[1:]))
    assert 0 not in dropped.candidates(np.arange(data.n_users), k=N_ITEMS).item_ids
    loaded = SequenceRetriever.load(grown.save(tmp_path / "grown"))
    np.testing.assert_array_equal(loaded.candidates(users, k=5).item_ids, grown.candidates(users, k=5).item_ids)


def _id_part(model: SequenceRetriever, item: int) -> np.ndarray:
    return model.network_.item_id.weight[item].detach().numpy() * float(model.network_.sold[item])


def test_the_hybrid_fuses_the_sequence_source_and_saves_it(tmp_path: Path) -> None:
    data = chains(60)
    config = HybridConfig(bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                          sequence=SequenceConfig(dim=16, heads=2, layers=1, epochs=3),
                          fusion=FusionConfig(tune=False, quotas={"own": 10, "sequence": 10, "bi_encoder": 10},
                                              weights={"own": 1.0, "sequence": 1.0, "bi_encoder": 1.0}))
    hybrid = HybridRetriever(config, show_progress=False).fit(data)
    # the sequence model reads the bi-encoder's title vectors
    np.testing.assert_array_equal(hybrid.models_["sequence"].titles_, hybrid.models_["bi_encoder"].index_vectors_())
    found = hybrid.candidates(np.arange(5), k=10, exclude="seen")
    assert np.isfinite(found.sources["sequence_rank"]).any()
    loaded = HybridRetriever.load(hybrid.save(tmp_path / "hybrid"))
    np.testing.assert_array_equal(loaded.candidates(np.arange(5), k=10, exclude="seen").item_ids, found.item_ids)
    listed = Catalog.of([*data.items.ids, "new"], [*data.item_texts, "item number 3"])
    changed = hybrid.with_catalog(listed)
    assert changed.models_["sequence"].index_.n_items == N_ITEMS + 1
