"""Generic loader: column mapping, CSV and Parquet, events, catalog with cold items, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ecomrec.datasets import CatalogColumns, InteractionColumns, from_files
from ecomrec.exceptions import DataError

COLS = InteractionColumns(user="customer", item="sku", timestamp="ts", quantity="qty")


def _log(tmp_path: Path, frame: pd.DataFrame, name: str = "log.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture
def log_frame(tiny_frame: pd.DataFrame) -> pd.DataFrame:
    return tiny_frame.rename(columns={"user": "customer", "item": "sku", "qty": "qty"})


def test_csv_and_parquet_give_the_same_dataset(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    a = from_files(_log(tmp_path, log_frame), columns=COLS)
    b = from_files(_log(tmp_path, log_frame, "log.parquet"), columns=COLS)
    assert a.fingerprint == b.fingerprint
    assert (a.n_users, a.n_items, len(a)) == (3, 4, 6)
    counts = a.user_items("quantity").toarray()
    user_a, item_x = a.users.index(["a"])[0], a.items.index(["x"])[0]
    assert counts[user_a, item_x] == pytest.approx(float(pd.Series([1 + 3]).pipe(lambda s: __import__("numpy").log1p(s))[0]))


def test_catalog_adds_cold_items_and_text(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    catalog = pd.DataFrame(
        {"sku": ["x", "y", "new"], "title": ["Red mug", "Blue  bag", "Green tin"], "brand": ["Acme", "", "Acme"], "price": ["1.5", "2", "3"]}
    )
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    data = from_files(
        _log(tmp_path, log_frame),
        tmp_path / "catalog.csv",
        columns=COLS,
        catalog_columns=CatalogColumns(item="sku", text=("title", "brand"), price="price"),
    )
    texts = dict(zip(data.catalog["item_id"], data.catalog["text"]))
    assert texts == {"new": "Green tin - Acme", "w": "w", "x": "Red mug - Acme", "y": "Blue bag", "z": "z"}
    assert data.report.items_without_text == 2  # w and z were bought but are not in the catalog
    assert "new" in data.items and data.user_items().toarray()[:, data.items.index(["new"])[0]].sum() == 0


def test_catalog_rows_dropped_are_counted_and_blank_texts_take_the_category(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    catalog = pd.DataFrame({
        "sku": ["x", "", "y", "x", "new"],
        "title": ["Old mug", "Orphan", "", "Red mug", ""],
        "category": ["Kitchen", "Misc", "Bags", "Kitchen", ""],
    })
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    data = from_files(_log(tmp_path, log_frame), tmp_path / "catalog.csv", columns=COLS,
                      catalog_columns=CatalogColumns(item="sku", category="category"))
    texts = dict(zip(data.catalog["item_id"], data.catalog["text"]))
    assert texts == {"new": "new", "w": "w", "x": "Red mug", "y": "Bags", "z": "z"}  # the last listing of x wins
    assert data.report.catalog_dropped == {"missing_item": 1, "duplicate": 1}
    assert data.report.items_without_text == 4  # y and new listed blank; w and z not listed
    assert "catalog: dropped 1 rows, duplicate" in str(data.report)


def test_events_filter_and_non_positive_quantity_are_counted(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    frame = log_frame.assign(event=["purchase", "view", "purchase", "purchase", "view", "purchase"])
    frame.loc[5, "qty"] = 0
    cols = InteractionColumns("customer", "sku", "ts", quantity="qty", event="event")
    data = from_files(_log(tmp_path, frame), columns=cols, events=["purchase"])
    assert data.report.dropped == {
        "missing_time": 0, "missing_user": 0, "missing_item": 0, "non_positive_quantity": 1, "other_event": 2, "duplicate": 0,
    }
    assert data.report.adds_up() and len(data) == 3


@pytest.mark.parametrize("name", ["log.csv", "log.parquet"])
def test_rows_without_a_time_are_dropped_and_counted(tmp_path: Path, log_frame: pd.DataFrame, name: str) -> None:
    frame = log_frame.assign(ts=log_frame["ts"].astype(object).where(log_frame.index != 3, None))
    frame.loc[4, "customer"] = None
    data = from_files(_log(tmp_path, frame, name), columns=COLS)
    assert data.report.dropped["missing_time"] == 1 and data.report.dropped["missing_user"] == 1
    assert data.report.adds_up() and len(data) == len(frame) - 2


def test_events_without_event_column_is_an_error(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="columns.event"):
        from_files(_log(tmp_path, log_frame), columns=COLS, events=["purchase"])


def test_quantity_and_weight_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        InteractionColumns(quantity="q", weight="w")


@pytest.mark.parametrize(
    ("mutate", "message", "row", "column"),
    [
        (lambda f: f.drop(columns=["ts"]), "missing column", None, "ts"),
        (lambda f: f.assign(ts=f["ts"].where(f.index != 2, "yesterday")), "not a date", 4, "ts"),
        (lambda f: f.assign(qty=f["qty"].astype(str).where(f.index != 1, "lots")), "not a number", 3, "qty"),
    ],
    ids=["missing-column", "bad-timestamp", "bad-quantity"],
)
def test_bad_input_names_file_row_column(tmp_path: Path, log_frame, mutate, message, row, column) -> None:
    path = _log(tmp_path, mutate(log_frame))
    with pytest.raises(DataError, match=message) as info:
        from_files(path, columns=COLS)
    assert (info.value.file, info.value.row, info.value.column) == (str(path), row, column)


def test_timestamp_format_is_enforced(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    path = _log(tmp_path, log_frame)
    with pytest.raises(DataError, match="format"):
        from_files(path, columns=COLS, timestamp_format="%d/%m/%Y")


def test_folder_of_files_and_empty_folder(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    log_frame.iloc[:3].to_csv(folder / "a.csv", index=False)
    log_frame.iloc[3:].to_csv(folder / "b.csv", index=False)
    assert len(from_files(folder, columns=COLS)) == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .csv"):
        from_files(empty, columns=COLS)


def test_timestamps_with_an_offset_are_taken_in_utc(tmp_path: Path, log_frame: pd.DataFrame) -> None:
    frame = log_frame.assign(ts=["2024-01-01 10:00", "2024-01-02 10:00+02:00", "2024-01-05T10:00Z", "2024-01-03 10:00",
                                 "2024-02-02 10:00", "2024-02-03 10:00"])
    data = from_files(_log(tmp_path, frame), columns=COLS)
    stamps = sorted(data.interactions["timestamp"].astype(str))
    assert "2024-01-02 08:00:00" in stamps and "2024-01-05 10:00:00" in stamps and "2024-01-01 10:00:00" in stamps
