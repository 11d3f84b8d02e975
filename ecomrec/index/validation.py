"""Checks a freshly built index must pass before it replaces the one in service."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from ecomrec.config import IndexConfig
from ecomrec.exceptions import ArtifactError, IndexRecallError, IndexRecallWarning
from ecomrec.index.sharded import ShardedIndex, new_index
from ecomrec.index.vector_index import COMPRESSED_KINDS, IVF_KINDS, VectorIndex
from ecomrec.metrics import hits, recall

#: Least recall@10 against exact search that an approximate index must reach to be swapped in.
MIN_APPROX_RECALL = 0.8
#: A flat index is exact: it must find (up to float rounding and ties) every true neighbour.
MIN_EXACT_RECALL = 0.999
#: How far below 1 an item's score for a fresh encoding of its own (unit) vector may be, by what
#: the index keeps: exact vectors, float16 refine copies, 8-bit or PQ codes (PQ: gross misalignment only).
SERVED_SCORE_SLACK = {"exact": 1e-4, "refined": 1e-3, "ivf_sq8": 5e-3, "ivf_pq": 0.2}


def served_score_floor(index: VectorIndex | ShardedIndex) -> float:
    """The least score :meth:`VectorIndex.item_scores` may give an item for a fresh unit
    encoding of what it should hold (see :data:`SERVED_SCORE_SLACK`)."""
    if index.kind_ not in COMPRESSED_KINDS:
        return 1.0 - SERVED_SCORE_SLACK["exact"]
    return 1.0 - SERVED_SCORE_SLACK["refined" if index.config.refine else str(index.kind_)]


def recall_against_exact(index: VectorIndex | ShardedIndex, vectors: np.ndarray, item_ids: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Recall@k against brute force, an item tied with the true ``k``-th best score counting as found."""
    ids = np.asarray(item_ids, dtype=np.int64)
    exact = np.asarray(queries, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    kth = np.partition(exact, -k, axis=1)[:, -k]
    rows, cols = np.nonzero(exact >= kth[:, None] - 1e-4 * (np.abs(kth[:, None]) + 1.0))  # the true top k, ties included
    top = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, ids[cols])), shape=(len(exact), int(ids.max()) + 1))
    found = index.search(np.asarray(queries, dtype=np.float32), k).item_ids
    return float(recall(hits(found, top), np.full(len(found), k), k).mean())


def check_index(index: VectorIndex | ShardedIndex, vectors: np.ndarray, item_ids: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """The recall@k against exact search of ``index`` for ``queries``; raises :class:`ArtifactError`
    unless it holds exactly ``item_ids`` and reaches ``MIN_EXACT_RECALL`` (flat) or ``MIN_APPROX_RECALL``."""
    expected = np.sort(np.asarray(item_ids, dtype=np.int64))
    if index.n_items != len(expected) or not np.array_equal(index.item_ids, expected):
        raise ArtifactError(f"new index holds {index.n_items} items, expected {len(expected)}: not swapped in")
    if not len(queries):
        return 1.0
    k = min(k, len(expected))
    recall = recall_against_exact(index, vectors, item_ids, queries, k)
    floor = MIN_EXACT_RECALL if index.kind_ == "flat" else MIN_APPROX_RECALL
    if recall < floor:
        raise IndexRecallError(f"new {index.kind_} index reaches recall@{k} {recall:.3f} < {floor} against exact search: not swapped in")
    return recall


def build_checked(
    config: IndexConfig, vectors: np.ndarray, item_ids: np.ndarray, queries: np.ndarray, k: int = 10, *,
    previous: VectorIndex | ShardedIndex | None = None,
) -> VectorIndex | ShardedIndex:
    """An index over ``vectors`` (see :func:`new_index`) that passed :func:`check_index` for
    ``queries``; a sharded one keeps what it can of ``previous`` (the index being replaced).

    An approximate index that falls short is not an error: an IVF index probes four times as many
    lists until it passes or probes them all, then gives way to exact search, each step with an
    :class:`IndexRecallWarning`. Only a wrong item set raises.
    """
    index = _build(config, vectors, item_ids, previous)
    while True:
        try:
            index.validated_recall_ = check_index(index, vectors, item_ids, queries, k)
            return index
        except IndexRecallError as error:
            if index.kind_ == "flat":
                raise
            shortfall = str(error).replace(": not swapped in", "")
            if index.kind_ in IVF_KINDS and index.nprobe_ < index.nlist_:
                wider = min(index.nlist_, index.nprobe_ * 4)
                warnings.warn(f"{shortfall}; probing {wider} of {index.nlist_} lists instead of {index.nprobe_}", IndexRecallWarning, stacklevel=2)
                index.set_search(nprobe=wider)
                continue
            warnings.warn(f"{shortfall}; searching exactly instead", IndexRecallWarning, stacklevel=2)
            index = _build(config.replace(kind="flat"), vectors, item_ids, previous)


def _build(config: IndexConfig, vectors: np.ndarray, item_ids: np.ndarray, previous: Any) -> VectorIndex | ShardedIndex:
    index = new_index(config)
    if isinstance(index, ShardedIndex):
        return index.build(vectors, item_ids, previous=previous if isinstance(previous, ShardedIndex) else None)
    return index.build(vectors, item_ids=item_ids)
