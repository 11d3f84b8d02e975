"""Choose search's fusion of BM25 and the dense list on dev queries only.

The judged sets are bench_search.py's (dunnhumby's product table; ``category``: words that are
not the items', ``type``: the items' own words). Search is built the way a user builds it: the
engine saved by ``ecomrec fit`` / ``make demo`` on Online Retail, loaded from disk and given each
set's catalog by ``Engine.rebuild_index`` (every title new to it). Only the dev half of each set
is read here; bench_search.py scores the test halves once, with the chosen default.

Each query's candidates are the union of BM25's and the dense side's first ``--depth`` listed
items, with both exact scores for every one of them. Variants, each with a lexical weight that
may follow how confidently BM25 matches the query — ``w(q) = w_partial + (w_full - w_partial) *
c(q)``, ``c(q)``: the largest idf-weighted share of the query's words that one of BM25's items
holds (``LexicalIndex.coverage``); ``w_partial == w_full`` is a fixed weight:

* ``rrf`` — reciprocal ranks (``w / (60 + rank)``, equal BM25 scores sharing a rank): the
  fusion search used until now (fixed weight 0.4).
* ``convex_minmax`` — ``w * bm25 / max bm25 + (1 - w) * (cos - min) / (max - min)`` over the
  query's candidates.
* ``convex_theory`` — the same with the dense side scaled from its theoretical minimum,
  ``(cos + 1) / (max cos + 1)`` (Bruch et al., 2023: fusion functions for hybrid retrieval).

Weights run over 0, 0.1, …, 1 each. The rule, fixed before the run: the variant of best mean dev
ndcg@10 over the two sets (``type`` weighed as much as ``category``), among those whose dev
ndcg@10 on ``type`` is at least BM25's alone there (queries in the items' words must not lose
to BM25); ties go to fewer parameters (a fixed weight before a gate). Pseudo-relevance feedback
(the dense side searched again from the first fusion's top 5, ``SearchConfig.feedback_items``)
is then judged on the chosen variant, by the same objective: kept only if it adds to it.

    python benchmarks/bench_search_fusion.py --dunnhumby ../shared/data/dunnhumby-sample \\
        --engine indexes/online-retail --output benchmarks/results/bench_search_fusion.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import JudgedSet, judged_sets  # noqa: E402

WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)
FAMILIES = ("rrf", "convex_minmax", "convex_theory")
RRF_K = 60.0


@dataclasses.dataclass
class Pool:
    """Per dev query: the candidate items (catalog rows) and their scores."""

    rows: list[np.ndarray]  # catalog rows of the candidates
    bm25: list[np.ndarray]  # exact BM25 score of each
    cos: list[np.ndarray]  # exact cosine to the query vector
    lexical_rank: list[np.ndarray]  # rank in BM25's list (ties share the best), inf where not in it
    dense_rank: list[np.ndarray]
    confidence: np.ndarray  # c(q)


def pool(search, judged: JudgedSet, queries: np.ndarray, depth: int, vectors: np.ndarray) -> Pool:  # type: ignore[no-untyped-def]
    """Both lists of each query (``vectors``: its dense query vectors) and exact scores of their union."""
    dense = search.dense_
    listed = np.asarray(search.listed_)
    titles = dense.index_vectors_()
    to_row = judged.catalog_ids.get_indexer(np.asarray(search.items_.ids, dtype=object))
    lexical = search.lexical_.search(list(queries), depth, allow=listed)
    found = dense.candidates_for_vectors(vectors, depth, allow=np.flatnonzero(listed))
    out = Pool([], [], [], [], [], np.zeros(len(queries)))
    for q, query in enumerate(queries):
        lex_ids = lexical.item_ids[q][lexical.item_ids[q] >= 0]
        dense_ids = found.item_ids[q][found.item_ids[q] >= 0]
        union = np.union1d(lex_ids, dense_ids)
        scores = search.lexical_.scores(query)
        lex_scores = lexical.scores[q][: len(lex_ids)]
        starts = np.r_[True, lex_scores[1:] != lex_scores[:-1]]
        shared = np.maximum.accumulate(np.where(starts, np.arange(1, len(lex_ids) + 1), 0))
        lex_rank = dict(zip(lex_ids.tolist(), shared.tolist()))
        dense_rank = {i: r + 1 for r, i in enumerate(dense_ids.tolist())}
        out.rows.append(to_row[union])
        out.bm25.append(scores[union].astype(np.float64))
        out.cos.append(titles[union] @ vectors[q].astype(np.float64))
        out.lexical_rank.append(np.array([lex_rank.get(i, np.inf) for i in union.tolist()]))
        out.dense_rank.append(np.array([dense_rank.get(i, np.inf) for i in union.tolist()]))
        out.confidence[q] = search.lexical_.coverage(query, lex_ids).max(initial=0.0)
    return out


def fused_scores(family: str, p: Pool, q: int, weight: float) -> np.ndarray:
    if family == "rrf":
        return weight / (RRF_K + p.lexical_rank[q]) + (1 - weight) / (RRF_K + p.dense_rank[q])
    bm25, cos = p.bm25[q], p.cos[q]
    lexical = bm25 / bm25.max() if bm25.max() > 0 else np.zeros_like(bm25)
    if family == "convex_minmax":
        spread = cos.max() - cos.min()
        dense = (cos - cos.min()) / spread if spread > 0 else np.ones_like(cos)
    else:
        dense = (cos + 1.0) / (cos.max() + 1.0)
    return weight * lexical + (1 - weight) * dense


def ranked(family: str, p: Pool, w_partial: float, w_full: float, k: int = 10) -> np.ndarray:
    """int [n, k] catalog rows of each query's fused top k (ties: lower row first)."""
    out = np.full((len(p.rows), k), -1, dtype=np.int64)
    for q in range(len(p.rows)):
        weight = w_partial + (w_full - w_partial) * p.confidence[q]
        scores = fused_scores(family, p, q, weight)
        order = np.lexsort((p.rows[q], -scores))[:k]
        out[q, : len(order)] = p.rows[q][order]
    return out


def feedback_pool(search, judged: JudgedSet, queries: np.ndarray, depth: int, vectors: np.ndarray, first: np.ndarray,  # type: ignore[no-untyped-def]
                  m: int, w: float) -> Pool:
    """The pool again, with each query vector moved towards the mean title vector of its first
    fusion's top ``m`` (Rocchio: ``w q + (1 - w) mean``), as SearchConfig.feedback_items does."""
    index_of = search.items_.positions(judged.catalog_ids[np.maximum(first[:, :m], 0).ravel()]).reshape(len(first), m)
    titles = search.dense_.index_vectors_()
    moved = vectors.copy()
    for q in range(len(vectors)):
        items = index_of[q][first[q, :m] >= 0]
        if len(items):
            moved[q] = w * vectors[q] + (1 - w) * titles[items].mean(axis=0)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    return pool(search, judged, queries, depth, moved)  # BM25's list and the confidence are as before


def main() -> None:
    from ecomrec.engine import Engine
    from ecomrec.evaluation.report import environment
    from ecomrec.metrics import graded_ndcg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--engine", required=True, help="a saved engine (e.g. indexes/online-retail from make demo)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "bench_search_fusion.json"))
    args = parser.parse_args()

    catalog = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str, keep_default_na=False)
    sets = judged_sets(catalog)
    report: dict = {"environment": environment(), "engine": args.engine, "depth": args.depth, "sets": {}, "variants": {}}
    pools, feedback_inputs = {}, {}
    for name, judged in sets.items():
        engine = Engine.load(args.engine)
        table = pd.DataFrame({"item_id": catalog["item_id"], "text": judged.item_texts, "category": catalog["category"]})
        start = time.perf_counter()
        rebuild = engine.rebuild_index(table)
        search = engine.snapshot.search
        queries = np.asarray(judged.queries, dtype=object)[judged.dev]
        vectors, _ = search.dense_.search_vectors(list(queries))
        pools[name] = pool(search, judged, queries, args.depth, vectors)
        feedback_inputs[name] = (search, judged, queries, vectors)
        report["sets"][name] = {"dev_queries": int(judged.dev.sum()), "rebuild_seconds": time.perf_counter() - start,
                                "rebuild": {k: rebuild[k] for k in ("listed", "seconds", "verified")},
                                "confidence_share_full": float((pools[name].confidence >= 0.999).mean())}
        print(name, report["sets"][name], flush=True)

    gains = {name: judged.gains[np.flatnonzero(judged.dev)] for name, judged in sets.items()}

    def dev_ndcg(family: str, w_partial: float, w_full: float, source: dict = pools) -> dict[str, float]:
        return {name: float(graded_ndcg(ranked(family, source[name], w_partial, w_full), gains[name], 10).mean()) for name in sets}

    lexical_alone = dev_ndcg("convex_minmax", 1.0, 1.0)
    report["lexical_alone"], report["dense_alone"] = lexical_alone, dev_ndcg("convex_minmax", 0.0, 0.0)
    report["previous_default"] = dev_ndcg("rrf", 0.4, 0.4)
    rows = []
    for family, (w_partial, w_full) in itertools.product(FAMILIES, itertools.product(WEIGHTS, WEIGHTS)):
        values = dev_ndcg(family, float(w_partial), float(w_full))
        rows.append({"family": family, "w_partial": float(w_partial), "w_full": float(w_full), **values,
                     "mean": float(np.mean(list(values.values()))), "gated": bool(w_partial != w_full)})
    frame = pd.DataFrame(rows)
    allowed = frame[frame["type"] >= lexical_alone["type"] - 1e-12]
    best = allowed.sort_values(["mean", "gated"], ascending=[False, True]).iloc[0]
    report["variants"] = {family: frame[frame["family"] == family].sort_values("mean", ascending=False).head(5).to_dict("records")
                          for family in FAMILIES}
    report["variants_fixed_weight"] = {family: frame[(frame["family"] == family) & ~frame["gated"]].sort_values("mean", ascending=False)
                                       .head(3).to_dict("records") for family in FAMILIES}
    report["chosen"] = best.to_dict()
    print("chosen:", report["chosen"], flush=True)

    with_feedback = {}
    for name, (search, judged, queries, vectors) in feedback_inputs.items():
        first = ranked(best["family"], pools[name], best["w_partial"], best["w_full"], k=5)
        with_feedback[name] = feedback_pool(search, judged, queries, args.depth, vectors, first, 5, 0.25)
    report["feedback"] = dev_ndcg(best["family"], best["w_partial"], best["w_full"], with_feedback)
    report["feedback_kept"] = bool(np.mean(list(report["feedback"].values())) > best["mean"] + 1e-12)
    print("feedback:", report["feedback"], "kept:", report["feedback_kept"], flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
