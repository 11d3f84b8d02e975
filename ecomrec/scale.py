"""Catalog rebuilds on a Ray cluster: titles encoded by a Ray Data actor pool.

The titles a text retriever has no vector for are encoded by an actor pool running the same
:func:`~ecomrec.encoders.encode_texts` as the local path (the local rebuild stays the reference);
the ordinary rebuild that follows is given those vectors and encodes nothing.

Optional: ``pip install 'ecomrec[scale]'``. Without an address a local Ray with ``workers`` CPUs
is started for the call and stopped after it; ``address="auto"`` joins a running cluster.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecomrec.encoders import PortableEncoder, encode_texts, text_hashes, traced_for_inference
from ecomrec.index.embedding_store import EmbeddingStore

#: How to get Ray when it is missing.
SCALE_EXTRA = "backend='ray' needs Ray Data: pip install 'ecomrec[scale]'"
#: Rebuild backends of :meth:`~ecomrec.engine.Engine.rebuild_index`.
BACKENDS = ("local", "ray")
#: A worker that dies is restarted and its batch retried this many times; then the rebuild fails.
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
    with ``workers`` CPUs started here; stops only what it started."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        where: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
        ray.init(**where, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ray_shard_builder(ray: Any) -> Any:
    """A :data:`~ecomrec.index.sharded.ShardBuilder` that builds shards in parallel Ray tasks of
    one CPU each, from one trained template shipped once through the object store."""
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(_build_shard)

    def build(template: Any, parts: list[tuple[np.ndarray, np.ndarray]]) -> list[Any]:
        shared = ray.put(template)
        return ray.get([task.remote(shared, vectors, ids) for vectors, ids in parts])

    return build


def _build_shard(template: Any, vectors: np.ndarray, ids: np.ndarray) -> Any:
    """One shard from ``template`` (runs in a Ray worker; the index travels back pickled)."""
    import faiss

    from ecomrec.index.sharded import build_shards_here

    faiss.omp_set_num_threads(1)  # one CPU per task
    return build_shards_here(template, [(vectors, ids)])[0]


@dataclasses.dataclass
class ModelEncoder:
    """What a worker needs to encode titles as a text retriever does: its model, run by
    :func:`encode_texts` (for CPU workers as a :class:`~ecomrec.encoders.PortableEncoder`).

    The encoder protocol of :func:`encode_titles_on_ray`: a picklable object whose
    ``load(device)`` returns a function from a list of texts to float32 [n, d] vectors.
    """

    model: Any
    max_tokens: int
    batch_size: int

    @classmethod
    def of(cls, retriever: Any, device: str) -> ModelEncoder:
        """The encoder of ``retriever`` (a :class:`~ecomrec.retrieval.BiEncoderRetriever`) for workers on ``device``."""
        model = retriever.model_ if retriever.device_ == "cpu" else copy.deepcopy(retriever.model_).to("cpu")  # any worker can load it
        if device == "cpu":
            model = PortableEncoder(model)
        return cls(model, retriever.config.item_max_tokens, retriever.config.encode_batch_size)

    def load(self, device: str) -> Callable[[list[str]], np.ndarray]:
        model = self.model if isinstance(self.model, PortableEncoder) else traced_for_inference(self.model.to(device), device)
        return lambda texts: encode_texts(model, texts, self.max_tokens, device, self.batch_size)


def worker_device(ray: Any) -> str:
    """``cuda`` when this machine and the cluster have GPUs (one per worker then), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() and ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


class TitleEncoder:
    """A Ray Data actor: loads the encoder once, then turns batches of titles into vectors (and
    with a store, writes each batch — one whole store partition — into it)."""

    def __init__(self, encoder_ref: list[Any], device: str, store: EmbeddingStore | None = None) -> None:
        import ray
        import torch

        torch.set_num_threads(1)  # one CPU per actor: more threads only fight the other actors
        self.encode = ray.get(encoder_ref[0]).load(device)
        self.store = store

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import os
        import resource

        start = time.perf_counter()
        vectors = np.asarray(self.encode([str(t) for t in batch["text"]]), dtype=np.float32)
        n = len(vectors)
        out = {name: column for name, column in batch.items() if name != "text"}
        if self.store is not None:
            self.store.put_partition(int(batch["partition"][0]), batch["item_id"].tolist(), batch["text_hash"].tolist(), vectors)
        else:
            out["vector"] = vectors  # [n, d]: one tensor column, no per-row objects
        busy = (time.perf_counter() - start) / max(n, 1)  # per title: sums per worker
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        return out | {"worker": np.full(n, os.getpid()), "peak_mb": np.full(n, peak_mb), "busy_seconds": np.full(n, busy)}


def encode_titles_on_ray(titles: pd.DataFrame, encoder: Any, *, workers: int = 2, address: str | None = None,
                         batch_size: int = 512,
                         store: EmbeddingStore | None = None) -> tuple[pd.DataFrame, np.ndarray | None, dict[str, Any]]:
    """Encode ``titles`` (a ``text`` column and any key columns) on Ray: ``workers`` actors of one
    CPU each (one GPU each where the cluster has them), each loading ``encoder`` once (see
    :class:`ModelEncoder`); ``batch_size`` titles per Ray batch.

    Returns the key columns (rows in no particular order), float32 [n, d] vectors of those rows,
    and counts and seconds. With ``store`` (and ``item_id``, ``text_hash`` key columns) each batch
    is one store partition, the workers write the vectors into that
    :class:`~ecomrec.index.EmbeddingStore` themselves, and no vectors come back (None)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if store is not None and not {"item_id", "text_hash"} <= set(titles.columns):
        raise ValueError("writing a store needs item_id and text_hash columns")
    report: dict[str, Any] = {"encoded": int(len(titles)), "workers": workers}
    if not len(titles):
        return titles.drop(columns=["text"]), None, report | {"seconds": 0.0}
    start = time.perf_counter()
    if store is not None:
        titles = titles.assign(partition=store.partition_of(titles["item_id"].tolist()))
        blocks = [group for _, group in titles.groupby("partition", sort=True)]
    else:
        count = max(1, min(-(-len(titles) // batch_size), 4 * workers))  # enough blocks to keep every actor busy
        # Titles by length, dealt round-robin: blocks of like cost, batches of like length (little padding).
        order = np.argsort(titles["text"].str.len().to_numpy(), kind="stable")
        blocks = [titles.iloc[order[b::count]] for b in range(count)]
    with ray_session(address, workers) as ray:
        gpus = int(worker_device(ray) == "cuda")
        dataset = ray.data.from_pandas(blocks)
        started = time.perf_counter()
        with warnings.catch_warnings():
            # Ray Data warns on the keyword form of an actor's restarts, its only form yet.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            encoded = dataset.map_batches(
                TitleEncoder, fn_constructor_kwargs={"encoder_ref": [ray.put(encoder)], "device": "cuda" if gpus else "cpu", "store": store},
                batch_format="numpy", batch_size=None if store is not None else batch_size,
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0 if gpus else 1, num_gpus=gpus,
                max_restarts=RETRIES, max_task_retries=RETRIES,
            )
        parts = list(encoded.iter_batches(batch_size=None, batch_format="numpy"))
        encoding = time.perf_counter() - started
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    per_worker = pd.DataFrame({k: columns.pop(k) for k in ("worker", "peak_mb", "busy_seconds")}).groupby("worker").agg(
        peak_mb=("peak_mb", "max"), busy=("busy_seconds", "sum"), titles=("busy_seconds", "size"))
    vectors = columns.pop("vector", None)
    report |= {"seconds": time.perf_counter() - start, "encoding_seconds": encoding,
               "titles_per_second": len(titles) / max(encoding, 1e-9), "worker_peak_mb": sorted(per_worker["peak_mb"].round(1).tolist()),
               "worker_busy_seconds": sorted(per_worker["busy"].round(2).tolist()),
               "titles_per_busy_second": float((per_worker["titles"] / per_worker["busy"]).mean())}
    if store is not None:
        report["store_partitions_written"] = len(blocks)
    return pd.DataFrame(columns), vectors, report


def encode_on_ray(retriever: Any, texts: Sequence[str], *, workers: int = 2, address: str | None = None,
                  batch_size: int = 512) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Encode on Ray, each once, the distinct titles among ``texts`` that ``retriever`` (a
    :class:`~ecomrec.retrieval.BiEncoderRetriever`) holds no vector for. Returns title → vector
    (what ``retriever.with_catalog(..., encoded=)`` takes) and counts and seconds."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    missing = retriever.titles_missing(texts)
    if not missing:
        return {}, {"titles": len(texts), "encoded": 0, "workers": workers, "seconds": 0.0}
    hashes = text_hashes(missing)
    frame = pd.DataFrame({"text_hash": hashes, "text": missing})
    with ray_session(address, workers) as ray:
        encoder = ModelEncoder.of(retriever, worker_device(ray))
        keys, vectors, report = encode_titles_on_ray(frame, encoder, workers=workers, address=address, batch_size=batch_size)
    title_of = dict(zip(hashes, missing))
    assert vectors is not None
    return {title_of[h]: v for h, v in zip(keys["text_hash"].astype(str), vectors)}, {"titles": len(texts), **report}
