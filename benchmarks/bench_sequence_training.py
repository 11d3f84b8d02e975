"""Does the sequence model (issue 29's transformer over purchase sequences) stay weak because it
stops training too early? Fitted alone, at validation origins before a shop's fixed test window,
with several epoch budgets, against ALS in the same run.

The first judgement of the source (benchmarks/README.md, "Sequences and repeat timing") found it
far below ALS (ndcg@10 0.16 against the hybrid's 0.35 on Online Retail's September window) with
its validation score still rising at its last epoch (12, the default). Here each origin and seed
fits, once, the fine-tuned bi-encoder whose title vectors the hybrid joins into the sequence
model's item inputs and ALS (the reference); then one sequence model per ``--epochs`` budget
(early stopping on its own held-out customers, as by default). With one seed a longer budget
replays the shorter one's epochs first (up to float rounding in threaded CPU kernels), so its
curve shows where the default stopped.

Reported per origin, seed and budget: ndcg@10 and recall@200 on ``all`` and ``new``, the epoch
whose weights were kept, the validation curve (ndcg@50 per epoch) and the fit time; the longer
budget minus the default with a paired-bootstrap interval over users.

    python benchmarks/bench_sequence_training.py --data ../shared/data/online-retail --origins 2011-09-01 --seeds 0 --epochs 12,40
    python benchmarks/bench_sequence_training.py --dunnhumby ../shared/data/dunnhumby-sample --origins 2017-09-28 --seeds 0,1 --epochs 12,40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench_sequence import TEST_FROM, load_shop, window_end
from ecomrec.config import ALSConfig, BiEncoderConfig, SequenceConfig
from ecomrec.data.split import make_split
from ecomrec.evaluation.protocol import evaluate_candidates, score_retriever
from ecomrec.evaluation.report import environment
from ecomrec.metrics import paired_bootstrap

KS = (10, 200)


def scored(method: Any, split: Any) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """ndcg@10 and recall@200 on ``all`` and ``new``, and the per-user values."""
    ranked_all, ranked_new, _ = score_retriever(method, split, max(KS), 1024)
    means, per_user = evaluate_candidates(split, ranked_all, ranked_new, KS, per_user=True)
    return {t: {m: means[t][m] for m in ("ndcg@10", "recall@200")} for t in means}, per_user


def run_origin(data: Any, origin: pd.Timestamp, seed: int, budgets: list[int]) -> dict[str, Any]:
    from ecomrec.retrieval import RETRIEVERS, SequenceRetriever

    split = make_split(data, origin, window_end(origin))
    out: dict[str, Any] = {"origin": str(origin.date()), "seed": seed, "users": int(len(split.users)), "methods": {}}
    start = time.perf_counter()
    als = RETRIEVERS["als"](ALSConfig(seed=seed), show_progress=False).fit(split.history)
    out["methods"]["als"] = {"metrics": scored(als, split)[0], "fit_seconds": time.perf_counter() - start}
    bi = RETRIEVERS["bi_encoder"](BiEncoderConfig(seed=seed), show_progress=False).fit(split.history)
    titles = bi.index_vectors_()
    per_user = {}
    for epochs in budgets:
        start = time.perf_counter()
        model = SequenceRetriever(SequenceConfig(seed=seed, epochs=epochs), show_progress=False).fit(split.history, title_vectors=titles)
        seconds = time.perf_counter() - start
        metrics, per_user[epochs] = scored(model, split)
        out["methods"][f"sequence:{epochs}"] = {
            "metrics": metrics, "fit_seconds": seconds, **model.describe()["training"],
            "curve": [round(r["valid_ndcg@50"], 4) for r in model.training_log_]}
        print(json.dumps({"origin": out["origin"], "seed": seed, "epochs": epochs, **out["methods"][f"sequence:{epochs}"]}), flush=True)
    base = budgets[0]
    out["diffs"] = {f"sequence:{e} - sequence:{base}": {t: paired_bootstrap(per_user[e][t]["ndcg@10"], per_user[base][t]["ndcg@10"])
                                                          for t in ("all", "new")} for e in budgets[1:]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Online Retail folder")
    parser.add_argument("--dunnhumby", help="the dunnhumby sample folder (instead of --data)")
    parser.add_argument("--origins", required=True, help="comma-separated YYYY-MM-DD, all before the shop's test window")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", default="12,40", help="epoch budgets, the default first")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    data, shop = load_shop(args)
    origins = [pd.Timestamp(o) for o in args.origins.split(",")]
    if any(window_end(o) >= TEST_FROM[shop] for o in origins):
        raise SystemExit(f"an origin's window reaches {shop}'s fixed test window ({TEST_FROM[shop].date()}): not scored here")
    budgets = [int(e) for e in args.epochs.split(",")]
    output = Path(args.output or f"benchmarks/results/bench_sequence_training_{shop}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    for origin in origins:
        for seed in args.seeds.split(","):
            runs.append(run_origin(data, origin, int(seed), budgets))
            report = {"shop": shop, "budgets": budgets, "runs": runs, "environment": environment()}
            output.write_text(json.dumps(report, indent=1, default=float))  # after each run: a long sweep keeps what it did
    for run in runs:
        for name, row in run["methods"].items():
            m = row["metrics"]
            print(f"{run['origin']} seed {run['seed']} {name:12s} all {m['all']['ndcg@10']:.4f} new {m['new']['ndcg@10']:.4f} "
                  f"r@200 {m['all']['recall@200']:.4f}/{m['new']['recall@200']:.4f} fit {row['fit_seconds']:.0f}s"
                  + (f" kept epoch {row['best_epoch']} of {row['epochs']}" if "best_epoch" in row else ""))
        print(json.dumps(run.get("diffs", {})))


if __name__ == "__main__":
    main()
