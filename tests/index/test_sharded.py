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


def _changed(shards: int, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """VECTORS with the items at ``positions`` given new vectors, and the shards they fall in."""
    vectors = VECTORS.copy()
    vectors[positions] = np.random.default_rng(9).normal(size=(len(positions), 32))
    return vectors, np.unique(shard_of(IDS[positions], shards)).astype(int)


def _shard_files(folder) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name in ("index.faiss", "refine.faiss", "ids.npz")}


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq+refine"])
def test_a_rebuild_reuses_the_training_and_every_unchanged_shard_byte_for_byte(kind: str, tmp_path) -> None:
    config = CONFIGS[kind]
    first = ShardedIndex(config, shards=8).build(VECTORS, IDS)
    first.save(tmp_path / "before")
    vectors, touched = _changed(8, [5, 700, 2100])  # 0.1 % of the items changed: at most 3 of 8 shards
    second = ShardedIndex(config, shards=8).build(vectors, IDS, previous=first)
    assert second.template_ is first.template_
    assert second.reused_ == [s for s in range(8) if s not in touched] and len(second.reused_) >= 5
    second.save(tmp_path / "after")
    before, after = _shard_files(tmp_path / "before"), _shard_files(tmp_path / "after")
    for s in range(8):
        files = [name for name in before if name.startswith(f"shard-{s:03d}/")]
        if s in touched:  # new vectors under the same ids
            assert before[f"shard-{s:03d}/index.faiss"] != after[f"shard-{s:03d}/index.faiss"], s
        else:
            assert files and all(before[n] == after[n] for n in files), s
    # the same answers as one index over the new vectors built from the same training
    one = VectorIndex(config).build(vectors, IDS, trained=first.template_)
    expected, got = one.search(QUERIES, 10), second.search(QUERIES, 10)
    if config.refine:
        assert (got.scores >= expected.scores - 1e-6).all()
    else:
        np.testing.assert_array_equal(got.item_ids, expected.item_ids)


def test_a_rebuild_leaves_the_index_it_came_from_as_it_was() -> None:
    config = CONFIGS["ivf_flat"]
    first = ShardedIndex(config, shards=4).build(VECTORS, IDS)
    before = first.search(QUERIES, 10)
    second = ShardedIndex(config, shards=4).build(VECTORS, IDS, previous=first)
    assert second.reused_ == [0, 1, 2, 3]
    second.set_search(nprobe=16)
    second.add(RNG.normal(size=(20, 32)).astype(np.float32) * 10, np.arange(40_000, 40_020))
    second.remove(IDS[:50])
    after = first.search(QUERIES, 10)
    np.testing.assert_array_equal(after.item_ids, before.item_ids)
    assert first.nprobe_ == 4 and first.n_items == 3000
    assert second.digests_ == [None] * 4  # changed shards are never taken for unchanged ones


def test_a_rebuild_with_another_config_or_shard_count_trains_again() -> None:
    first = ShardedIndex(CONFIGS["ivf_flat"], shards=4).build(VECTORS, IDS)
    for config, shards in ((CONFIGS["ivf_flat"].replace(nlist=16), 4), (CONFIGS["ivf_flat"], 2)):
        again = ShardedIndex(config, shards=shards).build(VECTORS, IDS, previous=first)
        assert again.reused_ == [] and again.template_ is not first.template_


def test_a_loaded_index_keeps_its_training_for_the_next_rebuild(tmp_path) -> None:
    from ecomrec.index import load_index

    first = ShardedIndex(CONFIGS["ivf_sq8"], shards=4).build(VECTORS, IDS)
    first.save(tmp_path / "index", facts={"model": "m1"})
    loaded = load_index(tmp_path / "index", expect={"model": "m1"})
    assert isinstance(loaded, ShardedIndex) and loaded.digests_ == first.digests_
    vectors, touched = _changed(4, [3])
    again = ShardedIndex(CONFIGS["ivf_sq8"], shards=4).build(vectors, IDS, previous=loaded)
    assert again.reused_ == [s for s in range(4) if s not in touched] and len(again.reused_) == 3
    single = VectorIndex(CONFIGS["ivf_sq8"]).build(VECTORS, IDS)
    single.save(tmp_path / "single")
    assert isinstance(load_index(tmp_path / "single"), VectorIndex)


def test_shard_builds_go_to_the_builder_in_force_and_only_the_changed_ones() -> None:
    from ecomrec.index import shard_builds
    from ecomrec.index.sharded import build_shards_here

    calls: list[int] = []

    def counting(template, parts):  # type: ignore[no-untyped-def]
        calls.append(len(parts))
        return build_shards_here(template, parts)

    with shard_builds(counting):
        first = ShardedIndex(CONFIGS["ivf_flat"], shards=4).build(VECTORS, IDS)
        vectors, touched = _changed(4, [11])
        ShardedIndex(CONFIGS["ivf_flat"], shards=4).build(vectors, IDS, previous=first)
    assert calls == [4, len(touched)] == [4, 1]
    ShardedIndex(CONFIGS["ivf_flat"], shards=2).build(VECTORS, IDS)  # outside the block: built here
    assert len(calls) == 2


@pytest.mark.parametrize("kind", list(CONFIGS) + ["hnsw"])
def test_an_index_travels_between_processes_as_it_is(kind: str) -> None:
    """Pickling (how Ray moves an index between workers) keeps every answer; FAISS's own
    serialization inside, never a storage format."""
    import pickle

    config = CONFIGS.get(kind, IndexConfig(kind="hnsw", device="cpu"))
    index = VectorIndex(config).build(VECTORS, IDS)
    index.remove(IDS[:7])
    copy = pickle.loads(pickle.dumps(index))
    for filters in _filters()[:3]:
        np.testing.assert_array_equal(copy.search(QUERIES, 10, **filters).item_ids, index.search(QUERIES, 10, **filters).item_ids)
    assert copy.n_items == index.n_items and copy.kind_ == index.kind_
