"""The slice table on a hand-made log with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecomrec.candidates import Candidates
from ecomrec.data.generic import from_files
from ecomrec.data.split import make_split
from ecomrec.evaluation.slices import few_basket_users, pooled, slice_values, summarise, target_kinds


@pytest.fixture()
def split(tmp_path):  # type: ignore[no-untyped-def]
    """u0 buys old items o0 (Jan) and o1 (Jan) in 3 baskets; u1 one basket of o0. In April's window:
    u0 re-buys o0, buys a0 (first sold in March: a new arrival) and c0 (listed, never sold);
    u1 buys o1 (sold in January: new to u1, warm)."""
    rows = [("u0", "o0", "2024-01-05"), ("u0", "o1", "2024-01-06"), ("u0", "o0", "2024-01-20"), ("u1", "o0", "2024-01-07"),
            ("u2", "a0", "2024-03-20"), ("u0", "o0", "2024-04-02"), ("u0", "a0", "2024-04-03"), ("u0", "c0", "2024-04-04"),
            ("u1", "o1", "2024-04-05")]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"item_id": ["o0", "o1", "a0", "c0"], "title": ["old 0", "old 1", "arrival", "cold"]}).to_csv(tmp_path / "catalog.csv", index=False)
    return make_split(from_files(tmp_path / "log.csv", tmp_path / "catalog.csv"), "2024-04-01")


def test_targets_are_split_by_kind_and_users_by_baskets(split) -> None:
    items = split.history.items
    kinds = {kind: {(int(split.users[r]), int(c)) for r, c in zip(*m.nonzero())} for kind, m in target_kinds(split).items()}
    u0, u1 = split.history.users.index(["u0", "u1"])
    o0, o1, a0, c0 = items.index(["o0", "o1", "a0", "c0"])
    assert kinds == {"repurchase": {(u0, o0)}, "new_warm": {(u1, o1)}, "new_arrival": {(u0, a0)}, "cold": {(u0, c0)}}
    assert dict(zip(split.users.tolist(), few_basket_users(split).tolist())) == {u0: False, u1: True}  # 3 baskets vs 1


def test_the_slice_table_scores_each_kind_on_its_own_targets(split) -> None:
    o0, o1, a0, c0 = split.history.items.index(["o0", "o1", "a0", "c0"])
    u0_row = int(np.flatnonzero(split.users == split.history.users.index(["u0"])[0])[0])

    def ranking(rows: list[list[int]]) -> Candidates:  # padded to 10 with -1
        ids = np.full((len(rows), 10), -1)
        ids[:, : len(rows[0])] = rows
        return Candidates(ids, np.where(ids >= 0, -np.arange(10, dtype=np.float32), -np.inf))

    order = [[o0, a0, o1, c0], [o1, o0, a0, c0]] if u0_row == 0 else [[o1, o0, a0, c0], [o0, a0, o1, c0]]
    new_order = [[a0, c0], [o1, a0]] if u0_row == 0 else [[o1, a0], [a0, c0]]
    methods = {"hybrid": (ranking(order), ranking(new_order), None), "hybrid_rerank": (ranking(order), ranking(new_order), None)}
    table = {(row["slice"], row["ranking"]): row for row in summarise(slice_values(split, methods))}
    assert table["repurchase", "all"]["users"] == 1 and table["repurchase", "all"]["methods"]["hybrid"]["recall@10"] == 1.0
    assert table["new_arrival", "new"]["targets"] == 1 and table["new_arrival", "new"]["methods"]["hybrid"]["ndcg@10"] == 1.0
    assert table["cold", "new"]["methods"]["hybrid"]["recall@10"] == 1.0  # c0 second in u0's new list
    assert table["few_baskets", "all"]["users"] == 1 and table["few_baskets", "new"]["users"] == 1
    diff = table["new", "new"]["comparisons"]["hybrid_rerank - hybrid"]
    assert diff["mean_diff"] == 0.0 and diff["users"] == 2  # identical methods: no difference
    # the same customers pooled twice (two seeds of one origin) are two rows each, one cluster each
    twice = {(row["slice"], row["ranking"]): row for row in summarise(pooled([slice_values(split, methods)] * 2))}
    assert twice["new", "new"]["users"] == 4
    assert twice["new", "new"]["comparisons"]["hybrid_rerank - hybrid"]["clusters"] == 2
