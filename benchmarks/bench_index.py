"""Recall-vs-latency operating points of every VectorIndex kind against exact (flat) search.

Synthetic vectors shaped like sentence embeddings: unit vectors near a low-dimensional manifold
(a mixture of Gaussians in a ``--latent``-dimensional space, mapped to ``d`` dimensions by a
random linear map, plus isotropic noise), queries from the same distribution, inner product. For each size and dimension: build time and index
size per kind; for each search setting, recall@10 and @100 against exact search, single-query
latency p50/p95/p99 (k=100, after warm-up, through VectorIndex.search) and batch throughput.
Everything in one process, so speed-ups are ratios to the flat index of the same run.

    python benchmarks/bench_index.py --sizes 100000,1000000 --dims 64,384 \
        --output benchmarks/results/bench_index.json
    python benchmarks/bench_index.py --sizes 1000000 --dims 384 --kinds ivf_flat,ivf_pq,ivf_pq+refine,ivf_sq8 \
        --output benchmarks/results/bench_index_1m_384.json
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import faiss
import numpy as np

from ecomrec.config import IndexConfig
from ecomrec.evaluation.latency import time_calls
from ecomrec.evaluation.report import environment
from ecomrec.index import VectorIndex

SWEEPS = {
    "ivf_flat": ("nprobe", [8, 16, 32, 64, 128, 256]),
    "ivf_pq": ("nprobe", [16, 64, 128, 256]),
    "ivf_pq+refine": ("nprobe", [16, 64, 128, 256]),
    "ivf_sq8": ("nprobe", [16, 32, 64, 128, 256]),
    "hnsw": ("ef_search", [64, 128, 256, 512]),
}


def kind_config(name: str, refine: int) -> IndexConfig:
    """``ivf_pq+refine``: IVF-PQ whose shortlist of ``refine × k`` is re-scored exactly."""
    kind, _, refined = name.partition("+")
    return IndexConfig(kind=kind, refine=refine if refined else 0, device="cpu")


def index_bytes(index: VectorIndex) -> int:
    """Serialized size of the index and of its re-scoring copies, if any."""
    return sum(len(faiss.serialize_index(part)) for part in (index._cpu, index._refine) if part is not None)


def embedding_like(n: int, d: int, seed: int, latent: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors: cluster centre + spread in a ``latent``-dim space, mapped up to ``d``, plus noise.

    ``seed`` fixes the space (centres, map) so database and queries share it; ``rng`` draws points.
    """
    space = np.random.default_rng(seed)
    centres = space.standard_normal((clusters, latent)).astype(np.float32)
    lift = space.standard_normal((latent, d)).astype(np.float32) / np.sqrt(latent)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: keeps the peak memory to the result itself
        stop = min(n, start + 100_000)
        z = centres[rng.integers(0, clusters, stop - start)] + 1.0 * rng.standard_normal((stop - start, latent), dtype=np.float32)
        block = z @ lift + 0.2 * rng.standard_normal((stop - start, d), dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / k for f, t in zip(found, truth)]))


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, single: int) -> dict:
    start = time.perf_counter()
    found = index.search(queries, k=100).item_ids
    batch_seconds = time.perf_counter() - start
    stats = time_calls(lambda q: index.search(q[None, :], k=100), list(queries[:single]), warmup=10)
    return {
        "recall@10": recall(found, truth, 10),
        "recall@100": recall(found, truth, 100),
        "single_ms": stats.to_dict(),
        "batch_qps": len(queries) / batch_seconds,
    }


def run(n: int, d: int, n_queries: int, single: int, kinds: list[str], seed: int, latent: int, refine: int) -> dict:
    clusters = max(100, n // 1000)
    vectors = embedding_like(n, d, seed, latent, clusters, np.random.default_rng(seed + 1))
    queries = embedding_like(n_queries, d, seed, latent, clusters, np.random.default_rng(seed + 2))
    result: dict = {"n": n, "dim": d, "latent": latent, "clusters": clusters, "queries": n_queries, "kinds": {}}
    flat = VectorIndex(kind="flat", device="cpu").build(vectors)
    truth = flat.search(queries, k=100).item_ids
    flat_point = measure(flat, queries, truth, single)
    result["kinds"]["flat"] = {"build_seconds": flat.build_seconds_, "bytes": n * d * 4, "points": [{"setting": None, **flat_point}]}
    print(f"n={n:,} d={d} flat: single p50 {flat_point['single_ms']['p50']:.2f} ms, {flat_point['batch_qps']:.0f} q/s batch", flush=True)
    del flat
    gc.collect()
    for kind in kinds:
        index = VectorIndex(kind_config(kind, refine)).build(vectors)
        size = index_bytes(index)
        name, values = SWEEPS[kind]
        default = index.nprobe_ if name == "nprobe" else index.ef_search_
        points = []
        for value in sorted(set(values + [default])):
            if name == "nprobe" and value > index.nlist_:
                continue
            index.set_search(**{name: value})
            point = {"setting": {name: value}, "default": value == default, **measure(index, queries, truth, single)}
            point["speedup_vs_flat_p50"] = flat_point["single_ms"]["p50"] / point["single_ms"]["p50"]
            points.append(point)
            print(
                f"n={n:,} d={d} {kind} {name}={value}{' (default)' if value == default else ''}: "
                f"recall@10 {point['recall@10']:.3f} @100 {point['recall@100']:.3f}, single p50 "
                f"{point['single_ms']['p50']:.3f} ms ({point['speedup_vs_flat_p50']:.0f}x flat), {point['batch_qps']:.0f} q/s",
                flush=True,
            )
        result["kinds"][kind] = {
            "build_seconds": index.build_seconds_,
            "bytes": size,
            "bytes_per_vector": size / n,
            "nlist": index.nlist_,
            "points": points,
        }
        print(f"n={n:,} d={d} {kind}: built in {index.build_seconds_:.1f}s, {size / 2**20:.0f} MiB ({size / n:.0f} B/vector)", flush=True)
        del index
        gc.collect()
    return result


def to_markdown(payload: dict) -> str:
    """One table per size and dimension: every operating point, defaults marked."""
    lines = []
    for run_ in payload["runs"]:
        flat = run_["kinds"]["flat"]["points"][0]
        lines += [
            f"**{run_['n']:,} x {run_['dim']}** (flat: single-query p50 {flat['single_ms']['p50']:.2f} ms, "
            f"{flat['batch_qps']:,.0f} queries/s in batch)",
            "",
            "| kind | setting | recall@10 | recall@100 | p50 ms | p95 ms | p99 ms | x flat (p50) | batch q/s | build s | size MiB | B/vector |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, info in run_["kinds"].items():
            if kind == "flat":
                continue
            for point in info["points"]:
                (name, value), = point["setting"].items()
                mark = " (default)" if point.get("default") else ""
                ms = point["single_ms"]
                lines.append(
                    f"| {kind} | {name}={value}{mark} | {point['recall@10']:.3f} | {point['recall@100']:.3f} | "
                    f"{ms['p50']:.2f} | {ms['p95']:.2f} | {ms['p99']:.2f} | {point['speedup_vs_flat_p50']:.0f} | "
                    f"{point['batch_qps']:,.0f} | {info['build_seconds']:.1f} | {info['bytes'] / 2**20:,.0f} | "
                    f"{info['bytes'] / run_['n']:,.0f} |"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dims", default="64,384")
    parser.add_argument("--kinds", default="ivf_flat,hnsw,ivf_pq,ivf_pq+refine,ivf_sq8")
    parser.add_argument("--refine", type=int, default=4, help="shortlist factor of ivf_pq+refine")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall and batch throughput")
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the synthetic vectors")
    parser.add_argument("--output", default="benchmarks/results/bench_index.json")
    parser.add_argument("--summarize", metavar="JSON", help="only print the Markdown tables of an earlier run")
    args = parser.parse_args()
    if args.summarize:
        print(to_markdown(json.loads(Path(args.summarize).read_text())))
        return
    runs = []
    for n in [int(x) for x in args.sizes.split(",")]:
        for d in [int(x) for x in args.dims.split(",")]:
            runs.append(run(n, d, args.queries, args.single, args.kinds.split(","), args.seed, args.latent, args.refine))
            out = Path(args.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            payload = {"environment": environment(), "faiss_threads": faiss.omp_get_max_threads(), "runs": runs}
            out.write_text(json.dumps(payload, indent=1) + "\n")
            out.with_suffix(".md").write_text(to_markdown(payload))


if __name__ == "__main__":
    main()
