"""Sharded search against one index: same answers, latency, and the merge's share of it.

Synthetic unit vectors shaped like embeddings (``bench_index.embedding_like``); one index and
``ShardedIndex`` with S shards built from one trained structure, same config. Per S: whether the
top 10 equals the single index's for every query, single-query latency p50/p95/p99 (k=100,
warm), batch throughput, and the share of the sharded search time spent merging the shards'
results (the merge is timed inside the same calls).

    python benchmarks/bench_scale.py --items 1000000 --dim 64 --shards 1,2,4 --kind ivf_flat

(Issue 12's Ray rebuild measurements — titles/s per worker, 1 → 2 worker scaling — join this
script with the Ray backend.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_index import embedding_like
from ecomrec.config import IndexConfig
from ecomrec.evaluation.latency import time_calls
from ecomrec.evaluation.report import environment
from ecomrec.index import ShardedIndex, VectorIndex
from ecomrec.index import sharded as sharded_module


class MergeClock:
    """Wraps ``sharded.merge`` to add up the seconds spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._merge = sharded_module.merge

    def __enter__(self) -> MergeClock:
        def timed(parts, k):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return self._merge(parts, k)
            finally:
                self.seconds += time.perf_counter() - start

        sharded_module.merge = timed
        return self

    def __exit__(self, *exc: object) -> None:
        sharded_module.merge = self._merge


def measure(index, queries: np.ndarray, single: int) -> dict:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    found = index.search(queries, k=100)
    batch = time.perf_counter() - start
    stats = time_calls(lambda q: index.search(q[None, :], k=100), list(queries[:single]), warmup=10)
    return {"found": found, "single_ms": stats.to_dict(), "batch_qps": len(queries) / batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--kind", default="ivf_flat")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--output", default="benchmarks/results/bench_scale.json")
    args = parser.parse_args()

    clusters = max(100, args.items // 1000)
    vectors = embedding_like(args.items, args.dim, 0, 32, clusters, np.random.default_rng(1))
    queries = embedding_like(args.queries, args.dim, 0, 32, clusters, np.random.default_rng(2))
    config = IndexConfig(kind=args.kind, device="cpu")
    one = VectorIndex(config).build(vectors)
    base = measure(one, queries, args.single)
    report: dict = {"environment": environment(), "items": args.items, "dim": args.dim, "kind": args.kind,
                    "one_index": {"build_seconds": one.build_seconds_, "single_ms": base["single_ms"], "batch_qps": base["batch_qps"]},
                    "sharded": {}}
    print(f"one index: p50 {base['single_ms']['p50']:.3f} ms, {base['batch_qps']:.0f} q/s", flush=True)
    for shards in [int(s) for s in args.shards.split(",")]:
        start = time.perf_counter()
        index = ShardedIndex(config, shards=shards).build(vectors)
        build = time.perf_counter() - start
        with MergeClock() as clock:
            point = measure(index, queries, args.single)
            total = point["single_ms"]["mean"] * 1e-3 * (args.single + 10) + args.queries / point["batch_qps"]
        same = bool(np.array_equal(point["found"].item_ids[:, :10], base["found"].item_ids[:, :10]))
        report["sharded"][shards] = {
            "build_seconds": build, "top10_identical": same, "single_ms": point["single_ms"], "batch_qps": point["batch_qps"],
            "merge_share": clock.seconds / total, "p50_vs_one_index": point["single_ms"]["p50"] / base["single_ms"]["p50"],
        }
        print(f"{shards} shards: top-10 identical {same}, p50 {point['single_ms']['p50']:.3f} ms "
              f"({report['sharded'][shards]['p50_vs_one_index']:.2f}x one index), merge {clock.seconds / total:.1%} of search time",
              flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
