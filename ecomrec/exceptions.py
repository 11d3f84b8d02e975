"""Exceptions and warnings raised by ecomrec."""

from __future__ import annotations

from pathlib import Path


class EcomrecError(Exception):
    """Base class of every error ecomrec raises on purpose."""


class NotFittedError(EcomrecError, RuntimeError):
    """A model was used before ``fit`` (or ``load``) gave it state."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not fitted yet: call fit(...) or load(...) first")


class DataError(EcomrecError, ValueError):
    """Input data is malformed. Names the file, the row (1-based line, the header being line 1)
    and the column where known."""

    def __init__(
        self, message: str, *, file: str | Path | None = None, row: int | None = None, column: str | None = None
    ) -> None:
        self.file = None if file is None else str(file)
        self.row, self.column = row, column
        parts = (("file", self.file), ("row", row), ("column", None if column is None else repr(column)))
        where = [f"{name} {value}" for name, value in parts if value is not None]
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class UnknownIdError(EcomrecError, KeyError):
    """Ids not known to an :class:`~ecomrec.data.IdMap` under ``on_unknown="raise"``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ArtifactError(EcomrecError):
    """A saved artifact is missing, corrupt, truncated, or from another version or config."""


class IndexRecallError(ArtifactError):
    """A freshly built approximate index misses too many of exact search's neighbours."""


class EcomrecWarning(UserWarning):
    """A silent conversion or a degraded path that the user should know about."""


class ArtifactVersionWarning(EcomrecWarning):
    """An artifact was written with other major.minor versions of the libraries it depends on."""


class IndexRecallWarning(EcomrecWarning):
    """An approximate index fell short of its recall check and now searches more (or exactly)."""
