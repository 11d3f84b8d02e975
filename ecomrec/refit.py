"""Warm refits (``Engine.fit(data, warm_start=engine)``): which parts of the engine in service a
new fit continues from, and what each part's continuation decided.

A warm refit trains the same models as a full fit, on the same data, but starts them from the
served ones: the bi-encoder continues from the served weights on the purchases after its last
one plus a replay of older pairs, at a lower learning rate, validated on those new purchases
only (so the served weights, which never read them, are judged fairly, and stay unless the
continuation beats them); ALS sweeps start from the served factors, matched by id; fusion keeps
the served weights and depths; the examples' bi-encoder (trained before the first training
cutoff, which only moves later) is reused as it is; the purchase model is trained on the newest
cutoffs and replaces the served one only where it ranks the validation cutoff no worse; search
reuses the served title vectors. Where a part cannot continue (an engine saved before warm
refits, another model or size in the config) it is trained anew and the report says why.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ecomrec.config import EngineConfig
from ecomrec.data.dataset import Dataset
from ecomrec.rerank import PurchaseReranker, RerankedRetriever
from ecomrec.rerank.reranker import training_cutoffs
from ecomrec.retrieval.als import ALSRetriever
from ecomrec.retrieval.base import Retriever
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever
from ecomrec.retrieval.fusion import SOURCE_MODEL, HybridRetriever
from ecomrec.retrieval.search import TextSearch
from ecomrec.timing import timed


class WarmStart:
    """The served snapshot's parts a fit of ``config`` on ``data`` continues from; ``report``
    collects, per part, what was continued or trained anew and why."""

    def __init__(self, served: Any, config: EngineConfig, data: Dataset, *, show_progress: bool | None = None) -> None:
        log_end = None if served.log is None else served.log.end
        if log_end is not None and len(data) and data.end < log_end:
            raise ValueError(f"the warm-start engine knows purchases up to {log_end}; this data ends at {data.end}: a warm refit "
                             "continues on data that reaches at least as far (its log, or the shop's log since)")
        self.served, self.config, self.show_progress = served, config, show_progress
        #: the served hybrid, whose fusion weights and depths the refit keeps (None: tuned anew)
        self.fusion_from: HybridRetriever | None = served.hybrid
        self.report: dict[str, Any] = {"fusion": "kept the served weights and depths"}
        if not set(served.hybrid.quotas_) <= set(config.hybrid.fusion.quotas):
            self.fusion_from = None
            self.report["fusion"] = "tuned anew: the served engine fuses sources this config does not have"

    @property
    def reranker(self) -> PurchaseReranker | None:
        """The served reranker, whose purchase model a new one must beat (None: none served)."""
        model = self.served.model
        return model.reranker if isinstance(model, RerankedRetriever) else None

    def sources(self, data: Dataset, stages: dict[str, float]) -> dict[str, Retriever]:
        """ALS and the served bi-encoder, continued on ``data`` (where the served engine has them)."""
        models = self.served.hybrid.models_
        needed = {SOURCE_MODEL[s] for s in (self.fusion_from or self.served.hybrid).quotas_}
        out: dict[str, Retriever] = {}
        if "als" in needed and isinstance(als := models.get("als"), ALSRetriever):
            if als.item_factors_.shape[1] != self.config.hybrid.als.factors:
                self.report["als"] = "trained anew: the served model has another number of factors"
            else:
                with timed(stages, "als"):
                    out["als"] = ALSRetriever(self.config.hybrid.als, show_progress=self.show_progress).fit(data, start_from=als)
                known = als.users_.positions(data.users.ids) >= 0
                self.report["als"] = f"continued from the served factors ({int(known.sum())} of {len(known)} customers known)"
        if "bi_encoder" in needed and isinstance(bi := models.get("bi_encoder"), BiEncoderRetriever):
            if not self._same_model(bi):
                self.report["bi_encoder"] = "trained anew: the config names another base model or layer count"
            else:
                with timed(stages, "bi_encoder"):
                    out["bi_encoder"] = self._continued(bi, data)
                until = "which learned from no purchase (every pair is new)" if bi.trained_until_ is None else f"trained up to {bi.trained_until_}"
                self.report["bi_encoder"] = {"continued_from": f"the served model, {until}", **out["bi_encoder"].describe().get("training", {})}
        return out

    def _same_model(self, bi: BiEncoderRetriever) -> bool:
        """Whether ``bi`` has the base model and layers the config's bi-encoder has (what continuing needs)."""
        cfg = self.config.hybrid.bi_encoder
        return (bi.config.base_model, bi.config.layers) == (cfg.base_model, cfg.layers)

    def _continued(self, served: BiEncoderRetriever, data: Dataset) -> BiEncoderRetriever:
        """The served bi-encoder trained on from its weights (from every pair where they learned from none)."""
        cfg, warm = self.config.hybrid.bi_encoder, self.config.warm_refit
        continued = cfg.replace(learning_rate=cfg.learning_rate * warm.learning_rate_scale)
        return BiEncoderRetriever(continued, show_progress=self.show_progress).fit(
            data, start_from=served, recent_after=served.trained_until_, replay=warm.replay)

    def example_bi_encoder(self, data: Dataset, stages: dict[str, float]) -> BiEncoderRetriever | None:
        """The served examples' bi-encoder (weights as they are) reading ``data`` before the first
        training cutoff; None where the served engine kept none or it read past that cutoff."""
        early = self.served.example_bi
        first = training_cutoffs(data, self.config.rerank)[0]
        if (why := self._unusable(early, first)) is not None:
            self.report["example_bi_encoder"] = f"trained anew: {why}"
            return None
        frozen = self.config.hybrid.bi_encoder.replace(fine_tune=False)
        with timed(stages, "bi_encoder_examples"):
            out = BiEncoderRetriever(frozen, show_progress=self.show_progress).fit(data.between(None, first), start_from=early)
        until = "the base model's weights" if early.trained_until_ is None else f"trained up to {early.trained_until_}"
        self.report["example_bi_encoder"] = f"kept the served one ({until}, before the first cutoff {first.date()})"
        return out

    def _unusable(self, early: BiEncoderRetriever | None, first: pd.Timestamp) -> str | None:
        """Why the served examples' bi-encoder cannot make this fit's examples (None: it can)."""
        if early is None:
            return "the served engine kept none"
        if not self._same_model(early):
            return "the config names another base model or layer count"
        if early.trained_until_ is not None and early.trained_until_ >= first:  # None: its weights learned from no purchase
            return f"the served one read purchases up to {early.trained_until_}, past the first cutoff {first.date()}"
        return None

    def search(self) -> TextSearch | None:
        """The served search, whose title vectors the new one reuses (None: none, or another model)."""
        search, dense = self.served.search, self.config.search.dense
        if search is None or (search.config.dense.base_model, search.config.dense.layers) != (dense.base_model, dense.layers):
            return None
        self.report["search"] = "reused the served title vectors"
        return search
