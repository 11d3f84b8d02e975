"""Fusion: hand-computed RRF, per-source features, and the hybrid's quality floor on planted data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ecomrec.config import ALSConfig, BiEncoderConfig, FusionConfig, HybridConfig, ProtocolConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.evaluation import benchmark
from ecomrec.data.split import make_split
from ecomrec.candidates import Candidates
from ecomrec.retrieval.fusion import HybridRetriever, ListUnion, fuse, lookup

INF = -np.inf


def _list(ids, scores) -> Candidates:
    return Candidates(np.array(ids), np.array(scores, dtype=np.float32))


def test_rrf_by_hand() -> None:
    lists = {
        "als": _list([[5, 3, 7]], [[0.9, 0.8, 0.1]]),
        "bi_encoder": _list([[3, 9, -1]], [[0.7, 0.6, INF]]),
    }
    fusion = FusionConfig(rrf_k=10.0)
    out = fuse(lists, {"als": 1.0, "bi_encoder": 2.0}, fusion, k=4, n_items=10)
    expected = {3: 1 / 12 + 2 / 11, 9: 2 / 12, 5: 1 / 11, 7: 1 / 13}
    assert out.item_ids[0].tolist() == [3, 9, 5, 7]
    np.testing.assert_allclose(out.scores[0], [expected[i] for i in (3, 9, 5, 7)], rtol=1e-6)
    np.testing.assert_array_equal(out.sources["als_rank"][0], [2, np.nan, 1, 3])
    np.testing.assert_array_equal(out.sources["bi_encoder_rank"][0], [1, 2, np.nan, np.nan])
    np.testing.assert_allclose(out.sources["als_score"][0], [0.8, np.nan, 0.9, 0.1], rtol=1e-6)


def test_a_zero_weight_silences_a_source() -> None:
    lists = {"als": _list([[1, 2]], [[10.0, 0.0]]), "itemknn": _list([[2, 4]], [[3.0, 1.0]])}
    silenced = fuse(lists, {"als": 0.0, "itemknn": 1.0}, FusionConfig(), k=3, n_items=5)
    assert silenced.item_ids[0].tolist() == [2, 4, -1]  # nothing else was found: padding


def _reference_fusion(lists, weights, fusion, k):
    """Fusion of one query at a time with dicts: the definition ``fuse`` must match exactly."""
    n = next(iter(lists.values())).n_queries
    out_ids = np.full((n, k), -1)
    for row in range(n):
        total: dict[int, float] = {}
        for source, found in lists.items():
            valid = found.item_ids[row] >= 0
            ids = found.item_ids[row][valid]
            if weights.get(source, 0.0) <= 0 or not len(ids):
                continue
            parts = 1.0 / (fusion.rrf_k + np.flatnonzero(valid) + 1.0)
            for item, part in zip(ids.tolist(), parts):
                total[item] = total.get(item, 0.0) + weights[source] * part
        ranked = sorted(total, key=lambda item: (-total[item], item))[:k]
        out_ids[row, : len(ranked)] = ranked
    return out_ids


def test_fusion_matches_a_per_query_reference_ties_included() -> None:
    rng = np.random.default_rng(7)
    fusion = FusionConfig(rrf_k=5.0)
    for _ in range(25):
        n, n_items, k = int(rng.integers(1, 30)), int(rng.integers(3, 40)), int(rng.integers(1, 25))
        lists = {}
        for source in ("own", "als", "itemknn")[: rng.integers(1, 4)]:
            depth = int(rng.integers(1, 15))
            ids, scores = np.full((n, depth), -1), np.full((n, depth), INF, dtype=np.float32)
            for row in range(n):
                m = int(rng.integers(0, min(depth, n_items) + 1))
                ids[row, :m] = rng.choice(n_items, m, replace=False)
                scores[row, :m] = np.sort(rng.integers(0, 3, m))[::-1]  # few distinct scores: many ties
            lists[source] = _list(ids, scores)
        weights = {s: float(rng.choice([0.0, 0.5, 1.0, 2.0])) for s in lists}
        out = fuse(lists, weights, fusion, k=k, n_items=n_items)
        np.testing.assert_array_equal(out.item_ids, _reference_fusion(lists, weights, fusion, k))
        union = ListUnion.of(lists, n_items)  # the tuning path: one union, ranked under other weights
        for trial in ({s: 1.0 for s in lists}, weights):
            np.testing.assert_array_equal(union.best(union.totals(trial, fusion), k).item_ids,
                                          _reference_fusion(lists, trial, fusion, k))


def test_lookup_reads_matrix_cells() -> None:
    matrix = sp.csr_matrix(np.array([[0, 3, 0], [1, 0, 2]], dtype=np.float32))
    np.testing.assert_array_equal(lookup(matrix, np.array([[1, 0, -1], [2, 0, 1]])), [[3, 0, 0], [2, 1, 0]])


@pytest.fixture(scope="module")
def planted():
    # 4 clusters; 10 cold items (listed, never bought) that only the text source can find
    return synthetic(n_users=240, n_items=120, n_clusters=4, purchases_per_user=24, n_cold_items=10, noise=0.05, seed=21)


@pytest.mark.slow
def test_hybrid_at_least_as_good_as_its_best_source(planted) -> None:
    configs = {
        "als": ALSConfig(factors=8, iterations=10),
        "bi_encoder_zero_shot": BiEncoderConfig(fine_tune=False, layers=1),
        "bi_encoder": BiEncoderConfig(fine_tune=False, layers=1),
        "hybrid": HybridConfig(als=ALSConfig(factors=8, iterations=10), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1)),
    }
    report = benchmark(
        planted, "2024-03-10", methods=["repurchase", "itemknn", "als", "bi_encoder", "hybrid"], configs=configs,
        protocol=ProtocolConfig(latency_users=5, warmup=1), show_progress=False,
    )
    for target in ("all", "new"):
        best = max(report.results[m][target]["recall@50"] for m in ("repurchase", "itemknn", "als", "bi_encoder"))
        assert report.results["hybrid"][target]["recall@50"] >= best - 0.01, target
    assert "hybrid:fusion" in report.latency_ms and "hybrid:bi_encoder:user_encoding" in report.latency_ms
    tuning = report.methods["hybrid"]["tuning"]
    assert tuning["users"] > 0
    alone = [row for row in tuning["trace"] if "single_source" in row]  # fusion proved against each source alone
    assert len(alone) == 7 * 4 and max(row["objective"] for row in alone) <= tuning["objective"]  # 7 sources × 4 depths
    positive = [s for s, w in report.methods["hybrid"]["weights"].items() if w > 0]
    assert (tuning["kept"] == "fusion") == (len(positive) > 1)
    slices = {(row["slice"], row["ranking"]): row for row in report.breakdown["slices"]}
    split = make_split(planted, "2024-03-10")
    kinds = ("repurchase", "new_warm", "new_arrival", "cold")
    assert sum(slices[k, "all" if k == "repurchase" else "new"]["targets"] for k in kinds) == split.targets_all.nnz  # one kind each
    assert slices["cold", "new"]["targets"] == 0  # the planted cold items are never bought, before or after
    repurchase = lambda kind, ranking: slices[kind, ranking]["methods"]["repurchase"]["recall@10"]  # noqa: E731
    assert repurchase("repurchase", "all") > repurchase("new_warm", "new")  # it only re-offers the past
    rows = report.breakdown["ndcg@10_by_history_length"]["all"]
    assert sum(r["users"] for r in rows) == len(split.users)
    markdown = report.to_markdown()
    assert "by the user's history length" in markdown
    chosen = next(line for line in markdown.splitlines() if line.startswith("| hybrid | fusion, validation from"))
    assert f"{tuning['kept']}: " in chosen and f"depth {tuning['depth']}" in chosen and f"{tuning['objective']:.4f}" in chosen


@pytest.mark.slow
def test_hybrid_features_and_round_trip(planted, tmp_path) -> None:
    config = HybridConfig(
        als=ALSConfig(factors=8, iterations=10), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1), fusion=FusionConfig(tune=False)
    )
    model = HybridRetriever(config, show_progress=False).fit(planted)
    users = np.arange(20)
    found = model.candidates(users, k=30)
    counts = planted.user_items("counts")
    np.testing.assert_array_equal(found.sources["own_count"], lookup(counts[users], found.item_ids))
    days = found.sources["own_days_since"]
    assert (np.isnan(days) == (found.sources["own_count"] == 0)).all() and np.nanmin(days) >= 0
    own = found.sources["own_rank"]
    assert np.isnan(own[found.sources["own_count"] == 0]).all()  # own history ranks only the user's items
    cold = found.item_ids >= 110
    assert np.isnan(found.sources["als_rank"][cold]).all()  # ALS never finds cold items
    model.save(tmp_path / "hybrid")
    loaded = HybridRetriever.load(tmp_path / "hybrid")
    again = loaded.candidates(users, k=30)
    np.testing.assert_array_equal(again.item_ids, found.item_ids)
    np.testing.assert_allclose(again.scores, found.scores, rtol=1e-6)
