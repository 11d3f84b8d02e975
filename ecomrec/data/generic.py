"""Any shop's log: interactions and catalog from CSV or Parquet, with a column mapping."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ecomrec.data.cleaning import CleaningReport, apply_rules
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.io import list_tables, parse_numbers, parse_timestamps, read_tables
from ecomrec.data.text import clean_text
from ecomrec.exceptions import DataError


@dataclasses.dataclass(frozen=True)
class InteractionColumns:
    """Names of the interaction file's columns.

    Attributes
    ----------
    user, item, timestamp
        Required.
    quantity
        Optional amount per event (rows with quantity <= 0 are dropped and counted).
    weight
        Optional weight per event, used wherever quantity would be (not with ``quantity``).
    event
        Optional event type column, filtered with ``events=``.
    """

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    quantity: str | None = None
    weight: str | None = None
    event: str | None = None

    def __post_init__(self) -> None:
        if self.quantity is not None and self.weight is not None:
            raise ValueError("InteractionColumns: give quantity or weight, not both")


@dataclasses.dataclass(frozen=True)
class CatalogColumns:
    """Names of the catalog file's columns.

    Attributes
    ----------
    item
        Item id (matches the interactions' item column).
    text
        One or more text fields joined (" - ") into the item's text, e.g. ``("title", "brand")``.
    """

    item: str = "item_id"
    text: tuple[str, ...] = ("title",)
    price: str | None = None
    category: str | None = None


def from_files(interactions: str | Path | Sequence[str | Path], catalog: str | Path | None = None, *,
               columns: InteractionColumns = InteractionColumns(), catalog_columns: CatalogColumns = CatalogColumns(),
               events: Sequence[str] | None = None, timestamp_format: str | None = None, name: str | None = None) -> Dataset:
    """Load a generic interaction log (and optionally a catalog) from CSV or Parquet.

    Parameters
    ----------
    interactions
        A file, a list of files, or a folder of ``.csv`` / ``.parquet`` files.
    catalog
        Optional catalog file; its items never bought are kept. Items without text there get their
        category, else their id (``report.items_without_text``); rows without an id or listing an
        item again are dropped (``report.catalog_dropped``).
    columns, catalog_columns
        Column mappings.
    events
        Keep only these event types (needs ``columns.event``); other rows are counted as dropped.
    timestamp_format
        ``strftime`` format of the timestamps; default ISO 8601, then inference.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> pd.DataFrame({"customer": ["a", "b"], "sku": ["x", "y"],
    ...               "ts": ["2024-01-01 10:00", "2024-01-02 11:00"]}).to_csv(f"{folder}/log.csv", index=False)
    >>> data = from_files(f"{folder}/log.csv", columns=InteractionColumns("customer", "sku", "ts"))
    >>> (data.n_users, data.n_items, data.report.kept_rows)
    (2, 2, 2)
    """
    files = _interaction_files(interactions)
    if events is not None and columns.event is None:
        raise ValueError("events= needs columns.event, the name of the event type column")
    amount = columns.quantity or columns.weight
    wanted = [columns.user, columns.item, columns.timestamp] + [c for c in (amount, columns.event) if c]
    raw = read_tables(files, wanted)
    # a blank time is a row to drop and count, like a blank user; an unreadable one is an error
    blank_time = lambda f: f[columns.timestamp].isna() | (f[columns.timestamp].astype(str).str.strip() == "")  # noqa: E731
    timed, dropped_untimed = apply_rules(raw, [("missing_time", blank_time)])
    timed = timed.copy()
    timed[columns.timestamp] = parse_timestamps(timed, columns.timestamp, files, timestamp_format)
    if amount is not None:
        timed[amount] = parse_numbers(timed, amount, files)
    for column in (columns.user, columns.item):
        timed[column] = timed[column].fillna("").astype(str).str.strip()  # a missing cell is a blank id
    rules = [("missing_user", lambda f: f[columns.user] == ""), ("missing_item", lambda f: f[columns.item] == "")]
    if amount is not None:
        rules.append(("non_positive_quantity", lambda f: f[amount] <= 0))
    if events is not None:
        rules.append(("other_event", lambda f: ~f[columns.event].astype(str).str.strip().isin(list(events))))
    rules.append(("duplicate", lambda f: f.duplicated(subset=wanted)))
    kept, dropped = apply_rules(timed, rules)
    dropped = {**dropped_untimed, **dropped}

    catalog_frame, catalog_dropped = _read_catalog(Path(catalog), catalog_columns) if catalog is not None else (None, {})
    known = kept[columns.item].unique().tolist()
    if catalog_frame is not None:
        known += catalog_frame["item_id"].tolist()
    users = IdMap.from_values(kept[columns.user].unique())
    items = IdMap.from_values(known)
    frame = pd.DataFrame({
        "user": users.index(kept[columns.user]), "item": items.index(kept[columns.item]),
        "timestamp": kept[columns.timestamp].to_numpy(),
        "quantity": kept[amount].to_numpy(np.float32) if amount else np.ones(len(kept), np.float32),
    })
    first_seen = kept.groupby(columns.item)[columns.timestamp].min()
    catalog_table, no_text = _catalog(items, catalog_frame, first_seen)
    report = CleaningReport(len(raw), dropped, len(kept), files=len(files), items_without_text=no_text, catalog_dropped=catalog_dropped)
    return Dataset(frame, catalog_table, users, items, report, name=name or files[0].stem, catalog_from_log=catalog is None)


def _interaction_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = list_tables(path)
            if not files:
                raise DataError("the folder holds no .csv or .parquet files", file=path)
            return files
        return [path]
    files = [Path(p) for p in source]
    if not files:
        raise DataError("no interaction files given")
    return files


def _read_catalog(path: Path, cols: CatalogColumns) -> tuple[pd.DataFrame, dict[str, int]]:
    if not cols.text:
        raise ValueError("CatalogColumns.text needs at least one column")
    wanted = [cols.item, *cols.text] + [c for c in (cols.price, cols.category) if c]
    raw = read_tables([path], wanted)
    texts = [raw[c].map(clean_text) for c in cols.text]
    joined = pd.Series([" - ".join(t for t in parts if t) for parts in zip(*texts)], index=raw.index)
    frame = pd.DataFrame({
        "item_id": raw[cols.item].astype(str).str.strip(), "text": joined,
        "price": parse_numbers(raw, cols.price, [path]) if cols.price else np.nan,
        "category": raw[cols.category].map(clean_text) if cols.category else "",
    })
    return apply_rules(frame, [
        ("missing_item", lambda f: f["item_id"] == ""),
        ("duplicate", lambda f: f.duplicated("item_id", keep="last")),  # the latest listing of an item wins
    ])


def _catalog(items: IdMap, listed: pd.DataFrame | None, first_seen: pd.Series) -> tuple[pd.DataFrame, int]:
    if listed is None:
        listed = pd.DataFrame({"item_id": [], "text": [], "price": [], "category": []}, dtype=object)
    table = pd.DataFrame({"item_id": items.ids}).merge(listed, on="item_id", how="left")
    text = table["text"].astype(object)
    no_text = text.isna() | (text == "")
    table["category"] = table["category"].fillna("")
    stand_in = table["category"].where(table["category"] != "", table["item_id"])  # a category says more than an id
    table["text"] = text.where(~no_text, stand_in).astype(str)
    table["price"] = table["price"].astype(np.float64)
    table["first_seen"] = first_seen.reindex(items.ids).to_numpy()
    return table, int(no_text.sum())


def dunnhumby_sample(folder: str | Path) -> Dataset:
    """The shared dunnhumby grocery sample (``interactions.csv``, ``catalog.csv``) through
    :func:`from_files`: quantities kept, text and categories from the catalog."""
    folder = Path(folder)
    return from_files(folder / "interactions.csv", folder / "catalog.csv", columns=InteractionColumns(quantity="quantity"),
                      catalog_columns=CatalogColumns(text=("text",), category="category"), name="dunnhumby-sample")
