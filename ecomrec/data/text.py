"""Item text and "behaviour as text": the strings the bi-encoder and cross-encoder read."""

from __future__ import annotations

import re
from collections.abc import Sequence

_SPACES = re.compile(r"\s+")

#: Separator between item titles in a user's history text.
HISTORY_SEPARATOR = "; "


def clean_text(text: object) -> str:
    """Strip, collapse inner whitespace; non-strings (NaN, None) become ``""``.

    >>> clean_text("  WHITE  HANGING HEART\\tT-LIGHT HOLDER ")
    'WHITE HANGING HEART T-LIGHT HOLDER'
    """
    if not isinstance(text, str):
        return ""
    return _SPACES.sub(" ", text).strip()


def history_text(titles: Sequence[str], max_chars: int = 512) -> str:
    """Join titles (newest first) into one string of at most ``max_chars`` characters.

    Whole titles only: the first title that would cross the budget ends the text, except the
    newest one, which is cut to the budget rather than dropped.

    >>> history_text(["RED LUNCH BAG", "BLUE MUG", "GREEN TIN"], max_chars=24)
    'RED LUNCH BAG; BLUE MUG'
    """
    if max_chars <= 0:
        raise ValueError(f"max_chars must be > 0, got {max_chars}")
    parts: list[str] = []
    used = 0
    for title in titles:
        extra = len(title) + (len(HISTORY_SEPARATOR) if parts else 0)
        if used + extra > max_chars:
            if not parts:
                parts.append(title[:max_chars])
            break
        parts.append(title)
        used += extra
    return HISTORY_SEPARATOR.join(parts)
