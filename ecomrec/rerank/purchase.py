"""The purchase model: LightGBM ``lambdarank`` over candidate features (the reranker calibrates
its margins into probabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PurchaseModel:
    """LightGBM over candidate features: each user's candidates form one query group and trees are
    added while validation ndcg@10 improves (a pairwise loss needs no class weights). With
    ``models`` > 1 that many boosters learn from the same rows, each with its own row and feature
    bagging seeds, and their margins are averaged."""

    def __init__(self, *, trees: int, leaves: int, learning_rate: float, min_child_samples: int, seed: int,
                 models: int = 1) -> None:
        self.params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "num_leaves": leaves, "learning_rate": learning_rate,
            "min_child_samples": min_child_samples, "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1,
            "seed": seed, "num_threads": 0, "verbose": -1,
        }
        self.trees, self.models, self.boosters = trees, models, []

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
            groups_valid: np.ndarray, names: list[str]) -> PurchaseModel:
        """``groups``: candidates per user, in row order."""
        import lightgbm as lgb

        train = lgb.Dataset(x, label=y.astype(np.float32), group=groups, feature_name=names, free_raw_data=True)
        valid = lgb.Dataset(x_valid, label=y_valid.astype(np.float32), group=groups_valid, reference=train)
        self.boosters = [lgb.train(self._booster_params(i), train, num_boost_round=self.trees, valid_sets=[valid],
                                   callbacks=[lgb.early_stopping(50, verbose=False)]) for i in range(self.models)]
        return self

    def _booster_params(self, i: int) -> dict:
        """Booster ``i``'s parameters: its own bagging seeds (the first is the single model; the
        data's binning, seeded by ``seed``, is shared)."""
        if not i:
            return self.params
        seed = self.params["seed"]
        return {**self.params, "bagging_seed": seed + 7919 * i, "feature_fraction_seed": seed + 104729 * i}

    @property
    def best_iterations(self) -> list[int]:
        """Trees kept by early stopping, per booster."""
        return [int(b.best_iteration) for b in self.boosters]

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds before calibration), float64 [n]: the boosters' mean."""
        return np.mean([b.predict(x, raw_score=True, num_iteration=b.best_iteration) for b in self.boosters], axis=0)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """float64 [n, f + 1]: each feature's additive share of the margin (TreeSHAP; the boosters'
        mean adds up to the mean margin), bias last."""
        return np.mean([b.predict(x, pred_contrib=True, num_iteration=b.best_iteration) for b in self.boosters], axis=0)

    def importance(self) -> dict[str, float]:
        """Share of total gain per feature (summed over the boosters)."""
        gain = np.sum([b.feature_importance("gain") for b in self.boosters], axis=0)
        return dict(zip(self.boosters[0].feature_name(), (gain / max(gain.sum(), 1e-12)).round(4).tolist()))

    def save(self, folder: Path, name: str = "purchase_model") -> None:
        for i, booster in enumerate(self.boosters):
            (folder / f"{name}{_suffix(i)}.txt").write_text(booster.model_to_string(), encoding="utf-8")
        (folder / f"{name}.json").write_text(json.dumps({"params": self.params, "trees": self.trees, "models": len(self.boosters)}))

    @classmethod
    def load(cls, folder: Path, name: str = "purchase_model") -> PurchaseModel:
        import lightgbm as lgb

        meta = json.loads((folder / f"{name}.json").read_text())
        params = meta["params"]
        model = cls(trees=meta["trees"], leaves=params["num_leaves"], learning_rate=params["learning_rate"],
                    min_child_samples=params["min_child_samples"], seed=params["seed"], models=meta.get("models", 1))
        model.boosters = [lgb.Booster(model_str=(folder / f"{name}{_suffix(i)}.txt").read_text(encoding="utf-8"))
                          for i in range(model.models)]
        return model


def _suffix(i: int) -> str:
    """File suffix of booster ``i`` (the first keeps the single model's name)."""
    return f".{i}" if i else ""


def fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic regression of the label on the margin (one feature, lightly regularised)."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=100.0).fit(margin.reshape(-1, 1), y.astype(int))
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
