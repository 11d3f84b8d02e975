"""Row-dropping rules applied in order, each one counted, so rows in = rows kept + rows dropped."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pandas as pd

#: What each cleaning rule drops, in the words the report and README use.
RULES = {
    "missing_user": "no customer / user id",
    "missing_item": "no item id (StockCode)",
    "cancelled": "cancellation invoices (InvoiceNo starting with 'C')",
    "non_positive_quantity": "quantity <= 0 (returns, corrections)",
    "non_product": "codes that are not products (postage, fees, manual adjustments, vouchers, ...)",
    "other_event": "event types not asked for",
    "duplicate": "exact duplicates of an earlier row",
}

#: What each catalog rule drops.
CATALOG_RULES = {"missing_item": "no item id", "duplicate": "an item listed again further down (the last listing wins)"}

Rule = tuple[str, Callable[[pd.DataFrame], "pd.Series[bool]"]]


@dataclasses.dataclass
class CleaningReport:
    """What loading and cleaning did: rows read, rows dropped per rule (in the order the rules ran,
    each row counted once), rows kept."""

    raw_rows: int
    dropped: dict[str, int]
    kept_rows: int
    files: int = 1
    items_without_text: int = 0
    catalog_dropped: dict[str, int] = dataclasses.field(default_factory=dict)

    def adds_up(self) -> bool:
        """True when every row read is either kept or counted by exactly one rule."""
        return self.raw_rows == self.kept_rows + sum(self.dropped.values())

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = [f"read {self.raw_rows:,} rows from {self.files} file(s)"]
        lines += [f"  dropped {n:>9,}  {rule}: {RULES.get(rule, rule)}" for rule, n in self.dropped.items()]
        lines.append(f"kept {self.kept_rows:,} rows")
        lines += [f"catalog: dropped {n:,} rows, {rule}: {CATALOG_RULES.get(rule, rule)}" for rule, n in self.catalog_dropped.items() if n]
        if self.items_without_text:
            lines.append(f"{self.items_without_text:,} items without text (their category, else their id, stands in)")
        return "\n".join(lines)


def apply_rules(frame: pd.DataFrame, rules: Sequence[Rule]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows each rule marks, in order; return the kept rows and the count per rule."""
    dropped: dict[str, int] = {}
    for name, marks in rules:
        mask = marks(frame).to_numpy(dtype=bool)
        dropped[name] = int(mask.sum())
        if mask.any():
            frame = frame.loc[~mask]
    return frame, dropped
