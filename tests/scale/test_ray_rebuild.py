"""Rebuilds on a local Ray cluster (two one-CPU actors): the same vectors as the local path, only
missing titles encoded, a lost worker retried, a worker lost for good leaving the old index."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from ecomrec import scale
from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig, SearchConfig
from ecomrec.data import Catalog
from ecomrec.data.synthetic import synthetic
from ecomrec.engine import Engine
from ecomrec.retrieval import BiEncoderRetriever

pytestmark = pytest.mark.slow

WORDS = ["red", "blue", "retrospot", "mug", "lunch", "bag", "garden", "tin", "heart", "candle", "set", "of", "3", "vintage"]


def titles(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 9))) + f" {i}" for i in range(n)]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = scale.import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the failing encoders below travel to the workers as they are here
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def retriever() -> BiEncoderRetriever:
    data = synthetic(n_users=20, n_items=12, n_clusters=2, seed=1)
    return BiEncoderRetriever(BiEncoderConfig(layers=1, fine_tune=False), show_progress=False).fit(data)


def test_ray_and_local_embeddings_agree(ray_cluster, retriever) -> None:
    catalog = titles(400, seed=0) + ["red mug 1"] * 3  # a shared title is encoded once
    local = retriever.encode_titles(catalog)
    encoded, report = scale.encode_on_ray(retriever, catalog, workers=2, batch_size=64)
    assert report["encoded"] == len(set(catalog)) == len(encoded) and report["workers"] == 2
    assert 1 <= len(report["worker_peak_mb"]) <= 2 and min(report["worker_peak_mb"]) > 50  # a model was loaded
    np.testing.assert_allclose(np.stack([encoded[t] for t in catalog]), local, atol=1e-6)


def catalog_change(retriever: BiEncoderRetriever, texts: list[str], encoded: dict | None = None):  # type: ignore[no-untyped-def]
    catalog = Catalog.of([f"sku{i}" for i in range(len(texts))], texts).with_encoded(retriever.model_hash_, encoded or {})
    changed = retriever.with_catalog(catalog)
    return changed, changed.catalog_change_


def test_after_a_one_percent_change_only_the_changed_titles_are_encoded(ray_cluster, retriever) -> None:
    catalog = titles(500, seed=1)
    encoded, _ = scale.encode_on_ray(retriever, catalog, workers=2)
    served, report = catalog_change(retriever, catalog, encoded)
    assert report["encoded"] == 0  # every title came from Ray
    changed = list(catalog)
    for i in range(0, 500, 100):
        changed[i] = changed[i] + " new edition"
    encoded, report = scale.encode_on_ray(served, changed, workers=2)
    assert report["encoded"] == 5 and sorted(encoded) == sorted(changed[0:500:100])
    served, _ = catalog_change(served, changed, encoded)
    assert scale.encode_on_ray(served, changed, workers=2)[1]["encoded"] == 0


class LengthEncoder:
    """A cheap encoder for pipeline tests (the encoder protocol of encode_titles_on_ray)."""

    def load(self, device: str):  # type: ignore[no-untyped-def]
        return lambda texts: np.array([[len(t), t.count(" "), 1.0] for t in texts], dtype=np.float32)


def test_workers_write_the_embedding_store_partition_by_partition(ray_cluster, tmp_path) -> None:
    import pyarrow.parquet as pq

    from ecomrec.encoders import text_hashes
    from ecomrec.index import EmbeddingStore

    catalog = titles(300, seed=7)
    ids = [f"sku{i}" for i in range(300)]
    store = EmbeddingStore(tmp_path / "embeddings", model="length-v1", dim=3, partitions=4)
    store.put(ids[:10], ["stale"] * 10, np.zeros((10, 3)))  # older vectors of ten items: replaced
    frame = pd.DataFrame({"item_id": ids, "text_hash": text_hashes(catalog), "text": catalog})
    keys, vectors, report = scale.encode_titles_on_ray(frame, LengthEncoder(), workers=2, batch_size=40, store=store)
    assert report["store_partitions_written"] == 4 and vectors is None and sorted(keys["item_id"]) == sorted(ids)
    vectors, found = store.get(ids, catalog)
    assert found.all()
    np.testing.assert_array_equal(vectors, LengthEncoder().load("cpu")(catalog))
    assert not store.get(ids[:10], ["stale"] * 10)[1].any()
    table = pq.read_table(tmp_path / "embeddings")  # plain Parquet, no ecomrec needed
    assert table.num_rows == 300 and table.schema.field("vector").type.list_size == 3


def test_without_ray_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"ecomrec\[scale\]"):
        scale.import_ray()


@pytest.fixture(scope="module")
def engine() -> Engine:
    config = EngineConfig(
        hybrid=HybridConfig(als=ALSConfig(factors=8, iterations=8), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                            fusion=FusionConfig(tune=False)),
        use_reranker=False, search=SearchConfig(dense=BiEncoderConfig(fine_tune=False, layers=1)),
    )
    return Engine(config, show_progress=False).fit(synthetic(n_users=60, n_items=40, n_clusters=4, seed=3))


def catalog_of(engine: Engine, suffix: str) -> pd.DataFrame:
    ids = list(engine.snapshot.items.ids)
    return pd.DataFrame({"item_id": ids, "text": [f"{t} {suffix}" for t in engine.snapshot.item_texts]})


def test_engine_rebuild_on_ray_serves_what_the_local_rebuild_serves(ray_cluster, engine) -> None:
    catalog = catalog_of(engine, "ray edition")
    report = engine.rebuild_index(catalog, backend="ray", workers=2)
    assert report["backend"] == "ray" and report["ray"]["bi_encoder"]["encoded"] == len(catalog)
    assert report["sources"]["bi_encoder"]["encoded"] == 0 and report["search"]["encoded"] == 0  # Ray embedded every title
    on_ray = (engine.search(["red mug ray edition", "garden"], k=8), engine.recommend(["u00001", "u00002"], k=8))
    engine.rebuild_index(catalog_of(engine, "plain"))
    local_report = engine.rebuild_index(catalog)  # the same titles again, locally: all cached
    assert local_report["sources"]["bi_encoder"]["encoded"] == 0
    local = (engine.search(["red mug ray edition", "garden"], k=8), engine.recommend(["u00001", "u00002"], k=8))
    for ray_result, local_result in zip(on_ray, local):
        np.testing.assert_array_equal(ray_result.item_ids, local_result.item_ids)
        np.testing.assert_allclose(ray_result.scores, local_result.scores, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        engine.rebuild_index(catalog, backend="spark")


class DiesOnce(scale.TitleEncoder):
    """Kills its worker process on its first batch (a marker file says it already happened)."""

    marker = ""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import os
        from pathlib import Path

        if not Path(self.marker).exists():
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().__call__(batch)


class AlwaysDies(scale.TitleEncoder):
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import os

        os._exit(1)


def test_a_worker_killed_once_is_retried(ray_cluster, retriever, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(DiesOnce, "marker", str(tmp_path / "died"))
    monkeypatch.setattr(scale, "TitleEncoder", DiesOnce)
    catalog = titles(200, seed=4)
    encoded, _ = scale.encode_on_ray(retriever, catalog, workers=2, batch_size=50)
    assert (tmp_path / "died").exists()
    np.testing.assert_allclose(np.stack([encoded[t] for t in catalog]), retriever.encode_titles(catalog), atol=1e-6)


def test_a_worker_lost_for_good_leaves_the_old_index_serving(ray_cluster, engine, monkeypatch) -> None:
    before = catalog_of(engine, "before")
    engine.rebuild_index(before)
    served = engine.search("red mug before", k=5)
    monkeypatch.setattr(scale, "TitleEncoder", AlwaysDies)
    with pytest.raises(Exception):  # noqa: B017 -- Ray's error for an actor that keeps dying
        engine.rebuild_index(catalog_of(engine, "after"), backend="ray", workers=2)
    after = engine.search("red mug before", k=5)
    np.testing.assert_array_equal(after.item_ids, served.item_ids)
    assert all(text.endswith("before") for text in engine.snapshot.item_texts)


def test_cli_rebuilds_a_saved_engine_on_ray(ray_cluster, engine, tmp_path, capsys) -> None:
    import json

    from ecomrec.cli import main

    folder = engine.save(tmp_path / "shop")
    catalog = catalog_of(engine, "from the shell").rename(columns={"text": "title"}).assign(item_id=lambda c: c["item_id"].astype(str))
    catalog.loc[len(catalog)] = ["NEW1", "tartan umbrella"]
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    args = ["-q", "index", "rebuild", "--engine", str(folder), "--catalog", str(tmp_path / "catalog.csv"), "--backend", "ray",
            "--workers", "2", "--shards", "2"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "ray" and report["ray"]["search"]["encoded"] == len(catalog)
    loaded = Engine.load(folder)
    assert loaded.search("tartan umbrella", k=1).item_ids[0, 0] == "NEW1"
    assert loaded.snapshot.hybrid.models_["bi_encoder"].index_.n_shards == 2


def _index_files(folder, retriever: str) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """The FAISS files of one retriever's sharded index inside a saved engine, by shard."""
    out = {}
    for path in sorted(folder.resolve().rglob("index.faiss")):
        parts = path.relative_to(folder.resolve()).parts
        if retriever in parts and parts[-2].startswith("shard-") and "search" not in parts:
            out[parts[-2]] = path.read_bytes()
    return out


def test_a_sharded_rebuild_on_ray_serves_the_local_answers_and_keeps_untouched_shards(ray_cluster, engine, tmp_path) -> None:
    catalog = catalog_of(engine, "sharded")
    queries = (["red mug sharded", "garden"], ["u00001", "u00002"])
    engine.rebuild_index(catalog, shards=4)
    local = (engine.search(queries[0], k=8), engine.recommend(queries[1], k=8))
    engine.rebuild_index(catalog_of(engine, "elsewhere"), shards=4)
    report = engine.rebuild_index(catalog, backend="ray", workers=2, shards=4)  # every shard changed: built in Ray tasks
    assert report["sources"]["bi_encoder"]["reused_shards"] == [] and report["sources"]["als"]["reused_shards"] == [0, 1, 2, 3]
    for ray_result, local_result in zip((engine.search(queries[0], k=8), engine.recommend(queries[1], k=8)), local):
        np.testing.assert_array_equal(ray_result.item_ids, local_result.item_ids)
        np.testing.assert_allclose(ray_result.scores, local_result.scores, atol=1e-5)
    engine.save(tmp_path / "before")
    changed = catalog.copy()
    changed.loc[7, "text"] = "tartan umbrella"  # one title of 40
    report = engine.rebuild_index(changed, backend="ray", workers=2, shards=4)
    assert report["ray"]["bi_encoder"]["encoded"] == 1 and len(report["sources"]["bi_encoder"]["reused_shards"]) == 3
    engine.save(tmp_path / "after")
    before, after = _index_files(tmp_path / "before", "bi_encoder"), _index_files(tmp_path / "after", "bi_encoder")
    assert sorted(before) == sorted(after) == [f"shard-{s:03d}" for s in range(4)]
    assert [s for s in sorted(before) if before[s] == after[s]] == [f"shard-{s:03d}" for s in report["sources"]["bi_encoder"]["reused_shards"]]
    loaded = Engine.load(tmp_path / "after")
    assert loaded.search("tartan umbrella", k=1).item_ids[0, 0] == engine.snapshot.items.ids[7]
    with pytest.raises(ValueError, match="shards"):
        engine.rebuild_index(changed, shards=0)


def test_snapshots_never_change_across_ray_and_local_rebuilds(ray_cluster, engine) -> None:
    """4 readers across 20 rebuilds with new and changed titles, every fifth on Ray (a Ray Data
    actor pool starts per rebuild: seconds each): no published snapshot changes afterwards, and
    each answer equals what one published snapshot answers alone."""
    from tests.snapshots import fingerprint, fingerprints, race_readers_with_rebuilds

    base = catalog_of(engine, "")

    def read(current: Engine) -> tuple:
        results = (current.search(["red mug", "garden"], k=8), current.recommend(["u00001", "u00002"], k=8))
        return tuple((r.item_ids.tolist(), r.titles.tolist(), np.round(r.scores, 4).tolist()) for r in results)

    published = [fingerprint(engine.snapshot)]

    def rebuild(turn: int) -> None:
        catalog = base.assign(text=[f"{t}edition {turn}" if n % 4 == turn % 4 else t for n, t in enumerate(base["text"])])
        catalog.loc[len(catalog)] = [f"NEW{turn}", f"copper kettle {turn}"]
        engine.rebuild_index(catalog, backend="ray" if turn % 5 == 0 else "local", workers=2)
        published.append(fingerprint(engine.snapshot))

    snapshots, expected, answers, errors = race_readers_with_rebuilds(engine, read, rebuild, rebuilds=20, pause=0.05)
    assert not errors, errors
    assert fingerprints(snapshots) == published and len(snapshots) == 21
    unmatched = [got[c] for got in answers for c in range(len(got)) if got[c] not in [e[c] for e in expected]]
    assert not unmatched and len(answers) >= 4 * 20
