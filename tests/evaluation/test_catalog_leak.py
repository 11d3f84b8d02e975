"""No leak through the catalog (docs/evaluation.md): where the catalog is derived from the log,
an item first sold inside the target window was unknowable at the cutoff. No method may list it,
and its purchases count as misses for every method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.config import ProtocolConfig
from ecomrec.data.generic import from_files
from ecomrec.data.split import make_split
from ecomrec.evaluation.protocol import score_retriever
from ecomrec.retrieval.baselines import PopularityRetriever


class UnsoldFirst(PopularityRetriever):
    """Ranks the items nobody bought in its training data first: exactly what a leaked catalog
    rewards, since on a log-derived catalog those are the items the target window sells."""

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        unsold = (self.popularity_ == 0).astype(np.float32)
        return np.broadcast_to(unsold, (len(users), self.n_items)).copy()


def _log(tmp_path) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Six users buy a0..a3 in January; in February they buy a0 again and b0/b1, first sold then."""
    rows = [(f"u{u}", f"a{(u + d) % 4}", f"2024-01-{d + 1:02d}") for u in range(6) for d in range(4)]
    rows += [(f"u{u}", "a0", "2024-02-02") for u in range(6)]
    rows += [(f"u{u}", f"b{u % 2}", "2024-02-03") for u in range(6)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame.to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"item_id": ["a0", "a1", "a2", "a3", "b0", "b1", "c0"], "title": list("abcdefg")}).to_csv(tmp_path / "catalog.csv", index=False)
    return frame


def test_items_first_sold_in_the_target_window_are_unlisted_and_missed(tmp_path) -> None:
    _log(tmp_path)
    data = from_files(tmp_path / "log.csv")  # no product table: the catalog is what the log sold
    assert data.catalog_from_log
    split = make_split(data, "2024-02-01")
    b_items = data.items.index(["b0", "b1"])
    assert set(b_items).isdisjoint(split.listed) and set(data.items.index(["a0", "a1", "a2", "a3"])) <= set(split.listed)
    model = UnsoldFirst().fit(split.history)
    ranked_all, ranked_new, _ = score_retriever(model, split, 5, ProtocolConfig().batch_size)
    for ranked in (ranked_all, ranked_new):
        assert not np.isin(ranked.item_ids, b_items).any()  # never listed, so never found
    assert split.targets_new.nnz == 6 and np.isin(split.targets_new.indices, b_items).all()  # still targets: misses


def test_an_independent_catalog_lists_every_item_it_holds(tmp_path) -> None:
    _log(tmp_path)
    data = from_files(tmp_path / "log.csv", tmp_path / "catalog.csv")  # a product table: c0 listed, never sold
    assert not data.catalog_from_log
    split = make_split(data, "2024-02-01")
    assert split.listed is None
    model = UnsoldFirst().fit(split.history)
    ranked_all, _, _ = score_retriever(model, split, 3, ProtocolConfig().batch_size)
    assert set(ranked_all.item_ids[0]) == set(data.items.index(["b0", "b1", "c0"]))  # listed before anyone bought them


def test_an_engine_fitted_on_a_log_derived_catalog_serves_only_items_sold_by_then(tmp_path) -> None:
    from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig
    from ecomrec.engine import Engine

    _log(tmp_path)
    data = from_files(tmp_path / "log.csv")
    history = make_split(data, "2024-02-01").history
    config = EngineConfig(use_reranker=False, hybrid=HybridConfig(
        als=ALSConfig(factors=2, iterations=2), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1), fusion=FusionConfig(tune=False)))
    engine = Engine(config, show_progress=False).fit(history)
    assert sorted(np.asarray(data.items.ids)[engine.listed_]) == ["a0", "a1", "a2", "a3"]
    recs = engine.recommend(["u0", "u1"], k=10)
    assert {str(i) for row in recs.item_ids for i in row if i is not None} <= {"a0", "a1", "a2", "a3"}
    found = engine.search("b0", k=5)  # its own id is its title here
    assert "b0" not in {str(i) for i in found.item_ids[0] if i is not None}
