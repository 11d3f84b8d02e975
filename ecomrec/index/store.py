"""Rebuilding a saved model's index on disk: build, validate, swap atomically."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ecomrec.data.io import read_table
from ecomrec.exceptions import ArtifactError

logger = logging.getLogger(__name__)


def rebuild_model_index(
    model_path: str | Path,
    output: str | Path,
    *,
    catalog: str | Path | None = None,
    item_column: str = "item_id",
    kind: str | None = None,
) -> dict[str, Any]:
    """Index a saved ALS model's item factors for the current catalog and swap it in at ``output``.

    The new index is checked against exact search before anything is written; the write goes to
    a new version folder and ``output`` is re-pointed in one atomic rename, so a crash at any
    point leaves the previous index in place and loadable.

    Returns facts about the new index (kind, item count, recall against exact search, ...).
    """
    from ecomrec.retrieval.als import ALSRetriever

    start = time.perf_counter()
    model = ALSRetriever.load(model_path)
    if model.items_ is None:
        raise ArtifactError(f"{model_path} has no item id map (items.json); refit and save the model")
    items = None
    cold = 0
    if catalog is not None:
        listed = read_table(Path(catalog), [item_column])[item_column].astype(str).str.strip()
        items = model.items_.index(listed, on_unknown="drop")
        unknown = len(set(listed)) - len(set(items.tolist()))
        cold = unknown + int((~model.item_known_[items]).sum())
        logger.info("catalog: %d items, %d without ALS factors (left to the text retrievers)", len(set(listed)), cold)
    config = model.config.index if kind is None else model.config.index.replace(kind=kind)
    index = model.rebuild_index(items, config)  # validated, or raises before anything is written
    index.save(output, items=model.items_, facts={"model": model.model_hash})
    return {
        "output": str(output),
        "kind": index.kind_,
        "n_items": index.n_items,
        "cold_items": cold,
        "recall_at_10": index.validated_recall_,
        "seconds": time.perf_counter() - start,
    }


__all__ = ["rebuild_model_index"]
