"""The purchase reranker end to end on planted data: it must recover what a poor fusion hides."""

from __future__ import annotations

import numpy as np
import pandas as pd
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
    importance = reranked.reranker.training_["importance"]["purchase_model"]
    assert importance["popularity_rank_log"] < max(importance["als_rank_log"], importance["own_count_log"])


def test_the_fitted_reranker_proved_itself_on_the_validation_cutoff(fitted) -> None:
    """Far above the fused order it replaces on both kinds of list; whether it also beats ALS's
    own order (which knows the clusters too) is for validation to say, and the best is kept."""
    from ecomrec.rerank.reranker import _best_order

    reranker = fitted[2].reranker
    check = reranker.training_["validation"]
    for kind in ("all", "new"):  # each kind of list: the model far above the fused order, and the best order kept
        scores = {n.removesuffix("_ndcg@10"): v for n, v in check["by_list"][kind].items() if n.endswith("_ndcg@10")}
        assert scores["purchase_model"] > scores["fused"] + 0.1 and reranker.orders[kind] == _best_order(scores)
        assert scores[reranker.orders[kind]] == max(scores.values())
        assert reranker.orders[kind] in ("purchase_model", "source:als")
    assert check["kept"] == (not reranker.bypassed) == ("purchase_model" in reranker.orders.values())


def _in_order(fused, kept: str, head: int) -> np.ndarray:
    """The fused lists' item ids with the head in the order ``kept`` (``fused`` or ``source:<name>``:
    the source's rank, the items it did not list after them)."""
    if kept == "fused":
        return fused.item_ids
    rank = fused.sources[kept.removeprefix("source:") + "_rank"][:, :head]
    order = np.argsort(np.nan_to_num(rank, nan=np.inf), axis=1, kind="stable")
    return np.concatenate([np.take_along_axis(fused.item_ids[:, :head], order, axis=1), fused.item_ids[:, head:]], axis=1)


def test_a_reranker_that_loses_on_validation_is_bypassed(fitted, monkeypatch) -> None:
    from ecomrec.rerank.purchase import PurchaseModel

    split, _, _ = fitted
    good = FusionConfig(quotas={"own": 60, "als": 60, "popularity": 60}, weights={"own": 1.0, "als": 1.0, "popularity": 0.001}, tune=False)
    hybrid = HybridRetriever(HybridConfig(als=ALSConfig(factors=8, iterations=10), fusion=good), show_progress=False).fit(split.history)
    noise = np.random.default_rng(0)
    monkeypatch.setattr(PurchaseModel, "margin", lambda self, x: noise.normal(size=len(x)))  # a model that knows nothing
    config = RerankConfig(text=False, cutoffs=2, window_days=15, candidates=40, trees=20, min_child_samples=10)
    useless = RerankedRetriever(hybrid, PurchaseReranker(config)).fit(split.history)
    check = useless.reranker.training_["validation"]
    assert not check["kept"] and useless.reranker.bypassed
    for kind, kept in useless.reranker.orders.items():  # each kind of list keeps its best other order on validation
        scores = {n.removesuffix("_ndcg@10"): v for n, v in check["by_list"][kind].items() if n.endswith("_ndcg@10")}
        assert kept != "purchase_model" and scores[kept] == max(v for n, v in scores.items() if n != "purchase_model")
    users = split.users[:30]
    for exclude, kind in ((None, "all"), ("seen", "new")):
        out, fused = useless.candidates(users, 50, exclude=exclude), hybrid.candidates(users, 50, exclude=exclude)
        np.testing.assert_array_equal(out.item_ids, _in_order(fused, useless.reranker.orders[kind], 40), err_msg=kind)
        assert (np.diff(out.scores, axis=1) <= 0).all() and np.isfinite(out.sources["p_purchase"][:, :40]).all()


def test_full_and_new_item_lists_are_judged_apart(fitted, monkeypatch) -> None:
    """A model that guesses on full lists (those holding items the user bought) and is right on
    new-item lists: validation keeps another order for the first kind, judges the second on its
    own, and serving follows the kind of each query."""
    from ecomrec.rerank.features import feature_names
    from ecomrec.rerank.purchase import PurchaseModel

    split, hybrid, _ = fitted
    own_share = feature_names(sorted(hybrid.quotas_)).index("list_own_share")
    truth, noise = PurchaseModel.margin, np.random.default_rng(1)
    monkeypatch.setattr(PurchaseModel, "margin", lambda self, x: np.where(x[:, own_share] > 0, noise.normal(size=len(x)), truth(self, x)))
    config = RerankConfig(text=False, cutoffs=2, window_days=15, candidates=40, trees=100, min_child_samples=10)
    served = RerankedRetriever(hybrid, PurchaseReranker(config)).fit(split.history)
    orders, by_list = served.reranker.orders, served.reranker.training_["validation"]["by_list"]
    assert orders["all"] != "purchase_model" and by_list["all"]["purchase_model_ndcg@10"] < by_list["all"]["fused_ndcg@10"] + 0.05
    assert by_list["new"]["purchase_model_ndcg@10"] > by_list["new"]["fused_ndcg@10"] + 0.3  # the same model, right here
    users = split.users[:30]
    full, fused = served.candidates(users, 50), hybrid.candidates(users, 50)
    np.testing.assert_array_equal(full.item_ids, _in_order(fused, orders["all"], 40))
    new = served.candidates(users, 50, exclude="seen")
    if orders["new"] == "purchase_model":
        assert (np.diff(new.sources["p_purchase"][:, :40], axis=1) <= 0).all()
    else:
        np.testing.assert_array_equal(new.item_ids, _in_order(hybrid.candidates(users, 50, exclude="seen"), orders["new"], 40))


def test_lists_that_exclude_the_whole_history_are_new_item_lists() -> None:
    import scipy.sparse as sp

    from ecomrec.rerank.reranker import excludes_history
    from ecomrec.retrieval.base import Query

    history = sp.csr_matrix(np.array([[2, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    seen = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    query = lambda exclude: Query(np.arange(3), history, False, 5, exclude, None)  # noqa: E731
    np.testing.assert_array_equal(excludes_history(query(seen)), [True, False, False])  # row 1 keeps item 1; row 2 bought nothing
    np.testing.assert_array_equal(excludes_history(query(np.array([0, 1, 2]))), [True, True, False])
    np.testing.assert_array_equal(excludes_history(query(None)), [False, False, False])


def test_reranked_list_is_the_same_candidates_reordered_by_probability(fitted, monkeypatch) -> None:
    from ecomrec.rerank import reranker as module

    split, hybrid, kept = fitted
    monkeypatch.setattr(module, "_best_order", lambda scores: module.MODEL_ORDER)  # the model's order on every kind of list
    reranked = RerankedRetriever(hybrid, PurchaseReranker(kept.reranker.config)).fit(split.history)
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
    assert set(out.timings) >= {"candidates", "rerank:features", "rerank:model", "end_to_end"}


def test_auto_cutoffs_are_the_fewest_the_model_needs() -> None:
    from ecomrec.rerank.reranker import training_cutoffs

    shop = synthetic(n_users=40, n_items=30, days=90, seed=1)
    end = shop.end.normalize() + pd.Timedelta(days=1)
    config = RerankConfig(cutoffs=0, window_days=10, min_window_users=1)  # 40 users: any window holds one
    assert training_cutoffs(shop, config) == [end - pd.Timedelta(days=20), end - pd.Timedelta(days=10)]
    assert len(training_cutoffs(shop, config.replace(text=True))) == 3
    assert len(training_cutoffs(shop, config.replace(cutoffs=4))) == 4


def test_a_thin_log_widens_the_training_window_until_it_holds_enough_users() -> None:
    from ecomrec.rerank.reranker import training_cutoffs, window_days

    def users_across(shop, days: int) -> int:  # bought before the last cutoff and after it
        cutoff = shop.end.normalize() + pd.Timedelta(days=1 - days)
        frame = shop.interactions
        return len(set(frame.user[frame.timestamp < cutoff]) & set(frame.user[frame.timestamp >= cutoff]))

    thin = synthetic(n_users=300, n_items=40, purchases_per_user=3, days=720, seed=3)
    config = RerankConfig(window_days=30, min_window_users=60)
    window = window_days(thin, config)
    assert users_across(thin, 30) < 60 and window > 30  # a month is too thin here
    assert users_across(thin, window) >= 60 > users_across(thin, window // 2)  # the first doubling that holds enough
    cutoffs = training_cutoffs(thin, config)
    assert [b - a for a, b in zip(cutoffs, cutoffs[1:])] == [pd.Timedelta(days=window)]
    dense = synthetic(n_users=300, n_items=40, purchases_per_user=20, days=120, seed=3)
    assert users_across(dense, 30) >= 60 and window_days(dense, config) == 30
    widest, span = window_days(thin, config.replace(min_window_users=10**6)), (thin.end - thin.start).days
    assert widest * 3 <= span < widest * 2 * 3  # two cutoffs and history before them: as wide as the log allows


def test_examples_refuse_a_bi_encoder_trained_past_the_first_cutoff() -> None:
    import types

    from ecomrec.config import BiEncoderConfig
    from ecomrec.rerank.reranker import training_examples
    from ecomrec.retrieval import BiEncoderRetriever

    shop = synthetic(n_users=120, n_items=60, days=90, seed=2)
    config = BiEncoderConfig(layers=1, max_pairs=64, batch_size=16, eval_every=2, patience=1, valid_users=20, valid_days=10)
    bi = BiEncoderRetriever(config, show_progress=False).fit(shop)  # fine-tuned on all of it, labels included
    # on 60 items validation recall@100 is 1.0 whatever the weights, so no step beats the base model and
    # the weights stay the base's (trained_until_ None): this stands for a fine-tune that replaced them
    bi.trained_until_ = shop.end
    hybrid = types.SimpleNamespace(quotas_={"bi_encoder": 50})
    with pytest.raises(ValueError, match="past the first training cutoff"):
        training_examples(shop, hybrid, RerankConfig(window_days=10), bi=bi)


def test_reranker_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="cutoffs"):
        RerankConfig(text=True, cutoffs=2)


def test_recommend_explains_each_probability(fitted) -> None:
    split, _, reranked = fitted
    users = split.users[:10]
    out = reranked.recommend(users, 5)
    np.testing.assert_array_equal(out.item_ids, reranked.candidates(users, 5).item_ids)
    shares = np.stack([v for n, v in out.sources.items() if n.startswith("why:")], axis=-1)
    assert shares.shape[-1] == len(reranked.reranker.names_)
    bias = out.sources["p_purchase"]  # logit(p) = sum of shares + Platt-scaled TreeSHAP bias (same for every full list)
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


def test_a_seed_ensemble_reranker_saves_every_booster(fitted, tmp_path) -> None:
    split, hybrid, _ = fitted
    config = RerankConfig(text=False, cutoffs=2, window_days=15, candidates=40, trees=20, min_child_samples=10, models=3)
    reranked = RerankedRetriever(hybrid, PurchaseReranker(config)).fit(split.history)
    assert [len(trees) for trees in reranked.reranker.training_["trees"].values()] == [3]
    users = split.users[:30]
    reranked.save(tmp_path / "reranked")
    before, after = reranked.candidates(users, 20), RerankedRetriever.load(tmp_path / "reranked").candidates(users, 20)
    np.testing.assert_array_equal(after.item_ids, before.item_ids)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    (tmp_path / "reranked" / "reranker" / "purchase_model.2.txt").write_text("tree\n")
    with pytest.raises(ArtifactError, match="purchase_model.2.txt"):
        RerankedRetriever.load(tmp_path / "reranked")


@pytest.fixture(scope="module")
def with_text(fitted):  # type: ignore[no-untyped-def]
    from ecomrec.config import CrossEncoderConfig

    split, hybrid, _ = fitted
    text = CrossEncoderConfig(layers=2, user_tokens=32, item_tokens=8, max_pairs=800, eval_every=20, device="cpu")
    config = RerankConfig(text=True, cutoffs=3, window_days=15, candidates=40, trees=60, min_child_samples=10, cross_encoder=text)
    return config, RerankedRetriever(hybrid, PurchaseReranker(config)).fit(split.history)


def test_the_text_score_is_kept_only_where_it_wins_on_validation(fitted, with_text) -> None:
    """Trained with and without the text score; per kind of list the order validation ranks
    best; where the text model wins nowhere, serving never runs the cross-encoder."""
    from ecomrec.rerank.reranker import TEXT_ORDER, _best_order

    split, _, _ = fitted
    reranker = with_text[1].reranker
    check = reranker.training_["validation"]
    assert len(reranker.training_["text_log"]) > 1
    for kind in ("all", "new"):
        scores = {n.removesuffix("_ndcg@10"): v for n, v in check["by_list"][kind].items() if n.endswith("_ndcg@10")}
        assert {"purchase_model", TEXT_ORDER, "fused"} <= set(scores) and reranker.orders[kind] == _best_order(scores)
    kept = TEXT_ORDER in reranker.orders.values()
    assert (reranker.text_ is not None) == kept == (TEXT_ORDER in reranker.models_)
    timings = with_text[1].candidates(split.users[:5], 20).timings
    assert ("rerank:text" in timings) == (reranker.orders["all"] == TEXT_ORDER)


def test_where_the_text_score_is_kept_only_those_lists_run_it(fitted, with_text, monkeypatch, tmp_path) -> None:
    """Text kept for full lists only: they run the cross-encoder and read its score (probabilities
    are the calibrated sum of what explain shows, text included), new-item lists do not; the
    saved reranker gives the same lists."""
    from ecomrec.rerank import reranker as module

    split, hybrid, _ = fitted
    check = module.PurchaseReranker._validation_check

    def text_for_full_lists(self, valid, p):  # type: ignore[no-untyped-def]
        out = check(self, valid, p)
        return {**out, "order": {"all": module.TEXT_ORDER, "new": module.MODEL_ORDER}, "kept": True}

    monkeypatch.setattr(module.PurchaseReranker, "_validation_check", text_for_full_lists)
    reranked = RerankedRetriever(hybrid, PurchaseReranker(with_text[0])).fit(split.history)
    assert reranked.reranker.orders == {"all": module.TEXT_ORDER, "new": module.MODEL_ORDER}
    users = split.users[:20]
    full, new = reranked.recommend(users, 40), reranked.recommend(users, 40, exclude="seen")
    assert "rerank:text" in full.timings and "rerank:text" not in new.timings
    for out in (full, new):
        p = out.sources["p_purchase"].astype(np.float64)
        assert ((p > 0) & (p < 1)).all() and (np.diff(p, axis=1) <= 1e-7).all()
        shares = {n: v for n, v in out.sources.items() if n.startswith("why:")}
        implied = np.log(p / (1 - p)) - np.sum(list(shares.values()), axis=0)  # the same bias for every candidate of a list
        np.testing.assert_allclose(implied, np.broadcast_to(implied[:, :1], implied.shape), atol=2e-3)
    assert np.abs(full.sources["why:text_score"]).max() > 0 and np.abs(new.sources["why:text_score"]).max() == 0
    reranked.save(tmp_path / "reranked")
    loaded = RerankedRetriever.load(tmp_path / "reranked")
    np.testing.assert_array_equal(loaded.candidates(users, 20).item_ids, reranked.candidates(users, 20).item_ids)
    np.testing.assert_allclose(loaded.candidates(users, 20).scores, reranked.candidates(users, 20).scores, rtol=1e-5)


def _examples_with_two_base_rates(n: int = 4000, k: int = 20, seed: int = 0):  # type: ignore[no-untyped-def]
    """Margins drawn alike for both kinds of list; labels from sigmoid(margin + 1) on full lists
    and sigmoid(margin - 2) on new-item lists: one Platt fit cannot be right for both."""
    from ecomrec.candidates import Candidates
    from ecomrec.rerank.examples import Examples

    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 1.5, (n, k))
    new = np.arange(n) % 2 == 1
    logits = margin + np.where(new, -2.0, 1.0)[:, None]
    labels = rng.random((n, k)) < 1 / (1 + np.exp(-logits))
    ids = np.tile(np.arange(k), (n, 1))
    examples = Examples(pd.Timestamp("2011-09-01"), np.arange(n), [""] * n, Candidates(ids, -margin), labels,
                        np.zeros((n, k, 1), np.float32), new)
    return examples, margin


def test_each_kind_of_list_gets_its_own_calibration_when_their_base_rates_differ() -> None:
    from ecomrec.rerank.reranker import _fit_platt_by_list

    examples, margin = _examples_with_two_base_rates()
    shown = np.ones_like(examples.labels)
    per_kind = _fit_platt_by_list(margin, examples.labels, shown, examples.new_lists, "per_list_kind")
    np.testing.assert_allclose(per_kind["all"], (1.0, 1.0), atol=0.08)  # the slope and intercept labels were drawn with
    np.testing.assert_allclose(per_kind["new"], (1.0, -2.0), atol=0.12)
    one = _fit_platt_by_list(margin, examples.labels, shown, examples.new_lists, "one_fit")
    assert one["all"] == one["new"] and -2.0 < one["all"][1] < 1.0

    reranker = PurchaseReranker(RerankConfig())
    check = reranker._fit_calibration("purchase_model", examples, margin)
    assert check["kept"] == "per_list_kind" and check["per_list_kind"]["within_kinds"] < check["one_fit"]["within_kinds"] / 5
    p = reranker._calibrated("purchase_model", margin, examples.new_lists)
    for kind in (False, True):  # each kind's mean probability is its purchase rate
        rows = examples.new_lists == kind
        assert abs(p[rows].mean() - examples.labels[rows].mean()) < 0.01
    full = reranker._calibrated("purchase_model", margin[:1], np.array([False]))
    assert abs(reranker._calibrated("purchase_model", margin[:1]).mean() - full.mean()) < 1e-12


def test_one_calibration_is_kept_when_both_kinds_share_a_base_rate() -> None:
    examples, margin = _examples_with_two_base_rates(n=16000)  # enough lists that ECE's noise is below the fifth
    rng = np.random.default_rng(1)
    examples.labels[:] = rng.random(margin.shape) < 1 / (1 + np.exp(-margin))  # the same rate for both kinds
    reranker = PurchaseReranker(RerankConfig())
    check = reranker._fit_calibration("purchase_model", examples, margin)
    assert check["kept"] == "one_fit" and reranker.platt_["purchase_model"]["all"] == reranker.platt_["purchase_model"]["new"]


def test_the_kept_calibration_is_recorded_and_reported(fitted) -> None:
    from ecomrec.evaluation.report import BenchmarkReport

    _, _, reranked = fitted
    check = reranked.reranker.training_["calibration"]
    assert check["kept"] in ("one_fit", "per_list_kind")
    assert check["platt"] == {kind: list(v) for kind, v in reranked.reranker.platt_["purchase_model"].items()}
    assert (check["platt"]["all"] == check["platt"]["new"]) == (check["kept"] == "one_fit")
    markdown = BenchmarkReport(methods={"feature_rerank": reranked.describe()}).to_markdown()
    row = next(line for line in markdown.splitlines() if line.startswith("| feature_rerank | calibration, cutoff"))
    assert check["kept"] in row and f"{check['one_fit']['within_kinds']:.4f}" in row


def test_appended_purchases_reach_the_reranked_lists_without_training(fitted) -> None:
    """``with_interactions``: the window's purchases count as seen and as the users' history
    (collaborative statistics, history texts); the models are the same objects; the original
    serves as before."""
    split, _, reranked = fitted
    later = synthetic(n_users=300, n_items=120, n_clusters=4, purchases_per_user=30, noise=0.05, days=120, seed=5).between(None, "2024-04-25")
    users = split.users[:20]
    before = reranked.candidates(users, 20, exclude="seen")
    updated = reranked.with_interactions(later)
    assert updated.reranker.models_ is reranked.reranker.models_ and updated.hybrid.models_["als"] is not reranked.hybrid.models_["als"]
    bought = later.user_items("binary")
    after = updated.candidates(users, 20, exclude="seen")
    for row, user in enumerate(users):
        assert not set(after.item_ids[row][after.item_ids[row] >= 0]) & set(bought[user].indices)
    assert ((after.sources["p_purchase"] > 0) & (after.sources["p_purchase"] < 1)).all()
    np.testing.assert_array_equal(reranked.candidates(users, 20, exclude="seen").item_ids, before.item_ids)


def test_without_text_the_purchase_model_learns_from_every_cutoff_but_the_last(fitted, monkeypatch) -> None:
    from ecomrec.rerank import training_examples
    from ecomrec.rerank.purchase import PurchaseModel

    split, hybrid, _ = fitted
    config = RerankConfig(text=False, cutoffs=3, window_days=15, candidates=40, trees=20, min_child_samples=10)
    examples = training_examples(split.history, hybrid, config)
    rows = [int((e.candidates.item_ids >= 0).sum()) for e in examples]
    seen = []
    real_fit = PurchaseModel.fit
    monkeypatch.setattr(PurchaseModel, "fit", lambda self, x, *rest: seen.append((len(x), len(rest[3]))) or real_fit(self, x, *rest))
    PurchaseReranker(config).fit(split.history, hybrid, examples=examples)
    assert seen == [(rows[0] + rows[1], rows[2])]  # learnt on the first two cutoffs, stopped early on the third
