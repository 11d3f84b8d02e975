"""Catalog rebuilds of a saved engine, as a user runs them: are new titles served their own
vectors, and what does the swap check cost?

The engine saved by ``ecomrec fit`` / ``make demo`` is loaded from disk and given new catalogs by
``Engine.rebuild_index``:

* ``repro`` — its own catalog plus the first 3,000 dunnhumby titles as new items (issue 27's
  reproduction): the median cosine between the vector search's dense side serves for a new
  title and a plain encoding of it, and how many of 50 new items an exact-title search finds
  first (or an item with the same title).
* ``no_change`` — the catalog it serves, again (nothing to encode);
  ``one_percent`` — 1 % of its titles changed; ``dunnhumby`` — the whole 92k-item dunnhumby
  table as its catalog (every title new).

Each rebuild reports its seconds and the seconds of the check before its swap
(:meth:`~ecomrec.engine.Snapshot.verify`); the share is the check's cost.

    python benchmarks/bench_rebuild.py --engine indexes/online-retail --dunnhumby ../shared/data/dunnhumby-sample
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def served_cosines(retriever, titles: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Cosine between what ``retriever`` serves for each title and a plain encoding of it (the
    eager model, nothing stored)."""
    plain = retriever._encode(retriever.model_, titles, retriever.config.item_max_tokens)
    return (retriever.embed_items(titles) * plain).sum(axis=1)


def timed_rebuild(engine, catalog: pd.DataFrame) -> dict:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    report = engine.rebuild_index(catalog)
    seconds = time.perf_counter() - start
    check = report["verified"]
    return {"seconds": seconds, "check_seconds": check["seconds"], "check_share": check["seconds"] / seconds,
            "checked_items": check["items"], "listed": report["listed"],
            "encoded": {"bi_encoder": report["sources"]["bi_encoder"]["encoded"], "search": report["search"]["encoded"]}}


def main() -> None:
    from ecomrec.engine import Engine
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "bench_rebuild.json"))
    args = parser.parse_args()

    dunnhumby = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str).dropna(subset=["text"])
    report: dict = {"environment": environment(), "engine": args.engine, "rebuilds": {}}

    engine = Engine.load(args.engine)
    snap = engine.snapshot
    own = pd.DataFrame({"item_id": [snap.items.ids[i] for i in np.flatnonzero(snap.listed)],
                        "text": [snap.item_texts[i] for i in np.flatnonzero(snap.listed)]})
    new = dunnhumby.head(3000)
    new = pd.DataFrame({"item_id": "dh" + new["item_id"], "text": new["text"]})
    report["rebuilds"]["repro"] = timed_rebuild(engine, pd.concat([own, new], ignore_index=True))
    probe = list(dict.fromkeys(new["text"]))[:200]
    snap = engine.snapshot
    report["repro"] = {
        "median_cosine_search": float(np.median(served_cosines(snap.search.dense_, probe))),
        "median_cosine_bi_encoder": float(np.median(served_cosines(snap.hybrid.models_["bi_encoder"], probe))),
    }
    found = engine.search(list(new["text"][:50]), k=1)
    report["repro"]["exact_title_found_first_of_50"] = int(sum(
        found.item_ids[row, 0] == item or found.titles[row, 0] == title for row, (item, title) in enumerate(zip(new["item_id"][:50], new["text"][:50]))))
    print("repro:", report["repro"], report["rebuilds"]["repro"], flush=True)

    engine = Engine.load(args.engine)
    report["rebuilds"]["no_change"] = timed_rebuild(engine, own)
    changed = own.copy()
    rows = np.random.default_rng(0).choice(len(changed), size=max(1, len(changed) // 100), replace=False)
    changed.loc[rows, "text"] = changed.loc[rows, "text"] + " (NEW EDITION)"
    report["rebuilds"]["one_percent"] = timed_rebuild(engine, changed)
    report["rebuilds"]["dunnhumby"] = timed_rebuild(Engine.load(args.engine), dunnhumby[["item_id", "text"]])
    for name, result in report["rebuilds"].items():
        print(name, {k: result[k] for k in ("seconds", "check_seconds", "check_share", "checked_items", "encoded")}, flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
