"""Issue 29's variants — the sequence source, and the seed-to-seed spread of the engine — judged
on validation origins before a shop's fixed test window, over several seeds, never on the test window.

At each origin (scored on the month after it) and seed, the sources every variant shares are
fitted once with that seed (bi-encoder, ALS, item-kNN, repurchase, popularity); then each hybrid
variant (``--hybrids``) is a hybrid over them, its fusion tuned on its own validation window:

* ``default`` — the default sources and fusion tuning;
* ``sequence`` — the same plus the transformer over purchase sequences
  (:class:`~ecomrec.retrieval.sequence.SequenceRetriever`, seeded too), and the sequence model
  alone for reference.

With ``--rerank`` each hybrid also gets the default purchase reranker (``feature_rerank``), its
training examples built once per hybrid (the examples' bi-encoder, fitted before the first
cutoff, shared); ``--reseed`` also trains the default hybrid's reranker again on the same
examples with two other LightGBM seeds (the spread the purchase model alone causes). The
stable-training variants ``bagged`` (fusion tuned on bootstrap resamples), ``timing`` (repeat-
purchase timing features) and ``ensemble`` (a LightGBM seed ensemble) were judged at ``d281f02``
and removed (benchmarks/README.md, "Stable training"); ``valid_users`` (fusion tuned on 2,000
validation users) was judged at ``0d810e9`` and became the default; ``--cutoffs 4`` (the
purchase model learning from three training cutoffs instead of one) was judged again over that
default at ``bd5bc1a`` and removed (benchmarks/README.md, "Four training cutoffs, again").
The seed ensemble of five LightGBM models was judged again over that default at ``17d628d``
(``--models 5``, removed since) and became the default, ``RerankConfig.models = 5``
(benchmarks/README.md, "A seed ensemble of purchase models, again"). The slice gate
(``--slice-gate``, ``RerankConfig.slice_gate``) was judged again at ``5c0408d`` and removed
(benchmarks/README.md, "The slice gate, again"). ``--rerankers last,list,last+list`` (the
purchase model learning again from both cutoffs after validation, ``RerankConfig.learn_from_last``;
sources' scores rescaled within each list, ``RerankConfig.source_scores``; both) were judged at
``d8caea6`` and ``8a36fe0`` and removed (benchmarks/README.md, "Learning from the last cutoff"
and "Scores that do not drift").
Each run's report keeps every reranker's validation record (the order kept per kind of list and
each order's ndcg@10 on the last cutoff) and, with ``--rerank``, the train/serve gap of the
default reranker (:func:`train_serve_gap`).

Reported: ndcg@10 and recall@200 on ``all`` and ``new`` per origin and seed; each variant minus
the default per seed, with a paired-bootstrap interval over user-origin pairs; the seed-to-seed
spread of each method's mean (max - min over seeds, and the standard deviation); the slice table
pooled over origins and seeds (each variant against the default, and each reranker against the
fused order it reorders; a customer's rows at several seeds and origins resampled together, from
the commit after ``d8caea6``), its per-user values beside the report (``.slices.npz``).

    python benchmarks/bench_sequence.py --data ../shared/data/online-retail --origins 2011-08-01,2011-09-01 --seeds 0,1,2 --rerank
    python benchmarks/bench_sequence.py --dunnhumby ../shared/data/dunnhumby-sample --origins 2017-08-31,2017-09-28 --seeds 0,1,2 --rerank
    python benchmarks/bench_sequence.py --data ../shared/data/online-retail --origins 2011-09-01 --seeds 0,1,2 --rerank --hybrids default --reseed
    python benchmarks/bench_sequence.py --merge seed0.json seed1.json --output both.json   # seeds run apart
    python benchmarks/bench_sequence.py --verdict results/bench_sequence_stable_online-retail.json results/bench_sequence_stable_dunnhumby.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecomrec.config import ALSConfig, BiEncoderConfig, FusionConfig, HybridConfig, RerankConfig, SequenceConfig
from ecomrec.data.split import make_split
from ecomrec.evaluation.protocol import evaluate_candidates, score_retriever
from ecomrec.evaluation.report import environment
from ecomrec.evaluation.slices import pooled, slice_values
from ecomrec.metrics import paired_bootstrap

logger = logging.getLogger("bench_sequence")
KS = (10, 50, 100, 200)
#: Issue 29's seed-to-seed spread bar on a report's ndcg@10 (half the 0.0097 it found).
SPREAD_BAR = 0.0097 / 2
#: Each shop's fixed test window starts here (the Makefile's TEST_FROM, DUNNHUMBY_TEST_FROM): never scored here.
TEST_FROM = {"online-retail": pd.Timestamp("2011-10-01"), "dunnhumby": pd.Timestamp("2017-10-29")}


def load_shop(args: argparse.Namespace) -> tuple[Any, str]:
    """The shop ``--data`` (Online Retail) or ``--dunnhumby`` names, and its name; logging set for a long run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "faiss", "ecomrec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.dunnhumby:
        from ecomrec.data.generic import dunnhumby_sample

        return dunnhumby_sample(args.dunnhumby), "dunnhumby"
    from ecomrec.datasets import online_retail

    return online_retail(args.data), "online-retail"


def window_end(origin: pd.Timestamp) -> pd.Timestamp:
    """The last day scored for ``origin``: the month after it."""
    return origin + pd.DateOffset(months=1) - pd.Timedelta(days=1)


def configs(seed: int, hybrids: list[str]) -> dict[str, HybridConfig]:
    base = HybridConfig(als=ALSConfig(seed=seed), bi_encoder=BiEncoderConfig(seed=seed), sequence=SequenceConfig(seed=seed))
    fusion = base.fusion
    variants = {"default": base, "sequence": base.replace(fusion=fusion.replace(quotas={**fusion.quotas, "sequence": 500}))}
    return {name: variants[name] for name in hybrids}


def shared_sources(history: Any, seed: int) -> dict[str, Any]:
    from ecomrec.retrieval import RETRIEVERS

    cfg = configs(seed, ["default"])["default"]
    own = {"als": cfg.als, "bi_encoder": cfg.bi_encoder, "itemknn": cfg.itemknn, "repurchase": cfg.repurchase}
    out = {name: RETRIEVERS[name](config, show_progress=False).fit(history) for name, config in own.items()}
    out["popularity"] = RETRIEVERS["popularity"](show_progress=False).fit(history)
    return out


def run_origin(data: Any, origin: pd.Timestamp, seed: int, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of every variant at one origin and seed, and their per-user values (for pooling)."""
    from ecomrec.retrieval import HybridRetriever

    split = make_split(data, origin, window_end(origin))
    start = time.perf_counter()
    sources = shared_sources(split.history, seed)
    out: dict[str, Any] = {"users": int(len(split.users)), "seconds": {"shared_sources": time.perf_counter() - start}}
    methods: dict[str, Any] = {}
    for variant, config in configs(seed, args.hybrids).items():
        start = time.perf_counter()
        hybrid = HybridRetriever(config, retrievers=sources, show_progress=False).fit(split.history)
        out["seconds"][f"hybrid:{variant}"] = time.perf_counter() - start
        out.setdefault("fusion", {})[variant] = {"weights": hybrid.weights_, "depth": next(iter(hybrid.quotas_.values()))}
        methods[f"hybrid:{variant}"] = hybrid
    if "hybrid:sequence" in methods:
        sequence = methods["hybrid:sequence"].models_["sequence"]
        methods["sequence_alone"] = sequence
        out["sequence"] = {**sequence.describe()["training"], "fit_seconds": methods["hybrid:sequence"].fit_seconds_.get("sequence")}
    if args.rerank:
        reranked, last = rerankers(split.history, methods, seed, args, out["seconds"])
        methods.update(reranked)
        out["validation"] = {name: m.reranker.training_["validation"] for name, m in methods.items() if name.startswith("rerank:")}
        out["train_serve_gap"] = train_serve_gap(data, origin, methods["rerank:default"], last)
    ranked: dict[str, Any] = {}
    for name, method in methods.items():
        ranked_all, ranked_new, _ = score_retriever(method, split, max(KS), 1024)
        means, per_user = evaluate_candidates(split, ranked_all, ranked_new, KS, per_user=True)
        out.setdefault("metrics", {})[name] = {t: {m: means[t][m] for m in ("ndcg@10", "recall@200")} for t in means}
        ranked[name] = (ranked_all, ranked_new, per_user)
    logger.info("%s seed %d: %s", origin.date(), seed, json.dumps(out["metrics"]))
    return out, {"split": split, "ranked": ranked}


def rerankers(history: Any, hybrids: dict[str, Any], seed: int, args: argparse.Namespace,
              seconds: dict[str, float]) -> tuple[dict[str, Any], Any]:
    """The default reranker on each hybrid (and, with ``--reseed``, two other LightGBM seeds on the
    default hybrid's examples), all examples from one examples' bi-encoder; and the default
    hybrid's examples at the last training cutoff."""
    from ecomrec.rerank import PurchaseReranker, RerankedRetriever, training_examples
    from ecomrec.rerank.reranker import example_bi_encoder

    config = RerankConfig(seed=seed)
    bi = example_bi_encoder(history, hybrids["hybrid:default"].config.bi_encoder, config)
    out = {}
    for variant in args.hybrids:
        hybrid, start = hybrids[f"hybrid:{variant}"], time.perf_counter()
        examples = training_examples(history, hybrid, config, bi=bi)
        if variant == "default":
            last = examples[-1]
        seconds[f"examples:{variant}"] = time.perf_counter() - start
        own = {"": config}
        if variant == "default":
            own |= {f"+reseed{i}": config.replace(seed=seed + i) for i in (1, 2) if args.reseed}
        for suffix, reranker_config in own.items():
            start = time.perf_counter()
            reranker = PurchaseReranker(reranker_config)
            out[f"rerank:{variant}{suffix}"] = RerankedRetriever(hybrid, reranker, examples=examples).fit(history)
            seconds[f"rerank:{variant}{suffix}"] = time.perf_counter() - start
    return out, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Online Retail folder")
    parser.add_argument("--dunnhumby", help="the dunnhumby sample folder (instead of --data)")
    parser.add_argument("--origins", help="comma-separated YYYY-MM-DD, all before the shop's test window (required to run)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rerank", action="store_true", help="also fit and score the default reranker on each hybrid")
    parser.add_argument("--hybrids", default="default,sequence", help="hybrid variants: default, sequence")
    parser.add_argument("--reseed", action="store_true", help="with --rerank: the default reranker with two other LightGBM seeds too")
    parser.add_argument("--output", default=None)
    parser.add_argument("--verdict", nargs="+", metavar="REPORT", help="instead of running: the verdicts() of these reports")
    parser.add_argument("--merge", nargs="+", metavar="REPORT", help="instead of running: join these runs of one shop into --output")
    args = parser.parse_args()
    if args.verdict:
        print(json.dumps(verdicts([json.loads(Path(p).read_text()) for p in args.verdict]), indent=2))
        return
    if args.merge:
        if not args.output:
            parser.error("--merge writes --output")
        Path(args.output).write_text(json.dumps(merged([json.loads(Path(p).read_text()) for p in args.merge]), indent=2))
        return
    if not args.origins:
        parser.error("--origins is required to run")
    args.hybrids = ["default"] + [h for h in args.hybrids.split(",") if h != "default"]
    data, shop = load_shop(args)
    origins = [pd.Timestamp(o) for o in args.origins.split(",")]
    if late := [str(o.date()) for o in origins if window_end(o) >= TEST_FROM[shop]]:
        parser.error(f"origins {late}: their month reaches {shop}'s test window (from {TEST_FROM[shop].date()}); validation only")
    seeds = [int(s) for s in args.seeds.split(",")]
    report: dict[str, Any] = {"environment": environment(), "shop": shop, "origins": [str(o.date()) for o in origins],
                              "seeds": seeds, "rerank": args.rerank,
                              "hybrids": args.hybrids, "reseed": args.reseed,
                              "runs": {}}
    output = Path(args.output or Path(__file__).resolve().parent / "results" / f"bench_sequence_{shop}.json")
    per_user: dict[int, dict[str, dict[str, list[np.ndarray]]]] = {}
    slices = []
    for seed in seeds:
        for origin in origins:
            result, kept = run_origin(data, origin, seed, args)
            report["runs"][f"{origin.date()}/seed{seed}"] = result
            for name, (_, _, users) in kept["ranked"].items():
                for target in ("all", "new"):
                    per_user.setdefault(seed, {}).setdefault(name, {}).setdefault(target, []).append(users[target]["ndcg@10"])
            slices.append(slice_values(kept["split"], {n: r for n, r in kept["ranked"].items() if not n.startswith("sequence")}))
            # written after every run: a long sweep cut short keeps what it measured
            pairs = comparisons(args)
            report["summary"] = summary(per_user, pairs)
            report["slices"] = slice_table(pooled(slices), pairs)
            output.write_text(json.dumps(report, indent=2, default=float))
            save_slice_values(pooled(slices), output.with_suffix(".slices.npz"))
    print(json.dumps(report["summary"], indent=2, default=float))
    print(f"wrote {output}")


def save_slice_values(values: list[Any], path: Path) -> None:
    """Each pooled slice's customers and per-user values (``<slice>/<ranking>/customers``,
    ``<slice>/<ranking>/<method>``, on the slice's metric): any interval rule can be applied again."""
    arrays = {}
    for v in values:
        arrays[f"{v.slice}/{v.ranking}/customers"] = v.customers
        arrays |= {f"{v.slice}/{v.ranking}/{method}": per[v.metric] for method, per in v.per_user.items()}
    np.savez_compressed(path, **arrays)


def summary(per_user: dict[int, dict[str, dict[str, list[np.ndarray]]]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Per seed: each method's pooled mean ndcg@10 and the ``pairs`` compared, with their intervals;
    over seeds: each method's spread (max - min of its means, and their standard deviation)."""
    out: dict[str, Any] = {"by_seed": {}, "spread": {}, "seed_std": {}, "over_seeds": {}}
    for seed, methods in per_user.items():
        pooled_users = {name: {t: np.concatenate(v) for t, v in targets.items()} for name, targets in methods.items()}
        row = {name: {t: float(v.mean()) for t, v in targets.items()} for name, targets in pooled_users.items()}
        for method, baseline in pairs:
            row[f"{method} - {baseline}"] = {t: paired_bootstrap(pooled_users[method][t], pooled_users[baseline][t], seed=seed)
                                             for t in ("all", "new")}
        out["by_seed"][seed] = row
    return {**out, **over_seeds(out["by_seed"], pairs)}


def over_seeds(by_seed: dict[Any, dict[str, Any]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Each method's spread over the seeds' rows (max - min of their means, and their standard
    deviation), and each compared pair's mean difference over them."""
    out: dict[str, Any] = {"spread": {}, "seed_std": {}, "over_seeds": {}}
    methods = [name for name in next(iter(by_seed.values())) if " - " not in name]
    for name in methods:
        means = {t: [row[name][t] for row in by_seed.values()] for t in ("all", "new")}
        out["spread"][name] = {t: float(max(v) - min(v)) for t, v in means.items()}
        out["seed_std"][name] = {t: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for t, v in means.items()}
    for method, baseline in pairs:  # the difference's mean and spread over seeds
        diffs = {t: [row[f"{method} - {baseline}"][t]["mean_diff"] for row in by_seed.values()] for t in ("all", "new")}
        out["over_seeds"][f"{method} - {baseline}"] = {t: {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v))}
                                                      for t, v in diffs.items()}
    return out


def merged(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of runs made apart (other seeds of the same shop, origins and variants): runs and
    per-seed rows joined, spreads over all the seeds; slices stay per run (``slices_by_run``), as
    they pool users (each report's per-user values are in its own ``.slices.npz``)."""
    first = reports[0]
    same = ("shop", "origins", "rerank", "hybrids", "reseed", "slice_gate", "learn_from_last", "rerankers", "resamples", "models", "cutoffs")  # older runs' too
    if any(r.get(key) != first.get(key) for r in reports[1:] for key in same):
        raise SystemExit(f"these reports differ in one of {same}: not runs of one sweep")
    by_seed = {seed: row for r in reports for seed, row in r["summary"]["by_seed"].items()}
    if len(by_seed) < sum(len(r["summary"]["by_seed"]) for r in reports):
        raise SystemExit("a seed is in more than one report")
    pairs = [tuple(name.split(" - ")) for name in next(iter(by_seed.values())) if " - " in name]
    return {**{k: first[k] for k in ("environment", *same) if k in first}, "seeds": sorted(int(s) for s in by_seed),
            "runs": {k: v for r in reports for k, v in r["runs"].items()},
            "summary": {"by_seed": by_seed, **over_seeds(by_seed, pairs)},
            "slices_by_run": {f"seed {','.join(sorted(r['summary']['by_seed']))}": r["slices"] for r in reports}}


def comparisons(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(method, baseline) pairs: each variant against the default, each reranker against its fused order."""
    hybrids = [f"hybrid:{h}" for h in args.hybrids]
    pairs = [(h, "hybrid:default") for h in hybrids[1:]]
    if args.rerank:
        rerankers = [f"rerank:{h}" for h in args.hybrids]
        pairs += [(r, "rerank:default") for r in rerankers[1:]]
        pairs += [(r, "hybrid:" + r.split(":")[1].split("+")[0]) for r in rerankers]
    return pairs


def slice_table(values: list[Any], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per slice: each method's mean on the slice metric and the ``pairs`` compared."""
    table = []
    for v in values:
        per = {m: u[v.metric] for m, u in v.per_user.items() if len(u[v.metric])}
        table.append({"slice": v.slice, "ranking": v.ranking, "metric": v.metric, "users": v.users,
                      "methods": {m: float(a.mean()) for m, a in per.items()},
                      "comparisons": {f"{a} - {b}": paired_bootstrap(per[a], per[b], clusters=v.customers)
                                      for a, b in pairs if a in per and b in per}})
    return table


def verdicts(reports: list[dict[str, Any]], baseline: str = "rerank:default") -> dict[str, Any]:
    """Which reranker variants become the default, by rules fixed before the runs, over every
    shop's report (validation windows only):

    * ``better``: for every shop and seed, ndcg@10 above the baseline's with the interval above
      zero on both ``all`` and ``new`` (issue 29's bar);
    * ``stabler``: on every shop, its seed-to-seed spread (max - min of the seeds' means) at most
      half the baseline's, on ``all`` and ``new``;
    * ``keeps quality``: in every shop, seed and target its interval reaches zero or its mean
      difference is no further below zero than the baseline's spread there;
    * ``slices hold``: in no shop's slice table (each run's, when runs were merged) is it below
      the fused order it reorders with an interval wholly below zero (issue 29's other bar; the
      rules of ``00a99e3`` left it out, and it was added after dunnhumby's first seed showed why);
    * ``repairs slices``: the baseline's slices do not hold and the variant's do (added with the
      slice gate, before any of its runs was scored: a variant that brings the default onto the
      slice bar without losing quality is progress on both of issue 29's bars);
    * ``better on all``: for every shop and seed, ndcg@10 on ``all`` above the baseline's with the
      interval above zero (added after Online Retail's September run of ``--cutoffs 4`` was read
      and before dunnhumby's: on ``new`` a gain near 0.002 is inside one seed's interval, so
      ``better`` cannot see it; written after a result, it was judged over those runs and the
      August origin together, where the variant failed it);
    * ``meets spread bar``: in every report (one shop and origin), over at least three seeds, its
      spread is at most :data:`SPREAD_BAR` (issue 29's bar: half the 0.0097 it found) on ``all``
      and ``new``, where the baseline's is above it in some report (added with ``--models``,
      before any of its runs: the default met the bar at September on both shops and missed it at
      Online Retail's August origin on ``all``, 0.0060; ``stabler`` asks to halve dunnhumby's
      0.0006, which is below what three seeds can resolve).

    A variant is adoptable when it is ``better``, or ``stabler``, ``repairs slices``, ``better
    on all`` or ``meets spread bar`` and ``keeps quality``, and its ``slices hold``; of the adoptable ones the default
    becomes the one with the highest mean difference to the baseline over shops, seeds and both
    targets (``chosen``)."""
    seeded = all(len(r["summary"]["by_seed"]) >= 3 for r in reports)
    baseline_spread_ok = all(r["summary"]["spread"][baseline][t] <= SPREAD_BAR for r in reports for t in ("all", "new"))
    variants = sorted({m for r in reports for m in r["summary"]["spread"] if m.startswith("rerank:") and m != baseline
                       and "+reseed" not in m})
    out: dict[str, Any] = {}
    baseline_fails = bool(slices_below_fused_order(reports, baseline))
    for variant in variants:
        better = stabler = keeps = better_on_all = True
        diffs = []
        for report in reports:
            summary = report["summary"]
            for target in ("all", "new"):
                spread = summary["spread"][baseline][target]
                stabler &= summary["spread"][variant][target] <= 0.5 * spread
                for row in summary["by_seed"].values():
                    diff = row[f"{variant} - {baseline}"][target]
                    diffs.append(diff["mean_diff"])
                    better &= diff["ci95"][0] > 0
                    better_on_all &= diff["ci95"][0] > 0 or target != "all"
                    keeps &= diff["ci95"][1] >= 0 or diff["mean_diff"] >= -spread
        failing = slices_below_fused_order(reports, variant)
        repairs = baseline_fails and not failing
        spread_bar = seeded and not baseline_spread_ok and all(
            r["summary"]["spread"][variant][t] <= SPREAD_BAR for r in reports for t in ("all", "new"))
        out[variant] = {"better": better, "better_on_all": better_on_all, "stabler": stabler, "keeps_quality": keeps,
                        "slices_hold": not failing, "slices_below": failing, "repairs_slices": repairs,
                        "meets_spread_bar": spread_bar,
                        "adoptable": (better or ((stabler or repairs or better_on_all or spread_bar) and keeps)) and not failing,
                        "mean_difference": float(np.mean(diffs))}
    adoptable = [v for v, verdict in out.items() if verdict["adoptable"]]
    out["chosen"] = max(adoptable, key=lambda v: out[v]["mean_difference"]) if adoptable else baseline
    return out


def train_serve_gap(data: Any, origin: pd.Timestamp, reranked: Any, last: Any) -> dict[str, Any]:
    """What the purchase model learnt from beside what it serves: the last training cutoff's
    examples (the examples' hybrid as of that cutoff, its month's purchases as labels) and the same
    reranker's inputs at ``origin`` (the served hybrid's top candidates for the users who bought
    before it and in the scored month, that month's purchases as labels). Per kind of list: lists,
    positives per list, the share of positives the user had bought before, the mean of each feature
    over shown candidates, and ndcg@10 over each list's positives of the purchase model's order and
    of the fused order (the metric the validation check judges by, not the protocol's)."""
    from ecomrec.metrics import ndcg_from_labels
    from ecomrec.rerank.examples import examples_at
    from ecomrec.rerank.reranker import MODEL_ORDER

    reranker, hybrid = reranked.reranker, reranked.hybrid
    days = (window_end(origin) - origin).days + 1
    served = [examples_at(hybrid, data.between(None, origin + pd.Timedelta(days=days)), origin, days, reranker.config.candidates,
                          reranker.history_items_, reranker.history_chars_, new_items_only=new) for new in (False, True)]
    out: dict[str, Any] = {}
    for side, parts in (("last_cutoff", [last.rows(~last.new_lists), last.rows(last.new_lists)]), ("served", served)):
        for kind, e in zip(("all", "new"), parts):
            shown, labels = e.candidates.item_ids >= 0, e.labels.astype(bool) & (e.candidates.item_ids >= 0)
            bought = e.features[..., reranker.names_.index("own_bought")] > 0
            margin = reranker._margin(MODEL_ORDER, e.candidates, e.features, None)
            fused = -np.broadcast_to(np.arange(e.candidates.k, dtype=np.float64), shown.shape)
            out.setdefault(side, {})[kind] = {
                "cutoff": str(e.cutoff.date()), "lists": len(e), "positives_per_list": float(labels.sum(axis=1).mean()),
                "bought_before_share": float((labels & bought).sum() / max(labels.sum(), 1)),
                "model_ndcg@10": ndcg_from_labels(margin, labels, shown), "fused_ndcg@10": ndcg_from_labels(fused, labels, shown),
                "feature_means": {n: float(e.features[..., i][shown].mean()) for i, n in enumerate(reranker.names_)}}
    return out


def slices_below_fused_order(reports: list[dict[str, Any]], variant: str) -> list[str]:
    """The slices (shop, run, slice, ranking) where ``variant`` is below the fused order it
    reorders with a paired interval wholly below zero."""
    fused = "hybrid:" + variant.split(":")[1].split("+")[0]
    out = []
    for report in reports:
        tables = report.get("slices_by_run") or {"all runs": report["slices"]}
        for run, table in tables.items():
            for row in table:
                diff = row["comparisons"].get(f"{variant} - {fused}")
                if diff and diff["ci95"][1] < 0:
                    out.append(f"{report['shop']} {run}: {row['slice']} ({row['ranking']}) {diff['mean_diff']:+.4f}")
    return out


if __name__ == "__main__":
    main()
