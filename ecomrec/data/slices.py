"""Who and what the slices look at: the evaluation's slice table and the reranker's slice gate
both read their kinds of target and of customer from here, so the gate refuses what the table
would show."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: An item first sold this many days before the cutoff or later is a new arrival.
NEW_ARRIVAL_DAYS = 30
#: Users with at most this many baskets before the cutoff form the ``few_baskets`` slice.
FEW_BASKETS = 2


def few_baskets(history: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    """bool [len(users)]: the dense ``users`` with at most FEW_BASKETS distinct purchase times in
    ``history`` (interactions with ``user`` and ``timestamp``)."""
    baskets = history.drop_duplicates(["user", "timestamp"]).groupby("user").size()
    return baskets.reindex(users, fill_value=0).to_numpy() <= FEW_BASKETS
