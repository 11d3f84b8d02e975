"""What a shop lists now: the input of every catalog change (``Engine.rebuild_index``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomrec.data.text import clean_text

#: The columns a catalog table needs.
CATALOG_COLUMNS = ("item_id", "text")


@dataclasses.dataclass(frozen=True)
class Catalog:
    """The listed items, their titles and optional categories.

    Attributes
    ----------
    item_ids
        External ids, distinct.
    texts
        Each item's title, whitespace cleaned (an empty title reads as the item's id).
    categories
        Each item's category name, or None to keep the ones known.
    encoded
        Title vectors encoded already (e.g. by Ray workers), by model fingerprint
        (``BiEncoderRetriever.model_hash_``) and title: a retriever of that model takes them.

    Examples
    --------
    >>> Catalog.of(["a1", "b2"], ["  Red  mug ", ""]).texts
    ('Red mug', 'b2')
    """

    item_ids: tuple[str, ...]
    texts: tuple[str, ...]
    categories: tuple[str, ...] | None = None
    encoded: Mapping[str, Mapping[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, item_ids: Sequence[object], texts: Sequence[object], categories: Sequence[object] | None = None) -> Catalog:
        ids = tuple(str(i) for i in item_ids)
        if len(ids) != len(texts) or (categories is not None and len(categories) != len(ids)):
            raise ValueError(f"{len(ids)} item ids, {len(texts)} texts{'' if categories is None else f', {len(categories)} categories'}: "
                             "give one of each per item")
        if len(set(ids)) != len(ids):
            raise ValueError("a catalog's item ids must be distinct")
        cleaned = tuple(clean_text(t) or i for i, t in zip(ids, texts))
        return cls(ids, cleaned, None if categories is None else tuple(clean_text(c) for c in categories))

    @classmethod
    def from_frame(cls, frame: Any) -> Catalog:
        """From a DataFrame with columns ``item_id``, ``text`` and optionally ``category``."""
        if missing := sorted(set(CATALOG_COLUMNS) - set(frame.columns)):
            raise ValueError(f"catalog lacks column(s) {missing} (needs item_id, text)")
        categories = frame["category"].fillna("").astype(str).tolist() if "category" in frame.columns else None
        return cls.of(frame["item_id"].astype(str).tolist(), frame["text"].fillna("").astype(str).tolist(), categories)

    def __len__(self) -> int:
        return len(self.item_ids)

    def with_encoded(self, model: str, vectors: Mapping[str, np.ndarray]) -> Catalog:
        """This catalog carrying ``vectors`` (title → vector) of the model fingerprinted ``model``."""
        return dataclasses.replace(self, encoded={**self.encoded, model: dict(vectors)})
