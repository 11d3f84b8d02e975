"""The new-arrivals source: items the collaborative sources cannot know yet, found by text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import BiEncoderConfig, FusionConfig, HybridConfig
from ecomrec.data.synthetic import THEMES, synthetic
from ecomrec.retrieval.fusion import HybridRetriever


def test_new_arrivals_are_items_first_sold_lately_or_never() -> None:
    shop = synthetic(n_users=60, n_items=40, n_clusters=2, purchases_per_user=10, n_cold_items=4, days=90, seed=3)
    first = shop.interactions.groupby("item")["timestamp"].min()
    cutoff = shop.end - pd.Timedelta(days=20)
    expected = set(first.index[first > cutoff]) | set(range(36, 40))  # the four cold items were never sold
    assert set(shop.new_arrivals(20)) == expected and len(first.index[first > cutoff]) < 36
    # late first sales: the last purchase of an item moved after everything else makes it new
    frame = shop.interactions.copy()
    frame.loc[frame["item"] == 0, "timestamp"] = shop.end + pd.Timedelta(days=1)
    assert 0 in shop._with(frame, "late").new_arrivals(1) and 0 not in shop.new_arrivals(1)


@pytest.mark.slow
def test_a_never_sold_item_like_a_users_history_reaches_their_list() -> None:
    # 4 clusters; the last 8 items (two per theme) are listed and never bought
    shop = synthetic(n_users=120, n_items=48, n_clusters=4, purchases_per_user=12, n_cold_items=8, noise=0.0, seed=4)
    fusion = FusionConfig(quotas={"own": 20, "popularity": 20, "new_arrivals": 20},
                          weights={"own": 1.0, "popularity": 1.0, "new_arrivals": 1.0}, tune=False)
    config = HybridConfig(bi_encoder=BiEncoderConfig(fine_tune=False, layers=0), fusion=fusion, new_arrival_days=1)
    hybrid = HybridRetriever(config, show_progress=False).fit(shop)
    cold = np.arange(40, 48)
    assert set(cold) <= set(hybrid.new_arrivals_)
    users = np.arange(8)
    found = hybrid.candidates(users, 40, exclude="seen")
    for row, user in enumerate(users):
        rank = found.sources["new_arrivals_rank"][row]
        listed_by_source = found.item_ids[row][~np.isnan(rank)]
        assert np.isin(listed_by_source, hybrid.new_arrivals_).all()  # the source lists new arrivals only
        best = listed_by_source[np.argsort(rank[~np.isnan(rank)])][0]
        assert best in cold and shop.catalog["category"][best] == THEMES[user % 4]  # the user's own theme, never sold


@pytest.mark.slow
def test_the_text_sources_share_one_encoding_of_the_users(monkeypatch) -> None:
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

    shop = synthetic(n_users=60, n_items=40, n_clusters=4, purchases_per_user=10, n_cold_items=8, noise=0.0, seed=4)
    fusion = FusionConfig(quotas={"own": 10, "bi_encoder": 10, "new_arrivals": 10},
                          weights={"own": 1.0, "bi_encoder": 1.0, "new_arrivals": 1.0}, tune=False)
    hybrid = HybridRetriever(HybridConfig(bi_encoder=BiEncoderConfig(fine_tune=False, layers=1), fusion=fusion,
                                          new_arrival_days=1), show_progress=False).fit(shop)
    users = np.arange(12)
    bi = hybrid.models_["bi_encoder"]
    alone = {"bi_encoder": bi.candidates(users, 10, exclude="seen"),
             "new_arrivals": bi.candidates(users, 10, exclude="seen", allow=hybrid.new_arrivals_)}
    calls = []
    encode = BiEncoderRetriever.encode_queries
    monkeypatch.setattr(BiEncoderRetriever, "encode_queries", lambda self, texts: calls.append(len(texts)) or encode(self, texts))
    lists = hybrid.source_lists(hybrid._query(users, 10, None, None, None))
    assert calls == [len(users)]  # once for both sources
    for source, expected in alone.items():
        np.testing.assert_array_equal(lists[source].item_ids, expected.item_ids, err_msg=source)
