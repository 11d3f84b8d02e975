"""Engine fit time by stage, and the fit-budget options measured on a validation window.

Fits the whole default engine (hybrid + reranker) and the same engine with
``fine_tune_once`` (the bi-encoder fine-tuned once: the reranker's example model on the data
before its first cutoff, then continued on all the data for serving; two cutoffs) on the same
data, and scores them on a validation window: purchases of the ``--valid-days`` days before
``--test-from``, fitted on everything before them. The test window is never read. Reports fit
seconds by stage, the bi-encoder's best validation recall@100, recall/ndcg of the hybrid and the
reranked engine, and paired-bootstrap intervals of variant − default (ndcg@10 per user). A
variant could replace the default only if neither interval lies below zero.

    python benchmarks/bench_fit_time.py --data ../shared/data/online-retail --test-from 2011-10-01 \
        --variant once_6400 --output benchmarks/results/bench_fit_time.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from ecomrec.config import EngineConfig, ProtocolConfig

def _once(example_pairs: int, total_pairs: int) -> EngineConfig:
    base = EngineConfig()
    return base.replace(
        fine_tune_once=True,
        hybrid=base.hybrid.replace(bi_encoder=base.hybrid.bi_encoder.replace(max_pairs=total_pairs)),
        rerank=base.rerank.replace(example_bi_encoder_pairs=example_pairs, cutoffs=0),
    )


#: Variants measured against the default (the served bi-encoder and the examples' one fitted apart).
VARIANTS = {"once_3200": _once(3_200, 16_000), "once_6400": _once(6_400, 16_000)}


def measure(data, valid_from: pd.Timestamp, config: EngineConfig) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """Fit ``config`` on purchases before ``valid_from``; score it on the window after."""
    from ecomrec.data.split import make_split
    from ecomrec.engine import Engine
    from ecomrec.evaluation.protocol import evaluate_candidates, score_retriever

    split = make_split(data, valid_from)
    start = time.perf_counter()
    engine = Engine(config, show_progress=False).fit(split.history)
    seconds = time.perf_counter() - start
    ks = ProtocolConfig().ks
    out: dict = {"fit_seconds": seconds, "fit_seconds_by_stage": engine.fit_stages_,
                 "fusion": {"weights": engine.hybrid_.weights_, "depths": engine.hybrid_.quotas_}}
    per_user = {}
    for name, model in (("hybrid", engine.hybrid_), ("engine", engine.model_)):
        ranked_all, ranked_new, _ = score_retriever(model, split, max(ks), 256)
        out[name], per_user[name] = evaluate_candidates(split, ranked_all, ranked_new, ks, per_user=True)
    log = engine.hybrid_.models_["bi_encoder"].training_log_
    out["bi_encoder_best_valid_recall@100"] = max(row["valid_recall@100"] for row in log)
    out["bi_encoder_steps"] = int(log[-1]["step"])
    return out, per_user


def main() -> None:
    from ecomrec import datasets
    from ecomrec.evaluation.protocol import paired_bootstrap
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--test-from", required=True, help="first day of the test window (never read)")
    parser.add_argument("--valid-days", type=int, default=30)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="once_6400")
    parser.add_argument("--output", default="benchmarks/results/bench_fit_time.json")
    args = parser.parse_args()

    test_from = pd.Timestamp(args.test_from)
    valid_from = test_from - pd.Timedelta(days=args.valid_days)
    data = datasets.online_retail(args.data).between(None, test_from)  # the test window is cut off here
    report: dict = {"environment": environment(), "valid_from": str(valid_from.date()), "valid_to": str(test_from.date()), "variants": {}}
    per_user = {}
    for name, config in {"default": EngineConfig(), args.variant: VARIANTS[args.variant]}.items():
        report["variants"][name], per_user[name] = measure(data, valid_from, config)
        report["variants"][name]["config"] = config.to_dict()
        print(name, json.dumps({k: v for k, v in report["variants"][name].items() if k != "config"}, default=float))
    key = f"{args.variant} - default"
    report[key] = {
        method: {target: paired_bootstrap(per_user[args.variant][method][target]["ndcg@10"], per_user["default"][method][target]["ndcg@10"])
                 for target in ("all", "new")}
        for method in ("hybrid", "engine")
    }
    intervals = [d["ci95"] for m in report[key].values() for d in m.values()]
    report["verdict"] = f"{args.variant} could be the default" if all(hi >= 0 for _, hi in intervals) else f"{args.variant} loses quality: the default stays"
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report[key], indent=2, default=float))
    print(report["verdict"])


if __name__ == "__main__":
    main()
