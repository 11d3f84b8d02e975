"""Items partitioned over several FAISS indexes that share one trained structure.

FAISS's recipe for catalogs beyond one index: train once (IVF centroids, PQ codebooks) on a sample,
give every shard a copy of that trained, empty index, add each shard's items, search every shard
with the same query and filters and merge. With a shared quantizer a query probes the same lists
in every shard as in one index over all items, so the merged top k is the single index's (faiss's
own tests/test_meta_index.py asserts the same of its ``IndexShards``). Shards trained apart
cluster differently and return other items.

With ``IndexConfig.refine`` each shard re-scores its own shortlist of ``refine × k``, so the
merged list re-scores a superset of what one index would: at least as close to exact search.

Items go to shard ``shard_of(item_id, S)`` (a fixed hash of the id), so a catalog change touches
only the shards of the items that changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecomrec.artifacts import manifest_config, open_artifact, write_artifact
from ecomrec.candidates import Candidates
from ecomrec.config import IndexConfig
from ecomrec.data.idmap import ON_UNKNOWN
from ecomrec.exceptions import ArtifactError, NotFittedError, UnknownIdError
from ecomrec.index.vector_index import Exclude, VectorIndex, split_exclude

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: ids spread evenly whatever their pattern


def shard_of(item_ids: np.ndarray | list[int], shards: int) -> np.ndarray:
    """int [n]: the shard of each item id (a fixed hash mod ``shards``; the same on every machine)."""
    ids = np.asarray(item_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        return ((ids * _GOLDEN) >> np.uint64(32)) % np.uint64(shards)


class ShardedIndex:
    """:class:`VectorIndex` shards behind the same interface: ``build``, ``search`` (with the same
    ``exclude`` / ``allow`` filters, exactly ``k`` merged results by score then id), ``add``,
    ``remove``, ``save`` / ``load``.

    Examples
    --------
    >>> import numpy as np
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index = ShardedIndex(kind="flat", shards=2).build(vectors, item_ids=[10, 11, 12, 13])
    >>> index.search(vectors[[2]], k=2, exclude=[12]).item_ids.tolist()
    [[10, 11]]
    """

    def __init__(self, config: IndexConfig | None = None, *, shards: int = 2, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError(f"ShardedIndex: pass a config or keywords ({sorted(kwargs)}), not both")
        if not isinstance(shards, (int, np.integer)) or shards < 1:
            raise ValueError(f"shards must be a positive integer, got {shards!r}")
        self.config = config if config is not None else IndexConfig(**kwargs)
        self.n_shards = int(shards)
        self.shards_: list[VectorIndex] = []

    # ------------------------------------------------------------------ properties
    @property
    def is_built(self) -> bool:
        return bool(self.shards_)

    @property
    def n_items(self) -> int:
        return sum(shard.n_items for shard in self.shards_)

    @property
    def item_ids(self) -> np.ndarray:
        """Sorted int64 ids of the searchable items."""
        return np.sort(np.concatenate([shard.item_ids for shard in self.shards_])) if self.shards_ else np.zeros(0, np.int64)

    @property
    def kind_(self) -> str | None:
        return self.shards_[0].kind_ if self.shards_ else None

    @property
    def dim_(self) -> int:
        return self.shards_[0].dim_ if self.shards_ else 0

    def __repr__(self) -> str:
        if not self.is_built:
            return "ShardedIndex(not built)"
        sizes = ", ".join(f"{shard.n_items:,}" for shard in self.shards_)
        return f"ShardedIndex({self.kind_}, {self.n_shards} shards of {sizes} items x {self.dim_})"

    # ------------------------------------------------------------------ build
    def build(self, vectors: np.ndarray, item_ids: np.ndarray | list[int] | None = None) -> ShardedIndex:
        """Train one structure on ``vectors`` (a sample of them, as :class:`VectorIndex` does),
        then build every shard from a copy of it with its share of the items."""
        vectors = VectorIndex._check_vectors(vectors, dim=None)
        ids = VectorIndex._check_new_ids(np.arange(len(vectors)) if item_ids is None else item_ids, len(vectors), existing=None)
        template = VectorIndex(self.config).train(vectors)
        part = shard_of(ids, self.n_shards)
        self.shards_ = [VectorIndex(self.config).build(vectors[part == s], ids[part == s], trained=template)
                        for s in range(self.n_shards)]
        return self

    @classmethod
    def from_shards(cls, shards: list[VectorIndex]) -> ShardedIndex:
        """Wrap indexes built elsewhere (e.g. by parallel workers), each holding the items
        :func:`shard_of` assigns to its position. Only shards built from one trained template
        (``VectorIndex.build(..., trained=)``) search like one index."""
        if not shards or not all(shard.is_built for shard in shards):
            raise ValueError("from_shards needs built VectorIndex shards")
        if len({(shard.kind_, shard.dim_) for shard in shards}) != 1:
            raise ValueError("shards differ in kind or dimension")
        for position, shard in enumerate(shards):
            misplaced = shard.item_ids[shard_of(shard.item_ids, len(shards)) != position]
            if len(misplaced):
                raise ValueError(f"shard {position} holds items of other shards, e.g. {misplaced[:5].tolist()}")
        out = cls(shards[0].config, shards=len(shards))
        out.shards_ = list(shards)
        return out

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Exclude = None,
        allow: np.ndarray | list[int] | None = None,
    ) -> Candidates:
        """Top ``k`` items by inner product over every shard (see :meth:`VectorIndex.search`).

        Like one index, a row the approximate search leaves short of ``k`` qualifying items is
        searched again over every item; that is decided on the merged row (a shard alone is
        short more often than the whole), so the results are the single index's."""
        self._check_built()
        queries = VectorIndex._check_vectors(queries, dim=self.dim_)
        merged = merge([shard.search(queries, k, exclude=exclude, allow=allow, exhaustive="never") for shard in self.shards_], k)
        qualifying = sum(shard.qualifying(len(queries), exclude=exclude, allow=allow) for shard in self.shards_)
        short = np.flatnonzero((merged.item_ids >= 0).sum(axis=1) < np.minimum(k, qualifying))
        if len(short):
            rows_exclude = _rows(exclude, len(queries), short)
            again = merge([shard.search(queries[short], k, exclude=rows_exclude, allow=allow, exhaustive="always")
                           for shard in self.shards_], k)
            merged.item_ids[short], merged.scores[short] = again.item_ids, again.scores
        return merged

    def set_search(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        for shard in self.shards_:
            shard.set_search(nprobe=nprobe, ef_search=ef_search)

    # ------------------------------------------------------------------ updates
    def add(self, vectors: np.ndarray, item_ids: np.ndarray | list[int]) -> None:
        """Add new items, each to its shard."""
        self._check_built()
        vectors = VectorIndex._check_vectors(vectors, dim=self.dim_)
        ids = VectorIndex._check_new_ids(item_ids, len(vectors), existing=self.item_ids)
        part = shard_of(ids, self.n_shards)
        for s, shard in enumerate(self.shards_):
            if (part == s).any():
                shard.add(vectors[part == s], ids[part == s])

    def remove(self, item_ids: np.ndarray | list[int], on_unknown: str = "raise") -> int:
        """Remove items from their shards; returns how many were removed."""
        self._check_built()
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        ids = np.unique(np.asarray(item_ids, dtype=np.int64))
        unknown = ids[~np.isin(ids, self.item_ids)]
        if len(unknown) and on_unknown == "raise":
            raise UnknownIdError(f"{len(unknown)} id(s) not in the index, e.g. {unknown[:5].tolist()}")
        part = shard_of(ids, self.n_shards)
        return sum(shard.remove(ids[part == s], on_unknown=on_unknown) for s, shard in enumerate(self.shards_) if (part == s).any())

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, facts: dict[str, Any] | None = None) -> Path:
        """One artifact: a ``shard-NNN/`` folder per shard (each a saved :class:`VectorIndex`);
        the manifest's checksums cover every shard's files."""
        self._check_built()

        def write(folder: Path) -> None:
            for s, shard in enumerate(self.shards_):
                shard.save(folder / _shard_folder(s))

        info = {"kind": self.kind_, "dim": self.dim_, "n_items": self.n_items, "shards": self.n_shards,
                "shard_items": [shard.n_items for shard in self.shards_], **(facts or {})}
        return write_artifact(path, "ShardedIndex", self.config.to_dict(), info, write)

    @classmethod
    def load(cls, path: str | Path, *, expect: dict[str, Any] | None = None, device: str | None = None) -> ShardedIndex:
        with open_artifact(path, "ShardedIndex") as (folder, manifest):
            facts = manifest["facts"]
            for key, value in (expect or {}).items():
                if facts.get(key) != value:
                    raise ArtifactError(f"{path} was built for {key}={facts.get(key)!r}, expected {value!r}")
            config = manifest_config(manifest, IndexConfig, folder)
            out = cls(config, shards=int(facts["shards"]))
            out.shards_ = [VectorIndex.load(folder / _shard_folder(s), device=device) for s in range(out.n_shards)]
        if [shard.n_items for shard in out.shards_] != facts["shard_items"]:
            raise ArtifactError(f"{path}: shard item counts disagree with the manifest")
        return out

    def _check_built(self) -> None:
        if not self.is_built:
            raise NotFittedError("ShardedIndex (call build(...) or load(...))")


def merge(parts: list[Candidates], k: int) -> Candidates:
    """The top ``k`` of several result sets for the same queries: by score, ties by lower id
    (as exact top-k orders them); padding (-1) last."""
    ids = np.concatenate([p.item_ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    padding = ids < 0
    order = np.lexsort((np.where(padding, np.iinfo(np.int64).max, ids), np.where(padding, np.inf, -scores)), axis=-1)[:, :k]
    return Candidates(np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1))


def _rows(exclude: Any, n: int, rows: np.ndarray) -> Any:
    """``exclude`` for a subset of the ``n`` queries (per-query exclusions follow their rows)."""
    _, per_row = split_exclude(exclude, n)
    return exclude if per_row is None else [per_row[r] for r in rows]


def _shard_folder(position: int) -> str:
    return f"shard-{position:03d}"
