"""UCI Online Retail (dataset 352): a folder of per-day CSVs, one CSV, or UCI's xlsx.

Given no path the loader tries ``ECOMREC_ONLINE_RETAIL``, then the user cache, then downloads
UCI's archive into the cache (progress bar, checksum check) when the machine is online.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ecomrec.artifacts import file_sha256
from ecomrec.data.cleaning import CleaningReport, apply_rules
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap
from ecomrec.data.io import list_tables, parse_numbers, parse_timestamps, read_tables
from ecomrec.data.text import clean_text
from ecomrec.exceptions import DataError

logger = logging.getLogger(__name__)

COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")

UCI_URL = "https://archive.ics.uci.edu/static/public/352/online+retail.zip"
UCI_XLSX_NAME = "Online Retail.xlsx"
#: SHA-256 of UCI's ``Online Retail.xlsx``, checked on every download.
UCI_XLSX_SHA256 = "43465a06f2ccf7c8b5bd2892bc7defb52f97487934fe93b16ae4c3936424676d"

#: StockCodes that are not products: postage, carriage, fees, discounts, samples, manual entries.
NON_PRODUCT_CODES = frozenset({"POST", "DOT", "C2", "M", "m", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"})
#: StockCode prefixes that are not products (gift vouchers).
NON_PRODUCT_PREFIXES = ("gift_",)


def online_retail(path: str | Path | None = None, *, download: bool = True, show_progress: bool | None = None) -> Dataset:
    """Load and clean UCI Online Retail.

    Parameters
    ----------
    path
        A folder of per-day CSVs (or its parent holding ``by-day/``), one CSV, UCI's
        ``Online Retail.xlsx``, or a folder holding it. ``None``: ``ECOMREC_ONLINE_RETAIL``,
        then the cache (:func:`cache_dir`), then a download when ``download`` is true.
    download
        Allow fetching UCI's archive when no local copy is found.
    show_progress
        Progress bar for the download; ``None`` means on when logging is at INFO.

    Returns
    -------
    Dataset
        Purchases with a customer id; ``dataset.report`` counts what each cleaning rule dropped.

    Raises
    ------
    DataError
        Unreadable or malformed data; the message names the file, row and column.
    """
    files = _resolve_files(path, download=download, show_progress=show_progress)
    return _clean(read_tables(files, COLUMNS), files)


def _resolve_files(path: str | Path | None, *, download: bool, show_progress: bool | None) -> list[Path]:
    if path is None:
        env = os.environ.get("ECOMREC_ONLINE_RETAIL")
        cached = cache_dir() / "online-retail" / UCI_XLSX_NAME
        if env:
            path = env
        elif cached.is_file():
            path = cached
        elif download:
            path = download_online_retail(show_progress=show_progress)
        else:
            raise DataError("no Online Retail data: pass a path, set ECOMREC_ONLINE_RETAIL, or allow download=True")
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError("no such file or folder", file=path)
    folder = path / "by-day" if (path / "by-day").is_dir() else path
    files = list_tables(folder)
    if not files:
        raise DataError("the folder holds no .csv, .parquet or .xlsx files", file=folder)
    return files


def _clean(raw: pd.DataFrame, files: list[Path]) -> Dataset:
    raw_rows = len(raw)
    raw["Quantity"] = parse_numbers(raw, "Quantity", files)
    raw["InvoiceDate"] = parse_timestamps(raw, "InvoiceDate", files)
    raw["UnitPrice"] = parse_numbers(raw, "UnitPrice", files)
    raw["StockCode"] = raw["StockCode"].str.strip()
    raw["CustomerID"] = raw["CustomerID"].str.strip().str.replace(r"\.0+$", "", regex=True)
    kept, dropped = apply_rules(raw, [
        ("missing_user", lambda f: f["CustomerID"] == ""),
        ("missing_item", lambda f: f["StockCode"] == ""),
        ("cancelled", lambda f: f["InvoiceNo"].str.strip().str.upper().str.startswith("C")),
        ("non_positive_quantity", lambda f: f["Quantity"] <= 0),
        ("non_product", lambda f: f["StockCode"].isin(NON_PRODUCT_CODES) | f["StockCode"].str.startswith(NON_PRODUCT_PREFIXES)),
        ("duplicate", lambda f: f.duplicated(subset=list(COLUMNS))),
    ])
    users = IdMap.from_values(kept["CustomerID"].unique())
    items = IdMap.from_values(kept["StockCode"].unique())
    interactions = pd.DataFrame({"user": users.index(kept["CustomerID"]), "item": items.index(kept["StockCode"]),
                                 "timestamp": kept["InvoiceDate"].to_numpy(), "quantity": kept["Quantity"].to_numpy(np.float32)})
    catalog, no_text = _catalog(kept, raw, items)
    report = CleaningReport(raw_rows, dropped, len(kept), files=len(files), items_without_text=no_text)
    logger.info("Online Retail: %s", report)
    name = files[0].parent.name if len(files) > 1 else files[0].name
    return Dataset(interactions, catalog, users, items, report, name=f"online-retail:{name}", catalog_from_log=True)


def _catalog(kept: pd.DataFrame, raw: pd.DataFrame, items: IdMap) -> tuple[pd.DataFrame, int]:
    """Per item: most frequent description (kept rows first, then any row), median price, first sale."""
    fallback = _most_frequent_text(raw.loc[raw["StockCode"].isin(items.ids)])
    titles = _most_frequent_text(kept).reindex(items.ids).fillna(fallback.reindex(items.ids))
    no_text = int(titles.isna().sum())
    titles = titles.fillna(pd.Series(items.ids, index=items.ids))
    grouped = kept.groupby("StockCode")
    return pd.DataFrame({
        "item_id": items.ids, "text": titles.to_numpy(),
        "price": grouped["UnitPrice"].median().reindex(items.ids).to_numpy(np.float64),
        "category": "", "first_seen": grouped["InvoiceDate"].min().reindex(items.ids).to_numpy(),
    }), no_text


def _most_frequent_text(frame: pd.DataFrame) -> pd.Series:
    described = pd.DataFrame({"code": frame["StockCode"], "text": frame["Description"].map(clean_text)})
    described = described.loc[described["text"] != ""]
    counts = described.groupby(["code", "text"]).size().reset_index(name="n")
    counts = counts.sort_values(["code", "n", "text"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("code").set_index("code")["text"]


# ---------------------------------------------------------------------- download and cache
def cache_dir() -> Path:
    """``ECOMREC_CACHE``, else ``$XDG_CACHE_HOME/ecomrec``, else ``~/.cache/ecomrec``."""
    if os.environ.get("ECOMREC_CACHE"):
        return Path(os.environ["ECOMREC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ecomrec"


def download_online_retail(*, url: str | None = None, sha256: str | None = None, verify: bool = True,
                           cache: str | Path | None = None, show_progress: bool | None = None, timeout: float = 60.0) -> Path:
    """Download UCI's archive, check the workbook's SHA-256, and place it in the cache.

    Returns the path of ``Online Retail.xlsx`` in ``<cache>/online-retail/``. Nothing is left in
    the cache when the download, the archive or the checksum is bad. ``url`` and ``sha256``
    default to UCI's archive and :data:`UCI_XLSX_SHA256`; ``verify=False`` skips the check.
    """
    url, sha256 = url or UCI_URL, sha256 or UCI_XLSX_SHA256
    target = (Path(cache) if cache is not None else cache_dir()) / "online-retail" / UCI_XLSX_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "archive.zip"
        _fetch(url, archive, show_progress=show_progress, timeout=timeout)
        workbook = _extract_workbook(archive, Path(tmp))
        if verify:
            digest = file_sha256(workbook)
            if digest != sha256:
                raise DataError(f"checksum mismatch for {UCI_XLSX_NAME} from {url}: got sha256 {digest}, expected {sha256}; "
                                "the download is corrupt or UCI changed the file (verify=False accepts it)")
        os.replace(workbook, target)
    logger.info("Online Retail downloaded to %s", target)
    return target


def _fetch(url: str, dest: Path, *, show_progress: bool | None, timeout: float) -> None:
    enabled = show_progress if show_progress is not None else logger.isEnabledFor(logging.INFO)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="Online Retail", disable=not enabled) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"cannot download {url} ({exc}); offline machines must pass a path or set ECOMREC_ONLINE_RETAIL") from exc


def _extract_workbook(archive: Path, folder: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(".xlsx")]
            if not names:
                raise DataError("the archive holds no .xlsx workbook", file=archive.name)
            out = folder / "workbook.xlsx"
            with zf.open(names[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise DataError(f"the download is not a zip archive ({exc})", file=archive.name) from exc
    return out
