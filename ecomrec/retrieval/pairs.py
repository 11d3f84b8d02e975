"""Training examples from baskets: "what the user had bought" → "an item bought next"."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ecomrec.data.dataset import Dataset


@dataclasses.dataclass
class NextItemPairs:
    """One example per sampled basket."""

    users: np.ndarray  # int64 [n] dense user of each example
    times: np.ndarray  # datetime64 [n] time of the basket
    histories: list[np.ndarray]  # per example, int64 distinct items bought before the basket, newest first
    positives: np.ndarray  # int64 [n] an item of the basket the user had not bought before

    def __len__(self) -> int:
        return len(self.users)


def next_item_pairs(data: Dataset, *, history_items: int, max_pairs: int, seed: int, holdout_users: np.ndarray | None = None,
                    holdout_from: pd.Timestamp | None = None, per_basket: int = 1, recent_from: pd.Timestamp | None = None,
                    replay: float = 1.0) -> NextItemPairs:
    """Sample up to ``max_pairs`` examples, up to ``per_basket`` per basket (purchases sharing user
    and time) that follows earlier purchases and holds items new to the user (drawn without
    replacement). Baskets of ``holdout_users`` at or after ``holdout_from`` (validation targets) are skipped.

    ``recent_from`` (a warm refit): every example of a basket after it (up to ``max_pairs``), and
    ``replay`` times as many drawn from the older ones, so continued training does not forget them.
    """
    rng = np.random.default_rng(seed)
    frame = data.interactions
    users, items, times = frame["user"].to_numpy(), frame["item"].to_numpy(), frame["timestamp"].to_numpy()
    order = np.lexsort((items, times, users))
    users, items, times = users[order], items[order], times[order]
    held = np.zeros(data.n_users, dtype=bool)
    if holdout_users is not None:
        held[np.asarray(holdout_users)] = True
    cutoff = None if holdout_from is None else np.datetime64(holdout_from)
    starts = np.flatnonzero(np.r_[True, (users[1:] != users[:-1]) | (times[1:] != times[:-1])])
    ends = np.r_[starts[1:], len(users)]
    out_users, out_times, out_hist, out_pos = [], [], [], []
    recent: list[int] = []
    seen: set[int] = set()
    current = -1
    for lo, hi in zip(starts, ends):
        user = int(users[lo])
        if user != current:
            current, recent, seen = user, [], set()
        basket = items[lo:hi]
        skip = held[user] and cutoff is not None and times[lo] >= cutoff
        if recent and not skip:
            new = [int(i) for i in np.unique(basket) if int(i) not in seen]
            if new:
                history = np.asarray(recent[:history_items], dtype=np.int64)
                for item in rng.permutation(new)[:per_basket]:
                    out_users.append(user)
                    out_times.append(times[lo])
                    out_hist.append(history)
                    out_pos.append(int(item))
        for item in basket[::-1]:  # newest first; within a basket, any order
            item = int(item)
            if item in recent:
                recent.remove(item)
            seen.add(item)
            recent.insert(0, item)
        del recent[history_items:]
    times = np.asarray(out_times, dtype="datetime64[ns]")
    keep = _sample(rng, times, max_pairs, recent_from, replay)
    times = times[keep]
    return NextItemPairs(users=np.asarray(out_users, dtype=np.int64)[keep], times=times, histories=[out_hist[i] for i in keep],
                         positives=np.asarray(out_pos, dtype=np.int64)[keep])


def _sample(rng: np.random.Generator, times: np.ndarray, max_pairs: int, recent_from: pd.Timestamp | None,
            replay: float) -> np.ndarray:
    """Sorted indices of the examples kept (see :func:`next_item_pairs`)."""
    if recent_from is None:
        return np.sort(rng.choice(len(times), size=min(len(times), max_pairs), replace=False))
    recent = np.flatnonzero(times > np.datetime64(recent_from))
    older = np.flatnonzero(times <= np.datetime64(recent_from))
    recent = rng.choice(recent, size=min(len(recent), max_pairs), replace=False)
    replayed = rng.choice(older, size=min(len(older), int(round(replay * len(recent))), max_pairs - len(recent)), replace=False)
    return np.sort(np.concatenate([recent, replayed])).astype(np.int64)
