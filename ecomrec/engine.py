"""One entry point: fit the whole pipeline, ask it for candidates, recommendations and search.

The engine is the boundary where external ids (customer ids, SKUs) become dense indices and back;
everything inside works on dense indices.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.artifacts import open_artifact, write_artifact
from ecomrec.config import EngineConfig
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.text import clean_text
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.results import Results
from ecomrec.retrieval.base import Retriever
from ecomrec.retrieval.candidates import Candidates

logger = logging.getLogger(__name__)


class Engine:
    """Candidates → purchase-probability reranking → recommendations, and text search.

    Parameters
    ----------
    config
        :class:`~ecomrec.config.EngineConfig` (defaults: the tuned Online Retail settings).
    show_progress
        Progress bars for long work; ``None``: on when logging is at INFO.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> from ecomrec.config import ALSConfig, FusionConfig, HybridConfig
    >>> data = synthetic(n_users=60, n_items=40, n_clusters=2, seed=3)
    >>> hybrid = HybridConfig(als=ALSConfig(factors=4, iterations=3),
    ...                       fusion=FusionConfig(quotas={"own": 20, "als": 20}, tune=False))
    >>> engine = Engine(EngineConfig(hybrid=hybrid, use_reranker=False), show_progress=False).fit(data)
    >>> recs = engine.recommend(["u00000"], k=3)
    >>> len(recs.to_records())
    3
    """

    def __init__(self, config: EngineConfig | None = None, *, show_progress: bool | None = None) -> None:
        self.config = config or EngineConfig()
        self.show_progress = show_progress
        self.model_: Retriever | None = None
        self._lock = threading.RLock()  # held for a whole read, and for the swap of a rebuild

    # ------------------------------------------------------------------ fit
    def fit(self, data: Dataset) -> Engine:
        """Fit candidate generation (ALS, item-kNN, bi-encoder, fusion) and the reranker on ``data``."""
        from ecomrec.retrieval.fusion import HybridRetriever

        if not isinstance(data, Dataset):
            raise TypeError(f"fit takes a Dataset (see ecomrec.datasets), got {type(data).__name__}")
        start = time.perf_counter()
        hybrid = HybridRetriever(self.config.hybrid, show_progress=self.show_progress).fit(data)
        model: Retriever = hybrid
        if self.config.use_reranker:
            from ecomrec.rerank import PurchaseReranker, RerankedRetriever

            reranker = PurchaseReranker(self.config.rerank, show_progress=self.show_progress)
            model = RerankedRetriever(hybrid, reranker).fit(data)
        self._install(model, np.ones(data.n_items, dtype=bool), [str(t) for t in data.item_texts])
        self.fit_seconds_ = time.perf_counter() - start
        logger.info("engine fitted on %d interactions in %.1f s", len(data), self.fit_seconds_)
        return self

    def _install(self, model: Retriever, listed: np.ndarray, item_texts: list[str]) -> None:
        self.model_ = model
        self.item_texts_ = item_texts
        self.hybrid_ = getattr(model, "hybrid", model)
        self.users_: IdMap = self.hybrid_.users_
        self.items_: IdMap = self.hybrid_.items_
        self.listed_ = listed
        for source in self.hybrid_.models_.values():  # their index swaps wait for reads in flight
            if hasattr(source, "_swap_lock"):
                source._swap_lock = self._lock

    # ------------------------------------------------------------------ reads
    def candidates(
        self,
        user_ids: Sequence[object] | None = None,
        k: int = 200,
        *,
        histories: Sequence[Sequence[object]] | None = None,
        exclude: str | Sequence[object] | None = None,
        allow: Sequence[object] | None = None,
        on_unknown: str | None = None,
    ) -> Results:
        """The fused candidates (no reranking) for known users or for purchase histories.

        Parameters
        ----------
        user_ids
            External ids of users seen in training (mutually exclusive with ``histories``).
        k
            Items per user.
        histories
            For unseen users: each a list of external item ids they bought (repeats count).
        exclude
            ``"seen"`` (the user's own purchases) or external item ids never to return.
        allow
            External item ids; when given, only these can be returned.
        on_unknown
            ``raise`` | ``warn`` | ``drop`` for unknown user or item ids (default: the config's).
            ``warn`` keeps an unknown user's row, served from popularity; ``drop`` removes it.
        """
        return self._read(user_ids, k, histories, exclude, allow, on_unknown, explain=False)

    def recommend(
        self,
        user_ids: Sequence[object] | None = None,
        k: int = 10,
        *,
        histories: Sequence[Sequence[object]] | None = None,
        exclude: str | Sequence[object] | None = None,
        allow: Sequence[object] | None = None,
        on_unknown: str | None = None,
    ) -> Results:
        """Top ``k`` by purchase probability, with why (arguments as for :meth:`candidates`).

        ``scores`` are calibrated P(purchase in the next 30 days); each row's
        :meth:`Results.found_by` and :meth:`Results.reasons` say which sources found the item
        and which signals raised its probability. Without a reranker this equals
        :meth:`candidates`.
        """
        return self._read(user_ids, k, histories, exclude, allow, on_unknown, explain=self.config.use_reranker)

    def search(
        self,
        query: str | Sequence[str],
        *,
        user_id: object | None = None,
        k: int = 10,
        on_unknown: str | None = None,
    ) -> Results:
        """Items matching free text (one query or a batch), optionally personalised by a known user."""
        self._fitted()
        texts = [query] if isinstance(query, str) else list(query)
        bi = self.hybrid_.models_.get("bi_encoder")
        if bi is None:
            raise ValueError("search needs the bi-encoder: add 'bi_encoder' to hybrid.fusion.quotas")
        users = None
        if user_id is not None:
            users = self.users_.index([user_id] * len(texts), on_unknown=on_unknown or self.config.on_unknown)
            if not len(users):  # dropped: search without personalisation
                users = None
        with self._lock:
            found = bi.search(texts, k, user_ids=users)
            return Results.of(texts, found, bi.items_.ids, bi.item_texts_)

    def _read(
        self,
        user_ids: Sequence[object] | None,
        k: int,
        histories: Sequence[Sequence[object]] | None,
        exclude: str | Sequence[object] | None,
        allow: Sequence[object] | None,
        on_unknown: str | None,
        *,
        explain: bool,
    ) -> Results:
        model = self._fitted()
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if (user_ids is None) == (histories is None):
            raise ValueError("give exactly one of user_ids (known users) and histories (unseen users)")
        policy = on_unknown or self.config.on_unknown
        if histories is not None:
            queries = [f"history #{i}" for i in range(len(_as_list(histories, "histories")))]
            users = np.full(len(queries), -1, dtype=np.int64)
            fresh = self._history_matrix(histories, policy)
        else:
            labels = [str(u) for u in _as_list(user_ids, "user_ids")]
            users = self.users_.index(labels, on_unknown=policy).astype(np.int64)
            queries = labels if policy != "drop" else [u for u in labels if u in self.users_]
            # unknown users kept (policy "warn") get an empty history: served from popularity
            fresh = sp.csr_matrix((len(users), len(self.items_)), dtype=np.float32) if (users < 0).any() else None
        excluded = self._exclude(exclude, policy)
        allowed = self._allowed(allow, policy)
        with self._lock:
            if not len(users):
                found = Candidates.empty(0, k)
            elif fresh is None or histories is not None:
                found = self._call(model, users, k, fresh, excluded, allowed, explain)
            else:  # known users as usual, unknown ones from their empty history; rows stay in order
                known = users >= 0
                parts = [self._call(model, users[known], k, None, excluded, allowed, explain),
                         self._call(model, users[~known], k, fresh[~known], excluded, allowed, explain)]
                order = np.argsort(np.r_[np.flatnonzero(known), np.flatnonzero(~known)], kind="stable")
                found = Candidates.concat([p for p in parts if len(p)])[order]
            return Results.of(queries, found, self.items_.ids, self.item_texts_)

    def _call(self, model: Any, users: np.ndarray, k: int, fresh: Any, exclude: Any, allow: Any, explain: bool) -> Candidates:
        if not len(users):
            return Candidates.empty(0, k)
        if explain:
            return model.recommend(users, k, user_items=fresh, exclude=exclude, allow=allow)
        return self.hybrid_.candidates(users, k, user_items=fresh, exclude=exclude, allow=allow)

    # ------------------------------------------------------------------ id mapping
    def _items(self, ids: Sequence[object], policy: str) -> np.ndarray:
        found = self.items_.index(_as_list(ids, "item ids"), on_unknown="drop" if policy == "drop" else policy)
        return found[found >= 0].astype(np.int64)

    def _history_matrix(self, histories: Sequence[Sequence[object]], policy: str) -> sp.csr_matrix:
        rows, cols = [], []
        for row, items in enumerate(_as_list(histories, "histories")):
            dense = self._items(items, policy)
            rows += [row] * len(dense)
            cols += dense.tolist()
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(histories), len(self.items_)))

    def _exclude(self, exclude: str | Sequence[object] | None, policy: str) -> Any:
        if exclude is None or (isinstance(exclude, str) and exclude == "seen"):
            return exclude
        if isinstance(exclude, str):
            raise ValueError(f"exclude must be 'seen' or a list of item ids, got {exclude!r}")
        return self._items(exclude, policy)

    def _allowed(self, allow: Sequence[object] | None, policy: str) -> np.ndarray | None:
        """Allowed dense items: ``allow`` ∩ the listed catalog (None when both are everything)."""
        listed = self.listed_
        bi = self.hybrid_.models_.get("bi_encoder")
        grown = bi is not None and bi.n_items > len(listed)  # items added since fit: searchable only
        if allow is None:
            return None if listed.all() and not grown else np.flatnonzero(listed)
        wanted = self._items(allow, policy)
        return wanted[listed[wanted]]

    # ------------------------------------------------------------------ catalog changes
    def rebuild_index(self, catalog: pd.DataFrame | None = None) -> dict[str, Any]:
        """Make the engine serve ``catalog`` (columns ``item_id``, ``text``): rebuild the indexes.

        Changed titles are re-embedded (unchanged ones come from the embedding cache); items
        not listed are no longer returned; new items become searchable at once and join
        recommendations at the next :meth:`fit` (no purchase data yet). Without ``catalog`` the
        current one is re-indexed. New indexes are built and validated while reads go on; the
        swap is atomic, so a read sees the old catalog or the new one, never a mix.
        """
        self._fitted()
        bi = self.hybrid_.models_.get("bi_encoder")
        als = self.hybrid_.models_.get("als")
        if catalog is None:
            ids = [self.items_.ids[i] for i in np.flatnonzero(self.listed_)]
            texts = [self.item_texts_[i] for i in np.flatnonzero(self.listed_)]
        else:
            missing = {"item_id", "text"} - set(catalog.columns)
            if missing:
                raise ValueError(f"catalog lacks column(s) {sorted(missing)} (needs item_id, text)")
            ids = catalog["item_id"].astype(str).tolist()
            texts = [clean_text(t) or i for i, t in zip(ids, catalog["text"].fillna("").astype(str))]
        start = time.perf_counter()
        report: dict[str, Any] = {}
        if bi is not None:
            report["text_index"] = bi.update_catalog(ids, texts)
        listed = np.zeros(len(self.items_), dtype=bool)
        known = self.items_.positions(ids)
        listed[known[known >= 0]] = True
        if als is not None:
            als.rebuild_index(np.flatnonzero(listed))
        item_texts = list(self.item_texts_)
        for position, text in zip(known, texts):
            if position >= 0:
                item_texts[position] = text
        with self._lock:
            self.listed_, self.item_texts_ = listed, item_texts
        report.update({"listed": int(listed.sum()), "seconds": time.perf_counter() - start})
        return report

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted engine to the folder ``path`` (atomically; the old one serves until then)."""
        model = self._fitted()
        facts = {"model": type(model).__name__, "users": len(self.users_), "items": len(self.items_)}

        def write(folder: Path) -> None:
            model.save(folder / "model")
            np.save(folder / "listed.npy", self.listed_, allow_pickle=False)
            (folder / "item_texts.json").write_text(json.dumps(self.item_texts_), encoding="utf-8")

        return write_artifact(path, "Engine", self.config.to_dict(), facts, write)

    @classmethod
    def load(cls, path: str | Path) -> Engine:
        """Read an engine written by :meth:`save`; needs no training data. Raises ArtifactError if
        any file is missing, truncated or corrupt, or was written for another config."""
        from ecomrec.rerank import RerankedRetriever
        from ecomrec.retrieval.fusion import HybridRetriever

        folder, manifest = open_artifact(path, "Engine")
        engine = cls(EngineConfig.from_dict(manifest["config"]))
        kind = manifest["facts"]["model"]
        loader = {"RerankedRetriever": RerankedRetriever, "HybridRetriever": HybridRetriever}.get(kind)
        if loader is None:
            raise ArtifactError(f"{folder}: unknown model kind {kind!r}")
        model = loader.load(folder / "model")
        if model.config.to_dict() != (engine.config.rerank if kind == "RerankedRetriever" else engine.config.hybrid).to_dict():
            raise ArtifactError(f"{folder}: the saved model was fitted with another config than the engine's manifest")
        try:
            listed = np.load(folder / "listed.npy", allow_pickle=False)
            item_texts = json.loads((folder / "item_texts.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{folder}: cannot read the catalog state: {exc}") from exc
        engine._install(model, listed, item_texts)
        return engine

    def _fitted(self) -> Retriever:
        if self.model_ is None:
            raise NotFittedError("Engine")
        return self.model_

    def summary(self) -> dict[str, Any]:
        """What the engine holds (JSON-ready)."""
        model = self._fitted()
        return {
            "model": type(model).__name__, "users": len(self.users_), "items": len(self.items_),
            "listed_items": int(self.listed_.sum()), "sources": sorted(self.hybrid_.quotas_),
            "weights": self.hybrid_.weights_, "config_hash": self.config.config_hash(),
        }


def _as_list(values: object, what: str) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be a list of ids, got {type(values).__name__}")
    return list(values)  # type: ignore[call-overload]


def describe(results: Results) -> str:
    """A short text table of ``results`` (for the CLI and the demo)."""
    frame = results.to_frame()
    if frame.empty:
        return "(no results)"
    columns = [c for c in ("query", "rank", "item_id", "title", "p_purchase", "score", "found_by", "why") if c in frame]
    if "p_purchase" in frame:
        columns.remove("score")
    return frame[columns].to_string(index=False, max_colwidth=48)


__all__ = ["Engine", "EngineConfig", "Results", "describe"]
