"""Catalog search: BM25 over item text (bm25s) fused with a dense retriever.

The dense side is a zero-shot :class:`BiEncoderRetriever` of the base model as it ships (the
recommendation fine-tune trades away query → title matching). Both sides cover the same items
(the search's own id map, which grows with catalog changes) and honour the same filters; their
lists are fused by a convex combination of scores (:meth:`TextSearch.search`).
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecomrec.candidates import Candidates, top_k
from ecomrec.config import SearchConfig
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.text import clean_text, search_terms
from ecomrec.exceptions import ArtifactError, NotFittedError
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

#: Queries searched together: each holds a BM25 score for every item meanwhile.
QUERY_BATCH = 64


class LexicalIndex:
    """BM25 (bm25s) over item texts; items and queries are matched on :func:`search_terms` (stems, sizes folded).

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
        self._same_terms: dict[tuple[str, ...], list[int]] = {}  # the items of each set of terms
        for item, terms in enumerate(self.terms_):
            self._same_terms.setdefault(terms, []).append(item)
        documents = Counter(term for terms in self.terms_ for term in set(terms))
        n = len(self.terms_)
        self.idf_ = {term: float(np.log(1.0 + (n - df + 0.5) / (df + 0.5))) for term, df in documents.items()}  # BM25's idf
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

    def coverage(self, query: str, items: np.ndarray) -> np.ndarray:
        """float32 [len(items)]: the idf-weighted share of ``query``'s distinct terms each item holds
        (1: every word of the query; 0: none, or a query of terms no item has)."""
        terms = set(search_terms(query))
        weights = {t: self.idf_.get(t, 0.0) for t in terms}
        total = sum(weights.values())
        if total <= 0:
            return np.zeros(len(items), dtype=np.float32)
        return np.fromiter((sum(weights[t] for t in terms.intersection(self.terms_[i])) / total for i in items),
                           dtype=np.float32, count=len(items))

    def mismatch(self, item: int, text: str) -> str | None:
        """Why ``item`` is not found by the exact words of ``text`` (its title), or None: it must be
        indexed by ``text``'s terms, score above 0 for them, and score as every item of the same
        terms does (not "first": BM25 may rank a title that repeats a word above the exact one)."""
        terms = tuple(search_terms(text))
        if self.terms_[item] != terms:
            return f"indexed by the terms {list(self.terms_[item])}, not {list(terms)}"
        if not terms:
            return None
        scores = self.scores(text)
        twins = self._same_terms[terms]
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
        #: What the catalog change that made this search did (counts, seconds; empty: nothing).
        self.catalog_change_: dict[str, Any] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, data: Dataset, *, start_from: TextSearch | None = None) -> TextSearch:
        """Index ``data``'s catalog (texts and categories); the dense model is not trained.
        ``start_from``: a search of the same dense model whose title vectors are reused."""
        start = time.perf_counter()
        dense = None if start_from is None else start_from.dense_
        self.dense_ = BiEncoderRetriever(self.config.dense, show_progress=self.show_progress).fit(data, start_from=dense)
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

    def search(self, queries: str | Sequence[str], k: int = 10, *, user_ids: Sequence[int] | np.ndarray | None = None,
               allow: np.ndarray | None = None, category: str | Sequence[str] | None = None, lexical_weight: float | None = None,
               feedback: bool = True) -> Candidates:
        """The ``k`` best items per query: BM25's and the dense retriever's lists fused.

        A query's candidates (both lists' first ``config.depth`` items) are scored
        ``w * bm25 / max bm25 + (1 - w) * (cos + 1) / (max cos + 1)``, both scores exact, with BM25's
        weight ``w`` following how well its best items match the query's words (:meth:`lexical_weights`)
        unless ``lexical_weight`` sets it (1: BM25's list alone, 0: the dense list alone). When both
        lists are fused, the dense list is searched again after pseudo-relevance feedback from the
        first fusion (``SearchConfig.feedback_items``; ``feedback=False`` skips it).

        ``user_ids``: a dense user per query (-1 for none) whose history personalises the dense query
        vector. ``allow`` (dense item indices) and ``category`` filter both lists. The result's
        ``sources`` hold ``lexical_rank`` / ``dense_rank`` (NaN where the list did not hold the item)
        and ``lexical_score`` / ``dense_score`` (BM25 and cosine).
        """
        self._check_fitted()
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts or any(not isinstance(t, str) or not clean_text(t) for t in texts):
            raise ValueError("search queries must be non-empty strings")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if lexical_weight is not None and not 0 <= lexical_weight <= 1:
            raise ValueError(f"lexical_weight must be in [0, 1], got {lexical_weight}")
        mask = self.allowed(allow, category)
        users = None if user_ids is None else np.asarray(user_ids, dtype=np.int64).reshape(-1)
        if users is not None and len(users) != len(texts):
            raise ValueError(f"{len(users)} user_ids for {len(texts)} queries")
        return Candidates.concat([
            self._search(texts[start : start + QUERY_BATCH], int(k), None if users is None else users[start : start + QUERY_BATCH],
                         mask, lexical_weight, feedback)
            for start in range(0, len(texts), QUERY_BATCH)
        ])

    def _search(self, texts: list[str], k: int, user_ids: np.ndarray | None, mask: np.ndarray, lexical_weight: float | None,
                feedback: bool) -> Candidates:
        dense = self._check_fitted()
        depth = max(k, self.config.depth)
        bm25 = np.stack([self.lexical_.scores(t) for t in texts])  # float32 [n, n_items]
        lexical = top_k(np.where(mask & (bm25 > 0), bm25, -np.inf), min(depth, dense.n_items))
        weights = self.lexical_weights(texts, lexical.item_ids) if lexical_weight is None else np.full(len(texts), float(lexical_weight))
        vectors, _ = dense.search_vectors(texts, user_ids)
        if (weights >= 1).all():  # BM25's list alone
            return _fused(lexical, Candidates.empty(len(texts), 1), bm25, vectors, dense.index_vectors_(), weights, k)
        found = dense.candidates_for_vectors(vectors, depth, allow=np.flatnonzero(mask))
        titles = dense.index_vectors_()
        if (weights <= 0).all():  # the dense list alone
            return _fused(Candidates.empty(len(texts), 1), found, bm25, vectors, titles, weights, k)
        if feedback and self.config.feedback_items > 0:
            first = _fused(lexical, found, bm25, vectors, titles, weights, self.config.feedback_items)
            vectors = self._feedback_vectors(vectors, first.item_ids)
            found = dense.candidates_for_vectors(vectors, depth, allow=np.flatnonzero(mask))
        return _fused(lexical, found, bm25, vectors, titles, weights, k)

    def lexical_weights(self, queries: Sequence[str], lexical: np.ndarray) -> np.ndarray:
        """float64 [n]: BM25's weight in each query's fusion, from ``lexical_weight_unmatched`` to
        ``lexical_weight_matched`` by the largest :meth:`LexicalIndex.coverage` of the query by an
        item of its BM25 list (dense indices [n, depth], -1 padding)."""
        cfg = self.config
        matched = np.array([self.lexical_.coverage(q, row[row >= 0]).max(initial=0.0) for q, row in zip(queries, lexical)])
        return cfg.lexical_weight_unmatched + (cfg.lexical_weight_matched - cfg.lexical_weight_unmatched) * matched

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
    def with_catalog(self, catalog: Catalog, *, shards: int | None = None) -> TextSearch:
        """A copy serving ``catalog`` (:meth:`BiEncoderRetriever.with_catalog`), the lexical index
        rebuilt and categories the catalog's where it has them; this search is left as it was."""
        dense = self._check_fitted().with_catalog(catalog, shards=shards)
        assert dense.items_ is not None
        listed = np.zeros(len(dense.items_), dtype=bool)
        positions = dense.items_.index(list(catalog.item_ids))
        listed[positions] = True
        names = list(self.categories_) + [""] * (len(listed) - len(self.categories_))
        for position, name in zip(positions, catalog.categories or ()):
            names[position] = name
        return self._with(dense, listed, names, catalog_change=dense.catalog_change_)

    def with_interactions(self, data: Dataset) -> TextSearch:
        """A copy whose dense side personalises queries by histories as of ``data``; items it
        adds are listed, titled from its catalog."""
        dense = self._check_fitted().with_interactions(data)
        added = len(dense.item_texts_) - len(self.listed_)
        if not added:  # the same titles: the lexical index (seconds on a large catalog) is kept
            out = copy.copy(self)
            out.dense_, out.catalog_change_ = dense, {}
            return out
        categories = list(self.categories_) + [_category_key(c) for c in data.catalog["category"].fillna("").astype(str)[len(self.listed_):]]
        return self._with(dense, np.r_[self.listed_, np.ones(added, bool)], categories)

    def _with(self, dense: BiEncoderRetriever, listed: np.ndarray, categories: Sequence[str],
              catalog_change: dict[str, Any] | None = None) -> TextSearch:
        """A new search over ``dense``'s items, ``listed`` and ``categories`` per item, lexical index built."""
        out = TextSearch(self.config, show_progress=self.show_progress)
        out.dense_ = dense
        start = time.perf_counter()
        out._set_catalog(listed, categories)
        out.catalog_change_ = {**(catalog_change or {}), "lexical_seconds": time.perf_counter() - start}
        return out

    def verify_items(self, items: np.ndarray | Sequence[int], expected: np.ndarray | None = None) -> None:
        """Check what search serves for ``items`` (dense indices of listed items): the dense side as
        :meth:`BiEncoderRetriever.verify_items`, and each exact title finds its item through the
        lexical side (:meth:`LexicalIndex.mismatch`). Raises :class:`ArtifactError` naming the first failure."""
        dense = self._check_fitted()
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        try:
            dense.verify_items(items, expected)
        except ArtifactError as error:
            raise ArtifactError(f"search's dense side: {error}") from None
        for item in items:
            title = dense.item_texts_[item]
            if (problem := self.lexical_.mismatch(int(item), title)) is not None:
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


def _fused(lexical: Candidates, found: Candidates, bm25: np.ndarray, vectors: np.ndarray, titles: np.ndarray, weights: np.ndarray,
           k: int) -> Candidates:
    """The top ``k`` of each query's candidates (both lists' items) by the fused score of
    :meth:`TextSearch.search` (``bm25`` [n, n_items] exact scores, cosines from the query
    ``vectors`` and the items' ``titles`` vectors; ties: lower index first)."""
    n = len(weights)
    out = Candidates.empty(n, k)
    for name in ("lexical_rank", "lexical_score", "dense_rank", "dense_score"):
        out.sources[name] = np.full((n, k), np.nan, dtype=np.float32)
    for q in range(n):
        lex = lexical.item_ids[q][lexical.item_ids[q] >= 0]
        near = found.item_ids[q][found.item_ids[q] >= 0]
        union = np.union1d(lex, near)
        if not len(union):
            continue
        words = bm25[q, union].astype(np.float64)
        cos = titles[union] @ vectors[q].astype(np.float64)
        lexical_part = words / words.max() if words.max() > 0 else np.zeros_like(words)
        score = weights[q] * lexical_part + (1.0 - weights[q]) * (cos + 1.0) / (cos.max() + 1.0)
        order = np.lexsort((union, -score))[:k]
        picked = union[order]
        out.item_ids[q, : len(order)], out.scores[q, : len(order)] = picked, score[order]
        for name, listed in (("lexical", lex), ("dense", near)):
            place = {int(item): rank for rank, item in enumerate(listed.tolist(), 1)}
            out.sources[f"{name}_rank"][q, : len(order)] = [place.get(int(i), np.nan) for i in picked]
        out.sources["lexical_score"][q, : len(order)] = words[order]
        out.sources["dense_score"][q, : len(order)] = cos[order]
    return out


def _category_key(name: object) -> str:
    return clean_text(name).lower()

