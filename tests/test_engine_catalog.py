"""Catalog changes on an engine: each title is served its own vector (repeated titles, fitted or
loaded), every swap checks what it will serve and refuses a planted misalignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig, SearchConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.engine import Engine
from ecomrec.exceptions import ArtifactError

pytestmark = pytest.mark.slow

CONFIG = EngineConfig(
    hybrid=HybridConfig(als=ALSConfig(factors=8, iterations=6), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                        fusion=FusionConfig(tune=False)),
    use_reranker=False, search=SearchConfig(dense=BiEncoderConfig(fine_tune=False, layers=1)),
)
NEW_WORDS = ["copper", "kettle", "tartan", "umbrella", "enamel", "jug", "linen", "napkin", "rattan", "basket", "glass", "vase"]


@pytest.fixture(scope="module")
def shop():
    """A shop where a third of the items repeat their neighbour's title (as Online Retail's do)."""
    data = synthetic(n_users=150, n_items=90, n_clusters=3, purchases_per_user=20, n_cold_items=9, days=120, seed=11)
    texts = data.catalog["text"].tolist()
    for i in range(0, len(texts) - 1, 3):
        texts[i + 1] = texts[i]
    data.catalog["text"] = texts
    return data


@pytest.fixture(scope="module")
def fitted(shop) -> Engine:
    return Engine(CONFIG, show_progress=False).fit(shop)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    return fitted.save(tmp_path_factory.mktemp("engines") / "repeats")


def new_catalog(shop) -> pd.DataFrame:
    """Every item kept, the never-sold ones (the new arrivals) and every sixth item retitled, and
    150 new items: most with titles of their own, some sharing one."""
    rng = np.random.default_rng(0)
    ids, texts = list(shop.items.ids), list(shop.item_texts)
    retitled = set(range(81, 90)) | set(range(0, 81, 6))
    texts = [f"{t} reissue {i}" if i in retitled else t for i, t in enumerate(texts)]
    fresh = [" ".join(rng.choice(NEW_WORDS, size=3, replace=False)) + f" {n}" for n in range(130)]
    fresh += ["tartan umbrella twin"] * 10 + ["copper kettle twin"] * 10
    return pd.DataFrame({"item_id": ids + [f"NEW{n:03d}" for n in range(len(fresh))], "text": texts + fresh})


def served_cosines(retriever, item_ids: list[str], titles: list[str], allow=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The score each item's index gives a plain encoding of the item's title, searching for it
    alone (1 where the index holds the title's own vector)."""
    plain = retriever._encode(retriever.model_, titles, retriever.config.item_max_tokens)  # the eager float model
    dense = retriever.items_.index(item_ids)
    out = []
    for vector, item in zip(plain, dense):
        found = retriever.index_.search(vector[None, :], 1, allow=[item] if allow is None else np.intersect1d(allow, [item]))
        out.append(found.scores[0, 0] if found.item_ids[0, 0] == item else -1.0)
    return np.asarray(out)


@pytest.mark.parametrize("how", ["fitted", "loaded"])
def test_new_titles_are_served_their_own_vectors(how, fitted, saved, shop) -> None:
    engine = fitted if how == "fitted" else Engine.load(saved)
    catalog = new_catalog(shop)
    engine.rebuild_index(catalog)
    ids, titles = catalog["item_id"].tolist(), catalog["text"].tolist()
    snap = engine.snapshot
    bi, dense = snap.hybrid.models_["bi_encoder"], snap.search.dense_
    for name, retriever in (("bi_encoder", bi), ("search", dense)):
        cosines = served_cosines(retriever, ids, titles)
        assert cosines.min() >= 0.9999, (name, [(i, t, c) for i, t, c in zip(ids, titles, cosines) if c < 0.9999][:3])
        held = (retriever.embed_items(titles) * retriever._encode(retriever.model_, titles, retriever.config.item_max_tokens)).sum(1)
        assert held.min() >= 0.9999, name
    arrivals = snap.hybrid.new_arrivals_  # the new-arrivals source: the bi-encoder's index among these items
    assert len(arrivals) == 9
    arrival_ids = [shop.items.ids[i] for i in arrivals]
    arrival_titles = [titles[ids.index(i)] for i in arrival_ids]
    assert all("reissue" in t for t in arrival_titles)
    assert served_cosines(bi, arrival_ids, arrival_titles, allow=arrivals).min() >= 0.9999
    new = catalog[catalog["item_id"].str.startswith("NEW")].head(50)
    found = engine.search(new["text"].tolist(), k=1)
    first = [found.item_ids[row, 0] == i or found.titles[row, 0] == t for row, (i, t) in enumerate(zip(new["item_id"], new["text"]))]
    assert all(first), f"{sum(first)} of 50 exact titles found their item (or one with that title) first"


def test_a_planted_misalignment_is_refused_and_the_old_snapshot_keeps_serving(saved, shop, monkeypatch) -> None:
    from ecomrec.retrieval.bi_encoder import TitleVectors

    engine = Engine.load(saved)
    serving = engine.snapshot
    before = engine.search(["red retrospot mug", "copper kettle"], k=5)
    lookup = TitleVectors.lookup

    def shifted(self, texts):  # type: ignore[no-untyped-def]
        vectors, found = lookup(self, texts)
        return np.roll(vectors, 1, axis=0), found  # every title gets its neighbour's vector: the bug this check is for

    monkeypatch.setattr(TitleVectors, "lookup", shifted)
    with pytest.raises(ArtifactError, match=r"nothing published: item '[^']+' \(") as refused:
        engine.rebuild_index(new_catalog(shop))
    assert "holds a vector of cosine" in str(refused.value)
    monkeypatch.undo()
    assert engine.snapshot is serving
    after = engine.search(["red retrospot mug", "copper kettle"], k=5)
    np.testing.assert_array_equal(after.item_ids, before.item_ids)


def test_a_lexical_index_of_other_titles_is_refused(saved, shop, monkeypatch) -> None:
    from ecomrec.retrieval.search import LexicalIndex

    engine = Engine.load(saved)
    serving = engine.snapshot
    fit = LexicalIndex.fit
    monkeypatch.setattr(LexicalIndex, "fit", lambda self, texts: fit(self, list(texts)[1:] + list(texts)[:1]))
    with pytest.raises(ArtifactError, match="lexical side does not find it by its own title"):
        engine.rebuild_index(new_catalog(shop))
    assert engine.snapshot is serving


def test_every_rebuild_reports_what_its_check_covered(saved, shop) -> None:
    engine = Engine.load(saved)
    report = engine.rebuild_index(new_catalog(shop))
    # three parts (ALS, the bi-encoder, search): 173 titles changed, 1 % of them checked per part (2), and 8 others
    assert report["verified"]["items"] == 3 * (2 + 8) and report["verified"]["seconds"] > 0
    again = engine.rebuild_index(new_catalog(shop))  # nothing changed: only unchanged items are checked
    assert again["verified"]["items"] == 3 * 8


def test_a_rebuild_called_during_a_fit_waits_and_applies_to_the_fitted_engine(shop, monkeypatch) -> None:
    import threading

    from ecomrec.retrieval.fusion import HybridRetriever

    engine = Engine(CONFIG, show_progress=False).fit(shop)
    inside, release = threading.Event(), threading.Event()
    fit = HybridRetriever.fit

    def slow_fit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        inside.set()
        release.wait(30)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(HybridRetriever, "fit", slow_fit)
    refit = threading.Thread(target=engine.fit, args=(shop,))
    refit.start()
    assert inside.wait(30)
    catalog = pd.DataFrame({"item_id": list(shop.items.ids) + ["NEW1"], "text": list(shop.item_texts) + ["tartan picnic umbrella"]})
    rebuilt = threading.Thread(target=engine.rebuild_index, args=(catalog,))
    rebuilt.start()
    rebuilt.join(1.0)
    assert rebuilt.is_alive()  # it waits for the fit
    release.set()
    refit.join()
    rebuilt.join()
    assert engine.search("tartan umbrella", k=1).item_ids[0, 0] == "NEW1"  # applied to what the fit published
