"""VectorIndex: exact answers, ANN quality floors, filtering, updates, persistence, GPU fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ecomrec.config import IndexConfig
from ecomrec.exceptions import ArtifactError, NotFittedError, UnknownIdError
from ecomrec.index import VectorIndex
from ecomrec.index import vector_index as module

KINDS = ("flat", "ivf_flat", "hnsw", "ivf_pq", "ivf_sq8", "ivf_pq+refine")


def clustered(n: int, d: int, rng: np.random.Generator, clusters: int = 200) -> np.ndarray:
    """Unit vectors around random centres, like sentence embeddings: neighbours are meaningful."""
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return clustered(20_000, 32, rng), clustered(100, 32, rng)


def _config(name: str) -> IndexConfig:
    """A kind's test config; ``+refine``: exact re-scoring of a 4× shortlist."""
    kind, _, refine = name.partition("+")
    return IndexConfig(kind=kind, refine=4 if refine else 0, **({"pq_bits": 6} if kind == "ivf_pq" else {}))


@pytest.fixture(scope="module", params=KINDS)
def built(request, data) -> VectorIndex:
    vectors, _ = data
    return VectorIndex(_config(request.param)).build(vectors)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def test_flat_is_exact(data) -> None:
    vectors, queries = data
    index = VectorIndex(kind="flat").build(vectors)
    result = index.search(queries, k=20)
    np.testing.assert_array_equal(result.item_ids, brute_force(vectors, queries, 20))
    expected = np.take_along_axis(queries @ vectors.T, result.item_ids, axis=1)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4)


@pytest.mark.parametrize(("kind", "floor"), [("ivf_flat", 0.9), ("hnsw", 0.95), ("ivf_pq", 0.5), ("ivf_sq8", 0.9)])
def test_approximate_recall_floor_at_default_settings(data, kind: str, floor: float) -> None:
    vectors, queries = data
    extra = {"pq_bits": 6, "pq_m": 16} if kind == "ivf_pq" else {}  # 16-byte codes for 128-byte vectors
    index = VectorIndex(kind=kind, **extra).build(vectors)
    truth = brute_force(vectors, queries, 10)
    assert recall(index.search(queries, k=10).item_ids, truth) >= floor


def test_refine_rescores_the_pq_shortlist_exactly(data) -> None:
    """16-byte codes lose neighbours; re-scoring a 10× shortlist from the float16 copies brings
    the recall to IVF-Flat's (the same lists probed) and the scores to the exact ones."""
    vectors, queries = data
    codes = IndexConfig(kind="ivf_pq", pq_bits=6, pq_m=16)
    plain, refined = VectorIndex(codes).build(vectors), VectorIndex(codes.replace(refine=10)).build(vectors)
    ivf_flat = VectorIndex(kind="ivf_flat").build(vectors)
    truth = brute_force(vectors, queries, 10)
    found = refined.search(queries, k=10)
    assert recall(found.item_ids, truth) >= recall(ivf_flat.search(queries, k=10).item_ids, truth) - 0.02
    assert recall(found.item_ids, truth) > recall(plain.search(queries, k=10).item_ids, truth) + 0.1
    exact = np.take_along_axis(queries @ vectors.T, found.item_ids, axis=1)
    np.testing.assert_allclose(found.scores, exact, atol=2e-3)  # float16 copies
    assert (np.diff(found.scores, axis=1) <= 0).all()


def test_auto_kind_by_catalog_size() -> None:
    rng = np.random.default_rng(1)
    small = VectorIndex(IndexConfig(exact_max_floats=8000)).build(rng.standard_normal((999, 8)))
    large = VectorIndex(IndexConfig(exact_max_floats=8000, auto_kind="hnsw")).build(rng.standard_normal((1000, 8)))
    assert (small.kind_, large.kind_) == ("flat", "hnsw")


def test_exactly_k_with_filters(built, data) -> None:
    vectors, queries = data
    q = queries[:20]
    truth = brute_force(vectors, q, 50)
    # per-query exclusion of each query's own 50 best items forces deep results
    per_row = sp.csr_matrix((np.ones(truth.size), truth.reshape(-1), np.arange(0, truth.size + 1, 50)), shape=(20, len(vectors)))
    result = built.search(q, k=10, exclude=per_row)
    assert (result.item_ids >= 0).all()
    for row, ids in enumerate(result.item_ids):
        assert not np.isin(ids, truth[row]).any() and len(set(ids)) == 10
    as_lists = built.search(q, k=10, exclude=[t for t in truth])
    np.testing.assert_array_equal(as_lists.item_ids, result.item_ids)
    allowed = np.arange(0, len(vectors), 97)  # a small allow-list: 207 items
    only = built.search(q, k=10, allow=allowed, exclude=allowed[:3])
    assert np.isin(only.item_ids, allowed[3:]).all()


def test_k_beyond_qualifying_items_pads(built) -> None:
    few = built.search(np.ones((2, 32), np.float32), k=5, allow=[3, 7, 11])
    assert (np.sort(few.item_ids[:, :3], axis=1) == [3, 7, 11]).all()
    assert (few.item_ids[:, 3:] == -1).all() and np.isneginf(few.scores[:, 3:]).all()
    assert (np.diff(few.scores[:, :3], axis=1) <= 0).all()


def test_bad_input(built) -> None:
    with pytest.raises(ValueError, match="dimension"):
        built.search(np.zeros((1, 31), np.float32), k=3)
    with pytest.raises(ValueError, match="NaN"):
        built.search(np.full((1, 32), np.nan, np.float32), k=3)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be"):
            built.search(np.zeros((1, 32), np.float32), k=k)
    assert built.search(np.zeros((0, 32), np.float32), k=4).item_ids.shape == (0, 4)
    with pytest.raises(ValueError, match="rows for"):
        built.search(np.zeros((2, 32), np.float32), k=3, exclude=[[1], [2], [3]])


def test_build_refuses_bad_vectors_and_ids() -> None:
    with pytest.raises(ValueError, match="empty catalog"):
        VectorIndex(kind="flat").build(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="infinite"):
        VectorIndex(kind="flat").build(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="2-D"):
        VectorIndex(kind="flat").build(np.zeros(4))
    with pytest.raises(ValueError, match="distinct"):
        VectorIndex(kind="flat").build(np.eye(2), item_ids=[5, 5])
    with pytest.raises(ValueError, match=">= 0"):
        VectorIndex(kind="flat").build(np.eye(2), item_ids=[-1, 5])
    with pytest.raises(ValueError, match="needs >="):
        VectorIndex(kind="ivf_pq").build(np.random.default_rng(0).standard_normal((100, 16)))
    with pytest.raises(NotFittedError):
        VectorIndex().search(np.zeros((1, 4)), k=1)
    with pytest.raises(TypeError, match="not both"):
        VectorIndex(IndexConfig(), kind="flat")


@pytest.mark.parametrize("kind", KINDS)
def test_add_and_remove_without_rebuild(kind: str, data) -> None:
    vectors, queries = data
    index = VectorIndex(_config(kind)).build(vectors[:15_000])
    # a new item equal to 10 x the query is everyone's best match
    index.add(queries[:1] * 10, [50_000])
    assert index.search(queries[:1], k=1).item_ids[0, 0] == 50_000 and index.n_items == 15_001
    with pytest.raises(ValueError, match="already in the index"):
        index.add(queries[:1], [50_000])
    top = index.search(queries[:5], k=5).item_ids
    assert index.remove(top[:, 0]) == len(set(top[:, 0]))
    assert not np.isin(index.search(queries[:5], k=20).item_ids, top[:, 0]).any()
    with pytest.raises(UnknownIdError):
        index.remove([999_999])
    assert index.remove([999_999], on_unknown="drop") == 0


def test_hnsw_tombstones_compact_and_readd(data) -> None:
    vectors, queries = data
    index = VectorIndex(kind="hnsw").build(vectors[:2000])
    index.remove(np.arange(100))
    assert len(index._tombstones) == 100 and index._cpu.ntotal == 2000
    assert not np.isin(index.search(queries, k=30).item_ids, np.arange(100)).any()
    index.add(vectors[:1], [0])  # re-adding a tombstoned id compacts first
    assert len(index._tombstones) == 0 and index._cpu.ntotal == 1901 and index.n_items == 1901
    index.remove(np.arange(100, 1000))  # > 25 % tombstones: compacted automatically
    assert index._cpu.ntotal == index.n_items == 1001 and len(index._tombstones) == 0


def test_save_load_identical_and_checked(built, data, tmp_path: Path) -> None:
    vectors, queries = data
    folder = built.save(tmp_path / "idx", facts={"model": "abc"})
    loaded = VectorIndex.load(folder, expect={"model": "abc", "dim": 32})
    a, b = built.search(queries, k=10), loaded.search(queries, k=10)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert loaded.kind_ == built.kind_ and loaded.n_items == built.n_items
    assert (loaded._refine is None) == (built._refine is None)
    with pytest.raises(ArtifactError, match="another model"):
        VectorIndex.load(folder, expect={"model": "xyz"})
    with pytest.raises(ArtifactError, match="another model"):
        VectorIndex.load(folder, expect={"dim": 64})
    index_file = folder.resolve() / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        VectorIndex.load(folder)


def test_versions_swap_atomically_and_old_readers_stay_pinned(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    first = VectorIndex(kind="flat").build(rng.standard_normal((50, 4)))
    second = VectorIndex(kind="flat").build(rng.standard_normal((60, 4)))
    path = tmp_path / "indexes" / "catalog"
    first.save(path)
    pinned = path.resolve()  # a reader that opened version 1
    second.save(path)
    assert path.is_symlink() and path.resolve() != pinned
    assert VectorIndex.load(path).n_items == 60
    assert VectorIndex.load(pinned).n_items == 50  # the previous version is kept for readers
    third = VectorIndex(kind="flat").build(rng.standard_normal((70, 4)))
    third.save(path)
    versions = sorted(p.name for p in (tmp_path / "indexes" / ".catalog.versions").iterdir() if not p.name.startswith("."))
    assert len(versions) == 2 and not pinned.exists()  # only the current and previous remain
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == [".catalog.versions", "catalog"]


def test_gpu_clone_failure_falls_back_to_cpu(monkeypatch, caplog, data) -> None:
    vectors, queries = data
    monkeypatch.setattr(module, "faiss_gpu_count", lambda: 1)

    def broken(index):
        raise RuntimeError("no CUDA kernels for this index")

    monkeypatch.setattr(module._faiss(), "index_cpu_to_all_gpus", broken)
    with caplog.at_level(logging.WARNING):
        index = VectorIndex(kind="flat", device="cuda").build(vectors[:500])
    assert index.device == "cpu" and "searching on the CPU" in caplog.text
    assert index.search(queries[:2], k=3).item_ids.shape == (2, 3)


def test_gpu_path_routes_unfiltered_searches_to_the_clone(monkeypatch, data) -> None:
    """With a stand-in GPU clone: plain and per-query-excluded searches go to it, selector searches to the CPU copy."""
    vectors, queries = data
    faiss = module._faiss()
    calls: list[str] = []

    class FakeGpuIndex:
        def __init__(self, cpu):
            self.inner = faiss.clone_index(cpu)

        def search(self, x, k):
            calls.append("gpu")
            return self.inner.search(x, k)

    monkeypatch.setattr(module, "faiss_gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", FakeGpuIndex)
    gpu = VectorIndex(kind="ivf_flat", device="cuda").build(vectors)
    cpu = VectorIndex(kind="ivf_flat", device="cpu").build(vectors)
    assert gpu.device == "cuda" and cpu.device == "cpu"
    for kwargs in ({}, {"exclude": [list(range(5))] * 10}, {"allow": np.arange(0, 20_000, 3)}):
        calls.clear()
        np.testing.assert_array_equal(gpu.search(queries[:10], k=10, **kwargs).item_ids, cpu.search(queries[:10], k=10, **kwargs).item_ids)
        assert calls == ([] if "allow" in kwargs else ["gpu"])


def test_set_search_moves_the_operating_point(data) -> None:
    vectors, queries = data
    index = VectorIndex(kind="ivf_flat").build(vectors)
    truth = brute_force(vectors, queries, 10)
    index.set_search(nprobe=1)
    low = recall(index.search(queries, k=10).item_ids, truth)
    index.set_search(nprobe=index.nlist_)  # every list: exhaustive
    assert recall(index.search(queries, k=10).item_ids, truth) == 1.0 > low
    with pytest.raises(ValueError, match="nprobe"):
        index.set_search(nprobe=index.nlist_ + 1)
    with pytest.raises(ValueError, match="ef_search"):
        index.set_search(ef_search=64)
    graph = VectorIndex(kind="hnsw").build(vectors[:3000])
    graph.set_search(ef_search=400)
    assert graph.ef_search_ == 400
    with pytest.raises(ValueError, match="nprobe"):
        graph.set_search(nprobe=4)
