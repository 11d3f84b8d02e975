"""The cleaned, id-mapped interaction log plus catalog that every component consumes."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ecomrec.config import WEIGHTINGS
from ecomrec.data.cleaning import CleaningReport
from ecomrec.data.idmap import IdMap
from ecomrec.data.text import history_text
from ecomrec.exceptions import ArtifactError

INTERACTION_COLUMNS = ("user", "item", "timestamp", "quantity")
CATALOG_COLUMNS = ("item_id", "text", "price", "category", "first_seen")


def confidence(counts: sp.spmatrix, weighting: str) -> sp.csr_matrix:
    """Confidence weights (float32 CSR) from per-cell purchase counts: ``binary`` → 1, ``counts``
    → as is, ``log`` and ``quantity`` (unknown from counts: the closest stand-in) → ``log1p``."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    matrix = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    if weighting == "binary":
        matrix.data[:] = 1.0
    elif weighting in ("log", "quantity"):
        matrix.data = np.log1p(matrix.data)
    return matrix


class Dataset:
    """Interactions (dense ids) and the catalog they refer to.

    Parameters
    ----------
    interactions
        One row per purchase event: ``user`` (int32 dense), ``item`` (int32 dense),
        ``timestamp`` (datetime64), ``quantity`` (float32). Sorted by time here if it is not.
    catalog
        One row per item, indexed by dense item index 0..n_items-1: ``item_id`` (external id),
        ``text`` (cleaned title), ``price``, ``category`` (may be empty), ``first_seen``.
    users, items
        The id maps; ``len(items) == len(catalog)``.
    report
        What loading and cleaning dropped.
    name
        Short label used in reports.
    catalog_from_log
        The catalog was derived from the log itself (no product table, as in Online Retail):
        an item is known from its first sale on, see :meth:`listed_at`.

    Notes
    -----
    A time slice (:meth:`split_by_time`, :meth:`between`) keeps the whole catalog: a shop lists
    products before anyone buys them.
    """

    def __init__(self, interactions: pd.DataFrame, catalog: pd.DataFrame, users: IdMap, items: IdMap,
                 report: CleaningReport | None = None, name: str = "dataset", *, catalog_from_log: bool = False) -> None:
        if missing := [c for c in INTERACTION_COLUMNS if c not in interactions.columns]:
            raise ValueError(f"interactions lack column(s) {missing}")
        if missing := [c for c in CATALOG_COLUMNS if c not in catalog.columns]:
            raise ValueError(f"catalog lacks column(s) {missing}")
        if len(catalog) != len(items):
            raise ValueError(f"catalog has {len(catalog)} rows but the item map {len(items)}")
        frame = interactions.loc[:, list(INTERACTION_COLUMNS)]
        if not frame["timestamp"].is_monotonic_increasing:
            frame = frame.sort_values("timestamp", kind="stable")
        self.interactions = frame.reset_index(drop=True)
        self.catalog = catalog.reset_index(drop=True)
        self.users, self.items, self.report, self.name = users, items, report, name
        self.catalog_from_log = catalog_from_log
        for column, size in (("user", len(users)), ("item", len(items))):
            values = self.interactions[column].to_numpy()
            if len(values) and (values.min() < 0 or values.max() >= size):
                raise ValueError(f"interactions.{column} holds indices outside 0..{size - 1}")

    @classmethod
    def from_user_items(cls, user_items: sp.spmatrix, item_texts: Sequence[str] | None = None, *,
                        user_ids: Sequence[object] | None = None, item_ids: Sequence[object] | None = None,
                        name: str = "user_items") -> Dataset:
        """A dataset from a users × items matrix of purchase counts (as ``implicit`` takes).

        Every purchase is dated the same instant, so nothing that needs a time split can be
        fitted on it. ``item_texts`` default to the item ids; ids to ``u0, u1, …`` and ``i0, i1, …``.
        """
        matrix = sp.csr_matrix(user_items, dtype=np.float32)
        matrix.eliminate_zeros()
        n_users, n_items = matrix.shape
        if matrix.nnz and (matrix.data.min() < 0 or not np.array_equal(matrix.data, np.round(matrix.data))):
            raise ValueError("user_items must hold purchase counts (non-negative integers); each retriever weighs them itself")
        users = IdMap(user_ids if user_ids is not None else [f"u{u}" for u in range(n_users)])
        items = IdMap(item_ids if item_ids is not None else [f"i{i}" for i in range(n_items)])
        if (len(users), len(items)) != (n_users, n_items):
            raise ValueError(f"{len(users)} user ids and {len(items)} item ids for a {n_users} x {n_items} matrix")
        texts = [str(t) for t in item_texts] if item_texts is not None else [str(i) for i in items.ids]
        if len(texts) != n_items:
            raise ValueError(f"{len(texts)} item texts for {n_items} items")
        coo = matrix.tocoo()
        events = coo.data.astype(np.int64)  # one purchase event per count
        interactions = pd.DataFrame({
            "user": np.repeat(coo.row, events).astype(np.int32), "item": np.repeat(coo.col, events).astype(np.int32),
            "timestamp": pd.Timestamp("1970-01-01"), "quantity": np.float32(1.0),
        })
        catalog = pd.DataFrame({"item_id": list(items.ids), "text": texts, "price": np.nan, "category": "", "first_seen": pd.NaT})
        return cls(interactions, catalog, users, items, name=name)

    # ------------------------------------------------------------------ shape
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return len(self.interactions)

    def __repr__(self) -> str:
        span = "" if not len(self) else f", {self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}"
        return f"Dataset({self.name!r}, {len(self):,} interactions, {self.n_users:,} users, {self.n_items:,} items{span})"

    @property
    def start(self) -> pd.Timestamp:
        """Time of the first interaction."""
        return self.interactions["timestamp"].iloc[0]

    @property
    def end(self) -> pd.Timestamp:
        """Time of the last interaction."""
        return self.interactions["timestamp"].iloc[-1]

    # ------------------------------------------------------------------ slicing
    def _with(self, interactions: pd.DataFrame, name: str) -> Dataset:
        return Dataset(interactions, self.catalog, self.users, self.items, self.report, name, catalog_from_log=self.catalog_from_log)

    def listed_at(self, cutoff: str | pd.Timestamp | None = None) -> np.ndarray | None:
        """int64 indices of the items a shop could list at ``cutoff`` (default: after the last
        purchase), or None for every item (a product table). A catalog derived from the log
        knows an item only from its first sale, so no leak goes through the catalog."""
        if not self.catalog_from_log:
            return None
        frame = self.interactions if cutoff is None else self.interactions.loc[self.interactions["timestamp"] < pd.Timestamp(cutoff)]
        return np.unique(frame["item"].to_numpy()).astype(np.int64)

    def new_arrivals(self, days: int) -> np.ndarray:
        """int64 indices of the listed items first sold within ``days`` before the end of the
        data, or never sold: what collaborative signals cannot know yet."""
        first = self.first_sold()
        recent = np.isnat(first)
        if len(self):
            recent |= first > np.datetime64(self.end - pd.Timedelta(days=days))
        return np.flatnonzero(recent & self.listed_mask()).astype(np.int64)

    def first_sold(self) -> np.ndarray:
        """datetime64[ns] [n_items]: each item's first purchase in this data, NaT if none."""
        first = np.full(self.n_items, np.datetime64("NaT"), dtype="datetime64[ns]")
        if len(self):
            earliest = self.interactions.groupby("item")["timestamp"].min()
            first[earliest.index.to_numpy()] = earliest.to_numpy()
        return first

    def listed_mask(self) -> np.ndarray:
        """bool [n_items]: the items :meth:`listed_at` the end of the data (what a model fitted on it may serve)."""
        listed = self.listed_at()
        if listed is None:
            return np.ones(self.n_items, dtype=bool)
        mask = np.zeros(self.n_items, dtype=bool)
        mask[listed] = True
        return mask

    def between(self, start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None) -> Dataset:
        """Interactions with ``start <= timestamp < end`` (either bound optional); same maps and catalog."""
        ts = self.interactions["timestamp"]
        mask = np.ones(len(ts), dtype=bool)
        if start is not None:
            mask &= (ts >= pd.Timestamp(start)).to_numpy()
        if end is not None:
            mask &= (ts < pd.Timestamp(end)).to_numpy()
        return self._with(self.interactions.loc[mask], f"{self.name}[{start}:{end}]")

    def split_by_time(self, test_from: str | pd.Timestamp, test_to: str | pd.Timestamp | None = None) -> tuple[Dataset, Dataset]:
        """History before ``test_from``; targets from ``test_from`` through the day ``test_to`` (inclusive).

        Both halves share the id maps and the full catalog.

        Examples
        --------
        >>> from ecomrec.data.synthetic import synthetic
        >>> history, target = synthetic(seed=0).split_by_time("2024-03-01")
        >>> bool(history.end < target.start)
        True
        """
        start = pd.Timestamp(test_from)
        end = None if test_to is None else pd.Timestamp(test_to).normalize() + pd.Timedelta(days=1)
        if end is not None and end <= start:
            raise ValueError(f"test_to ({test_to}) must not be before test_from ({test_from})")
        return self.between(None, start), self.between(start, end)

    # ------------------------------------------------------------------ matrices
    def user_items(self, weighting: str = "counts") -> sp.csr_matrix:
        """Users × items CSR (float32) of confidence weights.

        ``weighting``: ``binary`` (1 per bought item), ``counts`` (purchase events),
        ``log`` (``log1p(counts)``), ``quantity`` (``log1p(total quantity)``).
        """
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        frame = self.interactions
        values = frame["quantity"].to_numpy(np.float32) if weighting == "quantity" else np.ones(len(frame), np.float32)
        matrix = sp.csr_matrix((values, (frame["user"].to_numpy(), frame["item"].to_numpy())),
                               shape=(self.n_users, self.n_items), dtype=np.float32)
        matrix.sum_duplicates()
        return confidence(matrix, "log" if weighting == "quantity" else weighting)

    def days_since_purchase(self) -> sp.csr_matrix:
        """Users × items CSR (float32): 1 + days from the user's last purchase of the item to the
        end of the log (so a purchase on the last day is 1; an absent cell means never bought)."""
        frame = self.interactions
        days = ((self.end - frame["timestamp"]).dt.total_seconds().to_numpy() / 86400.0) if len(frame) else np.zeros(0)
        order = np.lexsort((days, frame["item"].to_numpy(), frame["user"].to_numpy()))  # per cell, most recent first
        users, items, days = frame["user"].to_numpy()[order], frame["item"].to_numpy()[order], days[order]
        first = np.ones(len(users), dtype=bool)
        first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        shape = (self.n_users, self.n_items)
        return sp.csr_matrix((1.0 + days[first], (users[first], items[first])), shape=shape, dtype=np.float32)

    def item_popularity(self, window_days: int | None = None) -> np.ndarray:
        """Distinct buyers per item (float64, [n_items]) over the last ``window_days`` of the log."""
        frame = self.interactions
        if window_days is not None and len(frame):
            frame = frame.loc[frame["timestamp"] > self.end - pd.Timedelta(days=window_days)]
        pairs = frame[["user", "item"]].drop_duplicates()
        return np.bincount(pairs["item"].to_numpy(), minlength=self.n_items).astype(np.float64)

    # ------------------------------------------------------------------ text
    @property
    def item_texts(self) -> list[str]:
        """Title of every item, by dense index."""
        return self.catalog["text"].tolist()

    def user_histories(self, max_items: int | None = None) -> list[np.ndarray]:
        """Each user's distinct items, most recent purchase first (int32 arrays, by dense user)."""
        frame = self.interactions
        users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
        order = np.lexsort((-frame["timestamp"].to_numpy().astype(np.int64), users))
        users, items = users[order], items[order]
        first = ~pd.DataFrame({"u": users, "i": items}).duplicated().to_numpy()
        users, items = users[first], items[first]
        bounds = np.searchsorted(users, np.arange(self.n_users + 1))
        return [items[bounds[u] : bounds[u + 1]][:max_items] for u in range(self.n_users)]

    def history_texts(self, user_ids: Sequence[int] | np.ndarray | None = None, *, max_items: int = 20,
                      max_chars: int = 512) -> list[str]:
        """Behaviour as text: each user's most recent distinct item titles, newest first, at most
        ``max_items`` titles and ``max_chars`` characters (whole titles); ``""`` without history."""
        histories = self.user_histories(max_items)
        titles = self.catalog["text"].to_numpy()
        users = range(self.n_users) if user_ids is None else np.asarray(user_ids)
        return [history_text(titles[histories[u]].tolist(), max_chars) for u in users]

    # ------------------------------------------------------------------ identity
    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the clean interactions and id maps: same data, same fingerprint."""
        digest = hashlib.sha256()
        for ids in (self.users.ids, self.items.ids):
            digest.update("\x1f".join(ids.tolist()).encode())
        for column in INTERACTION_COLUMNS:
            digest.update(np.ascontiguousarray(self.interactions[column].to_numpy()).view(np.uint8))
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """Write the log, its catalog and id maps to the new folder ``folder`` (Parquet and JSON, no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True)
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        catalog = self.catalog.assign(category=self.catalog["category"].fillna("").astype(str))
        catalog.to_parquet(folder / "catalog.parquet", index=False)
        self.users.save(folder / "users.json")
        self.items.save(folder / "items.json")
        (folder / "dataset.json").write_text(json.dumps({"name": self.name, "catalog_from_log": self.catalog_from_log}), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        """Read a log written by :meth:`save` (ArtifactError when a file is missing or unreadable)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
            interactions = pd.read_parquet(folder / "interactions.parquet")
            catalog = pd.read_parquet(folder / "catalog.parquet")
            return cls(interactions, catalog, IdMap.load(folder / "users.json"), IdMap.load(folder / "items.json"),
                       name=meta["name"], catalog_from_log=meta["catalog_from_log"])
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"cannot read the purchase log in {folder}: {exc}") from exc
