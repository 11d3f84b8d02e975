"""At scale: sharded search against one index, and the whole rebuild pipeline on Ray.

``search`` (the default part): synthetic unit vectors shaped like embeddings
(``bench_index.embedding_like``); one index and ``ShardedIndex`` with S shards built from one
trained structure, same config. Per S: whether the top 10 equals the single index's for every
query, single-query latency p50/p95/p99 (k=100, warm), batch throughput, and the share of the
sharded search time spent merging the shards' results (the merge is timed inside the same calls).

    python benchmarks/bench_scale.py --items 1000000 --dim 64 --shards 1,2,4 --kind ivf_flat

``pipeline``: the rebuild pipeline over a synthetic catalog of ``--items`` titles with a cheap
hashing encoder (:class:`HashingEncoder`: it measures the pipeline, not MiniLM, whose rate is
bench_ray_encode.py's): titles/s locally and on a local Ray with 1 and 2 one-CPU workers (the
Ray session started once, apart), each worker's peak memory; the workers writing the Parquet
embedding store themselves (one Ray task per partition); S shards built from one trained
structure here and in parallel Ray tasks, bytes per shard; query latency sharded against one
index and the merge's share; then a 1 % title change: the store's anti-join finds the changed
titles, only they are encoded on Ray into the store, and the shards holding changed vectors are
rebuilt on Ray (the others reused as they are).

    python benchmarks/bench_scale.py --part pipeline --items 10000000 --dim 32 --shards 4
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

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


def top_agreement(sharded, one, k: int = 10) -> dict:  # type: ignore[no-untyped-def]
    """How the sharded top ``k`` compares with one index's, query by query: ``identical`` (same
    ids in the same order) and ``same_up_to_ties`` (the same scores at every rank, and the same
    ids wherever the score is above the k-th: the merge orders equal scores by id, one FAISS
    index by its lists' order, so items tied at the k-th score may differ); ``tied_at_k``: the
    queries whose one-index list has the same score at ranks k and k + 1 (an ambiguous top k)."""
    close = lambda a, b: np.isclose(a, b, rtol=0, atol=1e-6)  # noqa: E731
    sa, sb = sharded.scores[:, :k], one.scores[:, :k]
    same = np.all(close(sa, sb), axis=1)
    for row in np.flatnonzero(same):
        above_a, above_b = sharded.item_ids[row, :k][sa[row] > sa[row, -1] + 1e-6], one.item_ids[row, :k][sb[row] > sb[row, -1] + 1e-6]
        same[row] = set(above_a.tolist()) == set(above_b.tolist())
    return {"queries": int(len(sa)), "identical": int(np.all(sharded.item_ids[:, :k] == one.item_ids[:, :k], axis=1).sum()),
            "same_up_to_ties": int(same.sum()), "tied_at_k": int(close(one.scores[:, k - 1], one.scores[:, k]).sum()),
            "all_same_up_to_ties": bool(same.all())}


class HashingEncoder:
    """Signed feature hashing of a title's words into ``dim`` floats, unit length: a cheap
    encoder with the encoder protocol of ``ecomrec.scale.encode_titles_on_ray``."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def load(self, device: str) -> HashingEncoder:
        return self

    def __call__(self, texts: list[str]) -> np.ndarray:
        tokens = [t.split() for t in texts]
        counts = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        words = np.asarray([w for t in tokens for w in t], dtype=object)
        h = pd.util.hash_array(words) if len(words) else np.zeros(0, np.uint64)
        cells = np.repeat(np.arange(len(texts)), counts) * self.dim + (h % np.uint64(self.dim)).astype(np.int64)
        signs = np.where(h >> np.uint64(63), 1.0, -1.0)
        out = np.bincount(cells, weights=signs, minlength=len(texts) * self.dim).reshape(len(texts), self.dim).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def synthetic_titles(n: int, seed: int, vocabulary: int = 20_000) -> list[str]:
    """``n`` titles of 3-8 words from a Zipf-like vocabulary (shared words make neighbours)."""
    rng = np.random.default_rng(seed)
    words = np.asarray([f"w{i}" for i in range(vocabulary)], dtype=object)
    weights = 1.0 / np.arange(1, vocabulary + 1) ** 0.8
    picks = rng.choice(vocabulary, size=(n, 8), p=weights / weights.sum())
    lengths = rng.integers(3, 9, n)
    return [" ".join(words[row[:size]]) for row, size in zip(picks, lengths)]


def pipeline(args: argparse.Namespace) -> dict:
    from ecomrec import scale
    from ecomrec.encoders import text_hashes
    from ecomrec.index import EmbeddingStore

    report: dict = {"items": args.items, "dim": args.dim, "shards": int(args.shards), "kind": args.kind, "runs": {}}
    start = time.perf_counter()
    titles = synthetic_titles(args.items, seed=0)
    ids = [f"sku{i}" for i in range(args.items)]
    report["catalog_seconds"] = time.perf_counter() - start
    encoder = HashingEncoder(args.dim)
    start = time.perf_counter()
    local = np.vstack([encoder(titles[lo : lo + 100_000]) for lo in range(0, len(titles), 100_000)])
    seconds = time.perf_counter() - start
    report["runs"]["local"] = {"seconds": seconds, "titles_per_second": len(titles) / seconds}
    print(f"local: {len(titles) / seconds:,.0f} titles/s", flush=True)
    frame = pd.DataFrame({"row": np.arange(len(titles)), "text": titles})
    started = time.perf_counter()
    with scale.ray_session(None, 2) as ray:
        report["ray_start_seconds"] = time.perf_counter() - started
        for workers in (1, 2):
            start = time.perf_counter()
            keys, vectors, run = scale.encode_titles_on_ray(frame, encoder, workers=workers, batch_size=args.ray_batch)
            seconds = time.perf_counter() - start
            same = bool(np.allclose(vectors[np.argsort(keys["row"].to_numpy())], local, atol=1e-6))
            report["runs"][f"ray_{workers}_workers"] = {**run, "seconds": seconds, "titles_per_second": len(titles) / seconds,
                                                       "same_vectors_as_local": same}
            print(f"ray, {workers} worker(s): {len(titles) / seconds:,.0f} titles/s (vectors as local: {same})", flush=True)
            del keys, vectors
        with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
            store = EmbeddingStore(folder, model="hashing", dim=args.dim, partitions=args.partitions)
            keyed = pd.DataFrame({"item_id": ids, "text_hash": text_hashes(titles), "text": titles})
            start = time.perf_counter()
            _, _, run = scale.encode_titles_on_ray(keyed, encoder, workers=2, batch_size=args.ray_batch, store=store)
            report["store_on_ray"] = {**run, "seconds": time.perf_counter() - start,
                                      "bytes": sum(p.stat().st_size for p in Path(folder).glob("*.parquet"))}
            print(f"encode + store on 2 workers: {time.perf_counter() - start:.1f} s", flush=True)
            del keyed
            report["title_change"] = change_titles(store, ids, titles, encoder, args)
        report["build"] = build_both_ways(ray, local, int(args.shards), args)
    report["driver_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def change_titles(store, ids: list[str], titles: list[str], encoder: HashingEncoder,  # type: ignore[no-untyped-def]
                  args: argparse.Namespace) -> dict:
    """1 % of the titles changed: the store's anti-join finds exactly those, only they are encoded
    on Ray (workers writing their partitions), and the store then holds every new title."""
    from ecomrec import scale
    from ecomrec.encoders import text_hashes

    rows = np.sort(np.random.default_rng(5).choice(len(titles), size=max(1, len(titles) // 100), replace=False))
    changed = list(titles)
    for row in rows:
        changed[row] = f"{titles[row]} new"
    start = time.perf_counter()
    missing = store.missing(ids, changed)
    anti_join = time.perf_counter() - start
    frame = pd.DataFrame({"item_id": [ids[r] for r in missing], "text": [changed[r] for r in missing]})
    frame["text_hash"] = text_hashes(frame["text"].tolist())
    start = time.perf_counter()
    _, _, run = scale.encode_titles_on_ray(frame, encoder, workers=2, batch_size=args.ray_batch, store=store)
    encode = time.perf_counter() - start
    found = store.get([ids[r] for r in rows], [changed[r] for r in rows])[1]
    out = {"titles_changed": int(len(rows)), "found_missing": int(len(missing)),
           "missing_are_the_changed": bool(np.array_equal(missing, rows)), "anti_join_seconds": anti_join,
           "encode_and_store_seconds": encode, "partitions_rewritten": run.get("store_partitions_written", 0),
           "store_holds_new_titles": bool(found.all())}
    print(f"1 % title change: anti-join {anti_join:.1f} s found {len(missing):,} (the changed: {out['missing_are_the_changed']}), "
          f"encoded and stored in {encode:.1f} s", flush=True)
    return out


def build_both_ways(ray, vectors: np.ndarray, shards: int, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """One trained structure; the shards built here and in parallel Ray tasks; one index from the
    same training for the latency comparison; then a 1 % change rebuilt with ``previous``."""
    import faiss

    from ecomrec import scale
    from ecomrec.index import ShardedIndex, VectorIndex, shard_builds
    from ecomrec.index.sharded import build_shards_here, shard_of

    config = IndexConfig(kind=args.kind, nlist=args.nlist, device="cpu", shards=shards)
    ids = np.arange(len(vectors), dtype=np.int64)
    start = time.perf_counter()
    template = VectorIndex(config).train(vectors)
    out: dict = {"train_seconds": time.perf_counter() - start, "nlist": template.nlist_, "nprobe": template.nprobe_}
    part = shard_of(ids, shards)
    parts = [(vectors[part == s], ids[part == s]) for s in range(shards)]
    start = time.perf_counter()
    here = build_shards_here(template, parts)
    out["shards_here_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    on_ray = scale.ray_shard_builder(ray)(template, parts)
    out["shards_on_ray_seconds"] = time.perf_counter() - start
    out["shard_bytes"] = [int(len(faiss.serialize_index(s._cpu))) for s in here]
    out["bytes_per_vector"] = sum(out["shard_bytes"]) / len(vectors)
    out["same_shards_here_and_on_ray"] = all(np.array_equal(faiss.serialize_index(a._cpu), faiss.serialize_index(b._cpu))
                                             for a, b in zip(here, on_ray))
    del here
    one = build_shards_here(template, [(vectors, ids)])[0]
    sharded = ShardedIndex.from_shards(on_ray)
    queries = vectors[np.random.default_rng(3).choice(len(vectors), size=args.queries, replace=False)]
    base = measure(one, queries, args.single)
    with MergeClock() as clock:
        point = measure(sharded, queries, args.single)
        total = point["single_ms"]["mean"] * 1e-3 * (args.single + 10) + args.queries / point["batch_qps"]
    out["search"] = {"one_index_single_ms": base["single_ms"], "sharded_single_ms": point["single_ms"],
                     "top10": top_agreement(point["found"], base["found"]),
                     "merge_share": clock.seconds / total}
    print(f"build: train {out['train_seconds']:.1f} s, {shards} shards here {out['shards_here_seconds']:.1f} s, "
          f"on Ray {out['shards_on_ray_seconds']:.1f} s; search p50 {point['single_ms']['p50']:.2f} ms sharded vs "
          f"{base['single_ms']['p50']:.2f} one index, merge {out['search']['merge_share']:.1%}", flush=True)
    del one
    first = ShardedIndex(config).build(vectors, ids, trained=template)
    changed = vectors.copy()
    rows = np.random.default_rng(4).choice(len(vectors), size=len(vectors) // 100, replace=False)
    changed[rows] = np.roll(changed[rows], 1, axis=0)
    start = time.perf_counter()
    with shard_builds(scale.ray_shard_builder(ray)):
        again = ShardedIndex(config).build(changed, ids, previous=first)
    out["one_percent_change"] = {"items_changed": int(len(rows)), "shards_reused": again.reused_,
                                 "rebuild_on_ray_seconds": time.perf_counter() - start}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("search", "pipeline"), default="search")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shards", default="1,2,4", help="search: shard counts to compare; pipeline: one count")
    parser.add_argument("--kind", default="ivf_flat")
    parser.add_argument("--nlist", type=int, default=0, help="pipeline: IVF lists (0: the IndexConfig default)")
    parser.add_argument("--partitions", type=int, default=16, help="pipeline: embedding store partitions")
    parser.add_argument("--ray-batch", type=int, default=8192, help="pipeline: titles per Ray batch")
    parser.add_argument("--scratch", help="pipeline: folder for the temporary store (default: the system's)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--output", help="default: benchmarks/results/bench_scale.json (pipeline: bench_scale_pipeline.json)")
    args = parser.parse_args()
    results = Path(__file__).resolve().parent / "results"  # from the repo root or benchmarks/ alike
    output = args.output or str(results / ("bench_scale_pipeline.json" if args.part == "pipeline" else "bench_scale.json"))
    if args.part == "pipeline":
        report = {"environment": environment(), **pipeline(args)}
        Path(output).write_text(json.dumps(report, indent=2, default=float) + "\n")
        return
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
        agreement = top_agreement(point["found"], base["found"])
        same = agreement["identical"] == agreement["queries"]
        report["sharded"][shards] = {
            "build_seconds": build, "top10_identical": same, "top10": agreement, "single_ms": point["single_ms"], "batch_qps": point["batch_qps"],
            "merge_share": clock.seconds / total, "p50_vs_one_index": point["single_ms"]["p50"] / base["single_ms"]["p50"],
        }
        print(f"{shards} shards: top-10 identical {same}, p50 {point['single_ms']['p50']:.3f} ms "
              f"({report['sharded'][shards]['p50_vs_one_index']:.2f}x one index), merge {clock.seconds / total:.1%} of search time",
              flush=True)
    Path(output).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
