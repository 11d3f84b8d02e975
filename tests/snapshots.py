"""Test helpers for the serving snapshot: a fingerprint of everything reachable from it, and
readers racing with rebuilds."""

from __future__ import annotations

import hashlib
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

#: Objects a fingerprint does not look into: synchronisation and logging, code, classes.
_OPAQUE = (type(threading.Lock()), type(threading.RLock()), threading.Event, types.ModuleType, types.FunctionType,
           types.MethodType, types.BuiltinFunctionType, type)


def fingerprint(root: Any) -> str:
    """A digest of every array, mapping, model weight, tokenizer setting and FAISS index
    reachable from ``root`` (through attributes, containers and dataclass fields): two equal
    digests mean nothing reachable changed in between."""
    return fingerprints([root])[0]


def fingerprints(roots: list[Any]) -> list[str]:
    """:func:`fingerprint` of each root, objects they share digested once."""
    memo: dict[int, tuple[Any, str]] = {}
    return [_digest(root, memo, set()) for root in roots]


def _digest(obj: Any, memo: dict[int, tuple[Any, str]], path: set[int]) -> str:
    key = id(obj)
    if key in memo:
        return memo[key][1]
    if key in path:  # a cycle: its members are digested where it was entered
        return "cycle"
    path.add(key)
    try:
        out = hashlib.sha256(_content(obj, memo, path)).hexdigest()
    finally:
        path.discard(key)
    memo[key] = (obj, out)  # the object kept alive: its id is not reused by another within the pass
    return out


def _content(obj: Any, memo: dict[int, tuple[Any, str]], path: set[int]) -> bytes:
    import faiss
    import torch

    name = type(obj).__qualname__.encode()
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return name + repr(obj).encode()
    if isinstance(obj, np.ndarray):
        data = repr(obj.tolist()).encode() if obj.dtype == object else np.ascontiguousarray(obj).tobytes()
        return name + str((obj.dtype, obj.shape)).encode() + data
    if sp.issparse(obj):
        csr = sp.csr_matrix(obj)
        return name + str(csr.shape).encode() + b"".join(np.ascontiguousarray(a).tobytes() for a in (csr.data, csr.indices, csr.indptr))
    if isinstance(obj, torch.Tensor):
        return name + obj.detach().cpu().contiguous().numpy().tobytes()
    if isinstance(obj, (torch.nn.Module, torch.jit.ScriptModule)):
        return name + b"".join(k.encode() + _digest(v, memo, path).encode() for k, v in sorted(obj.state_dict().items()))
    if isinstance(obj, faiss.Index):
        return name + np.asarray(faiss.serialize_index(obj)).tobytes()
    backend = getattr(obj, "backend_tokenizer", None)
    if backend is not None:  # a transformers fast tokenizer: its settings live in the Rust tokenizer
        return name + backend.to_str().encode()
    if hasattr(obj, "to_str") and type(obj).__module__.startswith("tokenizers"):
        return name + obj.to_str().encode()
    if isinstance(obj, _OPAQUE) or callable(getattr(obj, "acquire", None)):
        return name
    if isinstance(obj, dict):
        items = sorted(((repr(k), v) for k, v in obj.items()), key=lambda kv: kv[0])
        return name + b"".join(k.encode() + _digest(v, memo, path).encode() for k, v in items)
    if isinstance(obj, (list, tuple)):
        return name + b"".join(_digest(v, memo, path).encode() for v in obj)
    if isinstance(obj, (set, frozenset)):
        return name + b"".join(sorted(_digest(v, memo, path).encode() for v in obj))
    state = getattr(obj, "__dict__", None)
    if state is None:
        slots = [s for cls in type(obj).__mro__ for s in getattr(cls, "__slots__", ())]
        state = {s: getattr(obj, s) for s in slots if hasattr(obj, s)}
        if not state:
            return name + repr(obj).encode()
    return name + _digest(dict(state), memo, path).encode()


def race_readers_with_rebuilds(
    engine: Any, read: Callable[[Any], Any], rebuild: Callable[[int], None], rebuilds: int, readers: int = 4, pause: float = 0.0
) -> tuple[list[Any], list[Any], list[Any], list[BaseException]]:
    """Run ``readers`` threads calling ``read(engine)`` over and over while this thread calls
    ``rebuild(turn)`` ``rebuilds`` times, each after every reader answered at least once from
    the snapshot before. Returns every published snapshot (the one in service at the start
    first), what ``read`` gave on each right after it was published (read here, alone), every
    answer the readers got, and the errors. ``pause``: seconds a reader waits between reads
    (room for a rebuild that needs the cores, as Ray workers do)."""
    snapshots, expected, answers, errors = [engine.snapshot], [read(engine)], [], []
    stop = threading.Event()
    counts = [0] * readers

    def reader(slot: int) -> None:
        try:
            while not stop.is_set():
                answers.append(read(engine))
                counts[slot] += 1
                stop.wait(pause)
        except BaseException as exc:  # noqa: BLE001 -- every error is a failure
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(slot,)) for slot in range(readers)]
    for t in threads:
        t.start()
    try:
        for turn in range(rebuilds):
            seen = list(counts)
            while any(now == before for now, before in zip(counts, seen)) and not errors:
                threading.Event().wait(0.005)  # every reader answers from this snapshot at least once
            rebuild(turn)
            snapshots.append(engine.snapshot)
            expected.append(read(engine))
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return snapshots, expected, answers, errors
