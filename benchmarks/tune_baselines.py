"""Grid-search the ALS and item-kNN baselines on the validation window (never the test window).

History: everything before ``test_from - valid_days``; targets: the ``valid_days`` before
``test_from``. Selection: configs are scored by the mean of recall@100 over the ``all`` and
``new`` target sets (their job in ecomrec is candidate generation); differences below
``TOLERANCE`` are noise on one validation month, so among the configs that close to the best
the one with the highest mean ndcg@10 (``all`` and ``new``) is chosen.

    python benchmarks/tune_baselines.py --data ../shared/data/online-retail --test-from 2011-10-01
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

from ecomrec.config import ALSConfig, ItemKNNConfig, ProtocolConfig
from ecomrec.datasets import online_retail
from ecomrec.data.split import validation_split
from ecomrec.evaluation.protocol import evaluate_candidates, score_retriever
from ecomrec.evaluation.report import environment
from ecomrec.retrieval import ALSRetriever, ItemKNNRetriever

TOLERANCE = 0.005

GRIDS = {
    "als": (
        ALSRetriever,
        ALSConfig,
        {
            "factors": [64, 128, 256, 512],
            "regularization": [0.1, 1.0, 10.0, 30.0, 100.0],
            "alpha": [0.5, 1.0, 5.0, 20.0],
            "weighting": ["binary", "counts", "log"],
        },
    ),
    "itemknn": (
        ItemKNNRetriever,
        ItemKNNConfig,
        {"neighbours": [5, 10, 20, 50, 100], "weighting": ["binary", "counts", "log"], "b": [0.25, 0.5, 0.75, 1.0]},
    ),
}


def choose(rows: list[dict]) -> dict:
    """Highest mean ndcg@10 among the configs within TOLERANCE of the best score."""
    best = max(r["score"] for r in rows)
    close = [r for r in rows if r["score"] >= best - TOLERANCE]
    return max(close, key=lambda r: (r["all"]["ndcg@10"] + r["new"]["ndcg@10"]) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--test-from", required=True)
    parser.add_argument("--methods", default="als,itemknn")
    parser.add_argument("--output", default="benchmarks/results/tune_baselines.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    protocol = ProtocolConfig()
    split = validation_split(online_retail(args.data), args.test_from, protocol.valid_days)
    print(f"validation: {len(split.users)} users, targets {split.target.start:%Y-%m-%d}..{split.target.end:%Y-%m-%d}")
    results: dict[str, list[dict]] = {}
    chosen: dict[str, dict] = {}
    for method in args.methods.split(","):
        retriever_class, config_class, grid = GRIDS[method]
        rows = []
        for values in itertools.product(*grid.values()):
            config = config_class(**dict(zip(grid, values)))
            start = time.perf_counter()
            retriever = retriever_class(config, show_progress=False) if method == "als" else retriever_class(config)
            retriever.fit(split.history)
            ranked_all, ranked_new, _ = score_retriever(retriever, split, max(protocol.ks), protocol.batch_size)
            metrics = evaluate_candidates(split, ranked_all, ranked_new, protocol.ks)
            score = (metrics["all"]["recall@100"] + metrics["new"]["recall@100"]) / 2
            rows.append({"config": config.to_dict(), "score": score, "seconds": time.perf_counter() - start, **metrics})
            print(f"{method} {dict(zip(grid, values))} score={score:.4f} all-ndcg@10={metrics['all']['ndcg@10']:.4f}")
        rows.sort(key=lambda r: -r["score"])
        results[method] = rows
        chosen[method] = choose(rows)
        print(f"best {method}: {rows[0]['config']} score={rows[0]['score']:.4f}")
        print(f"chosen {method}: {chosen[method]['config']} score={chosen[method]['score']:.4f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"test_from": args.test_from, "valid_days": protocol.valid_days, "environment": environment(),
               "tolerance": TOLERANCE, "chosen": chosen, "results": results}
    out.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
