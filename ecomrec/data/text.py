"""Item text and "behaviour as text": the strings the bi-encoder and cross-encoder read."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

_SPACES = re.compile(r"\s+")

#: Separator between item titles in a user's history text.
HISTORY_SEPARATOR = "; "


def clean_text(text: object) -> str:
    """Strip, collapse inner whitespace; non-strings (NaN, None) become ``""``.

    >>> clean_text("  WHITE  HANGING HEART\\tT-LIGHT HOLDER ")
    'WHITE HANGING HEART T-LIGHT HOLDER'
    """
    return _SPACES.sub(" ", text).strip() if isinstance(text, str) else ""


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


#: Unit spellings a shopper or a catalog may use, each folded into one canonical token.
UNIT_ALIASES = {
    "oz": "oz", "ounce": "oz", "ounces": "oz", "fl oz": "floz", "floz": "floz", "fluid ounce": "floz", "fluid ounces": "floz",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "g": "g", "gr": "g", "gram": "g", "grams": "g",
    "kg": "kg", "ml": "ml", "l": "l", "ltr": "l", "liter": "l", "liters": "l", "litre": "l", "litres": "l",
    "gal": "gal", "ga": "gal", "gallon": "gal", "gallons": "gal", "ct": "ct", "count": "ct", "pk": "pk", "pack": "pk",
    "cm": "cm", "mm": "mm", "in": "in", "inch": "in", "inches": "in",
}
_UNIT = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(" + "|".join(sorted((re.escape(u) for u in UNIT_ALIASES), key=len, reverse=True)) + r")\b"
)
_WORD = re.compile(r"[0-9]+(?:\.[0-9]+)?[a-z]*|[a-z0-9]+")
#: Words too common to tell products apart (bm25s's English list).
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they this to was will with".split()
)


def search_terms(text: str) -> list[str]:
    """The terms lexical search matches on, for items and queries alike: lower case, sizes folded
    to one token (``15 OZ``, ``15oz`` and ``15 ounces`` all read ``15oz``), English stems, no stopwords.

    >>> search_terms("Hamburger BUNS - 15 OZ")
    ['hamburg', 'bun', '15oz']
    >>> search_terms("hamburger bun 15 ounces") == search_terms("HAMBURGER BUNS 15oz")
    True
    """
    lowered = _UNIT.sub(lambda m: " " + m.group(1).replace(",", ".") + UNIT_ALIASES[m.group(2)] + " ", text.lower())
    words = [w for w in _WORD.findall(lowered) if w not in STOPWORDS]
    return _stemmer().stemWords(words) if words else []


def _stemmer() -> Any:
    """This thread's Snowball English stemmer (PyStemmer's are not safe to share between threads)."""
    stemmer = getattr(_THREAD, "stemmer", None)
    if stemmer is None:
        import Stemmer

        stemmer = _THREAD.stemmer = Stemmer.Stemmer("english")
    return stemmer


_THREAD = threading.local()
