"""Property-based input tests: random corruptions of CSV, Parquet and TOML inputs and of artifact
files end in the documented error class or a clean result — never another exception, never a
partial write.

The examples are derandomized (the same in every CI run); ``ECOMREC_HYPOTHESIS=stress`` runs
1,000 fresh random examples per test (see tests/conftest.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from ecomrec.artifacts import write_artifact
from ecomrec.config import ALSConfig, EngineConfig
from ecomrec.data.dataset import Dataset
from ecomrec.data.synthetic import synthetic
from ecomrec.datasets import InteractionColumns, from_files, online_retail
from ecomrec.exceptions import ArtifactError, DataError
from ecomrec.retrieval.als import ALSRetriever

from .conftest import RETAIL_HEADER

RETAIL_ROWS = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom",
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom",
    "536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,2010-12-01 08:34:00,1.69,13047.0,United Kingdom",
    "536367,POST,POSTAGE,1,2010-12-01 08:34:00,18.0,13047.0,United Kingdom",
]


def corrupt(raw: bytes, data: st.DataObject) -> bytes:
    """One random corruption: truncate, flip bytes, insert junk, delete or reorder lines."""
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete_line", "swap_lines", "empty"]), label="how")
    if how == "empty" or not raw:
        return b""
    if how == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1), label="at")]
    if how == "flip":
        out = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            at = data.draw(st.integers(0, len(out) - 1), label="at")
            out[at] ^= data.draw(st.integers(1, 255), label="mask")
        return bytes(out)
    if how == "insert":
        at = data.draw(st.integers(0, len(raw)), label="at")
        return raw[:at] + data.draw(st.binary(min_size=1, max_size=12), label="junk") + raw[at:]
    lines = raw.split(b"\n")
    i = data.draw(st.integers(0, len(lines) - 1), label="i")
    if how == "delete_line":
        del lines[i]
    else:
        j = data.draw(st.integers(0, len(lines) - 1), label="j")
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _loads_or_data_error(load) -> None:  # type: ignore[no-untyped-def]
    try:
        result = load()
    except DataError:
        event("DataError")
        return
    event("loaded cleanly")
    assert isinstance(result, Dataset)
    assert result.report.raw_rows == result.report.kept_rows + sum(result.report.dropped.values())


@given(data=st.data())
def test_corrupt_online_retail_csv(data: st.DataObject) -> None:
    raw = (RETAIL_HEADER + "".join(r + "\n" for r in RETAIL_ROWS)).encode()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "2010-12-01.csv"
        path.write_bytes(corrupt(raw, data))
        _loads_or_data_error(lambda: online_retail(path, download=False))


LOG = pd.DataFrame(
    {
        "customer": ["a", "a", "b", "c", "c", "d"],
        "sku": ["x", "y", "x", "z", "y", "x"],
        "ts": ["2024-01-01 10:00", "2024-01-02 11:00", "2024-01-03 12:00", "2024-01-04 09:00", "2024-01-05 10:30", "2024-01-06 08:00"],
        "qty": [1, 2, 3, 1, 5, 2],
    }
)
COLUMNS = InteractionColumns("customer", "sku", "ts", quantity="qty")


@given(data=st.data(), kind=st.sampled_from(["csv", "parquet"]))
def test_corrupt_generic_log(data: st.DataObject, kind: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"log.{kind}"
        LOG.to_csv(path, index=False) if kind == "csv" else LOG.to_parquet(path, index=False)
        path.write_bytes(corrupt(path.read_bytes(), data))
        _loads_or_data_error(lambda: from_files(path, columns=COLUMNS))


@given(data=st.data())
def test_corrupt_engine_toml(data: st.DataObject) -> None:
    text = EngineConfig().to_toml().encode()
    broken = corrupt(text, data).decode("utf-8", errors="replace")
    try:
        config = EngineConfig.from_toml_text(broken)
    except ValueError:  # documented: invalid TOML, an unknown key, a value of the wrong type or range
        event("ValueError")
        return
    event("loaded cleanly")
    assert EngineConfig.from_dict(config.to_dict()) == config


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    model = ALSRetriever(ALSConfig(factors=4, iterations=3), show_progress=False).fit(synthetic(n_users=40, n_items=20, seed=2))
    return model.save(tmp_path_factory.mktemp("als") / "model")


@given(data=st.data())
def test_corrupt_artifact_files_are_detected(saved_model: Path, data: st.DataObject) -> None:
    """Truncate, flip, delete or reorder the files of a saved model: ArtifactError, or a model
    that answers exactly like the original (a corruption that changed nothing)."""
    reference = ALSRetriever.load(saved_model).candidates(np.arange(10), 5)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "model"
        shutil.copytree(saved_model.resolve(), copy)
        files = sorted(p for p in copy.rglob("*") if p.is_file())
        victim = data.draw(st.sampled_from(files), label="file")
        how = data.draw(st.sampled_from(["corrupt", "delete", "swap"]), label="fault")
        if how == "delete":
            victim.unlink()
        elif how == "swap":
            other = data.draw(st.sampled_from(files), label="other")
            a, b = victim.read_bytes(), other.read_bytes()
            victim.write_bytes(b)
            other.write_bytes(a)
        else:
            victim.write_bytes(corrupt(victim.read_bytes(), data))
        try:
            loaded = ALSRetriever.load(copy)
        except ArtifactError:
            event("detected (ArtifactError)")
            return
        event("no change: identical answers")
        found = loaded.candidates(np.arange(10), 5)
        np.testing.assert_array_equal(found.item_ids, reference.item_ids)


@given(fail_after=st.integers(0, 4), exception=st.sampled_from([OSError, RuntimeError, KeyboardInterrupt]))
def test_a_write_that_dies_leaves_no_partial_artifact(fail_after: int, exception: type[BaseException]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "artifact"
        write_artifact(target, "Note", {}, {}, lambda f: (f / "v.txt").write_text("old"))

        def files(out: Path) -> None:
            for i in range(5):
                if i == fail_after:
                    raise exception("died")
                (out / f"part{i}.bin").write_bytes(bytes(100))

        with pytest.raises(exception):
            write_artifact(target, "Note", {}, {}, files)
        assert (target / "v.txt").read_text() == "old"
        leftovers = [p.name for p in (Path(folder) / ".artifact.versions").iterdir() if p.name.startswith(".tmp")]
        assert not leftovers and sorted(p.name for p in Path(folder).iterdir()) == [".artifact.versions", "artifact"]


def _paths(values: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in values.items():
        out += _paths(value, prefix + (key,)) if isinstance(value, dict) and value else [prefix + (key,)]
    return out


TOML_VALUES = st.one_of(
    st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 3), max_size=2),
)


@given(data=st.data(), value=TOML_VALUES)
def test_a_wrong_value_anywhere_in_the_engine_toml(data: st.DataObject, value: object) -> None:
    import tomli_w

    values = EngineConfig().to_dict()
    path = data.draw(st.sampled_from(_paths(values)), label="key")
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        config = EngineConfig.from_toml_text(tomli_w.dumps(values))
    except ValueError:
        event("ValueError")
        return
    event("loaded cleanly")
    assert EngineConfig.from_toml_text(config.to_toml()) == config
