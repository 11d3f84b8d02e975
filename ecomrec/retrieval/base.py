"""The retriever protocol and the plumbing shared by every retriever."""

from __future__ import annotations

import abc
import copy
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from ecomrec.artifacts import csr_from_arrays, csr_to_arrays, load_npz, manifest_config, open_artifact, write_artifact
from ecomrec.config import ConfigBase
from ecomrec.data.catalog import Catalog
from ecomrec.data.dataset import Dataset, confidence
from ecomrec.data.idmap import IdMap
from ecomrec.exceptions import NotFittedError
from ecomrec.candidates import Candidates, top_k

R = TypeVar("R", bound="Retriever")


class Retriever(abc.ABC):
    """Finds the top-k items for a batch of users (dense indices of the data it was fitted on).

    A query's history is that user's row of the fitted ``user_items``, unless ``user_items`` is
    passed to :meth:`candidates` (one row per query): how unseen users (-1) and fresher histories are served.
    """

    #: Method name used in reports and the CLI.
    name: ClassVar[str]
    #: Config class of this retriever.
    config_class: ClassVar[type[ConfigBase]]

    def __init__(self, config: ConfigBase | None = None, *, show_progress: bool | None = None, **kwargs: Any) -> None:
        """Build from a config or from its fields as keywords (not both). ``show_progress``:
        progress bars for long work; ``None`` means on when logging is at INFO."""
        if config is not None and kwargs:
            raise TypeError(f"{type(self).__name__}: pass a config or keywords ({sorted(kwargs)}), not both")
        self.config = config if config is not None else self.config_class(**kwargs)
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(self.config).__name__}")
        self.show_progress = show_progress
        self.user_items_: sp.csr_matrix | None = None
        self.users_: IdMap | None = None
        self.items_: IdMap | None = None
        #: What the catalog change that made this instance did (counts, seconds; empty: nothing).
        self.catalog_change_: dict[str, Any] = {}

    # ------------------------------------------------------------------ protocol
    @abc.abstractmethod
    def fit(self, data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None) -> Retriever:
        """Learn from ``data``'s interactions; returns ``self``. ``data`` is a :class:`Dataset`, or a
        users × items CSR of purchase counts with optional ``item_texts`` (:meth:`Dataset.from_user_items`)."""

    def candidates(self, user_ids: np.ndarray | list[int], k: int, *, user_items: sp.spmatrix | None = None,
                   exclude: str | sp.spmatrix | np.ndarray | list[int] | None = None, allow: np.ndarray | list[int] | None = None,
                   batch_size: int = 1024) -> Candidates:
        """Top ``k`` items for each user, best first.

        Parameters
        ----------
        user_ids
            int [n] dense user indices; -1 for a user unknown at fit time (then ``user_items`` gives the history).
        k
            Items per user; rows with fewer qualifying items are padded (id -1, score -inf).
        user_items
            Optional CSR [n, n_items] of purchase counts (as ``Dataset.user_items("counts")``): the queries'
            histories, overriding the fitted ones (each retriever applies its own confidence weighting).
        exclude
            ``"seen"`` (each query's history), a CSR [n, n_items] of per-query items, or item indices excluded for every query.
        allow
            Item indices; when given, only these can be returned.

        Returns
        -------
        Candidates
            ``item_ids`` int64 [n, k] and ``scores`` float32 [n, k], scores non-increasing.
        """
        self._check_fitted()
        return self.retrieve(self._query(user_ids, k, user_items, exclude, allow), batch_size)

    def _query(self, user_ids: np.ndarray | list[int], k: int, user_items: sp.spmatrix | None,
               exclude: str | sp.spmatrix | np.ndarray | list[int] | None, allow: np.ndarray | list[int] | None) -> Query:
        """Validate a call's arguments once, into the form every retrieval path uses."""
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        history = self._history(users, user_items)
        allowed = None if allow is None else item_indices(allow, self.n_items, "allow")
        return Query(users, history, user_items is not None, int(k), exclusions(exclude, history, self.n_items), allowed)

    @abc.abstractmethod
    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        """Top ``query.k`` items for a :class:`Query` validated by :meth:`candidates`: the
        retriever's own ranked list, raw scores kept (what fusion calls on every source)."""

    def with_catalog(self: R, catalog: Catalog, *, shards: int | None = None) -> R:
        """This retriever serving ``catalog`` (the listed items and their titles), as a new
        instance whose ``catalog_change_`` says what changed; this one is left as it was.
        ``shards``: split its index over this many FAISS shards from now on (retrievers with an index).

        The default: itself, for retrievers holding nothing that depends on titles or on the listing.
        """
        self._check_fitted()
        return self

    def with_interactions(self: R, data: Dataset) -> R:
        """This retriever after purchases were appended to its log, as a new instance; this one is
        left as it was. ``data`` is the whole log: its id maps extend the fitted ones.

        Nothing is trained: the default refits the config on ``data`` (retrievers that only count
        purchases); one with learned weights recomputes what the new purchases touch instead.
        """
        self._check_extends(data)
        return type(self)(self.config, show_progress=self.show_progress).fit(data)

    def _check_extends(self, data: Dataset) -> None:
        """ValueError unless ``data``'s id maps extend the fitted ones (ids forgotten since allowed)."""
        self._check_fitted()
        assert self.users_ is not None and self.items_ is not None
        for what, fitted, given in (("user", self.users_, data.users), ("item", self.items_, data.items)):
            if not given.extends(fitted):
                raise ValueError(f"the appended log's {what} ids must extend the fitted ones (old ids first, in their order)")

    def describe(self) -> dict[str, Any]:
        """What this retriever is, JSON-ready, for reports: its config and hash (subclasses add what fitting chose)."""
        return {"method": self.name, "config": self.config.to_dict(), "config_hash": self.config.config_hash()}

    def replaced(self: R, **fitted: Any) -> R:
        """A shallow copy with some fitted attributes replaced (copy-on-write for serving
        snapshots: unchanged parts are shared); ``self`` is left as it was."""
        if unknown := sorted(name for name in fitted if not hasattr(self, name)):
            raise AttributeError(f"{type(self).__name__} has no attribute(s) {unknown} to replace")
        out = copy.copy(self)
        out.__dict__.update(fitted)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted state to the folder ``path`` (``manifest.json`` + ``state.npz``)."""
        self._check_fitted()
        arrays = {**csr_to_arrays("user_items", self.user_items_), **self._state()}
        facts = {"n_users": int(self.user_items_.shape[0]), "n_items": self.n_items}  # type: ignore[union-attr]
        return write_artifact(path, type(self).__name__, self.config.to_dict(), facts, lambda d: self._write(d, arrays))

    def _write(self, folder: Path, arrays: dict[str, np.ndarray]) -> None:
        np.savez(folder / "state.npz", **arrays)
        if self.users_ is not None and self.items_ is not None:
            self.users_.save(folder / "users.json")
            self.items_.save(folder / "items.json")

    @classmethod
    def load(cls, path: str | Path) -> Retriever:
        """Read a retriever written by :meth:`save`; raises ArtifactError if it is not intact."""
        with open_artifact(path, cls.__name__) as (folder, manifest):
            arrays = load_npz(folder / "state.npz")
            retriever = cls(manifest_config(manifest, cls.config_class, folder))
            retriever.user_items_ = csr_from_arrays("user_items", arrays)
            if (folder / "items.json").is_file():
                retriever.users_, retriever.items_ = IdMap.load(folder / "users.json"), IdMap.load(folder / "items.json")
            retriever._restore(arrays, folder)
        return retriever

    def _state(self) -> dict[str, np.ndarray]:
        """Fitted arrays beyond ``user_items_`` to persist."""
        return {}

    def _restore(self, arrays: dict[str, np.ndarray], folder: Path) -> None:
        """Inverse of :meth:`_state` (``folder`` holds any extra files :meth:`_write` added)."""

    def _remember(self, data: Dataset, user_items: sp.csr_matrix) -> None:
        """Keep the fitted history and the id maps (saved beside the model)."""
        self.user_items_ = sp.csr_matrix(user_items, dtype=np.float32)
        self.users_, self.items_ = data.users, data.items

    # ------------------------------------------------------------------ shared helpers
    def _progress(self) -> bool:
        if self.show_progress is not None:
            return self.show_progress
        return logging.getLogger(type(self).__module__).isEnabledFor(logging.INFO)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return self.user_items_.shape[1]  # type: ignore[union-attr]

    @property
    def is_fitted(self) -> bool:
        return self.user_items_ is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(type(self).__name__)

    def _history(self, users: np.ndarray, user_items: sp.spmatrix | None) -> sp.csr_matrix:
        fitted = self.user_items_
        assert fitted is not None
        if user_items is not None:
            if user_items.shape != (len(users), fitted.shape[1]):
                raise ValueError(f"user_items must be [{len(users)}, {fitted.shape[1]}], got {user_items.shape}")
            return confidence(user_items, getattr(self.config, "weighting", "counts"))
        bad = (users < 0) | (users >= fitted.shape[0])
        if bad.any():
            raise ValueError(f"user index {int(users[bad][0])} is not a fitted user (0..{fitted.shape[0] - 1}); "
                             "map external ids with IdMap.index(...), and pass user_items= for unseen users")
        return fitted[users]


class ScoringRetriever(Retriever):
    """A retriever that can score every item for a user (:meth:`_score`): retrieval is exact
    (score, mask, top k). Those that search an index (ALS, the bi-encoder) override
    :meth:`retrieve` and keep this exact path as their reference."""

    def candidates_exact(self, user_ids: np.ndarray | list[int], k: int, **kwargs: Any) -> Candidates:
        """As :meth:`candidates`, always scoring every item (no index): the reference an indexed
        retriever is checked against."""
        self._check_fitted()
        query = self._query(user_ids, k, kwargs.pop("user_items", None), kwargs.pop("exclude", None), kwargs.pop("allow", None))
        return ScoringRetriever.retrieve(self, query, int(kwargs.pop("batch_size", 1024)))

    def retrieve(self, query: Query, batch_size: int = 1024) -> Candidates:
        """Exact retrieval: score every item, mask, take the top k (batch by batch)."""
        parts = []
        for start in range(0, max(len(query.users), 1), batch_size):
            rows = slice(start, start + batch_size)
            scores = self._score(query.users[rows], query.history[rows], query.fresh).astype(np.float32, copy=False)
            if np.isnan(scores).any():
                raise FloatingPointError(f"{type(self).__name__} produced NaN scores; refit with other settings")
            exclude = query.exclude[rows] if sp.issparse(query.exclude) else query.exclude
            _mask(scores, exclude, query.allow)
            parts.append(top_k(scores, query.k))
        return Candidates.concat(parts)

    @abc.abstractmethod
    def _score(self, users: np.ndarray, history: sp.csr_matrix, fresh: bool) -> np.ndarray:
        """float [len(users), n_items] scores (higher is better; -inf = cannot be returned);
        ``fresh``: ``history`` came from the caller rather than from fitting."""


@dataclasses.dataclass
class Query:
    """A validated :meth:`Retriever.candidates` call: ``exclude`` is None, a CSR [n, n_items] of per-query
    exclusions, or int64 item indices excluded for every query; ``allow`` is None or int64 item indices."""

    users: np.ndarray
    history: sp.csr_matrix
    fresh: bool
    k: int
    exclude: sp.csr_matrix | np.ndarray | None
    allow: np.ndarray | None


def exclusions(exclude: str | sp.spmatrix | np.ndarray | list[int] | None, history: sp.csr_matrix,
               n_items: int) -> sp.csr_matrix | np.ndarray | None:
    if exclude is None:
        return None
    if isinstance(exclude, str):
        if exclude != "seen":
            raise ValueError(f"exclude must be 'seen', a sparse matrix or item indices, got {exclude!r}")
        return history
    if sp.issparse(exclude):
        matrix = sp.csr_matrix(exclude)
        if matrix.shape != (history.shape[0], n_items):
            raise ValueError(f"exclude matrix must be [{history.shape[0]}, {n_items}], got {matrix.shape}")
        return matrix
    return item_indices(exclude, n_items, "exclude")


def item_indices(values: np.ndarray | list[int], n_items: int, what: str) -> np.ndarray:
    items = np.asarray(values, dtype=np.int64).reshape(-1)
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"{what} holds item indices outside 0..{n_items - 1}")
    return items


def _mask(scores: np.ndarray, exclude: sp.csr_matrix | np.ndarray | None, allow: np.ndarray | None) -> None:
    """Set excluded and not-allowed items to -inf, in place."""
    if exclude is not None:
        if sp.issparse(exclude):
            coo = exclude.tocoo()
            scores[coo.row, coo.col] = -np.inf
        else:
            scores[:, exclude] = -np.inf
    if allow is not None:
        keep = np.zeros(scores.shape[1], dtype=bool)
        keep[allow] = True
        scores[:, ~keep] = -np.inf


def as_dataset(data: Dataset | sp.spmatrix, item_texts: Sequence[str] | None = None) -> Dataset:
    """``data`` itself, or a users × items count matrix as a :class:`Dataset`."""
    if isinstance(data, Dataset):
        if item_texts is not None:
            raise ValueError("item_texts go with a matrix; a Dataset carries its own catalog")
        return data
    if sp.issparse(data):
        return Dataset.from_user_items(data, item_texts)
    raise TypeError(f"fit takes a Dataset or a users x items sparse matrix, got {type(data).__name__}")
