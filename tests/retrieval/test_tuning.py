"""Per-shop source tuning: it must find what poorly configured sources miss, and keep good values."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.config import ALSConfig, FusionConfig, HybridConfig, ItemKNNConfig, PopularityConfig, RepurchaseConfig
from ecomrec.data.split import make_split
from ecomrec.data.synthetic import synthetic
from ecomrec.retrieval.als import ALSRetriever
from ecomrec.retrieval.fusion import HybridRetriever
from ecomrec.retrieval.tuning import SourceValidation, _grid

SOURCES = ("own", "als", "als_new", "itemknn", "popularity")


@pytest.fixture(scope="module")
def shop():
    return synthetic(n_users=240, n_items=120, n_clusters=4, purchases_per_user=24, noise=0.05, days=120, seed=21)


def _hybrid(shop, budget: float, als: ALSConfig) -> HybridRetriever:
    config = HybridConfig(
        als=als, itemknn=ItemKNNConfig(neighbours=1), repurchase=RepurchaseConfig(popularity=PopularityConfig(window_days=1)),
        fusion=FusionConfig(quotas={s: 60 for s in SOURCES}, weights={s: 1.0 for s in SOURCES}, valid_days=20),
        tune_budget_s=budget,
    )
    return HybridRetriever(config, show_progress=False).fit(shop)


@pytest.mark.slow
def test_tuning_finds_better_sources_than_poorly_configured_ones(shop, tmp_path) -> None:
    crippled = ALSConfig(factors=1, regularization=500.0, alpha=0.5, iterations=5, weighting="binary")
    hybrid = _hybrid(shop, budget=4.0, als=crippled)
    report = hybrid.describe()["source_tuning"]
    for source, gain in (("als", 0.05), ("itemknn", 0.02), ("popularity", 0.005)):
        assert report[source]["best_score"] > report[source]["configured_score"] + gain, source
    assert report["als"]["trials"] > 2 and report["users"] > 0
    # the fitted hybrid holds and serves the values kept, and they survive saving
    assert hybrid.config.als.factors == report["als"]["factors"] != 1
    assert hybrid.config.itemknn.neighbours == report["itemknn"]["neighbours"] != 1
    assert hybrid.config.repurchase.popularity.window_days == report["popularity"]["window_days"] != 1
    assert hybrid.models_["als"].config == hybrid.config.als
    assert HybridRetriever.load(hybrid.save(tmp_path / "h")).config == hybrid.config
    from ecomrec.evaluation.report import BenchmarkReport

    markdown = BenchmarkReport(methods={"hybrid": hybrid.describe()}).to_markdown()
    assert f"| hybrid | als knobs, validation from {report['start'][:10]} ({report['users']:,} users) | factors {report['als']['factors']}," in markdown
    # the reported scores are what the kept ALS scores alone on that validation window
    split = make_split(shop, report["start"])
    validation = SourceValidation(split, np.flatnonzero(np.isin(split.users, split.users)))
    kept = ALSRetriever(hybrid.config.als, show_progress=False).fit(split.history)
    assert validation.score(kept) == pytest.approx(report["als"]["best_score"], abs=1e-9)


@pytest.mark.slow
def test_no_budget_no_tuning(shop) -> None:
    als = ALSConfig(factors=4, iterations=5)
    hybrid = _hybrid(shop, budget=0.0, als=als)
    assert hybrid.source_tuning_ is None and "source_tuning" not in hybrid.describe() and hybrid.config.als == als


def test_a_grid_keeps_the_configured_value_unless_beaten() -> None:
    assert _grid("k", 20, (10, 20, 50), lambda v: 1.0)[0] == 20  # a tie keeps it
    assert _grid("k", 20, (10, 50), lambda v: float(v == 50))[0] == 50
    value, report = _grid("k", 7, (10, 50), lambda v: -abs(v - 9))
    assert value == 10 and report["tried"] == {"7": -2.0, "10": -1.0, "50": -41.0} and report["configured_score"] == -2.0


def test_a_negative_budget_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="tune_budget_s"):
        HybridConfig(tune_budget_s=-1)
