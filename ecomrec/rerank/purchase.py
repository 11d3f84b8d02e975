"""The purchase model: LightGBM ``lambdarank`` over candidate features (the reranker calibrates
its margins into probabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PurchaseModel:
    """LightGBM over candidate features: each user's candidates form one query group and trees are
    added while validation ndcg@10 improves (a pairwise loss needs no class weights)."""

    def __init__(self, *, trees: int, leaves: int, learning_rate: float, min_child_samples: int, seed: int) -> None:
        self.params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "num_leaves": leaves, "learning_rate": learning_rate,
            "min_child_samples": min_child_samples, "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1,
            "seed": seed, "num_threads": 0, "verbose": -1,
        }
        self.trees, self.booster = trees, None

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
            groups_valid: np.ndarray, names: list[str]) -> PurchaseModel:
        """``groups``: candidates per user, in row order."""
        import lightgbm as lgb

        train = lgb.Dataset(x, label=y.astype(np.float32), group=groups, feature_name=names, free_raw_data=True)
        valid = lgb.Dataset(x_valid, label=y_valid.astype(np.float32), group=groups_valid, reference=train)
        self.booster = lgb.train(self.params, train, num_boost_round=self.trees, valid_sets=[valid],
                                 callbacks=[lgb.early_stopping(50, verbose=False)])
        return self

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds before calibration), float64 [n]."""
        return self.booster.predict(x, raw_score=True, num_iteration=self.booster.best_iteration)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """float64 [n, f + 1]: each feature's additive share of the margin (TreeSHAP), bias last."""
        return self.booster.predict(x, pred_contrib=True, num_iteration=self.booster.best_iteration)

    def importance(self) -> dict[str, float]:
        """Share of total gain per feature."""
        gain = self.booster.feature_importance("gain")
        return dict(zip(self.booster.feature_name(), (gain / max(gain.sum(), 1e-12)).round(4).tolist()))

    def save(self, folder: Path, name: str = "purchase_model") -> None:
        (folder / f"{name}.txt").write_text(self.booster.model_to_string(), encoding="utf-8")
        (folder / f"{name}.json").write_text(json.dumps({"params": self.params, "trees": self.trees}))

    @classmethod
    def load(cls, folder: Path, name: str = "purchase_model") -> PurchaseModel:
        import lightgbm as lgb

        meta = json.loads((folder / f"{name}.json").read_text())
        if meta.get("models", 1) > 1:
            raise ValueError(f"{folder / name} is a seed ensemble of {meta['models']} LightGBM models, which this version "
                             "no longer builds (validation did not keep it): refit")
        params = meta["params"]
        model = cls(trees=meta["trees"], leaves=params["num_leaves"], learning_rate=params["learning_rate"],
                    min_child_samples=params["min_child_samples"], seed=params["seed"])
        model.booster = lgb.Booster(model_str=(folder / f"{name}.txt").read_text(encoding="utf-8"))
        return model


def fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic regression of the label on the margin (one feature, lightly regularised)."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=100.0).fit(margin.reshape(-1, 1), y.astype(int))
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
