"""How fast each shape of the reranker's text model scores one user's candidates.

The cost of a text model does not depend on what it learned, so every shape is built from the
base weights (``CrossEncoderConfig`` defaults otherwise) and timed on real inputs: history
texts of ``--users`` Online Retail customers (purchases before ``--test-from``) and, per user,
``--candidates`` catalog titles drawn by popularity. Shapes:

* ``late_join`` — the default (``joined_layers = 1``: lower layers apart, items cached);
* ``full_attention`` — every kept layer over the pair's user and item tokens together
  (``joined_layers = layers``; no item cache).

Each is timed per call for one user (``TextScorer.score``: tokenize the history, its lower-layer
pass, the joined layer over every candidate), warm, p50/p95/p99, with ``--threads`` torch
threads; the catalog's cached item states are timed once apart. Ratios are against
``late_join`` in the same process.

    python benchmarks/bench_text_latency.py --data ../shared/data/online-retail
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: CrossEncoderConfig changes of each shape.
SHAPES = {"late_join": {}, "full_attention": {"joined_layers": 3}}


def scorer_of(shape: str, item_texts: list[str]):  # type: ignore[no-untyped-def]
    """An untrained :class:`TextScorer` of ``shape`` on the CPU (same cost as a trained one)."""
    from ecomrec.config import CrossEncoderConfig
    from ecomrec.rerank.text_model import TextScorer

    scorer = TextScorer(CrossEncoderConfig().replace(**SHAPES[shape]), item_texts)
    scorer.device, scorer.model = "cpu", scorer._model().eval()
    return scorer


def main() -> None:
    import torch

    from ecomrec.config import BiEncoderConfig
    from ecomrec.datasets import online_retail
    from ecomrec.evaluation.latency import time_calls
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the Online Retail folder")
    parser.add_argument("--test-from", default="2011-10-01")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--output", default="benchmarks/results/bench_text_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = online_retail(args.data).between(None, pd.Timestamp(args.test_from))
    rng = np.random.default_rng(0)
    users = rng.choice(np.flatnonzero(data.user_items("binary").getnnz(axis=1) > 0), size=args.users, replace=False)
    history = BiEncoderConfig()  # the reranker reads the histories the bi-encoder reads
    texts = data.history_texts(users, max_items=history.history_items, max_chars=history.history_chars)
    popularity = np.asarray(data.user_items("binary").sum(axis=0)).ravel() + 1.0
    item_ids = np.stack([rng.choice(len(popularity), size=args.candidates, replace=False, p=popularity / popularity.sum())
                         for _ in users]).astype(np.int64)
    item_texts = [str(t) for t in data.item_texts]

    report: dict = {"environment": environment(), "threads": args.threads, "users": args.users,
                    "candidates": args.candidates, "catalog_items": len(item_texts), "shapes": {}}
    for shape in args.shapes.split(","):
        scorer = scorer_of(shape, item_texts)
        start = time.perf_counter()
        scorer.item_states()
        catalog_seconds = time.perf_counter() - start
        stats = time_calls(lambda r: scorer.score(texts[r : r + 1], item_ids[r : r + 1]),
                           list(range(args.users)), warmup=5)
        report["shapes"][shape] = {"one_user_ms": stats.to_dict(), "pairs_per_s": args.candidates / (stats.p50 / 1000),
                                   "catalog_item_states_seconds": catalog_seconds}
        print(shape, json.dumps(report["shapes"][shape]), flush=True)
    if "late_join" in report["shapes"]:
        base = report["shapes"]["late_join"]["one_user_ms"]["p50"]
        report["p50_over_late_join"] = {s: v["one_user_ms"]["p50"] / base for s, v in report["shapes"].items()}
    Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
