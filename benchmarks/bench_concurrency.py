"""Read throughput with 1, 2 and 4 reader threads, while catalog rebuilds loop in the background.

Every reader makes single-user calls (``Engine.candidates(k=200)`` or ``Engine.recommend(k=10)``)
for ``--seconds``; the libraries' own thread pools are pinned to one thread (torch, FAISS, BLAS),
so each reader uses one core and the readers scale only if the engine lets them run at once.
Reads take no lock: each pins one serving snapshot, while a background thread keeps publishing
new ones with ``rebuild_index`` (alternately the full catalog and one with ``--changed`` of the
titles edited; ``--rebuild-pause`` seconds between rebuilds, ``0`` = back to back; ``-1`` = no
rebuilds). Reported: calls/s per thread count, the speed-up over one reader (same process, same
engine, same users), per-call p50/p95/p99, the rebuilds completed, and errors (target 0).

    python benchmarks/bench_concurrency.py --data ../shared/data/online-retail --test-from 2011-10-01 \
        [--engine indexes/online-retail] --output benchmarks/results/bench_concurrency.json

``--engine``: a saved engine. Without one, a quick engine is fitted on purchases before
``--test-from`` and saved to ``indexes/bench-concurrency`` (reused next time): the default
configuration's shapes (3-layer bi-encoder, every source, the feature reranker) without the
fine-tunes and fusion tuning, which change the weights but not the work a read does.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ecomrec.engine import Engine
from ecomrec.evaluation.latency import LatencyStats
from ecomrec.evaluation.report import environment

logger = logging.getLogger("bench_concurrency")


def pin_library_threads() -> None:
    """One thread per reader inside torch, FAISS and BLAS: scaling comes from the readers alone."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    threadpool_limits(1)


def quick_engine(data_path: str, test_from: str, folder: Path) -> Engine:
    from ecomrec.config import BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig
    from ecomrec.datasets import online_retail

    if folder.exists():
        return Engine.load(folder)
    history, _ = online_retail(data_path).split_by_time(test_from)
    config = EngineConfig(hybrid=HybridConfig(bi_encoder=BiEncoderConfig(fine_tune=False), fusion=FusionConfig(tune=False)))
    engine = Engine(config, show_progress=False).fit(history)
    engine.save(folder)
    return engine


def catalogs(engine: Engine, changed: float, seed: int) -> list[pd.DataFrame]:
    """The listed catalog as is, and with a share of its titles edited (what a rebuild re-embeds)."""
    listed = np.flatnonzero(engine.listed_)
    ids = [str(engine.items_.ids[i]) for i in listed]
    texts = [engine.item_texts_[i] for i in listed]
    edited = set(np.random.default_rng(seed).choice(len(ids), size=max(1, int(changed * len(ids))), replace=False).tolist())
    return [
        pd.DataFrame({"item_id": ids, "text": texts}),
        pd.DataFrame({"item_id": ids, "text": [f"{t} (new edition)" if i in edited else t for i, t in enumerate(texts)]}),
    ]


def run_readers(engine: Engine, call: str, users: list[str], threads: int, seconds: float) -> dict[str, object]:
    """``threads`` readers calling for ``seconds``; calls/s and per-call latency."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def read(slot: int) -> None:
        fn = engine.candidates if call == "candidates" else engine.recommend
        k = 200 if call == "candidates" else 10
        i = slot
        try:
            while not stop.is_set():
                start = time.perf_counter()
                fn([users[i % len(users)]], k=k)
                latencies[slot].append(time.perf_counter() - start)
                i += threads
        except Exception as exc:  # noqa: BLE001 -- counted and reported
            errors.append(repr(exc))

    workers = [threading.Thread(target=read, args=(s,)) for s in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    wall = time.perf_counter() - began
    every = [x for per in latencies for x in per]
    return {
        "threads": threads, "calls": len(every), "calls_per_s": len(every) / wall, "errors": errors,
        "latency_ms": LatencyStats.from_seconds(every).to_dict() if every else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/online-retail")
    parser.add_argument("--test-from", default="2011-10-01")
    parser.add_argument("--engine", type=Path, default=None, help="a saved engine (default: fit a quick one)")
    parser.add_argument("--threads", default="1,2,4")
    parser.add_argument("--calls", default="candidates,recommend")
    parser.add_argument("--seconds", type=float, default=20.0, help="per thread count and call")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--changed", type=float, default=0.01, help="share of titles edited between rebuilds")
    parser.add_argument("--rebuild-pause", type=float, default=1.0, help="seconds between rebuilds; -1: no rebuilds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/bench_concurrency.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    pin_library_threads()
    engine = Engine.load(args.engine) if args.engine else quick_engine(args.data, args.test_from, Path("indexes/bench-concurrency"))
    rng = np.random.default_rng(args.seed)
    users = [str(engine.users_.ids[u]) for u in rng.choice(len(engine.users_), size=min(args.users, len(engine.users_)), replace=False)]
    for call in args.calls.split(","):  # warm-up: first calls load lazily built caches
        run_readers(engine, call, users, 1, 2.0)

    stop, rebuilds, rebuild_errors, rebuild_seconds = threading.Event(), [0], [], []
    versions = catalogs(engine, args.changed, args.seed)
    engine.rebuild_index(versions[1])  # embed the edited titles once: later rebuilds reuse the cache
    engine.rebuild_index(versions[0])

    def rebuild_loop() -> None:
        while not stop.is_set():
            try:
                start = time.perf_counter()
                engine.rebuild_index(versions[rebuilds[0] % 2])
                rebuild_seconds.append(time.perf_counter() - start)
                rebuilds[0] += 1
            except Exception as exc:  # noqa: BLE001 -- counted and reported
                rebuild_errors.append(repr(exc))
            stop.wait(args.rebuild_pause)

    background = None
    if args.rebuild_pause >= 0:
        background = threading.Thread(target=rebuild_loop)
        background.start()
    results: dict[str, list[dict[str, object]]] = {}
    try:
        for call in args.calls.split(","):
            results[call] = []
            for threads in [int(t) for t in args.threads.split(",")]:
                row = run_readers(engine, call, users, threads, args.seconds)
                row["speedup"] = row["calls_per_s"] / results[call][0]["calls_per_s"] if results[call] else 1.0
                results[call].append(row)
                logger.info("%s, %d reader(s): %.1f calls/s (x%.2f), p50 %.1f ms, %d errors", call, threads,
                            row["calls_per_s"], row["speedup"], row["latency_ms"]["p50"] if row["latency_ms"] else float("nan"),
                            len(row["errors"]))
    finally:
        stop.set()
        if background is not None:
            background.join()
    report = {
        "engine": str(args.engine or "indexes/bench-concurrency (quick fit)"),
        "seconds_per_point": args.seconds,
        "users": len(users),
        "library_threads_per_reader": 1,
        "rebuild": {
            "pause_s": args.rebuild_pause, "changed_titles": args.changed, "completed": rebuilds[0], "errors": rebuild_errors,
            "seconds": LatencyStats.from_seconds(rebuild_seconds).to_dict() if rebuild_seconds else None,
        },
        "results": results,
        "environment": environment(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({c: [(r["threads"], round(r["calls_per_s"], 1), round(r["speedup"], 2)) for r in rows] for c, rows in results.items()}))


if __name__ == "__main__":
    main()
