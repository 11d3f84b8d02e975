"""Does per-shop source tuning (``HybridConfig.tune_budget_s``) help? Nested validation on both shops.

For each shop the engine is fitted on the purchases before its validation window (the
``--valid-days`` days before the fixed test start, which is never read) with and without the
tuning, and both are scored on that window: hybrid and reranked engine, ndcg@10 per user on the
``all`` and ``new`` targets, paired-bootstrap intervals of tuned − untuned. The tuning itself
only sees the fit data: it tunes on the last 30 days before the validation window.

The engine here leaves the bi-encoder out of the fusion: tuning does not touch it, its fine-tune
would dominate the run (30 min on dunnhumby), and fusion weighs it 0 on dunnhumby anyway.

The rule for the default, fixed before the run (:func:`verdict`): tuning goes on by default when,
on both shops, no cell's interval lies wholly below zero and the reranked engine's mean ndcg@10
difference summed over ``all`` and ``new`` is positive.

    python benchmarks/bench_tuning.py --online-retail ../shared/data/online-retail \
        --dunnhumby ../shared/data/dunnhumby-sample --budget 120
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from ecomrec.config import FUSION_SOURCES, EngineConfig, ProtocolConfig


def engine_config(budget: float) -> EngineConfig:
    """The default engine without the text source and search, with ``budget`` seconds of tuning."""
    base = EngineConfig()
    fusion = base.hybrid.fusion
    sources = [s for s in FUSION_SOURCES if s != "bi_encoder"]
    fusion = fusion.replace(quotas={s: fusion.quotas[s] for s in sources}, weights={s: fusion.weights[s] for s in sources})
    return base.replace(hybrid=base.hybrid.replace(fusion=fusion, tune_budget_s=budget), search=base.search.replace(enabled=False))


def measure(data, valid_from: pd.Timestamp, config: EngineConfig) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """Fit ``config`` on the purchases before ``valid_from``; score it on the window after."""
    from ecomrec.data.split import make_split
    from ecomrec.engine import Engine
    from ecomrec.evaluation.protocol import evaluate_candidates, score_retriever

    split = make_split(data, valid_from)
    start = time.perf_counter()
    engine = Engine(config, show_progress=False).fit(split.history)
    out: dict = {"fit_seconds": time.perf_counter() - start, "fit_seconds_by_stage": engine.fit_stages_,
                 "source_tuning": engine.hybrid_.describe().get("source_tuning"),
                 "fusion": {"weights": engine.hybrid_.weights_, "depths": engine.hybrid_.quotas_},
                 "reranker_orders": engine.model_.reranker.orders}
    per_user = {}
    ks = ProtocolConfig().ks
    for name, model in (("hybrid", engine.hybrid_), ("engine", engine.model_)):
        ranked_all, ranked_new, _ = score_retriever(model, split, max(ks), 256)
        out[name], per_user[name] = evaluate_candidates(split, ranked_all, ranked_new, ks, per_user=True)
    return out, per_user


def verdict(differences: dict[str, dict]) -> str:
    """The rule fixed before the run (module docstring); ``differences``: shop → method → target."""
    for shop, by_method in differences.items():
        if any(c["ci95"][1] < 0 for m in by_method.values() for c in m.values()):
            return f"off by default: a cell loses on {shop}"
        if sum(by_method["engine"][t]["mean_diff"] for t in ("all", "new")) <= 0:
            return f"off by default: the engine does not gain on {shop}"
    return "on by default: no cell loses and the engine gains on both shops"


def main() -> None:
    from ecomrec import datasets
    from ecomrec.evaluation.protocol import paired_bootstrap
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--online-retail", required=True)
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--online-retail-test-from", default="2011-10-01")
    parser.add_argument("--dunnhumby-test-from", default="2017-10-29")
    parser.add_argument("--valid-days", type=int, default=30)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--output", default="benchmarks/results/bench_tuning.json")
    args = parser.parse_args()

    shops = {
        "online-retail": (lambda: datasets.online_retail(args.online_retail), args.online_retail_test_from),
        "dunnhumby": (lambda: datasets.dunnhumby_sample(args.dunnhumby), args.dunnhumby_test_from),
    }
    report: dict = {"environment": environment(), "budget_s": args.budget, "shops": {}, "differences": {}}
    for shop, (load, test_from) in shops.items():
        test_from = pd.Timestamp(test_from)
        valid_from = test_from - pd.Timedelta(days=args.valid_days)
        data = load().between(None, test_from)  # the test window is cut off here
        runs, per_user = {}, {}
        for name, budget in (("untuned", 0.0), ("tuned", args.budget)):
            runs[name], per_user[name] = measure(data, valid_from, engine_config(budget))
            print(shop, name, json.dumps({k: runs[name][k] for k in ("fit_seconds", "hybrid", "engine")}, default=float), flush=True)
        report["shops"][shop] = {"valid_from": str(valid_from.date()), "valid_to": str(test_from.date()), **runs}
        report["differences"][shop] = {
            method: {t: paired_bootstrap(per_user["tuned"][method][t]["ndcg@10"], per_user["untuned"][method][t]["ndcg@10"])
                     for t in ("all", "new")} for method in ("hybrid", "engine")
        }
    report["verdict"] = verdict(report["differences"])
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report["differences"], indent=2, default=float))
    print(report["verdict"])


if __name__ == "__main__":
    main()
