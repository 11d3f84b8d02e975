"""update, warm refit, monitor and forget from the command line on both real shops, with a quick
engine (no networks): fitted before a validation-period cut, updated with the two weeks after it,
refitted warm on its own log, judged on the month after those."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from ecomrec.cli import main
from ecomrec.config import EngineConfig, FusionConfig, HybridConfig, SearchConfig
from ecomrec.engine import Engine

pytestmark = pytest.mark.slow

QUICK = EngineConfig(hybrid=HybridConfig(fusion=FusionConfig(quotas={"own": 100, "als": 100, "itemknn": 100, "popularity": 100},
                                                              tune=False)),
                     use_reranker=False, search=SearchConfig(enabled=False))


def run(tmp_path, capsys, history, weeks, update_args: list[str], monitor_args: list[str], forget: str) -> None:  # type: ignore[no-untyped-def]
    """Fit on ``history`` (loaded as a shop would have it then: later customers unknown), update
    with ``weeks`` (what ``update_args`` loads), refit warm, monitor the month after."""
    folder = Engine(QUICK, show_progress=False).fit(history).save(tmp_path / "engine")
    stale = tmp_path / "stale"
    shutil.copytree(folder.resolve(), stale)  # a plain copy of the fitted version: the engine without the update
    engine_args = ["--engine", str(folder)]
    assert main(["-q", "monitor", "--engine", str(stale), *monitor_args, "--output", str(tmp_path / "stale.json")]) in (0, 5)
    assert main(["-q", "update", *engine_args, *update_args]) == 0
    updated = Engine.load(folder)
    assert len(updated.snapshot.log) == len(history) + len(weeks)  # every row of the two weeks, once
    assert main(["-q", "update", *engine_args, *update_args]) == 0  # again: nothing applied, nothing twice
    assert len(Engine.load(folder).snapshot.log) == len(updated.snapshot.log)
    capsys.readouterr()
    assert main(["-q", "fit", "--warm-start", str(folder), "--output", str(folder)]) == 0  # weekly: on its own log
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["fusion"] == "kept the served weights and depths" and report["als"].startswith("continued from the served factors")
    assert len(Engine.load(folder).snapshot.log) == len(updated.snapshot.log)
    assert main(["-q", "monitor", *engine_args, *monitor_args, "--output", str(tmp_path / "updated.json")]) in (0, 5)
    before, after = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("stale", "updated"))
    assert after["unknown_customers"] < before["unknown_customers"]  # the two weeks' new customers are known now
    assert after["customers"] > before["customers"] and after["ndcg@10"] > 0
    assert main(["-q", "forget", *engine_args, "--users", forget]) == 0
    assert main(["-q", "recommend", *engine_args, "--users", forget]) == 4  # an unknown customer now


def days_folder(source, folder, first: str, last: str):  # type: ignore[no-untyped-def]
    """``folder`` holding Online Retail's per-day files from ``first`` to ``last`` (a shop's export)."""
    (folder / "by-day").mkdir(parents=True)
    for day in pd.date_range(first, last):
        if (path := source / "by-day" / f"{day:%Y-%m-%d}.csv").is_file():
            shutil.copy(path, folder / "by-day")
    return folder


def test_online_retail_from_daily_files(real_data_path, tmp_path, capsys) -> None:
    from ecomrec.datasets import online_retail

    history = online_retail(days_folder(real_data_path, tmp_path / "history", "2010-12-01", "2011-07-31"))
    weeks = days_folder(real_data_path, tmp_path / "weeks", "2011-08-01", "2011-08-14")
    month = days_folder(real_data_path, tmp_path / "month", "2011-08-15", "2011-09-13")
    run(tmp_path, capsys, history, online_retail(weeks), ["--data", str(weeks)], ["--data", str(month)], "17850")


def test_dunnhumby_from_a_csv(dunnhumby_path, tmp_path, capsys) -> None:
    from ecomrec.datasets import CatalogColumns, InteractionColumns, from_files

    raw = pd.read_csv(dunnhumby_path / "interactions.csv", dtype={"user_id": str, "item_id": str})
    stamp = pd.to_datetime(raw["timestamp"])
    for name, start, end in (("history", "2017-01-01", "2017-09-01"), ("weeks", "2017-09-01", "2017-09-15"),
                             ("month", "2017-09-15", "2017-10-15")):
        raw[(stamp >= start) & (stamp < end)].to_csv(tmp_path / f"{name}.csv", index=False)
    load = lambda name: from_files(tmp_path / f"{name}.csv", dunnhumby_path / "catalog.csv",  # noqa: E731
                                   columns=InteractionColumns(quantity="quantity"), catalog_columns=CatalogColumns(text=("text",)))
    history = load("history")
    columns = ["--columns", "quantity=quantity", "--catalog", str(dunnhumby_path / "catalog.csv"), "--catalog-text", "text"]
    run(tmp_path, capsys, history, load("weeks"), ["--interactions", str(tmp_path / "weeks.csv"), *columns],
        ["--interactions", str(tmp_path / "month.csv"), *columns], str(history.users.ids[0]))
