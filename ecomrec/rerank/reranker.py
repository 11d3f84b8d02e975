"""Purchase-probability reranking of the hybrid's candidates, with or without BERT's text score."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.artifacts import load_npz, manifest_config, open_artifact, write_artifact
from ecomrec.config import TEXT_SOURCES, RerankConfig
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.text import history_text
from ecomrec.rerank.examples import Examples, examples_at
from ecomrec.rerank.features import CollaborativeStats, candidate_features, feature_names
from ecomrec.rerank.purchase import PurchaseModel, fit_platt
from ecomrec.rerank.text_model import TextScorer
from ecomrec.retrieval.base import Query, Retriever
from ecomrec.candidates import Candidates

logger = logging.getLogger(__name__)


#: The widest purchase window :func:`window_days` widens to on a thin log.
MAX_WINDOW_DAYS = 365


def window_days(data: Dataset, config: RerankConfig) -> int:
    """``config.window_days``, doubled while the last window holds fewer than ``config.min_window_users``
    users who bought on both sides of its cutoff (up to MAX_WINDOW_DAYS, and a window of history before the first cutoff)."""
    end = data.end.normalize() + pd.Timedelta(days=1)
    span = (end - data.start).days
    window = config.window_days
    while (window * 2 <= MAX_WINDOW_DAYS and window * 2 * (config.cutoff_count + 1) <= span
           and _users_across(data, end - pd.Timedelta(days=window)) < config.min_window_users):
        window *= 2
    return window


def _users_across(data: Dataset, cutoff: pd.Timestamp) -> int:
    """Users with purchases both before ``cutoff`` and from it on."""
    frame = data.interactions
    before = frame["timestamp"] < cutoff
    return len(np.intersect1d(frame["user"][before].unique(), frame["user"][~before].unique()))


def training_cutoffs(data: Dataset, config: RerankConfig) -> list[pd.Timestamp]:
    """Cutoffs :func:`window_days` apart before the end of ``data``, oldest first; the last window ends with the data."""
    end = data.end.normalize() + pd.Timedelta(days=1)
    window = window_days(data, config)
    return [end - pd.Timedelta(days=window * i) for i in range(config.cutoff_count, 0, -1)]


def example_bi_encoder(data: Dataset, bi_config: Any, config: RerankConfig, *, show_progress: bool = False) -> Any:
    """The bi-encoder behind the training examples' text candidates: ``bi_config`` fine-tuned on at
    most ``config.example_bi_encoder_pairs`` pairs of the data before the first training cutoff, so
    no cutoff's candidates come from a model that saw its labels."""
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

    early = bi_config.replace(max_pairs=min(bi_config.max_pairs, config.example_bi_encoder_pairs))
    return BiEncoderRetriever(early, show_progress=show_progress).fit(data.between(None, training_cutoffs(data, config)[0]))


def training_examples(data: Dataset, hybrid: Any, config: RerankConfig, *, bi: Any = None,
                      show_progress: bool = False) -> list[Examples]:
    """Labelled candidates of ``hybrid`` as of each cutoff, oldest first: cheap sources refitted per
    cutoff, the bi-encoder ``bi`` (default: a new :func:`example_bi_encoder`) fitted before the first."""
    cutoffs, window = training_cutoffs(data, config), window_days(data, config)
    if any(s in TEXT_SOURCES for s in hybrid.quotas_) and bi is None:
        bi = example_bi_encoder(data, hybrid.config.bi_encoder, config, show_progress=show_progress)
    elif bi is not None and bi.trained_until_ is not None and bi.trained_until_ >= cutoffs[0]:
        raise ValueError(f"the examples' bi-encoder was trained on data up to {bi.trained_until_}, "
                         f"past the first training cutoff {cutoffs[0]}: its candidates would know the labels")
    cfg = hybrid.config.bi_encoder
    out = []
    for cutoff in cutoffs:
        probe = hybrid.as_of(data.between(None, cutoff), bi)
        out.append(_concat([examples_at(probe, data, cutoff, window, config.candidates, cfg.history_items, cfg.history_chars,
                                        new_items_only=new)
                            for new in (False, True)]))  # full lists, and without past purchases
        logger.info("rerank examples at %s: %d users, %.2f positives per user in the top %d",
                    cutoff.date(), len(out[-1]), out[-1].labels.sum(axis=1).mean(), config.candidates)
    return out


#: The purchase model's order, and the order of the purchase model that reads BERT's text score too.
MODEL_ORDER = "purchase_model"
TEXT_ORDER = "purchase_model_text"
#: Ways to calibrate (:meth:`PurchaseReranker._fit_calibration`): one Platt fit for both kinds of list, or one per kind.
CALIBRATIONS = ("one_fit", "per_list_kind")


class PurchaseReranker:
    """Reorders candidates by calibrated P(purchase | user, item).

    The purchase model (LightGBM ``lambdarank``) learns from every training cutoff but the last; the
    last stops its training early, calibrates and judges it. With ``config.text`` a BERT cross-encoder
    learns from the cutoffs before the second-to-last, and the purchase models from that one only (a
    second reads the cross-encoder's score too, which must not have seen its labels). Per kind of list
    (full, new-item) validation keeps the order that ranks best (:meth:`_validation_check`); where no
    kind keeps the text model, the cross-encoder is dropped.
    """

    def __init__(self, config: RerankConfig | None = None, *, show_progress: bool | None = None,
                 warm_start: PurchaseReranker | None = None) -> None:
        """``warm_start``: the reranker in service; :meth:`fit` keeps its purchase model where the new
        one ranks the validation cutoff worse (:meth:`_warm_verdict`)."""
        self.config = config or RerankConfig()
        self.show_progress = bool(show_progress)
        self.text_: TextScorer | None = None
        self._warm_start = warm_start

    @property
    def name(self) -> str:
        return "hybrid_rerank" if self.config.text else "feature_rerank"

    def fit(self, data: Dataset, hybrid: Any, examples: list[Examples] | None = None) -> PurchaseReranker:
        cfg = self.config
        start = time.perf_counter()
        examples = examples or training_examples(data, hybrid, cfg, show_progress=self.show_progress)
        examples_seconds = time.perf_counter() - start
        self.sources_ = sorted(hybrid.quotas_)
        self.names_ = feature_names(self.sources_)
        # with text the cutoffs before the second-to-last are the cross-encoder's; without, the purchase model's too
        fit_on, valid = (examples[-2] if cfg.text else _concat(examples[:-1])), examples[-1]
        self.item_texts_ = [str(t) for t in data.item_texts]
        text: dict[int, np.ndarray] = {}
        if cfg.text:
            self.text_ = TextScorer(cfg.cross_encoder, self.item_texts_, show_progress=self.show_progress).fit(_concat(examples[:-2]), valid)
            text = {id(e): self.text_.score(e.texts, e.candidates.item_ids) for e in (fit_on, valid)}
        self.models_ = {MODEL_ORDER: self._train(fit_on, valid)}
        warm = self._warm_verdict(self._warm_start, valid) if self._warm_start is not None else None
        self._warm_start = None  # the served reranker is not held once this one is fitted
        if cfg.text:
            self.models_[TEXT_ORDER] = self._train(fit_on, valid, text[id(fit_on)], text[id(valid)])
        margins = {name: self._margin(name, valid.candidates, valid.features, text.get(id(valid))) for name in self.models_}
        calibration = {name: self._fit_calibration(name, valid, margin) for name, margin in margins.items()}
        validation = self._validation_check(valid, {name: self._calibrated(name, m, valid.new_lists) for name, m in margins.items()})
        text_log = self.text_.log if self.text_ is not None else []
        if TEXT_ORDER not in validation["order"].values():  # the text score won nowhere: serving never runs BERT
            self.text_ = None
            self.models_.pop(TEXT_ORDER, None)
        self.stats_ = CollaborativeStats.of(data)
        bi = hybrid.config.bi_encoder
        self.history_texts_ = data.history_texts(max_items=bi.history_items, max_chars=bi.history_chars)
        self.history_items_, self.history_chars_ = bi.history_items, bi.history_chars
        self.training_ = {
            "cutoffs": [str(e.cutoff.date()) for e in examples],
            "window_days": int((examples[-1].cutoff - examples[-2].cutoff).days), "users_per_cutoff": [len(e) for e in examples],
            "positive_share": [float(e.labels[e.candidates.item_ids >= 0].mean()) for e in examples],
            "validation": validation, "calibration": calibration[MODEL_ORDER], "calibration_by_model": calibration,
            "trees": {name: model.best_iterations for name, model in self.models_.items()},
            "importance": {name: model.importance() for name, model in self.models_.items()}, "text_log": text_log,
            "fit_seconds_by_stage": {"examples": examples_seconds, "models": time.perf_counter() - start - examples_seconds},
        }
        if warm is not None:
            self.training_["warm_start"] = warm
        return self

    def _warm_verdict(self, served: PurchaseReranker, valid: Examples) -> dict[str, Any]:
        """Keep ``served``'s purchase model instead of the new one where it ranks the validation
        cutoff's lists (both kinds) better by ndcg@10; it must read the same features, and no text.
        The served model stopped early on an earlier cutoff that overlaps this one, so the check
        leans towards keeping it: a refit that replaces it beat it on that footing."""
        from ecomrec.metrics import ndcg_from_labels

        if self.config.text or served.config.text or list(served.names_) != list(self.names_):
            return {"purchase_model": "refit (the served model reads other inputs: not compared)"}
        shown, labels = valid.candidates.item_ids >= 0, valid.labels.astype(bool)
        ndcg = {}
        for name, model in (("refit", self.models_[MODEL_ORDER]), ("served", served.models_[MODEL_ORDER])):
            margin = np.full(shown.shape, -np.inf)
            margin[shown] = model.margin(valid.features[shown])
            ndcg[name] = ndcg_from_labels(margin, labels, shown)
        kept = "served" if ndcg["served"] > ndcg["refit"] else "refit"
        if kept == "served":
            self.models_[MODEL_ORDER] = served.models_[MODEL_ORDER]
        return {"purchase_model": kept, "refit_ndcg@10": ndcg["refit"], "served_ndcg@10": ndcg["served"], "cutoff": str(valid.cutoff.date())}

    def with_interactions(self, data: Dataset) -> PurchaseReranker:
        """A copy reading the collaborative statistics and history texts of ``data`` (the same
        models: nothing is trained); items ``data`` adds get the cross-encoder's item states."""
        out = copy.copy(self)
        out.stats_ = CollaborativeStats.of(data)
        out.history_texts_ = data.history_texts(max_items=self.history_items_, max_chars=self.history_chars_)
        out.item_texts_ = [str(t) for t in data.item_texts]
        if self.text_ is not None and len(out.item_texts_) > len(self.item_texts_):
            out.text_ = self.text_.with_items(out.item_texts_)
        return out

    def fit_stages(self) -> dict[str, float]:
        """Seconds the training examples and the models took."""
        return dict(self.training_.get("fit_seconds_by_stage", {}))

    def _features(self, name: str, features: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        """float [n, k, f] what model ``name`` reads: the collaborative features (the text model: text score last)."""
        if name != TEXT_ORDER:
            return features
        assert text is not None
        return np.concatenate([features, text[..., None]], axis=-1)

    def _train(self, fit_on: Examples, valid: Examples, text: np.ndarray | None = None, text_valid: np.ndarray | None = None) -> PurchaseModel:
        """A purchase model on ``fit_on``'s candidates (and text score, when given), early-stopped on ``valid``'s ndcg@10."""
        name = MODEL_ORDER if text is None else TEXT_ORDER

        def rows(examples: Examples, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            shown = examples.candidates.item_ids >= 0
            per_user = shown.sum(axis=1)
            return self._features(name, examples.features, scores)[shown], examples.labels[shown], per_user[per_user > 0]

        cfg = self.config
        model = PurchaseModel(trees=cfg.trees, leaves=cfg.leaves, learning_rate=cfg.learning_rate,
                              min_child_samples=cfg.min_child_samples, seed=cfg.seed, models=cfg.models)
        return model.fit(*rows(fit_on, text), *rows(valid, text_valid), self.names_ + (["text_score"] if text is not None else []))

    def _margin(self, name: str, candidates: Candidates, features: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        """float64 [n, k] model ``name``'s log-odds before calibration (NaN for padding)."""
        shown = candidates.item_ids >= 0
        out = np.full(shown.shape, np.nan)
        if shown.any():
            out[shown] = self.models_[name].margin(self._features(name, features, text)[shown])
        return out

    def _validation_check(self, valid: Examples, p: dict[str, np.ndarray]) -> dict[str, Any]:
        """Which order each kind of list (full, new-item) keeps, by ndcg@10 on the last cutoff's lists
        (:func:`_best_order`). The same cutoff stopped the models' training early, which favours
        keeping them: a model that loses here loses for sure."""
        from ecomrec.metrics import ndcg_from_labels

        shown = valid.candidates.item_ids >= 0
        keys = order_keys(valid.candidates, {name: np.where(shown, v, -np.inf) for name, v in p.items()}, self.sources_)
        labels = valid.labels.astype(bool)
        out: dict[str, Any] = {"cutoff": str(valid.cutoff.date()), "lists": int(len(valid)), "order": {}, "by_list": {}}
        for kind, rows in (("all", ~valid.new_lists), ("new", valid.new_lists)):
            scores = {name: ndcg_from_labels(key[rows], labels[rows], shown[rows]) for name, key in keys.items()}
            out["by_list"][kind] = {"lists": int(rows.sum()), **{f"{name}_ndcg@10": v for name, v in scores.items()}}
            out["order"][kind] = _best_order(scores) if rows.any() else MODEL_ORDER
            if out["order"][kind] not in (MODEL_ORDER, TEXT_ORDER):
                logger.warning("%s lists: no purchase model beats the %s order on the validation cutoff (ndcg@10 %.4f vs %.4f): "
                               "that order is kept", kind, out["order"][kind], scores[MODEL_ORDER], scores[out["order"][kind]])
        out["kept"] = bool({MODEL_ORDER, TEXT_ORDER} & set(out["order"].values()))
        return out

    @property
    def orders(self) -> dict[str, str]:
        """The order validation kept per kind of list (``all``, ``new``): ``purchase_model``,
        ``purchase_model_text``, ``fused`` or ``source:<name>``."""
        return dict(self.training_["validation"]["order"])

    @property
    def bypassed(self) -> bool:
        """Whether validation kept another order than a purchase model's for every kind of list."""
        return not self.training_["validation"]["kept"]

    def _kind_models(self, new_lists: np.ndarray | None, n: int) -> np.ndarray:
        """object [n]: the purchase model each list's probabilities come from (the text model where
        validation kept its order for that kind of list)."""
        new = np.zeros(n, bool) if new_lists is None else np.asarray(new_lists, bool)
        pick = {kind: TEXT_ORDER if order == TEXT_ORDER else MODEL_ORDER for kind, order in self.orders.items()}
        return np.where(new, pick["new"], pick["all"])

    def _fit_calibration(self, name: str, valid: Examples, margin: np.ndarray) -> dict[str, Any]:
        """Platt scaling of model ``name`` on the last cutoff: one fit for both kinds of list, or one
        per kind. Each way is fitted on half the cutoff's users and judged on the other half, both
        ways round, by ECE within each kind (weighted by candidates); per kind is kept only if it cuts
        that ECE by a fifth, then refitted on all users. Sets ``platt_[name]`` (``all`` / ``new`` →
        slope, intercept) and returns the check."""
        from ecomrec.metrics import expected_calibration_error

        if not hasattr(self, "platt_"):
            self.platt_: dict[str, dict[str, tuple[float, float]]] = {}
        shown, labels, kinds = valid.candidates.item_ids >= 0, valid.labels, valid.new_lists
        half = np.random.default_rng(self.config.seed).permutation(len(valid)) % 2
        out: dict[str, Any] = {"cutoff": str(valid.cutoff.date())}
        for way in CALIBRATIONS:
            p = np.full(margin.shape, np.nan)
            for h in (0, 1):
                self.platt_[name] = _fit_platt_by_list(margin[half != h], labels[half != h], shown[half != h], kinds[half != h], way)
                p[half == h] = self._calibrated(name, margin[half == h], kinds[half == h])
            out[way] = {}
            for kind, rows in (("all_lists", ~kinds), ("new_lists", kinds)):
                judged = shown & rows[:, None]
                out[way][kind] = expected_calibration_error(p[judged], labels[judged])[0] if judged.any() else 0.0
                out[way][f"{kind}_pairs"] = int(judged.sum())
            pairs = max(out[way]["all_lists_pairs"] + out[way]["new_lists_pairs"], 1)
            out[way]["within_kinds"] = sum(out[way][k] * out[way][f"{k}_pairs"] for k in ("all_lists", "new_lists")) / pairs
        out["kept"] = "per_list_kind" if out["per_list_kind"]["within_kinds"] <= 0.8 * out["one_fit"]["within_kinds"] else "one_fit"
        self.platt_[name] = _fit_platt_by_list(margin, labels, shown, kinds, out["kept"])
        out["platt"] = {kind: list(params) for kind, params in self.platt_[name].items()}
        return out

    def _platt_rows(self, name: str, new_lists: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Model ``name``'s Platt slope and intercept for each of ``n`` lists, float64 [n, 1] each."""
        new = np.zeros(n, bool) if new_lists is None else np.asarray(new_lists, bool)
        (a_all, b_all), (a_new, b_new) = self.platt_[name]["all"], self.platt_[name]["new"]
        return np.where(new, a_new, a_all)[:, None], np.where(new, b_new, b_all)[:, None]

    def _calibrated(self, name: str, margin: np.ndarray, new_lists: np.ndarray | None = None) -> np.ndarray:
        """P(purchase) of model ``name``'s margins [n, k]; ``new_lists`` (bool [n]) picks each
        list's calibration (None: full lists)."""
        a, b = self._platt_rows(name, new_lists, len(margin))
        return 1.0 / (1.0 + np.exp(-(a * margin + b)))

    def probabilities(self, users: np.ndarray, texts: list[str], candidates: Candidates, *, new_lists: np.ndarray | None = None,
                      explain: bool = False) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
        """float64 [n, k] calibrated P(purchase) (NaN for padding; ``new_lists`` as in
        :meth:`rerank` picks each list's model and calibration), the seconds per step, and with
        ``explain`` each feature's additive share of the calibrated log-odds (``why:<feature>``,
        TreeSHAP scaled by the Platt slope; zero for padding)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        features = candidate_features(candidates, users, self.stats_, self.sources_)
        timings["features"] = time.perf_counter() - start
        return self._probabilities(users, texts, candidates, features, new_lists, timings, explain)

    def _probabilities(self, users: np.ndarray, texts: list[str], candidates: Candidates, features: np.ndarray,
                       new_lists: np.ndarray | None, timings: dict[str, float],
                       explain: bool = False) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
        models = self._kind_models(new_lists, len(users))
        out = np.full(candidates.item_ids.shape, np.nan)
        names = self.names_ + (["text_score"] if TEXT_ORDER in self.models_ else [])  # zero where a list's model does not read it
        why = {f"why:{name}": np.zeros(candidates.item_ids.shape, np.float32) for name in names} if explain else {}
        for name in np.unique(models):
            rows = np.flatnonzero(models == name)
            part = candidates[rows]
            text = None
            if name == TEXT_ORDER:  # BERT runs only for the lists whose kind kept its score
                assert self.text_ is not None
                start = time.perf_counter()
                text = self.text_.score([texts[r] for r in rows], part.item_ids)
                timings["text"] = time.perf_counter() - start
            start = time.perf_counter()
            margin = self._margin(str(name), part, features[rows], text)
            kinds = None if new_lists is None else np.asarray(new_lists, bool)[rows]
            out[rows] = self._calibrated(str(name), margin, kinds)
            timings["model"] = timings.get("model", 0.0) + time.perf_counter() - start
            if explain:
                slope = self._platt_rows(str(name), kinds, len(rows))[0]
                for feature, share in self._explain(str(name), part, features[rows], text, slope).items():
                    why[feature][rows] = share
        return out, timings, why

    def _explain(self, name: str, candidates: Candidates, features: np.ndarray, text: np.ndarray | None,
                 slope: np.ndarray) -> dict[str, np.ndarray]:
        """Each feature's share of model ``name``'s calibrated log-odds; ``slope``: each list's
        Platt slope, float [n, 1]."""
        shown = candidates.item_ids >= 0
        names = self.names_ + (["text_score"] if name == TEXT_ORDER else [])
        shares = np.zeros(shown.shape + (len(names),), dtype=np.float32)
        if shown.any():
            x = self._features(name, features, text)[shown]
            shares[shown] = np.broadcast_to(slope[..., None], shares.shape)[shown] * self.models_[name].contributions(x)[:, :-1]
        return {f"why:{feature}": shares[..., i] for i, feature in enumerate(names)}

    def rerank(self, users: np.ndarray, texts: list[str], candidates: Candidates, k: int, *, new_lists: np.ndarray | None = None,
               explain: bool = False) -> tuple[Candidates, dict[str, float]]:
        """The top ``config.candidates`` reordered by P(purchase), or by the order validation kept for
        the kind of list (:attr:`orders`; ``new_lists``: bool [n], the rows that exclude the user's past
        purchases); the rest keep their order after them. ``scores`` of the reordered part are
        probabilities (the fused scores in the fused order, ``1 / position`` in a source's order);
        ``sources`` gains ``p_purchase``, ``fused_rank`` (the place before reranking) and, with
        ``explain``, the ``why:<feature>`` shares of :meth:`probabilities` (NaN beyond the reranked part).
        """
        head = min(self.config.candidates, candidates.k)
        top = Candidates(candidates.item_ids[:, :head], candidates.scores[:, :head],
                         {n: v[:, :head] for n, v in candidates.sources.items()})
        p, timings, why = self.probabilities(users, texts, top, new_lists=new_lists, explain=explain)
        kinds = np.where(np.zeros(len(users), bool) if new_lists is None else new_lists, self.orders["new"], self.orders["all"])
        keys = order_keys(top, {MODEL_ORDER: p, TEXT_ORDER: p}, self.sources_)  # each list's p came from its kind's model
        key = np.empty(p.shape)
        for name in set(kinds):
            rows = kinds == name
            key[rows] = keys[name][rows]
        order = np.argsort(-np.where(top.item_ids >= 0, key, -np.inf), axis=1, kind="stable")
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        fused_rank = np.broadcast_to(np.arange(1, candidates.k + 1, dtype=np.float32), candidates.item_ids.shape)
        item_ids = np.concatenate([take(top.item_ids), candidates.item_ids[:, head:]], axis=1)
        tail_scores = np.where(candidates.item_ids[:, head:] >= 0, 0.0, -np.inf)  # below any head score
        head_scores = np.where(np.isin(kinds, (MODEL_ORDER, TEXT_ORDER))[:, None], take(p), 1.0 / np.arange(1, head + 1))
        head_scores = np.where((kinds == "fused")[:, None], top.scores, head_scores)
        head_scores = np.where(take(top.item_ids) >= 0, head_scores, -np.inf)
        scores = np.concatenate([head_scores, tail_scores], axis=1)
        sources = {n: np.concatenate([take(v[:, :head]), v[:, head:]], axis=1) for n, v in candidates.sources.items()}
        sources["p_purchase"] = np.concatenate([take(p), np.full(tail_scores.shape, np.nan)], axis=1).astype(np.float32)
        sources["fused_rank"] = np.concatenate([take(fused_rank[:, :head]), fused_rank[:, head:]], axis=1)
        for name, share in why.items():
            sources[name] = np.concatenate([take(share), np.full(tail_scores.shape, np.nan, np.float32)], axis=1)
        out = Candidates(item_ids[:, :k], scores[:, :k], {n: v[:, :k] for n, v in sources.items()})
        return out, timings

    def save(self, path: str | Path) -> Path:
        """Write the fitted reranker (purchase models, the cross-encoder where kept, user texts) to ``path``."""
        if not hasattr(self, "models_"):
            raise NotFittedError(type(self).__name__)
        platt = {name: {kind: list(params) for kind, params in by_kind.items()} for name, by_kind in self.platt_.items()}
        meta = {"names": self.names_, "sources": self.sources_, "training": self.training_, "history_items": self.history_items_,
                "history_chars": self.history_chars_, "item_texts": self.item_texts_, "history_texts": self.history_texts_,
                "platt": platt}

        def write(folder: Path) -> None:
            for name, model in self.models_.items():
                model.save(folder, name)
            if self.text_ is not None:
                self.text_.save(folder)
            (folder / "reranker.json").write_text(json.dumps(meta), encoding="utf-8")
            np.savez(folder / "stats.npz", **{f.name: getattr(self.stats_, f.name) for f in _stat_fields()})

        facts = {"n_items": len(self.item_texts_), "n_users": len(self.history_texts_), "features": len(self.names_)}
        return write_artifact(path, type(self).__name__, self.config.to_dict(), facts, write)

    @classmethod
    def load(cls, path: str | Path) -> PurchaseReranker:
        """Read a reranker written by :meth:`save`; raises ArtifactError if it is not intact."""
        with open_artifact(path, cls.__name__) as (folder, manifest):
            reranker = cls(manifest_config(manifest, RerankConfig, folder))
            try:
                meta = json.loads((folder / "reranker.json").read_text(encoding="utf-8"))
                reranker.names_, reranker.sources_, reranker.training_ = meta["names"], meta["sources"], meta["training"]
                reranker.history_items_, reranker.history_chars_ = meta["history_items"], meta["history_chars"]
                reranker.item_texts_, reranker.history_texts_ = meta["item_texts"], meta["history_texts"]
            except (KeyError, ValueError) as exc:
                raise ArtifactError(f"{folder}/reranker.json is not a reranker description: {exc}") from exc
            stats = load_npz(folder / "stats.npz")
            if missing := [f.name for f in _stat_fields() if f.name not in stats]:
                raise ArtifactError(f"{folder}/stats.npz lacks {missing}: saved by an older ecomrec; refit the reranker")
            reranker.stats_ = CollaborativeStats(**{f.name: stats[f.name] for f in _stat_fields()})
            reranker.platt_ = {name: {kind: tuple(v) for kind, v in by_kind.items()} for name, by_kind in meta["platt"].items()}
            reranker.models_ = {name: PurchaseModel.load(folder, name) for name in reranker.platt_}
            if TEXT_ORDER in reranker.models_:
                reranker.text_ = TextScorer.load(folder, reranker.config.cross_encoder, reranker.item_texts_)
        return reranker

    def texts_for(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> list[str]:
        """History texts of the queries (fresh histories: items by count, most bought first)."""
        if not fresh:
            return [self.history_texts_[u] for u in users]
        texts = []
        for row in range(history.shape[0]):
            lo, hi = history.indptr[row], history.indptr[row + 1]
            items = history.indices[lo:hi][np.argsort(-history.data[lo:hi], kind="stable")][: self.history_items_]
            texts.append(history_text([self.item_texts_[i] for i in items], self.history_chars_))
        return texts


class RerankedRetriever(Retriever):
    """The hybrid's candidates reordered by a :class:`PurchaseReranker`: ``recommend`` in one call.
    Each result's ``timings`` has the seconds of every stage of its call (``candidates``,
    ``rerank:features``, ``rerank:text``, ``rerank:model``, ``rerank``, ``end_to_end``)."""

    name = "reranked"
    config_class = RerankConfig

    def __init__(self, hybrid: Any, reranker: PurchaseReranker, *, examples: list[Examples] | None = None) -> None:
        super().__init__(reranker.config)
        self.hybrid, self.reranker, self._examples = hybrid, reranker, examples
        self.name = reranker.name  # type: ignore[misc]

    def fit(self, data: Dataset) -> RerankedRetriever:
        """Fit the reranker on ``data`` (the data the hybrid was fitted on; the hybrid stays as is)."""
        self.reranker.fit(data, self.hybrid, self._examples)
        self.user_items_, self.users_, self.items_ = self.hybrid.user_items_, self.hybrid.users_, self.hybrid.items_
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.name, "candidates_from": self.hybrid.describe(), "training": self.reranker.training_}

    def fit_stages(self) -> dict[str, float]:
        """Seconds of every stage of fitting: the hybrid's sources, the reranker's examples and models."""
        return {**self.hybrid.fit_stages(), **{f"rerank_{k}": v for k, v in self.reranker.fit_stages().items()}}

    def with_catalog(self, catalog: Catalog, *, shards: int | None = None) -> RerankedRetriever:
        """A copy whose candidates come from the hybrid serving ``catalog``; the reranker reads
        the items it was fitted on (new items join at the next fit)."""
        hybrid = self.hybrid.with_catalog(catalog, shards=shards)
        return self.replaced(hybrid=hybrid, catalog_change_=hybrid.catalog_change_)

    def with_interactions(self, data: Dataset) -> RerankedRetriever:
        """A copy whose hybrid and reranker know the appended purchases (nothing is trained)."""
        hybrid = self.hybrid.with_interactions(data)
        return self.replaced(hybrid=hybrid, reranker=self.reranker.with_interactions(data), user_items_=hybrid.user_items_,
                             users_=hybrid.users_, items_=hybrid.items_, catalog_change_={})

    def recommend(self, user_ids: np.ndarray | list[int], k: int, *, user_items: sp.spmatrix | None = None,
                  exclude: str | sp.spmatrix | np.ndarray | list[int] | None = None, allow: np.ndarray | list[int] | None = None,
                  batch_size: int = 1024) -> Candidates:
        """:meth:`candidates` plus why: ``sources`` gains ``why:<feature>``, each feature's share
        of the candidate's calibrated log-odds (arguments as for :meth:`candidates`)."""
        self._check_fitted()
        return self.retrieve(self._query(user_ids, k, user_items, exclude, allow), batch_size, explain=True)

    def retrieve(self, query: Query, batch_size: int = 1024, explain: bool = False) -> Candidates:
        start = time.perf_counter()
        wide = Query(query.users, query.history, query.fresh, max(query.k, self.reranker.config.candidates), query.exclude, query.allow)
        candidates = self.hybrid.retrieve(wide, batch_size)
        got = time.perf_counter()
        texts = self.reranker.texts_for(query.users, query.history, query.fresh)
        out, timings = self.reranker.rerank(query.users, texts, candidates, query.k, new_lists=excludes_history(query), explain=explain)
        done = time.perf_counter()
        out.timings = {**{f"candidates:{k}": v for k, v in candidates.timings.items() if k != "end_to_end"},
                       "candidates": got - start, **{f"rerank:{k}": v for k, v in timings.items()},
                       "rerank": done - got, "end_to_end": done - start}
        return out

    def _write(self, folder: Path, arrays: dict[str, np.ndarray]) -> None:
        super()._write(folder, arrays)
        self.hybrid.save(folder / "hybrid")
        self.reranker.save(folder / "reranker")

    @classmethod
    def load(cls, path: str | Path) -> RerankedRetriever:
        """Read a reranked retriever written by :meth:`save` (the hybrid and the reranker inside)."""
        from ecomrec.retrieval.fusion import HybridRetriever

        with open_artifact(path, cls.__name__) as (folder, _):
            out = cls(HybridRetriever.load(folder / "hybrid"), PurchaseReranker.load(folder / "reranker"))
        out.user_items_, out.users_, out.items_ = out.hybrid.user_items_, out.hybrid.users_, out.hybrid.items_
        return out


def order_keys(candidates: Candidates, p: dict[str, np.ndarray], sources: Sequence[str]) -> dict[str, np.ndarray]:
    """float64 [n, k] sort keys (higher first) of each order the validation check weighs: each
    purchase model's (its probabilities in ``p``), the fused order, and each source's own
    (``source:<name>``: its rank; candidates it did not list follow in the fused order)."""
    position = np.broadcast_to(np.arange(candidates.k, dtype=np.float64), candidates.item_ids.shape)
    keys = {**{name: np.asarray(v, dtype=np.float64) for name, v in p.items()}, "fused": -position}
    for source in sources:
        if (rank := candidates.sources.get(f"{source}_rank")) is not None:
            keys[f"source:{source}"] = np.where(np.isnan(rank), -1e9 - position, -np.nan_to_num(rank))
    return keys


def _fit_platt_by_list(margin: np.ndarray, labels: np.ndarray, shown: np.ndarray, new_lists: np.ndarray,
                       way: str) -> dict[str, tuple[float, float]]:
    """Platt parameters for full (``all``) and new-item (``new``) lists: fitted on both kinds
    together, or per kind when ``way`` is ``per_list_kind`` and the kind has both labels."""
    both = fit_platt(margin[shown], labels[shown])
    out = {"all": both, "new": both}
    if way == "per_list_kind":
        for kind, rows in (("all", ~new_lists), ("new", new_lists)):
            y = labels[rows][shown[rows]]
            if 0 < y.sum() < len(y):
                out[kind] = fit_platt(margin[rows][shown[rows]], y)
    return out


def _best_order(ndcg: dict[str, float]) -> str:
    """The purchase model if it beats the fused order, the text model (where there is one) if it
    beats both, a source's order if it beats them all; else fused."""
    best = MODEL_ORDER if ndcg[MODEL_ORDER] > ndcg["fused"] else "fused"
    if TEXT_ORDER in ndcg and ndcg[TEXT_ORDER] > max(ndcg[MODEL_ORDER], ndcg["fused"]):
        best = TEXT_ORDER
    for name, value in ndcg.items():
        if name.startswith("source:") and value > ndcg[best]:
            best = name
    return best


def excludes_history(query: Query) -> np.ndarray:
    """bool [n]: the queries whose exclusions cover every item the user bought (``exclude="seen"``),
    the lists of items new to the user."""
    bought = sp.csr_matrix(query.history, copy=True)
    bought.data[:] = 1.0
    if query.exclude is None:
        return np.zeros(bought.shape[0], dtype=bool)
    if sp.issparse(query.exclude):
        left = bought - bought.multiply(sp.csr_matrix(query.exclude) != 0)
    else:
        left = bought.multiply(~np.isin(np.arange(bought.shape[1]), query.exclude)[None, :])
    left = sp.csr_matrix(left)
    left.eliminate_zeros()
    return (left.getnnz(axis=1) == 0) & (bought.getnnz(axis=1) > 0)


def _concat(parts: list[Examples]) -> Examples:
    return Examples(parts[-1].cutoff, np.concatenate([p.users for p in parts]), [t for p in parts for t in p.texts],
                    Candidates.concat([p.candidates for p in parts]), np.concatenate([p.labels for p in parts]),
                    np.concatenate([p.features for p in parts]), np.concatenate([p.new_lists for p in parts]))


def _stat_fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(CollaborativeStats)
