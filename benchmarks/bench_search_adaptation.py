"""Does a search fine-tune on the shop's own catalog help on queries it never saw?

The issue's other option for search's dense side: a fine-tune that keeps query → title pairs.
A shop without a search log has one source of such pairs, its catalog's own fields. This script
measures that option on the ``category`` judged set of bench_search.py, using **dev queries
only** (the test half stays unread): the dev categories are split in two by a seeded
permutation; the base model is fine-tuned on (category words → the label text of items in the
category) pairs of the first half (MultipleNegativesRankingLoss, in-batch negatives, the
no-duplicates sampler), and dense and fused (BM25 + dense, RRF at SearchConfig's lexical weight)
are judged on the second half before and after. Catalog-derived queries are the bench's own
queries in disguise, so a fine-tune on every category would leak; hence the disjoint halves.

    python benchmarks/bench_search_adaptation.py --dunnhumby ../shared/data/dunnhumby-sample \
        --output benchmarks/results/bench_search_adaptation.json   # ~6 min
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_search import JudgedSet, judged_sets, score

PAIRS_PER_CATEGORY = 40


def halves(judged: JudgedSet, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The dev queries split in two: (fine-tune on, judge on)."""
    dev = np.random.default_rng(seed).permutation(np.flatnonzero(judged.dev))
    return dev[: len(dev) // 2], dev[len(dev) // 2 :]


def catalog_pairs(judged: JudgedSet, queries: np.ndarray, seed: int) -> tuple[list[str], list[str]]:
    """(query, label text) pairs: up to PAIRS_PER_CATEGORY distinct labels of each query's gain-2 items."""
    rng = np.random.default_rng(seed)
    texts = np.asarray(judged.item_texts, dtype=object)
    anchors, positives = [], []
    for q in queries:
        labels = list(dict.fromkeys(texts[judged.gains[q].indices[judged.gains[q].data >= 2]].tolist()))
        for label in rng.permutation(labels)[:PAIRS_PER_CATEGORY]:
            anchors.append(judged.queries[q])
            positives.append(str(label))
    return anchors, positives


def judge(model, judged: JudgedSet, rows: np.ndarray, lexical_weight: float) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """ndcg@10 / recall@100 of dense and fused (BM25 + dense) on ``rows``."""
    from ecomrec.candidates import top_k
    from ecomrec.config import FusionConfig
    from ecomrec.retrieval.fusion import fuse
    from ecomrec.retrieval.search import LexicalIndex

    distinct, inverse = np.unique(np.asarray(judged.item_texts, dtype=object), return_inverse=True)
    vectors = model.encode(list(distinct), batch_size=256, normalize_embeddings=True)[inverse]
    queries = [judged.queries[r] for r in rows]
    dense = top_k(model.encode(queries, normalize_embeddings=True) @ vectors.T, 100)
    lexical = LexicalIndex().fit(judged.item_texts).search(queries, 100)
    fusion = FusionConfig(method="rrf", quotas={}, tune=False)
    fused = fuse({"lexical": lexical, "dense": dense}, {"lexical": lexical_weight, "dense": 1 - lexical_weight},
                 fusion, 100, len(judged.item_texts), shared_ranks=True)
    ids = np.asarray(judged.catalog_ids, dtype=object)
    out = {}
    for name, found in (("dense", dense), ("lexical", lexical), ("fused", fused)):
        found_ids = np.where(found.item_ids >= 0, ids[np.maximum(found.item_ids, 0)], None)
        out[name] = {k: float(v.mean()) for k, v in score(found_ids, judged.catalog_ids, judged.gains[rows]).items()}
    return out


def main() -> None:
    from datasets import Dataset

    from ecomrec.config import SearchConfig
    from ecomrec.encoders import load_sentence_transformer
    from ecomrec.evaluation.report import environment
    from ecomrec.retrieval.bi_encoder import _sentence_transformers_training

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results/bench_search_adaptation.json")
    args = parser.parse_args()

    catalog = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str, keep_default_na=False)
    judged = judged_sets(catalog)["category"]
    fit_on, judge_on = halves(judged, args.seed)
    weight = SearchConfig().lexical_weight
    model = load_sentence_transformer(None, "cpu")
    model.max_seq_length = 32
    report: dict = {"environment": environment(), "queries": {"fine_tune": len(fit_on), "judged": len(judge_on)}, "lexical_weight": weight}
    report["base"] = judge(model, judged, judge_on, weight)
    print("base", report["base"], flush=True)
    anchors, positives = catalog_pairs(judged, fit_on, args.seed)
    trainer_cls, arguments_cls, loss_cls = _sentence_transformers_training()
    train_args = arguments_cls(
        output_dir=tempfile.mkdtemp(prefix="ecomrec-adaptation-"), num_train_epochs=args.epochs,
        per_device_train_batch_size=32, learning_rate=2e-5, warmup_steps=0.1, batch_sampler="no_duplicates",
        save_strategy="no", report_to="none", use_cpu=True, seed=args.seed, disable_tqdm=True,
    )
    start = time.perf_counter()
    trainer_cls(model=model, args=train_args, train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
                loss=loss_cls(model)).train()
    report["fine_tune"] = {"pairs": len(anchors), "epochs": args.epochs, "seconds": time.perf_counter() - start}
    report["adapted"] = judge(model, judged, judge_on, weight)
    report["adapted_on_its_own_queries"] = judge(model, judged, fit_on, weight)
    print("adapted", report["adapted"], flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
