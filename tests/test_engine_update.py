"""Engine.update: new purchases served at once without training, by rules that make an update
safe to repeat (known answers on a planted shop), from Python and the CLI, saved as a new version."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig, RerankConfig, SearchConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.engine import Engine
from ecomrec.exceptions import ArtifactError, DataError, UnknownIdError

pytestmark = pytest.mark.slow

QUOTAS = {"own": 40, "als": 40, "als_new": 40, "itemknn": 40, "bi_encoder": 40, "popularity": 40}
CONFIG = EngineConfig(
    hybrid=HybridConfig(als=ALSConfig(factors=8, iterations=8), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                        fusion=FusionConfig(quotas=QUOTAS, tune=False)),
    use_reranker=False, search=SearchConfig(dense=BiEncoderConfig(fine_tune=False, layers=1)),
)
CUT = pd.Timestamp("2024-04-01")  # the engine knows the purchases before; the update brings the rest


@pytest.fixture(scope="module")
def shop():
    return synthetic(n_users=150, n_items=90, n_clusters=3, purchases_per_user=20, days=120, seed=11)


def purchases(data, start=None, end=None) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The purchases of ``data`` between ``start`` and ``end`` as an update's rows (external ids)."""
    frame = data.between(start, end).interactions
    return pd.DataFrame({"user_id": data.users.ids_of(frame["user"]), "item_id": data.items.ids_of(frame["item"]),
                         "timestamp": frame["timestamp"].to_numpy(), "quantity": frame["quantity"].to_numpy()})


def newcomer(cluster: int, when: pd.Timestamp, n: int = 4) -> pd.DataFrame:
    """A customer the engine never saw, buying ``n`` items of ``cluster`` (item ``i{k}`` is in cluster ``k % 3``)."""
    items = [f"i{k:05d}" for k in range(cluster, 3 * n, 3)][:n]
    return pd.DataFrame({"user_id": "NEWCUST", "item_id": items, "timestamp": [when + pd.Timedelta(hours=h) for h in range(n)],
                         "quantity": 1.0})


def listed(results) -> list[str]:  # type: ignore[no-untyped-def]
    """The first query's item ids, in rank order."""
    return [str(i) for i in results.item_ids[0] if i is not None]


def cluster_share(results, cluster: int) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([int(i[1:]) % 3 == cluster for i in listed(results)]))


@pytest.fixture(scope="module")
def saved(shop, tmp_path_factory):
    return Engine(CONFIG, show_progress=False).fit(shop.between(None, CUT)).save(tmp_path_factory.mktemp("engines") / "shop")


@pytest.fixture()
def engine(saved) -> Engine:
    return Engine.load(saved)


def test_update_serves_new_purchases_and_new_customers_at_once(engine, shop) -> None:
    rows = pd.concat([purchases(shop, CUT), newcomer(1, shop.end + pd.Timedelta(hours=1))], ignore_index=True)
    before = engine.snapshot
    with pytest.raises(UnknownIdError):
        engine.recommend(["NEWCUST"], k=5)
    # an existing customer's first purchase of an item, after the cut: served as seen from now on
    later = purchases(shop, CUT)
    bought_before = set(zip(*purchases(shop, None, CUT)[["user_id", "item_id"]].to_numpy().T))
    user, item = next((u, i) for u, i in later[["user_id", "item_id"]].to_numpy() if (u, i) not in bought_before)

    report = engine.update(rows)

    assert report["snapshot"] == "updated" and engine.snapshot is not before
    assert (report["applied"], report["already_applied"], report["new_users"], report["new_items"]) == (len(rows), 0, 1, 0)
    assert len(engine.snapshot.log) == len(shop) + 4  # the whole log: nothing lost, nothing twice
    assert cluster_share(engine.candidates(["NEWCUST"], k=10, exclude="seen"), 1) >= 0.7  # ALS folded in four purchases of cluster 1: the cluster's items lead
    assert item not in listed(engine.candidates([user], k=90, exclude="seen"))
    assert item in listed(engine.candidates([user], k=90))
    assert engine.snapshot.model.models_["als"].config == before.model.models_["als"].config  # nothing retrained


def test_update_is_idempotent_and_counts_repeats_once(engine, shop) -> None:
    rows = purchases(shop, CUT)
    first = engine.update(pd.concat([rows, rows.iloc[:5]], ignore_index=True))
    assert first["repeated_in_update"] == 5 and first["applied"] == len(rows)
    snapshot = engine.snapshot
    again = engine.update(rows)
    assert (again["applied"], again["already_applied"], again["snapshot"]) == (0, len(rows), "unchanged")
    assert engine.snapshot is snapshot


def test_update_rules_refuse_bad_rows_and_change_nothing(engine, shop) -> None:
    snapshot, end = engine.snapshot, engine.snapshot.log.end
    fresh = newcomer(0, end + pd.Timedelta(days=1))
    cases = {
        "unknown": fresh.assign(coupon="X"),  # a column no rule reads
        "lack": fresh.drop(columns="timestamp"),
        "dated before": pd.DataFrame({"user_id": ["u00001"], "item_id": ["i00002"], "timestamp": [end - pd.Timedelta(days=3)]}),
        "positive": fresh.assign(quantity=0.0),
        "no title": fresh.assign(item_id="SKU-NEW"),
    }
    for message, rows in cases.items():
        with pytest.raises(DataError, match=message):
            engine.update(rows)
        assert engine.snapshot is snapshot


def test_new_items_come_with_their_titles(engine, shop) -> None:
    end = engine.snapshot.log.end
    rows = pd.DataFrame({"user_id": ["u00001", "u00004"], "item_id": ["SKU-NEW", "SKU-NEW"],
                         "timestamp": [end + pd.Timedelta(days=1), end + pd.Timedelta(days=2)]})
    catalog = pd.DataFrame({"item_id": [*map(str, shop.items.ids), "SKU-NEW"], "text": [*shop.item_texts, "copper kettle lantern"]})
    report = engine.update(rows, catalog)
    assert report["new_items"] == 1 and report["verified"]
    assert listed(engine.search("copper kettle lantern", k=1)) == ["SKU-NEW"]
    assert "SKU-NEW" in listed(engine.candidates(["u00001"], k=90))  # bought: in the user's own list


def test_a_saved_engine_updates_as_a_new_version(saved, shop, tmp_path) -> None:
    from ecomrec.cli import main

    csv = tmp_path / "new.csv"
    rows = pd.concat([purchases(shop, CUT), newcomer(2, shop.end + pd.Timedelta(hours=1))], ignore_index=True)
    rows.to_csv(csv, index=False)
    folder = tmp_path / "engine"
    Engine.load(saved).save(folder)
    versions = lambda: sorted(p.name for p in (folder.parent / f".{folder.name}.versions").iterdir() if not p.name.startswith("."))  # noqa: E731
    count = len(versions())
    assert main(["-q", "update", "--engine", str(folder), "--interactions", str(csv), "--columns", "quantity=quantity"]) == 0
    assert len(versions()) == count + 1
    loaded = Engine.load(folder)
    assert len(loaded.snapshot.log) == len(shop) + 4
    assert cluster_share(loaded.candidates(["NEWCUST"], k=10, exclude="seen"), 2) >= 0.7
    assert main(["-q", "update", "--engine", str(folder), "--interactions", str(csv), "--columns", "quantity=quantity"]) == 0
    assert len(versions()) == count + 1  # the same update again: nothing applied, no new version


def test_an_engine_without_its_log_says_so(engine, shop) -> None:
    import dataclasses

    engine._snapshot = dataclasses.replace(engine.snapshot, log=None)  # as an engine saved before it kept its log loads
    with pytest.raises(ArtifactError, match="no purchase log"):
        engine.update(purchases(shop, CUT))


def test_update_reaches_the_reranker(shop) -> None:
    config = CONFIG.replace(use_reranker=True, search=SearchConfig(enabled=False),
                            rerank=RerankConfig(window_days=15, candidates=30, trees=50, min_child_samples=10))
    engine = Engine(config, show_progress=False).fit(shop.between(None, CUT))
    report = engine.update(pd.concat([purchases(shop, CUT), newcomer(0, shop.end + pd.Timedelta(hours=1))], ignore_index=True))
    assert report["applied"] > 0
    stats = engine.snapshot.model.reranker.stats_
    assert len(stats.item_buyers) == shop.n_items and stats.item_buyers.sum() > 0
    records = engine.recommend(["NEWCUST"], k=5).to_records()
    assert len(records) == 5 and all(0 <= r["p_purchase"] <= 1 for r in records)


def test_forget_removes_customers_from_the_engine_and_its_saved_versions(saved, shop, tmp_path) -> None:
    import json

    from ecomrec.cli import main

    folder = tmp_path / "engine"
    Engine.load(saved).save(folder)
    Engine.load(folder).save(folder)  # two versions now, both holding the customers
    gone = ["u00007", "u00100"]
    holding = lambda: [p for p in (folder.parent / f".{folder.name}.versions").rglob("*")  # noqa: E731
                       if p.is_file() and any(user.encode() in p.read_bytes() for user in gone)]
    assert holding()  # the scan below can fail: the saved engine names them now
    engine = Engine.load(folder)
    rows = int(engine.snapshot.log.interactions["user"].isin(engine.snapshot.users.positions(gone)).sum())
    report = engine.forget([*gone, "never-seen"])
    assert (report["forgotten"], report["rows_removed"], report["not_found"]) == (2, rows, ["never-seen"]) and rows > 0
    with pytest.raises(UnknownIdError):
        engine.recommend(["u00007"], k=5)
    positions = np.array([7, 100])  # dense indices stay: nobody else moves
    assert engine.snapshot.users.ids_of([6, 8]).tolist() == ["u00006", "u00008"]
    assert not engine.snapshot.log.interactions["user"].isin(positions).any()
    assert np.abs(engine.snapshot.hybrid.models_["als"].user_factors_[positions]).max() == 0
    assert engine.snapshot.hybrid.user_items_[positions].nnz == 0
    engine.save(folder)
    files = [p for p in (folder.parent / f".{folder.name}.versions").rglob("*") if p.is_file()]
    assert len({p.relative_to(folder.parent).parts[1] for p in files if not p.name.startswith(".")}) == 1  # one version left
    assert holding() == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["facts"]["forgotten_since_fit"] == 2
    # forgotten, then back: a customer buying again starts afresh; the others update as before
    back = engine.update(pd.DataFrame({"user_id": ["u00007", "u00001"], "item_id": ["i00002", "i00004"],
                                       "timestamp": [shop.end + pd.Timedelta(days=1)] * 2}))
    assert (back["applied"], back["new_users"]) == (2, 1)
    assert listed(engine.candidates(["u00007"], k=1)) == ["i00002"]
    assert main(["-q", "forget", "--engine", str(folder), "--users", "u00001"]) == 0
    assert Engine.load(folder).snapshot.log.users.positions(["u00001"]).tolist() == [-1]
