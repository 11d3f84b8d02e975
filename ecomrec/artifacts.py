"""Self-describing artifact folders: data files plus ``manifest.json``, written atomically.

The manifest records the kind of artifact, the ecomrec and library versions, the config and
its hash, free-form facts (dimension, item count, ...) and the SHA-256 of every file. Loading
checks all of it and raises :class:`ArtifactError` on any mismatch, truncation or corruption.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
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
    """Fill a temporary sibling folder with ``write_files(folder)`` plus a manifest, then swap it in.

    A crash before the swap leaves whatever was at ``path`` untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
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
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "facts": facts,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_in(new: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


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
