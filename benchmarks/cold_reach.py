"""How far can any text-only method reach a shop's cold targets (items never sold before the cutoff)?

A never-sold item has no behaviour; all a recommender knows of it is its catalog text. Where many
never-sold items share one text (dunnhumby's catalog has product types and sizes, not names), no
text model can tell them apart, so even an oracle that knew the exact text of every item a user
will buy can only pick at random among the items sharing it. This script measures that ceiling on
one target window, and how often a cold target's text or category appears in the user's history:

    python benchmarks/cold_reach.py --data ../shared/data/dunnhumby-sample --cutoff 2017-09-30

Expected cold recall@10 per user (the protocol's recall: hits over min(targets, 10)):

- ``text_oracle``: the 10 slots go to the user's cold targets' own texts, each slot a random one
  of the never-sold items sharing that text (an upper bound for a text-only scorer);
- ``history_text``: the slots go at random among the never-sold items whose text equals a text
  the user bought before (the best a history-to-text matcher can do without other signals).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ecomrec import datasets


def cold_reach(data: datasets.Dataset, cutoff: pd.Timestamp, days: int) -> dict[str, object]:
    log, catalog = data.interactions, data.catalog
    before = log[log["timestamp"] < cutoff]
    window = log[(log["timestamp"] >= cutoff) & (log["timestamp"] < cutoff + pd.Timedelta(days=days))]
    window = window[window["user"].isin(set(before["user"]))]
    sold = np.zeros(len(catalog), dtype=bool)
    sold[before["item"].to_numpy()] = True
    targets = window[["user", "item"]].drop_duplicates()
    cold = targets[~sold[targets["item"].to_numpy()]]
    history = before.groupby("user")["item"].agg(lambda items: set(items.to_numpy()))
    text = catalog["text"].fillna("").astype(str)
    keys = {"text": text.to_numpy(), "product_type": text.str.split(" - ").str[0].to_numpy(),
            "category": catalog["category"].fillna("").astype(str).to_numpy()}
    result: dict[str, object] = {
        "cutoff": str(cutoff.date()), "days": days, "users_with_cold_targets": int(cold["user"].nunique()),
        "cold_targets": len(cold), "cold_share_of_targets": round(len(cold) / max(len(targets), 1), 4),
        "never_sold_items": int((~sold).sum()),
        "recall@10_text_oracle": _oracle(cold, keys["text"], sold),
    }
    for level, key in keys.items():
        result[level] = _history_match(cold, history, key, sold)
    return result


def _recall(hits_per_user: list[tuple[float, int]]) -> float:
    """Mean over users of expected hits in the top 10 over min(targets, 10)."""
    return round(float(np.mean([min(h, 10) / min(n, 10) for h, n in hits_per_user])), 4)


def _oracle(cold: pd.DataFrame, text: np.ndarray, sold: np.ndarray) -> float:
    """Each target's text known: its share of the 10 slots picks at random among the never-sold
    items with that text."""
    per_text = pd.Series(text[~sold]).value_counts()
    users = []
    for _, items in cold.groupby("user")["item"]:
        share = 10 / len(items)
        users.append((sum(min(1.0, share / per_text[text[i]]) for i in items if text[i]), len(items)))
    return _recall(users)


def _history_match(cold: pd.DataFrame, history: pd.Series, key: np.ndarray, sold: np.ndarray) -> dict[str, float]:
    """Cold targets whose key (text, product type, category) the user bought before, and the
    recall@10 of 10 random picks among the never-sold items sharing a key with the history."""
    per_key = pd.Series(key[~sold]).value_counts()
    matched, pools, users = 0, [], []
    for user, items in cold.groupby("user")["item"]:
        bought = {key[i] for i in history[user] if key[i]}
        pools.append(sum(int(per_key.get(k, 0)) for k in bought))
        hits = sum(key[i] in bought for i in items)
        matched += hits
        users.append((hits * min(1.0, 10 / pools[-1]) if pools[-1] else 0.0, len(items)))
    return {"cold_targets_in_history": round(matched / max(len(cold), 1), 4), "median_pool": float(np.median(pools)),
            "recall@10_random_in_pool": _recall(users)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the dunnhumby sample's folder (interactions.csv, catalog.csv)")
    parser.add_argument("--cutoff", required=True, help="first day of the target window")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--output", default="benchmarks/results/cold_reach_dunnhumby.json")
    args = parser.parse_args()
    data = datasets.dunnhumby_sample(args.data)
    result = cold_reach(data, pd.Timestamp(args.cutoff), args.days)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
