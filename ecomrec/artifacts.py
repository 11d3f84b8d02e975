"""Self-describing artifact folders: data files plus ``manifest.json``, swapped in atomically.

The manifest records the kind of artifact, the ecomrec and library versions, the config and
its hash, free-form facts (dimension, item count, ...) and the SHA-256 of every file. Loading
checks all of it and raises :class:`ArtifactError` on any mismatch, truncation or corruption.

Layout: ``<parent>/<name>`` is a symbolic link to ``<parent>/.<name>.versions/<version>/``.
A write fills a temporary folder there, renames it to a new version, then replaces the link
with one ``rename`` — atomic on POSIX. A writer killed at any point leaves the previous version
in place and loadable; a reader that resolves the link once (:func:`open_artifact`) reads one
version throughout, even while a newer one is swapped in. The previous version is kept, older
ones are pruned.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ecomrec import __version__
from ecomrec.exceptions import ArtifactError

MANIFEST = "manifest.json"
FORMAT = 1
#: Versions kept per artifact: the current one and the one before it (readers may still hold it).
KEEP_VERSIONS = 2
#: Temporary folders of writers that died, or older than this, are from killed writes and are removed.
STALE_SECONDS = 3600
_LIBRARIES = ("numpy", "scipy", "implicit", "faiss-cpu", "faiss-gpu-cu12", "torch", "transformers", "sentence-transformers")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries artifacts depend on (absent ones left out)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_artifact(
    path: str | Path, kind: str, config: dict[str, Any], facts: dict[str, Any], write_files: Callable[[Path], None]
) -> Path:
    """Write a new version with ``write_files(folder)`` plus a manifest, then point ``path`` at it.

    Returns ``path``. Nothing at ``path`` changes until the final atomic link swap.
    """
    target = Path(path)
    versions = _versions_dir(target)
    versions.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc)
    tmp = versions / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_files(tmp)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "ecomrec_version": __version__,
            "versions": library_versions(),
            "config": config,
            "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
            "created": stamp.isoformat(timespec="seconds"),
            "facts": facts,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        version = versions / f"{stamp:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
        os.rename(tmp, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_link(target, version)
    _prune(versions, keep=os.path.realpath(target))
    return target


def _versions_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.versions"


def _point_link(target: Path, version: Path) -> None:
    """Atomically make ``target`` a symlink to ``version`` (relative, so the parent can move)."""
    if target.exists() and not target.is_symlink():
        if not target.is_dir():
            raise ArtifactError(f"{target} exists and is not an artifact folder; refusing to replace it")
        os.replace(target, _versions_dir(target) / f"00000000-legacy-{uuid.uuid4().hex[:6]}")  # pre-versioned layout
    link = target.parent / f".{target.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(version, target.parent), link)
    os.replace(link, target)


def _prune(versions: Path, keep: str) -> None:
    """Drop all but the newest KEEP_VERSIONS versions (never the current) and stale temporary folders."""
    now = time.time()
    done = sorted((p for p in versions.iterdir() if not p.name.startswith(".")), key=lambda p: p.name, reverse=True)
    for old in done[KEEP_VERSIONS:]:
        if os.path.realpath(old) != keep:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in versions.glob(".tmp-*"):
        if not _writer_alive(tmp) or now - tmp.stat().st_mtime > STALE_SECONDS:
            shutil.rmtree(tmp, ignore_errors=True)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary folder (``.tmp-<pid>-…``) still runs on this host."""
    try:
        pid = int(tmp.name.split("-")[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_artifact(path: str | Path, kind: str) -> tuple[Path, dict[str, Any]]:
    """Resolve ``path`` to one version (pinned even if a rebuild swaps it now) and verify it.

    Returns the version's folder and its manifest.
    """
    folder = Path(path).resolve()
    return folder, read_manifest(folder, kind)


def read_manifest(path: str | Path, kind: str) -> dict[str, Any]:
    """Verify the folder at ``path`` holds an intact artifact of ``kind``; return its manifest."""
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder} is not an ecomrec artifact: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is unreadable or truncated: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder}: artifact format {manifest.get('format')!r}, this ecomrec reads {FORMAT}")
    if manifest.get("kind") != kind:
        raise ArtifactError(f"{folder} holds a {manifest.get('kind')!r}, not a {kind!r}")
    for name, expected in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"{folder}: file {name} listed in the manifest is missing")
        if file_sha256(file) != expected:
            raise ArtifactError(f"{folder}: file {name} is corrupt or truncated (checksum mismatch)")
    return manifest


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` written with :func:`numpy.savez` (no pickles allowed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
