"""The purchase-probability model: gradient-boosted trees over features, Platt-calibrated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PurchaseModel:
    """LightGBM over candidate features, then Platt scaling to P(purchase).

    The default objective is ``lambdarank``: each user's candidates form one query group and
    trees are added while validation ndcg@10 improves, which is what the reranker is judged by.
    Class imbalance (about 11 bought among 100 candidates) needs no weights under a pairwise
    ranking loss; with ``binary`` positives are up-weighted (``scale_pos_weight``) and early
    stopping watches AUC. Either way the Platt step, fitted on the validation cutoff, maps the
    scores to calibrated probabilities.
    """

    def __init__(
        self, *, trees: int, leaves: int, learning_rate: float, min_child_samples: int, seed: int, objective: str = "lambdarank"
    ) -> None:
        if objective not in ("lambdarank", "binary"):
            raise ValueError(f"objective must be lambdarank or binary, got {objective!r}")
        self.params = {
            "objective": objective,
            "num_leaves": leaves,
            "learning_rate": learning_rate,
            "min_child_samples": min_child_samples,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "seed": seed,
            "num_threads": 0,
            "verbose": -1,
        }
        self.trees = trees
        self.booster = None
        self.platt = (1.0, 0.0)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        names: list[str],
        groups: np.ndarray | None = None,
        groups_valid: np.ndarray | None = None,
    ) -> PurchaseModel:
        """``groups``: candidates per user, in row order (needed by ``lambdarank``)."""
        import lightgbm as lgb

        params = dict(self.params)
        if params["objective"] == "lambdarank":
            if groups is None or groups_valid is None:
                raise ValueError("lambdarank needs the candidates per user (groups)")
            params.update({"metric": "ndcg", "eval_at": [10]})
        else:
            positives = max(float(y.sum()), 1.0)
            params.update({"metric": "auc", "scale_pos_weight": (len(y) - positives) / positives})
        train = lgb.Dataset(x, label=y.astype(np.float32), group=groups, feature_name=names, free_raw_data=True)
        valid = lgb.Dataset(x_valid, label=y_valid.astype(np.float32), group=groups_valid, reference=train)
        self.booster = lgb.train(
            params, train, num_boost_round=self.trees, valid_sets=[valid],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        self.platt = fit_platt(self.margin(x_valid), y_valid)
        return self

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds before calibration), float64 [n]."""
        return self.booster.predict(x, raw_score=True, num_iteration=self.booster.best_iteration)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated P(purchase), float64 [n]."""
        a, b = self.platt
        return 1.0 / (1.0 + np.exp(-(a * self.margin(x) + b)))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """float64 [n, f + 1]: each feature's additive share of the margin (TreeSHAP), bias last."""
        return self.booster.predict(x, pred_contrib=True, num_iteration=self.booster.best_iteration)

    def importance(self) -> dict[str, float]:
        """Share of total gain per feature."""
        gain = self.booster.feature_importance("gain")
        return dict(zip(self.booster.feature_name(), (gain / max(gain.sum(), 1e-12)).round(4).tolist()))

    def save(self, folder: Path) -> None:
        (folder / "purchase_model.txt").write_text(self.booster.model_to_string(), encoding="utf-8")
        (folder / "purchase_model.json").write_text(json.dumps({"platt": self.platt, "params": self.params, "trees": self.trees}))

    @classmethod
    def load(cls, folder: Path) -> PurchaseModel:
        import lightgbm as lgb

        meta = json.loads((folder / "purchase_model.json").read_text())
        params = meta["params"]
        model = cls(trees=meta["trees"], leaves=params["num_leaves"], learning_rate=params["learning_rate"],
                    min_child_samples=params["min_child_samples"], seed=params["seed"], objective=params["objective"])
        model.booster = lgb.Booster(model_str=(folder / "purchase_model.txt").read_text(encoding="utf-8"))
        model.platt = tuple(meta["platt"])
        return model


def fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic regression of the label on the margin (one feature, lightly regularised)."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=100.0).fit(margin.reshape(-1, 1), y.astype(int))
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
