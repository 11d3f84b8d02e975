"""The fixed offline evaluation protocol (docs/evaluation.md): one split, every method, one report.

- History is everything before ``test_from``; targets are purchases in ``[test_from, test_to]``.
- Evaluated users bought at least once in each. Targets: the distinct items a user bought in
  the window (``all``), and those the user never bought before (``new``; methods then exclude
  the user's past purchases).
- Every method ranks the full catalog (every item known up to the end of the window).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ecomrec.config import ConfigBase, ProtocolConfig
from ecomrec.data.dataset import Dataset
from ecomrec.evaluation.latency import LatencyStats, time_calls
from ecomrec.timing import Stopwatch
from ecomrec.data.split import EvalSplit, make_split
from ecomrec.metrics import expected_calibration_error, hits, paired_bootstrap, ranking_metrics
from ecomrec.evaluation.report import BenchmarkReport, environment
from ecomrec.evaluation.slices import pooled, slice_values, summarise
from ecomrec.retrieval import RETRIEVERS, Candidates, Retriever
from ecomrec.retrieval.base import ScoringRetriever

logger = logging.getLogger(__name__)

#: Methods in report order; a method is listed once it exists, never faked.
METHOD_ORDER = ("popularity", "repurchase", "itemknn", "als", "bi_encoder_zero_shot", "bi_encoder", "hybrid", "feature_rerank",
                "hybrid_rerank")
#: Methods whose differences the report breaks down by history length and target kind.
BREAKDOWN_METHODS = ("repurchase", "hybrid", "feature_rerank", "hybrid_rerank")
#: Paired comparisons reported with a bootstrap interval: (method, baseline).
COMPARISONS = (("hybrid_rerank", "feature_rerank"), ("feature_rerank", "hybrid"), ("hybrid_rerank", "hybrid"))


@dataclasses.dataclass
class BenchmarkRun:
    """One benchmark run's shared state: the split, the methods fitted so far (by name), and
    rerank training examples (shared by the rerank methods whose configs make the same ones)."""

    split: EvalSplit
    configs: dict[str, ConfigBase]
    show_progress: bool
    fitted: dict[str, Retriever] = dataclasses.field(default_factory=dict)
    examples: dict[str, Any] = dataclasses.field(default_factory=dict)
    setup_seconds: float = 0.0  # fitting done while building the next method (its training examples)


def build_method(run: BenchmarkRun, name: str) -> Retriever:
    """A fresh, unfitted retriever for a report method, with its config from ``run.configs``.

    ``bi_encoder_zero_shot`` is the untrained base model; ``hybrid`` reuses the sources this run
    fitted already; the rerank methods rerank this run's hybrid.
    """
    config = run.configs.get(name)
    if name in ("feature_rerank", "hybrid_rerank"):
        from ecomrec.config import RerankConfig
        from ecomrec.rerank import PurchaseReranker, RerankedRetriever, training_examples

        if "hybrid" not in run.fitted:
            run.fitted["hybrid"] = build_method(run, "hybrid").fit(run.split.history)
        hybrid = run.fitted["hybrid"]
        rerank_config = config or RerankConfig(text=name == "hybrid_rerank")
        key = examples_key(rerank_config)
        if key not in run.examples:
            with Stopwatch() as watch:
                run.examples[key] = training_examples(run.split.history, hybrid, rerank_config, show_progress=run.show_progress)
            run.setup_seconds += watch.seconds
        return RerankedRetriever(hybrid, PurchaseReranker(rerank_config, show_progress=run.show_progress), examples=run.examples[key])
    if name == "hybrid":
        from ecomrec.retrieval.fusion import HybridRetriever

        reuse = {n: run.fitted[n] for n in ("popularity", "repurchase", "itemknn", "als", "bi_encoder") if n in run.fitted}
        return HybridRetriever(config, retrievers=reuse, show_progress=run.show_progress)
    if name == "bi_encoder_zero_shot":
        from ecomrec.config import BiEncoderConfig
        from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

        return BiEncoderRetriever(config or BiEncoderConfig(fine_tune=False, layers=0), show_progress=run.show_progress)
    return RETRIEVERS[name](config, show_progress=run.show_progress)


def examples_key(config: Any) -> str:
    """What a reranker's training examples depend on: methods whose configs agree here share them."""
    fields = ("cutoff_count", "window_days", "min_window_users", "candidates", "example_bi_encoder_pairs")
    return json.dumps({f: getattr(config, f) for f in fields}, sort_keys=True)


def evaluate_candidates(split: EvalSplit, ranked_all: Candidates, ranked_new: Candidates, ks: Sequence[int], *,
                        per_user: bool = False) -> Any:
    """Metrics for both target sets (``ranked_new``: one row per ``split.new_rows``); with
    ``per_user``, also each metric's per-user values."""
    all_means, all_users = ranking_metrics(ranked_all.item_ids, split.targets_all, ks, split.n_items, per_user=True)
    new_means, new_users = ranking_metrics(ranked_new.item_ids, split.targets_new[split.new_rows], ks, split.n_items, per_user=True)
    means = {"all": all_means, "new": new_means}
    return (means, {"all": all_users, "new": new_users}) if per_user else means


#: Users grouped by how many distinct items they bought before the split.
HISTORY_BUCKETS = ((1, 5), (6, 20), (21, 60), (61, None))


def breakdown(split: EvalSplit, methods: dict[str, tuple[Candidates, Candidates, dict[str, dict[str, np.ndarray]]]],
              values: list[Any], seed: int = 0) -> dict[str, Any]:
    """Where methods differ: ndcg@10 by history length, and the slice table of ``values``.
    ``methods``: name → (its ``all`` ranking, its ``new`` ranking, its per-user metrics)."""
    distinct = split.seen.getnnz(axis=1)
    by_history: dict[str, list[dict[str, Any]]] = {"all": [], "new": []}
    for target in ("all", "new"):
        lengths = distinct if target == "all" else distinct[split.new_rows]
        for low, high in HISTORY_BUCKETS:
            inside = (lengths >= low) & (lengths <= (high or lengths.max()))
            row: dict[str, Any] = {"items": f"{low}-{high}" if high else f"{low}+", "users": int(inside.sum())}
            for name, (_, _, per_user) in methods.items():
                row[name] = float(per_user[target]["ndcg@10"][inside].mean()) if inside.any() else float("nan")
            by_history[target].append(row)
    return {"ndcg@10_by_history_length": by_history, "slices": summarise(values, seed)}


def calibration(ranked: Candidates, targets: sp.csr_matrix) -> dict[str, Any]:
    """ECE and reliability table of ``p_purchase`` against what users bought (reranked candidates)."""
    p = ranked.sources["p_purchase"]
    known = ~np.isnan(p)
    labels = hits(ranked.item_ids, targets)
    ece, table = expected_calibration_error(p[known], labels[known])
    return {"ece": ece, "mean_predicted": float(p[known].mean()), "observed": float(labels[known].mean()), "pairs": int(known.sum()), "bins": table}


def score_retriever(retriever: Retriever, split: EvalSplit, k: int, batch_size: int) -> tuple[Candidates, Candidates, float]:
    """Top-k of the items ``split.listed`` for ``all`` (nothing excluded) and ``new`` (past
    purchases excluded), and users/s of the first."""
    with Stopwatch() as watch:
        ranked_all = retriever.candidates(split.users, k, allow=split.listed, batch_size=batch_size)
    users_new = split.users[split.new_rows]
    ranked_new = retriever.candidates(users_new, k, exclude=split.seen[split.new_rows], allow=split.listed, batch_size=batch_size)
    return ranked_all, ranked_new, len(split.users) / max(watch.seconds, 1e-9)


def benchmark(data: Dataset | str | Path, test_from: str | pd.Timestamp, test_to: str | pd.Timestamp | None = None, *,
              methods: Sequence[str] | None = None, configs: dict[str, ConfigBase] | None = None,
              protocol: ProtocolConfig = ProtocolConfig(), show_progress: bool | None = None,
              fitted: dict[str, Retriever] | None = None) -> BenchmarkReport:
    """Run every method on one split and time it: the numbers every claim in ecomrec cites.

    Parameters
    ----------
    data
        A :class:`Dataset`, or a path that :func:`ecomrec.datasets.online_retail` loads (load
        time and peak memory are then reported).
    test_from, test_to
        Target window, ``test_to`` inclusive (default: the end of the data).
    methods
        Subset of :data:`METHOD_ORDER` (default: all).
    configs
        Config per method name, overriding that method's defaults.
    protocol
        Cut-offs, validation window, timing settings.
    fitted
        Retrievers already fitted on this split's history, by method name (e.g. an engine's):
        scored as they are, not fitted again; their sources are reused by ``hybrid``.

    Examples
    --------
    >>> from ecomrec.data.synthetic import synthetic
    >>> report = benchmark(synthetic(seed=0), "2024-03-01", methods=["popularity"],
    ...                    protocol=ProtocolConfig(latency_users=5, warmup=1), show_progress=False)
    >>> sorted(report.results["popularity"])
    ['all', 'new']
    """
    return _benchmark(data, test_from, test_to, methods=methods, configs=configs, protocol=protocol,
                      show_progress=show_progress, fitted=fitted)[0]


def _benchmark(data: Dataset | str | Path, test_from: Any, test_to: Any, *, methods: Sequence[str] | None,
               configs: dict[str, ConfigBase] | None, protocol: ProtocolConfig, show_progress: bool | None,
               fitted: dict[str, Retriever] | None) -> tuple[BenchmarkReport, list[Any]]:
    """:func:`benchmark`, and the per-user slice values of its breakdown methods (for pooling)."""
    data, dataset_info = _load(data)
    chosen = list(methods) if methods is not None else list(METHOD_ORDER)
    if unknown := [m for m in chosen if m not in METHOD_ORDER]:
        raise ValueError(f"unknown method(s) {unknown}; available: {list(METHOD_ORDER)}")
    split = make_split(data, test_from, test_to)
    enabled = show_progress if show_progress is not None else logger.isEnabledFor(logging.INFO)
    report = BenchmarkReport(
        dataset={**dataset_info, "name": data.name, "fingerprint": data.fingerprint, "rows": len(data), "users": data.n_users,
                 "items": data.n_items, "evaluated_users": len(split.users), "evaluated_users_new": len(split.new_rows),
                 "cold_target_share": split.cold_target_share("all"), "cold_target_share_new": split.cold_target_share("new")},
        protocol={"test_from": str(pd.Timestamp(test_from).date()),
                  "test_to": str((split.target.end if test_to is None else pd.Timestamp(test_to)).date()), **protocol.to_dict()},
        environment=environment())
    run = BenchmarkRun(split, dict(configs or {}), enabled, fitted=dict(fitted or {}))
    rng = np.random.default_rng(protocol.seed)
    timed = [int(u) for u in rng.choice(split.users, size=min(protocol.latency_users, len(split.users)), replace=False)]
    per_user: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    compared: dict[str, tuple[Candidates, Candidates, dict[str, dict[str, np.ndarray]]]] = {}
    for name in tqdm(chosen, desc="methods", disable=not enabled):
        retriever, fit_seconds = fit_stage(run, name)
        ranked_all, ranked_new, users_per_s = score_retriever(retriever, split, max(protocol.ks), protocol.batch_size)
        report.results[name], per_user[name] = evaluate_candidates(split, ranked_all, ranked_new, protocol.ks, per_user=True)
        report.methods[name] = {**retriever.describe(), "fit_seconds": fit_seconds}
        report.throughput[name] = {"users_per_s": users_per_s, "batch_size": protocol.batch_size}
        if "p_purchase" in ranked_all.sources:
            report.calibration[name] = calibration(ranked_all, split.targets_all)
        if (check := index_check(retriever, split, ranked_all, protocol.batch_size)) is not None:
            report.checks[name] = check
        if len(timed):
            report.latency_ms.update(_latency(name, retriever, timed, max(protocol.ks), protocol.warmup))
        if name in BREAKDOWN_METHODS:
            compared[name] = (ranked_all, ranked_new, per_user[name])
        logger.info("%s: %s", name, report.results[name]["all"])
    report.comparisons = compare_stage(per_user, protocol.seed)
    values = slice_values(split, compared) if len(compared) > 1 else []
    if values:
        report.breakdown = breakdown(split, compared, values, protocol.seed)
    return report, values


def benchmark_origins(data: Dataset | str | Path, origins: Sequence[str | pd.Timestamp], *, methods: Sequence[str] | None = None,
                      configs: dict[str, ConfigBase] | None = None, protocol: ProtocolConfig = ProtocolConfig(),
                      show_progress: bool | None = None) -> dict[str, Any]:
    """:func:`benchmark` at several rolling origins (one fit per origin, scored on the month
    after it) and the slice table pooled over user-origin pairs.

    Returns ``{"origins": {origin: report dict}, "pooled": {"origins", "slices"}}``;
    :func:`origins_markdown` renders it.
    """
    data, dataset_info = _load(data)
    starts = sorted(pd.Timestamp(o) for o in origins)
    if not starts:
        raise ValueError("give at least one origin")
    reports, values = {}, []
    for start in starts:
        last_day = start + pd.DateOffset(months=1) - pd.Timedelta(days=1)
        report, origin_values = _benchmark(data, start, last_day, methods=methods, configs=configs, protocol=protocol,
                                           show_progress=show_progress, fitted=None)
        report.dataset.update(dataset_info)
        reports[str(start.date())] = report.to_dict()
        values.append(origin_values)
    return {"origins": reports, "pooled": {"origins": list(reports), "slices": summarise(pooled(values), protocol.seed)}}


def fit_stage(run: BenchmarkRun, name: str) -> tuple[Retriever, float | None]:
    """The method fitted on the split's history and its fit seconds (None for one given fitted),
    recorded in ``run`` for the methods that reuse it."""
    if name in run.fitted:
        return run.fitted[name], None
    run.setup_seconds = 0.0
    retriever = build_method(run, name)
    with Stopwatch() as watch:
        retriever.fit(run.split.history)
    run.fitted[name] = retriever
    return retriever, run.setup_seconds + watch.seconds  # a reranker's training examples count as its fit


def index_check(retriever: Retriever, split: EvalSplit, ranked_all: Candidates, batch_size: int) -> dict[str, Any] | None:
    """For a retriever that searches an index: its top 100 against scoring every item."""
    index = retriever.describe().get("index")
    if index is None or not isinstance(retriever, ScoringRetriever):
        return None
    exact = retriever.candidates_exact(split.users, 100, batch_size=batch_size)
    return {"index": index, **top_k_agreement(ranked_all, exact, 100)}


def compare_stage(per_user: dict[str, dict[str, dict[str, np.ndarray]]], seed: int) -> dict[str, Any]:
    """Paired-bootstrap intervals of ndcg@10 for each of :data:`COMPARISONS` both methods ran."""
    return {f"{m} - {b}": {t: paired_bootstrap(per_user[m][t]["ndcg@10"], per_user[b][t]["ndcg@10"], seed=seed)
                           for t in ("all", "new")}
            for m, b in COMPARISONS if m in per_user and b in per_user}


def top_k_agreement(found: Candidates, reference: Candidates, k: int) -> dict[str, float]:
    """How far ``found``'s top ``k`` matches ``reference``'s: ``same_top_k_share``, rows whose top-k
    sets are equal (an item only in ``found`` tying the reference's k-th score counts as equal), and
    ``mean_overlap``, mean |found ∩ reference| / k."""
    same, overlap = 0, []
    for ids_f, scores_f, ids_r, scores_r in zip(found.item_ids, found.scores, reference.item_ids, reference.scores):
        top_f, top_r = ids_f[:k], set(ids_r[:k].tolist())
        overlap.append(len(top_r.intersection(top_f.tolist())) / k)
        kth = float(scores_r[min(k, len(scores_r)) - 1])
        extra = scores_f[:k][~np.isin(top_f, list(top_r))]
        same += bool(np.all(np.abs(extra - kth) <= 1e-4 * (abs(kth) + 1.0)))
    rows = max(len(overlap), 1)
    return {"k": k, "same_top_k_share": same / rows, "mean_overlap": float(np.sum(overlap)) / rows}


def _latency(name: str, retriever: Retriever, users: list[int], k: int, warmup: int) -> dict[str, dict[str, float]]:
    """Single-user latency of a method, and of each stage its results time (``Candidates.timings``)."""
    stages: dict[str, list[float]] = {}

    def call(user: int) -> None:
        for stage, seconds in retriever.candidates([user], k).timings.items():
            stages.setdefault(stage, []).append(seconds)

    out = {name: time_calls(call, users, warmup=warmup).to_dict()}
    for stage, seconds in stages.items():
        if stage != "end_to_end":
            out[f"{name}:{stage}"] = LatencyStats.from_seconds(seconds[warmup:] or seconds).to_dict()
    return out


def _load(data: Dataset | str | Path) -> tuple[Dataset, dict[str, object]]:
    if isinstance(data, Dataset):
        info: dict[str, object] = {"name": data.name}
    else:
        from ecomrec.data.online_retail import online_retail

        rss_before = _peak_rss_mb()
        with Stopwatch() as watch:
            data = online_retail(data)
        info = {"name": data.name, "load_seconds": watch.seconds, "peak_rss_mb": _peak_rss_mb(), "rss_before_load_mb": rss_before}
    if data.report is not None:
        info |= {"raw_rows": data.report.raw_rows, "cleaning": data.report.to_dict()}
    return data, info


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


__all__ = ["BenchmarkRun", "METHOD_ORDER", "benchmark", "build_method", "compare_stage", "examples_key", "fit_stage",
           "index_check", "evaluate_candidates", "score_retriever", "top_k_agreement"]
