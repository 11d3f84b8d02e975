"""Per-shop tuning of the candidate sources on the shop's own validation window.

Shops differ: Online Retail's 4k wholesale buyers re-order from a 4k-item range; dunnhumby's
2.4k households buy thinly from 20k products. Within a time budget, the sources with knobs are
tuned on the validation window the fusion tunes on: the popularity window and item-kNN's K on
their small grids, then ALS (factors, regularisation, alpha, cell weighting) with optuna's TPE
sampler for the rest of the budget. Each source is judged alone, by the fusion's objective: mean
recall@{50,100,200} over the ``all`` and ``new`` targets. The configured values are always tried
first, and a value replaces them only when it beats them there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from ecomrec.config import ALSConfig, HybridConfig, PopularityConfig
from ecomrec.data.split import EvalSplit

logger = logging.getLogger(__name__)

#: Popularity windows (days) and item-kNN neighbour counts tried: grids small enough to try whole.
POPULARITY_DAYS = (7, 14, 30, 60, 120)
ITEMKNN_NEIGHBOURS = (10, 20, 50, 100, 200)
#: ALS search space: optuna samples factors and weighting from these, regularisation and alpha
#: log-uniformly from these ranges.
ALS_FACTORS = (64, 128, 256, 512)
ALS_WEIGHTINGS = ("counts", "log", "binary")
ALS_REGULARIZATION = (0.1, 100.0)
ALS_ALPHA = (0.5, 50.0)
#: Depths of the objective (the fusion's, ``fusion.TUNING_KS``).
KS = (50, 100, 200)


@dataclasses.dataclass
class SourceValidation:
    """The validation users of a split and how a source alone is scored on them."""

    split: EvalSplit
    rows: np.ndarray

    def score(self, model: Any, *, exclude_bought_in_all: bool = False) -> float:
        """Mean recall@{50,100,200} of ``model`` (fitted on ``split.history``) over the all and
        new targets; ``exclude_bought_in_all``: the source leaves out bought items in every list
        (item-kNN in the hybrid)."""
        from ecomrec.metrics import ranking_metrics

        split, rows = self.split, self.rows
        users, seen = split.users[rows], split.seen[rows]
        has_new = np.flatnonzero(split.targets_new[rows].getnnz(axis=1) > 0)
        ranked_all = model.candidates(users, max(KS), exclude=seen if exclude_bought_in_all else None, allow=split.listed)
        ranked_new = model.candidates(users[has_new], max(KS), exclude=seen[has_new], allow=split.listed)
        recalls = []
        for ranked, targets in ((ranked_all, split.targets_all[rows]), (ranked_new, split.targets_new[rows][has_new])):
            metrics = ranking_metrics(ranked.item_ids, targets, KS, split.n_items)
            recalls += [metrics[f"recall@{k}"] for k in KS]
        return float(np.mean(recalls))


def tune_sources(config: HybridConfig, validation: SourceValidation, budget_s: float) -> tuple[HybridConfig, dict[str, Any]]:
    """``config`` with its sources' knobs tuned on ``validation`` within about ``budget_s`` seconds,
    and what was tried (per source: the configured and the best score, the values kept, trials)."""
    start = time.perf_counter()
    report: dict[str, Any] = {"budget_s": budget_s, "objective": "mean recall@50/100/200, all and new, each source alone"}
    sources = set(config.fusion.quotas)
    if sources & {"popularity", "own"}:
        window, report["popularity"] = _grid(
            "window_days", config.repurchase.popularity.window_days, POPULARITY_DAYS,
            lambda days: validation.score(_fit("popularity", PopularityConfig(window_days=days), validation)))
        config = config.replace(repurchase=config.repurchase.replace(popularity=PopularityConfig(window_days=window)))
    if "itemknn" in sources:
        neighbours, report["itemknn"] = _grid(
            "neighbours", config.itemknn.neighbours, ITEMKNN_NEIGHBOURS,
            lambda k: validation.score(_fit("itemknn", config.itemknn.replace(neighbours=k), validation), exclude_bought_in_all=True))
        config = config.replace(itemknn=config.itemknn.replace(neighbours=neighbours))
    left = budget_s - (time.perf_counter() - start)
    if sources & {"als", "als_new"}:
        als, report["als"] = _tune_als(config.als, validation, left)
        config = config.replace(als=als)
    report["seconds"] = time.perf_counter() - start
    return config, report


def _fit(kind: str, config: Any, validation: SourceValidation) -> Any:
    from ecomrec.retrieval.als import ALSRetriever
    from ecomrec.retrieval.baselines import ItemKNNRetriever, PopularityRetriever

    classes = {"popularity": PopularityRetriever, "itemknn": ItemKNNRetriever, "als": ALSRetriever}
    return classes[kind](config, show_progress=False).fit(validation.split.history)


def _grid(name: str, configured: Any, grid: tuple, score: Any) -> tuple[Any, dict[str, Any]]:
    """The configured value, unless another of ``grid`` scores higher."""
    scores = {value: score(value) for value in dict.fromkeys((configured, *grid))}
    best = max(scores, key=lambda v: (scores[v], v == configured))
    logger.info("tuned %s: %s (%.4f; configured %s: %.4f)", name, best, scores[best], configured, scores[configured])
    return best, {name: best, "configured": configured, "configured_score": scores[configured], "best_score": scores[best],
                  "tried": {str(v): s for v, s in scores.items()}}


def _tune_als(configured: ALSConfig, validation: SourceValidation, budget_s: float) -> tuple[ALSConfig, dict[str, Any]]:
    """The configured ALS, then TPE over factors, regularisation, alpha and weighting until the
    budget is spent (a trial started in time runs to its end)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configured_score = validation.score(_fit("als", configured, validation))
    out = {"configured_score": configured_score, "best_score": configured_score, "trials": 1}
    if budget_s <= 0:
        return configured, {**_als_values(configured), **out}

    def objective(trial: optuna.Trial) -> float:
        candidate = configured.replace(
            factors=trial.suggest_categorical("factors", ALS_FACTORS),
            regularization=trial.suggest_float("regularization", *ALS_REGULARIZATION, log=True),
            alpha=trial.suggest_float("alpha", *ALS_ALPHA, log=True),
            weighting=trial.suggest_categorical("weighting", ALS_WEIGHTINGS),
        )
        return validation.score(_fit("als", candidate, validation))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=configured.seed))
    study.optimize(objective, timeout=budget_s)
    out["trials"] += len(study.trials)
    if not study.trials or study.best_value <= configured_score:
        logger.info("tuned ALS in %d trials: the configured values kept (%.4f)", out["trials"], configured_score)
        return configured, {**_als_values(configured), **out}
    tuned = configured.replace(**study.best_params)
    logger.info("tuned ALS in %d trials: %s (%.4f; configured %.4f)", out["trials"], study.best_params, study.best_value, configured_score)
    return tuned, {**_als_values(tuned), **out, "best_score": study.best_value}


def _als_values(config: ALSConfig) -> dict[str, Any]:
    return {"factors": config.factors, "regularization": config.regularization, "alpha": config.alpha, "weighting": config.weighting}
