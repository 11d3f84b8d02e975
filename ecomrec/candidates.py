"""The one result type of retrieval and reranking."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Candidates:
    """Top-k items per query. ``sources``: per-source float32 [n_queries, k] arrays aligned with
    ``item_ids`` (e.g. each retriever's score for the item, NaN where it did not score it);
    ``timings``: seconds the call that made this result spent in each of its stages (e.g.
    ``search:als``, ``fusion``, ``rerank``), carried by the answer so a read writes nothing into the retriever.
    """

    item_ids: np.ndarray  # int64 [n_queries, k], dense item indices, best first; short rows are padded with -1
    scores: np.ndarray  # float32 [n_queries, k], higher is better, non-increasing along each row; padding is -inf
    sources: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.item_ids.ndim != 2 or self.item_ids.shape != self.scores.shape:
            raise ValueError(f"item_ids {self.item_ids.shape} and scores {self.scores.shape} must be equal 2-D shapes")
        for name, values in self.sources.items():
            if np.shape(values) != self.item_ids.shape:
                raise ValueError(f"source {name!r} has shape {np.shape(values)}, expected {self.item_ids.shape}")

    @classmethod
    def empty(cls, n_queries: int, k: int) -> Candidates:
        """All-padding result."""
        return cls(np.full((n_queries, k), -1, np.int64), np.full((n_queries, k), -np.inf, np.float32))

    @property
    def n_queries(self) -> int:
        return self.item_ids.shape[0]

    @property
    def k(self) -> int:
        return self.item_ids.shape[1]

    def __len__(self) -> int:
        return self.n_queries

    def __getitem__(self, rows: slice | np.ndarray | list[int]) -> Candidates:
        """The rows selected (a slice, index array or boolean mask)."""
        return Candidates(self.item_ids[rows], self.scores[rows], {n: v[rows] for n, v in self.sources.items()}, dict(self.timings))

    def to_lists(self) -> list[list[int]]:
        """Each row's item indices with the padding removed."""
        return [row[row >= 0].tolist() for row in self.item_ids]

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """Stack results of the same k (e.g. batches) row-wise; a source some parts lack is NaN
        there; the timings of a stage add up."""
        if not parts:
            raise ValueError("nothing to concatenate")
        names = dict.fromkeys(n for p in parts for n in p.sources)

        def column(part: Candidates, name: str) -> np.ndarray:
            return part.sources[name] if name in part.sources else np.full(part.item_ids.shape, np.nan, np.float32)

        timings: dict[str, float] = {}
        for part in parts:
            for stage, seconds in part.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        return cls(np.concatenate([p.item_ids for p in parts]), np.concatenate([p.scores for p in parts]),
                   {n: np.concatenate([column(p, n) for p in parts]) for n in names}, timings)


def top_k(scores: np.ndarray, k: int) -> Candidates:
    """Best ``k`` columns of each row of ``scores`` (float [n, n_items]); -inf never qualifies. Ties
    go to the lower item index, so a row's result does not depend on the batch."""
    n, m = scores.shape
    if n == 0 or m == 0:
        return Candidates.empty(n, k)
    scores = np.asarray(scores, dtype=np.float32)
    take = min(k, m)
    if take < m:
        # argpartition may split a tie at the boundary arbitrarily: widen to the whole tie.
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        boundary = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        wide = max(take, int((scores >= boundary).sum(axis=1).max()))
        if wide < m:
            part = np.argpartition(-scores, wide - 1, axis=1)[:, :wide]
        else:
            part = np.broadcast_to(np.arange(m), (n, m))
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)[:, :take]
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(part_scores, order, axis=1)
    ids[~np.isfinite(best) & (best < 0)] = -1
    out = Candidates.empty(n, k)
    out.item_ids[:, :take], out.scores[:, :take] = ids, best
    out.scores[out.item_ids < 0] = -np.inf
    return out
