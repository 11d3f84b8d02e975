"""Rolling origins: one fit per origin, the slice table pooled over user-origin pairs."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.config import ALSConfig, BiEncoderConfig, FusionConfig, HybridConfig, ProtocolConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.evaluation import benchmark, benchmark_origins, origins_markdown

pytestmark = pytest.mark.slow

SOURCES = ("own", "als", "popularity")
CONFIGS = {"hybrid": HybridConfig(als=ALSConfig(factors=8, iterations=5), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                                  fusion=FusionConfig(quotas={s: 50 for s in SOURCES}, weights={s: 1.0 for s in SOURCES}, tune=False))}


def test_each_origin_is_its_own_benchmark_and_the_slices_pool_user_origins() -> None:
    shop = synthetic(n_users=150, n_items=60, n_clusters=3, purchases_per_user=20, days=150, seed=7)
    protocol = ProtocolConfig(latency_users=0)
    result = benchmark_origins(shop, ["2024-04-01", "2024-05-01"], methods=["repurchase", "hybrid"], configs=CONFIGS,
                               protocol=protocol, show_progress=False)
    assert list(result["origins"]) == ["2024-04-01", "2024-05-01"] == result["pooled"]["origins"]
    april = benchmark(shop, "2024-04-01", "2024-04-30", methods=["repurchase", "hybrid"], configs=CONFIGS, protocol=protocol,
                      show_progress=False)
    assert result["origins"]["2024-04-01"]["results"] == april.results  # the month after the origin, fitted before it
    assert result["origins"]["2024-05-01"]["protocol"]["test_to"] == "2024-05-31"  # the month after the origin
    pooled = {(row["slice"], row["ranking"]): row for row in result["pooled"]["slices"]}
    per_origin = [{(row["slice"], row["ranking"]): row for row in report["breakdown"]["slices"]} for report in result["origins"].values()]
    for key in (("all", "all"), ("new", "new"), ("repurchase", "all")):
        users = [origin[key]["users"] for origin in per_origin]
        assert pooled[key]["users"] == sum(users) and pooled[key]["targets"] == sum(o[key]["targets"] for o in per_origin)
        means = [origin[key]["methods"]["hybrid"]["ndcg@10"] for origin in per_origin]
        assert pooled[key]["methods"]["hybrid"]["ndcg@10"] == pytest.approx(np.average(means, weights=users), abs=1e-12)
    markdown = origins_markdown(result)
    assert "| 2024-05-01 |" in markdown and "| repurchase | all | recall@10 |" in markdown


def test_no_origin_is_an_error() -> None:
    with pytest.raises(ValueError, match="origin"):
        benchmark_origins(synthetic(seed=0), [], methods=["popularity"])


def test_the_origins_report_gives_each_rerankers_calibration_per_origin() -> None:
    def report(ece: float | None) -> dict:
        metrics = {"all": {"ndcg@10": 0.3}, "new": {"ndcg@10": 0.1}}
        calibration = {} if ece is None else {"feature_rerank": {"ece": ece, "mean_predicted": 0.085, "observed": 0.108}}
        return {"results": {"hybrid": metrics, "feature_rerank": metrics}, "dataset": {"evaluated_users": 10}, "calibration": calibration}

    result = {"origins": {"2011-07-01": report(0.0213), "2011-08-01": report(None)}, "pooled": {"origins": [], "slices": []}}
    lines = origins_markdown(result).splitlines()
    assert "| origin | feature_rerank |" in lines
    assert "| 2011-07-01 | 0.0213 (0.085 / 0.108) |" in lines and "| 2011-08-01 |  |" in lines
