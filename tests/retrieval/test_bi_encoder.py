"""Bi-encoder specifics: search, cold items, unseen users by item list, the embedding cache and
catalog updates, fine-tuning on planted data, and search on the real catalog."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.config import BiEncoderConfig
from ecomrec.data import Catalog
from ecomrec.data.synthetic import synthetic
from ecomrec.exceptions import ArtifactError
from ecomrec.retrieval import BiEncoderRetriever


@pytest.fixture(scope="module")
def shop():
    return synthetic(n_users=120, n_items=80, n_clusters=4, purchases_per_user=20, n_cold_items=8, seed=5)


@pytest.fixture(scope="module")
def zero_shot(shop) -> BiEncoderRetriever:
    return BiEncoderRetriever(fine_tune=False, layers=2, show_progress=False).fit(shop)


def test_search_finds_matching_titles_and_cold_items(zero_shot, shop) -> None:
    hits = zero_shot.search(["green garden", "red retrospot"], k=5)
    titles = shop.catalog["text"].to_numpy()
    assert all(t.startswith("green garden") for t in titles[hits.item_ids[0]])
    assert all(t.startswith("red retrospot") for t in titles[hits.item_ids[1]])
    cold = np.arange(72, 80)  # listed, never bought: text still finds them
    only_cold = zero_shot.search("green garden", k=3, allow=cold)
    assert np.isin(only_cold.item_ids, cold).all()
    with pytest.raises(ValueError, match="non-empty"):
        zero_shot.search(["  "], k=3)
    with pytest.raises(ValueError, match="k must be"):
        zero_shot.search("mug", k=0)


def test_personalised_search_leans_to_the_users_cluster(zero_shot, shop) -> None:
    plain = zero_shot.search("notebook", k=20).item_ids[0]
    users = np.arange(4)  # one user per cluster
    personal = zero_shot.search(["notebook"] * 4, k=20, user_ids=users).item_ids
    for user, row in zip(users, personal):
        assert (row % 4 == user % 4).mean() >= (plain % 4 == user % 4).mean()


def test_catalog_change_reembeds_only_changes_and_leaves_the_original_as_it_was(zero_shot, shop) -> None:
    ids = list(shop.items.ids)
    texts = list(shop.catalog["text"])
    before = zero_shot.search("black skull", k=3).item_ids.copy()
    texts[3] = "black skull doormat 3"  # one changed title
    changed = zero_shot.with_catalog(Catalog.of(ids[:-2] + ["i-new"], texts[:-2] + ["black skull tote new"]))
    stats = changed.catalog_change_
    assert stats == {**stats, "listed": 79, "new": 1, "changed": 1, "removed": 2, "encoded": 2}
    hits = changed.search("black skull", k=3).item_ids[0]
    new_dense = changed.items_.index(["i-new"])[0]
    assert new_dense == 80 and {new_dense, 3} <= set(hits.tolist())
    assert not np.isin(changed.search("green garden", k=78).item_ids, [78, 79]).any()  # delisted
    np.testing.assert_array_equal(zero_shot.search("black skull", k=3).item_ids, before)  # the original serves as before
    assert zero_shot.n_items == 80 and zero_shot.item_texts_[3] == shop.catalog["text"][3]
    again = changed.with_catalog(Catalog.of(ids[:-2] + ["i-new"], texts[:-2] + ["black skull tote new"]))
    assert again.catalog_change_["encoded"] == 0  # every title already has its vector
    twins = again.with_catalog(Catalog.of(ids[:-2] + ["i-a", "i-b", "i-c"], texts[:-2] + ["plaid scarf", "plaid scarf", "wool hat"]))
    assert twins.catalog_change_["new"] == 3 and twins.catalog_change_["encoded"] == 2  # one title shared by two items is embedded once
    a, b = twins.items_.index(["i-a", "i-b"])
    assert set(twins.search("plaid scarf", k=2).item_ids[0].tolist()) == {a, b}
    twins.verify_items(twins.items_.index(ids[:-2] + ["i-a", "i-b", "i-c"]))


def test_a_saved_retriever_keeps_its_title_vectors_as_parquet_and_reencodes_nothing(zero_shot, shop, tmp_path) -> None:
    import pyarrow.dataset as ds

    folder = zero_shot.save(tmp_path / "bi")
    table = ds.dataset(folder / "embeddings", format="parquet").to_table()
    assert table.num_rows == len(zero_shot.items_)
    stored = dict(zip(table.column("item_id").to_pylist(), table.column("vector").to_pylist()))
    np.testing.assert_allclose(stored[str(zero_shot.items_.ids[5])], zero_shot.embed_items([zero_shot.item_texts_[5]])[0], atol=1e-6)
    loaded = BiEncoderRetriever.load(folder)
    np.testing.assert_array_equal(loaded.index_vectors_(), zero_shot.index_vectors_())  # every vector from the store
    assert loaded.titles_missing(loaded.item_texts_) == []


def test_load_refuses_replaced_weights(shop, tmp_path) -> None:
    model = BiEncoderRetriever(fine_tune=False, layers=1, show_progress=False).fit(shop)
    folder = model.save(tmp_path / "bi")
    (folder.resolve() / "model_hash.txt").write_text("0" * 16)
    with pytest.raises(ArtifactError):
        BiEncoderRetriever.load(folder)


@pytest.mark.slow
def test_fine_tuning_improves_validation_recall_on_planted_data() -> None:
    # titles name the cluster only by an opaque code, so the base model cannot know the clusters
    data = synthetic(n_users=300, n_items=120, n_clusters=4, purchases_per_user=24, noise=0.1, seed=9)
    codes = {theme: f"zx{n}q" for n, theme in enumerate(data.catalog["category"].unique())}
    data.catalog["text"] = [f"item {codes[c]} {n}" for n, c in enumerate(data.catalog["category"])]
    config = BiEncoderConfig(layers=2, max_pairs=3000, batch_size=16, eval_every=20, patience=3, valid_users=60, learning_rate=3e-4)
    model = BiEncoderRetriever(config, show_progress=False).fit(data)
    log = model.training_log_
    assert max(e["valid_recall@100"] for e in log[1:]) > log[0]["valid_recall@100"]


@pytest.mark.slow
def test_search_on_the_real_catalog(real_data_path) -> None:
    from ecomrec.datasets import online_retail

    data = online_retail(real_data_path)
    model = BiEncoderRetriever(fine_tune=False, show_progress=False).fit(data.between("2011-09-01", None))
    hits = model.search("red retrospot lunch bag", k=5)
    titles = data.catalog["text"].to_numpy()[hits.item_ids[0]].tolist()
    assert titles[0] == "LUNCH BAG RED RETROSPOT"
    assert sum("RETROSPOT" in t for t in titles) >= 3


def test_fine_tuning_uses_the_trainer_and_prints_nothing(capsys) -> None:
    """sentence-transformers' trainer with early stopping on validation recall; no print()."""
    data = synthetic(n_users=120, n_items=60, n_clusters=4, purchases_per_user=20, days=120, seed=3)
    model = BiEncoderRetriever(layers=1, max_pairs=200, batch_size=16, eval_every=4, patience=1, valid_users=30,
                               valid_days=20, show_progress=False).fit(data)
    steps = [row["step"] for row in model.training_log_]
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) >= 2  # zero-shot, then every eval_every steps
    assert all(0.0 <= row["valid_recall@100"] <= 1.0 for row in model.training_log_)
    assert capsys.readouterr().out == ""


def test_training_continues_from_an_earlier_fine_tune() -> None:
    """``start_from``: the weights come from the earlier model (not the base), which stays as it was."""
    import torch

    data = synthetic(n_users=120, n_items=60, n_clusters=4, purchases_per_user=20, days=120, seed=3)
    config = BiEncoderConfig(layers=1, max_pairs=200, batch_size=16, eval_every=4, patience=1, valid_users=30, valid_days=20)
    early = BiEncoderRetriever(config.replace(fine_tune=False), show_progress=False).fit(data.between(None, data.end - np.timedelta64(30, "D")))
    with torch.no_grad():  # stands for an earlier fine-tune: weights that are not the base model's
        next(early.model_.parameters()).mul_(1.5)
    early._prepare_inference()  # encode_queries is uncached: it sees the new weights
    titles = list(data.item_texts)
    before = early.encode_queries(titles).copy()
    carried = BiEncoderRetriever(config.replace(fine_tune=False), show_progress=False).fit(data, start_from=early)
    np.testing.assert_allclose(carried.encode_queries(titles), before, atol=1e-6)
    base = BiEncoderRetriever(config.replace(fine_tune=False), show_progress=False).fit(data)
    assert np.abs(base.encode_queries(titles) - before).max() > 1e-3  # the base model's vectors are other ones
    continued = BiEncoderRetriever(config, show_progress=False).fit(data, start_from=early)
    assert continued.training_log_[0]["valid_recall@100"] == pytest.approx(carried._valid_recall(continued.validation_))
    trained = continued.describe()["training"]["weights"] == "trained"
    assert continued.trained_until_ == (data.end if trained else early.trained_until_)  # the last purchase its weights learned from
    np.testing.assert_allclose(early.encode_queries(titles), before, atol=1e-6)  # left unchanged
    with pytest.raises(ValueError, match="layers"):
        BiEncoderRetriever(config.replace(layers=2), show_progress=False).fit(data, start_from=early)


def test_int8_titles_get_the_same_vector_whatever_their_batch_mates() -> None:
    data = synthetic(n_users=20, n_items=12, n_clusters=2, seed=1)
    retriever = BiEncoderRetriever(BiEncoderConfig(layers=1, fine_tune=False, quantize="int8"), show_progress=False).fit(data)
    titles = ["red retrospot mug", "a long title of a green garden lunch bag with many words in it", "tin"]
    together = retriever.embed_items(titles)
    for title, vector in zip(titles, together):
        np.testing.assert_allclose(retriever.encode_titles([title])[0], vector, atol=1e-6)
    queries = retriever.encode_queries(titles)  # queries are int8: close to, not equal to, the float vectors
    assert 1e-4 < np.abs(queries - together).max() < 0.1


def test_recent_pairs_and_replay_are_drawn_around_the_served_models_last_purchase() -> None:
    """A warm refit's pairs: every pair after ``recent_from`` (up to ``max_pairs``), ``replay`` times as many older ones."""
    from ecomrec.retrieval.pairs import next_item_pairs

    data = synthetic(n_users=120, n_items=60, n_clusters=4, purchases_per_user=20, days=120, seed=3)
    every = next_item_pairs(data, history_items=10, max_pairs=10**6, seed=0, per_basket=3)
    recent_from = data.end - np.timedelta64(20, "D")
    after = int((every.times > np.datetime64(recent_from)).sum())
    assert 20 < after < len(every) // 2  # the planted log has both kinds
    for replay, max_pairs, expect_recent, expect_old in ((1.0, 10**6, after, after), (0.5, 10**6, after, round(after / 2)),
                                                         (0.0, 10**6, after, 0), (1.0, after + 5, after, 5), (1.0, 10, 10, 0)):
        pairs = next_item_pairs(data, history_items=10, max_pairs=max_pairs, seed=0, per_basket=3, recent_from=recent_from, replay=replay)
        recent = pairs.times > np.datetime64(recent_from)
        assert (int(recent.sum()), int((~recent).sum())) == (expect_recent, expect_old)


def test_a_warm_continuation_validates_on_purchases_the_served_model_never_read() -> None:
    data = synthetic(n_users=120, n_items=60, n_clusters=4, purchases_per_user=20, days=120, seed=3)
    config = BiEncoderConfig(layers=1, max_pairs=200, batch_size=16, eval_every=4, patience=1, valid_users=30, valid_days=20)
    served = BiEncoderRetriever(config, show_progress=False).fit(data.between(None, data.end - np.timedelta64(10, "D")))
    served.trained_until_ = data.between(None, data.end - np.timedelta64(10, "D")).end  # as a fine-tune that beat the base
    # model would date it (on 60 items recall@100 is 1.0 whatever the weights, so none does)
    warm = BiEncoderRetriever(config.replace(learning_rate=1e-4), show_progress=False).fit(
        data, start_from=served, recent_after=served.trained_until_, replay=1.0)
    assert warm.validation_.start > served.trained_until_  # 10 days, not the config's 20: the served model read the rest
    assert warm.training_log_[0]["valid_recall@100"] == pytest.approx(served._valid_recall(warm.validation_))  # step 0: the served weights
    assert 0 < warm.training_log_[0]["pairs"] <= config.max_pairs
    window = data.between(warm.validation_.start).user_items("binary")
    before = data.between(None, warm.validation_.start).user_items("binary")
    eligible = int((((window - window.multiply(before)).getnnz(axis=1) > 0) & (before.getnnz(axis=1) > 0)).sum())
    assert len(warm.validation_.users) <= max(1, eligible // 2)  # the other half's new purchases are trained on
    steps = warm.training_log_[0]["pairs"] // config.batch_size
    assert steps >= 4 and len(warm.training_log_) >= 3  # however few the steps, validated at least twice
    trained = warm.describe()["training"]["weights"] == "trained"
    assert warm.trained_until_ == (data.end if trained else served.trained_until_)  # the last purchase its weights learned from
    nothing_new = BiEncoderRetriever(config, show_progress=False).fit(data, start_from=warm, recent_after=data.end)
    assert nothing_new.training_log_ == [] and "cannot validate" in nothing_new.kept_start_
    assert nothing_new.model_hash_ == warm.model_hash_  # the served weights, and its title vectors reused
    np.testing.assert_array_equal(nothing_new.titles_.vectors, warm.titles_.vectors)
    assert nothing_new.describe()["training"]["weights"].startswith("start (")
    with pytest.raises(ValueError, match="start_from"):
        BiEncoderRetriever(config, show_progress=False).fit(data, recent_after=data.end)


def test_training_date_and_weights_survive_saving(tmp_path) -> None:
    data = synthetic(n_users=60, n_items=30, n_clusters=2, purchases_per_user=10, days=60, seed=2)
    model = BiEncoderRetriever(BiEncoderConfig(layers=1, fine_tune=False), show_progress=False).fit(data)
    model.trained_until_ = data.end  # as a fine-tune sets it
    assert BiEncoderRetriever.load(model.save(tmp_path / "bi")).trained_until_ == data.end
    model.weights_only().save_weights(tmp_path / "weights")
    weights = BiEncoderRetriever.load_weights(tmp_path / "weights", model.config)
    assert weights.trained_until_ == data.end and weights.model_hash_ == model.model_hash_
    held = {p.name for p in (tmp_path / "weights").rglob("*") if p.is_file()}
    assert not {"users.json", "items.json", "state.npz"} & held  # nothing about any customer or item
    (tmp_path / "weights" / "weights.json").write_text('{"trained_until": null, "model_hash": "other"}')
    with pytest.raises(ArtifactError, match="fingerprint"):
        BiEncoderRetriever.load_weights(tmp_path / "weights", model.config)
