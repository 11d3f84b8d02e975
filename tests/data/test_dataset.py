"""Dataset: split, user-item matrices and their weightings, histories as text, fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecomrec.data import IdMap
from ecomrec.data.synthetic import synthetic
from ecomrec.datasets import InteractionColumns, from_files


@pytest.fixture
def tiny(tmp_path: Path, tiny_frame: pd.DataFrame):
    tiny_frame.to_csv(tmp_path / "log.csv", index=False)
    return from_files(tmp_path / "log.csv", columns=InteractionColumns("user", "item", "ts", quantity="qty"))


def test_split_by_time_shares_maps_and_catalog(tiny) -> None:
    history, target = tiny.split_by_time("2024-02-01")
    assert len(history) == 4 and len(target) == 2
    assert history.items == target.items == tiny.items and history.n_items == 4  # w, z stay in the catalog
    _, one_day = tiny.split_by_time("2024-02-02", "2024-02-02")  # test_to is inclusive
    assert len(one_day) == 1
    with pytest.raises(ValueError, match="before"):
        tiny.split_by_time("2024-02-02", "2024-01-01")


def test_user_items_weightings(tiny) -> None:
    a, x, y = tiny.users.index(["a"])[0], *tiny.items.index(["x", "y"])
    assert tiny.user_items("counts")[a, x] == 2
    assert tiny.user_items("binary")[a, x] == 1
    assert tiny.user_items("log")[a, x] == pytest.approx(np.log1p(2))
    assert tiny.user_items("quantity")[a, x] == pytest.approx(np.log1p(1 + 3))
    assert tiny.user_items("counts")[a, y] == 1
    with pytest.raises(ValueError, match="weighting"):
        tiny.user_items("tfidf")


def test_histories_newest_first_distinct(tiny) -> None:
    a = tiny.users.index(["a"])[0]
    history = tiny.user_histories()[a]
    assert tiny.items.ids_of(history).tolist() == ["x", "y"]  # x bought again on Jan 5, after y
    assert tiny.history_texts([a], max_items=1) == ["x"]
    assert tiny.history_texts([a]) == ["x; y"]  # no catalog: titles are ids


def test_days_since_purchase(tiny) -> None:
    days = tiny.days_since_purchase()
    a, b = tiny.users.index(["a", "b"])
    x, y, z = tiny.items.index(["x", "y", "z"])
    # the log ends 2024-02-03 10:00: a last bought x on Jan 5 (29 days before), y on Jan 2 (32)
    assert days[a, x] == pytest.approx(1 + 29) and days[a, y] == pytest.approx(1 + 32)
    assert days[b, z] == pytest.approx(1 + 1) and days[a, z] == 0


def test_popularity_counts_distinct_buyers_in_window(tiny) -> None:
    pop = tiny.item_popularity()
    assert dict(zip(tiny.items.ids, pop)) == {"w": 1, "x": 1, "y": 2, "z": 1}
    recent = tiny.item_popularity(window_days=5)  # last 5 days of the log: Feb 2 and 3
    assert dict(zip(tiny.items.ids, recent)) == {"w": 1, "x": 0, "y": 0, "z": 1}


def test_fingerprint_depends_on_content_only() -> None:
    assert synthetic(seed=3).fingerprint == synthetic(seed=3).fingerprint
    assert synthetic(seed=3).fingerprint != synthetic(seed=4).fingerprint


def test_bad_construction_is_refused() -> None:
    data = synthetic(seed=0)
    broken = data.interactions.assign(item=data.n_items + 5)
    with pytest.raises(ValueError, match="outside"):
        type(data)(broken, data.catalog, data.users, data.items)
    with pytest.raises(ValueError, match="catalog has"):
        type(data)(data.interactions, data.catalog.iloc[:3], data.users, data.items)
    with pytest.raises(ValueError, match="lack"):
        type(data)(data.interactions.drop(columns=["quantity"]), data.catalog, data.users, data.items)


def test_idmap_round_trip_and_unknown_policy(tmp_path: Path) -> None:
    ids = IdMap(["85123A", "71053", "22633"])
    ids.save(tmp_path / "ids.json")
    assert IdMap.load(tmp_path / "ids.json") == ids
    assert ids.index(["22633", "85123A"]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="1 unknown id"):
        ids.index(["nope"])
    with pytest.warns(UserWarning, match="mapped to -1"):
        assert ids.index(["nope", "71053"], on_unknown="warn").tolist() == [-1, 1]
    assert ids.index(["nope", "71053"], on_unknown="drop").tolist() == [1]
    assert ids.ids_of([1, -1]).tolist() == ["71053", None]
    with pytest.raises(ValueError, match="distinct"):
        IdMap(["a", "a"])


def test_idmap_load_rejects_garbage(tmp_path: Path) -> None:
    from ecomrec.exceptions import ArtifactError

    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(ArtifactError):
        IdMap.load(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text('["a", "b"')
    with pytest.raises(ArtifactError):
        IdMap.load(tmp_path / "cut.json")


def test_forgetting_ids_keeps_every_other_index() -> None:
    users = IdMap(["a", "b", "c"])
    forgotten = users.forgetting(["b", "zz"])
    assert forgotten.positions(["a", "b", "c"]).tolist() == [0, -1, 2]  # b is unreachable, the others stay
    assert forgotten.forgotten().tolist() == [1] and users.forgotten().tolist() == []
    grown = IdMap([*forgotten.ids, "b"])  # b comes back as a new customer
    assert grown.extends(users) and grown.extends(forgotten) and grown.positions(["b"]).tolist() == [3]
    assert not IdMap(["a", "x", "c"]).extends(users) and not IdMap(["a"]).extends(users)
