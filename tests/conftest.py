"""Shared fixtures. Tests are offline, deterministic and small; threads are capped."""

from __future__ import annotations

import os

# Before numpy / torch load: no hub downloads, single-threaded BLAS (implicit's advice).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

# Property-based tests: the same examples in every run (CI), or many fresh ones on demand.
_HYPOTHESIS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
settings.register_profile("default", max_examples=60, derandomize=True, **_HYPOTHESIS)
settings.register_profile("stress", max_examples=1000, derandomize=False, **_HYPOTHESIS)
settings.load_profile(os.environ.get("ECOMREC_HYPOTHESIS", "default"))

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("ECOMREC_TEST_DATA", REPO.parent / "shared" / "data" / "online-retail"))
DUNNHUMBY = Path(os.environ.get("ECOMREC_TEST_DUNNHUMBY", REAL_DATA.parent / "dunnhumby-sample"))

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    if not (REAL_DATA / "by-day").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set ECOMREC_TEST_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def dunnhumby_path() -> Path:
    if not (DUNNHUMBY / "catalog.csv").is_file():
        pytest.skip(f"dunnhumby sample not found at {DUNNHUMBY} (set ECOMREC_TEST_DUNNHUMBY)")
    return DUNNHUMBY


def write_retail_csv(path: Path, rows: list[str]) -> Path:
    """An Online Retail CSV with the standard header and the given data lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RETAIL_HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def write_retail_folder(data, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    """Write a Dataset (e.g. synthetic) as Online Retail per-day CSVs: one invoice per user-day."""
    frame = data.interactions.copy()
    frame["day"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    for day, rows in frame.groupby("day"):
        lines = [
            f"{500000 + int(r.user)},{data.items.ids[r.item]},{data.catalog.text[r.item].upper()},"
            f"{int(r.quantity)},{r.timestamp:%Y-%m-%d %H:%M:%S},1.25,{data.users.ids[r.user]}.0,United Kingdom"
            for r in rows.itertuples()
        ]
        write_retail_csv(folder / "by-day" / f"{day}.csv", lines)
    return folder


@pytest.fixture
def tiny_frame() -> pd.DataFrame:
    """Hand-made log: 3 users, 4 items, known times."""
    return pd.DataFrame(
        {
            "user": ["a", "a", "a", "b", "b", "c"],
            "item": ["x", "y", "x", "y", "z", "w"],
            "ts": [
                "2024-01-01 10:00:00",
                "2024-01-02 10:00:00",
                "2024-01-05 10:00:00",
                "2024-01-03 10:00:00",
                "2024-02-02 10:00:00",
                "2024-02-03 10:00:00",
            ],
            "qty": [1, 2, 3, 4, 5, 6],
        }
    )


def pytest_collection_modifyitems(config, items) -> None:  # type: ignore[no-untyped-def]
    """``gpu`` tests run only where torch sees CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch sees no GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
