"""Reranker text-scoring speed: ecomrec's late-join cross-encoder vs plain ``CrossEncoder.predict``.

Both read the same (user history text, candidate title) pairs: the top ``--candidates`` fused
candidates of ``--users`` test-window customers (the fixed protocol's split). The plain side is
sentence-transformers' ``CrossEncoder`` over a full-attention BERT with the same kept layers and
weights (so the same FLOP per layer), the pair padded per batch to at most user + item tokens.
The late-join side is the trained reranker's :class:`TextScorer`: lower layers once per user and
once per catalog item (cached, timed separately), one joined layer per pair.

Also reported: the text score's own ndcg@10 on those users (the trained late-join model),
the whole rerank step's latency for 100 candidates of one user (p50/p95/p99), and the purchase
model's share of it: its boosters (five by default, ``RerankConfig.models``) against the first
alone — the one-model purchase model of the same seed — on the same features, in this process.

    python benchmarks/bench_rerank.py --engine indexes/online-retail-text \
        --data ../shared/data/online-retail --test-from 2011-10-01

``--engine``: an engine fitted on purchases before ``--test-from`` (``make demo`` saves one at
indexes/online-retail). Without a text reranker in it, the default late-join model is built
from the base weights: the speed is the same, the text ndcg is then not reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from ecomrec.datasets import online_retail
from ecomrec.engine import Engine
from ecomrec.evaluation.latency import time_calls
from ecomrec.metrics import hits
from ecomrec.data.split import make_split
from ecomrec.evaluation.report import environment
from ecomrec.metrics import ndcg_from_labels


def best_of(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Fastest of ``repeats`` timed calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def plain_cross_encoder(scorer, folder: Path):  # type: ignore[no-untyped-def]
    """A sentence-transformers CrossEncoder with the late-join model's kept layers, full attention."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    from ecomrec.encoders import resolve_model_path

    cfg = scorer.config
    full = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(cfg.base_model), num_labels=1)
    full.bert.encoder.layer = torch.nn.ModuleList(list(scorer.model.lower.encoder.layer) + [scorer.model.top])
    full.config.num_hidden_layers = cfg.layers
    full.save_pretrained(folder)
    scorer.model.tokenizer.save_pretrained(folder)
    return CrossEncoder(str(folder), max_length=cfg.user_tokens + cfg.item_tokens, device="cpu")


def purchase_model_latency(reranker, candidates, users: np.ndarray) -> dict:  # type: ignore[no-untyped-def]
    """ms per user of the purchase model's margins over one user's candidates: every booster
    (the served model) and the first alone, timed alternately on the same features."""
    import copy

    from ecomrec.rerank.features import candidate_features
    from ecomrec.rerank.reranker import MODEL_ORDER

    served = reranker.models_[MODEL_ORDER]
    first = copy.copy(served)
    first.boosters = served.boosters[:1]
    per_user = list(candidate_features(candidates, users, reranker.stats_, reranker.sources_))
    out = {}
    for _ in range(2):  # twice, alternating, so neither side has the machine's quieter minute
        for name, model in (("served", served), ("first_booster_alone", first)):
            out.setdefault(name, []).append(time_calls(model.margin, per_user, warmup=10))
    stats = {name: min(runs, key=lambda r: r.p50).to_dict() for name, runs in out.items()}
    return {"boosters": len(served.boosters), **stats,
            "p50_ratio": stats["served"]["p50"] / stats["first_booster_alone"]["p50"]}


def untrained_scorer(item_texts: list[str]):  # type: ignore[no-untyped-def]
    """The default late-join model straight from the base weights: same cost, no text quality."""
    from ecomrec.config import CrossEncoderConfig
    from ecomrec.rerank.text_model import TextScorer

    scorer = TextScorer(CrossEncoderConfig(), item_texts)
    scorer.device, scorer.model = "cpu", scorer._model().eval()
    return scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", required=True, help="saved engine (with a reranker), fitted on purchases before --test-from")
    parser.add_argument("--data", required=True)
    parser.add_argument("--test-from", default="2011-10-01")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--output", default="benchmarks/results/bench_rerank.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    engine = Engine.load(args.engine)
    reranker = getattr(engine.model_, "reranker", None)
    if reranker is None:
        raise SystemExit(f"{args.engine} has no reranker (fit it with use_reranker = true)")
    trained = reranker.text_ is not None
    scorer = reranker.text_ if trained else untrained_scorer(reranker.item_texts_)
    split = make_split(online_retail(args.data), args.test_from)
    users = split.users[np.random.default_rng(0).permutation(len(split.users))[: args.users]]
    candidates = engine.hybrid_.candidates(users, args.candidates)
    texts = reranker.texts_for(users, None, False)
    labels = hits(candidates.item_ids, split.targets_all[np.searchsorted(split.users, users)])
    valid = candidates.item_ids >= 0
    pairs = [(texts[r], reranker.item_texts_[i]) for r, c in zip(*np.nonzero(valid)) for i in [candidates.item_ids[r, c]]]
    scorer._items = None
    catalog_seconds = best_of(lambda: (setattr(scorer, "_items", None), scorer.item_states()), repeats=1)
    ours_seconds = best_of(lambda: scorer.score(texts, candidates.item_ids))
    ours = scorer.score(texts, candidates.item_ids)
    with tempfile.TemporaryDirectory() as folder:
        plain = plain_cross_encoder(scorer, Path(folder))
        plain.predict(pairs[:64], batch_size=32, show_progress_bar=False)  # warm-up
        plain_seconds = best_of(lambda: plain.predict(pairs, batch_size=32, show_progress_bar=False), repeats=2)

    one_user = [[u] for u in users[:50]]
    latency = time_calls(lambda u: engine.model_.candidates(u, 10), one_user, warmup=3)
    stages = {}
    for u in users[:50]:
        for name, seconds in engine.model_.candidates([u], 10).timings.items():
            stages.setdefault(name, []).append(seconds * 1000)
    result = {
        "pairs": len(pairs),
        "users": len(users),
        "late_join_pairs_per_s": len(pairs) / ours_seconds,
        "plain_cross_encoder_pairs_per_s": len(pairs) / plain_seconds,
        "speedup": plain_seconds / ours_seconds,
        "catalog_item_states_seconds": catalog_seconds,
        "catalog_items": len(reranker.item_texts_),
        "late_join_trained": trained,
        "late_join_text_ndcg@10": ndcg_from_labels(ours, labels, valid) if trained else None,
        "fused_order_ndcg@10": ndcg_from_labels(-np.arange(args.candidates, dtype=np.float32)[None].repeat(len(users), 0), labels, valid),
        "recommend_latency_ms": latency.to_dict(),
        "recommend_stage_ms": {n: {q: float(np.percentile(v, p)) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}
                               for n, v in stages.items()},
        "purchase_model_ms": purchase_model_latency(reranker, candidates, users),
        "config": scorer.config.to_dict(),
        "environment": environment(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("environment", "config")}, indent=2))


if __name__ == "__main__":
    main()
