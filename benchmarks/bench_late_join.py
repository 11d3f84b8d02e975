"""What does the late join cost in ranking, against a full-attention cross-encoder trained the same way?

The reranker's text model (``CrossEncoderConfig``, 3 MiniLM layers) reads user and item apart in
its lower layers and joins them only in the top one, so items are encoded once per catalog. A
full-attention cross-encoder (``joined_layers = layers``) reads every pair together in every
layer. Both are trained here exactly as ``RerankConfig(text=True)`` trains its text model: on the
first training cutoff's (history text, candidate title) pairs of the default candidate stage
before ``--test-from``, early-stopped on 150 lists of the validation cutoff. Both are then judged
on other validation-cutoff lists (the test window is never read): ndcg@10 of the text score alone
on full and new-item lists, the paired-bootstrap difference full − late (the issue's target: the
late join costs ≤ 0.005), training time and scoring speed in pairs/s on the same lists.

    python benchmarks/bench_late_join.py --data ../shared/data/online-retail   # ~40 min alone
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHOPS = {"online-retail": ("online_retail", "2011-10-01"), "dunnhumby": ("dunnhumby_sample", "2017-10-29")}


def candidate_stage(data, show_progress: bool):  # type: ignore[no-untyped-def]
    """The default engine's hybrid and the reranker's training examples (text-ready: 3 cutoffs),
    with the bi-encoder fine-tuned once as ``Engine.fit`` does."""
    from ecomrec.config import EngineConfig, RerankConfig
    from ecomrec.rerank import training_examples
    from ecomrec.rerank.reranker import example_bi_encoder
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever
    from ecomrec.retrieval.fusion import HybridRetriever

    config = EngineConfig()
    rerank = config.rerank.replace(cutoffs=RerankConfig(text=True).cutoff_count)
    early = example_bi_encoder(data, config.hybrid.bi_encoder, rerank, show_progress=show_progress)
    served = config.hybrid.bi_encoder.replace(max_pairs=max(config.hybrid.bi_encoder.max_pairs - early.config.max_pairs,
                                                            config.hybrid.bi_encoder.batch_size))
    bi = BiEncoderRetriever(served, show_progress=show_progress).fit(data, start_from=early)
    hybrid = HybridRetriever(config.hybrid, retrievers={"bi_encoder": bi}, show_progress=show_progress).fit(data)
    return hybrid, rerank, training_examples(data, hybrid, rerank, bi=early, show_progress=show_progress)


def minus(rows: dict[str, np.ndarray], name: str, baseline: str, new_lists: np.ndarray) -> dict[str, dict]:
    """Paired-bootstrap ndcg@10 differences ``name − baseline`` on full and new-item lists."""
    from ecomrec.metrics import paired_bootstrap

    out = {}
    for kind, mask in (("all", ~new_lists), ("new", new_lists)):
        both = mask & np.isfinite(rows[name]) & np.isfinite(rows[baseline])
        out[kind] = paired_bootstrap(rows[name][both], rows[baseline][both])
    return out


def judged_lists(valid, seed: int, per_kind: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Validation rows to judge: ``per_kind`` full and new-item lists, none of the 150 that
    early-stop the text models (the same permutation ``TextScorer.fit`` takes)."""
    early_stop = set(np.random.default_rng(seed).permutation(len(valid))[:150])
    rest = np.array([r for r in range(len(valid)) if r not in early_stop])
    rng = np.random.default_rng(seed + 1)
    picked = [rng.permutation(rest[valid.new_lists[rest] == kind])[:per_kind] for kind in (False, True)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    from ecomrec import datasets
    from ecomrec.evaluation.report import environment
    from ecomrec.metrics import ndcg_rows
    from ecomrec.rerank.reranker import _concat
    from ecomrec.rerank.text_model import TextScorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shop", choices=SHOPS, default="online-retail")
    parser.add_argument("--data", required=True, help="the shop's folder")
    parser.add_argument("--lists", type=int, default=250, help="judged validation lists of each kind (full, new-item)")
    parser.add_argument("--output", help="default: benchmarks/results/bench_late_join_<shop>.json")
    args = parser.parse_args()

    load, test_from = SHOPS[args.shop]
    data = getattr(datasets, load)(args.data).between(None, pd.Timestamp(test_from))
    start = time.perf_counter()
    hybrid, rerank, examples = candidate_stage(data, show_progress=False)
    train, valid = _concat(examples[:-2]), examples[-1]
    rows = judged_lists(valid, rerank.cross_encoder.seed, args.lists)
    judged = valid.rows(rows)
    shown = judged.candidates.item_ids >= 0
    report: dict = {"environment": environment(), "shop": args.shop, "fit_before": test_from,
                    "cutoffs": [str(e.cutoff.date()) for e in examples], "candidate_stage_seconds": time.perf_counter() - start,
                    "judged_lists": {"all": int((~judged.new_lists).sum()), "new": int(judged.new_lists.sum())},
                    "judged_pairs": int(shown.sum()), "models": {}}
    ndcg = {}
    for name, joined in (("late_join", 1), ("full_attention", rerank.cross_encoder.layers)):
        config = rerank.cross_encoder.replace(joined_layers=joined)
        scorer = TextScorer(config, [str(t) for t in data.item_texts]).fit(train, valid)
        start = time.perf_counter()
        scorer._items = None  # time the item states too: full attention has no lower layers to cache
        scores = scorer.score(judged.texts, judged.candidates.item_ids)
        seconds = time.perf_counter() - start
        ndcg[name] = ndcg_rows(scores, judged.labels, shown)
        report["models"][name] = {
            "joined_layers": joined, "train_seconds": scorer.train_seconds, "text_log": scorer.log,
            "score_seconds": seconds, "pairs_per_second": float(shown.sum() / seconds),
            "ndcg@10": {kind: float(np.nanmean(ndcg[name][mask])) for kind, mask in (("all", ~judged.new_lists), ("new", judged.new_lists))},
        }
        print(name, json.dumps({k: v for k, v in report["models"][name].items() if k != "text_log"}, default=float), flush=True)
    report["full_minus_late"] = minus(ndcg, "full_attention", "late_join", judged.new_lists)
    print("full − late:", json.dumps(report["full_minus_late"], default=float), flush=True)
    Path(args.output or f"benchmarks/results/bench_late_join_{args.shop}.json").write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
