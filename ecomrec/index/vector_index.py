"""A FAISS inner-product index over item vectors, keyed by int64 ids (dense item indices).

Filtering happens inside the search (ID selectors for a global allow/exclude set, over-fetching for
per-query exclusions, an exact re-search of rows still short), so exactly ``k`` items come back
whenever ``k`` qualify. Where FAISS sees GPUs, flat and IVF indexes are cloned to the GPU for
searches without a global allow/exclude set (GPU indexes take no ID selectors); files are always
written from the CPU copy.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ecomrec.artifacts import load_npz, manifest_config, open_artifact, write_artifact
from ecomrec.config import IndexConfig
from ecomrec.data.idmap import IdMap, ON_UNKNOWN
from ecomrec.device import faiss_gpu_count, resolve_device
from ecomrec.exceptions import ArtifactError, NotFittedError, UnknownIdError
from ecomrec.candidates import Candidates

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
#: Kinds searched through inverted lists (nprobe applies).
IVF_KINDS = ("ivf_flat", "ivf_pq", "ivf_sq8")
#: Kinds that keep compressed codes, not the vectors: IndexConfig.refine re-scores their shortlists.
COMPRESSED_KINDS = ("ivf_pq", "ivf_sq8")
REFINE_FILE = "refine.faiss"
#: Compact an index that cannot delete natively (HNSW) once this share of it is tombstones.
COMPACT_AT = 0.25
#: ``exclude`` of a search: ids excluded for every query, or per query (CSR rows or id arrays).
Exclude = np.ndarray | list[int] | sp.spmatrix | list[np.ndarray] | None
#: A graph search that comes back short is redone exactly when at most this many items qualify.
EXHAUSTIVE_MAX = 200_000


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


class VectorIndex:
    """Maximum-inner-product search over item vectors (FAISS flat, IVF-Flat, HNSW or IVF-PQ).

    Examples
    --------
    >>> import numpy as np
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index = VectorIndex(kind="flat").build(vectors, item_ids=[10, 11, 12, 13])
    >>> index.search(vectors[[2]], k=2, exclude=[12]).item_ids.tolist()
    [[10, 11]]
    """

    def __init__(self, config: IndexConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError(f"VectorIndex: pass a config or keywords ({sorted(kwargs)}), not both")
        self.config = config if config is not None else IndexConfig(**kwargs)
        self._cpu: Any = None
        self._gpu: Any = None
        self._refine: Any = None  # float16 copies of compressed kinds' vectors (IndexConfig.refine)
        self._ids = np.zeros(0, np.int64)
        self._live = np.zeros(0, bool)
        self._tombstones = np.zeros(0, np.int64)
        self.kind_: str | None = None
        self.dim_ = self.nlist_ = self.nprobe_ = 0
        self.ef_search_: int = self.config.ef_search
        self.build_seconds_: float = 0.0
        #: recall@10 against exact search measured when the index was validated, if it was
        self.validated_recall_: float | None = None

    # ------------------------------------------------------------------ properties
    @property
    def is_built(self) -> bool:
        return self._cpu is not None

    @property
    def n_items(self) -> int:
        """Items that can be returned (added and not removed)."""
        return len(self._ids)

    @property
    def item_ids(self) -> np.ndarray:
        """Sorted int64 ids of the searchable items."""
        return self._ids.copy()

    @property
    def device(self) -> str:
        return "cuda" if self._gpu is not None else "cpu"

    def __repr__(self) -> str:
        if not self.is_built:
            return "VectorIndex(not built)"
        return f"VectorIndex({self.kind_}, {self.n_items:,} items x {self.dim_}, {self.device})"

    # ------------------------------------------------------------------ build
    def build(self, vectors: np.ndarray, item_ids: np.ndarray | list[int] | None = None, *,
              trained: VectorIndex | None = None) -> VectorIndex:
        """Index ``vectors`` (float [n, d]) under ``item_ids`` (int [n], default 0..n-1).

        ``trained``: an empty index from :meth:`train` whose structure (IVF centroids, PQ
        codebooks) is copied instead of trained, so shards probe the same lists as one index
        would; with it ``vectors`` may be empty.
        """
        vectors = self._check_vectors(vectors, dim=None if trained is None else trained.dim_)
        if len(vectors) == 0 and trained is None:
            raise ValueError("cannot build an index over an empty catalog (0 vectors)")
        ids = self._check_new_ids(np.arange(len(vectors)) if item_ids is None else item_ids, len(vectors), existing=None)
        start = time.perf_counter()
        if trained is None:
            self.train(vectors)
        else:
            self._copy_training(trained)
        self._cpu.add_with_ids(vectors, ids)
        if self._refine is not None:
            self._refine.add_with_ids(vectors, ids)
        self._set_ids(np.sort(ids))
        self._to_device()
        self.build_seconds_ = time.perf_counter() - start
        logger.info("built %r in %.2fs", self, self.build_seconds_)
        return self

    def train(self, vectors: np.ndarray) -> VectorIndex:
        """Fit the structure (IVF centroids, PQ codebooks) on ``vectors`` without adding any: an
        empty index for :meth:`build`'s ``trained=``. ``auto`` resolves on the size of ``vectors``."""
        vectors = self._check_vectors(vectors, dim=None)
        if len(vectors) == 0:
            raise ValueError("cannot train an index on 0 vectors")
        self.dim_ = vectors.shape[1]
        self.kind_ = self._resolve_kind(*vectors.shape)
        self._cpu = self._make(self.kind_, vectors)
        self._refine = None
        if self.config.refine and self.kind_ in COMPRESSED_KINDS:
            faiss = _faiss()
            self._refine = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(self.dim_, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT))
        self._tombstones = np.zeros(0, np.int64)
        self._set_ids(np.zeros(0, np.int64))
        return self

    def _copy_training(self, trained: VectorIndex) -> None:
        trained._check_built()
        if trained._cpu.ntotal:
            raise ValueError("trained= takes an empty index from VectorIndex.train, not one holding items")
        self._cpu = _faiss().clone_index(trained._cpu)
        self._refine = None if trained._refine is None else _faiss().clone_index(trained._refine)
        self.kind_, self.dim_, self.nlist_, self.nprobe_ = trained.kind_, trained.dim_, trained.nlist_, trained.nprobe_
        self.ef_search_ = trained.ef_search_
        self._tombstones = np.zeros(0, np.int64)

    def _resolve_kind(self, n: int, dim: int) -> str:
        if self.config.kind != "auto":
            return self.config.kind
        return "flat" if n * dim < self.config.exact_max_floats else self.config.auto_kind

    def _make(self, kind: str, vectors: np.ndarray) -> Any:
        faiss = _faiss()
        n, d = vectors.shape
        cfg = self.config
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        if kind == "hnsw":
            graph = faiss.IndexHNSWFlat(d, cfg.hnsw_m, ip)
            graph.hnsw.efConstruction = cfg.ef_construction
            graph.hnsw.efSearch = cfg.ef_search
            return faiss.IndexIDMap2(graph)
        nlist = cfg.nlist or 2 ** max(0, round(math.log2(4 * math.sqrt(n))))
        nlist = max(1, min(nlist, n // 39 or 1))  # FAISS wants >= 39 training points per list
        self.nlist_ = nlist
        self.nprobe_ = min(nlist, cfg.nprobe or max(8, nlist // 32))
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        elif kind == "ivf_sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
        else:
            m = cfg.pq_m or max(x for x in range(1, max(1, d // 8) + 1) if d % x == 0)
            if d % m:
                raise ValueError(f"IndexConfig.pq_m={m} must divide the dimension {d}")
            if n < 39 * 2**cfg.pq_bits:
                raise ValueError(f"ivf_pq with pq_bits={cfg.pq_bits} needs >= {39 * 2**cfg.pq_bits} vectors to train, got {n}")
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, cfg.pq_bits, ip)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns and frees its quantizer
        size = min(n, cfg.train_size or 64 * nlist)
        sample = vectors[np.sort(np.random.default_rng(cfg.seed).choice(n, size=size, replace=False))] if size < n else vectors
        index.train(sample)
        index.nprobe = self.nprobe_
        return index

    def _to_device(self) -> None:
        """Clone to the GPU when asked for (or ``auto``) and FAISS sees one; fall back to the CPU."""
        self._gpu = None
        wanted = self.config.device
        if wanted == "cpu" or self.kind_ == "hnsw":
            return
        if faiss_gpu_count() == 0:
            if wanted == "cuda":
                logger.warning("IndexConfig.device='cuda' but FAISS sees no GPU (faiss-cpu?): searching on the CPU")
            return
        if wanted == "auto" and not resolve_device().startswith("cuda"):
            return
        try:
            self._gpu = _faiss().index_cpu_to_all_gpus(self._cpu)
            if self.kind_ in IVF_KINDS:
                self._gpu.nprobe = self.nprobe_
        except Exception as exc:  # an index type or build without GPU support
            logger.warning("FAISS could not move the %s index to the GPU (%s): searching on the CPU", self.kind_, exc)
            self._gpu = None

    # ------------------------------------------------------------------ transport
    def __getstate__(self) -> dict[str, Any]:
        """FAISS's serialization of the CPU copies, for sending between processes (not storage)."""
        faiss = _faiss()
        state = {k: v for k, v in self.__dict__.items() if k not in ("_cpu", "_gpu", "_refine")}
        state["config"] = self.config.to_dict()
        for name in ("_cpu", "_refine"):
            index = getattr(self, name)
            state[name] = None if index is None else faiss.serialize_index(index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        faiss = _faiss()
        state = dict(state)
        state["config"] = IndexConfig.from_dict(state["config"])
        for name in ("_cpu", "_refine"):
            state[name] = None if state[name] is None else faiss.deserialize_index(state[name])
        self.__dict__.update(state)
        self._gpu = None
        if self._cpu is not None:
            self._to_device()

    def set_search(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the recall/latency operating point without rebuilding (IVF lists probed, HNSW beam)."""
        self._check_built()
        if nprobe is not None:
            if self.kind_ not in IVF_KINDS or not 1 <= nprobe <= self.nlist_:
                raise ValueError(f"nprobe applies to IVF indexes, 1..{self.nlist_}; this is {self.kind_}")
            self.nprobe_ = int(nprobe)
            if self._gpu is not None:  # unfiltered GPU searches read the clone's own setting
                self._gpu.nprobe = self.nprobe_
            # CPU searches pass nprobe per call: a reused shard's shared FAISS data is never changed.
        if ef_search is not None:
            if self.kind_ != "hnsw" or ef_search <= 0:
                raise ValueError(f"ef_search applies to HNSW indexes and must be > 0; this is {self.kind_}")
            self.ef_search_ = int(ef_search)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, *, exclude: Exclude = None, allow: np.ndarray | list[int] | None = None,
               exhaustive: str = "short") -> Candidates:
        """Top ``k`` items by inner product for each query.

        Parameters
        ----------
        queries
            float [n, d].
        k
            Results per query; short rows are padded (id -1, score -inf).
        exclude
            Item ids excluded for every query (1-D), or per query: a CSR [n, max_id + 1] whose
            columns are item ids, or a list of n id arrays.
        allow
            When given, only these item ids can be returned.
        exhaustive
            ``short``: a row the approximate search leaves short of ``k`` qualifying items is
            searched again over every item; ``never``: not (a :class:`ShardedIndex` decides
            after merging its shards); ``always``: every row over every item.

        Returns
        -------
        Candidates
            ``item_ids`` int64 [n, k] and ``scores`` float32 [n, k], best first.
        """
        self._check_built()
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if exhaustive not in ("short", "never", "always"):
            raise ValueError(f"exhaustive must be short, never or always, got {exhaustive!r}")
        queries = self._check_vectors(queries, dim=self.dim_)
        n = len(queries)
        global_excl, allow_ids, qualifies, row_excl = self._filters(n, exclude, allow)
        wanted = np.minimum(k, self._counts(qualifies, row_excl, n))
        out = Candidates.empty(n, k)
        if n == 0 or not wanted.any():
            return out
        if exhaustive != "always":
            extra = max((len(r) for r in row_excl), default=0) if row_excl is not None else 0
            scores, ids = self._search_raw(queries, min(k + extra, self._qualifying_total(qualifies)), global_excl, allow_ids)
        for row in range(n):
            got_ids, got_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
            if exhaustive != "always":
                keep = ids[row] >= 0
                if row_excl is not None and len(row_excl[row]):
                    keep &= ~np.isin(ids[row], row_excl[row])
                got_ids, got_scores = ids[row][keep][:k], scores[row][keep][:k]
            if exhaustive == "always" or (exhaustive == "short" and len(got_ids) < wanted[row]):
                excl = np.union1d(global_excl, row_excl[row]) if row_excl is not None else global_excl
                got_ids, got_scores = self._search_row_exhaustively(queries[row], k, excl, allow_ids, qualifies)
            order = np.lexsort((got_ids, -got_scores))  # ties by lower id, as exact top-k does
            out.item_ids[row, : len(got_ids)] = got_ids[order]
            out.scores[row, : len(got_ids)] = got_scores[order]
        return out

    def item_scores(self, queries: np.ndarray, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """float32 [n]: the score a search gives item ``item_ids[i]`` for query ``i`` (from what the
        index stores for it: the vector, codes or refine copy); NaN where the index does not hold it."""
        self._check_built()
        queries = self._check_vectors(queries, dim=self.dim_)
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if len(ids) != len(queries):
            raise ValueError(f"{len(ids)} item ids for {len(queries)} queries")
        out = np.full(len(ids), np.nan, dtype=np.float32)
        held = (ids >= 0) & (ids < len(self._live))
        held[held] = self._live[ids[held]]
        if not held.any():
            return out
        stored = self._refine if self._refine is not None else self._cpu
        if hasattr(stored, "id_map"):  # IndexIDMap2 (flat, HNSW, refine copies): vectors by id
            out[held] = np.einsum("ij,ij->i", queries[held], stored.reconstruct_batch(ids[held]))
            return out
        for row in np.flatnonzero(held):  # IVF codes: the item's own score, searched for alone
            found = self.search(queries[row : row + 1], 1, allow=ids[row : row + 1], exhaustive="always")
            out[row] = found.scores[0, 0] if found.item_ids[0, 0] == ids[row] else np.nan
        return out

    def qualifying(self, n_queries: int, *, exclude: Exclude = None, allow: np.ndarray | list[int] | None = None) -> np.ndarray:
        """int64 [n_queries]: items each query may get back under these filters."""
        self._check_built()
        _, _, qualifies, row_excl = self._filters(n_queries, exclude, allow)
        return self._counts(qualifies, row_excl, n_queries)

    def _filters(self, n: int, exclude: object, allow: object) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[np.ndarray] | None]:
        """(ids excluded for all, allowed ids or None, bool over ids that qualify, per-row
        excluded ids that would otherwise qualify or None)."""
        global_excl, per_row = split_exclude(exclude, n)
        global_excl = np.union1d(global_excl, self._tombstones) if len(self._tombstones) else global_excl
        allow_ids = None if allow is None else np.unique(np.asarray(allow, dtype=np.int64))
        qualifies = self._qualifying(global_excl, allow_ids)  # bool over ids 0..max_id
        row_excl = None
        if per_row is not None:
            row_excl = [r[qualifies[np.clip(r, 0, len(qualifies) - 1)] & (r >= 0) & (r < len(qualifies))] for r in per_row]
        return global_excl, allow_ids, qualifies, row_excl

    def _qualifying_total(self, qualifies: np.ndarray) -> int:
        """Items that qualify (no pass over the id range when nothing filters)."""
        return self.n_items if qualifies is self._live else int(qualifies.sum())

    def _counts(self, qualifies: np.ndarray, row_excl: list[np.ndarray] | None, n: int) -> np.ndarray:
        total = self._qualifying_total(qualifies)
        if row_excl is None:
            return np.full(n, total, dtype=np.int64)
        return total - np.array([len(r) for r in row_excl], dtype=np.int64)

    def _search_row_exhaustively(self, query: np.ndarray, k: int, exclude: np.ndarray, allow: np.ndarray | None,
                                 qualifies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One query over every qualifying item: all IVF lists, or exact scores for a graph index."""
        if self.kind_ == "hnsw" and self._qualifying_total(qualifies) <= EXHAUSTIVE_MAX:
            ids = np.flatnonzero(qualifies)
            ids = np.setdiff1d(ids, exclude, assume_unique=True) if len(exclude) else ids
            scores = self._cpu.reconstruct_batch(ids) @ query
            top = np.lexsort((ids, -scores))[:k]
            return ids[top], scores[top].astype(np.float32)
        s, i = self._search_raw(query[None, :], min(k, self._qualifying_total(qualifies)), exclude, allow, exact_fallback=True)
        valid = i[0] >= 0
        return i[0][valid][:k], s[0][valid][:k]

    def _qualifying(self, exclude: np.ndarray, allow: np.ndarray | None) -> np.ndarray:
        """bool [max_id + 1]: ids a query may get back (``self._live`` itself when nothing filters)."""
        if not len(exclude) and allow is None:
            return self._live
        mask = self._live.copy()
        if allow is not None:
            allowed = np.zeros_like(mask)
            allowed[allow[(allow >= 0) & (allow < len(mask))]] = True
            mask &= allowed
        mask[exclude[(exclude >= 0) & (exclude < len(mask))]] = False
        return mask

    def _search_raw(self, queries: np.ndarray, k: int, exclude: np.ndarray, allow: np.ndarray | None, *,
                    exact_fallback: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search → (scores float32 [n, k], ids int64 [n, k], -1 where nothing was found)."""
        if self._refine is not None:
            scores, ids = self._search_base(queries, k * self.config.refine, exclude, allow, exact_fallback)
            return self._rescore(queries, ids, k)
        return self._search_base(queries, k, exclude, allow, exact_fallback)

    def _search_base(self, queries: np.ndarray, k: int, exclude: np.ndarray, allow: np.ndarray | None,
                     exact_fallback: bool) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        filtered = len(exclude) > 0 or allow is not None
        if self._gpu is not None and not filtered:
            return self._gpu.search(queries, k)
        selector = None if allow is None else faiss.IDSelectorBatch(allow)
        if len(exclude):
            not_excluded = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclude))
            selector = not_excluded if selector is None else faiss.IDSelectorAnd(selector, not_excluded)
        return self._cpu.search(queries, k, params=self._params(selector, k, exact_fallback))

    def _rescore(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The shortlist ``ids`` [n, m] re-scored from the float16 copies: the top ``k`` per row."""
        found = ids >= 0
        unique, where = np.unique(ids[found], return_inverse=True)
        exact = np.full(ids.shape, -np.inf, dtype=np.float32)
        if len(unique):
            vectors = self._refine.reconstruct_batch(unique)
            rows = np.nonzero(found)[0]
            exact[found] = np.einsum("ij,ij->i", queries[rows], vectors[where])
        order = np.lexsort((np.where(found, ids, np.iinfo(np.int64).max), -exact), axis=-1)[:, :k]
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(np.where(found, ids, -1), order, axis=1)

    def _params(self, selector: Any, k: int, wide: bool) -> Any:
        faiss = _faiss()
        if self.kind_ == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search_, k) * (4 if wide else 1))
        if self.kind_ in IVF_KINDS:
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.nlist_ if wide else self.nprobe_)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    # ------------------------------------------------------------------ updates
    def add(self, vectors: np.ndarray, item_ids: np.ndarray | list[int]) -> None:
        """Add items (ids must be new) without rebuilding."""
        self._check_built()
        vectors = self._check_vectors(vectors, dim=self.dim_)
        ids = self._check_new_ids(item_ids, len(vectors), existing=self._ids)
        if len(np.intersect1d(ids, self._tombstones)):
            self.compact()  # the graph still holds the removed copy of a re-added id
        if len(ids):
            self._cpu.add_with_ids(vectors, ids)
            if self._refine is not None:
                self._refine.add_with_ids(vectors, ids)
            self._set_ids(np.union1d(self._ids, ids))
            self._to_device()

    def remove(self, item_ids: np.ndarray | list[int], on_unknown: str = "raise") -> int:
        """Remove items; returns how many were removed. Unknown ids follow ``on_unknown``."""
        self._check_built()
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        ids = np.unique(np.asarray(item_ids, dtype=np.int64))
        known = np.isin(ids, self._ids)
        if not known.all():
            message = f"{int((~known).sum())} id(s) not in the index, e.g. {ids[~known][:5].tolist()}"
            if on_unknown == "raise":
                raise UnknownIdError(message)
            if on_unknown == "warn":
                logger.warning(message)
            ids = ids[known]
        if not len(ids):
            return 0
        try:
            self._cpu.remove_ids(_faiss().IDSelectorBatch(ids))
            if self._refine is not None:
                self._refine.remove_ids(_faiss().IDSelectorBatch(ids))
        except RuntimeError:  # HNSW cannot delete: hide the items, compact when they pile up
            self._tombstones = np.union1d(self._tombstones, ids)
        self._set_ids(np.setdiff1d(self._ids, ids, assume_unique=True))
        if len(self._tombstones) > COMPACT_AT * (len(self._ids) + len(self._tombstones)):
            self.compact()
        else:
            self._to_device()
        return len(ids)

    def compact(self) -> None:
        """Rebuild an index holding tombstones (HNSW) from its own stored vectors."""
        if not len(self._tombstones):
            return
        vectors = np.vstack([self._cpu.reconstruct(int(i)) for i in self._ids]) if len(self._ids) else None
        self._tombstones = np.zeros(0, np.int64)
        if vectors is None:
            raise ValueError("every item was removed; build a new index")
        self.build(vectors, self._ids)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, items: IdMap | None = None, facts: dict[str, Any] | None = None) -> Path:
        """Write ``index.faiss`` (from the CPU copy), ``ids.npz``, optionally ``items.json``, and the manifest.

        ``facts`` go into the manifest (e.g. the model the vectors came from); ``load(expect=)`` checks them.
        """
        self._check_built()
        faiss = _faiss()

        def write(folder: Path) -> None:
            faiss.write_index(self._cpu, str(folder / INDEX_FILE))
            if self._refine is not None:
                faiss.write_index(self._refine, str(folder / REFINE_FILE))
            np.savez(folder / "ids.npz", ids=self._ids, tombstones=self._tombstones)
            if items is not None:
                items.save(folder / "items.json")

        info = {"kind": self.kind_, "dim": self.dim_, "metric": "inner_product", "n_items": self.n_items,
                "nlist": self.nlist_, "nprobe": self.nprobe_, "ef_search": self.ef_search_, "built_on": self.device,
                "build_seconds": round(self.build_seconds_, 3), **(facts or {})}
        return write_artifact(path, "VectorIndex", self.config.to_dict(), info, write)

    @classmethod
    def load(cls, path: str | Path, *, expect: dict[str, Any] | None = None, device: str | None = None) -> VectorIndex:
        """Read an index written by :meth:`save`.

        ``expect``: manifest facts that must match (e.g. ``{"dim": 512, "model": "<hash>"}``);
        any difference raises :class:`ArtifactError`, as do missing or corrupt files.
        """
        with open_artifact(path, "VectorIndex") as (folder, manifest):  # one version, even if swapped meanwhile
            facts = manifest["facts"]
            check_facts(facts, expect, path)
            config = manifest_config(manifest, IndexConfig, folder)
            if device is not None:
                config = config.replace(device=device)
            index = cls(config)
            try:
                index._cpu = _faiss().read_index(str(folder / INDEX_FILE))
            except RuntimeError as exc:
                raise ArtifactError(f"{folder / INDEX_FILE} is not a readable FAISS index: {exc}") from exc
            if (folder / REFINE_FILE).is_file():
                index._refine = _faiss().read_index(str(folder / REFINE_FILE))
            arrays = load_npz(folder / "ids.npz")
            index._tombstones = arrays["tombstones"]
            index._set_ids(arrays["ids"])
            index.kind_, index.dim_, index.nlist_ = facts["kind"], int(facts["dim"]), int(facts["nlist"])
            index.nprobe_, index.ef_search_ = int(facts["nprobe"]), int(facts["ef_search"])
            if index._cpu.d != index.dim_ or index._cpu.ntotal != index.n_items + len(index._tombstones):
                raise ArtifactError(f"{folder}: index file and manifest disagree (dimension or item count)")
        index._to_device()
        return index

    def _set_ids(self, ids: np.ndarray) -> None:
        self._ids = ids
        self._live = np.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=bool)
        self._live[ids] = True

    # ------------------------------------------------------------------ checks
    def _check_built(self) -> None:
        if not self.is_built:
            raise NotFittedError("VectorIndex (call build(...) or load(...))")

    @staticmethod
    def _check_vectors(vectors: np.ndarray, dim: int | None) -> np.ndarray:
        array = np.asarray(vectors)
        if array.ndim != 2:
            raise ValueError(f"vectors must be 2-D [n, d], got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"vectors must be numeric, got {array.dtype}")
        if dim is not None and array.shape[1] != dim:
            raise ValueError(f"vectors have dimension {array.shape[1]}, the index has {dim}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
            raise ValueError(f"vectors hold NaN or infinite values (first at row {bad})")
        return array

    @staticmethod
    def _check_new_ids(item_ids: np.ndarray | list[int], n: int, existing: np.ndarray | None) -> np.ndarray:
        ids = np.asarray(item_ids)
        if ids.shape != (n,) or (n and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"item_ids must be {n} integers, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if n and ids.min() < 0:
            raise ValueError("item_ids must be >= 0 (-1 means padding)")
        if len(np.unique(ids)) != n:
            raise ValueError("item_ids must be distinct")
        if existing is not None and len(np.intersect1d(ids, existing)):
            raise ValueError(f"item ids already in the index: {np.intersect1d(ids, existing)[:5].tolist()}; remove them first")
        return ids


def check_facts(facts: dict[str, Any], expect: dict[str, Any] | None, path: str | Path) -> None:
    """Raise :class:`ArtifactError` unless the manifest ``facts`` hold every value of ``expect``."""
    for key, value in (expect or {}).items():
        if facts.get(key) != value:
            raise ArtifactError(f"{path} was built for {key}={facts.get(key)!r}, expected {value!r}: "
                                "an index from another model or data")


def split_exclude(exclude: object, n: int) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """(ids excluded for every query, per-query id arrays or None)."""
    if exclude is None:
        return np.zeros(0, np.int64), None
    if sp.issparse(exclude):
        matrix = sp.csr_matrix(exclude)
        if matrix.shape[0] != n:
            raise ValueError(f"exclude has {matrix.shape[0]} rows for {n} queries")
        rows = [matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].astype(np.int64) for r in range(n)]
        return np.zeros(0, np.int64), rows
    if isinstance(exclude, list) and exclude and not np.isscalar(exclude[0]):
        if len(exclude) != n:
            raise ValueError(f"exclude has {len(exclude)} rows for {n} queries")
        return np.zeros(0, np.int64), [np.asarray(r, dtype=np.int64).reshape(-1) for r in exclude]
    return np.unique(np.asarray(exclude, dtype=np.int64).reshape(-1)), None
