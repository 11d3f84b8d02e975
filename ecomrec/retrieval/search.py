"""Catalog search: BM25 over item text (bm25s) fused with a dense retriever.

The dense side is a zero-shot :class:`BiEncoderRetriever` of the base model: the recommendation
bi-encoder's "history → next item" fine-tune trades away general query → title matching, so
search keeps its own copy of the model as it ships. Both sides cover the same items (dense item
indices of the search's own id map, which grows with catalog changes like the bi-encoder's) and
honour the same filters; :func:`~ecomrec.retrieval.fusion.fuse` merges their lists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecomrec.candidates import Candidates, top_k
from ecomrec.config import FusionConfig, SearchConfig
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.text import clean_text, search_terms
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever
from ecomrec.retrieval.fusion import fuse

#: The two lists search fuses.
SEARCH_SOURCES = ("lexical", "dense")


class LexicalIndex:
    """BM25 over item texts; items and queries are matched on :func:`search_terms` (stems, sizes
    folded), and bm25s does the scoring.

    Examples
    --------
    >>> index = LexicalIndex().fit(["red lunch bag", "blue mug", "red mugs, set of 2"])
    >>> index.search(["red mug"], k=3).to_lists()  # both terms; then the shorter of the one-term matches
    [[2, 1, 0]]
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.bm25_: Any = None

    def fit(self, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        self.terms_ = tuple(tuple(search_terms(t)) for t in texts)  # what each item is indexed by
        self.bm25_ = bm25s.BM25(k1=self.k1, b=self.b)
        self.bm25_.index([list(terms) for terms in self.terms_], show_progress=False)
        self.n_items = len(texts)
        return self

    def scores(self, query: str) -> np.ndarray:
        """float32 [n_items] BM25 scores of one query (0 for items sharing no term with it)."""
        if self.bm25_ is None:
            raise NotFittedError("LexicalIndex")
        terms = search_terms(query)
        return np.asarray(self.bm25_.get_scores(terms), dtype=np.float32) if terms else np.zeros(self.n_items, np.float32)

    def mismatch(self, item: int, text: str) -> str | None:
        """Why ``item`` is not found as ``text`` (its title) by its exact words, or None: it must
        be indexed by ``text``'s terms, score above 0 for them, and score as every item indexed by
        the same terms does. (Not "first": BM25 may rank a title that repeats a word above the
        exact one.)"""
        terms = tuple(search_terms(text))
        if self.terms_[item] != terms:
            return f"indexed by the terms {list(self.terms_[item])}, not {list(terms)}"
        if not terms:
            return None
        scores = self.scores(text)
        twins = np.fromiter((t == terms for t in self.terms_), dtype=bool, count=self.n_items)
        if scores[item] <= 0 or not np.allclose(scores[twins], scores[item], rtol=1e-5):
            return f"scored {scores[item]:.4f} for its own words, items of the same words {np.unique(scores[twins]).round(4).tolist()}"
        return None

    def search(self, queries: Sequence[str], k: int, allow: np.ndarray | None = None) -> Candidates:
        """The ``k`` best-scoring items per query among ``allow`` (bool [n_items]; None: all);
        items sharing no term with the query are never returned; ties go to the lower index."""
        scores = np.stack([self.scores(q) for q in queries]) if len(queries) else np.zeros((0, self.n_items), np.float32)
        scores[scores <= 0] = -np.inf
        if allow is not None:
            scores[:, ~allow] = -np.inf
        return top_k(scores, min(k, self.n_items))


class TextSearch:
    """Free-text search over a catalog: a lexical and a dense list per query, fused.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> from ecomrec.config import BiEncoderConfig
    >>> data = synthetic(n_users=20, n_items=12, n_clusters=2, seed=1)
    >>> cfg = SearchConfig(dense=BiEncoderConfig(layers=1, fine_tune=False))
    >>> search = TextSearch(cfg, show_progress=False).fit(data)
    >>> found = search.search(["red mug"], k=3)
    >>> found.k, sorted(found.sources)[:2]
    (3, ['dense_rank', 'dense_score'])
    """

    def __init__(self, config: SearchConfig | None = None, *, show_progress: bool | None = None) -> None:
        self.config = config or SearchConfig()
        self.show_progress = show_progress
        self.dense_: BiEncoderRetriever | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, data: Dataset) -> TextSearch:
        """Index ``data``'s catalog (texts and categories); the dense model is not trained."""
        start = time.perf_counter()
        self.dense_ = BiEncoderRetriever(self.config.dense, show_progress=self.show_progress).fit(data)
        categories = data.catalog["category"].fillna("").astype(str).tolist()
        self._set_catalog(data.listed_mask(), categories)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _set_catalog(self, listed: np.ndarray, categories: Sequence[str]) -> None:
        assert self.dense_ is not None
        self.listed_ = np.array(listed, dtype=bool)
        self.listed_.setflags(write=False)
        self.categories_ = [_category_key(c) for c in categories]
        self.lexical_ = LexicalIndex(self.config.bm25_k1, self.config.bm25_b).fit(self.dense_.item_texts_)

    def _check_fitted(self) -> BiEncoderRetriever:
        if self.dense_ is None:
            raise NotFittedError("TextSearch")
        return self.dense_

    @property
    def items_(self) -> IdMap:
        """External item id of each dense item index (listed or not)."""
        items = self._check_fitted().items_
        assert items is not None
        return items

    @property
    def item_texts_(self) -> tuple[str, ...]:
        return self._check_fitted().item_texts_

    # ------------------------------------------------------------------ reads
    def allowed(self, allow: np.ndarray | None = None, category: str | Sequence[str] | None = None) -> np.ndarray:
        """bool [n_items]: listed, in ``allow`` (dense indices) when given, and in one of the
        ``category`` names when given (compared case- and spacing-insensitively)."""
        self._check_fitted()
        mask = np.array(self.listed_)
        if allow is not None:
            wanted = np.zeros_like(mask)
            wanted[np.asarray(allow, dtype=np.int64)] = True
            mask &= wanted
        if category is not None:
            names = {_category_key(c) for c in ([category] if isinstance(category, str) else category)}
            if not names or "" in names:
                raise ValueError("category must be a non-empty name or list of names")
            mask &= np.fromiter((c in names for c in self.categories_), dtype=bool, count=len(mask))
        return mask

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        user_ids: Sequence[int] | np.ndarray | None = None,
        allow: np.ndarray | None = None,
        category: str | Sequence[str] | None = None,
        lexical_weight: float | None = None,
        feedback: bool = True,
    ) -> Candidates:
        """The ``k`` best items per query: BM25's and the dense retriever's lists fused.

        ``user_ids``: a dense user per query (-1 for none) whose history personalises the dense
        query vector. ``allow`` (dense item indices) and ``category`` filter both lists.
        ``lexical_weight`` overrides the config's (1: lexical only, 0: dense only). When both
        lists are fused, the dense list is searched again after pseudo-relevance feedback from
        the first fusion (``SearchConfig.feedback_items``; ``feedback=False`` skips it).
        ``sources`` of the result hold ``lexical_rank/score`` and ``dense_rank/score`` (NaN
        where a list did not have the item).
        """
        dense = self._check_fitted()
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts or any(not isinstance(t, str) or not clean_text(t) for t in texts):
            raise ValueError("search queries must be non-empty strings")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        cfg = self.config
        weight = cfg.lexical_weight if lexical_weight is None else float(lexical_weight)
        if not 0 <= weight <= 1:
            raise ValueError(f"lexical_weight must be in [0, 1], got {weight}")
        mask = self.allowed(allow, category)
        depth = max(int(k), cfg.depth)
        weights = {"lexical": weight, "dense": 1.0 - weight}
        fusion = FusionConfig(method=cfg.method, rrf_k=cfg.rrf_k, quotas={}, tune=False)
        lists = {}
        if weights["lexical"] > 0:
            lists["lexical"] = self.lexical_.search(texts, depth, allow=mask)
        if weights["dense"] > 0:
            vectors, _ = dense.search_vectors(texts, user_ids)
            lists["dense"] = dense.candidates_for_vectors(vectors, depth, allow=np.flatnonzero(mask))
            if feedback and cfg.feedback_items > 0 and len(lists) == 2:
                first = fuse(lists, weights, fusion, cfg.feedback_items, dense.n_items, shared_ranks=True)
                moved = self._feedback_vectors(vectors, first.item_ids)
                lists["dense"] = dense.candidates_for_vectors(moved, depth, allow=np.flatnonzero(mask))
        return fuse(lists, weights, fusion, int(k), dense.n_items, shared_ranks=True)  # BM25 ties: many items share a title's words

    def _feedback_vectors(self, vectors: np.ndarray, feedback_items: np.ndarray) -> np.ndarray:
        """Rocchio: each query vector moved towards the mean vector of its feedback items
        (dense indices, -1 padding; a query with none keeps its vector), unit length again."""
        dense = self._check_fitted()
        w = self.config.feedback_query_weight
        moved = vectors.copy()
        for row, items in enumerate(feedback_items):
            items = items[items >= 0]
            if len(items):
                mean = dense.index_vectors_()[items].mean(axis=0)
                moved[row] = w * vectors[row] + (1 - w) * mean
        return moved / np.linalg.norm(moved, axis=1, keepdims=True)

    # ------------------------------------------------------------------ catalog changes
    def with_catalog(
        self, item_ids: Sequence[str], texts: Sequence[str], categories: Sequence[str] | None = None, *,
        encoded: Any = None,
    ) -> tuple[TextSearch, dict[str, Any]]:
        """A copy serving a new catalog: only new or changed titles are encoded (none that
        ``encoded``, title → vector, already has), the lexical index is rebuilt (seconds for 100k
        titles). Items left out are no longer returned. Returns the copy and counts and timings
        of the update; this search is left as it was."""
        dense = self._check_fitted()
        updated_dense, report = dense.with_catalog(item_ids, texts, encoded=encoded)
        assert updated_dense.items_ is not None
        listed = np.zeros(len(updated_dense.items_), dtype=bool)
        positions = updated_dense.items_.index([str(i) for i in item_ids])
        listed[positions] = True
        names = list(self.categories_) + [""] * (len(listed) - len(self.categories_))
        if categories is not None:
            if len(categories) != len(positions):
                raise ValueError(f"{len(categories)} categories for {len(positions)} items")
            for position, name in zip(positions, categories):
                names[position] = clean_text(name)
        updated = TextSearch(self.config, show_progress=self.show_progress)
        updated.dense_ = updated_dense
        start = time.perf_counter()
        updated._set_catalog(listed, names)
        report["lexical_seconds"] = time.perf_counter() - start
        return updated, report

    def verify_items(self, items: np.ndarray | Sequence[int]) -> None:
        """Check what search serves for ``items`` (dense indices of listed items): the dense side
        holds a fresh encoding of each title (:meth:`BiEncoderRetriever.verify_items`), and each
        exact title finds its item through the lexical side (:meth:`LexicalIndex.mismatch`).
        Raises :class:`ArtifactError` naming the first item that fails."""
        dense = self._check_fitted()
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        try:
            dense.verify_items(items)
        except ArtifactError as error:
            raise ArtifactError(f"search's dense side: {error}") from None
        for item in items:
            title = dense.item_texts_[item]
            problem = self.lexical_.mismatch(int(item), title)
            if problem is not None:
                raise ArtifactError(f"item {self.items_.ids[item]!r} ({title!r}): search's lexical side does not find it by "
                                    f"its own title: {problem}")

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """Write into the plain folder ``folder`` (inside the engine's artifact)."""
        dense = self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dense.save(folder / "dense")
        np.save(folder / "listed.npy", self.listed_, allow_pickle=False)
        (folder / "categories.json").write_text(json.dumps(self.categories_), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, config: SearchConfig) -> TextSearch:
        """Read what :meth:`save` wrote; the lexical index is rebuilt from the saved texts."""
        folder = Path(folder)
        search = cls(config)
        search.dense_ = BiEncoderRetriever.load(folder / "dense")  # type: ignore[assignment]
        try:
            listed = np.load(folder / "listed.npy", allow_pickle=False)
            categories = json.loads((folder / "categories.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{folder}: cannot read the search catalog: {exc}") from exc
        if len(listed) != search._check_fitted().n_items or len(categories) != len(listed):
            raise ArtifactError(f"{folder}: the search catalog does not match its dense index")
        search._set_catalog(listed, categories)
        return search


def _category_key(name: object) -> str:
    return clean_text(name).lower()

