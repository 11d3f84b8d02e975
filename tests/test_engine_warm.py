"""Warm refits: ``Engine.fit(data, warm_start=engine)`` and ``ecomrec fit --warm-start`` continue the
served models (known answers on planted shops), keep what the refit does not beat, and say so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ecomrec.cli import main
from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig, RerankConfig, SearchConfig
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.synthetic import synthetic
from ecomrec.engine import Engine
from ecomrec.rerank.purchase import PurchaseModel
from ecomrec.rerank.reranker import MODEL_ORDER, PurchaseReranker
from ecomrec.retrieval.als import ALSRetriever

pytestmark = pytest.mark.slow

CONFIG = EngineConfig(
    hybrid=HybridConfig(als=ALSConfig(factors=8, iterations=5),
                        bi_encoder=BiEncoderConfig(layers=1, max_pairs=200, batch_size=16, eval_every=3, patience=1,
                                                   valid_users=30, valid_days=10)),
    rerank=RerankConfig(window_days=10, candidates=30, trees=40, min_child_samples=10, example_bi_encoder_pairs=64),
    search=SearchConfig(dense=BiEncoderConfig(fine_tune=False, layers=1)),
)
WEEK = pd.Timedelta(days=7)


@pytest.fixture(scope="module")
def shop():
    return synthetic(n_users=160, n_items=60, n_clusters=4, purchases_per_user=24, n_cold_items=4, days=120, seed=5)


@pytest.fixture(scope="module")
def saved(shop, tmp_path_factory):
    engine = Engine(CONFIG, show_progress=False).fit(shop.between(None, shop.end - WEEK))
    return engine.save(tmp_path_factory.mktemp("engines") / "served")


@pytest.fixture()
def served(saved, shop):
    """An engine fitted a week before the shop's end, loaded as a shop serves it. On 60 items
    validation recall@100 is 1.0 whatever the weights, so no fine-tune beats the base model:
    its bi-encoder stands for one that did, trained up to its last purchase."""
    engine = Engine.load(saved)
    engine.hybrid_.models_["bi_encoder"].trained_until_ = shop.between(None, shop.end - WEEK).end
    return engine


def test_als_starts_from_the_served_factors_matched_by_id(shop) -> None:
    old = shop.between(None, shop.end - WEEK)
    served = ALSRetriever(factors=8, iterations=5, show_progress=False).fit(old)
    # the same log under other dense ids (a newcomer sorts first and shifts every customer by one)
    frame = shop.interactions.assign(user=shop.interactions["user"] + 1)
    newcomer = pd.DataFrame({"user": [0], "item": [0], "timestamp": [shop.end], "quantity": [1.0]})
    ids = np.r_[["a-newcomer"], shop.users.ids]
    shifted = Dataset(pd.concat([newcomer, frame], ignore_index=True), shop.catalog, IdMap(ids), shop.items, name="shifted")
    users, items = ALSRetriever(factors=8, iterations=5)._start_factors(shifted, served)
    np.testing.assert_array_equal(users[1:], served.user_factors_)  # each customer's own row, by id
    np.testing.assert_array_equal(items, served.item_factors_)
    assert (0 <= users[0]).all() and (users[0] < 0.01).all()  # the newcomer: implicit's small random start
    warm = ALSRetriever(factors=8, iterations=1, show_progress=False).fit(shop, start_from=served)
    cold = ALSRetriever(factors=8, iterations=1, show_progress=False).fit(shop)
    cosine = lambda a, b: float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cosine(warm.item_factors_, served.item_factors_) > 0.9 > cosine(cold.item_factors_, served.item_factors_)
    with pytest.raises(ValueError, match="factors"):
        ALSRetriever(factors=4, iterations=1).fit(shop, start_from=served)


def test_a_warm_refit_continues_every_part_and_reports_it(served, shop, tmp_path) -> None:
    warm = Engine(CONFIG, show_progress=False).fit(shop, warm_start=served)
    report = warm.fit_report_["warm_start"]
    assert report["fusion"] == "kept the served weights and depths"
    assert warm.hybrid_.weights_ == served.hybrid_.weights_ and warm.hybrid_.quotas_ == served.hybrid_.quotas_
    assert report["example_bi_encoder"].startswith("kept the served one")
    assert warm.snapshot.example_bi.model_hash_ == served.snapshot.example_bi.model_hash_  # kept for the next refit
    assert report["als"] == "continued from the served factors (160 of 160 customers known)"
    bi = report["bi_encoder"]
    assert bi["continued_from"].startswith("the served model") and bi["pairs"] > 0
    assert warm.hybrid_.models_["bi_encoder"].validation_.start > served.hybrid_.models_["bi_encoder"].trained_until_
    assert report["purchase_model"]["purchase_model"] in ("refit", "served")
    assert report["search"] == "reused the served title vectors"
    assert "rerank_examples" in warm.fit_stages_ and "fusion_tuning" not in warm.fit_stages_
    saved = Engine.load(warm.save(tmp_path / "warm"))
    assert len(saved.recommend([str(shop.users.ids[0])], k=5).to_records()) == 5
    served_until = served.hybrid_.models_["bi_encoder"].trained_until_  # the last purchase the weights learned from
    assert saved.hybrid_.models_["bi_encoder"].trained_until_ == (shop.end if bi["weights"] == "trained" else served_until)
    held = " ".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "warm" / "example_bi_encoder").rglob("*") if p.is_file())
    assert not [u for u in shop.users.ids[:20] if str(u) in held]  # the examples' model is kept as weights only


def test_a_warm_refit_needs_an_engine_and_data_reaching_its_log(served, shop) -> None:
    with pytest.raises(TypeError, match="fitted Engine"):
        Engine(CONFIG).fit(shop, warm_start=served.snapshot)
    with pytest.raises(ValueError, match="knows purchases up to"):
        Engine(CONFIG).fit(shop.between(None, shop.end - 2 * WEEK), warm_start=served)


def test_the_served_purchase_model_stays_where_the_refit_ranks_worse(served, shop) -> None:
    """Known answer: a served model trained on the validation cutoff's own labels ranks it better
    than any refit, and is kept; the same model as the refit's is not (ties go to the refit)."""
    refit = Engine(CONFIG.replace(search=SearchConfig(enabled=False)), show_progress=False).fit(shop)
    reranker, valid = refit.model_.reranker, refit.model_._examples[-1]
    shown = valid.candidates.item_ids >= 0
    rows = valid.features[shown], valid.labels[shown], shown.sum(axis=1)[shown.sum(axis=1) > 0]
    cheat = PurchaseModel(trees=200, leaves=31, learning_rate=0.1, min_child_samples=2, seed=0).fit(*rows, *rows, reranker.names_)
    cheating = PurchaseReranker(CONFIG.rerank)
    cheating.names_, cheating.models_ = reranker.names_, {MODEL_ORDER: cheat}
    verdict = reranker._warm_verdict(cheating, valid)
    assert verdict["purchase_model"] == "served" and verdict["served_ndcg@10"] > verdict["refit_ndcg@10"]
    assert reranker.models_[MODEL_ORDER] is cheat
    same = PurchaseReranker(CONFIG.rerank)
    same.names_, same.models_ = reranker.names_, dict(reranker.models_)
    assert reranker._warm_verdict(same, valid)["purchase_model"] == "refit"
    other = PurchaseReranker(CONFIG.rerank)
    other.names_, other.models_ = reranker.names_[:-1], dict(reranker.models_)
    assert reranker._warm_verdict(other, valid)["purchase_model"].startswith("refit (the served model reads other inputs")


def test_cli_warm_start_refits_from_the_engines_own_log(served, tmp_path, capsys) -> None:
    path = served.save(tmp_path / "shop")
    assert main(["-q", "fit", "--warm-start", str(path), "--output", str(tmp_path / "shop")]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["fusion"] == "kept the served weights and depths" and "bi_encoder" in report
    refitted = Engine.load(tmp_path / "shop")
    assert refitted.config == served.config and len(refitted.snapshot.log) == len(served.snapshot.log)
    assert main(["-q", "fit", "--warm-start", str(tmp_path / "nothing"), "--output", str(tmp_path / "x")]) == 3
