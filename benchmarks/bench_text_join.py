"""How should BERT's reading of the text meet the collaborative features? Chosen on validation.

One fit of the default engine's candidate stage on the purchases before ``--test-from`` (the
test window is never read), one set of training examples (three monthly cutoffs), and up to five
rerankers over them (``RerankConfig.text`` / ``text_join`` / ``drop_features``):

* ``features`` — the LightGBM purchase model without text (``feature_rerank``, today's default),
  and ``features_without_age`` — the same without the item-age feature;
* ``stack`` — the cross-encoder's score as one more LightGBM feature (``hybrid_rerank`` today);
* ``joint`` — one network over (history text, candidate title) and the features, behaviour
  dropout, listwise loss;
* ``residual`` — the LightGBM margin plus a text path trained on what it leaves (listwise);
* ``joint_whole``, ``residual_whole`` — the same trained on whole lists (every candidate of a
  user's list, as the trees read them; ``CrossEncoderConfig.list_size = 0``) instead of sampled
  16-candidate lists, at the same budget of training pairs;
* ``stack_full_attention``, ``residual_full_attention`` — ``stack`` and ``residual`` with a plain
  full-attention cross-encoder (``CrossEncoderConfig.joined_layers = 3``) instead of the late join;
* ``stack_personal`` — ``stack`` with the title's logit for an empty history subtracted from the
  stacked score (``CrossEncoderConfig.subtract_item_prior``): the same text model, its reading
  of the user's affinity without the prior it learnt per title (which a new arrival lacks).

Each is judged on the last cutoff's lists (the reranker's own validation cutoff, which also
early-stops and calibrates every variant alike): ndcg@10 on full and new-item lists with
paired-bootstrap intervals against ``features``, the slice table of the evaluation protocol on
those lists (:func:`validation_slices`: recall@10 of bought candidates by target kind —
repurchase, new_warm, new_arrival, cold — and ndcg@10 of users with few baskets, each with its
interval against ``features``), and the latency of reranking one user's 100 candidates
(p50/p95/p99, warm; contended runs make it a ratio, not a speed figure: bench_text_latency.py).

Rules fixed before the run: a text variant becomes the default (:func:`verdict`) when its
interval against ``features`` lies above zero on one kind of list and its lower bound is
≥ −0.005 on the other; of several, the highest summed mean difference. The item-age feature
(``features`` against ``features_without_age``, :func:`age_kept`) stays when dropping it gains
nothing: summed mean difference ≥ 0 and no interval wholly below zero.

    python benchmarks/bench_text_join.py --shop online-retail --data ../shared/data/online-retail
    python benchmarks/bench_text_join.py --shop dunnhumby --data ../shared/data/dunnhumby-sample
    python benchmarks/bench_text_join.py --data ../shared/data/online-retail --variants features,joint_whole,residual_whole \
        --output benchmarks/results/bench_text_join_online-retail-whole-lists.json
    python benchmarks/bench_text_join.py --data ../shared/data/online-retail \
        --variants features,stack_full_attention,residual_full_attention \
        --output benchmarks/results/bench_text_join_online-retail-full-attention.json
    python benchmarks/bench_text_join.py --data ../shared/data/online-retail --variants features,stack,stack_personal \
        --output benchmarks/results/bench_text_join_online-retail-personal.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: Loader (in ecomrec.datasets) and fixed test start of each shared shop.
SHOPS = {"online-retail": ("online_retail", "2011-10-01"), "dunnhumby": ("dunnhumby_sample", "2017-10-29")}
#: Whole lists: two users' lists (~200 pairs) per step, checked every 40 steps (~120 steps in the pair budget).
WHOLE_LISTS = {"list_size": 0, "users_per_batch": 2, "eval_every": 40}
#: A plain full-attention cross-encoder over the default text model's 3 layers (bench_late_join.py:
#: +0.10 ndcg@10 over the late join as a text score on validation lists, at 5x the scoring cost).
FULL_ATTENTION = {"joined_layers": 3}
#: RerankConfig changes of each variant.
VARIANTS = {
    "features": {"text": False},
    "features_without_age": {"text": False, "drop_features": ("item_age_log",)},
    "stack": {"text": True, "text_join": "stack"},
    "joint": {"text": True, "text_join": "joint"},
    "residual": {"text": True, "text_join": "residual"},
    "joint_whole": {"text": True, "text_join": "joint", "cross_encoder": WHOLE_LISTS},
    "residual_whole": {"text": True, "text_join": "residual", "cross_encoder": WHOLE_LISTS},
    "stack_full_attention": {"text": True, "text_join": "stack", "cross_encoder": FULL_ATTENTION},
    "residual_full_attention": {"text": True, "text_join": "residual", "cross_encoder": FULL_ATTENTION},
    "stack_personal": {"text": True, "text_join": "stack", "cross_encoder": {"subtract_item_prior": True}},
}
#: Variants judged as text variants against ``features``.
TEXT_VARIANTS = ("stack", "joint", "residual", "joint_whole", "residual_whole", "stack_full_attention", "residual_full_attention",
                 "stack_personal")


def variant_config(rerank, name: str):  # type: ignore[no-untyped-def]
    """``rerank`` with the variant's changes (``cross_encoder``: changes of the text model's config)."""
    changes = dict(VARIANTS[name])
    if "cross_encoder" in changes:
        changes["cross_encoder"] = rerank.cross_encoder.replace(**changes["cross_encoder"])
    return rerank.replace(**changes)


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


def validation_slices(data, valid, sources: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The slice table's slices (ecomrec.evaluation.slices) on the validation lists: per slice the
    lists judged (bool [n]) and, for a target kind, the bought candidates counted (bool [n, k];
    None: the slice is judged by ndcg@10). Kinds come from each candidate's own features as of
    the cutoff: ``repurchase`` on full lists; on new-item lists ``new_warm``, ``new_arrival``
    (first sold within NEW_ARRIVAL_DAYS before the cutoff) and ``cold`` (never sold before it);
    ``few_baskets``: users with at most FEW_BASKETS baskets before the cutoff, on each kind of list."""
    from ecomrec.evaluation.slices import NEW_ARRIVAL_DAYS, few_baskets
    from ecomrec.rerank.features import feature_names

    names = feature_names(sources)
    column = lambda name: valid.features[..., names.index(name)]  # noqa: E731
    bought = valid.labels & (valid.candidates.item_ids >= 0)
    sold, own = column("item_buyers_log") > 0, column("own_bought") > 0
    arrival = sold & (column("item_age_log") <= np.log1p(NEW_ARRIVAL_DAYS))
    full, new = ~valid.new_lists[:, None], valid.new_lists[:, None]
    kinds = {"repurchase": bought & own & full, "new_warm": bought & sold & ~arrival & new,
             "new_arrival": bought & arrival & new, "cold": bought & ~sold & new}
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {kind: (mask.any(axis=1), mask) for kind, mask in kinds.items()}
    few = few_baskets(data.between(None, valid.cutoff).interactions, valid.users)
    out["few_baskets_all"], out["few_baskets_new"] = (few & ~valid.new_lists, None), (few & valid.new_lists, None)
    return out


def judged(reranker, valid, slices: dict) -> dict:  # type: ignore[no-untyped-def]
    """Per-list ndcg@10 of the variant on the validation lists, and per slice of
    :func:`validation_slices` its per-list recall@10 (target kinds) or ndcg@10."""
    from ecomrec.metrics import ndcg_rows

    shown = valid.candidates.item_ids >= 0
    p = np.nan_to_num(reranker.example_probabilities(valid), nan=-np.inf)
    top10 = np.zeros(shown.shape, bool)
    np.put_along_axis(top10, np.argsort(-np.where(shown, p, -np.inf), axis=1, kind="stable")[:, :10], True, axis=1)
    ndcg = ndcg_rows(p, valid.labels, shown)
    per_slice = {}
    for name, (lists, targets) in slices.items():
        if targets is None:  # lists without a bought candidate have no ndcg (NaN): not judged, as in minus()
            per_slice[name] = ndcg[lists & np.isfinite(ndcg)]
        else:
            per_slice[name] = (targets & top10)[lists].sum(axis=1) / targets[lists].sum(axis=1)
    return {"ndcg_rows": ndcg, "slice_rows": per_slice}


def slice_summary(slices: dict, rows: dict[str, np.ndarray]) -> dict[str, dict]:
    """One variant's slice table: lists, targets, metric and mean per slice."""
    out = {}
    for name, (lists, targets) in slices.items():
        out[name] = {"lists": int(len(rows[name])), "targets": int(targets.sum()) if targets is not None else None,
                     "metric": "ndcg@10" if targets is None else "recall@10",
                     "value": float(np.nanmean(rows[name])) if len(rows[name]) else None}
    return out


def latency(reranker, valid, users: int = 60) -> dict:  # type: ignore[no-untyped-def]
    """Seconds to rerank one user's candidates (warm), p50/p95/p99."""
    from ecomrec.evaluation.latency import time_calls

    rows = np.arange(min(users, len(valid)))
    stats = time_calls(lambda r: reranker.rerank(valid.users[r : r + 1], valid.texts[r : r + 1], valid.candidates[r : r + 1], 10),
                       list(rows), warmup=5)
    return stats.to_dict()


def slices_minus(slice_rows: dict[str, dict[str, np.ndarray]], name: str, baseline: str) -> dict[str, dict]:
    """Paired-bootstrap differences ``name − baseline`` per slice (lists of the slice paired)."""
    from ecomrec.evaluation.protocol import paired_bootstrap

    return {s: paired_bootstrap(values, slice_rows[baseline][s]) for s, values in slice_rows[name].items() if len(values)}


def minus(rows: dict[str, np.ndarray], name: str, baseline: str, new_lists: np.ndarray) -> dict[str, dict]:
    """Paired-bootstrap ndcg@10 differences ``name − baseline`` on full and new-item lists."""
    from ecomrec.evaluation.protocol import paired_bootstrap

    out = {}
    for kind, mask in (("all", ~new_lists), ("new", new_lists)):
        both = mask & np.isfinite(rows[name]) & np.isfinite(rows[baseline])
        out[kind] = paired_bootstrap(rows[name][both], rows[baseline][both])
    return out


def age_kept(difference: dict[str, dict]) -> bool:
    """Rule fixed before the run: the item-age feature stays when its summed mean difference is
    ≥ 0 and no interval lies wholly below zero."""
    return sum(d["mean_diff"] for d in difference.values()) >= 0 and all(d["ci95"][1] >= 0 for d in difference.values())


def verdict(differences: dict[str, dict[str, dict]]) -> str:
    """The default by the rule of the module docstring: ``features`` or a text variant."""
    passing = {}
    for variant, kinds in differences.items():
        lows = {kind: d["ci95"][0] for kind, d in kinds.items()}
        if any(low > 0 for low in lows.values()) and all(low >= -0.005 for low in lows.values()):
            passing[variant] = sum(d["mean_diff"] for d in kinds.values())
    return max(passing, key=passing.get) if passing else "features"


def main() -> None:
    from ecomrec import datasets
    from ecomrec.evaluation.report import environment
    from ecomrec.rerank import PurchaseReranker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shop", choices=SHOPS, default="online-retail")
    parser.add_argument("--data", required=True, help="the shop's folder")
    parser.add_argument("--test-from", help="default: the shop's fixed test start")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", help="default: benchmarks/results/bench_text_join_<shop>.json")
    args = parser.parse_args()

    load, test_from = SHOPS[args.shop]
    test_from = args.test_from or test_from
    output = args.output or f"benchmarks/results/bench_text_join_{args.shop}.json"
    data = getattr(datasets, load)(args.data).between(None, pd.Timestamp(test_from))
    start = time.perf_counter()
    hybrid, rerank, examples = candidate_stage(data, show_progress=False)
    valid = examples[-1]
    report: dict = {"environment": environment(), "shop": args.shop, "fit_before": test_from, "cutoffs": [str(e.cutoff.date()) for e in examples],
                    "validation_lists": {"all": int((~valid.new_lists).sum()), "new": int(valid.new_lists.sum())},
                    "candidate_stage_seconds": time.perf_counter() - start, "variants": {}}
    slices = validation_slices(data, valid, sorted(hybrid.quotas_))
    rows, slice_rows = {}, {}
    for name in args.variants.split(","):
        start = time.perf_counter()
        reranker = PurchaseReranker(variant_config(rerank, name)).fit(data, hybrid, examples)
        seconds = time.perf_counter() - start
        out = judged(reranker, valid, slices)
        rows[name], slice_rows[name] = out.pop("ndcg_rows"), out.pop("slice_rows")
        out.update({"fit_seconds": seconds, "text_log": reranker.training_["text_log"], "latency_one_user": latency(reranker, valid),
                    "ndcg@10": {kind: float(np.nanmean(rows[name][mask])) for kind, mask in (("all", ~valid.new_lists), ("new", valid.new_lists))},
                    "slices": slice_summary(slices, slice_rows[name])})
        report["variants"][name] = out
        print(name, json.dumps({k: out[k] for k in ("ndcg@10", "slices", "fit_seconds")}), flush=True)
    differences = {name: minus(rows, name, "features", valid.new_lists) for name in rows if name in TEXT_VARIANTS and "features" in rows}
    report["minus_features"] = differences
    report["slices_minus_features"] = {name: slices_minus(slice_rows, name, "features") for name in differences}
    report["verdict"] = verdict(differences)
    if "features_without_age" in rows and "features" in rows:
        age = minus(rows, "features", "features_without_age", valid.new_lists)
        report["item_age"] = {"features_minus_without_age": age, "kept": age_kept(age)}
    print("verdict:", report["verdict"], json.dumps(differences, default=float), json.dumps(report.get("item_age"), default=float), flush=True)
    Path(output).write_text(json.dumps(report, indent=2, default=float))
    # per-list values beside it: runs of different variants over the same lists can be compared later
    np.savez(Path(output).with_suffix(".rows.npz"), **{f"{name}/ndcg": values for name, values in rows.items()},
             **{f"{name}/{s}": values for name, per in slice_rows.items() for s, values in per.items()}, new_lists=valid.new_lists)


if __name__ == "__main__":
    main()
