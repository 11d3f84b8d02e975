"""Collaborative filtering with implicit-feedback ALS (``implicit``)."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ecomrec.config import ALSConfig
from ecomrec.data.dataset import Dataset
from ecomrec.device import implicit_gpu_available, resolve_device
from ecomrec.retrieval.base import Retriever

logger = logging.getLogger(__name__)


class ALSRetriever(Retriever):
    """Matrix factorisation of the user × item confidence matrix (Hu, Koren & Volinsky 2008).

    A user's score for an item is the dot product of their factors. Items without any purchase
    in the training data have no factors worth the name and are never returned (they are cold:
    the text retrievers find them). Users passed with ``user_items=`` are folded in: their
    factors are solved against the fixed item factors, exactly as an ALS user step does.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> data = synthetic(seed=0)
    >>> model = ALSRetriever(factors=8, iterations=5, show_progress=False).fit(data)
    >>> model.candidates([0], k=5, exclude="seen").item_ids.shape
    (1, 5)
    """

    name = "als"
    config_class = ALSConfig
    config: ALSConfig

    def __init__(self, config: ALSConfig | None = None, *, show_progress: bool | None = None, **kwargs: object) -> None:
        super().__init__(config, **kwargs)
        self.show_progress = show_progress

    def fit(self, data: Dataset) -> ALSRetriever:
        from implicit.als import AlternatingLeastSquares

        cfg = self.config
        weighted = data.user_items(cfg.weighting)
        device = resolve_device(None if cfg.device == "auto" else cfg.device)
        use_gpu = device.startswith("cuda") and implicit_gpu_available()
        progress = self.show_progress if self.show_progress is not None else logger.isEnabledFor(logging.INFO)
        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
            model = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=cfg.alpha,
                iterations=cfg.iterations,
                random_state=cfg.seed,
                use_gpu=use_gpu,
            )
            model.fit(weighted, show_progress=progress)
        if use_gpu:
            model = model.to_cpu()
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        for name, factors in (("user", self.user_factors_), ("item", self.item_factors_)):
            if not np.isfinite(factors).all():
                raise FloatingPointError(f"ALS produced non-finite {name} factors; raise regularization or lower alpha")
        self.item_known_ = np.asarray(weighted.getnnz(axis=0) > 0)
        self._items64: np.ndarray | None = None
        self.user_items_ = weighted
        self.device_ = "cuda" if use_gpu else "cpu"
        return self

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        """float32 [n, factors]: fitted factors, or folded-in ones for fresh histories."""
        if not fresh:
            return self.user_factors_[users]
        return self.fold_in(history)

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """Solve each history row's user factors against the fixed item factors (one ALS user step).

        ``history`` holds the same confidence weights as fitting (``Dataset.user_items(weighting)``).
        """
        items = self.item_factors_.astype(np.float64)
        reg = self.config.regularization * np.eye(items.shape[1])
        gram = items.T @ items + reg
        out = np.zeros((history.shape[0], items.shape[1]), dtype=np.float32)
        history = sp.csr_matrix(history)
        for row in range(history.shape[0]):
            lo, hi = history.indptr[row], history.indptr[row + 1]
            if lo == hi:
                continue  # no history, no preference: zero vector, no item scores above another
            cols = history.indices[lo:hi]
            confidence = self.config.alpha * history.data[lo:hi].astype(np.float64)
            y = items[cols]
            a = gram + (y.T * (confidence - 1.0)) @ y
            out[row] = np.linalg.solve(a, y.T @ confidence)
        return out

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        # float64 sums make a user's scores (nearly always) bitwise the same in any batch
        if self._items64 is None:
            self._items64 = self.item_factors_.T.astype(np.float64)
        scores = self.user_vectors(users, history, fresh).astype(np.float64) @ self._items64
        scores[:, ~self.item_known_] = -np.inf
        return scores

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_, "item_known": self.item_known_}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]
        self.item_known_ = arrays["item_known"]
        self._items64 = None
        self.device_ = "cpu"
