"""The Parquet embedding store: what is stored comes back, only missing (item, title) pairs are
encoded, a change rewrites only its partitions, and plain Parquet readers read it."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.exceptions import ArtifactError
from ecomrec.index.embedding_store import EmbeddingStore

IDS = [f"sku-{n}" for n in range(200)]
TITLES = [f"product {n} in blue" for n in range(200)]
VECTORS = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)


@pytest.fixture()
def store(tmp_path) -> EmbeddingStore:
    out = EmbeddingStore(tmp_path / "embeddings", model="m1", dim=8, partitions=4)
    out.put(IDS, TITLES, VECTORS)
    return out


def test_stored_vectors_come_back_by_item_and_title(store) -> None:
    got, found = store.get(IDS[::-1], TITLES[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, VECTORS[::-1])
    titles = list(TITLES)
    titles[3], titles[150] = "product 3 in red", "a new title"
    assert store.missing(IDS + ["sku-new"], titles + ["brand new"]).tolist() == [3, 150, 200]  # the anti-join


def test_a_change_rewrites_only_its_partitions(store) -> None:
    before = {p.name: p.read_bytes() for p in store.folder.glob("*.parquet")}
    assert len(before) == 4
    changed = [IDS[3], IDS[150]]
    written = store.put(changed, ["product 3 in red", "a new title"], np.ones((2, 8), np.float32))
    assert sorted(written) == sorted(set(store.partition_of(changed).tolist()))
    after = {p.name: p.read_bytes() for p in store.folder.glob("*.parquet")}
    untouched = [name for name in before if int(name[5:10]) not in written]
    assert untouched and all(after[name] == before[name] for name in untouched)
    got, found = store.get(changed, ["product 3 in red", "a new title"])
    assert found.all() and (got == 1).all()
    assert store.missing([IDS[3]], [TITLES[3]]).tolist() == [0]  # the old title's vector was replaced
    assert not list(store.folder.glob(".tmp-*"))


def test_partitions_are_plain_parquet_with_the_model_in_the_metadata(store) -> None:
    import pyarrow.dataset as ds

    table = ds.dataset(store.folder, format="parquet").to_table()
    assert table.num_rows == 200 and table.schema.field("vector").type.list_size == 8
    assert table.schema.metadata[b"ecomrec.model"] == b"m1"
    rows = {item: vector for item, vector in zip(table.column("item_id").to_pylist(), table.column("vector").to_pylist())}
    np.testing.assert_allclose(rows["sku-42"], VECTORS[42])


def test_another_model_or_bad_input_is_refused(store) -> None:
    with pytest.raises(ArtifactError, match="model m1"):
        EmbeddingStore(store.folder, model="m2", dim=8, partitions=4).get(IDS[:5], TITLES[:5])
    with pytest.raises(ArtifactError, match="partitions"):
        EmbeddingStore(store.folder, model="m1", dim=8, partitions=5).read_all()
    ids, digests, vectors = store.read_all()
    assert sorted(ids) == sorted(IDS) and vectors.shape == (200, 8)
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        store.put(IDS[:2], TITLES[:2], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="distinct"):
        store.put([IDS[0], IDS[0]], TITLES[:2], np.zeros((2, 8)))
