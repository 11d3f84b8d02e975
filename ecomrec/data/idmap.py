"""External string ids ↔ dense int32 indices."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ecomrec.exceptions import ArtifactError, EcomrecWarning, UnknownIdError

ON_UNKNOWN = ("raise", "warn", "drop")


#: What a forgotten customer's id becomes (plus its dense index): a NUL no external id starts with.
FORGOTTEN = "\x00forgotten:"


class IdMap:
    """A fixed vocabulary of external ids; the dense index of an id is its position.

    Parameters
    ----------
    ids
        Distinct external ids (converted to ``str``), in dense-index order.

    Examples
    --------
    >>> m = IdMap(["85123A", "71053"])
    >>> m.index(["71053", "85123A"]).tolist()
    [1, 0]
    >>> m.index(["71053", "nope"], on_unknown="drop").tolist()
    [1]
    >>> m.ids_of([0]).tolist()
    ['85123A']
    """

    def __init__(self, ids: Iterable[object]) -> None:
        values = np.asarray([str(i) for i in ids], dtype=object)
        # A plain dict: lookups write nothing (a pandas Index caches its hash table inside a read).
        self._position = {key: position for position, key in enumerate(values.tolist())}
        if len(self._position) != len(values):
            dupes = pd.Index(values)[pd.Index(values).duplicated()].unique()[:5].tolist()
            raise ValueError(f"IdMap ids must be distinct; repeated: {dupes}")
        values.setflags(write=False)
        self._ids = values

    @classmethod
    def from_values(cls, values: Iterable[object]) -> IdMap:
        """Vocabulary of the distinct values, sorted (deterministic across runs)."""
        return cls(sorted({str(v) for v in values}))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._position

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self._ids, other._ids)

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids)"

    @property
    def ids(self) -> np.ndarray:
        """External ids, object array of ``str``, shape [n]."""
        return self._ids

    def index(self, external_ids: Iterable[object], on_unknown: str = "raise") -> np.ndarray:
        """Dense indices (int32) of ``external_ids``.

        ``on_unknown``: ``"raise"`` raises :class:`UnknownIdError`; ``"warn"`` warns and maps
        unknown ids to -1 (rows stay aligned with the input); ``"drop"`` leaves them out.
        """
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        keys = [str(i) for i in external_ids]
        codes = self._lookup(keys).astype(np.int32)
        unknown = codes < 0
        if unknown.any():
            examples = [keys[i] for i in np.flatnonzero(unknown)[:5]]
            message = f"{int(unknown.sum())} unknown id(s), e.g. {examples}"
            if on_unknown == "raise":
                raise UnknownIdError(message + "; pass on_unknown='warn' or 'drop' to continue")
            if on_unknown == "warn":
                warnings.warn(message + "; mapped to -1", EcomrecWarning, stacklevel=2)
            else:
                codes = codes[~unknown]
        return codes

    def positions(self, external_ids: Iterable[object]) -> np.ndarray:
        """Dense indices (int64) of ``external_ids``, -1 where unknown, without warnings (a hash lookup)."""
        return self._lookup([str(i) for i in external_ids])

    def _lookup(self, keys: list[str]) -> np.ndarray:
        get = self._position.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def ids_of(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """External ids of dense ``indices``; -1 (padding) becomes ``None``."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.full(idx.shape, None, dtype=object)
        valid = idx >= 0
        if (idx >= len(self)).any():
            raise IndexError(f"dense index out of range for {self!r}: {int(idx.max())}")
        out[valid] = self._ids[idx[valid]]
        return out

    def forgetting(self, external_ids: Iterable[object]) -> IdMap:
        """This map with ``external_ids`` replaced by :data:`FORGOTTEN` plus their position: no
        lookup finds them any more, and every other id keeps its dense index."""
        ids = self._ids.copy()
        for position in self.positions(external_ids):
            if position >= 0:
                ids[position] = f"{FORGOTTEN}{position}"
        return IdMap(ids)

    def forgotten(self) -> np.ndarray:
        """Dense indices whose ids were forgotten (:meth:`forgetting`)."""
        return np.flatnonzero([i.startswith(FORGOTTEN) for i in self._ids.tolist()])

    def extends(self, fitted: IdMap) -> bool:
        """Whether this map is ``fitted`` with ids appended, some of its ids perhaps forgotten."""
        if len(self) < len(fitted):
            return False
        head = self._ids[: len(fitted)]
        return np.array_equal(head, fitted.ids) or all(a == b or a.startswith(FORGOTTEN) for a, b in zip(head.tolist(), fitted.ids.tolist()))

    def save(self, path: str | Path) -> None:
        """Write the ids as a JSON list (no pickle)."""
        Path(path).write_text(json.dumps(self._ids.tolist()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read a file written by :meth:`save`."""
        try:
            ids = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"cannot read id map {path}: {exc}") from exc
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ArtifactError(f"id map {path} is not a JSON list of strings")
        return cls(ids)
