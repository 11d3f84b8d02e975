"""Engine.monitor with known answers: a shop that keeps its tastes passes, one whose tastes or
best sellers move raises the alarm, and the false-alarm rate over stable windows is measured."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig, RerankConfig, SearchConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.engine import Engine
from ecomrec.exceptions import DataError

pytestmark = pytest.mark.slow

QUOTAS = {"own": 40, "als": 40, "als_new": 40, "itemknn": 40, "popularity": 40}
CONFIG = EngineConfig(
    hybrid=HybridConfig(als=ALSConfig(factors=8, iterations=8), fusion=FusionConfig(quotas=QUOTAS, tune=False)),
    rerank=RerankConfig(window_days=30, candidates=40, trees=60, min_child_samples=10), search=SearchConfig(enabled=False),
)
DAYS, WINDOW = 180, 30
N_ITEMS = 90


def shop(seed: int, start: str = "2024-01-01", days: int = DAYS):  # type: ignore[no-untyped-def]
    """The same planted process each time (users and items keep their clusters): ``seed`` draws other purchases."""
    return synthetic(n_users=200, n_items=N_ITEMS, n_clusters=3, purchases_per_user=6 * days // WINDOW, start=start, days=days,
                     seed=seed)


def window(seed: int) -> pd.DataFrame:
    """30 days after the engine's log from the same process: a stable shop."""
    data = shop(seed, start="2024-06-30", days=WINDOW)
    frame = data.interactions
    return pd.DataFrame({"user_id": data.users.ids_of(frame["user"]), "item_id": data.items.ids_of(frame["item"]),
                         "timestamp": frame["timestamp"].to_numpy(), "quantity": 1.0})


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(CONFIG, show_progress=False).fit(shop(0))


def test_a_stable_shop_passes_and_the_false_alarm_rate_is_low(engine) -> None:
    reports = [engine.monitor(window(seed)) for seed in range(1, 11)]
    first = reports[0]
    assert first["verdict"] == "ok" and first["unknown_items"] == 0 and first["unknown_customers"] == 0
    assert first["ndcg@10"] >= 0.75 * first["validation"]["ndcg@10"] and first["drift"]["psi"] < 0.25
    assert 0 < first["mean_probability"] < 1 and 0 <= first["brier"] <= 1 and first["customers"] == 200
    false_alarms = np.mean([r["verdict"] != "ok" for r in reports])
    assert false_alarms <= 0.1, [r["reasons"] for r in reports]


def test_a_taste_shift_raises_the_alarm(engine) -> None:
    shifted = window(1)
    shifted["item_id"] = [f"i{(int(i[1:]) + 1) % N_ITEMS:05d}" for i in shifted["item_id"]]  # each customer buys the next cluster
    report = engine.monitor(shifted)
    assert report["verdict"] == "refit advised" and "quality" in report["reasons"]
    assert report["drift"]["psi"] < 0.25  # item shares barely move: only the ranking can see it


def test_new_best_sellers_and_unknown_items_raise_the_alarm(engine, tmp_path) -> None:
    from ecomrec.cli import main

    rows = window(2)
    rows.loc[rows.index % 2 == 0, "item_id"] = "i00003"  # half the purchases on one item: the shares move
    report = engine.monitor(rows)
    assert "drift" in report["reasons"] and report["drift"]["largest"][0]["item"] == "i00003"
    rows = window(3)
    rows.loc[rows.index % 4 == 0, "item_id"] = "SKU-UNSEEN"
    report = engine.monitor(rows, plot=tmp_path / "m.png")
    assert report["unknown_items"] == pytest.approx(np.mean(rows.index % 4 == 0)) and "unknown_items" in report["reasons"]
    assert (tmp_path / "m.png").stat().st_size > 0
    folder = engine.save(tmp_path / "engine")
    for rows_, code in ((window(4), 0), (rows, 5)):
        rows_.to_csv(tmp_path / "w.csv", index=False)
        argv = ["-q", "monitor", "--engine", str(folder), "--interactions", str(tmp_path / "w.csv"), "--output", str(tmp_path / "m.json")]
        assert main(argv) == code
        assert json.loads((tmp_path / "m.json").read_text())["verdict"] == ("ok" if code == 0 else "refit advised")


def test_monitoring_refuses_purchases_the_engine_has_seen(engine) -> None:
    seen = window(1)
    seen.loc[0, "timestamp"] = pd.Timestamp("2024-03-01")
    with pytest.raises(DataError, match="has not seen"):
        engine.monitor(seen)
