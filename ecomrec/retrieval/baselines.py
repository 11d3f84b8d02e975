"""Classic baselines: popularity, repurchase, BM25 item-kNN."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ecomrec.config import ItemKNNConfig, PopularityConfig, RepurchaseConfig
from ecomrec.data.dataset import Dataset
from ecomrec.artifacts import csr_from_arrays, csr_to_arrays
from ecomrec.candidates import Candidates
from ecomrec.retrieval.base import Query, ScoringRetriever, as_dataset


def _unit_interval(values: np.ndarray) -> np.ndarray:
    """Scale non-negative values into [0, 1): order kept, always below any score >= 1."""
    return (values / (values.max() + 1.0)).astype(np.float64) if len(values) else values


class PopularityRetriever(ScoringRetriever):
    """Items by distinct buyers over the last ``window_days`` of history; the same list for everyone.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> model = PopularityRetriever(window_days=30).fit(synthetic(seed=0))
    >>> model.candidates([0, 1], k=3).item_ids.shape
    (2, 3)
    """

    name = "popularity"
    config_class = PopularityConfig
    config: PopularityConfig

    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None) -> PopularityRetriever:
        data = as_dataset(data, item_texts)
        self._remember(data, data.user_items("counts"))
        self.popularity_ = data.item_popularity(self.config.window_days)
        return self

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        return np.broadcast_to(self.popularity_.astype(np.float32), (len(users), self.n_items)).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity_}

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        self.popularity_ = arrays["popularity"]


class RepurchaseRetriever(ScoringRetriever):
    """The user's own items by purchase count (ties: most recent first), then popularity. An owned item
    scores ``count + 0.999 * recency`` (recency in [0, 1), 1 = end of history), always >= 1; any other
    item its popularity scaled into [0, 1)."""

    name = "repurchase"
    config_class = RepurchaseConfig
    config: RepurchaseConfig

    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None) -> RepurchaseRetriever:
        data = as_dataset(data, item_texts)
        self._remember(data, data.user_items("counts"))
        self.popularity_ = data.item_popularity(self.config.popularity.window_days)
        self.recency_ = _last_purchase_recency(data, self.user_items_.shape)
        return self

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        scores = np.broadcast_to(_unit_interval(self.popularity_), (len(users), self.n_items)).copy()
        own = history.tocoo()
        scores[own.row, own.col] = own.data
        if not fresh:  # recency is known for histories seen at fit time only
            recency = self.recency_[users].multiply(history > 0).tocoo()
            scores[recency.row, recency.col] += 0.999 * recency.data
        return scores

    def own_items(self, query: Query) -> Candidates:
        """Only the user's own items, most bought first (no popularity fill): the ``own`` source."""
        found = self.retrieve(query)
        bought = found.scores >= 1.0  # owned items score >= 1, the popularity fill below 1
        found.item_ids[~bought] = -1
        found.scores[~bought] = -np.inf
        return found

    def _state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity_, **csr_to_arrays("recency", self.recency_)}

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        self.popularity_, self.recency_ = arrays["popularity"], csr_from_arrays("recency", arrays)


def _last_purchase_recency(data: Dataset, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR [users, items]: when the user last bought the item, scaled to [0, 1) over the history."""
    frame = data.interactions
    seconds = frame["timestamp"].to_numpy().astype("datetime64[s]").astype(np.float64)
    if len(seconds):
        seconds = (seconds - seconds.min()) / (seconds.max() - seconds.min() + 1.0)
    rows, cols = frame["user"].to_numpy(), frame["item"].to_numpy()
    order = np.lexsort((-seconds, cols, rows))  # per (user, item), the latest purchase first
    rows, cols, seconds = rows[order], cols[order], seconds[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    # +1 keeps a purchase at time 0 from vanishing as an explicit zero; removed right after.
    last = sp.csr_matrix((seconds[first] + 1.0, (rows[first], cols[first])), shape=shape, dtype=np.float64)
    last.data -= 1.0
    return last.astype(np.float32)


class ItemKNNRetriever(ScoringRetriever):
    """Item-item kNN over BM25-weighted co-purchases (as ``implicit``'s ``BM25Recommender``): a user's
    score for an item is the sum of its similarities to the user's items (weighted by the user's
    confidence); items no neighbour reaches follow, ordered by popularity."""

    name = "itemknn"
    config_class = ItemKNNConfig
    config: ItemKNNConfig

    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None) -> ItemKNNRetriever:
        data = as_dataset(data, item_texts)
        from implicit.nearest_neighbours import ItemItemRecommender, bm25_weight

        cfg = self.config
        weighted = data.user_items(cfg.weighting)
        # BM25Recommender.fit does this too, but hands implicit a COO matrix (and a warning).
        bm25 = sp.csr_matrix(bm25_weight(weighted.T, K1=cfg.k1, B=cfg.b).T)
        model = ItemItemRecommender(K=cfg.neighbours)
        with threadpool_limits(1, "blas"):
            model.fit(bm25, show_progress=False)
        self.similarity_ = sp.csr_matrix(model.similarity, dtype=np.float32)
        self.popularity_ = data.item_popularity()
        self._remember(data, weighted)
        return self

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        scores = (history @ self.similarity_).toarray()
        unreached = scores <= 0
        fallback = np.broadcast_to(_unit_interval(self.popularity_) - 1.0, scores.shape)
        scores[unreached] = fallback[unreached]
        return scores

    def _state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity_, **csr_to_arrays("similarity", self.similarity_)}

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        self.popularity_, self.similarity_ = arrays["popularity"], csr_from_arrays("similarity", arrays)
