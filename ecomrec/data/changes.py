"""Changes to a fitted engine's purchase log: customers forgotten (:func:`forget_customers`, for
:meth:`~ecomrec.engine.Engine.forget`) and new purchases appended
(:meth:`~ecomrec.engine.Engine.update`), by rules that make an update safe to repeat and lose nothing:

* an update carries ``user_id``, ``item_id``, ``timestamp`` and optionally ``quantity`` (default 1);
  any other column, a blank id, an unreadable time or a quantity <= 0 is an error;
* a row the log holds already (same customer, item, time and quantity) was applied before and is
  skipped: sending the same update twice changes nothing;
* a row repeated inside the update counts once, as when the log was first loaded;
* a row dated before the log's last purchase that the log does not hold is an error: an update
  only appends, and a late row needs a refit (nothing is dropped silently);
* a new customer is added; an item the engine does not know needs a title, from ``catalog`` or
  from the update's own catalog (a :class:`Dataset` loaded with one); without either it is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.exceptions import DataError

#: The columns an update's DataFrame may carry (the first three are required).
UPDATE_COLUMNS = ("user_id", "item_id", "timestamp", "quantity")
_KEY = ["user_id", "item_id", "timestamp", "quantity"]


@dataclasses.dataclass(frozen=True)
class Appended:
    """The whole log after an update, and what the update did."""

    data: Dataset
    report: dict[str, Any]
    touched_users: np.ndarray  # dense users with new purchases
    new_items: np.ndarray  # dense items the update added to the item map


def update_rows(new: Dataset | pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """An update as rows of external ids (``user_id``, ``item_id``, ``timestamp``, ``quantity``)
    and the titles it brings for its items (a Dataset's catalog; none for a DataFrame)."""
    if isinstance(new, Dataset):
        frame = new.interactions
        rows = pd.DataFrame({"user_id": new.users.ids_of(frame["user"]), "item_id": new.items.ids_of(frame["item"]),
                             "timestamp": frame["timestamp"].to_numpy("datetime64[ns]"), "quantity": frame["quantity"].to_numpy(np.float32)})
        no_title = np.asarray(new.item_texts, dtype=object) == new.items.ids  # a loader titles an item by its id when it has none
        return rows, {i: t for i, t, bare in zip(new.items.ids, new.item_texts, no_title) if not bare}
    if not isinstance(new, pd.DataFrame):
        raise TypeError(f"an update is a Dataset or a DataFrame, got {type(new).__name__}")
    if unknown := sorted(set(map(str, new.columns)) - set(UPDATE_COLUMNS)):
        raise DataError(f"update columns {unknown} are unknown: an update carries {list(UPDATE_COLUMNS)} (quantity optional)")
    if missing := [c for c in UPDATE_COLUMNS[:3] if c not in new.columns]:
        raise DataError(f"the update lacks column(s) {missing}")
    rows = pd.DataFrame({c: new[c].astype(str).str.strip() for c in ("user_id", "item_id")})
    if blank := int((rows == "").any(axis=1).sum() + new[["user_id", "item_id"]].isna().any(axis=1).sum()):
        raise DataError(f"{blank} update row(s) lack a user_id or item_id")
    try:
        rows["timestamp"] = pd.to_datetime(new["timestamp"], errors="raise").to_numpy("datetime64[ns]")
    except (ValueError, TypeError) as exc:
        raise DataError(f"update timestamps: {exc}") from exc
    if rows["timestamp"].isna().any():
        raise DataError(f"{int(rows['timestamp'].isna().sum())} update row(s) lack a timestamp")
    quantity = pd.to_numeric(new["quantity"], errors="coerce") if "quantity" in new.columns else pd.Series(1.0, index=new.index)
    if bad := int((~(quantity > 0)).sum()):
        raise DataError(f"{bad} update row(s) have a quantity that is not a positive number")
    rows["quantity"] = quantity.to_numpy(np.float32)
    return rows.reset_index(drop=True), {}


def append_purchases(log: Dataset, new: Dataset | pd.DataFrame, *, items: IdMap, item_texts: Sequence[str],
                     catalog: Catalog | None = None) -> Appended:
    """``log`` with the purchases of ``new`` appended by the module's rules. ``items`` and
    ``item_texts``: the engine's item map and titles now (a catalog change may have added items
    the log never saw); the result's item map extends them."""
    rows, titles = update_rows(new)
    report: dict[str, Any] = {"rows": int(len(rows)), "log_end_before": str(log.end) if len(log) else None}
    repeated = rows.duplicated(subset=_KEY)
    rows, report["repeated_in_update"] = rows[~repeated], int(repeated.sum())
    logged = _logged(log, rows)
    rows, report["already_applied"] = rows[~logged], int(logged.sum())
    if len(log) and (late := rows["timestamp"] < log.end).any():
        first = rows[late].iloc[0]
        raise DataError(f"{int(late.sum())} update row(s) are dated before the engine's last purchase ({log.end}) and are not in "
                        f"its log (first: {first['user_id']} bought {first['item_id']} at {first['timestamp']}): an update only "
                        "appends; late purchases need a refit")
    users, items_after, catalog_rows = _extended_maps(log, rows, items, item_texts, titles, catalog)
    frame = pd.DataFrame({"user": users.index(rows["user_id"]), "item": items_after.index(rows["item_id"]),
                          "timestamp": rows["timestamp"].to_numpy(), "quantity": rows["quantity"].to_numpy(np.float32)})
    data = Dataset(pd.concat([log.interactions, frame], ignore_index=True), catalog_rows, users, items_after, log.report, log.name,
                   catalog_from_log=log.catalog_from_log)
    report.update(applied=int(len(frame)), new_users=len(users) - len(log.users), new_items=len(items_after) - len(items),
                  touched_users=int(frame["user"].nunique()), log_end_after=str(data.end) if len(data) else None)
    return Appended(data, report, np.unique(frame["user"].to_numpy()), np.arange(len(items), len(items_after)))


def _logged(log: Dataset, rows: pd.DataFrame) -> np.ndarray:
    """bool [len(rows)]: the log holds the row already (only rows from the log's last day can be)."""
    if not len(log) or not len(rows):
        return np.zeros(len(rows), dtype=bool)
    recent = log.interactions[log.interactions["timestamp"] >= rows["timestamp"].min()]
    held = pd.DataFrame({"user_id": log.users.ids_of(recent["user"]), "item_id": log.items.ids_of(recent["item"]),
                         "timestamp": recent["timestamp"].to_numpy("datetime64[ns]"), "quantity": recent["quantity"].to_numpy(np.float32)})
    return rows.merge(held.drop_duplicates().assign(_held=True), on=_KEY, how="left")["_held"].fillna(False).to_numpy(bool)


def _extended_maps(log: Dataset, rows: pd.DataFrame, items: IdMap, item_texts: Sequence[str], titles: dict[str, str],
                   catalog: Catalog | None) -> tuple[IdMap, IdMap, pd.DataFrame]:
    """The user and item maps with the update's new ids appended (first appearance order), and the
    catalog frame over the item map (the engine's titles now; new items titled by ``catalog``, else
    by the update's own)."""
    new_users = pd.unique(rows["user_id"][log.users.positions(rows["user_id"]) < 0])
    users = IdMap([*log.users.ids, *new_users])
    new_items = pd.unique(rows["item_id"][items.positions(rows["item_id"]) < 0])
    given = dict(zip(catalog.item_ids, catalog.texts)) if catalog is not None else {}
    if untitled := [i for i in new_items if i not in given and i not in titles]:
        raise DataError(f"{len(untitled)} item(s) the engine does not know have no title (e.g. {untitled[:5]}): pass a catalog "
                        "listing them")
    items_after = IdMap([*items.ids, *new_items])
    known = log.catalog.set_index("item_id")
    frame = pd.DataFrame({"item_id": items_after.ids, "text": [*map(str, item_texts), *(given.get(i, titles.get(i)) for i in new_items)]})
    for column, empty in (("price", np.nan), ("category", ""), ("first_seen", pd.NaT)):
        frame[column] = known[column].reindex(frame["item_id"]).to_numpy() if len(known) else empty
        frame[column] = frame[column].where(frame[column].notna(), empty) if column == "category" else frame[column]
    first_sale = rows.groupby("item_id")["timestamp"].min()
    fresh = frame["item_id"].isin(new_items)
    frame.loc[fresh, "first_seen"] = first_sale.reindex(frame.loc[fresh, "item_id"]).to_numpy()
    return users, items_after, frame


def forget_customers(log: Dataset, user_ids: Sequence[object]) -> tuple[Dataset, dict[str, Any]]:
    """``log`` without the purchases of ``user_ids``, their ids forgotten in the user map
    (:meth:`IdMap.forgetting`: dense indices stay, so nothing else moves). Ids the log does not
    know are reported, not an error: a deletion request for a customer never seen is done."""
    requested = list(dict.fromkeys(str(u) for u in user_ids))
    positions = log.users.positions(requested)
    gone = positions[positions >= 0]
    rows = log.interactions["user"].isin(gone).to_numpy()
    data = Dataset(log.interactions[~rows], log.catalog, log.users.forgetting(requested), log.items, log.report, log.name,
                   catalog_from_log=log.catalog_from_log)
    return data, {"requested": len(requested), "forgotten": int(len(gone)), "rows_removed": int(rows.sum()),
                  "not_found": [u for u, p in zip(requested, positions) if p < 0][:20]}
