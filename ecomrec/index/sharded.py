"""Items partitioned over several FAISS indexes that share one trained structure.

Trained once (IVF centroids, PQ codebooks), every shard starts from a copy of that empty index, so
a query probes the same lists in every shard as in one index over all items and the merged top k
is the single index's. Items go to shard ``shard_of(item_id, S)`` (a fixed hash of the id), so a
rebuild (``build(..., previous=)``) keeps the trained structure, reuses the shards whose items and
vectors are unchanged (their saved files come out byte-identical) and builds only the others, here
or wherever :func:`shard_builds` says (Ray tasks: ``ecomrec.scale``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from ecomrec.artifacts import MANIFEST, manifest_config, open_artifact, write_artifact
from ecomrec.candidates import Candidates
from ecomrec.config import IndexConfig
from ecomrec.data.idmap import ON_UNKNOWN, IdMap
from ecomrec.exceptions import ArtifactError, NotFittedError, UnknownIdError
from ecomrec.index.vector_index import Exclude, VectorIndex, check_facts, split_exclude

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: ids spread evenly whatever their pattern
#: Subfolder of a saved sharded index with its trained, empty structure (what rebuilds reuse).
TEMPLATE = "template"

#: Builds the shards of one build: (trained template, [(vectors, ids) of each shard]) -> shards.
ShardBuilder = Callable[[VectorIndex, list[tuple[np.ndarray, np.ndarray]]], list[VectorIndex]]
_shard_builder: ContextVar[ShardBuilder | None] = ContextVar("ecomrec_shard_builder", default=None)


def build_shards_here(template: VectorIndex, parts: list[tuple[np.ndarray, np.ndarray]]) -> list[VectorIndex]:
    """The default :data:`ShardBuilder`: each shard in this process, one after another."""
    return [VectorIndex(template.config).build(vectors, ids, trained=template) for vectors, ids in parts]


@contextlib.contextmanager
def shard_builds(builder: ShardBuilder) -> Iterator[None]:
    """Every :class:`ShardedIndex` built in this block builds its shards with ``builder`` (e.g.
    parallel Ray tasks, :func:`ecomrec.scale.ray_shard_builder`) instead of :func:`build_shards_here`."""
    token = _shard_builder.set(builder)
    try:
        yield
    finally:
        _shard_builder.reset(token)


def shard_of(item_ids: np.ndarray | list[int], shards: int) -> np.ndarray:
    """int [n]: the shard of each item id (a fixed hash mod ``shards``; the same on every machine)."""
    ids = np.asarray(item_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        return ((ids * _GOLDEN) >> np.uint64(32)) % np.uint64(shards)


class ShardedIndex:
    """:class:`VectorIndex` shards behind the same interface (``search`` merges exactly ``k``
    results by score then id).

    Examples
    --------
    >>> import numpy as np
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index = ShardedIndex(kind="flat", shards=2).build(vectors, item_ids=[10, 11, 12, 13])
    >>> index.search(vectors[[2]], k=2, exclude=[12]).item_ids.tolist()
    [[10, 11]]
    """

    def __init__(self, config: IndexConfig | None = None, *, shards: int | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError(f"ShardedIndex: pass a config or keywords ({sorted(kwargs)}), not both")
        self.config = config if config is not None else IndexConfig(**kwargs)
        shards = self.config.shards if shards is None else shards
        if not isinstance(shards, (int, np.integer)) or shards < 1:
            raise ValueError(f"shards must be a positive integer, got {shards!r}")
        self.n_shards = int(shards)
        self.shards_: list[VectorIndex] = []
        #: The trained, empty structure every shard was built from (None: shards built elsewhere).
        self.template_: VectorIndex | None = None
        #: Per shard, a digest of the template and its items' ids and vectors (None: unknown).
        self.digests_: list[str | None] = []
        #: Shards the last build took over unchanged from ``previous``.
        self.reused_: list[int] = []
        self.validated_recall_: float | None = None

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

    @property
    def nlist_(self) -> int:
        return self.shards_[0].nlist_ if self.shards_ else 0

    @property
    def nprobe_(self) -> int:
        return self.shards_[0].nprobe_ if self.shards_ else 0

    @property
    def ef_search_(self) -> int:
        return self.shards_[0].ef_search_ if self.shards_ else self.config.ef_search

    def __repr__(self) -> str:
        if not self.is_built:
            return "ShardedIndex(not built)"
        sizes = ", ".join(f"{shard.n_items:,}" for shard in self.shards_)
        return f"ShardedIndex({self.kind_}, {self.n_shards} shards of {sizes} items x {self.dim_})"

    # ------------------------------------------------------------------ build
    def build(self, vectors: np.ndarray, item_ids: np.ndarray | list[int] | None = None, *, previous: ShardedIndex | None = None,
              trained: VectorIndex | None = None) -> ShardedIndex:
        """Train one structure on ``vectors``, then build every shard from a copy of it.

        ``trained``: an empty index from :meth:`VectorIndex.train` to share instead of training one.
        ``previous``: the index this one replaces. With the same config and shard count and a
        trained structure that fits ``vectors``, that structure is kept and every shard whose ids
        and vectors are unchanged is taken over (``reused_``: shallow copies; ``previous`` is untouched).
        """
        vectors = VectorIndex._check_vectors(vectors, dim=None)
        ids = VectorIndex._check_new_ids(np.arange(len(vectors)) if item_ids is None else item_ids, len(vectors), existing=None)
        template = trained if trained is not None else self._reusable_template(previous, vectors)
        if template is None:
            template = VectorIndex(self.config).train(vectors)
        part = shard_of(ids, self.n_shards)
        groups = [np.flatnonzero(part == s) for s in range(self.n_shards)]
        groups = [g[np.argsort(ids[g], kind="stable")] for g in groups]  # id order: the same items, the same shard
        base = _index_digest(template)
        digests: list[str | None] = [_shard_digest(base, ids[g], vectors[g]) for g in groups]
        old = previous.digests_ if template is getattr(previous, "template_", None) else []
        reused = [s for s in range(self.n_shards) if s < len(old) and old[s] is not None and old[s] == digests[s]]
        todo = [s for s in range(self.n_shards) if s not in reused]
        built = dict(zip(todo, (_shard_builder.get() or build_shards_here)(template, [(vectors[groups[s]], ids[groups[s]]) for s in todo])))
        self.shards_ = [built[s] if s in built else _reused(previous.shards_[s], template) for s in range(self.n_shards)]  # type: ignore[union-attr]
        self.template_, self.digests_, self.reused_ = template, digests, reused
        return self

    def _reusable_template(self, previous: ShardedIndex | None, vectors: np.ndarray) -> VectorIndex | None:
        """``previous``'s trained structure when it fits ``vectors`` and this config, else None."""
        template = getattr(previous, "template_", None)
        if template is None or previous.n_shards != self.n_shards or previous.config != self.config:  # type: ignore[union-attr]
            return None
        if template.dim_ != vectors.shape[1] or template.kind_ != VectorIndex(self.config)._resolve_kind(*vectors.shape):
            return None
        return template

    @classmethod
    def from_shards(cls, shards: list[VectorIndex]) -> ShardedIndex:
        """Wrap indexes built elsewhere, each holding the items :func:`shard_of` assigns to its
        position (they search like one index only if built from one ``trained=`` template)."""
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
    def search(self, queries: np.ndarray, k: int, *, exclude: Exclude = None,
               allow: np.ndarray | list[int] | None = None) -> Candidates:
        """Top ``k`` items by inner product over every shard (see :meth:`VectorIndex.search`); a
        merged row left short of ``k`` qualifying items is searched again over every item."""
        self._check_built()
        queries = VectorIndex._check_vectors(queries, dim=self.dim_)
        merged = merge([shard.search(queries, k, exclude=exclude, allow=allow, exhaustive="never") for shard in self.shards_], k)
        qualifying = sum(shard.qualifying(len(queries), exclude=exclude, allow=allow) for shard in self.shards_)
        short = np.flatnonzero((merged.item_ids >= 0).sum(axis=1) < np.minimum(k, qualifying))
        if len(short):
            _, per_row = split_exclude(exclude, len(queries))
            rows_exclude = exclude if per_row is None else [per_row[r] for r in short]  # per-query exclusions follow their rows
            again = merge([shard.search(queries[short], k, exclude=rows_exclude, allow=allow, exhaustive="always")
                           for shard in self.shards_], k)
            merged.item_ids[short], merged.scores[short] = again.item_ids, again.scores
        return merged

    def item_scores(self, queries: np.ndarray, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """float32 [n]: each item's score for its query from the shard holding it (see
        :meth:`VectorIndex.item_scores`); NaN where no shard holds the item."""
        self._check_built()
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        queries = VectorIndex._check_vectors(queries, dim=self.dim_)
        out = np.full(len(ids), np.nan, dtype=np.float32)
        part = shard_of(np.maximum(ids, 0), self.n_shards)
        for s, shard in enumerate(self.shards_):
            rows = np.flatnonzero(part == s)
            if len(rows):
                out[rows] = shard.item_scores(queries[rows], ids[rows])
        return out

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
                self._changing(s).add(vectors[part == s], ids[part == s])

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
        return sum(self._changing(s).remove(ids[part == s], on_unknown=on_unknown) for s in range(self.n_shards) if (part == s).any())

    def _changing(self, position: int) -> VectorIndex:
        """Shard ``position``, about to change: its digest is dropped, and a reused shard gets its own FAISS data."""
        if position < len(self.digests_):
            self.digests_[position] = None
        shard = self.shards_[position]
        if getattr(shard, "_shared", False):
            shard = self.shards_[position] = copy.deepcopy(shard)  # VectorIndex's own state: FAISS serialization
            shard._shared = False
        return shard

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, items: IdMap | None = None, facts: dict[str, Any] | None = None) -> Path:
        """One artifact: a ``shard-NNN/`` folder per shard (each a saved :class:`VectorIndex`),
        the trained ``template/`` and optionally ``items.json``."""
        self._check_built()

        def write(folder: Path) -> None:
            if items is not None:
                items.save(folder / "items.json")
            for s, shard in enumerate(self.shards_):
                shard.save(folder / _shard_folder(s))
            if self.template_ is not None:
                self.template_.save(folder / TEMPLATE)

        info = {"kind": self.kind_, "dim": self.dim_, "n_items": self.n_items, "shards": self.n_shards,
                "shard_items": [shard.n_items for shard in self.shards_],
                "shard_digests": list(self.digests_) if self.template_ is not None else None, **(facts or {})}
        return write_artifact(path, "ShardedIndex", self.config.to_dict(), info, write)

    @classmethod
    def load(cls, path: str | Path, *, expect: dict[str, Any] | None = None, device: str | None = None) -> ShardedIndex:
        with open_artifact(path, "ShardedIndex") as (folder, manifest):
            facts = manifest["facts"]
            check_facts(facts, expect, path)
            config = manifest_config(manifest, IndexConfig, folder)
            out = cls(config, shards=int(facts["shards"]))
            out.shards_ = [VectorIndex.load(folder / _shard_folder(s), device=device) for s in range(out.n_shards)]
            if (folder / TEMPLATE).is_dir() and facts["shard_digests"] is not None:
                out.template_ = VectorIndex.load(folder / TEMPLATE, device="cpu")
                out.digests_ = list(facts["shard_digests"])
        if [shard.n_items for shard in out.shards_] != facts["shard_items"]:
            raise ArtifactError(f"{path}: shard item counts disagree with the manifest")
        return out

    def _check_built(self) -> None:
        if not self.is_built:
            raise NotFittedError("ShardedIndex (call build(...) or load(...))")


def reused_shards(index: VectorIndex | ShardedIndex) -> list[int]:
    """The shards a sharded index's build took over unchanged (none for one index)."""
    return list(index.reused_) if isinstance(index, ShardedIndex) else []


def new_index(config: IndexConfig) -> VectorIndex | ShardedIndex:
    """An unbuilt index for ``config``: a :class:`ShardedIndex` when ``config.shards`` > 1, else a :class:`VectorIndex`."""
    return ShardedIndex(config, shards=config.shards) if config.shards > 1 else VectorIndex(config)


def load_index(path: str | Path, *, expect: dict[str, Any] | None = None, device: str | None = None) -> VectorIndex | ShardedIndex:
    """Read a saved :class:`VectorIndex` or :class:`ShardedIndex`, whichever ``path`` holds."""
    try:
        kind = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None  # VectorIndex.load names what is wrong
    loader = ShardedIndex if kind == "ShardedIndex" else VectorIndex
    return loader.load(path, expect=expect, device=device)


def _index_digest(index: VectorIndex) -> str:
    """A digest of an index's FAISS data (of a template: its trained structure)."""
    import faiss

    digest = hashlib.sha256(np.asarray(faiss.serialize_index(index._cpu)).tobytes())
    if index._refine is not None:
        digest.update(np.asarray(faiss.serialize_index(index._refine)).tobytes())
    return digest.hexdigest()


def _shard_digest(base: str, ids: np.ndarray, vectors: np.ndarray) -> str:
    """What a shard built from the template of digest ``base`` over these items would hold."""
    digest = hashlib.sha256(base.encode())
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _reused(shard: VectorIndex, template: VectorIndex) -> VectorIndex:
    """A shard taken over by a rebuild: a shallow copy (FAISS data shared) at the template's operating point."""
    out = copy.copy(shard)
    out.nprobe_, out.ef_search_, out.validated_recall_ = template.nprobe_, template.ef_search_, None
    out._shared = True
    if shard._gpu is not None:
        out._to_device()
    return out


def merge(parts: list[Candidates], k: int) -> Candidates:
    """The top ``k`` of several result sets for the same queries: by score, ties by lower id, padding (-1) last."""
    ids = np.concatenate([p.item_ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    padding = ids < 0
    order = np.lexsort((np.where(padding, np.iinfo(np.int64).max, ids), np.where(padding, np.inf, -scores)), axis=-1)[:, :k]
    return Candidates(np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1))


def _shard_folder(position: int) -> str:
    return f"shard-{position:03d}"
