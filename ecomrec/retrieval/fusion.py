"""Hybrid candidate generation: several retrievers fused into one list built for recall. Every
candidate keeps each source's rank and score (NaN where a source did not find it) and the user's
purchase count for it: what the reranker and the report read.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ecomrec.config import TEXT_SOURCES, FusionConfig, HybridConfig, PopularityConfig
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.retrieval.als import ALSRetriever
from ecomrec.artifacts import csr_from_arrays, csr_to_arrays
from ecomrec.retrieval.base import Query, Retriever, as_dataset
from ecomrec.retrieval.baselines import ItemKNNRetriever, PopularityRetriever, RepurchaseRetriever
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever
from ecomrec.retrieval.sequence import SequenceRetriever
from ecomrec.candidates import Candidates
from ecomrec.timing import timed

logger = logging.getLogger(__name__)

#: Weights tried per source when tuning (coordinate ascent).
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Tuning maximises mean recall at these depths over the all and new target sets: recall@200
#: alone is the reranker's ceiling, the shallower cut-offs make the order within it count too.
TUNING_KS = (50, 100, 200)
#: List depths tried per source when tuning (every source gets the same depth).
DEPTH_GRID = (100, 200, 300, 500)
#: Which fitted model serves each fusion source.
SOURCE_MODEL = {"own": "repurchase", "als": "als", "als_new": "als", "itemknn": "itemknn", "bi_encoder": "bi_encoder",
                "new_arrivals": "bi_encoder", "sequence": "sequence", "popularity": "popularity"}


class HybridRetriever(Retriever):
    """Fused candidates from own history, ALS, item-kNN, the bi-encoder and popularity.

    ``config``: the sources' configs and the fusion (:class:`~ecomrec.config.HybridConfig`).
    ``retrievers``: models fitted on the data :meth:`fit` is given, to reuse instead of fitting them
    again (keys ``als``, ``itemknn``, ``bi_encoder``, ``repurchase``, ``popularity``).
    ``fusion_from``: a fitted hybrid whose tuned weights and depths to keep instead of tuning (a
    warm refit; its sources must be among ``config.fusion.quotas``).
    """

    name = "hybrid"
    config_class = HybridConfig
    config: HybridConfig

    def __init__(self, config: HybridConfig | None = None, *, retrievers: dict[str, Retriever] | None = None,
                 fusion_from: HybridRetriever | None = None, show_progress: bool | None = None, **kwargs: Any) -> None:
        super().__init__(config, show_progress=show_progress, **kwargs)
        self._given = dict(retrievers or {})
        self._fusion_from = fusion_from
        if fusion_from is not None and not set(fusion_from.quotas_) <= set(self.fusion.quotas):
            raise ValueError(f"fusion_from fuses {sorted(fusion_from.quotas_)}; this config has only {sorted(self.fusion.quotas)}")
        self.tuning_: dict[str, Any] = {}
        self.fit_seconds_: dict[str, float] = {}

    @property
    def fusion(self) -> FusionConfig:
        return self.config.fusion

    # ------------------------------------------------------------------ fit
    def _needed(self, quotas: dict[str, int]) -> set[str]:
        """Models the sources in ``quotas`` need, and popularity (for queries without history)."""
        return {SOURCE_MODEL[s] for s in quotas} | {"popularity"}

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "weights": self.weights_, "depths": self.quotas_, "fit_seconds_by_stage": self.fit_seconds_}
        if self.tuning_:
            out["tuning"] = self.tuning_
        return out

    def fit_stages(self) -> dict[str, float]:
        """Seconds each source's fit and the fusion's tuning took."""
        return dict(self.fit_seconds_)

    def popularity_source(self) -> Retriever:
        """The popularity ranking: what a query without any known purchase gets."""
        self._check_fitted()
        return self.models_["popularity"]

    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None) -> HybridRetriever:
        data = as_dataset(data, item_texts)
        if self.fusion.tune and self._fusion_from is None and len(data) and data.start == data.end:
            raise ValueError("tuning needs a validation window, and these purchases carry no times (a matrix?): pass "
                             "FusionConfig(tune=False), or fit on a Dataset with timestamps")
        needed = self._needed(self.fusion.quotas if self._fusion_from is None else self._fusion_from.quotas_)
        for name, given in self._given.items():
            if name not in SOURCE_MODEL.values():
                raise ValueError(f"no source model {name!r}; known: {sorted(set(SOURCE_MODEL.values()))}")
            if not given.is_fitted or given.n_items != data.n_items:
                raise ValueError(f"the given {name!r} retriever is not fitted on this data ({data.n_items} items)")
        models: dict[str, Retriever] = {}
        seconds: dict[str, float] = {}
        if "bi_encoder" in needed:
            with timed(seconds, "bi_encoder"):
                models["bi_encoder"] = self._given.get("bi_encoder") or self._new_model("bi_encoder").fit(data)
        self.weights_, self.quotas_ = dict(self.fusion.weights), dict(self.fusion.quotas)
        if self._fusion_from is not None:
            kept = self._fusion_from
            self.weights_, self.quotas_ = dict(kept.weights_), dict(kept.quotas_)
            self.tuning_ = {"kept": "the served engine's fusion (warm refit)", "from": kept.tuning_.get("start")}
        elif self.fusion.tune:
            with timed(seconds, "fusion_tuning"):
                self.weights_, self.quotas_, self.tuning_ = self._tune(data, models.get("bi_encoder"))
        for name in sorted(needed - set(models)):
            with timed(seconds, name):
                models[name] = self._given.get(name) or self._fit_model(name, data, models.get("bi_encoder"))
        self.models_, self.fit_seconds_ = models, seconds
        self._fusion_from = None  # the served engine is not held once this one is fitted
        self._read_log(data)
        return self

    def _read_log(self, data: Dataset) -> None:
        """Keep ``data``'s purchase counts, recency and new arrivals (what fusion reads besides its sources)."""
        self._remember(data, data.user_items("counts"))
        self.days_since_ = data.days_since_purchase()
        self.new_arrivals_ = data.new_arrivals(self.config.new_arrival_days)

    def with_catalog(self, catalog: Catalog, *, shards: int | None = None) -> HybridRetriever:
        """A copy whose sources serve ``catalog`` (each its own way; ``catalog_change_`` holds
        theirs by name); the fusion stays as tuned."""
        self._check_fitted()
        models = {name: model.with_catalog(catalog, shards=shards) for name, model in self.models_.items() if name != "sequence"}
        if "sequence" in self.models_:  # new and changed titles read through the bi-encoder's new vectors
            bi = models.get("bi_encoder")
            titles = {} if bi is None else {"items": bi.items_, "title_vectors": bi.index_vectors_()}
            models["sequence"] = self.models_["sequence"].with_catalog(catalog, shards=shards, **titles)
        return self.replaced(models_=models, catalog_change_={name: m.catalog_change_ for name, m in models.items() if m.catalog_change_})

    def with_interactions(self, data: Dataset) -> HybridRetriever:
        """A copy whose sources know the appended purchases (each its own way: nothing is trained), with
        :meth:`_read_log` of ``data``; the fusion stays as tuned."""
        self._check_extends(data)
        out = self.replaced(models_={name: model.with_interactions(data) for name, model in self.models_.items()},
                            catalog_change_={})
        out._read_log(data)
        return out

    def _fit_model(self, name: str, data: Dataset, bi: BiEncoderRetriever | None) -> Retriever:
        """A new ``name`` model fitted on ``data`` (the sequence model joins ``bi``'s title vectors when given)."""
        if name == "sequence" and bi is not None:
            return SequenceRetriever(self.config.sequence, show_progress=self.show_progress).fit(data, title_vectors=bi.index_vectors_())
        return self._new_model(name).fit(data)

    def _new_model(self, name: str) -> Retriever:
        cfg = self.config
        if name == "als":
            return ALSRetriever(cfg.als, show_progress=self.show_progress)
        if name == "bi_encoder":
            return BiEncoderRetriever(cfg.bi_encoder, show_progress=self.show_progress)
        if name == "itemknn":
            return ItemKNNRetriever(cfg.itemknn)
        if name == "sequence":
            return SequenceRetriever(cfg.sequence, show_progress=self.show_progress)
        if name == "repurchase":
            return RepurchaseRetriever(cfg.repurchase)
        if name == "popularity":
            return PopularityRetriever(PopularityConfig(window_days=cfg.repurchase.popularity.window_days))
        raise ValueError(f"no model {name!r}")

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        lists = self.source_lists(query, timings)
        fuse_start = time.perf_counter()
        fused = fuse(lists, self.weights_, self.fusion, query.k, self.n_items)
        fused.sources.update(self._own_features(query, fused))
        timings["fusion"] = time.perf_counter() - fuse_start
        timings["end_to_end"] = time.perf_counter() - start
        fused.timings.update(timings)
        return fused

    def source_lists(self, query: Query, timings: dict[str, float] | None = None) -> dict[str, Candidates]:
        """Each source's own candidates for the query (quota each), in its own order."""
        lists: dict[str, Candidates] = {}
        unseen = _plus_seen(query)
        user_vectors = None  # the text sources share one encoding of the users' histories
        for source, quota in self.quotas_.items():
            model = self.models_[SOURCE_MODEL[source]]
            start = time.perf_counter()
            exclude = query.exclude if source in ("own", "als", "popularity") else unseen
            allow = query.allow
            if source == "new_arrivals":
                allow = self.new_arrivals_ if allow is None else np.intersect1d(allow, self.new_arrivals_)
                if not len(allow):
                    lists[source] = Candidates.empty(len(query.users), 1)
                    continue
            sub = _rescaled(model, Query(query.users, query.history, query.fresh, min(quota, self.n_items), exclude, allow))
            if source in TEXT_SOURCES:
                if user_vectors is None:
                    user_vectors = model.query_vectors(sub)
                    if timings is not None:
                        timings["bi_encoder:user_encoding"] = time.perf_counter() - start
                lists[source] = model.candidates_for_vectors(user_vectors, sub.k, exclude=sub.exclude, allow=sub.allow)
            else:
                lists[source] = model.own_items(sub) if source == "own" else model.retrieve(sub)
            if timings is not None:
                timings[f"search:{source}"] = time.perf_counter() - start
        return lists

    def _own_features(self, query: Query, fused: Candidates) -> dict[str, np.ndarray]:
        """The user's purchase count of each candidate and days since they last bought it; NaN where
        never bought, or unknown (a fresh history carries no times)."""
        counts = query.history if query.fresh else self.user_items_[query.users]
        if query.fresh:
            days = np.full(fused.item_ids.shape, np.nan, dtype=np.float32)
        else:
            days = lookup(self.days_since_[query.users], fused.item_ids)
            days = np.where(days > 0, days - 1.0, np.nan).astype(np.float32)
        return {"own_count": lookup(counts, fused.item_ids), "own_days_since": days}

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        weights, quotas = sorted(self.weights_), sorted(self.quotas_)
        return {"weight_names": np.asarray(weights, dtype="U32"), "weights": np.asarray([self.weights_[n] for n in weights]),
                "quota_names": np.asarray(quotas, dtype="U32"),
                "quotas": np.asarray([self.quotas_[n] for n in quotas], dtype=np.int64),
                **csr_to_arrays("days_since", self.days_since_), "new_arrivals": self.new_arrivals_}

    def _write(self, folder: Any, arrays: dict[str, np.ndarray]) -> None:
        super()._write(folder, arrays)
        for name, model in self.models_.items():
            model.save(folder / "sources" / name)

    def _restore(self, arrays: dict[str, np.ndarray], folder: Any) -> None:
        self.weights_ = {str(n): float(w) for n, w in zip(arrays["weight_names"], arrays["weights"])}
        self.quotas_ = {str(n): int(q) for n, q in zip(arrays["quota_names"], arrays["quotas"])}
        self.days_since_ = csr_from_arrays("days_since", arrays)
        self.new_arrivals_ = arrays.get("new_arrivals", np.zeros(0, dtype=np.int64))  # saved before the source existed
        classes = {"als": ALSRetriever, "itemknn": ItemKNNRetriever, "bi_encoder": BiEncoderRetriever,
                   "repurchase": RepurchaseRetriever, "popularity": PopularityRetriever, "sequence": SequenceRetriever}
        self.models_ = {name: classes[name].load(folder / "sources" / name) for name in self._needed(self.fusion.quotas)}

    def as_of(self, before: Dataset, bi: BiEncoderRetriever | None, *, weights: dict[str, float] | None = None,
              quotas: dict[str, int] | None = None) -> HybridRetriever:
        """This hybrid as it would have answered at the end of ``before`` (for tuning and the
        reranker's cutoffs): the cheap sources refitted on ``before``, ``bi`` (fitted on earlier
        data, or holding the later part out) reading each user's history as it was then. Weights
        and depths default to this hybrid's tuned ones."""
        probe = HybridRetriever(self.config.replace(fusion=self.fusion.replace(tune=False)), show_progress=False)
        probe.weights_ = dict(weights if weights is not None else self.weights_)
        probe.quotas_ = dict(quotas if quotas is not None else self.quotas_)
        needed = self._needed(probe.quotas_)
        probe.models_ = {m: self._fit_model(m, before, bi) for m in needed - {"bi_encoder"}}
        if "bi_encoder" in needed:
            if bi is None:
                raise ValueError("the hybrid uses the bi-encoder: pass one fitted on data before this cutoff")
            probe.models_["bi_encoder"] = _FrozenTextSource(bi, before)
        probe._read_log(before)
        return probe

    # ------------------------------------------------------------------ tuning
    def _validation(self, data: Dataset, bi: BiEncoderRetriever | None) -> tuple[Any, np.ndarray, Any]:
        """The validation split tuning scores on, its rows to use and its start: the bi-encoder's own
        window and users when it has them (it never saw their window purchases), else the last
        ``fusion.valid_days`` days and every user active on both sides."""
        from ecomrec.data.split import make_split

        own = bi is not None and getattr(bi, "validation_", None)
        start = bi.validation_.start if own else data.end - np.timedelta64(self.fusion.valid_days, "D")
        split = make_split(data, start)
        users = np.intersect1d(split.users, bi.validation_.users) if own else split.users
        return split, np.flatnonzero(np.isin(split.users, users)), start

    def _tune(self, data: Dataset, bi: BiEncoderRetriever | None) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
        """Weights and list depth that maximise mean recall at TUNING_KS (all and new targets) on the
        validation window (:meth:`_validation`; sources fitted before it): coordinate ascent over
        WEIGHT_GRID for each depth in DEPTH_GRID, and every source alone (kept if it beats any
        weighting)."""
        from ecomrec.metrics import ranking_metrics

        split, rows, start = self._validation(data, bi)
        sources = list(self.fusion.quotas)
        deepest = max(DEPTH_GRID)
        probe = self.as_of(split.history, bi, weights=dict(self.fusion.weights), quotas={s: deepest for s in sources})
        seen = split.seen[rows]
        all_lists = probe.source_lists(probe._query(split.users[rows], deepest, None, None, split.listed))
        new_lists = probe.source_lists(probe._query(split.users[rows], deepest, None, seen, split.listed))
        targets_all, targets_new = split.targets_all[rows], split.targets_new[rows]
        has_new = np.flatnonzero(targets_new.getnnz(axis=1) > 0)

        @functools.cache
        def unions(depth: int) -> list[tuple[ListUnion, dict[str, np.ndarray], sp.csr_matrix]]:
            out = []
            for lists, rows_kept, targets in ((all_lists, slice(None), targets_all), (new_lists, has_new, targets_new[has_new])):
                union = ListUnion.of({s: Candidates(c.item_ids[rows_kept, :depth], c.scores[rows_kept, :depth]) for s, c in lists.items()}, data.n_items)
                out.append((union, union.contributions(self.fusion), targets))
            return out

        @functools.cache
        def score(weights: tuple[tuple[str, float], ...], depth: int) -> float:
            """Mean recall at TUNING_KS over the all and the new target sets (the search revisits weightings)."""
            recalls = []
            for union, contributions, targets in unions(depth):
                fused = union.best(union.totals(dict(weights), self.fusion, contributions), max(TUNING_KS))
                metrics = ranking_metrics(fused.item_ids, targets, TUNING_KS, data.n_items)
                recalls += [metrics[f"recall@{k}"] for k in TUNING_KS]
            return float(np.mean(recalls))

        def objective(weights: dict[str, float], depth: int) -> float:
            return score(tuple(weights.items()), depth)

        users = len(rows)
        best_weights, best_depth, best, trace = _search(objective, sources, dict(self.fusion.weights))
        quotas = {s: best_depth for s in sources}
        logger.info("fusion tuned on %d validation users: depth %d, weights %s (mean recall %.4f)", users, best_depth, best_weights, best)
        alone = [s for s, w in best_weights.items() if w > 0]
        kept = f"{alone[0]} alone (no weighting of the sources beat it)" if len(alone) == 1 else "fusion"
        return best_weights, quotas, {"users": int(users), "start": str(start), "objective": best, "depth": best_depth,
                                      "kept": kept, "trace": trace}


def _search(objective: Callable[[dict[str, float], int], float], sources: list[str],
            start: dict[str, float]) -> tuple[dict[str, float], int, float, list[dict[str, Any]]]:
    """The weights and depth maximising ``objective``: coordinate ascent over WEIGHT_GRID, one pass
    per depth in DEPTH_GRID and a second at the best one, then every source alone (kept if it beats
    every weighting). Returns them, their objective and the trace of what was tried."""

    def ascend(weights: dict[str, float], depth: int) -> tuple[dict[str, float], float]:
        score = objective(weights, depth)
        for source in sources:
            for value in WEIGHT_GRID:
                trial = {**weights, source: value}
                if trial == weights or not any(trial[s] > 0 for s in sources):
                    continue
                trial_score = objective(trial, depth)
                if trial_score > score + 1e-9:
                    score, weights = trial_score, trial
        return weights, score

    best, best_weights, best_depth, trace = -1.0, dict(start), max(DEPTH_GRID), []
    for depth in DEPTH_GRID:
        weights, score = ascend(dict(start), depth)
        trace.append({"depth": depth, "weights": dict(weights), "objective": score})
        if score > best + 1e-9:
            best, best_weights, best_depth = score, weights, depth
    best_weights, best = ascend(best_weights, best_depth)
    trace.append({"depth": best_depth, "weights": dict(best_weights), "objective": best, "second_pass": True})
    for source, depth in itertools.product(sources, DEPTH_GRID):
        alone = {s: float(s == source) for s in sources}
        score = objective(alone, depth)
        trace.append({"depth": depth, "weights": alone, "objective": score, "single_source": source})
        if score > best + 1e-9:
            best, best_weights, best_depth = score, alone, depth
    return best_weights, best_depth, best, trace


class _FrozenTextSource:
    """The bi-encoder answering from histories as they were before the validation window."""

    def __init__(self, bi: BiEncoderRetriever, before: Dataset) -> None:
        self.bi, self.before = bi, before
        self._encoded: tuple[np.ndarray, np.ndarray] | None = None  # the last users asked and their vectors

    def query_vectors(self, query: Query) -> np.ndarray:
        # the same users are asked twice in a row (all items, then new items only): encode once
        if self._encoded is None or not np.array_equal(self._encoded[0], query.users):
            texts = self.before.history_texts(query.users, max_items=self.bi.config.history_items, max_chars=self.bi.config.history_chars)
            self._encoded = (np.array(query.users), self.bi.encode_queries(texts))
        return self._encoded[1]

    def candidates_for_vectors(self, vectors: np.ndarray, k: int, *, exclude: Any = None, allow: Any = None) -> Candidates:
        return self.bi.candidates_for_vectors(vectors, k, exclude=exclude, allow=allow)

    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        return self.candidates_for_vectors(self.query_vectors(query), query.k, exclude=query.exclude, allow=query.allow)


def _rescaled(model: Any, query: Query) -> Query:
    """A fresh history is given as counts; each model weighs it its own way."""
    if not query.fresh or not isinstance(model, Retriever):
        return query
    from ecomrec.data.dataset import confidence

    weighted = confidence(query.history, getattr(model.config, "weighting", "counts"))
    return Query(query.users, weighted, True, query.k, query.exclude, query.allow)


def _plus_seen(query: Query) -> sp.csr_matrix:
    """Per-query exclusions: the query's own ``exclude`` plus its history."""
    seen = sp.csr_matrix(query.history, dtype=np.float32, copy=True)
    seen.data[:] = 1.0
    if query.exclude is None:
        return seen
    if sp.issparse(query.exclude):
        extra = sp.csr_matrix(query.exclude, dtype=np.float32)
    else:
        rows = np.repeat(np.arange(seen.shape[0]), len(query.exclude))
        cols = np.tile(np.asarray(query.exclude), seen.shape[0])
        extra = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=seen.shape)
    both = (seen + extra).tocsr()
    both.data[:] = 1.0
    return both


def lookup(matrix: sp.csr_matrix, item_ids: np.ndarray) -> np.ndarray:
    """float32 [n, k]: ``matrix[row, item]`` for each ranked item (0 where absent or padding)."""
    csr = sp.csr_matrix(matrix)
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return _lookup(rows * csr.shape[1] + csr.indices, csr.data, item_ids, csr.shape[1])


def _lookup(keys: np.ndarray, values: np.ndarray, item_ids: np.ndarray, n_items: int) -> np.ndarray:
    """float32 [n, k]: the value stored under key ``row * n_items + item`` for each ranked item
    (sort and binary search: a single-user read holds the GIL briefly)."""
    out = np.zeros(item_ids.shape, dtype=np.float32)
    if not len(keys):
        return out
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    wanted = np.arange(item_ids.shape[0], dtype=np.int64)[:, None] * n_items + np.maximum(item_ids, 0)
    position = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = (keys[position] == wanted) & (item_ids >= 0)
    out[found] = values[position[found]]
    return out


def fuse(lists: dict[str, Candidates], weights: dict[str, float], fusion: FusionConfig, k: int, n_items: int, *,
         shared_ranks: bool = False) -> Candidates:
    """One ranking from per-source lists by weighted reciprocal rank ``sum_s w_s / (rrf_k + rank_s)``
    (rank from 1; items no source found are never returned); ``sources`` gets ``<source>_rank`` /
    ``<source>_score``. ``shared_ranks``: items a source scores equally share its best rank among
    them, so the other sources order them instead of the list's arbitrary order."""
    union = ListUnion.of(lists, n_items)
    picked = union.best(union.totals(weights, fusion, union.contributions(fusion, shared_ranks=shared_ranks)), k)
    return union.annotated(picked)


class ListUnion:
    """Every (query, item) pair that any source listed, once, sorted by query then item: what fusion
    ranks. Built once per set of lists, it ranks them under any weights (tuning tries hundreds)."""

    def __init__(self, lists: dict[str, Candidates], n_items: int, keys: np.ndarray, inverse: dict[str, np.ndarray]) -> None:
        self.lists, self.n_items, self.n = lists, n_items, next(iter(lists.values())).n_queries
        self.rows, self.cols = keys // n_items, keys % n_items
        self.inverse = inverse  # per source: the union entry of each of its valid (row-major) entries
        self.starts = np.searchsorted(self.rows, np.arange(self.n + 1))

    @classmethod
    def of(cls, lists: dict[str, Candidates], n_items: int) -> ListUnion:
        per_source = {s: _keys(found.item_ids, found.item_ids >= 0, n_items) for s, found in lists.items()}
        keys, inverse = np.unique(np.concatenate(list(per_source.values())), return_inverse=True)
        bounds = np.cumsum([0, *(len(v) for v in per_source.values())])
        return cls(lists, n_items, keys, {s: inverse[a:b] for s, a, b in zip(per_source, bounds[:-1], bounds[1:])})

    def contributions(self, fusion: FusionConfig, *, shared_ranks: bool = False) -> dict[str, np.ndarray]:
        """Each source's unweighted contribution per valid entry: ``1 / (rrf_k + rank)`` (with
        ``shared_ranks``, equal scores share the best of their ranks)."""
        out = {}
        for source, found in self.lists.items():
            ranks = np.broadcast_to(np.arange(1, found.k + 1, dtype=np.float64), found.item_ids.shape)
            if shared_ranks and found.k:
                starts = np.c_[np.ones((found.n_queries, 1), bool), found.scores[:, 1:] != found.scores[:, :-1]]
                ranks = np.maximum.accumulate(np.where(starts, ranks, 0.0), axis=1)
            out[source] = (1.0 / (fusion.rrf_k + ranks))[found.item_ids >= 0]
        return out

    def totals(self, weights: dict[str, float], fusion: FusionConfig, contributions: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """float64 per union entry: the weighted sum of its sources' contributions (summed in
        source order); 0 where only sources of weight 0 found it."""
        contributions = contributions if contributions is not None else self.contributions(fusion)
        active = [s for s in self.lists if weights.get(s, 0.0) > 0 and len(self.inverse[s])]
        if not active:
            return np.zeros(len(self.rows))
        return np.bincount(np.concatenate([self.inverse[s] for s in active]), minlength=len(self.rows),
                           weights=np.concatenate([weights[s] * contributions[s] for s in active]))

    def best(self, totals: np.ndarray, k: int) -> Candidates:
        """The ``k`` entries of largest total per query (ties: lower item id first), as
        candidates whose ``sources["entry"]`` holds each one's union entry; entries of total 0
        are never picked."""
        out = Candidates.empty(self.n, k)
        entry = np.full((self.n, k), -1, dtype=np.int64)
        width = int(np.diff(self.starts).max(initial=0))
        block = max(1, (1 << 22) // max(width, 1))  # bound the padded [rows, width] block's memory
        for lo in range(0, self.n, block):
            hi = min(lo + block, self.n)
            first, last = self.starts[lo], self.starts[hi]
            rows = self.rows[first:last] - lo
            position = np.arange(first, last) - self.starts[self.rows[first:last]]
            padded = np.full((hi - lo, max(width, 1)), -np.inf)
            padded[rows, position] = np.where(totals[first:last] > 0, totals[first:last], -np.inf)
            keep = padded > -np.inf
            if width > k:  # the k best per row: all above the k-th value, then its ties in item order
                kth = -np.partition(-padded, k - 1, axis=1)[:, k - 1 : k]
                above = padded > kth
                tied = (padded == kth) & keep
                keep = above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))
            r, c = np.nonzero(keep)
            values = padded[r, c]
            order = np.lexsort((c, -values, r))
            r, c, values = r[order], c[order], values[order]
            slot = np.arange(len(r)) - np.searchsorted(r, r)
            picked = self.starts[lo + r] + c
            out.item_ids[lo + r, slot] = self.cols[picked]
            out.scores[lo + r, slot] = values
            entry[lo + r, slot] = picked
        out.sources["entry"] = entry
        return out

    def annotated(self, picked: Candidates) -> Candidates:
        """``picked`` (from :meth:`best`) with each source's rank and score of every item (NaN
        where the source did not list it)."""
        entry = picked.sources.pop("entry")
        cell = np.full(len(self.rows), -1, dtype=np.int64)
        filled = entry >= 0
        cell[entry[filled]] = np.flatnonzero(filled.ravel())
        for source, found in self.lists.items():
            valid = found.item_ids >= 0
            ranks = np.broadcast_to(np.arange(1, found.k + 1, dtype=np.float32), found.item_ids.shape)[valid]
            target = cell[self.inverse[source]]
            shown = target >= 0
            rank = np.full(picked.item_ids.size, np.nan, dtype=np.float32)
            score = np.full(picked.item_ids.size, np.nan, dtype=np.float32)
            # reversed: should a source list an item twice, its better rank is the one kept
            rank[target[shown][::-1]] = ranks[shown][::-1]
            score[target[shown][::-1]] = found.scores[valid][shown][::-1]
            picked.sources[f"{source}_rank"] = rank.reshape(picked.item_ids.shape)
            picked.sources[f"{source}_score"] = score.reshape(picked.item_ids.shape)
        return picked


def _keys(item_ids: np.ndarray, valid: np.ndarray, n_items: int) -> np.ndarray:
    """``row * n_items + item`` of each valid entry of a ranked list (row-major order)."""
    rows = np.broadcast_to(np.arange(item_ids.shape[0], dtype=np.int64)[:, None], item_ids.shape)
    return rows[valid] * n_items + item_ids[valid]
