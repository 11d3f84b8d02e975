"""The retriever contract (STYLE.md #12): every retriever runs every test here.

Checkerboard data with exact answers: user u bought every item of its parity (u % 2) except one
held-out item, so a personalised retriever must rank that item first once seen items are
excluded. Titles carry the parity too ("red retrospot" even, "blue polkadot" odd) for the text
retrievers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ecomrec.config import ALSConfig, BiEncoderConfig, FusionConfig, HybridConfig, ItemKNNConfig
from ecomrec.data import Dataset, IdMap
from ecomrec.data.synthetic import synthetic
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.retrieval import RETRIEVERS, ALSRetriever, BiEncoderRetriever, HybridRetriever, Retriever, SequenceRetriever

N_USERS, N_ITEMS = 20, 12
TITLES = ("red retrospot lunch bag", "blue polkadot tea towel")


def held_out(user: int) -> int:
    return (user // 2) % (N_ITEMS // 2) * 2 + user % 2


def checkerboard() -> Dataset:
    rows = [(u, i) for u in range(N_USERS) for i in range(N_ITEMS) if i % 2 == u % 2 and i != held_out(u)]
    users, items = map(np.array, zip(*rows))
    frame = pd.DataFrame(
        {
            "user": users.astype(np.int32),
            "item": items.astype(np.int32),
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(rows)), unit="min"),
            "quantity": np.ones(len(rows), np.float32),
        }
    )
    catalog = pd.DataFrame(
        {"item_id": [f"i{n:02d}" for n in range(N_ITEMS)], "text": [TITLES[n % 2] + f" {n}" for n in range(N_ITEMS)],
         "price": 1.0, "category": "", "first_seen": pd.NaT}
    )
    return Dataset(frame, catalog, IdMap(f"u{n:02d}" for n in range(N_USERS)), IdMap(catalog["item_id"]))


#: name -> (factory, personalised?)
FACTORIES = {
    "popularity": (lambda: RETRIEVERS["popularity"](), False),
    "repurchase": (lambda: RETRIEVERS["repurchase"](), False),
    "itemknn": (lambda: RETRIEVERS["itemknn"](neighbours=20), True),
    "als": (lambda: ALSRetriever(ALSConfig(factors=4, regularization=0.1, iterations=20, alpha=4.0, weighting="counts"), show_progress=False), True),
    # the bundled MiniLM cut to one layer, zero-shot: enough to tell red retrospot from blue polkadot
    "bi_encoder": (lambda: BiEncoderRetriever(fine_tune=False, layers=1, show_progress=False), True),
    "sequence": (lambda: SequenceRetriever(dim=16, heads=2, layers=1, dropout=0.0, learning_rate=0.01, epochs=40, patience=40,
                                           show_progress=False), True),
    "hybrid": (
        lambda: HybridRetriever(
            HybridConfig(
                als=ALSConfig(factors=4, regularization=0.1, iterations=20, alpha=4.0, weighting="counts"),
                itemknn=ItemKNNConfig(neighbours=20),
                bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                fusion=FusionConfig(tune=False),
            ),
            show_progress=False,
        ),
        True,
    ),
}


def test_every_registered_retriever_is_under_contract() -> None:
    assert set(FACTORIES) == set(RETRIEVERS)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return checkerboard()


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def fitted(request, data) -> tuple[str, Retriever]:
    factory, _ = FACTORIES[request.param]
    return request.param, factory().fit(data)


def _valid_rows(result) -> None:
    for ids, scores in zip(result.item_ids, result.scores):
        real = ids >= 0
        assert len(set(ids[real])) == real.sum(), "an item appears twice in a row"
        assert real[: real.sum()].all(), "padding only at the end"
        assert np.isneginf(scores[~real]).all() and np.isfinite(scores[real]).all()
        assert (np.diff(scores[real]) <= 0).all(), "scores must not increase"


def test_held_out_item_ranks_first(fitted) -> None:
    name, model = fitted
    if not FACTORIES[name][1]:
        pytest.skip(f"{name} is not personalised: every user gets the same ranking")
    result = model.candidates(np.arange(N_USERS), k=3, exclude="seen")
    assert result.item_ids[:, 0].tolist() == [held_out(u) for u in range(N_USERS)]


def assert_same_ranking(a, b, decimals: int = 4) -> None:
    """Equal rows up to the order of ties (scores equal to ``decimals`` places): BLAS sums a batch
    and a single row in different orders, so exact ties may come back swapped."""
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
    for ids_a, s_a, ids_b, s_b in zip(a.item_ids, a.scores, b.item_ids, b.scores):
        order_a = np.lexsort((ids_a, -np.round(s_a, decimals)))
        order_b = np.lexsort((ids_b, -np.round(s_b, decimals)))
        np.testing.assert_array_equal(ids_a[order_a], ids_b[order_b])


def test_batch_equals_single(fitted) -> None:
    _, model = fitted
    batch = model.candidates(np.arange(N_USERS), k=5)
    for u in range(N_USERS):
        assert_same_ranking(model.candidates([u], k=5), batch[[u]])
    assert_same_ranking(model.candidates(np.arange(N_USERS), k=5, batch_size=3), batch)


def test_scores_sorted_ids_unique(fitted) -> None:
    _, model = fitted
    _valid_rows(model.candidates(np.arange(N_USERS), k=N_ITEMS))


def test_exclude_and_allow(fitted, data) -> None:
    _, model = fitted
    seen = data.user_items("binary")
    result = model.candidates(np.arange(N_USERS), k=N_ITEMS, exclude="seen")
    for u, ids in enumerate(result.item_ids):
        assert not set(ids[ids >= 0]) & set(seen[u].indices)
    matrix = model.candidates(np.arange(N_USERS), k=N_ITEMS, exclude=seen)
    np.testing.assert_array_equal(matrix.item_ids, result.item_ids)
    banned = model.candidates(np.arange(N_USERS), k=N_ITEMS, exclude=[0, 1, 2])
    assert not np.isin(banned.item_ids, [0, 1, 2]).any()
    allowed = model.candidates(np.arange(N_USERS), k=4, allow=[3, 5, 7, 11])
    assert np.isin(allowed.item_ids[allowed.item_ids >= 0], [3, 5, 7, 11]).all()
    with pytest.raises(ValueError, match="outside"):
        model.candidates([0], k=3, allow=[N_ITEMS])


def test_k_larger_than_catalog_pads(fitted) -> None:
    _, model = fitted
    result = model.candidates([0, 1], k=N_ITEMS + 5)
    assert result.item_ids.shape == (2, N_ITEMS + 5)
    assert (result.item_ids[:, N_ITEMS:] == -1).all() and np.isneginf(result.scores[:, N_ITEMS:]).all()
    _valid_rows(result)


def test_empty_input_gives_empty_output(fitted) -> None:
    _, model = fitted
    result = model.candidates([], k=7)
    assert result.item_ids.shape == (0, 7) and result.scores.shape == (0, 7)


def test_bad_k_and_unknown_users(fitted) -> None:
    _, model = fitted
    for k in (0, -3, 2.5):
        with pytest.raises(ValueError, match="k must be"):
            model.candidates([0], k=k)
    with pytest.raises(ValueError, match="not a fitted user"):
        model.candidates([N_USERS], k=3)
    with pytest.raises(ValueError, match="not a fitted user"):
        model.candidates([-1], k=3)


def test_unseen_user_from_history(fitted, data) -> None:
    name, model = fitted
    history = data.user_items("counts")[[4]]  # user 4's history, as a stranger
    result = model.candidates([-1], k=3, user_items=history, exclude="seen")
    assert result.item_ids.shape == (1, 3)
    if FACTORIES[name][1]:
        assert result.item_ids[0, 0] == held_out(4)
    with pytest.raises(ValueError, match="user_items must be"):
        model.candidates([-1, -1], k=3, user_items=history)


def test_unfitted_raises() -> None:
    for name, (factory, _) in FACTORIES.items():
        with pytest.raises(NotFittedError, match="call fit"):
            factory().candidates([0], k=3)


def test_save_load_identical(fitted, tmp_path: Path) -> None:
    name, model = fitted
    model.save(tmp_path / name)
    loaded = type(model).load(tmp_path / name)
    assert loaded.config == model.config
    for exclude in (None, "seen"):
        a = model.candidates(np.arange(N_USERS), k=6, exclude=exclude)
        b = loaded.candidates(np.arange(N_USERS), k=6, exclude=exclude)
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_load_refuses_corrupt_or_foreign_artifacts(fitted, tmp_path: Path) -> None:
    name, model = fitted
    folder = model.save(tmp_path / name)
    other = next(cls for n, cls in RETRIEVERS.items() if n != name)
    with pytest.raises(ArtifactError, match="holds a"):
        other.load(folder)
    state = folder / "state.npz"
    state.write_bytes(state.read_bytes()[:-20])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        type(model).load(folder)
    state.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        type(model).load(folder)
    with pytest.raises(ArtifactError, match="not an ecomrec artifact"):
        type(model).load(tmp_path / "nowhere")


def test_config_round_trip_and_exclusive_arguments(fitted) -> None:
    _, model = fitted
    config = model.config
    assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(TypeError, match="not both"):
        type(model)(config, **{next(iter(config.to_dict())): None})
    with pytest.raises(ValueError, match="typo"):
        type(config).from_dict({**config.to_dict(), "typo": 1})


def test_history_override_changes_results_for_known_users(fitted, data) -> None:
    name, model = fitted
    if not FACTORIES[name][1]:
        pytest.skip(f"{name} is not personalised")
    odd_history = data.user_items("counts")[[1]]  # user 0 (even) presented with an odd user's history
    result = model.candidates([0], k=3, user_items=sp.csr_matrix(odd_history), exclude="seen")
    assert result.item_ids[0, 0] % 2 == 1


@pytest.mark.parametrize("name", ["popularity", "repurchase", "itemknn", "als"])
def test_fit_on_a_count_matrix_equals_fit_on_the_same_purchases(name: str) -> None:
    """As with implicit: a users x items CSR of purchase counts is enough to fit a retriever."""
    data = synthetic(n_users=60, n_items=30, seed=4)
    counts = data.user_items("counts")
    config = {"als": ALSConfig(factors=4, iterations=3)}.get(name)
    from_matrix = RETRIEVERS[name](config, show_progress=False).fit(counts, item_texts=data.item_texts)
    from_dataset = RETRIEVERS[name](config, show_progress=False).fit(Dataset.from_user_items(counts, data.item_texts))
    users = np.arange(10)
    np.testing.assert_array_equal(from_matrix.candidates(users, 5).item_ids, from_dataset.candidates(users, 5).item_ids)
    assert from_matrix.user_items_.sum() == counts.sum()  # one purchase event per count
    with pytest.raises(ValueError, match="counts"):
        RETRIEVERS[name](config).fit(counts * 0.5)


def test_a_matrix_cannot_drive_what_needs_time() -> None:
    counts = synthetic(n_users=30, n_items=20, seed=4).user_items("counts")
    with pytest.raises(ValueError, match="fine_tune=False"):
        BiEncoderRetriever(layers=1).fit(counts)


def appended(data: Dataset) -> Dataset:
    """``data`` and, after it, user 0 buying its held-out item and a new user ``u99`` buying what
    user 4 bought."""
    frame = data.interactions
    four = frame[frame["user"] == 4]
    extra = pd.DataFrame({"user": np.r_[0, np.full(len(four), N_USERS)].astype(np.int32),
                          "item": np.r_[held_out(0), four["item"].to_numpy()].astype(np.int32),
                          "timestamp": frame["timestamp"].max() + pd.to_timedelta(np.arange(1, len(four) + 2), unit="min"),
                          "quantity": np.ones(len(four) + 1, np.float32)})
    users = IdMap([*data.users.ids, "u99"])
    return Dataset(pd.concat([frame, extra], ignore_index=True), data.catalog, users, data.items)


def test_appended_purchases_take_effect_and_the_original_serves_as_before(fitted, data) -> None:
    """``with_interactions``: a bought item counts as seen, a new user is served by what they
    bought (as the user they copy), and the retriever it came from answers as before."""
    name, model = fitted
    before = model.candidates(np.arange(N_USERS), k=6, exclude="seen")
    updated = model.with_interactions(appended(data))
    assert held_out(0) not in updated.candidates([0], k=N_ITEMS, exclude="seen").item_ids[0]
    newcomer = updated.candidates([N_USERS], k=3, exclude="seen")
    if FACTORIES[name][1]:
        assert newcomer.item_ids[0, 0] == held_out(4)
    assert_same_ranking(model.candidates(np.arange(N_USERS), k=6, exclude="seen"), before)
    assert_same_ranking(model.with_interactions(data).candidates(np.arange(N_USERS), k=6, exclude="seen"), before)
    reordered = Dataset(data.interactions, data.catalog, IdMap(reversed(data.users.ids)), data.items)
    with pytest.raises(ValueError, match="extend"):
        model.with_interactions(reordered)


def test_a_catalog_change_leaves_the_original_as_it_was(fitted, data) -> None:
    from ecomrec.data import Catalog

    name, model = fitted
    before = model.candidates(np.arange(N_USERS), k=6)
    same = model.with_catalog(Catalog.of(data.items.ids, data.item_texts))
    assert_same_ranking(same.candidates(np.arange(N_USERS), k=6), before)
    smaller = model.with_catalog(Catalog.of(data.items.ids[:-2], [f"{t} new" for t in data.item_texts[:-2]]), shards=2)
    assert smaller is not model or not smaller.catalog_change_  # a change is a new instance, or nothing to change
    assert_same_ranking(model.candidates(np.arange(N_USERS), k=6), before)
