"""How should a shop keep its engine fresh? Four weeks after a fit, week by week: (a) the stale
engine, (b) the engine with a daily ``Engine.update`` (nothing trained), (c) a warm refit at the
start of each week (``Engine.fit(data, warm_start=last week's engine)``, saved and loaded in
between as a shop would), (d) a full refit at the start of each week. Issue 30's schedule.

Each week is scored on the customers who bought in it and before it: ndcg@10 of full lists
(``all``: what they bought that week) and of lists without what they bought before the week
(``new``: their new items), with paired-bootstrap intervals of (b), (c), (d) - (a) and of (c) - (d),
pooled over weeks and origins, and the seconds each step took (daily updates as p50/p95/p99; a
warm refit's fit, not its load). Origins must lie before the shop's fixed test window
(validation periods only). ``--warm-lr-scales 0.25,0.5,1`` runs column (c) once per bi-encoder
learning-rate scale (``EngineConfig.warm_refit.learning_rate_scale``; the config's own scale is
``weekly_warm_refit``, the others ``weekly_warm_refit_lr<scale>``), the sweep that chose the default.

    python benchmarks/bench_schedule.py --data ../shared/data/online-retail --origins 2011-07-01,2011-08-01 --config quick
    python benchmarks/bench_schedule.py --dunnhumby ../shared/data/dunnhumby-sample --origins 2017-08-01,2017-09-01 --config quick
    python benchmarks/bench_schedule.py --data ../shared/data/online-retail --origins 2011-09-01 --config default --warm-lr-scales 0.25,0.5,1
    python benchmarks/bench_schedule.py --data ../shared/data/online-retail --time-updates indexes/online-retail --weeks 2

``--config quick``: the engine without networks (own purchases, ALS, item-kNN, popularity; no
reranker or search), minutes per origin; ``default``: ``EngineConfig()``, one full fit per week.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bench_sequence import TEST_FROM, load_shop  # the shops' loading and test windows, shared
from ecomrec.config import EngineConfig, FusionConfig, HybridConfig, SearchConfig
from ecomrec.engine import Engine
from ecomrec.evaluation.report import environment
from ecomrec.metrics import paired_bootstrap, ranking_metrics

logger = logging.getLogger("bench_schedule")
CONFIGS = {
    "quick": EngineConfig(hybrid=HybridConfig(fusion=FusionConfig(quotas={"own": 100, "als": 100, "itemknn": 100, "popularity": 100},
                                                                   tune=False)),
                          use_reranker=False, search=SearchConfig(enabled=False)),
    "default": EngineConfig(),
}
SCHEDULES = ("stale", "daily_update", "weekly_warm_refit", "weekly_refit")


def warm_variants(config: EngineConfig, scales: list[float]) -> dict[str, EngineConfig]:
    """Column (c)'s configs by schedule name: the config's own learning-rate scale, then the others."""
    own = config.warm_refit.learning_rate_scale
    return {"weekly_warm_refit": config} | {
        f"weekly_warm_refit_lr{s:g}": config.replace(warm_refit=config.warm_refit.replace(learning_rate_scale=s))
        for s in scales if s != own}


def purchases(data: Any, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The purchases of [start, end) as an update's rows (external ids)."""
    frame = data.between(start, end).interactions
    return pd.DataFrame({"user_id": data.users.ids_of(frame["user"]), "item_id": data.items.ids_of(frame["item"]),
                         "timestamp": frame["timestamp"].to_numpy(), "quantity": frame["quantity"].to_numpy()})


def week_targets(data: Any, start: pd.Timestamp, end: pd.Timestamp) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """Customers who bought before ``start`` and in [start, end), their week's items, and those new to them."""
    before = data.between(None, start).user_items("binary")
    week = data.between(start, end).user_items("binary")
    users = np.flatnonzero((before.getnnz(axis=1) > 0) & (week.getnnz(axis=1) > 0))
    new = (week - week.multiply(before)).tocsr()
    new.eliminate_zeros()
    return users, week[users].tocsr(), new[users].tocsr()


def score(engine: Engine, data: Any, users: np.ndarray, targets: sp.csr_matrix, new: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per-user ndcg@10 of the engine's full lists and of its lists without what it knows they bought."""
    ids = data.users.ids_of(users).tolist()
    out = {}
    for target, matrix, exclude in (("all", targets, None), ("new", new, "seen")):
        rows = np.flatnonzero(matrix.getnnz(axis=1) > 0)
        found = engine.recommend([ids[r] for r in rows], k=10, exclude=exclude).candidates
        out[target] = ranking_metrics(found.item_ids, matrix[rows], (10,), data.n_items, per_user=True)[1]["ndcg@10"]
    return out


def run_origin(data: Any, origin: pd.Timestamp, weeks: int, config: EngineConfig, scales: list[float]) -> dict[str, Any]:
    """Every schedule's per-user ndcg@10 each week, and the seconds each step took."""
    start = time.perf_counter()
    stale = Engine(config, show_progress=False).fit(data.between(None, origin))
    fit_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:  # the same fitted engine, updated from here on
        updated = Engine.load(stale.save(Path(folder) / "engine"))
    variants = warm_variants(config, scales)
    out: dict[str, Any] = {"fit_seconds": fit_seconds, "update_seconds": [], "refit_seconds": [],
                           **{f"{n}_seconds": [] for n in variants}, **{f"{n}_reports": [] for n in variants}, "weeks": []}
    refit, warm = stale, dict.fromkeys(variants, stale)
    for week in range(weeks):
        week_start, week_end = origin + pd.Timedelta(days=7 * week), origin + pd.Timedelta(days=7 * (week + 1))
        if week:
            for day in pd.date_range(week_start - pd.Timedelta(days=7), week_start - pd.Timedelta(days=1)):
                out["update_seconds"].append(updated.update(purchases(data, day, day + pd.Timedelta(days=1)))["seconds"])
            for name, variant in variants.items():
                with tempfile.TemporaryDirectory() as folder:  # last week's engine as a shop has it: saved, loaded
                    served = Engine.load(warm[name].save(Path(folder) / "engine"))
                start = time.perf_counter()
                warm[name] = Engine(variant, show_progress=False).fit(data.between(None, week_start), warm_start=served)
                out[f"{name}_seconds"].append(time.perf_counter() - start)
                out[f"{name}_reports"].append(warm[name].fit_report_)
            start = time.perf_counter()
            refit = Engine(config, show_progress=False).fit(data.between(None, week_start))
            out["refit_seconds"].append(time.perf_counter() - start)
        users, targets, new = week_targets(data, week_start, week_end)
        scores = {name: score(engine, data, users, targets, new) for name, engine in
                  {"stale": stale, "daily_update": updated, **warm, "weekly_refit": refit}.items()}
        out["weeks"].append({"start": str(week_start.date()), "users": int(len(users)), "scores": scores})
        logger.info("%s week %d: %s", origin.date(), week, {n: {t: float(v.mean()) for t, v in s.items()} for n, s in scores.items()})
    return out


def summary(runs: dict[str, Any], weeks: int) -> dict[str, Any]:
    """Per week (pooled over origins) and over all weeks: each schedule's mean ndcg@10, each against
    the stale engine and the warm refit against the full one, with paired intervals."""
    out: dict[str, Any] = {}
    names = list(next(iter(runs.values()))["weeks"][0]["scores"])
    swept = [n for n in names if n not in SCHEDULES]
    pairs = [("daily_update", "stale"), ("weekly_warm_refit", "stale"), ("weekly_refit", "stale"), ("weekly_warm_refit", "weekly_refit"),
             *((n, base) for n in swept for base in ("weekly_refit", "weekly_warm_refit"))]
    for label, chosen in [*((f"week {w + 1}", [w]) for w in range(weeks)), ("all weeks", list(range(weeks)))]:
        pooled = {n: {t: np.concatenate([run["weeks"][w]["scores"][n][t] for run in runs.values() for w in chosen])
                      for t in ("all", "new")} for n in names}
        out[label] = {"means": {n: {t: float(v.mean()) for t, v in s.items()} for n, s in pooled.items()},
                      **{f"{n} - {base}": {t: paired_bootstrap(pooled[n][t], pooled[base][t]) for t in ("all", "new")}
                         for n, base in pairs}}
    updates = np.concatenate([run["update_seconds"] for run in runs.values()])
    fits = [run["fit_seconds"] for run in runs.values()] + [s for run in runs.values() for s in run["refit_seconds"]]
    warm = {n: np.median([s for run in runs.values() for s in run[f"{n}_seconds"]]) for n in names if n.startswith("weekly_warm")}
    out["seconds"] = {"full_fit_median": float(np.median(fits)),
                      "daily_update": {f"p{q}": float(np.percentile(updates, q)) for q in (50, 95, 99)},
                      "update_over_fit": float(np.median(updates) / np.median(fits)),
                      **{f"{n}_median": float(w) for n, w in warm.items()},
                      "warm_over_fit": float(warm["weekly_warm_refit"] / np.median(fits))}
    return out


def time_updates(path: str, data: Any, days: int) -> dict[str, Any]:
    """Seconds of the daily updates of the engine saved at ``path`` over the ``days`` after its log
    ends (days without purchases skipped), and of saving it once. Timing only: nothing is scored,
    so these days may lie in a test window."""
    engine = Engine.load(path)
    first = engine.snapshot.log.end.normalize() + pd.Timedelta(days=1)
    seconds, rows = [], []
    for day in pd.date_range(first, periods=days):
        update = purchases(data, day, day + pd.Timedelta(days=1))
        if len(update):
            seconds.append(engine.update(update)["seconds"])
            rows.append(len(update))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        engine.save(Path(folder) / "engine")
        save = time.perf_counter() - start
    return {"engine": path, "days": [str(first.date()), str((first + pd.Timedelta(days=days - 1)).date())], "updates": len(seconds),
            "rows_per_update_median": float(np.median(rows)), "save_seconds": save,
            "daily_update": {f"p{q}": float(np.percentile(seconds, q)) for q in (50, 95, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Online Retail folder")
    parser.add_argument("--dunnhumby", help="the dunnhumby sample folder (instead of --data)")
    parser.add_argument("--origins", help="comma-separated YYYY-MM-DD: fits on the purchases before each")
    parser.add_argument("--time-updates", metavar="ENGINE", help="instead: time daily updates of this saved engine (--weeks 2: 14 days)")
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="quick")
    parser.add_argument("--warm-lr-scales", default="", help="comma-separated bi-encoder learning-rate scales for column (c)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    data, shop = load_shop(args)
    if args.time_updates:
        print(json.dumps(time_updates(args.time_updates, data, 7 * args.weeks), indent=2))
        return
    if not args.origins:
        parser.error("--origins is required to run the schedule")
    origins = [pd.Timestamp(o) for o in args.origins.split(",")]
    if late := [str(o.date()) for o in origins if o + pd.Timedelta(days=7 * args.weeks) > TEST_FROM[shop]]:
        parser.error(f"origins {late}: their weeks reach {shop}'s test window (from {TEST_FROM[shop].date()}); validation only")
    scales = [float(s) for s in args.warm_lr_scales.split(",") if s]
    runs = {str(o.date()): run_origin(data, o, args.weeks, CONFIGS[args.config], scales) for o in origins}
    report = {"environment": environment(), "shop": shop, "config": args.config, "origins": list(runs), "weeks": args.weeks,
              "summary": summary(runs, args.weeks),
              "runs": {o: {k: v for k, v in run.items() if k != "weeks"} | {"weeks": [{k: v for k, v in w.items() if k != "scores"}
                                                                                          for w in run["weeks"]]}
                       for o, run in runs.items()}}
    output = Path(args.output or Path(__file__).resolve().parent / "results" / f"bench_schedule_{shop}_{args.config}.json")
    output.write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report["summary"], indent=2, default=float))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
