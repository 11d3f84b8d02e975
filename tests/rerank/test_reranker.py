"""The purchase reranker end to end on planted data: it must recover what a poor fusion hides."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.config import ALSConfig, FusionConfig, HybridConfig, RerankConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.data.split import make_split
from ecomrec.evaluation.protocol import evaluate_candidates
from ecomrec.exceptions import ArtifactError
from ecomrec.rerank import PurchaseReranker, RerankedRetriever
from ecomrec.retrieval.fusion import HybridRetriever

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted():
    data = synthetic(n_users=300, n_items=120, n_clusters=4, purchases_per_user=30, noise=0.05, days=120, seed=5)
    split = make_split(data, "2024-04-10")
    # The fused order is (almost) popularity: blind to the user's cluster, which ALS and the
    # user's own history know. The reranker reads those sources' ranks as features.
    fusion = FusionConfig(
        quotas={"own": 60, "als": 60, "popularity": 60},
        weights={"own": 0.001, "als": 0.001, "popularity": 1.0},
        tune=False,
    )
    hybrid = HybridRetriever(HybridConfig(als=ALSConfig(factors=8, iterations=10), fusion=fusion), show_progress=False)
    hybrid.fit(split.history)
    config = RerankConfig(text=False, cutoffs=2, window_days=15, candidates=40, trees=100, min_child_samples=10)
    reranked = RerankedRetriever(hybrid, PurchaseReranker(config)).fit(split.history)
    return split, hybrid, reranked


def test_reranking_recovers_the_clusters_the_fusion_ignored(fitted) -> None:
    split, hybrid, reranked = fitted
    new_users = split.users[split.new_rows]
    exclude = split.seen[split.new_rows]
    before = evaluate_candidates(split, hybrid.candidates(split.users, 40), hybrid.candidates(new_users, 40, exclude=exclude), (10,))
    after = evaluate_candidates(split, reranked.candidates(split.users, 40), reranked.candidates(new_users, 40, exclude=exclude), (10,))
    for target in ("all", "new"):
        assert after[target]["ndcg@10"] > before[target]["ndcg@10"] + 0.1, target
    importance = reranked.reranker.training_["importance"]
    assert importance["popularity_rank_log"] < max(importance["als_rank_log"], importance["own_count_log"])


def test_reranked_list_is_the_same_candidates_reordered_by_probability(fitted) -> None:
    split, hybrid, reranked = fitted
    users = split.users[:25]
    fused = hybrid.candidates(users, 60)
    out = reranked.candidates(users, 60)
    head = reranked.reranker.config.candidates
    for row in range(len(users)):
        assert set(out.item_ids[row, :head]) == set(fused.item_ids[row, :head])
        np.testing.assert_array_equal(out.item_ids[row, head:], fused.item_ids[row, head:])  # the tail keeps its order
        fused_rank = out.sources["fused_rank"][row]
        np.testing.assert_array_equal(fused.item_ids[row, fused_rank.astype(int) - 1], out.item_ids[row])
    p = out.sources["p_purchase"][:, :head]
    assert ((p >= 0) & (p <= 1)).all() and (np.diff(p, axis=1) <= 0).all()
    assert np.isnan(out.sources["p_purchase"][:, head:]).all()
    assert set(reranked.last_timings_) >= {"candidates", "rerank:features", "rerank:model", "end_to_end"}


def test_reranker_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="cutoffs"):
        RerankConfig(text=True, cutoffs=2)
    with pytest.raises(ValueError, match="objective"):
        RerankConfig(objective="pointwise")


def test_recommend_explains_each_probability(fitted) -> None:
    split, _, reranked = fitted
    users = split.users[:10]
    out = reranked.recommend(users, 5)
    np.testing.assert_array_equal(out.item_ids, reranked.candidates(users, 5).item_ids)
    shares = np.stack([v for n, v in out.sources.items() if n.startswith("why:")], axis=-1)
    assert shares.shape[-1] == len(reranked.reranker.names_)
    a, b = reranked.reranker.model_.platt
    bias = out.sources["p_purchase"]  # logit(p) = sum of shares + Platt-scaled TreeSHAP bias (same for every row)
    implied = np.log(bias / (1 - bias)) - shares.sum(axis=-1)
    np.testing.assert_allclose(implied, implied[0, 0], atol=1e-3)


def test_saved_reranker_loads_and_gives_identical_results(fitted, tmp_path) -> None:
    split, _, reranked = fitted
    users = split.users[:30]
    reranked.save(tmp_path / "reranked")
    loaded = RerankedRetriever.load(tmp_path / "reranked")
    before, after = reranked.candidates(users, 20, exclude="seen"), loaded.candidates(users, 20, exclude="seen")
    np.testing.assert_array_equal(after.item_ids, before.item_ids)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    (tmp_path / "reranked" / "reranker" / "purchase_model.txt").write_text("tree\n")
    with pytest.raises(ArtifactError, match="purchase_model.txt"):
        RerankedRetriever.load(tmp_path / "reranked")
