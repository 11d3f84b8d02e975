"""Title encoding on Ray against the local path: titles/s per worker, 1 → 2 workers, Ray's overhead.

The engine's text model shape (3 MiniLM layers, titles up to 32 tokens; weights as shipped,
since fine-tuning does not change the speed) encodes ``--titles`` distinct real titles from the
dunnhumby product table, each run into an empty embedding cache:

* ``local`` — ``BiEncoderRetriever.embed_items`` in this process, torch on 1 thread (one CPU,
  as a Ray worker gets) and on every core;
* ``ray`` — ``ecomrec.scale.encode_on_ray`` with 1 and 2 one-CPU actors on a local Ray started
  once (its start-up is reported apart; a cluster is started once, not per rebuild), after one
  call on 200 titles that pays Ray Data's first use in this process (its start of the stats
  actor and the like: ``ray_data_first_call_seconds``, reported apart too) so that the 1- and
  2-worker runs start alike; each run still starts its actors and ships the model.

``--copies K`` encodes every title also in K − 1 numbered variants ("title 2", ...): a catalog K
times the size with titles of the same lengths, to show how the fixed cost of a Ray run (actors,
imports, the model through the object store) fades as the catalog grows.

Rates count the encoding call end to end (Ray: the dataset, the actors' start-up and model load,
the transfer back and the cache fill). Peak memory: the driver's, and each worker's as it reports
it (``worker_peak_mb``). The issue's bars: 2 workers ≥ 1.6× one worker; 1 Ray worker ≥ 0.9× local
on one thread.

    python benchmarks/bench_ray_encode.py --dunnhumby ../shared/data/dunnhumby-sample --titles 20000
    python benchmarks/bench_ray_encode.py --dunnhumby ../shared/data/dunnhumby-sample --copies 5 \
        --output benchmarks/results/bench_ray_encode_x5.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    import torch

    from ecomrec import scale
    from ecomrec.config import BiEncoderConfig
    from ecomrec.data.synthetic import synthetic
    from ecomrec.evaluation.report import environment
    from ecomrec.retrieval import BiEncoderRetriever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--titles", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1, help="each title also in copies - 1 numbered variants")
    parser.add_argument("--output", default="benchmarks/results/bench_ray_encode.json")
    args = parser.parse_args()

    catalog = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str, keep_default_na=False)
    titles = list(dict.fromkeys(t for t in catalog["text"] if t.strip()))[: args.titles]
    titles += [f"{t} {k}" for k in range(2, args.copies + 1) for t in titles]
    retriever = BiEncoderRetriever(BiEncoderConfig(layers=args.layers, fine_tune=False), show_progress=False).fit(
        synthetic(n_users=20, n_items=12, n_clusters=2, seed=1))
    report: dict = {"environment": environment(), "titles": len(titles), "copies": args.copies, "layers": args.layers, "runs": {}}
    threads = torch.get_num_threads()
    for n in (1, threads):
        torch.set_num_threads(n)
        start = time.perf_counter()
        retriever.encode_titles(titles)
        seconds = time.perf_counter() - start
        report["runs"][f"local_{n}_thread"] = {"seconds": seconds, "titles_per_second": len(titles) / seconds}
        print(f"local, {n} thread(s): {len(titles) / seconds:.0f} titles/s", flush=True)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    with scale.ray_session(None, 2):
        report["ray_start_seconds"] = time.perf_counter() - started
        start = time.perf_counter()
        scale.encode_on_ray(retriever, [f"warm-up {i}" for i in range(200)], workers=1)
        report["ray_data_first_call_seconds"] = time.perf_counter() - start
        for workers in (1, 2):
            start = time.perf_counter()
            encoded, out = scale.encode_on_ray(retriever, titles, workers=workers)
            seconds = time.perf_counter() - start
            assert len(encoded) == len(set(titles))
            report["runs"][f"ray_{workers}_workers"] = {**out, "seconds": seconds, "titles_per_second": len(titles) / seconds}
            print(f"ray, {workers} worker(s): {len(titles) / seconds:.0f} titles/s", flush=True)
    report["driver_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # workers': each ray run's worker_peak_mb
    runs = report["runs"]
    report["ratios"] = {
        "2_workers_over_1": runs["ray_2_workers"]["titles_per_second"] / runs["ray_1_workers"]["titles_per_second"],
        "1_ray_worker_over_local_1_thread": runs["ray_1_workers"]["titles_per_second"] / runs["local_1_thread"]["titles_per_second"],
        "1_ray_worker_busy_over_local_1_thread": runs["ray_1_workers"]["titles_per_busy_second"] / runs["local_1_thread"]["titles_per_second"],
    }
    report["ray_fixed_seconds"] = {  # per run: what is not encoding in the workers (start, imports, model, transfers)
        name: run["seconds"] - max(run["worker_busy_seconds"]) for name, run in runs.items() if name.startswith("ray_")}
    print(json.dumps(report["ratios"], indent=2))
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
