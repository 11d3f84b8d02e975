"""Online Retail loader: cleaning with known counts, every bad-input case, xlsx, download."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from ecomrec.data import online_retail as loader
from ecomrec.datasets import download_online_retail, online_retail
from ecomrec.exceptions import DataError
from tests.conftest import RETAIL_HEADER, write_retail_csv

GOOD_ROWS = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",  # duplicate
    "536366,85123A,white hanging heart  t-light holder,2,2010-12-01 09:00:00,2.55,13047.0,United Kingdom",
    "536367,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2010-12-02 10:00:00,2.55,13047.0,United Kingdom",
    "536368,POST,POSTAGE,1,2010-12-02 10:00:00,18.00,13047.0,France",  # non-product
    "536369,gift_0001_20,Dotcomgiftshop Gift Voucher,1,2010-12-02 10:00:00,20.00,13047.0,France",  # non-product
    "C536370,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-02 11:00:00,2.55,13047.0,United Kingdom",  # cancelled
    "536371,22633,HAND WARMER UNION JACK,6,2010-12-02 12:00:00,1.85,,United Kingdom",  # no customer
    "536372,22633,,-3,2010-12-02 12:30:00,0,12583.0,France",  # quantity <= 0
    "536373,22632,HAND WARMER RED POLKA DOT,6,2010-12-03 12:00:00,1.85,12583.0,France",
]


@pytest.fixture
def retail_folder(tmp_path: Path) -> Path:
    write_retail_csv(tmp_path / "by-day" / "2010-12-01.csv", GOOD_ROWS[:4])
    write_retail_csv(tmp_path / "by-day" / "2010-12-02.csv", GOOD_ROWS[4:10])
    write_retail_csv(tmp_path / "by-day" / "2010-12-03.csv", GOOD_ROWS[10:])
    return tmp_path


def test_cleaning_counts_each_rule_and_adds_up(retail_folder: Path) -> None:
    data = online_retail(retail_folder)
    report = data.report
    assert report.raw_rows == 11 and report.files == 3
    assert report.dropped == {
        "missing_user": 1,
        "missing_item": 0,
        "cancelled": 1,
        "non_positive_quantity": 1,
        "non_product": 2,
        "duplicate": 1,
    }
    assert report.kept_rows == 5 and report.adds_up()
    assert sorted(data.users.ids) == ["12583", "13047", "17850"]  # float ids normalised
    assert sorted(data.items.ids) == ["22632", "71053", "85123A"]
    assert len(data) == 5


def test_item_text_is_most_frequent_clean_description(retail_folder: Path) -> None:
    data = online_retail(retail_folder)
    texts = dict(zip(data.catalog["item_id"], data.catalog["text"]))
    # two of three rows spell it in capitals; the odd-case one has double spaces cleaned away
    assert texts["85123A"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert texts["22632"] == "HAND WARMER RED POLKA DOT"
    first = dict(zip(data.catalog["item_id"], data.catalog["first_seen"]))
    assert first["85123A"] == pd.Timestamp("2010-12-01 08:26:00")


def test_parent_folder_single_csv_and_by_day_folder_load_the_same(retail_folder: Path) -> None:
    a = online_retail(retail_folder)
    b = online_retail(retail_folder / "by-day")
    assert a.fingerprint == b.fingerprint
    single = online_retail(retail_folder / "by-day" / "2010-12-01.csv")
    assert single.report.raw_rows == 4


def test_xlsx_workbook_loads_like_csv(tmp_path: Path, retail_folder: Path) -> None:
    frame = pd.read_csv(io.StringIO(RETAIL_HEADER + "\n".join(GOOD_ROWS)), dtype=str, keep_default_na=False)
    frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"])  # the xlsx holds real datetimes
    frame["Quantity"] = frame["Quantity"].astype(int)
    frame["CustomerID"] = pd.to_numeric(frame["CustomerID"])  # floats with NaN, as UCI's file
    xlsx = tmp_path / "Online Retail.xlsx"
    frame.to_excel(xlsx, index=False)
    from_xlsx = online_retail(xlsx)
    from_csv = online_retail(retail_folder)
    assert from_xlsx.report.dropped == from_csv.report.dropped
    assert from_xlsx.fingerprint == from_csv.fingerprint


@pytest.mark.parametrize(
    ("content", "message", "row", "column"),
    [
        (RETAIL_HEADER.replace(",Quantity", "") + "1,2,3,4,5,6,7\n", "missing column", None, "Quantity"),
        (RETAIL_HEADER + "536365,85123A,HEART,6,not-a-date,2.55,17850.0,UK\n", "not a date", 2, "InvoiceDate"),
        (RETAIL_HEADER + GOOD_ROWS[0] + "\n536365,85123A,HEART,six,2010-12-01 08:26:00,2.55,17850.0,UK\n", "not a number", 3, "Quantity"),
        (RETAIL_HEADER + "536365,85123A,HEART,6,2010-12-01 08:26:00,cheap,17850.0,UK\n", "not a number", 2, "UnitPrice"),
        ("", "empty", None, None),
    ],
    ids=["missing-column", "bad-date", "bad-quantity", "bad-price", "empty-file"],
)
def test_bad_input_names_file_row_column(tmp_path: Path, content: str, message: str, row, column) -> None:
    bad = tmp_path / "2010-12-01.csv"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        online_retail(bad)
    assert info.value.file == str(bad)
    assert info.value.row == row
    assert info.value.column == column


def test_bad_encoding_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "day.csv"
    latin1 = "536365,85123A,CAF\xc9 MUG,6,2010-12-01 08:26:00,2.55,17850.0,UK\n".encode("latin-1")
    bad.write_bytes((RETAIL_HEADER + GOOD_ROWS[0] + "\n").encode() + latin1)
    with pytest.raises(DataError, match="UTF-8") as info:
        online_retail(bad)
    assert info.value.row == 3 and info.value.file == str(bad)


def test_error_in_second_file_names_that_file(retail_folder: Path) -> None:
    bad = write_retail_csv(retail_folder / "by-day" / "2010-12-04.csv", ["1,2,X,1,31/02/2010 25:00,1,5.0,UK"])
    with pytest.raises(DataError) as info:
        online_retail(retail_folder)
    assert info.value.file == str(bad) and info.value.row == 2


def test_malformed_csv_is_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text(RETAIL_HEADER + GOOD_ROWS[0] + ",extra,fields\n", encoding="utf-8")
    with pytest.raises(DataError, match="more fields than the header") as info:
        online_retail(bad)
    assert info.value.row == 2
    bad.write_text(RETAIL_HEADER + GOOD_ROWS[0] + "\n" + GOOD_ROWS[1] + ",extra\n", encoding="utf-8")
    with pytest.raises(DataError, match="well-formed") as info:
        online_retail(bad)
    assert info.value.row == 3


def test_folder_without_data_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no .csv"):
        online_retail(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        online_retail(tmp_path / "absent")


def test_file_that_is_not_what_it_claims(tmp_path: Path) -> None:
    fake = tmp_path / "Online Retail.xlsx"
    fake.write_text("this is not a workbook")
    with pytest.raises(DataError, match="cannot read as .xlsx") as info:
        online_retail(fake)
    assert info.value.file == str(fake)


# ---------------------------------------------------------------------- download path
class _Server:
    """A local HTTP server for one payload."""

    def __init__(self, payload: bytes) -> None:
        body = payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/online+retail.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def workbook_bytes(tmp_path: Path) -> bytes:
    frame = pd.read_csv(io.StringIO(RETAIL_HEADER + "\n".join(GOOD_ROWS)), dtype=str, keep_default_na=False)
    path = tmp_path / "wb.xlsx"
    frame.to_excel(path, index=False)
    return path.read_bytes()


def _zipped(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, payload)
    return buffer.getvalue()


def test_download_checks_checksum_and_caches(tmp_path: Path, workbook_bytes: bytes, monkeypatch) -> None:
    server = _Server(_zipped("Online Retail.xlsx", workbook_bytes))
    try:
        digest = hashlib.sha256(workbook_bytes).hexdigest()
        monkeypatch.setenv("ECOMREC_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("ECOMREC_ONLINE_RETAIL", raising=False)
        monkeypatch.setattr(loader, "UCI_URL", server.url)
        monkeypatch.setattr(loader, "UCI_XLSX_SHA256", digest)
        data = online_retail(None, show_progress=False)
        cached = tmp_path / "cache" / "online-retail" / "Online Retail.xlsx"
        assert cached.read_bytes() == workbook_bytes
        assert data.report.kept_rows == 5
        server.close()  # the second load must come from the cache, not the network
        assert online_retail(None, download=False).fingerprint == data.fingerprint
    finally:
        server.httpd.server_close()


def test_download_rejects_bad_checksum_and_leaves_no_file(tmp_path: Path, workbook_bytes: bytes) -> None:
    server = _Server(_zipped("Online Retail.xlsx", workbook_bytes))
    try:
        with pytest.raises(DataError, match="checksum mismatch"):
            download_online_retail(url=server.url, sha256="0" * 64, cache=tmp_path, show_progress=False)
    finally:
        server.close()
    assert not (tmp_path / "online-retail" / "Online Retail.xlsx").exists()
    assert list((tmp_path / "online-retail").iterdir()) == []


def test_download_rejects_non_zip_and_unreachable(tmp_path: Path) -> None:
    server = _Server(b"<html>not found</html>")
    try:
        with pytest.raises(DataError, match="not a zip"):
            download_online_retail(url=server.url, cache=tmp_path, show_progress=False)
    finally:
        server.close()
    with pytest.raises(DataError, match="cannot download"):
        download_online_retail(url="http://127.0.0.1:9/none.zip", cache=tmp_path, show_progress=False, timeout=2)


def test_env_variable_points_at_data(retail_folder: Path, monkeypatch) -> None:
    monkeypatch.setenv("ECOMREC_ONLINE_RETAIL", str(retail_folder))
    assert online_retail().report.kept_rows == 5


def test_no_path_no_cache_no_download_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ECOMREC_CACHE", str(tmp_path))
    monkeypatch.delenv("ECOMREC_ONLINE_RETAIL", raising=False)
    with pytest.raises(DataError, match="pass a path"):
        online_retail(None, download=False)
