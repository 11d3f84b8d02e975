"""Collaborative filtering with implicit-feedback ALS (``implicit``), searched through a VectorIndex."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ecomrec.config import ALSConfig, IndexConfig
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.io import read_table
from ecomrec.exceptions import ArtifactError
from ecomrec.device import implicit_gpu_available, resolve_device
from ecomrec.index import ShardedIndex, VectorIndex, load_index, reused_shards
from ecomrec.index.validation import build_checked, served_score_floor
from ecomrec.retrieval.base import Query, ScoringRetriever, as_dataset
from ecomrec.candidates import Candidates

logger = logging.getLogger(__name__)

#: Conjugate-gradient steps of an update's half-step (fit runs 3 per sweep from the last sweep's
#: factors; an update starts new rows from zero, and 10 steps reach the exact solution).
UPDATE_CG_STEPS = 10


class ALSRetriever(ScoringRetriever):
    """Matrix factorisation of the user × item confidence matrix (Hu, Koren & Volinsky 2008).

    A user's score for an item is the dot product of their factors; candidates come from a
    :class:`~ecomrec.index.VectorIndex` over the factors of items bought in the training data
    (cold items are left to the text retrievers). Users passed with ``user_items=`` are folded in:
    their factors are solved against the fixed item factors, as an ALS user step does.

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

    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None, *,
            start_from: ALSRetriever | None = None) -> ALSRetriever:
        """Factorise ``data``'s user × item matrix. ``start_from``: a fitted model of as many factors
        whose factors the sweeps start from, matched by user and item id (a warm refit); ids it
        does not know start from small random factors, as implicit starts every row."""
        data = as_dataset(data, item_texts)
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        weighted = data.user_items(cfg.weighting)
        device = resolve_device(None if cfg.device == "auto" else cfg.device)
        use_gpu = device.startswith("cuda") and implicit_gpu_available()
        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
            model = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                                            iterations=cfg.iterations, random_state=cfg.seed)
            if start_from is not None:
                model.user_factors, model.item_factors = self._start_factors(data, start_from)
            if use_gpu:
                model = model.to_gpu()
            model.fit(weighted, show_progress=self._progress())
        if use_gpu:
            model = model.to_cpu()
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        for name, factors in (("user", self.user_factors_), ("item", self.item_factors_)):
            if not np.isfinite(factors).all():
                raise FloatingPointError(f"ALS produced non-finite {name} factors; raise regularization or lower alpha")
        self.item_known_ = np.asarray(weighted.getnnz(axis=0) > 0)
        self._set_solver()
        self._remember(data, weighted)
        self.device_ = "cuda" if use_gpu else "cpu"
        self.index_ = self.build_index()
        return self

    def _start_factors(self, data: Dataset, start_from: ALSRetriever) -> tuple[np.ndarray, np.ndarray]:
        """float32 user and item factors for ``data``'s ids: ``start_from``'s where it knows the id."""
        start_from._check_fitted()
        if start_from.item_factors_.shape[1] != self.config.factors:
            raise ValueError(f"start_from has {start_from.item_factors_.shape[1]} factors; this model has {self.config.factors}")
        rng = np.random.default_rng(self.config.seed)
        out = []
        for ids, old_map, old in ((data.users.ids, start_from.users_, start_from.user_factors_),
                                  (data.items.ids, start_from.items_, start_from.item_factors_)):
            factors = rng.random((len(ids), self.config.factors), dtype=np.float32) * 0.01
            known = old_map.positions(ids)
            found = (known >= 0) & (known < len(old))
            factors[found] = old[known[found]]
            out.append(factors)
        return out[0], out[1]

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        """float32 [n, factors]: fitted factors, or folded-in ones for fresh histories."""
        return self.fold_in(history) if fresh else self.user_factors_[users]

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """Each history row's user factors solved against the fixed item factors (implicit's ALS user
        step, ``recalculate_user``; an empty row gets zeros). ``history`` holds confidence weights as
        fitting did (``Dataset.user_items(weighting)``)."""
        history = sp.csr_matrix(history, dtype=np.float32)
        return np.asarray(self._solver.recalculate_user(np.arange(history.shape[0]), history), dtype=np.float32)

    def _set_solver(self) -> None:
        """implicit's ALS holding the item factors, for fold-ins; its item Gram matrix computed now,
        so a fold-in reads it and writes nothing."""
        self._solver = self._cpu_solver(np.zeros((0, self.item_factors_.shape[1]), dtype=np.float32), self.item_factors_)
        _ = self._solver.YtY

    def _cpu_solver(self, user_factors: np.ndarray, item_factors: np.ndarray) -> Any:
        """implicit's CPU ALS of this config holding the given factors (for its half-steps)."""
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        with threadpool_limits(1, "blas"):
            solver = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                                             random_state=cfg.seed)
        solver.user_factors, solver.item_factors = user_factors, item_factors
        return solver

    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        index = self.index_  # one reference per call: a concurrent rebuild never mixes into it
        parts = []
        for start in range(0, max(len(query.users), 1), batch_size):
            rows = slice(start, start + batch_size)
            vectors = self.user_vectors(query.users[rows], query.history[rows], query.fresh)
            exclude = query.exclude[rows] if sp.issparse(query.exclude) else query.exclude
            parts.append(index.search(vectors, query.k, exclude=exclude, allow=query.allow))
        return Candidates.concat(parts)

    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        # float64 sums make a user's scores (nearly always) bitwise the same in any batch
        scores = self.user_vectors(users, history, fresh).astype(np.float64) @ self.item_factors_.T.astype(np.float64)
        scores[:, ~self.item_known_] = -np.inf
        return scores

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "index": self.index_.kind_, "device": self.device_}

    @property
    def model_hash(self) -> str:
        """Identity of the item factors: an index built from other factors is refused at load."""
        return hashlib.sha256(np.ascontiguousarray(self.item_factors_).view(np.uint8)).hexdigest()[:16]

    def build_index(self, items: np.ndarray | None = None, config: IndexConfig | None = None) -> VectorIndex | ShardedIndex:
        """A new index over the warm items' factors (only ``items`` of them when given), validated
        against exact search; a sharded one keeps the trained structure and unchanged shards of the one in service."""
        warm = np.flatnonzero(self.item_known_)
        if items is not None:
            warm = np.intersect1d(warm, np.asarray(items, dtype=np.int64))
        if not len(warm):
            raise ValueError("no item with ALS factors is in the catalog: nothing to index")
        sample = np.random.default_rng(self.config.seed).choice(len(self.user_factors_), size=min(200, len(self.user_factors_)), replace=False)
        return build_checked(config or self.config.index, self.item_factors_[warm], warm, self.user_factors_[sample],
                             previous=self.__dict__.get("index_"))

    def with_catalog(self, catalog: Catalog, *, shards: int | None = None) -> ALSRetriever:
        """A copy whose index holds the listed items that have factors (items never bought are
        left to the text retrievers); a catalog of such items only keeps the current index."""
        self._check_fitted()
        assert self.items_ is not None
        start = time.perf_counter()
        config = self.config if shards is None else self.config.replace(index=self.config.index.replace(shards=shards))
        known = self.items_.positions(catalog.item_ids)
        listed = np.unique(known[known >= 0])
        warm = listed[self.item_known_[listed]]
        if not len(warm):  # e.g. a catalog of new items only: every answer is filtered to the listed items anyway
            return self.replaced(config=config, catalog_change_={"index": "unchanged: no listed item has ALS factors yet"})
        index = self.build_index(warm, config.index)
        return self.replaced(config=config, index_=index, catalog_change_={
            "items": int(len(warm)), "reused_shards": reused_shards(index), "seconds": time.perf_counter() - start})

    def with_interactions(self, data: Dataset) -> ALSRetriever:
        """A copy that knows the appended purchases, trained no further: each user whose history
        changed (new users included) gets factors solved from the whole history against the
        item factors, then each item with new purchases gets factors solved against the users'
        (one ALS half-step each, :meth:`_solve_rows`); the index gains the items that became warm."""
        self._check_extends(data)
        weighted = data.user_items(self.config.weighting).astype(np.float32)
        old = sp.csr_matrix(self.user_items_, dtype=np.float32)
        old.resize(weighted.shape)
        changed = (weighted != old).tocoo()
        users, items = np.unique(changed.row), np.unique(changed.col)
        user_factors = _grown(self.user_factors_, weighted.shape[0])
        item_factors = _grown(self.item_factors_, weighted.shape[1])  # new items: zeros until their step
        if len(users):
            user_factors[users] = self._solve_rows(weighted[users], user_factors[users], item_factors)
        if len(items):  # against the users' new factors
            item_factors[items] = self._solve_rows(weighted.T.tocsr()[items], item_factors[items], user_factors)
        known = np.asarray(weighted.getnnz(axis=0) > 0)
        out = self.replaced(user_factors_=user_factors, item_factors_=item_factors, item_known_=known, user_items_=weighted,
                            users_=data.users, items_=data.items, catalog_change_={})
        out._set_solver()
        out.index_ = out.build_index(np.union1d(self.index_.item_ids, np.flatnonzero(known & ~_grown(self.item_known_, len(known)))))
        return out

    def _solve_rows(self, rows: sp.csr_matrix, start: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Factors of ``rows`` (cell weights, one row per user or item) against ``other``'s factors:
        implicit's conjugate-gradient ALS step (the one its fit runs) from ``start``, run to
        convergence (UPDATE_CG_STEPS). Its exact Cholesky step (``recalculate_user``) costs about
        60 times more at 512 factors and gives the same factors (cosine 1.0 on Online Retail's
        two-week updates)."""
        from implicit.cpu import _als

        factors = np.array(start, dtype=np.float32, order="C")
        confidence = sp.csr_matrix(rows * self.config.alpha, dtype=np.float32)
        with threadpool_limits(1, "blas"):
            _als.least_squares_cg(confidence, factors, np.ascontiguousarray(other, dtype=np.float32), self.config.regularization,
                                  num_threads=0, cg_steps=UPDATE_CG_STEPS)
        return factors

    def verify_items(self, items: np.ndarray | Sequence[int], expected: np.ndarray | None = None) -> None:
        """Check that the index holds each of ``items`` (dense indices of listed items with factors)
        under its own factors (``expected`` is not read); :class:`ArtifactError` names the first that fails."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if not len(items):
            return
        factors = self.item_factors_[items]
        norms = np.maximum(np.linalg.norm(factors, axis=1), 1e-12)
        held = self.index_.item_scores(factors / norms[:, None], items) / norms  # 1 where the index holds the factors
        floor = served_score_floor(self.index_)
        bad = np.flatnonzero(~(held >= floor))
        if len(bad):
            assert self.items_ is not None
            raise ArtifactError(f"item {self.items_.ids[items[bad[0]]]!r}: the ALS index holds a vector of cosine "
                                f"{held[bad[0]]:.4f} to its factors (expected >= {floor:.4f}); {len(bad)} of {len(items)} items checked fail")

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_, "item_known": self.item_known_}

    def _write(self, folder: Path, arrays: dict[str, np.ndarray]) -> None:
        super()._write(folder, arrays)
        self.index_.save(folder / "index", items=self.items_, facts={"model": self.model_hash})

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        self.user_factors_, self.item_factors_ = arrays["user_factors"], arrays["item_factors"]
        self.item_known_ = arrays["item_known"]
        self._set_solver()
        self.device_ = "cpu"
        self.index_ = load_index(folder / "index", expect={"model": self.model_hash, "dim": self.item_factors_.shape[1]})


def _grown(values: np.ndarray, rows: int) -> np.ndarray:
    """A copy of ``values`` with zero rows (or False) appended up to ``rows``."""
    out = np.zeros((rows,) + values.shape[1:], dtype=values.dtype)
    out[: len(values)] = values
    return out


def rebuild_model_index(model_path: str | Path, output: str | Path, *, catalog: str | Path | None = None,
                        item_column: str = "item_id", kind: str | None = None) -> dict[str, Any]:
    """Index a saved ALS model's item factors for the current catalog and swap it in at ``output``.

    The new index is checked against exact search before anything is written, then written to a
    new version folder that ``output`` is re-pointed to in one atomic rename (a crash leaves the
    previous index loadable). Returns facts about the new index (kind, items, recall vs exact).
    """
    start = time.perf_counter()
    model = ALSRetriever.load(model_path)
    if model.items_ is None:
        raise ArtifactError(f"{model_path} has no item id map (items.json); refit and save the model")
    items, cold = None, 0
    if catalog is not None:
        listed = read_table(Path(catalog), [item_column])[item_column].astype(str).str.strip()
        items = model.items_.index(listed, on_unknown="drop")
        unknown = len(set(listed)) - len(set(items.tolist()))
        cold = unknown + int((~model.item_known_[items]).sum())
        logger.info("catalog: %d items, %d without ALS factors (left to the text retrievers)", len(set(listed)), cold)
    config = model.config.index if kind is None else model.config.index.replace(kind=kind)
    index = model.build_index(items, config)  # validated, or raises before anything is written
    index.save(output, items=model.items_, facts={"model": model.model_hash})
    return {"output": str(output), "kind": index.kind_, "n_items": index.n_items, "cold_items": cold,
            "recall_at_10": index.validated_recall_, "seconds": time.perf_counter() - start}
