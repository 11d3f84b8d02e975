"""Resolve the compute device once: argument → ``ECOMREC_DEVICE`` → CUDA if present → CPU.

GPU-only libraries are imported lazily so a CPU-only install imports cleanly.
"""

from __future__ import annotations

import functools
import os

_VALID = ("cpu", "cuda")


def resolve_device(device: str | None = None) -> str:
    """``"cuda"`` or ``"cpu"`` for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` kept as given, or
    ``None``/``"auto"``: ``ECOMREC_DEVICE``, else CUDA when torch sees a GPU).

    >>> resolve_device("cpu")
    'cpu'
    """
    choice = device if device not in (None, "auto") else os.environ.get("ECOMREC_DEVICE")
    if choice in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if choice.split(":")[0] not in _VALID:
        raise ValueError(f"device must be one of {_VALID} (or 'cuda:N', 'auto'), got {choice!r}")
    if choice.startswith("cuda") and not cuda_available():
        raise ValueError(f"device {choice!r} was asked for but torch sees no CUDA device")
    return choice


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when torch is installed with CUDA and sees at least one GPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=1)
def implicit_gpu_available() -> bool:
    """True when implicit was built with CUDA and a GPU is present."""
    try:
        import implicit.gpu
    except ImportError:  # pragma: no cover
        return False
    return bool(implicit.gpu.HAS_CUDA)


@functools.lru_cache(maxsize=1)
def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu)."""
    try:
        import faiss
    except ImportError:  # pragma: no cover
        return 0
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if get_num_gpus is not None else 0
