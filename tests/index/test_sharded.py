"""Sharded indexes: shards that share one trained structure search exactly like one index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from ecomrec.config import IndexConfig
from ecomrec.index import ShardedIndex, VectorIndex, shard_of

RNG = np.random.default_rng(0)
VECTORS = RNG.normal(size=(3000, 32)).astype(np.float32)
IDS = RNG.permutation(20_000)[:3000].astype(np.int64)  # sparse, unordered ids
QUERIES = RNG.normal(size=(40, 32)).astype(np.float32)
CONFIGS = {
    "flat": IndexConfig(kind="flat", device="cpu"),
    "ivf_flat": IndexConfig(kind="ivf_flat", nlist=32, nprobe=4, device="cpu"),
    "ivf_pq": IndexConfig(kind="ivf_pq", nlist=32, nprobe=4, pq_m=8, pq_bits=4, device="cpu"),
    "ivf_sq8": IndexConfig(kind="ivf_sq8", nlist=32, nprobe=4, device="cpu"),
    "ivf_pq+refine": IndexConfig(kind="ivf_pq", nlist=32, nprobe=4, pq_m=8, pq_bits=4, refine=4, device="cpu"),
}


def _filters() -> list[dict]:
    per_query = sp.csr_matrix((np.ones(40 * 5), (np.repeat(np.arange(40), 5), RNG.choice(IDS, 40 * 5))), shape=(40, IDS.max() + 1))
    return [{}, {"exclude": IDS[:500]}, {"allow": IDS[::3]}, {"exclude": per_query}, {"allow": IDS[:40]}]


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("shards", [1, 2, 4])
def test_shards_sharing_one_training_return_the_single_index_results(kind: str, shards: int) -> None:
    single = VectorIndex(CONFIGS[kind]).build(VECTORS, IDS)
    sharded = ShardedIndex(CONFIGS[kind], shards=shards).build(VECTORS, IDS)
    assert sharded.n_items == 3000 and np.array_equal(sharded.item_ids, np.sort(IDS))
    assert sum(s.n_items for s in sharded.shards_) == 3000 and len(sharded.shards_) == shards
    for filters in _filters():
        expected, got = single.search(QUERIES, 10, **filters), sharded.search(QUERIES, 10, **filters)
        assert (got.item_ids >= 0).all()  # exactly k whenever k qualify
        if CONFIGS[kind].refine:  # each shard re-scores its own shortlist: a superset of one index's
            assert (got.scores >= expected.scores - 1e-6).all(), list(filters)
            continue
        np.testing.assert_array_equal(got.item_ids, expected.item_ids, err_msg=str(list(filters)))
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-5)


def test_shards_trained_apart_return_other_items() -> None:
    """The negative control: the same partition, but every shard clusters its own items."""
    config = CONFIGS["ivf_flat"]
    single = VectorIndex(config).build(VECTORS, IDS)
    part = shard_of(IDS, 4)
    apart = ShardedIndex.from_shards([VectorIndex(config).build(VECTORS[part == s], IDS[part == s]) for s in range(4)])
    shared = ShardedIndex(config, shards=4).build(VECTORS, IDS)
    expected = single.search(QUERIES, 10).item_ids
    assert np.array_equal(shared.search(QUERIES, 10).item_ids, expected)
    same_rows = (apart.search(QUERIES, 10).item_ids == expected).all(axis=1).mean()
    assert same_rows < 0.5


def test_updates_go_to_each_items_shard_and_match_one_index() -> None:
    config = CONFIGS["ivf_flat"]
    single, sharded = VectorIndex(config).build(VECTORS, IDS), ShardedIndex(config, shards=3).build(VECTORS, IDS)
    gone, new_ids = IDS[100:400], np.arange(30_000, 30_050)
    new = RNG.normal(size=(50, 32)).astype(np.float32)
    for index in (single, sharded):
        assert index.remove(gone) == 300
        index.add(new, new_ids)
    np.testing.assert_array_equal(sharded.search(QUERIES, 20).item_ids, single.search(QUERIES, 20).item_ids)
    for s, shard in enumerate(sharded.shards_):
        assert (shard_of(shard.item_ids, 3) == s).all()
    with pytest.raises(ValueError, match="already"):
        sharded.add(new[:1], new_ids[:1])
    with pytest.raises(Exception, match="not in the index"):
        sharded.remove(gone[:2])
    assert sharded.remove(gone[:2], on_unknown="drop") == 0


def test_save_and_load_keep_every_shard_under_the_manifests_checksums(tmp_path) -> None:
    sharded = ShardedIndex(CONFIGS["ivf_pq"], shards=3).build(VECTORS, IDS)
    sharded.save(tmp_path / "index", facts={"model": "m1"})
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert {f"shard-00{s}/index.faiss" for s in range(3)} <= set(manifest["files"])
    loaded = ShardedIndex.load(tmp_path / "index", expect={"model": "m1"})
    np.testing.assert_array_equal(loaded.search(QUERIES, 10).item_ids, sharded.search(QUERIES, 10).item_ids)
    with pytest.raises(Exception, match="model"):
        ShardedIndex.load(tmp_path / "index", expect={"model": "m2"})


def test_shards_are_a_fixed_balanced_hash_of_the_id() -> None:
    assert shard_of([0, 1, 2, 3, 12345, 10**12], 4).tolist() == [0, 1, 2, 0, 3, 0]  # the same on every machine
    for ids in (np.arange(100_000), np.arange(0, 400_000, 4)):  # sequential or strided ids spread evenly
        counts = np.bincount(shard_of(ids, 4).astype(int), minlength=4)
        assert counts.min() > 0.98 * len(ids) / 4


def test_misplaced_or_mismatched_shards_are_refused() -> None:
    config = CONFIGS["flat"]
    with pytest.raises(ValueError, match="other shards"):
        ShardedIndex.from_shards([VectorIndex(config).build(VECTORS[:10], IDS[:10]), VectorIndex(config).build(VECTORS[10:20], IDS[10:20])])
    with pytest.raises(ValueError, match="shards must"):
        ShardedIndex(config, shards=0)
    with pytest.raises(ValueError, match="empty index"):
        VectorIndex(config).build(VECTORS[:5], IDS[:5], trained=VectorIndex(config).build(VECTORS[:5], IDS[:5]))
