"""Catalog search: BM25 with normalised terms, the dense side, their fusion, filters, catalog changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecomrec.candidates import Candidates
from ecomrec.config import BiEncoderConfig, FusionConfig, SearchConfig
from ecomrec.data import Catalog
from ecomrec.data.synthetic import synthetic
from ecomrec.retrieval.fusion import fuse
from ecomrec.retrieval.search import LexicalIndex, TextSearch

BUNS = ["HAMBURGER BUNS - 15 OZ", "HAMBURGER BUNS - 12 OZ", "HOT DOG BUNS - 15 OZ", "paper plates"]


def test_lexical_search_meets_plurals_and_sizes_however_written() -> None:
    index = LexicalIndex().fit(BUNS)
    np.testing.assert_array_equal(index.scores("hamburger bun 15 ounces"), index.scores("Hamburger Buns 15oz"))
    assert index.search(["bun"], k=4).to_lists() == [[0, 1, 2]]  # every bun; the longest title last
    # all three terms, then two of them: the shorter title of equal idf wins; plates never
    assert index.search(["hamburger bun 15 ounces"], k=4).to_lists() == [[0, 1, 2]]
    assert index.search(["bun"], k=4, allow=np.array([False, True, True, True])).to_lists() == [[1, 2]]
    assert index.search(["umbrella"], k=4).to_lists() == [[]]


def test_fusion_lets_equal_scores_share_a_rank_when_asked() -> None:
    first = Candidates(np.array([[5, 7, 9]]), np.array([[1.0, 1.0, 0.5]]))  # 5 and 7 tie here
    second = Candidates(np.array([[7, 5]]), np.array([[0.9, 0.8]]))  # and 7 leads here
    rrf = FusionConfig(quotas={}, tune=False)
    lists, weights = {"a": first, "b": second}, {"a": 0.5, "b": 0.5}
    assert fuse(lists, weights, rrf, 3, 10, shared_ranks=True).to_lists() == [[7, 5, 9]]
    assert fuse(lists, weights, rrf, 3, 10).to_lists() == [[5, 7, 9]]  # positions: a full tie, lower id first


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=40, n_items=24, n_clusters=4, seed=2)


@pytest.fixture(scope="module")
def search(data) -> TextSearch:
    return TextSearch(SearchConfig(dense=BiEncoderConfig(layers=1, fine_tune=False)), show_progress=False).fit(data)


def test_filters_hold_on_both_lists(search, data) -> None:
    blue = set(np.flatnonzero(data.catalog["category"] == "blue polkadot"))
    assert set(search.search("mug", k=24, category="Blue  POLKADOT").to_lists()[0]) == blue
    assert set(search.search("mug", k=24, category=["blue polkadot", "red retrospot"]).to_lists()[0]) == (
        blue | set(np.flatnonzero(data.catalog["category"] == "red retrospot"))
    )
    assert set(search.search("mug", k=10, allow=np.array([3, 7])).to_lists()[0]) == {3, 7}
    with pytest.raises(ValueError, match="category"):
        search.search("mug", k=3, category=[])


def test_the_lexical_weight_runs_from_one_list_to_the_other(search) -> None:
    queries = ["red retrospot mug", "green garden lunch bag"]
    lexical = search.search(queries, k=8, lexical_weight=1.0)
    assert lexical.to_lists() == search.lexical_.search(queries, 8).to_lists()
    dense = search.search(queries, k=8, lexical_weight=0.0)
    assert dense.to_lists() == search.dense_.search(queries, 8).to_lists()
    fused = search.search(queries, k=8)
    assert set(fused.sources) >= {"lexical_rank", "dense_rank"} and fused.to_lists() != dense.to_lists()


def test_a_new_catalog_is_searched_at_once(search, data) -> None:
    ids = list(data.items.ids[1:]) + ["NEW1"]
    texts = list(data.item_texts[1:]) + ["tartan umbrella"]
    categories = list(data.catalog["category"][1:]) + ["rain wear"]
    updated = search.with_catalog(Catalog.of(ids, texts, categories))
    assert updated.catalog_change_["new"] == 1 and updated.catalog_change_["encoded"] == 1  # only the new title was embedded
    new = updated.items_.index(["NEW1"])[0]
    assert updated.search("tartan umbrellas", k=1).to_lists() == [[new]]
    assert updated.search("umbrella", k=5, category="rain wear").to_lists() == [[new]]
    assert 0 not in updated.search("red retrospot", k=30).to_lists()[0]  # i00000 is no longer listed
    assert search.search("tartan umbrella", k=30).to_lists()[0] == search.search("tartan umbrella", k=30).to_lists()[0]
    assert len(search.items_) == data.n_items  # the original is untouched


def test_saved_search_answers_the_same(search, tmp_path) -> None:
    search.save(tmp_path / "search")
    loaded = TextSearch.load(tmp_path / "search", search.config)
    queries = ["blue polkadot", "lunch bag"]
    before, after = search.search(queries, k=6, user_ids=[1, -1]), loaded.search(queries, k=6, user_ids=[1, -1])
    np.testing.assert_array_equal(before.item_ids, after.item_ids)
    np.testing.assert_allclose(before.scores, after.scores, rtol=1e-6)


def test_bad_queries_are_refused(search) -> None:
    for bad in ("", [" "], ["ok", 3]):
        with pytest.raises(ValueError, match="non-empty"):
            search.search(bad, k=3)
    with pytest.raises(ValueError, match="lexical_weight"):
        search.search("mug", k=3, lexical_weight=1.5)


def test_feedback_moves_the_query_towards_the_first_fused_items(search) -> None:
    dense = search.dense_
    query = dense.search_vectors(["red retrospot mug"])[0]
    items = np.array([[2, 5, -1], [-1, -1, -1]])
    vectors = dense.embed_items([dense.item_texts_[2], dense.item_texts_[5]])
    w = search.config.feedback_query_weight
    expected = w * query[0] + (1 - w) * vectors.mean(axis=0)
    moved = search._feedback_vectors(np.vstack([query, query]), items)
    np.testing.assert_allclose(moved[0], expected / np.linalg.norm(expected), rtol=1e-5)
    np.testing.assert_allclose(moved[1], query[0], rtol=1e-6)  # no feedback items: the query as it was


def test_the_final_dense_list_is_searched_with_the_fed_back_vector(search) -> None:
    queries = ["green garden lunch bag"]
    first = search.search(queries, k=search.config.feedback_items, feedback=False)
    moved = search._feedback_vectors(search.dense_.search_vectors(queries)[0], first.item_ids)
    found = search.search(queries, k=8)
    scores = found.sources["dense_score"][0]
    listed = ~np.isnan(scores)
    expected = search.dense_.embed_items([search.dense_.item_texts_[i] for i in found.item_ids[0][listed]]) @ moved[0]
    np.testing.assert_allclose(scores[listed], expected, rtol=1e-4, atol=1e-5)
    assert found.to_lists() != search.search(queries, k=8, feedback=False).to_lists()
    off = TextSearch(search.config.replace(feedback_items=0), show_progress=False)
    off.dense_, off.lexical_, off.listed_, off.categories_ = search.dense_, search.lexical_, search.listed_, search.categories_
    assert off.search(queries, k=8).to_lists() == search.search(queries, k=8, feedback=False).to_lists()


WORDS = ("red", "blue", "mug", "tin", "heart", "lantern", "copper", "kettle")


@st.composite
def catalog_histories(draw):  # type: ignore[no-untyped-def]
    """Catalog after catalog over a few title words (repeats are the rule): items kept, retitled,
    removed and added; each step saved and loaded first, or not."""
    titles = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
    steps, known = [], [f"i{n:05d}" for n in range(24)]
    for step in range(draw(st.integers(1, 3))):
        kept = draw(st.lists(st.sampled_from(known), min_size=1, max_size=len(known), unique=True))
        added = [f"new{step}-{n}" for n in range(draw(st.integers(0, 4)))]
        ids = kept + added
        steps.append((ids, [draw(titles) for _ in ids], draw(st.booleans())))
        known = sorted(set(known) | set(added))
    return steps


@settings(max_examples=25)
@given(history=catalog_histories())
def test_every_listed_item_is_served_its_own_titles_vector(search, history, tmp_path_factory) -> None:
    """Whatever catalogs came before (repeated, changed, removed and new titles, save and load in
    between), the dense side serves each listed item a plain encoding of its title, and its
    exact title finds it through the lexical side."""
    current = search
    for ids, titles, reload in history:
        if reload:
            folder = tmp_path_factory.mktemp("search")
            current.save(folder / "search")
            current = TextSearch.load(folder / "search", current.config)
        current = current.with_catalog(Catalog.of(ids, titles))
        dense = current.dense_
        plain = dense._encode(dense.model_, titles, dense.config.item_max_tokens)  # the eager float model, no stored vector
        items = dense.items_.index(ids)
        np.testing.assert_allclose(dense.index_vectors_()[items], plain, atol=1e-5)
        for vector, item in zip(plain, items):
            found = dense.index_.search(vector[None, :], 1, allow=[item])
            assert found.item_ids[0, 0] == item and found.scores[0, 0] >= 0.9999
        current.verify_items(items)  # the swap check agrees (vectors, and every exact title finds its item)
        for title, item in zip(titles, items):
            scores = current.lexical_.scores(title)
            assert scores[item] > 0 and np.isclose(scores[item], max(scores[j] for j in items if titles[list(items).index(j)] == title))
