"""Artifact folders: saves never destroy what ecomrec did not write, one version per artifact,
pruning by swap order that spares leased versions, format and library-version checks."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from ecomrec import artifacts
from ecomrec.artifacts import open_artifact, write_artifact
from ecomrec.exceptions import ArtifactError, ArtifactVersionWarning
from ecomrec.index import VectorIndex
from ecomrec.retrieval.baselines import PopularityRetriever
from ecomrec.data.synthetic import synthetic


def _write(path: Path, value: str, wait: threading.Event | None = None) -> Path:
    def files(folder: Path) -> None:
        if wait is not None:
            wait.wait(10)
        (folder / "value.txt").write_text(value)

    return write_artifact(path, "Note", {"value": value}, {}, files)


def _read(path: Path) -> str:
    with open_artifact(path, "Note") as (folder, _):
        return (folder / "value.txt").read_text()


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _versions(path: Path) -> list[str]:
    return sorted(p.name for p in (path.parent / f".{path.name}.versions").iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------- saves that never destroy
def test_a_folder_with_files_is_refused_and_left_byte_for_byte(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "thesis.tex").write_text("years of work")
    (work / "notes" / "a.md").write_text("more")
    before = _tree(work)
    for _ in range(4):  # today's code moved it aside on the first save and deleted it a few saves later
        with pytest.raises(ArtifactError, match="refusing"):
            _write(work, "x")
    assert _tree(work) == before and work.is_dir() and not work.is_symlink()
    assert not (tmp_path / ".work.versions").exists() or _versions(work) == []


def test_an_engine_save_into_a_users_folder_is_refused(tmp_path: Path) -> None:
    index = VectorIndex(kind="flat").build(np.eye(4, dtype=np.float32))
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "README.md").write_text("mine")
    with pytest.raises(ArtifactError, match="refusing"):
        index.save(tmp_path / "indexes")
    assert (tmp_path / "indexes" / "README.md").read_text() == "mine"


@pytest.mark.parametrize("kind", ["file", "foreign link", "link to a file"])
def test_files_and_foreign_links_are_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.csv").write_text("a,b\n")
    if kind == "file":
        target.write_text("precious")
    elif kind == "foreign link":
        target.symlink_to(elsewhere)
    else:
        target.symlink_to(elsewhere / "data.csv")
    before = (os.readlink(target) if target.is_symlink() else None, _tree(tmp_path))
    with pytest.raises(ArtifactError, match="refusing"):
        _write(target, "x")
    assert (os.readlink(target) if target.is_symlink() else None, _tree(tmp_path)) == before


def test_an_empty_folder_or_a_previous_save_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    _write(target, "one")
    assert target.is_symlink() and _read(target) == "one"
    _write(target, "two")
    assert _read(target) == "two"


def test_a_failed_write_leaves_the_previous_version_serving(tmp_path: Path) -> None:
    target = tmp_path / "a"
    _write(target, "one")

    def broken(folder: Path) -> None:
        (folder / "value.txt").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_artifact(target, "Note", {}, {}, broken)
    assert _read(target) == "one" and len(_versions(target)) == 1
    assert not list((tmp_path / ".a.versions").glob(".tmp-*"))


# ---------------------------------------------------------------------- one artifact, one version
def test_components_inside_an_artifact_are_plain_folders_covered_by_one_manifest(tmp_path: Path) -> None:
    model = PopularityRetriever(window_days=30).fit(synthetic(n_users=20, n_items=10, seed=1))

    def files(folder: Path) -> None:
        model.save(folder / "part")

    write_artifact(tmp_path / "outer", "Outer", {}, {}, files)
    version = (tmp_path / "outer").resolve()
    part = version / "part"
    assert part.is_dir() and not part.is_symlink()
    assert not [p for p in version.rglob(".*.versions")]  # nothing nested is versioned
    manifest = json.loads((version / "manifest.json").read_text())
    assert {"part/state.npz", "part/manifest.json"} <= set(manifest["files"])
    (part / "state.npz").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="part/state.npz"):
        with open_artifact(tmp_path / "outer", "Outer"):
            pass


# ---------------------------------------------------------------------- pruning
def test_pruning_follows_swap_order_not_start_order(tmp_path: Path) -> None:
    """Writer A starts first and swaps last: its version is current, then the previous one."""
    target = tmp_path / "catalog"
    _write(target, "zero")
    release = threading.Event()
    slow = threading.Thread(target=_write, args=(target, "A", release))
    slow.start()  # A takes its start time now, then waits
    _write(target, "B")
    release.set()
    slow.join()
    assert _read(target) == "A"
    pinned = target.resolve()  # a reader that has just opened A
    _write(target, "C")
    assert pinned.is_dir() and (pinned / "value.txt").read_text() == "A"  # the previous version stays
    assert len(_versions(target)) == 2


def test_a_leased_version_is_never_pruned(tmp_path: Path) -> None:
    target = tmp_path / "catalog"
    _write(target, "one")
    with open_artifact(target, "Note") as (folder, _):
        for value in ("two", "three", "four", "five"):
            _write(target, value)
        assert (folder / "value.txt").read_text() == "one"  # still readable mid-read
    assert _read(target) == "five"
    _write(target, "six")
    assert not folder.exists() and len(_versions(target)) == 2


def test_concurrent_writers_and_readers_never_see_a_missing_version(tmp_path: Path) -> None:
    target = tmp_path / "catalog"
    _write(target, "0")
    errors: list[BaseException] = []
    seen: list[str] = []

    def write(offset: int) -> None:
        try:
            for i in range(15):
                _write(target, str(offset + i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(60):
                seen.append(_read(target))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(100 * w,)) for w in range(2)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    written = {"0"} | {str(100 * w + i) for w in range(2) for i in range(15)}
    assert len(seen) == 180 and set(seen) <= written
    # A version a reader held during the last prune is spared (the lease); the next save drops it.
    assert len(_versions(target)) <= 2 + 3
    _write(target, "last")
    assert len(_versions(target)) == 2 and _read(target) == "last"


# ---------------------------------------------------------------------- format and versions
def test_another_artifact_format_is_refused_with_advice(tmp_path: Path) -> None:
    target = _write(tmp_path / "a", "x")
    manifest_path = target.resolve() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="re-save"):
        _read(target)


def test_other_library_versions_give_one_warning_naming_each(tmp_path: Path) -> None:
    target = _write(tmp_path / "a", "x")
    manifest_path = target.resolve() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["versions"].update({"torch": "1.0.0", "numpy": "0.9.1", "faiss-cpu": "0.1", "scipy": "0.1"})
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(ArtifactVersionWarning) as caught:
        assert _read(target) == "x"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "torch 1.0.0" in message and "numpy 0.9.1" in message and "faiss 0.1" in message
    assert "scipy" not in message  # only the libraries whose formats matter are checked


def test_same_major_minor_versions_load_quietly(tmp_path: Path) -> None:
    target = _write(tmp_path / "a", "x")
    manifest_path = target.resolve() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    numpy_version = manifest["versions"]["numpy"].split(".")
    manifest["versions"]["numpy"] = ".".join(numpy_version[:2] + ["999"])
    manifest_path.write_text(json.dumps(manifest))
    assert _read(target) == "x"  # a patch release differs: no warning (warnings are errors here)


def test_manifest_names_outside_the_artifact_are_refused(tmp_path: Path) -> None:
    target = _write(tmp_path / "a", "x")
    manifest_path = target.resolve() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["../../etc/passwd"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="outside"):
        _read(target)


def test_library_versions_record_what_the_checks_compare() -> None:
    recorded = artifacts.library_versions()
    assert {"numpy", "torch", "lightgbm"} <= set(recorded)
