"""Purchase-probability reranking of the hybrid's candidates, with or without BERT's text score."""

from __future__ import annotations

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
from ecomrec.data.dataset import Dataset
from ecomrec.data.text import history_text
from ecomrec.rerank.examples import Examples, examples_at
from ecomrec.rerank.features import CollaborativeStats, candidate_features, feature_names
from ecomrec.rerank.purchase import PurchaseModel, fit_platt
from ecomrec.rerank.text_model import BehaviourInput, TextScorer
from ecomrec.retrieval.base import Query, Retriever
from ecomrec.candidates import Candidates

logger = logging.getLogger(__name__)


#: The feature that says an item was never bought before the cutoff (its buyer count, log1p).
COLD_FEATURE = "item_buyers_log"

#: The widest purchase window :func:`window_days` widens to on a thin log.
MAX_WINDOW_DAYS = 365


def window_days(data: Dataset, config: RerankConfig) -> int:
    """``config.window_days``, doubled while the last window holds fewer than
    ``config.min_window_users`` users who bought on both sides of its cutoff, up to
    MAX_WINDOW_DAYS and while the first cutoff keeps a window of history before it."""
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
    """Cutoffs :func:`window_days` apart before the end of ``data``, oldest first; the last
    window ends with the data."""
    end = data.end.normalize() + pd.Timedelta(days=1)
    window = window_days(data, config)
    return [end - pd.Timedelta(days=window * i) for i in range(config.cutoff_count, 0, -1)]


def example_bi_encoder(data: Dataset, bi_config: Any, config: RerankConfig, *, show_progress: bool = False) -> Any:
    """The bi-encoder behind the training examples' text candidates: ``bi_config`` fine-tuned
    on at most ``config.example_bi_encoder_pairs`` pairs of the data before the first training
    cutoff, so no cutoff's candidates come from a model that saw its labels. The engine's
    served bi-encoder continues training from it (``BiEncoderRetriever.fit(start_from=...)``)."""
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

    early = bi_config.replace(max_pairs=min(bi_config.max_pairs, config.example_bi_encoder_pairs))
    return BiEncoderRetriever(early, show_progress=show_progress).fit(data.between(None, training_cutoffs(data, config)[0]))


def training_examples(
    data: Dataset, hybrid: Any, config: RerankConfig, *, bi: Any = None, show_progress: bool = False
) -> list[Examples]:
    """Labelled candidates of ``hybrid`` as of each cutoff, oldest first.

    Cheap sources are refitted per cutoff; the bi-encoder is ``bi`` (default: a new
    :func:`example_bi_encoder`), fitted once on the data before the first cutoff.
    """
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
        lists = [examples_at(probe, data, cutoff, window, config.candidates, cfg.history_items, cfg.history_chars)]
        if config.new_item_lists:
            lists.append(examples_at(probe, data, cutoff, window, config.candidates, cfg.history_items,
                                     cfg.history_chars, new_items_only=True))
        out.append(_concat(lists))
        logger.info("rerank examples at %s: %d users, %.2f positives per user in the top %d",
                    cutoff.date(), len(out[-1]), out[-1].labels.sum(axis=1).mean(), config.candidates)
    return out


class PurchaseReranker:
    """Reorders candidates by calibrated P(purchase | user, item).

    The model reads the collaborative features the candidate stage computed and, with
    ``config.text``, the cross-encoder's reading of (user history text, item title), joined as
    ``config.text_join`` says: stacked into the tree model as one more feature, as one network
    over text and features, or as a text path on the tree model's residual. The tree model
    learns from the second-to-last training cutoff, the last stops every model's training early
    and calibrates the result; a stacked or residual text model learns from the cutoffs before
    (out-of-time for the trees), the joint network from every cutoff but the last.
    """

    def __init__(self, config: RerankConfig | None = None, *, show_progress: bool | None = None) -> None:
        self.config = config or RerankConfig()
        self.show_progress = bool(show_progress)
        self.text_: TextScorer | None = None

    @property
    def name(self) -> str:
        return "hybrid_rerank" if self.config.text else "feature_rerank"

    def fit(self, data: Dataset, hybrid: Any, examples: list[Examples] | None = None) -> PurchaseReranker:
        cfg = self.config
        start = time.perf_counter()
        examples = examples or training_examples(data, hybrid, cfg, show_progress=self.show_progress)
        examples_seconds = time.perf_counter() - start
        self.sources_ = sorted(hybrid.quotas_)
        self.columns_ = self._kept_columns()
        self.names_ = [feature_names(self.sources_)[c] for c in self.columns_] + (["text_score"] if self._stacked else [])
        examples = [dataclasses.replace(e, features=self._read(e.features)) for e in examples]
        fit_on, valid = examples[-2], examples[-1]
        self.item_texts_ = [str(t) for t in data.item_texts]
        if self._stacked:
            train = _concat(examples[:-2])
            self.text_ = TextScorer(cfg.cross_encoder, self.item_texts_, show_progress=self.show_progress).fit(train, valid)
        x, y, groups = self._matrix(fit_on)
        x_valid, y_valid, groups_valid = self._matrix(valid)
        self.model_ = PurchaseModel(
            trees=cfg.trees, leaves=cfg.leaves, learning_rate=cfg.learning_rate, min_child_samples=cfg.min_child_samples,
            seed=cfg.seed, objective=cfg.objective,
        ).fit(x, y, x_valid, y_valid, self.names_, groups, groups_valid)
        if cfg.text and not self._stacked:
            self.text_ = self._joined_text_model(examples)
        margin, _ = self._margins(valid.texts, valid.candidates, valid.features, {})
        calibration = self._fit_calibration(valid, margin)
        validation = self._validation_check(valid, self._calibrated(margin, valid.new_lists))
        self.stats_ = CollaborativeStats.of(data)
        self.history_texts_ = data.history_texts(max_items=hybrid.config.bi_encoder.history_items, max_chars=hybrid.config.bi_encoder.history_chars)
        self.history_items_ = hybrid.config.bi_encoder.history_items
        self.history_chars_ = hybrid.config.bi_encoder.history_chars
        self.training_ = {
            "cutoffs": [str(e.cutoff.date()) for e in examples],
            "window_days": int((examples[-1].cutoff - examples[-2].cutoff).days),
            "users_per_cutoff": [len(e) for e in examples],
            "positive_share": [float(e.labels[e.candidates.item_ids >= 0].mean()) for e in examples],
            "validation": validation,
            "calibration": calibration,
            "text_join": cfg.text_join if cfg.text else None,
            "trees": int(self.model_.booster.best_iteration),
            "importance": self.model_.importance(),
            "text_log": self.text_.log if self.text_ is not None else [],
            "fit_seconds_by_stage": {"examples": examples_seconds, "models": time.perf_counter() - start - examples_seconds},
        }
        return self

    def _kept_columns(self) -> np.ndarray:
        """Indices of the collaborative features the models read (all but ``config.drop_features``)."""
        names = feature_names(self.sources_)
        unknown = sorted(set(self.config.drop_features) - set(names))
        if unknown:
            raise ValueError(f"drop_features names unknown feature(s) {unknown}; known: {names}")
        return np.array([i for i, n in enumerate(names) if n not in self.config.drop_features], dtype=np.int64)

    def _read(self, features: np.ndarray) -> np.ndarray:
        """The kept columns of candidate features (float [n, k, all features])."""
        return features[..., self.columns_]

    def _joined_text_model(self, examples: list[Examples]) -> TextScorer:
        """The text model of ``text_join`` ``residual`` (a text path on what the fitted tree
        model leaves, from the cutoffs before the tree model's) or ``joint`` (one network over
        text and features, from every cutoff but the last); both listwise, early-stopped on the
        last cutoff."""
        cfg, valid = self.config, examples[-1]
        if cfg.text_join == "residual":
            scorer = TextScorer(cfg.cross_encoder, self.item_texts_, listwise=True, show_progress=self.show_progress)
            return scorer.fit(_concat(examples[:-2]), valid, base=self._feature_margin)
        if COLD_FEATURE not in self.names_:
            raise ValueError(f"the joint model needs {COLD_FEATURE} (which items were never bought); do not drop it")
        train = _concat(examples[:-1])
        behaviour = BehaviourInput.fit(train.features[train.candidates.item_ids >= 0], cold_column=self.names_.index(COLD_FEATURE))
        scorer = TextScorer(cfg.cross_encoder, self.item_texts_, behaviour=behaviour, listwise=True, show_progress=self.show_progress)
        return scorer.fit(train, valid)

    @property
    def _stacked(self) -> bool:
        """Whether the text score is one more feature of the tree model."""
        return self.config.text and self.config.text_join == "stack"

    def _validation_check(self, valid: Examples, p: np.ndarray) -> dict[str, Any]:
        """Which order each kind of list keeps, by ndcg@10 on the last cutoff's lists: the purchase
        model's, the fused order, or one source's own order (e.g. popularity, on a shop where
        nothing personal beats it for items new to the user). Full lists and new-item lists
        (``exclude="seen"``) are judged apart: a model can win on one and lose on the other.

        With ``config.keep_only_if_better`` an order replaces the fused one only when it gains
        (the purchase model first, then a source only if it beats both), else the purchase model
        orders every list. The same cutoff stopped the model's training early, which favours
        keeping it: a reranker that loses here loses for sure.
        """
        from ecomrec.metrics import ndcg_from_labels

        shown = valid.candidates.item_ids >= 0
        p = np.where(shown, p, -np.inf)
        keys = order_keys(valid.candidates, p, self.sources_)
        labels = valid.labels.astype(bool)
        out: dict[str, Any] = {"cutoff": str(valid.cutoff.date()), "lists": int(len(valid)),
                               "fused_ndcg@10": ndcg_from_labels(keys["fused"], labels, shown),
                               "reranked_ndcg@10": ndcg_from_labels(p, labels, shown), "order": {}, "by_list": {}}
        for kind, rows in (("all", ~valid.new_lists), ("new", valid.new_lists)):
            scores = {name: ndcg_from_labels(key[rows], labels[rows], shown[rows]) for name, key in keys.items()}
            out["by_list"][kind] = {"lists": int(rows.sum()), **{f"{name}_ndcg@10": v for name, v in scores.items()}}
            out["order"][kind] = _best_order(scores) if self.config.keep_only_if_better and rows.any() else MODEL_ORDER
            if out["order"][kind] != MODEL_ORDER:
                logger.warning("%s lists: the purchase model does not beat the %s order on the validation cutoff "
                               "(ndcg@10 %.4f vs %.4f): that order is kept", kind, out["order"][kind],
                               scores[MODEL_ORDER], scores[out["order"][kind]])
        out["kept"] = MODEL_ORDER in out["order"].values()
        return out

    @property
    def orders(self) -> dict[str, str]:
        """The order validation kept per kind of list (``all``, ``new``): ``purchase_model``,
        ``fused`` or ``source:<name>``."""
        check = self.training_.get("validation", {})
        if "order" in check:
            return dict(check["order"])
        kept = MODEL_ORDER if check.get("kept", True) else "fused"  # saved before lists were judged apart
        return {"all": kept, "new": kept}

    @property
    def bypassed(self) -> bool:
        """Whether validation kept another order than the purchase model's for every kind of list
        (candidates then keep it, with probabilities)."""
        return MODEL_ORDER not in self.orders.values()

    def _matrix(self, examples: Examples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of real candidates (user by user) of the tree model, labels, and candidates per user."""
        valid = examples.candidates.item_ids >= 0
        features = examples.features
        if self._stacked:
            assert self.text_ is not None
            text = self.text_.score(examples.texts, examples.candidates.item_ids)
            features = np.concatenate([features, text[..., None]], axis=-1)
        per_user = valid.sum(axis=1)
        return features[valid], examples.labels[valid], per_user[per_user > 0]

    def _feature_margin(self, examples: Examples) -> np.ndarray:
        """float64 [n, k] the tree model's margin of each candidate (0 for padding)."""
        valid = examples.candidates.item_ids >= 0
        out = np.zeros(valid.shape)
        if valid.any():
            out[valid] = self.model_.margin(examples.features[valid])
        return out

    def _margins(
        self, texts: list[str], candidates: Candidates, features: np.ndarray, timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """float64 [n, k] purchase log-odds before calibration (NaN for padding) and the text
        model's logits (None without text); adds ``text`` and ``model`` seconds to ``timings``."""
        valid = candidates.item_ids >= 0
        text = None
        if self.text_ is not None:
            start = time.perf_counter()
            joint = self.config.text_join == "joint"
            text = self.text_.score(texts, candidates.item_ids, features if joint else None)
            timings["text"] = time.perf_counter() - start
        start = time.perf_counter()
        out = np.full(valid.shape, np.nan)
        if valid.any():
            if self.config.text_join == "joint" and text is not None:
                out[valid] = text[valid]
            else:
                x = np.concatenate([features, text[..., None]], axis=-1) if self._stacked else features
                out[valid] = self.model_.margin(x[valid]) + (text[valid] if text is not None and not self._stacked else 0.0)
        timings["model"] = time.perf_counter() - start
        return out, text

    def example_probabilities(self, examples: Examples) -> np.ndarray:
        """float64 [n, k] calibrated P(purchase) of labelled candidates, from their own features
        (as of their cutoff; NaN for padding): how a cutoff's lists are scored offline."""
        margin, _ = self._margins(examples.texts, examples.candidates, self._read(examples.features), {})
        return self._calibrated(margin, examples.new_lists)

    def _fit_calibration(self, valid: Examples, margin: np.ndarray) -> dict[str, Any]:
        """Platt scaling on the last cutoff: one fit for both kinds of list, or one per kind
        (full lists hold the user's repurchases, new-item lists do not: their purchase rates and
        scores differ). Each way is fitted on half the cutoff's users and judged on the other
        half, both ways round, by ECE within each kind of list (weighted by candidates: an ECE
        over both kinds pooled lets one kind's excess hide the other's shortfall). Per kind is
        kept only if it cuts that ECE by a fifth (two more parameters must earn their keep),
        then refitted on all users. Sets ``platt_`` (``all`` / ``new`` → slope, intercept) and
        returns the check."""
        from ecomrec.metrics import expected_calibration_error

        shown, labels, kinds = valid.candidates.item_ids >= 0, valid.labels, valid.new_lists
        half = np.random.default_rng(self.config.seed).permutation(len(valid)) % 2
        out: dict[str, Any] = {"cutoff": str(valid.cutoff.date())}
        for way in CALIBRATIONS:
            p = np.full(margin.shape, np.nan)
            for h in (0, 1):
                self.platt_ = _fit_platt_by_list(margin[half != h], labels[half != h], shown[half != h], kinds[half != h], way)
                p[half == h] = self._calibrated(margin[half == h], kinds[half == h])
            out[way] = {}
            for kind, rows in (("all_lists", ~kinds), ("new_lists", kinds)):
                judged = shown & rows[:, None]
                out[way][kind] = expected_calibration_error(p[judged], labels[judged])[0] if judged.any() else 0.0
                out[way][f"{kind}_pairs"] = int(judged.sum())
            pairs = max(out[way]["all_lists_pairs"] + out[way]["new_lists_pairs"], 1)
            out[way]["within_kinds"] = sum(out[way][k] * out[way][f"{k}_pairs"] for k in ("all_lists", "new_lists")) / pairs
        per_kind_wins = out["per_list_kind"]["within_kinds"] <= 0.8 * out["one_fit"]["within_kinds"]
        out["kept"] = "per_list_kind" if per_kind_wins else "one_fit"
        self.platt_ = _fit_platt_by_list(margin, labels, shown, kinds, out["kept"])
        out["platt"] = {kind: list(params) for kind, params in self.platt_.items()}
        return out

    def _platt_rows(self, new_lists: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Platt slope and intercept of each of ``n`` lists, float64 [n, 1] each."""
        new = np.zeros(n, bool) if new_lists is None else np.asarray(new_lists, bool)
        (a_all, b_all), (a_new, b_new) = self.platt_["all"], self.platt_["new"]
        return np.where(new, a_new, a_all)[:, None], np.where(new, b_new, b_all)[:, None]

    def _calibrated(self, margin: np.ndarray, new_lists: np.ndarray | None = None) -> np.ndarray:
        """P(purchase) of margins [n, k]; ``new_lists`` (bool [n]) picks each list's calibration
        (None: full lists)."""
        a, b = self._platt_rows(new_lists, len(margin))
        return 1.0 / (1.0 + np.exp(-(a * margin + b)))

    def probabilities(
        self, users: np.ndarray, texts: list[str], candidates: Candidates, *, new_lists: np.ndarray | None = None,
        explain: bool = False,
    ) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
        """float64 [n, k] calibrated P(purchase) (NaN for padding; ``new_lists`` as in :meth:`rerank`
        picks each list's calibration), the seconds per step, and with
        ``explain`` each feature's additive share of the calibrated log-odds (``why:<feature>``,
        TreeSHAP scaled by the Platt slope; zero for padding). The residual model's text path
        adds ``why:text_score``; the joint network is one share, ``why:joint_network``."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        features = self._read(candidate_features(candidates, users, self.stats_, self.sources_))
        timings["features"] = time.perf_counter() - start
        margin, text = self._margins(texts, candidates, features, timings)
        out = self._calibrated(margin, new_lists)
        why: dict[str, np.ndarray] = {}
        if explain:
            why = self._explain(candidates, features, margin, text, self._platt_rows(new_lists, len(margin))[0])
        return out, timings, why

    def _explain(
        self, candidates: Candidates, features: np.ndarray, margin: np.ndarray, text: np.ndarray | None, slope: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Shares of the calibrated log-odds; ``slope``: each list's Platt slope, float [n, 1]."""
        valid = candidates.item_ids >= 0
        if self.config.text_join == "joint" and text is not None:
            return {"why:joint_network": np.where(valid, slope * margin, 0.0).astype(np.float32)}
        x = np.concatenate([features, text[..., None]], axis=-1) if self._stacked else features
        shares = np.zeros(valid.shape + (len(self.names_),), dtype=np.float32)
        if valid.any():
            shares[valid] = np.broadcast_to(slope[..., None], shares.shape)[valid] * self.model_.contributions(x[valid])[:, :-1]
        why = {f"why:{name}": shares[..., i] for i, name in enumerate(self.names_)}
        if text is not None and not self._stacked:
            why["why:text_score"] = np.where(valid, slope * text, 0.0).astype(np.float32)
        return why

    def rerank(
        self, users: np.ndarray, texts: list[str], candidates: Candidates, k: int, *,
        new_lists: np.ndarray | None = None, explain: bool = False,
    ) -> tuple[Candidates, dict[str, float]]:
        """The top ``config.candidates`` reordered by P(purchase), or by the order validation kept
        for the kind of list (:attr:`orders`; ``new_lists``: bool [n], the rows that exclude the
        user's past purchases); the rest keep their order after them.

        ``scores`` of the reordered part are probabilities (the fused scores in the fused order,
        ``1 / position`` in a source's order); ``sources`` gains ``p_purchase`` and ``fused_rank``
        (the candidate's place before reranking) and, with ``explain``, the ``why:<feature>``
        shares of :meth:`probabilities` (NaN beyond the reranked part).
        """
        head = min(self.config.candidates, candidates.k)
        top = Candidates(candidates.item_ids[:, :head], candidates.scores[:, :head],
                         {n: v[:, :head] for n, v in candidates.sources.items()})
        p, timings, why = self.probabilities(users, texts, top, new_lists=new_lists, explain=explain)
        kinds = np.where(np.zeros(len(users), bool) if new_lists is None else new_lists, self.orders["new"], self.orders["all"])
        keys = order_keys(top, p, self.sources_)
        key = np.empty(p.shape)
        for name in set(kinds):
            rows = kinds == name
            key[rows] = keys[name][rows]
        order = np.argsort(-np.where(top.item_ids >= 0, key, -np.inf), axis=1, kind="stable")
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        fused_rank = np.broadcast_to(np.arange(1, candidates.k + 1, dtype=np.float32), candidates.item_ids.shape)
        item_ids = np.concatenate([take(top.item_ids), candidates.item_ids[:, head:]], axis=1)
        tail_scores = np.where(candidates.item_ids[:, head:] >= 0, 0.0, -np.inf)  # below any head score
        head_scores = np.where((kinds == MODEL_ORDER)[:, None], take(p), 1.0 / np.arange(1, head + 1))
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

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted reranker (purchase model, cross-encoder weights, user texts) to ``path``."""
        if not hasattr(self, "model_"):
            raise NotFittedError(type(self).__name__)
        meta = {
            "names": self.names_, "sources": self.sources_, "training": self.training_,
            "history_items": self.history_items_, "history_chars": self.history_chars_,
            "item_texts": self.item_texts_, "history_texts": self.history_texts_,
            "platt_by_list": {kind: list(params) for kind, params in self.platt_.items()},
        }

        def write(folder: Path) -> None:
            self.model_.save(folder)
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
            missing = [f.name for f in _stat_fields() if f.name not in stats]
            if missing:
                raise ArtifactError(f"{folder}/stats.npz lacks {missing}: saved by an older ecomrec; refit the reranker")
            reranker.stats_ = CollaborativeStats(**{f.name: stats[f.name] for f in _stat_fields()})
            reranker.model_ = PurchaseModel.load(folder)
            # saved before per-list calibration: one fit ("platt"); before text_join: the tree model's
            platt = tuple(meta.get("platt", reranker.model_.platt))
            reranker.platt_ = {kind: tuple(v) for kind, v in meta.get("platt_by_list", {"all": platt, "new": platt}).items()}
            reranker.columns_ = reranker._kept_columns()
            if reranker.config.text:
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
    ``rerank:features``, ``rerank:text``, ``rerank:model``, ``rerank``, ``end_to_end``).
    """

    name = "reranked"
    config_class = RerankConfig

    def __init__(self, hybrid: Any, reranker: PurchaseReranker, *, examples: list[Examples] | None = None) -> None:
        super().__init__(reranker.config)
        self.hybrid, self.reranker, self._examples = hybrid, reranker, examples
        self.name = reranker.name  # type: ignore[misc]

    def fit(self, data: Dataset) -> RerankedRetriever:
        """Fit the reranker on ``data`` (the data the hybrid was fitted on; the hybrid stays as is)."""
        self.reranker.fit(data, self.hybrid, self._examples)
        self.user_items_ = self.hybrid.user_items_
        self.users_, self.items_ = self.hybrid.users_, self.hybrid.items_
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.name, "candidates_from": self.hybrid.describe(), "training": self.reranker.training_}

    def recommend(
        self,
        user_ids: np.ndarray | list[int],
        k: int,
        *,
        user_items: sp.spmatrix | None = None,
        exclude: str | sp.spmatrix | np.ndarray | list[int] | None = None,
        allow: np.ndarray | list[int] | None = None,
        batch_size: int = 1024,
    ) -> Candidates:
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
        out.timings = {**{f"candidates:{k}": v for k, v in candidates.timings.items() if k != "end_to_end"}, "candidates": got - start, **{f"rerank:{k}": v for k, v in timings.items()},
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
        out.user_items_ = out.hybrid.user_items_
        out.users_, out.items_ = out.hybrid.users_, out.hybrid.items_
        return out


#: The purchase model's order, in :attr:`PurchaseReranker.orders`.
MODEL_ORDER = "purchase_model"


def order_keys(candidates: Candidates, p: np.ndarray, sources: Sequence[str]) -> dict[str, np.ndarray]:
    """float64 [n, k] sort keys (higher first) of each order the validation check weighs: the
    purchase model's (``p``), the fused order, and each source's own (``source:<name>``: its
    rank; candidates it did not list follow in the fused order)."""
    position = np.broadcast_to(np.arange(candidates.k, dtype=np.float64), candidates.item_ids.shape)
    keys = {MODEL_ORDER: np.asarray(p, dtype=np.float64), "fused": -position}
    for source in sources:
        rank = candidates.sources.get(f"{source}_rank")
        if rank is not None:
            keys[f"source:{source}"] = np.where(np.isnan(rank), -1e9 - position, -np.nan_to_num(rank))
    return keys


#: Ways to calibrate, in :meth:`PurchaseReranker._fit_calibration`: one Platt fit for both kinds of list, or one per kind.
CALIBRATIONS = ("one_fit", "per_list_kind")


def _fit_platt_by_list(
    margin: np.ndarray, labels: np.ndarray, shown: np.ndarray, new_lists: np.ndarray, way: str
) -> dict[str, tuple[float, float]]:
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
    """The purchase model if it beats the fused order, a source's order if it beats both, else fused."""
    best = MODEL_ORDER if ndcg[MODEL_ORDER] > ndcg["fused"] else "fused"
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
    return Examples(
        parts[-1].cutoff,
        np.concatenate([p.users for p in parts]),
        [t for p in parts for t in p.texts],
        Candidates.concat([p.candidates for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.new_lists for p in parts]),
    )


def _stat_fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(CollaborativeStats)
