"""Ranking metrics: the one implementation of recall, ndcg, mrr and hit rate in ecomrec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp


def hits(item_ids: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """bool [n, K]: whether each ranked item (dense index, -1 padding) is a target of its row."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n_items = targets.shape[1]
    coo = sp.coo_matrix(targets)
    target_keys = coo.row.astype(np.int64) * n_items + coo.col
    ranked_keys = np.arange(item_ids.shape[0], dtype=np.int64)[:, None] * n_items + item_ids
    return np.isin(ranked_keys, target_keys) & (item_ids >= 0)


def ranking_metrics(item_ids: np.ndarray, targets: sp.csr_matrix, ks: Sequence[int] = (10, 20, 50, 100, 200),
                    n_catalog: int | None = None, *,
                    per_user: bool = False) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """Mean recall@k (for each k), ndcg@10, mrr@10, hit@10 and catalog coverage@10.

    Parameters
    ----------
    item_ids
        int [n, K] ranked dense item indices per user, best first (-1 = padding), K >= max(ks).
    targets
        CSR [n, n_items]; non-zero = target. Every row needs at least one target.
    ks
        Recall cut-offs.
    n_catalog
        Catalog size for coverage@10 (default ``targets.shape[1]``).
    per_user
        Also return the per-user values (float64 [n] each), e.g. for bootstrap intervals.

    Notes
    -----
    recall@k = hits in the top k / number of targets (not capped at k); ndcg@10 uses binary
    gains and the ideal DCG of min(|targets|, 10) hits; mrr@10 is 1 / rank of the first hit in
    the top 10 (0 if none); coverage@10 = distinct items in all top-10 lists / catalog size.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> targets = sp.csr_matrix([[0, 1, 0, 1, 0]])
    >>> m = ranking_metrics([[1, 2, 3, 4, 0]], targets, ks=(2, 4), n_catalog=5)
    >>> m["recall@2"], m["recall@4"], m["mrr@10"]
    (0.5, 1.0, 1.0)
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)
    targets = sp.csr_matrix(targets)
    if item_ids.shape[1] < max(ks):
        raise ValueError(f"need at least {max(ks)} ranked items per user, got {item_ids.shape[1]}")
    if item_ids.shape[0] != targets.shape[0]:
        raise ValueError(f"{item_ids.shape[0]} ranked rows but {targets.shape[0]} target rows")
    n_targets = np.diff(targets.indptr).astype(np.float64)
    if (n_targets == 0).any():
        raise ValueError("every evaluated user needs at least one target")
    hit = hits(item_ids, targets)
    values = {f"recall@{k}": recall(hit, n_targets, k) for k in ks}
    top = hit[:, :10]
    found = top.any(axis=1)
    values["ndcg@10"] = ndcg(hit, n_targets, 10)
    values["mrr@10"] = np.where(found, 1.0 / (top.argmax(axis=1) + 1.0), 0.0)
    values["hit@10"] = found.astype(np.float64)
    means = {name: float(v.mean()) if len(v) else float("nan") for name, v in values.items()}
    shown = item_ids[:, :10]
    means["coverage@10"] = len(np.unique(shown[shown >= 0])) / float(n_catalog or targets.shape[1])
    return (means, values) if per_user else means


def recall(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """float64 [n]: hits in the top ``k`` / relevant items, per row (``hit``: bool [n, K], rank order)."""
    return hit[:, :k].sum(axis=1) / np.asarray(n_relevant, dtype=np.float64)


def ndcg(hit: np.ndarray, n_relevant: np.ndarray, k: int = 10) -> np.ndarray:
    """float64 [n]: ndcg@k of binary gains ``hit`` (bool [n, K], rank order), the ideal DCG being
    that of min(relevant, k) hits. Rows need at least one relevant item."""
    top = np.asarray(hit[:, :k], dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(np.asarray(n_relevant), k).astype(int) - 1]
    return dcg / ideal


def graded_ndcg(item_ids: np.ndarray, gains: sp.csr_matrix, k: int = 10) -> np.ndarray:
    """float64 [n]: ndcg@k with graded relevance (search judgments): DCG of ``2**gain - 1`` over
    the ranked items (dense indices, -1 padding) against the ideal order of each row's gains
    (CSR [n, n_items]). Rows without any gain score 0.

    >>> import scipy.sparse as sp
    >>> gains = sp.csr_matrix([[0, 2, 1, 0]])
    >>> float(graded_ndcg([[1, 2, 0]], gains, k=3)[0]), round(float(graded_ndcg([[2, 1, -1]], gains, k=3)[0]), 4)
    (1.0, 0.7967)
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)[:, :k]
    gains = sp.csr_matrix(gains)
    valid = item_ids >= 0
    ranked = np.zeros(item_ids.shape, dtype=np.float64)
    rows = np.broadcast_to(np.arange(item_ids.shape[0])[:, None], item_ids.shape)
    ranked[valid] = np.asarray(gains[rows[valid], item_ids[valid]]).ravel()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = ((2.0 ** ranked - 1.0) * discounts[: ranked.shape[1]]).sum(axis=1)
    ideal = np.zeros(len(dcg))
    for row in range(gains.shape[0]):
        best = np.sort(gains.data[gains.indptr[row] : gains.indptr[row + 1]])[::-1][:k]
        ideal[row] = ((2.0 ** best - 1.0) * discounts[: len(best)]).sum()
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def ndcg_from_labels(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray, k: int = 10) -> float:
    """Mean ndcg@k of ordering each row's candidates by ``scores`` (float [n, m]; ``labels`` and
    ``valid`` bool [n, m]); rows without a valid positive are skipped (0.0 if none has one)."""
    per_row = ndcg_rows(scores, labels, valid, k)
    return float(np.nanmean(per_row)) if np.isfinite(per_row).any() else 0.0


def ndcg_rows(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray, k: int = 10) -> np.ndarray:
    """float64 [n] ndcg@k of each row as :func:`ndcg_from_labels` orders it; NaN for rows
    without a valid positive."""
    masked = np.where(valid, scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    relevant = labels & valid
    positives = relevant.sum(axis=1)
    rows = positives > 0
    out = np.full(len(rows), np.nan)
    if rows.any():
        gains = np.take_along_axis(relevant, order, axis=1)
        out[rows] = ndcg(gains[rows], positives[rows], k)
    return out


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width probability bins, and the reliability table (bin mean vs frequency)."""
    from sklearn.calibration import calibration_curve

    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not len(p):
        return float("nan"), []
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)  # sklearn's own binning
    filled = np.flatnonzero(counts)
    ece = float(np.sum(counts[filled] / len(p) * np.abs(predicted - observed)))
    return ece, [{"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(counts[b]), "predicted": float(mp),
                  "observed": float(fo)} for b, mp, fo in zip(filled, predicted, observed)]


def paired_bootstrap(values: np.ndarray, baseline: np.ndarray, *, samples: int = 2000, seed: int = 0,
                     clusters: np.ndarray | None = None) -> dict[str, Any]:
    """Mean per-user difference and its 95 % percentile-bootstrap interval (users resampled in
    pairs, ``scipy.stats.bootstrap``). ``clusters`` (one label per value): rows sharing a label —
    one customer scored at several seeds or origins — are resampled together, so repeats of a
    customer do not pass for independent evidence (the interval is of the pooled mean difference)."""
    from scipy.stats import bootstrap

    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    diff = a - b
    clusters = np.arange(len(diff)) if clusters is None else np.asarray(clusters)
    if len(clusters) != len(diff):
        raise ValueError(f"clusters needs one label per value: {len(clusters)} labels for {len(diff)} values")
    labels, index = np.unique(clusters, return_inverse=True)
    groups = len(labels)
    if np.ptp(diff) == 0:  # every user differs by the same amount: no spread to resample
        low = high = float(diff[0]) if len(diff) else float("nan")
    else:
        if groups < len(diff):  # whole clusters resampled: the statistic is their pooled mean difference
            data = (np.bincount(index, weights=diff), np.bincount(index).astype(np.float64))
            statistic = lambda s, c, axis: s.sum(axis=axis) / c.sum(axis=axis)  # noqa: E731
        else:
            data, statistic = (a, b), lambda x, y, axis: np.mean(x - y, axis=axis)  # noqa: E731
        result = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=samples, confidence_level=0.95,
                           method="percentile", random_state=seed)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"mean_diff": float(diff.mean()), "ci95": [low, high], "users": int(len(diff)), "clusters": int(groups),
            "excludes_zero": bool(low > 0 or high < 0)}
