"""Rebuilds: ALS through its index equals exact scoring; a new index leaves the model it came from
as it was; swaps on disk are atomic; a rebuild process killed mid-write leaves the previous index
serving. (Swaps in memory are the engine's: tests/test_engine.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ecomrec.cli import main
from ecomrec.config import ALSConfig, IndexConfig
from ecomrec.data import IdMap
from ecomrec.data.synthetic import synthetic
from ecomrec.exceptions import ArtifactError, IndexRecallWarning
from ecomrec.index import validation
from ecomrec.index import VectorIndex
from ecomrec.retrieval import ALSRetriever
from tests.retrieval.test_contract import assert_same_ranking


@pytest.fixture(scope="module")
def model() -> ALSRetriever:
    data = synthetic(n_users=300, n_items=200, n_cold_items=10, seed=8)
    return ALSRetriever(ALSConfig(factors=16, iterations=10), show_progress=False).fit(data)


def test_index_path_equals_exact_scoring(model: ALSRetriever) -> None:
    users = np.arange(300)
    for kwargs in ({}, {"exclude": "seen"}, {"allow": np.arange(0, 200, 2)}):
        assert_same_ranking(model.candidates(users, k=100, **kwargs), model.candidates_exact(users, k=100, **kwargs))
    assert model.index_.kind_ == "flat" and model.index_.n_items == 190  # cold items are not indexed


def test_approximate_index_keeps_most_of_exact_top_k(model: ALSRetriever) -> None:
    approx = ALSRetriever(model.config.replace(index=IndexConfig(kind="hnsw")), show_progress=False)
    approx.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_") and k != "index_"})
    approx.index_ = approx.build_index()
    found = approx.candidates(np.arange(300), k=20).item_ids
    truth = model.candidates_exact(np.arange(300), k=20).item_ids
    assert np.mean([len(set(f) & set(t)) / 20 for f, t in zip(found, truth)]) > 0.95


def test_an_index_for_a_smaller_catalog_serves_a_copy_and_leaves_the_model_as_it_was(model: ALSRetriever) -> None:
    old = model.index_
    before = model.candidates(np.arange(300), k=50).item_ids
    delisted = np.arange(0, 100)
    new = model.build_index(items=np.arange(100, 200))
    smaller = model.replaced(index_=new)
    assert new.validated_recall_ >= 0.999 and model.index_ is old
    assert not np.isin(smaller.candidates(np.arange(300), k=50).item_ids, delisted).any()
    np.testing.assert_array_equal(model.candidates(np.arange(300), k=50).item_ids, before)
    smaller.verify_items(np.arange(100, 190))  # the warm listed items are held under their own factors
    with pytest.raises(ArtifactError, match="ALS index"):
        smaller.replaced(item_factors_=np.roll(model.item_factors_, 1, axis=0)).verify_items(np.arange(100, 110))


def test_failed_validation_raises_before_anything_is_returned(model: ALSRetriever, monkeypatch) -> None:
    def reject(*args, **kwargs):
        raise ArtifactError("new index holds 5 items, expected 100: not swapped in")

    monkeypatch.setattr(validation, "check_index", reject)
    with pytest.raises(ArtifactError, match="not swapped in"):
        model.build_index(items=np.arange(100, 200))


def test_an_index_short_of_recall_probes_more_then_searches_exactly(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4000, 16)).astype(np.float32)
    ids, queries = np.arange(4000), rng.normal(size=(50, 16)).astype(np.float32)
    config = IndexConfig(kind="ivf_flat", nlist=64, nprobe=1)
    with pytest.warns(IndexRecallWarning) as caught:
        probed = validation.build_checked(config, vectors, ids, queries)  # one list of 64 misses neighbours
    assert "probing 4 of 64 lists instead of 1" in str(caught[0].message) and "not swapped in" not in str(caught[0].message)
    assert probed.kind_ == "ivf_flat" and probed.nprobe_ > 1 and probed.validated_recall_ >= validation.MIN_APPROX_RECALL
    real = validation.recall_against_exact
    monkeypatch.setattr(validation, "recall_against_exact", lambda index, *a: real(index, *a) if index.kind_ == "flat" else 0.5)
    with pytest.warns(IndexRecallWarning) as caught:
        exact = validation.build_checked(config, vectors, ids, queries)
    assert exact.kind_ == "flat" and exact.validated_recall_ >= validation.MIN_EXACT_RECALL
    assert [str(w.message).split("; ")[1] for w in caught] == [
        "probing 4 of 64 lists instead of 1", "probing 16 of 64 lists instead of 4", "probing 64 of 64 lists instead of 16",
        "searching exactly instead",
    ]


def test_cli_rebuild_with_catalog(model: ALSRetriever, tmp_path: Path, capsys) -> None:
    model.save(tmp_path / "model")
    catalog = pd.DataFrame({"item_id": [f"i{n:05d}" for n in range(150, 200)] + ["brand-new-sku"]})
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    out = tmp_path / "indexes" / "als"
    code = main(["-q", "index", "rebuild", "--model", str(tmp_path / "model"), "--catalog", str(tmp_path / "catalog.csv"), "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "flat over 40 items" in printed and "11 catalog items without factors" in printed  # 190..199 cold + 1 unknown
    index = VectorIndex.load(out, expect={"model": model.model_hash})
    assert index.n_items == 40 and IdMap.load(out / "items.json") == model.items_
    code = main(["-q", "index", "rebuild", "--model", str(tmp_path / "nowhere"), "--output", str(out)])
    assert code == 3 and "not an ecomrec artifact" in capsys.readouterr().err  # exit 3: artifact problem


def _big_model(folder: Path, n_items: int = 400_000, dim: int = 64) -> ALSRetriever:
    """An ALS model artifact with many items (random factors; no fitting needed)."""
    rng = np.random.default_rng(0)
    model = ALSRetriever(ALSConfig(factors=dim, index=IndexConfig(kind="flat")), show_progress=False)
    model.user_factors_ = rng.standard_normal((300, dim)).astype(np.float32)
    model.item_factors_ = rng.standard_normal((n_items, dim)).astype(np.float32)
    model.item_known_ = np.ones(n_items, dtype=bool)
    model.user_items_ = sp.csr_matrix((300, n_items), dtype=np.float32)
    model.users_ = IdMap(f"u{n}" for n in range(300))
    model.items_ = IdMap(f"i{n}" for n in range(n_items))
    model.index_ = model.build_index()
    model.save(folder)
    return model


@pytest.mark.slow
def test_rebuild_process_killed_mid_write_leaves_previous_index_serving(tmp_path: Path) -> None:
    model = _big_model(tmp_path / "model")
    out = tmp_path / "indexes" / "als"
    first = model.build_index(items=np.arange(1000))  # the index in service: 1,000 items
    first.save(out, items=model.items_, facts={"model": model.model_hash})
    serving = out.resolve()
    queries = model.user_factors_[:5]
    before = VectorIndex.load(out).search(queries, k=10)

    versions = tmp_path / "indexes" / ".als.versions"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ecomrec.cli", "-q", "index", "rebuild", "--model", str(tmp_path / "model"), "--output", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list(versions.glob(".tmp-*")):  # the rebuild has started writing its new version
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "rebuild never started writing"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert out.resolve() == serving, "the killed rebuild must not have swapped anything in"
    assert list(versions.glob(".tmp-*")), "killed mid-write: its partial version is left behind"
    after = VectorIndex.load(out)
    assert after.n_items == 1000
    np.testing.assert_array_equal(after.search(queries, k=10).item_ids, before.item_ids)
    # the next rebuild completes and replaces it
    assert main(["-q", "index", "rebuild", "--model", str(tmp_path / "model"), "--output", str(out)]) == 0
    assert VectorIndex.load(out).n_items == 400_000
    assert not list(versions.glob(".tmp-*"))  # the dead writer's leftovers are cleaned up
