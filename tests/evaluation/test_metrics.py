"""Metrics against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from ecomrec.evaluation import LatencyStats, ranking_metrics, time_calls


def _targets(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    matrix = np.zeros((len(rows), n_items))
    for r, items in enumerate(rows):
        matrix[r, items] = 1
    return sp.csr_matrix(matrix)


def test_hand_computed_example() -> None:
    # user 0: targets {2, 5}; ranking 5 . 2 . . -> hits at ranks 1 and 3
    # user 1: targets {9}; ranking puts 9 at rank 4
    # user 2: targets {0, 1, 3}; no hit in the top 5
    ranked = np.array([[5, 7, 2, 8, 6], [1, 2, 3, 9, 4], [9, 8, 7, 6, 5]])
    targets = _targets([[2, 5], [9], [0, 1, 3]])
    m, per_user = ranking_metrics(ranked, targets, ks=(1, 3, 5), n_catalog=10, per_user=True)
    np.testing.assert_allclose(per_user["recall@1"], [0.5, 0, 0])
    np.testing.assert_allclose(per_user["recall@3"], [1.0, 0, 0])
    np.testing.assert_allclose(per_user["recall@5"], [1.0, 1.0, 0])
    dcg0 = 1 + 1 / math.log2(4)
    idcg0 = 1 + 1 / math.log2(3)
    np.testing.assert_allclose(per_user["ndcg@10"], [dcg0 / idcg0, (1 / math.log2(5)) / 1.0, 0])
    np.testing.assert_allclose(per_user["mrr@10"], [1.0, 0.25, 0])
    np.testing.assert_allclose(per_user["hit@10"], [1, 1, 0])
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx(1.25 / 3)
    assert m["coverage@10"] == pytest.approx(9 / 10)  # every item but 0 was shown to someone


def test_recall_is_hits_over_all_targets_not_capped() -> None:
    ranked = np.array([[0, 1]])
    targets = _targets([[0, 1, 2, 3]])
    m = ranking_metrics(ranked, targets, ks=(2,), n_catalog=10)
    assert m["recall@2"] == 0.5  # 2 hits / 4 targets, although only 2 slots


def test_padding_never_hits_and_ideal_dcg_caps_at_ten() -> None:
    ranked = np.array([[-1, -1, 3] + [-1] * 9])
    targets = _targets([list(range(12))], n_items=12)
    m = ranking_metrics(ranked, targets, ks=(10,), n_catalog=12)
    ideal = sum(1 / math.log2(i + 2) for i in range(10))
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(4)) / ideal)
    assert m["recall@10"] == pytest.approx(1 / 12)
    assert m["coverage@10"] == pytest.approx(1 / 12)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="at least 10 ranked"):
        ranking_metrics(np.zeros((1, 5), int), _targets([[1]]), ks=(10,))
    with pytest.raises(ValueError, match="at least one target"):
        ranking_metrics(np.zeros((2, 10), int), _targets([[1], []]), ks=(10,))
    with pytest.raises(ValueError, match="rows"):
        ranking_metrics(np.zeros((3, 10), int), _targets([[1]]), ks=(10,))


def test_latency_percentiles() -> None:
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.p50 == pytest.approx(50.5) and stats.p95 == pytest.approx(95.05) and stats.p99 == pytest.approx(99.01)
    calls: list[int] = []
    timed = time_calls(calls.append, list(range(5)), warmup=2)
    assert calls == [0, 1, 0, 1, 2, 3, 4] and timed.n == 5


def test_paired_bootstrap_by_hand() -> None:
    from ecomrec.metrics import paired_bootstrap

    same = paired_bootstrap(np.array([0.5, 0.7, 0.9]), np.array([0.3, 0.5, 0.7]))
    assert same["mean_diff"] == pytest.approx(0.2) and same["ci95"] == pytest.approx([0.2, 0.2]) and same["excludes_zero"]
    # differences -1, +1 for half the users each: the mean's interval straddles 0
    spread = paired_bootstrap(np.tile([0.0, 1.0], 50), np.tile([1.0, 0.0], 50), seed=3)
    assert spread["mean_diff"] == 0.0 and spread["ci95"][0] < 0 < spread["ci95"][1] and not spread["excludes_zero"]
    assert spread["ci95"][1] - spread["ci95"][0] == pytest.approx(2 * 1.96 * 1.0 / np.sqrt(100), rel=0.2)  # ~ 2 x 1.96 sd / sqrt(n)


def test_a_customer_scored_several_times_counts_once_in_the_clustered_interval() -> None:
    from ecomrec.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    once = paired_bootstrap(a, b, seed=1)
    # the same 100 customers at three seeds, with the same values: three times the rows, no new evidence
    naive = paired_bootstrap(np.tile(a, 3), np.tile(b, 3), seed=1)
    clustered = paired_bootstrap(np.tile(a, 3), np.tile(b, 3), seed=1, clusters=np.tile(np.arange(100), 3))
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert naive["mean_diff"] == clustered["mean_diff"] == pytest.approx(once["mean_diff"])
    assert width(naive) == pytest.approx(width(once) / np.sqrt(3), rel=0.15)  # pseudo-replication narrows it
    assert width(clustered) == pytest.approx(width(once), rel=0.1)
    assert (clustered["users"], clustered["clusters"], once["clusters"]) == (300, 100, 100)
    # unequal repeats: the interval is of the pooled mean (a customer's rows weigh by their count)
    uneven = paired_bootstrap(np.array([1.0, 1.0, 1.0, 0.0]), np.zeros(4), clusters=np.array([7, 7, 7, 9]), seed=2)
    assert uneven["mean_diff"] == 0.75 and 0.0 <= uneven["ci95"][0] <= uneven["ci95"][1] <= 1.0


def test_warmup_then_decay_by_hand() -> None:
    import torch

    from ecomrec.training import warmup_then_decay

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_then_decay(optimizer, steps=10, warmup_ratio=0.2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
