"""Ranked items with external ids: what the :class:`~ecomrec.engine.Engine` returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from ecomrec.candidates import Candidates

#: Plain-language name of each feature group, for "why was this recommended".
REASONS = {
    "own": "bought it before",
    "als": "people with similar baskets bought it",
    "als_new": "people with similar baskets bought it",
    "itemknn": "often bought with your items",
    "bi_encoder": "similar to what you bought (text)",
    "text_score": "BERT reads it as a match for your history",
    "popularity": "popular lately",
    "item_buyers": "popular item",
    "user": "your activity",
    "fused": "ranked high by the candidate stage",
    "n_sources": "found by several sources",
}

#: Feature groups that are candidate sources: a reason only where that source found the item.
SOURCES = ("own", "als", "als_new", "itemknn", "bi_encoder", "popularity")


@dataclasses.dataclass
class Results:
    """Ranked items per query (a user, a history or a search text), best first.

    Attributes
    ----------
    queries
        One label per row: the user id, ``"history #i"`` or the search text.
    item_ids
        object [n, k] external item ids; ``None`` pads short rows.
    titles
        object [n, k] item texts (``None`` for padding).
    scores
        float32 [n, k], non-increasing per row: purchase probabilities after
        :meth:`Engine.recommend`, fused or similarity scores otherwise; ``-inf`` pads.
    candidates
        The same list with dense ids and every per-source column (ranks, scores, ``p_purchase``,
        ``why:<feature>`` shares of the log-odds).
    """

    queries: list[str]
    item_ids: np.ndarray
    titles: np.ndarray
    scores: np.ndarray
    candidates: Candidates

    @classmethod
    def of(cls, queries: list[str], found: Candidates, item_ids: np.ndarray, item_texts: list[str]) -> Results:
        """Map ``found`` (dense ids) through ``item_ids`` / ``item_texts`` (indexed by dense id)."""
        valid = found.item_ids >= 0
        ids = np.full(found.item_ids.shape, None, dtype=object)
        titles = np.full(found.item_ids.shape, None, dtype=object)
        ids[valid] = np.asarray(item_ids, dtype=object)[found.item_ids[valid]]
        titles[valid] = np.asarray(item_texts, dtype=object)[found.item_ids[valid]]
        return cls(list(queries), ids, titles, found.scores, found)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, rows: slice | list[int] | np.ndarray) -> Results:
        """The results of some queries (a slice, or an index list / array)."""
        index = np.arange(len(self.queries))[rows]
        return Results([self.queries[i] for i in np.atleast_1d(index)], self.item_ids[rows], self.titles[rows],
                       self.scores[rows], self.candidates[rows])

    def found_by(self, row: int, col: int) -> dict[str, int]:
        """Sources that retrieved the item, with the rank each gave it."""
        found = {name[: -len("_rank")]: int(values[row, col]) for name, values in self.candidates.sources.items()
                 if name.endswith("_rank") and name != "fused_rank" and not np.isnan(values[row, col])}
        return dict(sorted(found.items(), key=lambda kv: (kv[1], kv[0])))

    def reasons(self, row: int, col: int, top: int = 3) -> list[str]:
        """The feature groups that raised this item's purchase probability most (empty before reranking)."""
        shares: dict[str, float] = {}
        found = self.found_by(row, col)
        for name, values in self.candidates.sources.items():
            if name.startswith("why:") and np.isfinite(values[row, col]):
                group = _group(name[len("why:") :])
                if group in SOURCES and group not in found:
                    continue  # "not found by X" may raise the odds, but it is no reason to show
                shares[group] = shares.get(group, 0.0) + float(values[row, col])
        ranked = sorted(((v, g) for g, v in shares.items() if v > 0), reverse=True)[:top]
        return [REASONS.get(g, g) for _, g in ranked]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per (query, item), in rank order; padding left out."""
        records = []
        p = self.candidates.sources.get("p_purchase")
        for row, query in enumerate(self.queries):
            for col in range(self.item_ids.shape[1]):
                if self.item_ids[row, col] is None:
                    continue
                record: dict[str, Any] = {"query": query, "rank": col + 1, "item_id": str(self.item_ids[row, col]),
                                          "title": str(self.titles[row, col]), "score": round(float(self.scores[row, col]), 6),
                                          "found_by": self.found_by(row, col)}
                if p is not None and np.isfinite(p[row, col]):
                    record["p_purchase"] = round(float(p[row, col]), 4)
                    record["why"] = self.reasons(row, col)
                records.append(record)
        return records

    def to_frame(self) -> pd.DataFrame:
        """:meth:`to_records` as a DataFrame (``found_by`` and ``why`` as short strings)."""
        frame = pd.DataFrame.from_records(self.to_records())
        if "found_by" in frame:
            frame["found_by"] = frame["found_by"].map(lambda d: ", ".join(f"{s}#{r}" for s, r in d.items()))
        if "why" in frame:
            frame["why"] = frame["why"].map(lambda w: "; ".join(w) if isinstance(w, list) else "")
        return frame


def _group(feature: str) -> str:
    """Feature name → its group in :data:`REASONS` (``als_new_rank_log`` → ``als_new``)."""
    for prefix in sorted(REASONS, key=len, reverse=True):
        if feature == prefix or feature.startswith(prefix + "_"):
            return prefix
    return feature
