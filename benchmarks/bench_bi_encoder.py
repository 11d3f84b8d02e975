"""Bi-encoder speed claims, measured against the plain library in one process.

1. Fine-tuning time with the defaults on the real history (before --test-from).
2. Retrieval recall@100 (all / new, the fixed protocol) of the default model (3 layers kept)
   and of the same fine-tuning with all 6 layers: "equal recall" is checked, not assumed.
3. Item encoding throughput on the real titles: plain ``SentenceTransformer.encode`` of the
   6-layer fine-tuned model vs ecomrec's encoder (3 layers, 16-token budget, length-sorted
   batches), fp32 and dynamic int8.
4. Catalog rebuild: full (every title embedded, index built and validated) vs 1 % of titles
   changed (the embedding cache serves the rest).

    python benchmarks/bench_bi_encoder.py --data ../shared/data/online-retail --test-from 2011-10-01

With ``--model DIR`` (a saved default BiEncoderRetriever) only step 4 and the int8 recall are
measured again, and merged into the existing JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ecomrec.config import BiEncoderConfig, ProtocolConfig
from ecomrec.data import Catalog
from ecomrec.datasets import online_retail
from ecomrec.data.split import make_split
from ecomrec.evaluation.protocol import evaluate_candidates, score_retriever
from ecomrec.evaluation.report import environment
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever, TitleVectors


def throughput(encode, texts: list[str], repeats: int = 3) -> float:
    encode(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def fit_and_score(config: BiEncoderConfig, split) -> tuple[BiEncoderRetriever, dict]:
    start = time.perf_counter()
    model = BiEncoderRetriever(config, show_progress=False).fit(split.history)
    seconds = time.perf_counter() - start
    ranked_all, ranked_new, _ = score_retriever(model, split, 200, 1024)
    metrics = evaluate_candidates(split, ranked_all, ranked_new, ProtocolConfig().ks)
    return model, {
        "config": config.to_dict(),
        "fit_seconds": seconds,
        "recall@100": {t: metrics[t]["recall@100"] for t in ("all", "new")},
        "ndcg@10": {t: metrics[t]["ndcg@10"] for t in ("all", "new")},
        "training_log": model.training_log_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--test-from", required=True)
    parser.add_argument("--output", default="benchmarks/results/bench_bi_encoder.json")
    parser.add_argument("--model", help="a saved default model: re-measure the rebuild and int8 recall only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    split = make_split(online_retail(args.data), args.test_from)
    titles = [str(t) for t in split.history.item_texts]
    if args.model:
        result = json.loads(Path(args.output).read_text())
        model = BiEncoderRetriever.load(args.model)
        result["rebuild"] = measure_rebuild(model, titles)
        result["int8_recall@100"] = int8_recall(model, split)
        print("int8 recall@100:", result["int8_recall@100"], flush=True)
        write(result, args.output)
        return
    result: dict = {"environment": environment(), "titles": len(titles)}

    fast, result["default_3_layers"] = fit_and_score(BiEncoderConfig(), split)
    print("3 layers:", {k: result["default_3_layers"][k] for k in ("fit_seconds", "recall@100")}, flush=True)
    full, result["all_6_layers"] = fit_and_score(BiEncoderConfig(layers=0), split)
    print("6 layers:", {k: result["all_6_layers"][k] for k in ("fit_seconds", "recall@100")}, flush=True)

    plain = full.model_  # the 6-layer fine-tuned SentenceTransformer, called the plain way
    rates = {"plain_encode_6_layers": throughput(lambda t: plain.encode(t, convert_to_numpy=True, normalize_embeddings=True), titles)}
    rates["ecomrec_3_layers_fp32"] = throughput(lambda t: fast._encode(fast.model_, t, fast.config.item_max_tokens), titles)
    int8 = BiEncoderRetriever(fast.config.replace(quantize="int8"))
    int8.model_, int8.device_ = fast.model_, fast.device_
    int8._prepare_inference()
    rates["ecomrec_3_layers_int8"] = throughput(lambda t: int8._encode(int8._serving, t, fast.config.item_max_tokens), titles)
    result["item_encoding_titles_per_s"] = rates
    result["speedup_vs_plain"] = {k: v / rates["plain_encode_6_layers"] for k, v in rates.items()}
    print("titles/s:", {k: round(v) for k, v in rates.items()}, flush=True)

    result["rebuild"] = measure_rebuild(fast, titles)
    write(result, args.output)


def measure_rebuild(fast: BiEncoderRetriever, titles: list[str]) -> dict:
    ids = list(fast.items_.ids)
    fast.with_catalog(Catalog.of(ids, [f"{t} (warm-up)" for t in titles]))  # warm
    start = time.perf_counter()
    full_stats = fast.with_catalog(Catalog.of(ids, [f"{t} (all new)" for t in titles])).catalog_change_  # every title new
    full_seconds = time.perf_counter() - start
    changed = list(titles)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(changed), size=max(1, len(changed) // 100), replace=False):
        changed[i] = changed[i] + " (NEW EDITION)"
    served = fast.with_catalog(Catalog.of(ids, titles))
    start = time.perf_counter()
    partial_stats = served.with_catalog(Catalog.of(ids, changed)).catalog_change_
    partial_seconds = time.perf_counter() - start
    rebuild = {
        "full_seconds": full_seconds,
        "full": full_stats,
        "one_percent_seconds": partial_seconds,
        "one_percent": partial_stats,
        "speedup": full_seconds / partial_seconds,
    }
    print("rebuild:", {k: rebuild[k] for k in ("full_seconds", "one_percent_seconds", "speedup")}, flush=True)
    return rebuild


def int8_recall(model: BiEncoderRetriever, split) -> dict:
    """Recall@100 of the same fine-tuned model with int8 weights (items re-embedded)."""
    model.config = model.config.replace(quantize="int8")
    model._prepare_inference()
    model.titles_ = TitleVectors(model.item_texts_, model.encode_titles(model.item_texts_))
    model.index_ = model._build_index(model.titles_.vectors, np.arange(len(model.item_texts_)))
    ranked_all, ranked_new, _ = score_retriever(model, split, 200, 1024)
    metrics = evaluate_candidates(split, ranked_all, ranked_new, ProtocolConfig().ks)
    return {t: metrics[t]["recall@100"] for t in ("all", "new")}


def write(result: dict, output: str) -> None:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
