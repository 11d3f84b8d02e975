"""Is the served engine still right? :meth:`~ecomrec.engine.Engine.monitor` replays a window of
realised purchases the engine has not seen: what it would have recommended to each customer who
bought, how well that ranked and how honest its probabilities were, against the engine's own
validation figures, and how far the shop moved away from what it learnt.

The verdict is ``refit advised`` when any of these holds, else ``ok``:

* ``quality``: ndcg@10 on the window below QUALITY_FLOOR times the engine's validation ndcg@10
  (its reranker's last training cutoff, full lists);
* ``calibration``: the expected calibration error of the probabilities (every candidate the
  reranker scores, as on its validation cutoff) above ECE_RATIO times the validation one and
  above ECE_FLOOR (a month later some drift of calibration is normal: on a stable planted shop
  the ratio is about 2);
* ``drift``: the population stability index of item purchase shares (the reference period's
  PSI_TOP_ITEMS most bought items and one bin for the rest, this window against the same span
  at the end of the engine's log) above PSI_CEILING (the usual "major shift" line);
* ``unknown_items``: more than UNKNOWN_ITEM_CEILING of the window's purchases are of items the
  engine does not know (an ``update`` with a catalog adds them; a refit learns them).

Customers the engine does not know are counted (``unknown_customers``) but raise no alarm: an
``update`` serves them. numpy, scikit-learn's calibration curve and matplotlib (the plot) only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.data.changes import update_rows
from ecomrec.exceptions import DataError
from ecomrec.metrics import expected_calibration_error, ranking_metrics
from ecomrec.rerank import RerankedRetriever

QUALITY_FLOOR = 0.75
ECE_RATIO = 3.0
ECE_FLOOR = 0.02
PSI_CEILING = 0.25
PSI_TOP_ITEMS = 49
UNKNOWN_ITEM_CEILING = 0.10
#: Smallest share a PSI bin is given (an empty bin would make the index infinite).
PSI_FLOOR = 1e-4


def monitor(engine: Any, interactions: Any, *, k: int = 10, plot: str | Path | None = None) -> dict[str, Any]:
    """The report of :meth:`Engine.monitor` (``engine``: a fitted Engine)."""
    snap = engine.snapshot
    rows, _ = update_rows(interactions)
    if not len(rows):
        raise DataError("the monitoring window holds no purchases")
    log_end = snap.log.end if snap.log is not None and len(snap.log) else None
    if log_end is not None and (rows["timestamp"] <= log_end).any():
        raise DataError(f"{int((rows['timestamp'] <= log_end).sum())} purchases are dated at or before the engine's last one "
                        f"({log_end}): monitoring judges purchases the engine has not seen")
    start, end = rows["timestamp"].min(), rows["timestamp"].max()
    users, items = snap.users.positions(rows["user_id"]), snap.items.positions(rows["item_id"])
    report: dict[str, Any] = {"window": {"start": str(start), "end": str(end), "days": float((end - start) / pd.Timedelta(days=1)),
                                         "purchases": int(len(rows))},
                              "unknown_customers": float(np.mean(users < 0)), "unknown_items": float(np.mean(items < 0))}
    known = (users >= 0) & (items >= 0)
    report.update(_ranking(engine, snap, users[known], items[known], k))
    report["validation"] = _validation_figures(snap.model)
    report["drift"] = _drift(snap, rows, items, start)
    report["reasons"] = _reasons(report)
    report["verdict"] = "refit advised" if report["reasons"] else "ok"
    if plot is not None:
        _plot(report, Path(plot))
    return report


def _ranking(engine: Any, snap: Any, users: np.ndarray, items: np.ndarray, k: int) -> dict[str, Any]:
    """recall@k, ndcg@10 and coverage of the engine's top ``k`` for the customers who bought, and the
    calibration of every probability it gives them."""
    customers, row = np.unique(users, return_inverse=True)
    if not len(customers):
        return {"customers": 0}
    targets = sp.csr_matrix((np.ones(len(items)), (row, items)), shape=(len(customers), len(snap.items)))
    targets.data[:] = 1.0
    # probabilities are judged on every candidate the reranker scores, as its calibration was fitted and validated
    scored = snap.model.reranker.config.candidates if isinstance(snap.model, RerankedRetriever) else 0
    found = engine.recommend(snap.users.ids_of(customers).tolist(), k=max(k, 10, scored)).candidates
    metrics = ranking_metrics(found.item_ids, targets, (k,), int(snap.listed.sum()))
    out = {"customers": int(len(customers)), f"recall@{k}": metrics[f"recall@{k}"], "ndcg@10": metrics["ndcg@10"],
           "coverage@10": metrics["coverage@10"]}
    p = found.sources.get("p_purchase")
    if p is not None:
        shown = (found.item_ids[:, :scored] >= 0) & np.isfinite(p[:, :scored])
        rows_, cols = np.nonzero(shown)
        labels = np.asarray(targets[rows_, found.item_ids[rows_, cols]]).ravel() > 0
        probabilities = p[:, :scored][shown]
        ece, table = expected_calibration_error(probabilities, labels)
        out.update(ece=ece, brier=float(np.mean((probabilities - labels) ** 2)), mean_probability=float(probabilities.mean()),
                   bought_share=float(labels.mean()), reliability=table)
    return out


def _validation_figures(model: Any) -> dict[str, Any]:
    """The engine's own figures from its reranker's validation cutoff (none for a hybrid alone)."""
    if not isinstance(model, RerankedRetriever):
        return {}
    reranker = model.reranker
    check, calibration = reranker.training_["validation"], reranker.training_["calibration"]
    order = check["order"]["all"]
    return {"cutoff": check["cutoff"], "ndcg@10": check["by_list"]["all"][f"{order}_ndcg@10"],
            "ece": calibration[calibration["kept"]]["all_lists"]}


def _drift(snap: Any, rows: pd.DataFrame, items: np.ndarray, start: pd.Timestamp) -> dict[str, Any]:
    """PSI of item purchase shares: the window against the same span at the end of the log."""
    if snap.log is None or not len(snap.log):
        return {}
    span = max(rows["timestamp"].max() - start, pd.Timedelta(days=1))
    log = snap.log.interactions
    reference = log["item"][log["timestamp"] > snap.log.end - span].to_numpy()
    top = np.argsort(-np.bincount(reference, minlength=len(snap.items)), kind="stable")[:PSI_TOP_ITEMS]
    bins = np.full(len(snap.items) + 1, len(top))  # the last bin: every other item, and items unknown to the engine
    bins[top] = np.arange(len(top))
    expected = _shares(bins[reference], len(top) + 1)
    actual = _shares(bins[np.where(items >= 0, items, len(snap.items))], len(top) + 1)
    terms = (actual - expected) * np.log(actual / expected)
    largest = np.argsort(-terms)[:10]
    names = [*map(str, snap.items.ids_of(top)), "other items"]
    return {"psi": float(terms.sum()), "reference_purchases": int(len(reference)),
            "largest": [{"item": names[b], "reference_share": float(expected[b]), "window_share": float(actual[b]),
                         "psi_term": float(terms[b])} for b in largest]}


def _shares(binned: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(binned, minlength=n).astype(np.float64)
    return np.maximum(counts / max(counts.sum(), 1.0), PSI_FLOOR)


def _reasons(report: dict[str, Any]) -> list[str]:
    """Which thresholds the window crosses (the module docstring's rules)."""
    reasons, validation = [], report["validation"]
    if "ndcg@10" in validation and report.get("customers") and report["ndcg@10"] < QUALITY_FLOOR * validation["ndcg@10"]:
        reasons.append("quality")
    if "ece" in report and report["ece"] > max(ECE_FLOOR, ECE_RATIO * validation.get("ece", 0.0)):
        reasons.append("calibration")
    if report["drift"].get("psi", 0.0) > PSI_CEILING:
        reasons.append("drift")
    if report["unknown_items"] > UNKNOWN_ITEM_CEILING:
        reasons.append("unknown_items")
    return reasons


def _plot(report: dict[str, Any], path: Path) -> None:
    """Reliability diagram and the items whose purchase share moved most, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    table = report.get("reliability", [])
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    if table:
        left.plot([r["predicted"] for r in table], [r["observed"] for r in table], marker="o")
    left.set(xlabel="predicted P(purchase)", ylabel="bought share", title=f"calibration: ECE {report.get('ece', float('nan')):.3f}")
    largest = report["drift"].get("largest", [])
    right.barh([r["item"] for r in largest][::-1], [r["psi_term"] for r in largest][::-1])
    right.set(xlabel="PSI term", title=f"item share drift: PSI {report['drift'].get('psi', float('nan')):.3f}")
    fig.suptitle(f"{report['window']['start'][:10]} to {report['window']['end'][:10]}: {report['verdict']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
