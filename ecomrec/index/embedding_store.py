"""Item embeddings on disk as Parquet: the contract between encoding and index building.

A store is a folder of ``part-NNNNN.parquet`` files, one per partition (a hash of the item id),
with the columns ``item_id`` (string), ``text_hash`` (string: ``encoders.text_hashes`` of the
encoded title) and ``vector`` (fixed-size list of float32), and the model fingerprint, dimension
and partition count in the schema metadata. A rebuild encodes only what :meth:`EmbeddingStore.missing`
names; :meth:`EmbeddingStore.put` rewrites just the touched partitions, each atomically (temporary
file, then rename).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecomrec.encoders import text_hashes
from ecomrec.exceptions import ArtifactError

MODEL_KEY = b"ecomrec.model"
DIM_KEY = b"ecomrec.dim"
PARTITIONS_KEY = b"ecomrec.partitions"


class EmbeddingStore:
    """Vectors of one model, keyed by (item id, title digest), in ``partitions`` Parquet files; reading a
    file of another model, dimension or partition count raises :class:`ArtifactError`."""

    def __init__(self, folder: str | Path, *, model: str, dim: int, partitions: int = 16) -> None:
        if dim <= 0 or partitions <= 0:
            raise ValueError(f"dim and partitions must be positive, got {dim} and {partitions}")
        self.folder, self.model, self.dim, self.partitions = Path(folder), str(model), int(dim), int(partitions)

    def _path(self, partition: int) -> Path:
        return self.folder / f"part-{partition:05d}.parquet"

    def partition_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """int [n]: each item's partition (a fixed hash of the id string)."""
        from ecomrec.index.sharded import shard_of

        keys = np.asarray([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") >> 1
                           for i in item_ids], dtype=np.int64)
        return shard_of(keys, self.partitions).astype(np.int64)

    def read_partition(self, partition: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids, title digests, float32 [n, dim] vectors) of one partition (empty if absent)."""
        import pyarrow.parquet as pq

        path = self._path(partition)
        if not path.is_file():
            return np.zeros(0, object), np.zeros(0, object), np.zeros((0, self.dim), np.float32)
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if meta.get(MODEL_KEY, b"").decode() != self.model or int(meta.get(DIM_KEY, b"0")) != self.dim:
            raise ArtifactError(f"{path} holds vectors of model {meta.get(MODEL_KEY, b'?').decode()} "
                                f"(dim {meta.get(DIM_KEY, b'?').decode()}), not {self.model} (dim {self.dim}): "
                                "give each model its own store folder")
        if int(meta.get(PARTITIONS_KEY, b"0")) != self.partitions:
            raise ArtifactError(f"{path} was written with {meta.get(PARTITIONS_KEY, b'?').decode()} partitions, not {self.partitions}")
        flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
        return (np.asarray(table.column("item_id").to_pylist(), dtype=object), np.asarray(table.column("text_hash").to_pylist(), dtype=object),
                flat.astype(np.float32).reshape(-1, self.dim))

    def read_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored (item id, title digest, vector), partition by partition."""
        parts = [self.read_partition(p) for p in range(self.partitions)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), np.vstack([p[2] for p in parts])

    def get(self, item_ids: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, dim] vectors, bool [n] found): the stored vector of each (item, title);
        rows not found are zeros."""
        ids, digests = [str(i) for i in item_ids], text_hashes(list(texts)).astype(object)
        out, found = np.zeros((len(ids), self.dim), np.float32), np.zeros(len(ids), bool)
        parts = self.partition_of(ids)
        for partition in np.unique(parts):
            stored_ids, stored_digests, vectors = self.read_partition(int(partition))
            row_of = {(i, d): r for r, (i, d) in enumerate(zip(stored_ids, stored_digests))}
            for row in np.flatnonzero(parts == partition):
                if (hit := row_of.get((ids[row], digests[row]))) is not None:
                    out[row], found[row] = vectors[hit], True
        return out, found

    def missing(self, item_ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Positions of the (item, title) pairs without a vector for this model: what to encode."""
        return np.flatnonzero(~self.get(item_ids, texts)[1])

    def put(self, item_ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> list[int]:
        """Store vectors (replacing an item's earlier one); returns the partitions rewritten."""
        ids, digests = [str(i) for i in item_ids], text_hashes(list(texts)).astype(object)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must be [{len(ids)}, {self.dim}], got {vectors.shape}")
        if len(set(ids)) != len(ids):
            raise ValueError("item_ids must be distinct")
        parts = self.partition_of(ids)
        written = [int(p) for p in np.unique(parts)]
        for partition in written:
            rows = np.flatnonzero(parts == partition)
            self._merge(partition, np.asarray([ids[r] for r in rows], dtype=object), digests[rows], vectors[rows])
        return written

    def put_partition(self, partition: int, item_ids: Sequence[str], text_hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store the vectors of items that all fall in ``partition``, keyed by their titles'
        digests (``encoders.text_hashes``): what a worker that owns one partition writes."""
        ids = np.asarray([str(i) for i in item_ids], dtype=object)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if vectors.shape[1] != self.dim or len(text_hashes) != len(ids):
            raise ValueError(f"expected [{len(ids)}, {self.dim}] vectors and {len(ids)} digests")
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("item_ids must be distinct")
        elsewhere = ids[self.partition_of(ids.tolist()) != partition]
        if len(elsewhere):
            raise ValueError(f"items of other partitions given for partition {partition}, e.g. {elsewhere[:3].tolist()}")
        self._merge(int(partition), ids, np.asarray(text_hashes, dtype=object), vectors)

    def _merge(self, partition: int, ids: np.ndarray, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Rewrite ``partition`` with these rows replacing the same items' earlier ones."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        old_ids, old_digests, old_vectors = self.read_partition(partition)
        incoming = set(ids.tolist())  # np.isin compares object arrays element by element: O(rows x changed)
        keep = np.fromiter((i not in incoming for i in old_ids.tolist()), dtype=bool, count=len(old_ids))
        ids, digests = np.concatenate([old_ids[keep], ids]), np.concatenate([old_digests[keep], digests])
        vectors = np.vstack([old_vectors[keep], vectors])
        order = np.argsort(ids.astype(str), kind="stable")  # the same content, the same bytes
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors[order].reshape(-1), pa.float32()), self.dim)
        table = pa.table({"item_id": pa.array(ids[order].tolist(), pa.string()),
                          "text_hash": pa.array(digests[order].tolist(), pa.string()), "vector": column})
        table = table.replace_schema_metadata({MODEL_KEY: self.model.encode(), DIM_KEY: str(self.dim).encode(),
                                               PARTITIONS_KEY: str(self.partitions).encode()})
        tmp = self._path(partition).with_name(f".tmp-{uuid.uuid4().hex[:8]}-{self._path(partition).name}")
        pq.write_table(table, tmp)
        os.replace(tmp, self._path(partition))
