"""Catalog rebuilds on a Ray cluster: titles encoded by a Ray Data actor pool.

The local rebuild stays the reference. Here the titles a text retriever has no vector for are
read into a Ray Dataset, encoded by an actor pool (each actor loads the retriever's float
weights once, from the object store, and runs the same :func:`~ecomrec.encoders.encode_texts`
as the local path) and the vectors fill the retriever's embedding cache; the ordinary rebuild
that follows then finds every title embedded and encodes nothing. The vectors are the local
ones to float rounding (a test holds them to 1e-6).

Optional: ``pip install 'ecomrec[scale]'`` (Ray Data). Without an address a local Ray
instance with ``workers`` CPUs is started for the call and stopped after it; ``address="auto"``
joins a running cluster (``ray start --head``), which is left running.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecomrec.encoders import encode_texts, text_hashes, traced_for_inference

#: How to get Ray when it is missing.
SCALE_EXTRA = "backend='ray' needs Ray Data: pip install 'ecomrec[scale]'"
#: Rebuild backends of :meth:`~ecomrec.engine.Engine.rebuild_index`.
BACKENDS = ("local", "ray")
#: A worker that dies is restarted and its batch retried this many times; then the rebuild fails
#: (and the engine keeps serving the old snapshot).
RETRIES = 2


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401 -- the [data] part of the extra
    except ImportError as exc:
        raise ImportError(SCALE_EXTRA) from exc
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray connected to ``address`` (``auto``: a running cluster) or, without one, a local Ray
    with ``workers`` CPUs started here; stops only what it started (a session already open in
    this process is used as it is)."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, **options)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class TitleEncoder:
    """A Ray Data actor: loads the encoder once, then turns batches of titles into vectors."""

    def __init__(self, model_ref: list[Any], max_tokens: int, batch_size: int, device: str) -> None:
        import ray
        import torch

        torch.set_num_threads(1)  # one CPU per actor: more threads only fight the other actors
        self.device = device
        model = ray.get(model_ref[0]).to(device)
        self.model = traced_for_inference(model, self.device)
        self.max_tokens, self.batch_size = max_tokens, batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import os
        import resource

        start = time.perf_counter()
        texts = batch["text"].tolist()
        vectors = encode_texts(self.model, texts, self.max_tokens, self.device, self.batch_size)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        busy = np.full(len(texts), (time.perf_counter() - start) / max(len(texts), 1))  # per title: sums per worker
        return pd.DataFrame({"text_hash": batch["text_hash"].to_numpy(), "vector": list(vectors), "worker": os.getpid(),
                             "peak_mb": peak_mb, "busy_seconds": busy})


def encode_on_ray(
    retriever: Any, texts: Sequence[str], *, workers: int = 2, address: str | None = None, batch_size: int = 512
) -> dict[str, Any]:
    """Embed on Ray the titles ``retriever`` (a :class:`~ecomrec.retrieval.BiEncoderRetriever`)
    has no cached vector for, into its cache. ``workers`` actors of one CPU each (or one GPU
    each where the cluster has them); ``batch_size`` titles per Ray batch. Returns counts and
    seconds (``titles_per_second`` over the encoding)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    titles = list(texts)
    hashes = text_hashes(titles)
    absent = retriever.cache_.rows(hashes) < 0
    _, first = np.unique(hashes[absent], return_index=True)  # a title shared by many items: once
    missing = np.flatnonzero(absent)[np.sort(first)]
    report: dict[str, Any] = {"titles": len(titles), "encoded": int(len(missing)), "workers": workers}
    if not len(missing):
        return report | {"seconds": 0.0}
    frame = pd.DataFrame({"text_hash": hashes[missing], "text": [titles[i] for i in missing]})
    start = time.perf_counter()
    model = retriever.model_ if retriever.device_ == "cpu" else copy.deepcopy(retriever.model_).to("cpu")  # any worker can load it
    with ray_session(address, workers) as ray:
        import torch

        gpus = 1 if torch.cuda.is_available() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        blocks = max(1, min(-(-len(frame) // batch_size), 4 * workers))  # enough blocks to keep every actor busy
        edges = np.linspace(0, len(frame), blocks + 1).astype(int)
        dataset = ray.data.from_pandas([frame.iloc[lo:hi] for lo, hi in zip(edges[:-1], edges[1:])])
        started = time.perf_counter()
        encoded = dataset.map_batches(
            TitleEncoder,
            fn_constructor_kwargs={"model_ref": [ray.put(model)], "max_tokens": retriever.config.item_max_tokens,
                                   "batch_size": retriever.config.encode_batch_size, "device": "cuda" if gpus else "cpu"},
            batch_format="pandas", batch_size=batch_size, concurrency=workers, num_cpus=0 if gpus else 1, num_gpus=gpus,
            max_restarts=RETRIES, max_task_retries=RETRIES,
        ).to_pandas()
        encoding = time.perf_counter() - started
    vectors = np.stack(encoded["vector"].to_numpy()).astype(np.float32)
    retriever.cache_.store(encoded["text_hash"].to_numpy().astype(str), vectors)
    per_worker = encoded.groupby("worker").agg(peak_mb=("peak_mb", "max"), busy=("busy_seconds", "sum"), titles=("text_hash", "size"))
    return report | {"seconds": time.perf_counter() - start, "encoding_seconds": encoding,
                     "titles_per_second": len(missing) / max(encoding, 1e-9), "worker_peak_mb": sorted(per_worker["peak_mb"].round(1).tolist()),
                     "worker_busy_seconds": sorted(per_worker["busy"].round(2).tolist()),
                     "titles_per_busy_second": float((per_worker["titles"] / per_worker["busy"]).mean())}
