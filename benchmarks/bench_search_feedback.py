"""Does pseudo-relevance feedback on the dense side help search? Chosen on dev queries only.

Rocchio feedback for a dense retriever (Li et al., "Pseudo relevance feedback with deep language
models and dense retrievers", 2021): the query vector moves towards the mean vector of the first
``m`` items a first search returned, ``q' = normalise(a * q + (1 - a) * mean(v_1..v_m))``, and
the dense list is searched again with ``q'``. Taking the feedback items from the *fused* list
lets BM25's exact-word matches steer the dense side, so fusion can add more than one list's
rank votes. Run on the dev queries of bench_search.py's judged sets (the test halves stay
unread), base model and BM25 as ``Engine.search`` uses them.

Rule, fixed before the run: over feedback from {dense, fused} list, m in {5, 10, 20},
a in {0.25, 0.5, 0.75} and lexical weight in {0.2, 0.4, 0.6}, take the best ``category`` dev
ndcg@10; feedback is kept (``SearchConfig.feedback_items`` / ``feedback_query_weight``) only if it
beats today's fused search (no feedback, lexical 0.4) there by ≥ 0.01 and loses ≤ 0.005 on the
``type`` dev queries. The dense-only rows (feedback from the dense list, no BM25) are reported so
that fused-with-feedback is compared with the strongest dense-alone search, not only the plain one.

    python benchmarks/bench_search_feedback.py --dunnhumby ../shared/data/dunnhumby-sample   # ~10 min
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench_search import JudgedSet, judged_sets, score

SOURCES = ("dense", "fused")
FEEDBACK_ITEMS = (5, 10, 20)
QUERY_WEIGHTS = (0.25, 0.5, 0.75)
LEXICAL_WEIGHTS = (0.2, 0.4, 0.6)
TODAY = 0.4  # SearchConfig().lexical_weight before this script


class DevSearch:
    """BM25 and the base model over one judged set's texts, searched on its dev queries."""

    def __init__(self, model, judged: JudgedSet) -> None:  # type: ignore[no-untyped-def]
        from ecomrec.retrieval.search import LexicalIndex

        self.judged, self.rows = judged, np.flatnonzero(judged.dev)
        distinct, inverse = np.unique(np.asarray(judged.item_texts, dtype=object), return_inverse=True)
        self.vectors = model.encode(list(distinct), batch_size=256, normalize_embeddings=True)[inverse]
        queries = [judged.queries[r] for r in self.rows]
        self.query_vectors = model.encode(queries, normalize_embeddings=True)
        self.lexical = LexicalIndex().fit(judged.item_texts).search(queries, 100)

    def dense(self, query_vectors: np.ndarray):  # type: ignore[no-untyped-def]
        from ecomrec.candidates import top_k

        return top_k(query_vectors @ self.vectors.T, 100)

    def fused(self, dense, lexical_weight: float):  # type: ignore[no-untyped-def]
        from ecomrec.config import FusionConfig
        from ecomrec.retrieval.fusion import fuse

        return fuse({"lexical": self.lexical, "dense": dense}, {"lexical": lexical_weight, "dense": 1 - lexical_weight},
                    FusionConfig(method="rrf", quotas={}, tune=False), 100, len(self.vectors), shared_ranks=True)

    def feedback(self, first, items: int, query_weight: float) -> np.ndarray:  # type: ignore[no-untyped-def]
        top = first.item_ids[:, :items]
        mean = np.stack([self.vectors[row[row >= 0]].mean(axis=0) for row in top])
        moved = query_weight * self.query_vectors + (1 - query_weight) * mean
        return moved / np.linalg.norm(moved, axis=1, keepdims=True)

    def ndcg(self, found) -> float:  # type: ignore[no-untyped-def]
        ids = np.asarray(self.judged.catalog_ids, dtype=object)
        found_ids = np.where(found.item_ids >= 0, ids[np.maximum(found.item_ids, 0)], None)
        return float(score(found_ids, self.judged.catalog_ids, self.judged.gains[self.rows])["ndcg@10"].mean())

    def grid(self) -> dict[str, float]:
        plain = self.dense(self.query_vectors)
        out = {"lexical": self.ndcg(self.lexical), "dense": self.ndcg(plain)}
        out.update({f"fused lexical={w}": self.ndcg(self.fused(plain, w)) for w in LEXICAL_WEIGHTS})
        for items, a in itertools.product(FEEDBACK_ITEMS, QUERY_WEIGHTS):
            out[f"dense+feedback(dense) m={items} a={a}"] = self.ndcg(self.dense(self.feedback(plain, items, a)))
        for source, items, a, w in itertools.product(SOURCES, FEEDBACK_ITEMS, QUERY_WEIGHTS, LEXICAL_WEIGHTS):
            first = plain if source == "dense" else self.fused(plain, TODAY)
            out[f"fused+feedback({source}) m={items} a={a} lexical={w}"] = self.ndcg(self.fused(self.dense(self.feedback(first, items, a)), w))
        return out


def main() -> None:
    from ecomrec.encoders import load_sentence_transformer
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--output", default="benchmarks/results/bench_search_feedback.json")
    args = parser.parse_args()

    catalog = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str, keep_default_na=False)
    sets = judged_sets(catalog)
    model = load_sentence_transformer(None, "cpu")
    dev = {name: DevSearch(model, sets[name]).grid() for name in ("category", "type")}
    today = f"fused lexical={TODAY}"
    candidates = [k for k in dev["category"] if k.startswith("fused+feedback")]
    best = max(candidates, key=lambda k: dev["category"][k])
    gain = dev["category"][best] - dev["category"][today]
    cost = dev["type"][today] - dev["type"][best]
    report = {"environment": environment(), "dev_ndcg@10": dev, "today": today, "best": best,
              "category_gain": gain, "type_cost": cost, "kept": bool(gain >= 0.01 and cost <= 0.005)}
    Path(args.output).write_text(json.dumps(report, indent=2))
    for name in ("lexical", "dense", today, best):
        print(f"{name}: category {dev['category'][name]:.4f}  type {dev['type'][name]:.4f}")
    best_dense = max((k for k in dev["category"] if k.startswith("dense+feedback")), key=lambda k: dev["category"][k])
    print(f"best dense alone {best_dense}: category {dev['category'][best_dense]:.4f}  type {dev['type'][best_dense]:.4f}")
    print("kept" if report["kept"] else "not kept", f"(gain {gain:+.4f}, type cost {cost:+.4f})")


if __name__ == "__main__":
    main()
