"""Self-describing artifact folders: data files plus ``manifest.json``, swapped in atomically.

A top-level artifact (an engine, or a retriever or index saved on its own) is a versioned folder
whose manifest records the kind, the artifact format, library versions, the config and its hash,
free-form facts and the SHA-256 of every file below it. Components saved inside it are plain
subfolders with a small manifest of their own (kind, config, facts) that never version by themselves.

Layout: ``<parent>/<name>`` is a symbolic link to ``<parent>/.<name>.versions/<version>/``. A
write fills a temporary folder there, renames it to a new version, then replaces the link with one
atomic ``rename``; a killed writer leaves the previous version loadable. A save refuses a target
that is a file, a non-empty folder, or a link that is not an artifact's.

A reader (:func:`open_artifact`) holds a shared ``flock`` on the version's ``.lease`` while it
reads. Writers serialise swaps on ``.lock``, record them in ``.swaps``, and prune all but the
current version and the one before it, skipping leased ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from ecomrec.version import __version__
from ecomrec.exceptions import ArtifactError, ArtifactVersionWarning

C = TypeVar("C")
MANIFEST = "manifest.json"
#: The on-disk layout this ecomrec writes and reads; another one is refused with a clear error.
FORMAT = 2
#: Versions kept per artifact: the current one and the one swapped in before it.
KEEP_VERSIONS = 2
#: Temporary folders of dead writers, or older than this (seconds), are removed.
STALE_SECONDS = 3600
LEASE = ".lease"
_LOCK = ".lock"
_SWAPS = ".swaps"
_LIBRARIES = ("numpy", "scipy", "implicit", "faiss-cpu", "faiss-gpu-cu12", "torch", "transformers", "sentence-transformers",
              "lightgbm")
#: Libraries whose major.minor version must match the one an artifact was written with (else a warning).
CHECKED_LIBRARIES = ("torch", "transformers", "sentence-transformers", "faiss", "implicit", "lightgbm", "numpy")

# Inside a write (or a verified read) of a top-level artifact, nested saves (loads) are parts of it.
_writing: contextvars.ContextVar[bool] = contextvars.ContextVar("ecomrec_artifact_writing", default=False)
_reading: contextvars.ContextVar[bool] = contextvars.ContextVar("ecomrec_artifact_reading", default=False)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries artifacts depend on (absent ones left out)."""
    versions = {}
    for name in _LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- writing
def write_artifact(path: str | Path, kind: str, config: dict[str, Any], facts: dict[str, Any],
                   write_files: Callable[[Path], None], *, keep: int = KEEP_VERSIONS) -> Path:
    """Write a new version with ``write_files(folder)`` plus a manifest, then point ``path`` at it;
    ``keep``: versions kept, the new one included (older ones a reader holds are kept too).

    Returns ``path``. Called while another artifact is being written (a component saving itself
    into its parent's folder), it writes a plain subfolder that the parent's manifest covers.

    Raises
    ------
    ArtifactError
        ``path`` exists and is not an ecomrec artifact; it is left exactly as it was.
    """
    target = Path(path)
    if _writing.get():
        target.mkdir(parents=True, exist_ok=False)
        write_files(target)
        (target / MANIFEST).write_text(json.dumps(_manifest(kind, config, facts), indent=2, sort_keys=True), encoding="utf-8")
        return target
    _check_replaceable(target)
    versions = _versions_dir(target)
    if versions.exists() and not versions.is_dir():
        raise ArtifactError(f"{versions} exists and is not a folder; refusing to write an artifact beside it")
    versions.mkdir(parents=True, exist_ok=True)
    tmp = versions / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        token = _writing.set(True)
        try:
            write_files(tmp)
        finally:
            _writing.reset(token)
        manifest = {**_manifest(kind, config, facts), "versions": library_versions(), "files": _checksums(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        (tmp / LEASE).touch()
        with _writer_lock(versions):
            _check_replaceable(target)  # again: another writer or the user may have acted meanwhile
            version = versions / f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
            os.rename(tmp, version)
            _point_link(target, version)
            with open(versions / _SWAPS, "a", encoding="utf-8") as log:
                log.write(version.name + "\n")
            _prune(versions, current=version, keep=keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _manifest(kind: str, config: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "kind": kind, "ecomrec_version": __version__, "config": config,
            "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "facts": facts}


def _checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` by relative path (the lease file aside)."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LEASE]
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def _versions_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.versions"


def is_artifact_link(target: Path) -> bool:
    """Whether ``target`` is a link this module made: to ``.<name>.versions/<version>``."""
    if not target.is_symlink():
        return False
    parts = Path(os.readlink(target)).parts
    return len(parts) == 2 and parts[0] == _versions_dir(target).name and not parts[1].startswith(".")


def _check_replaceable(target: Path) -> None:
    """Raise unless ``target`` is absent, an empty folder, or an artifact link of ours."""
    if target.is_symlink():
        if not is_artifact_link(target):
            raise ArtifactError(f"{target} is a link to {os.readlink(target)}, not an ecomrec artifact; refusing to replace it")
        return
    if not target.exists():
        return
    if not target.is_dir():
        raise ArtifactError(f"{target} exists and is not an ecomrec artifact; refusing to replace it (save elsewhere)")
    if any(target.iterdir()):
        raise ArtifactError(f"{target} is a folder with files in it, not an ecomrec artifact (or one in an older layout); "
                            "refusing to replace it: save to a new path")


def _point_link(target: Path, version: Path) -> None:
    """Atomically make ``target`` a symlink to ``version`` (relative, so the parent can move)."""
    if target.is_dir() and not target.is_symlink():
        try:
            target.rmdir()  # an empty folder, checked just before; fails if anything arrived since
        except OSError as exc:
            raise ArtifactError(f"{target} is no longer empty; refusing to replace it") from exc
    link = target.parent / f".{target.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(version, target.parent), link)
    os.replace(link, target)


@contextlib.contextmanager
def _writer_lock(versions: Path) -> Iterator[None]:
    """Exclusive lock of one artifact's swaps and pruning (across threads and processes)."""
    fd = os.open(versions / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, shared=False, block=True)
        yield
    finally:
        os.close(fd)


def _swap_order(versions: Path) -> list[str]:
    """Version names by their latest swap, oldest first."""
    try:
        names = (versions / _SWAPS).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return []
    latest = {name: i for i, name in enumerate(names)}
    return sorted(latest, key=latest.__getitem__)


def _prune(versions: Path, current: Path, keep: int = KEEP_VERSIONS) -> None:
    """Drop versions beyond the newest ``keep`` (by swap order; the current one always kept),
    skipping leased ones, and the temporary folders of dead or stale writers. Holds the writer lock."""
    order = {name: i for i, name in enumerate(_swap_order(versions))}
    done = [p for p in versions.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()]
    done.sort(key=lambda p: order.get(p.name, -1), reverse=True)  # never swapped: oldest
    kept = [p.name for p in done[:keep]]
    for old in done[keep:]:
        if old != current and not _remove_unless_leased(old):
            kept.append(old.name)
    (versions / _SWAPS).write_text("".join(f"{n}\n" for n in sorted(kept, key=lambda n: order.get(n, -1))), encoding="utf-8")
    now = time.time()
    for tmp in versions.glob(".tmp-*"):
        if not _writer_alive(tmp) or now - tmp.stat().st_mtime > STALE_SECONDS:
            shutil.rmtree(tmp, ignore_errors=True)


def older_versions(path: str | Path) -> list[str]:
    """The versions of the artifact at ``path`` other than the one it points to."""
    target = Path(path)
    versions = _versions_dir(target)
    current = target.resolve().name
    return sorted(p.name for p in versions.iterdir() if not p.name.startswith(".") and p.name != current) if versions.is_dir() else []


def _remove_unless_leased(version: Path) -> bool:
    """Delete ``version`` unless a reader holds its lease; whether it was deleted."""
    try:
        fd = os.open(version / LEASE, os.O_RDONLY)
    except FileNotFoundError:
        shutil.rmtree(version, ignore_errors=True)
        return True
    try:
        if not _flock(fd, shared=False, block=False):
            return False
        shutil.rmtree(version, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary folder (``.tmp-<pid>-…``) still runs on this host."""
    try:
        os.kill(int(tmp.name.split("-")[1]), 0)
    except (IndexError, ValueError, ProcessLookupError):  # no pid in the name, or no such process
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def _flock(fd: int, *, shared: bool, block: bool) -> bool:
    """Take an flock on ``fd``; False if ``block`` is off and someone else holds it."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no leases (pruning may remove a version in use)
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if block else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    return True


# ---------------------------------------------------------------------- reading
@contextlib.contextmanager
def open_artifact(path: str | Path, kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Resolve ``path`` to one version, verify it, and hold it (unpruned) while the ``with`` block reads it.

    Yields the version's folder and its manifest. Inside another artifact's block (a component of
    an engine being loaded) the folder is a part already verified with its parent.

    Raises
    ------
    ArtifactError
        Missing, truncated or corrupt files, another kind, or another artifact format.
    """
    if _reading.get():
        folder = Path(path)
        yield folder, _read_manifest_file(folder, kind)
        return
    with _leased(Path(path)) as folder:
        manifest = read_manifest(folder, kind)
        _warn_on_library_versions(folder, manifest.get("versions", {}))
        token = _reading.set(True)
        try:
            yield folder, manifest
        finally:
            _reading.reset(token)


@contextlib.contextmanager
def _leased(target: Path) -> Iterator[Path]:
    """The version ``target`` points at, with a shared lease held on it for the block."""
    for _ in range(100):
        folder = target.resolve()
        try:
            fd = os.open(folder / LEASE, os.O_RDONLY)
        except FileNotFoundError:
            if target.is_symlink() and target.resolve() != folder:
                continue  # swapped and pruned while we looked: look again
            yield folder  # not versioned (or missing: read_manifest says so)
            return
        except OSError:  # unreadable lease (permissions): read without one
            yield folder
            return
        try:
            _flock(fd, shared=True, block=True)
            if (folder / MANIFEST).is_file():
                yield folder
                return
        finally:
            os.close(fd)
    raise ArtifactError(f"{target} keeps changing under the reader; try again")


def read_manifest(path: str | Path, kind: str) -> dict[str, Any]:
    """Verify the folder at ``path`` holds an intact artifact of ``kind``; return its manifest."""
    folder = Path(path)
    manifest = _read_manifest_file(folder, kind)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{folder}: the manifest lists no files; it is not a top-level ecomrec artifact")
    for name, expected in files.items():
        file = folder / str(name)
        if ".." in Path(str(name)).parts or Path(str(name)).is_absolute():
            raise ArtifactError(f"{folder}: the manifest names a file outside the artifact ({name!r})")
        if not file.is_file():
            raise ArtifactError(f"{folder}: file {name} listed in the manifest is missing")
        if file_sha256(file) != expected:
            raise ArtifactError(f"{folder}: file {name} is corrupt or truncated (checksum mismatch)")
    return manifest


def _read_manifest_file(folder: Path, kind: str) -> dict[str, Any]:
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder} is not an ecomrec artifact: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is unreadable or truncated: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path} is not an ecomrec manifest")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder}: artifact format {manifest.get('format')!r}, this ecomrec reads format {FORMAT}: "
                            "re-save it with this version of ecomrec (fit and save again)")
    if manifest.get("kind") != kind:
        raise ArtifactError(f"{folder} holds a {manifest.get('kind')!r}, not a {kind!r}")
    for key, kind_of in (("config", dict), ("facts", dict)):
        if not isinstance(manifest.get(key), kind_of):
            raise ArtifactError(f"{manifest_path}: {key!r} is missing or malformed")
    return manifest


def manifest_config(manifest: dict[str, Any], config_class: type[C], folder: Path) -> C:
    """The manifest's config as ``config_class``; an invalid one is an :class:`ArtifactError`."""
    try:
        return config_class.from_dict(manifest["config"])  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{folder}: the saved config is not a valid {config_class.__name__}: {exc}") from exc


def _warn_on_library_versions(folder: Path, recorded: Any) -> None:
    """One warning naming every checked library whose major.minor differs from the artifact's."""
    if not isinstance(recorded, dict):
        return
    installed = library_versions()
    differ = []
    for name in CHECKED_LIBRARIES:
        keys = ("faiss-cpu", "faiss-gpu-cu12") if name == "faiss" else (name,)
        then = next((recorded[k] for k in keys if k in recorded), None)
        now = next((installed[k] for k in keys if k in installed), None)
        if then is not None and now is not None and _major_minor(str(then)) != _major_minor(now):
            differ.append(f"{name} {then} (now {now})")
    if differ:
        warnings.warn(f"{folder} was written with {', '.join(differ)}; it may load or behave differently: "
                      "re-save it if results change", ArtifactVersionWarning, stacklevel=4)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` written with :func:`numpy.savez` (no pickles allowed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc


def csr_to_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as named plain arrays, for an ``.npz`` without pickles."""
    return {f"{prefix}_data": matrix.data, f"{prefix}_indices": matrix.indices, f"{prefix}_indptr": matrix.indptr,
            f"{prefix}_shape": np.asarray(matrix.shape, dtype=np.int64)}


def csr_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`csr_to_arrays`; a missing or inconsistent array is an ArtifactError."""
    try:
        shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
        return sp.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape)
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"saved sparse matrix {prefix!r} is missing or inconsistent: {exc}") from exc
