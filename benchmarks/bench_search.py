"""Catalog search on judged queries: lexical, dense and fused, through a saved engine given a new catalog.

The judged sets are built from the dunnhumby product table by rules fixed before any run:

* ``category`` — one query per product category holding at least 3 items with a product type:
  the category's words after its department (``GROCERY - SOFT DRINKS`` → ``soft drinks``).
  Items are searched by what a shelf label says, product type and size (``SFT DRNK 2 LITER BTL
  CARB INCL - 2 LTR``), not by the category itself, so the query must be matched to product
  language. Gain 2: the item is in that category; 1: in the same department; 0 otherwise.
* ``type`` — the product type's words verbatim (``HAMBURGER BUNS``), items searched by their
  full catalog text (which holds those words); gain 2: same product type, 1: same category.
  The queries use the items' own words.

Queries of each set are split in half by a seeded permutation: ``dev`` queries chose the fusion
(benchmarks/bench_search_fusion.py); ``test`` queries are scored here, once. Search runs the way
a user runs it: each engine is loaded from disk (``ecomrec fit`` / ``make demo`` saved it) and
given the set's catalog by ``Engine.rebuild_index``. Methods: ``lexical`` (BM25 alone),
``dense`` (the base model alone), ``fused`` (the default), ``fused_without_feedback``,
``previous_default`` (reciprocal-rank fusion at lexical weight 0.4 of the same two lists, the
fusion search used before; no feedback) and ``recommendation_bi_encoder`` (the engine's
fine-tuned history → item model used as a search model).

    python benchmarks/bench_search.py --dunnhumby ../shared/data/dunnhumby-sample \
        --engine online-retail=indexes/online-retail --output benchmarks/results/bench_search.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.candidates import Candidates

MIN_ITEMS = 3


@dataclasses.dataclass
class JudgedSet:
    """Queries with graded gains over the catalog's rows, the text each item is searched by,
    and which queries are dev (the rest are test)."""

    name: str
    queries: list[str]
    gains: sp.csr_matrix
    item_texts: list[str]
    dev: np.ndarray
    catalog_ids: pd.Index


def _after_department(category: str) -> str:
    parts = [p.strip() for p in category.split(" - ")]
    return " ".join(parts[1:]) if len(parts) > 1 else parts[0]


def _label_text(row: pd.Series) -> str:
    """Product type, plus the size when the catalog text ends with one (``... - 15 OZ``)."""
    last = row["text"].rsplit(" - ", 1)[-1].strip()
    return f"{row['title']} - {last}" if last[:1].isdigit() else row["title"]


def _gains(n_items: int, strong: np.ndarray, weak: np.ndarray, queries_strong: list[str], queries_weak: list[str]) -> sp.csr_matrix:
    rows, cols, values = [], [], []
    for q, (s, w) in enumerate(zip(queries_strong, queries_weak)):
        weak_rows = np.flatnonzero(weak == w)
        strong_rows = np.flatnonzero(strong == s)
        gain = dict.fromkeys(weak_rows.tolist(), 1.0) | dict.fromkeys(strong_rows.tolist(), 2.0)
        rows += [q] * len(gain)
        cols += list(gain)
        values += list(gain.values())
    return sp.csr_matrix((values, (rows, cols)), shape=(len(queries_strong), n_items))


def judged_sets(catalog: pd.DataFrame, seed: int = 0) -> dict[str, JudgedSet]:
    """The two judged sets of the module docstring over ``catalog`` (dunnhumby's product table)."""
    typed = catalog["title"].str.strip() != ""
    rng = np.random.default_rng(seed)
    category, title = catalog["category"].to_numpy(), catalog["title"].to_numpy()
    department = np.array([c.split(" - ")[0].strip() for c in category], dtype=object)
    ids = pd.Index(catalog["item_id"])
    out = {}

    counts = catalog.loc[typed, "category"].value_counts()
    names = sorted(c for c, n in counts.items() if n >= MIN_ITEMS and c.strip())
    gains = _gains(len(catalog), np.where(typed, category, ""), np.where(typed, department, ""),
                   names, [c.split(" - ")[0].strip() for c in names])
    texts = [_label_text(r) if t else r["text"] for (_, r), t in zip(catalog.iterrows(), typed)]
    out["category"] = JudgedSet("category", [_after_department(c).lower() for c in names], gains, texts,
                                rng.permutation(len(names)) < len(names) // 2, ids)

    counts = catalog.loc[typed, "title"].value_counts()
    types = sorted(t for t, n in counts.items() if n >= MIN_ITEMS)
    type_category = catalog.loc[typed].groupby("title")["category"].agg(lambda c: c.mode().iloc[0])
    gains = _gains(len(catalog), np.where(typed, title, ""), category, types, [type_category[t] for t in types])
    out["type"] = JudgedSet("type", [t.lower() for t in types], gains, catalog["text"].tolist(),
                            rng.permutation(len(types)) < len(types) // 2, ids)
    return out


def score(found_ids: np.ndarray, catalog_ids: pd.Index, gains: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per-query ndcg@10 (graded) and recall@100 of gain-2 items, from external ids (None = padding)."""
    from ecomrec.metrics import graded_ndcg, hits, recall

    flat = np.array([i if i is not None else "" for i in found_ids.ravel()], dtype=object)
    rows = catalog_ids.get_indexer(flat).reshape(found_ids.shape)
    strong = sp.csr_matrix(gains >= 2, dtype=np.float32)
    n_strong = np.maximum(np.diff(strong.indptr), 1)
    return {"ndcg@10": graded_ndcg(rows, gains, 10), "recall@100": recall(hits(rows, strong), n_strong, 100)}


def ids_of(found, items) -> np.ndarray:  # type: ignore[no-untyped-def]
    """External ids of a result's items (None for padding)."""
    ids, valid = np.full(found.item_ids.shape, None, dtype=object), found.item_ids >= 0
    ids[valid] = np.asarray(items.ids, dtype=object)[found.item_ids[valid]]
    return ids


def previous_default(search, queries: list[str]):  # type: ignore[no-untyped-def]
    """The fusion search used before: BM25's and the dense side's first 100 by reciprocal rank,
    lexical weight 0.4, equal BM25 scores sharing a rank; no feedback."""
    from ecomrec.config import FusionConfig
    from ecomrec.retrieval.fusion import fuse

    lexical = search.search(queries, 100, lexical_weight=1.0)
    dense = search.search(queries, 100, lexical_weight=0.0)
    lexical.scores[:] = np.where(lexical.item_ids >= 0, lexical.sources["lexical_score"], -np.inf)
    lists = {"lexical": Candidates(lexical.item_ids, lexical.scores), "dense": Candidates(dense.item_ids, dense.scores)}
    return fuse(lists, {"lexical": 0.4, "dense": 0.6}, FusionConfig(quotas={}, tune=False), 100, search.dense_.n_items, shared_ranks=True)


def run_methods(engine, judged: JudgedSet) -> dict[str, dict[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    snap = engine.snapshot
    search, queries = snap.search, judged.queries
    found = {
        "lexical": search.search(queries, 100, lexical_weight=1.0),
        "dense": search.search(queries, 100, lexical_weight=0.0),
        "fused": search.search(queries, 100),
        "fused_without_feedback": search.search(queries, 100, feedback=False),
        "previous_default": previous_default(search, queries),
    }
    out = {name: score(ids_of(result, search.items_), judged.catalog_ids, judged.gains) for name, result in found.items()}
    bi = snap.hybrid.models_["bi_encoder"]
    out["recommendation_bi_encoder"] = score(ids_of(bi.search(queries, 100), bi.items_), judged.catalog_ids, judged.gains)
    return out


def summarise(values: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    return {name: float(v[rows].mean()) for name, v in values.items()}


def main() -> None:
    from ecomrec.engine import Engine
    from ecomrec.metrics import paired_bootstrap
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--engine", action="append", required=True, help="NAME=PATH of a saved engine (repeatable)")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "bench_search.json"))
    args = parser.parse_args()

    catalog = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str, keep_default_na=False)
    sets = judged_sets(catalog)
    report: dict = {"environment": environment(), "judged_sets": {}, "engines": {}}
    for name, judged in sets.items():
        report["judged_sets"][name] = {"queries": len(judged.queries), "dev": int(judged.dev.sum()), "test": int((~judged.dev).sum()),
                                       "examples": judged.queries[:8], "mean_gain2_items": float((judged.gains >= 2).sum(axis=1).mean())}
    for engine_name, path in (spec.split("=", 1) for spec in args.engine):
        out: dict = {"path": path, "sets": {}}
        for set_name, judged in sets.items():
            engine = Engine.load(path)  # as saved: every set's catalog is new to it
            report["config"] = engine.config.search.to_dict()
            table = pd.DataFrame({"item_id": catalog["item_id"], "text": judged.item_texts, "category": catalog["category"]})
            start = time.perf_counter()
            rebuild = engine.rebuild_index(table)
            out.setdefault("rebuild", {})[set_name] = {"seconds": time.perf_counter() - start, "verified": rebuild["verified"],
                                                       "encoded": rebuild["search"]["encoded"], "listed": rebuild["listed"]}
            values = run_methods(engine, judged)
            test = ~judged.dev
            result = {m: {"test": summarise(v, test), "dev": summarise(v, judged.dev)} for m, v in values.items()}
            better = max(("lexical", "dense"), key=lambda m: result[m]["test"]["ndcg@10"])
            result["better_single_list"] = better
            for other in ("lexical", "dense", "previous_default", "fused_without_feedback"):
                result[f"fused - {other}"] = paired_bootstrap(values["fused"]["ndcg@10"][test], values[other]["ndcg@10"][test])
            out["sets"][set_name] = result
            print(engine_name, set_name, json.dumps({m: r["test"] if isinstance(r, dict) and "test" in r else r
                                                     for m, r in result.items()}, default=float), flush=True)
        report["engines"][engine_name] = out
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))
    Path(args.output).with_suffix(".md").write_text(markdown(report), encoding="utf-8")


def markdown(report: dict) -> str:
    """The test-query tables of a report: ndcg@10 / recall@100 per engine × set × method, and
    fused's paired differences."""
    methods = ("lexical", "dense", "previous_default", "fused_without_feedback", "fused", "recommendation_bi_encoder")
    lines = ["| engine | set | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for engine, out in report["engines"].items():
        for name, result in out["sets"].items():
            cells = [f"{result[m]['test']['ndcg@10']:.4f} / {result[m]['test']['recall@100']:.4f}" for m in methods]
            lines.append(f"| {engine} | {name} | " + " | ".join(cells) + " |")
    others = ("lexical", "dense", "previous_default", "fused_without_feedback")
    lines += ["", "| engine | set | better single list | " + " | ".join(f"fused − {o}" for o in others) + " |",
              "|---|---|---|" + "---|" * len(others)]
    for engine, out in report["engines"].items():
        for name, r in out["sets"].items():
            cells = [f"{r[f'fused - {o}']['mean_diff']:+.4f} [{r[f'fused - {o}']['ci95'][0]:+.4f}, {r[f'fused - {o}']['ci95'][1]:+.4f}]" for o in others]
            lines.append(f"| {engine} | {name} | {r['better_single_list']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
