"""The ``ecomrec`` command: every subcommand on a small Online Retail-shaped folder, and on a generic log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecomrec.cli import main
from ecomrec.config import ALSConfig, BiEncoderConfig, EngineConfig, FusionConfig, HybridConfig, RerankConfig
from ecomrec.data.synthetic import synthetic
from tests.conftest import write_retail_folder

COMMANDS = ("fit", "recommend", "search", "index", "bench", "demo")


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(command in printed for command in COMMANDS)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = synthetic(n_users=160, n_items=60, n_clusters=3, purchases_per_user=20, days=120, seed=2)
    folder = write_retail_folder(data, root / "retail")
    config = EngineConfig(
        hybrid=HybridConfig(als=ALSConfig(factors=8, iterations=5), bi_encoder=BiEncoderConfig(fine_tune=False, layers=1),
                            fusion=FusionConfig(tune=False)),
        rerank=RerankConfig(text=False, cutoffs=2, window_days=15, candidates=30, trees=40, min_child_samples=10),
    )
    config.to_toml(root / "engine.toml")
    return {"root": root, "data": folder, "config": root / "engine.toml", "engine": root / "engine"}


@pytest.mark.slow
def test_fit_recommend_search_rebuild(shop, capsys) -> None:
    code = main(["-q", "fit", "--data", str(shop["data"]), "--config", str(shop["config"]), "--output", str(shop["engine"])])
    assert code == 0 and "saved to" in capsys.readouterr().out
    engine = str(shop["engine"])
    assert main(["-q", "recommend", "--engine", engine, "--users", "u00001,u00002", "-k", "4", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 8 and all(0 <= r["p_purchase"] <= 1 for r in records) and records[0]["why"]
    assert main(["-q", "recommend", "--engine", engine, "--history", "i00001,i00004", "-k", "3", "--exclude-seen"]) == 0
    table = capsys.readouterr().out
    assert "history #0" in table and "i00001 " not in table
    assert main(["-q", "search", "--engine", engine, "--query", "blue polkadot", "-k", "3", "--format", "json"]) == 0
    assert all("BLUE POLKADOT" in r["title"].upper() for r in json.loads(capsys.readouterr().out))
    catalog = shop["root"] / "catalog.csv"
    pd.DataFrame({"item_id": ["i00000", "i00001", "NEW9"], "title": ["red retrospot mug", "blue polkadot bowl", "tartan umbrella"],
                  "category": ["kitchen", "kitchen", "rain wear"]}).to_csv(catalog, index=False)
    assert main(["-q", "index", "rebuild", "--engine", engine, "--catalog", str(catalog), "--category-column", "category"]) == 0
    assert json.loads(capsys.readouterr().out)["listed"] == 3  # and 2 of them recommendable (NEW9 joins at the next fit)
    assert main(["-q", "search", "--engine", engine, "--query", "umbrella", "-k", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["item_id"] == "NEW9"  # the reloaded engine kept the rebuild
    assert main(["-q", "search", "--engine", engine, "--query", "mug", "-k", "3", "--category", "Kitchen", "--format", "json"]) == 0
    assert {r["item_id"] for r in json.loads(capsys.readouterr().out)} == {"i00000", "i00001"}  # the umbrella is not kitchen


@pytest.mark.slow
def test_exit_codes(shop, tmp_path, capsys) -> None:
    if not (shop["engine"] / "manifest.json").exists():
        assert main(["-q", "fit", "--data", str(shop["data"]), "--config", str(shop["config"]), "--output", str(shop["engine"])]) == 0
    engine = str(shop["engine"])
    assert main(["-q", "recommend", "--engine", engine, "--users", "nobody"]) == 4
    assert "nobody" in capsys.readouterr().err
    assert main(["-q", "recommend", "--engine", str(tmp_path / "missing"), "--users", "u00001"]) == 3
    assert main(["-q", "recommend", "--engine", engine, "--users", "u00001", "-k", "0"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[rerank]\ntrees = -1\n")
    assert main(["-q", "fit", "--data", str(shop["data"]), "--config", str(bad), "--output", str(tmp_path / "e")]) == 2
    assert "trees" in capsys.readouterr().err and not (tmp_path / "e").exists()


@pytest.mark.slow
def test_demo_runs_end_to_end(shop, tmp_path, capsys) -> None:
    code = main(["-q", "demo", "--data", str(shop["data"]), "--test-from", "2024-04-01", "--config", str(shop["config"]),
                 "--output", str(tmp_path / "engine"), "--report", str(tmp_path / "demo.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Customer" in printed and 'Search "red retrospot lunch bag"' in printed and "| feature_rerank |" in printed
    for kind in ("all", "new"):  # what the engine's reranker kept for each kind of list, and why
        assert f"| feature_rerank | reranker on {kind} lists, cutoff " in printed
    assert "| new_arrival | new | recall@10 |" in printed and "| few_baskets | all | ndcg@10 |" in printed  # the slice table
    report = json.loads((tmp_path / "demo.json").read_text())
    assert set(report["results"]) == {"popularity", "repurchase", "itemknn", "als", "bi_encoder", "hybrid", "feature_rerank"}
    assert (tmp_path / "engine" / "manifest.json").is_file()


@pytest.fixture(scope="module")
def generic_log(tmp_path_factory) -> dict[str, Path]:
    """The synthetic shop as another shop would export it: its own column names, a catalog with
    two text columns and items nobody bought."""
    root = tmp_path_factory.mktemp("generic")
    data = synthetic(n_users=160, n_items=60, n_clusters=3, purchases_per_user=20, n_cold_items=5, days=120, seed=2)
    frame = data.interactions
    pd.DataFrame({
        "customer": np.asarray(data.users.ids)[frame["user"]], "sku": np.asarray(data.items.ids)[frame["item"]],
        "ts": frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S"), "qty": frame["quantity"],
    }).to_csv(root / "log.csv", index=False)
    pd.DataFrame({"sku": data.items.ids, "name": data.item_texts, "dept": data.catalog["category"]}).to_csv(root / "catalog.csv", index=False)
    return {"root": root, "log": root / "log.csv", "catalog": root / "catalog.csv", "n_items": data.n_items}


GENERIC_ARGS = ("--columns", "user=customer,item=sku,time=ts,quantity=qty", "--catalog-item", "sku", "--catalog-text", "name,dept")


@pytest.mark.slow
def test_bench_and_demo_run_on_any_shops_log(generic_log, shop, tmp_path, capsys) -> None:
    log, catalog = str(generic_log["log"]), str(generic_log["catalog"])
    report_path = tmp_path / "bench.json"
    assert main(["-q", "bench", "--interactions", log, "--catalog", catalog, *GENERIC_ARGS, "--test-from", "2024-04-01",
                 "--methods", "popularity,repurchase,itemknn", "--latency-users", "5", "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["results"]) == {"popularity", "repurchase", "itemknn"}
    assert report["dataset"]["items"] == generic_log["n_items"]  # never-bought catalog items are in it
    assert main(["-q", "demo", "--interactions", log, "--catalog", catalog, *GENERIC_ARGS, "--test-from", "2024-04-01",
                 "--config", str(shop["config"]), "--output", str(tmp_path / "engine"), "--report", str(tmp_path / "demo.json")]) == 0
    printed = capsys.readouterr().out
    assert "Customer" in printed and "Search " in printed and "| feature_rerank |" in printed


def test_malformed_columns_are_a_usage_error(generic_log, capsys) -> None:
    code = main(["-q", "bench", "--interactions", str(generic_log["log"]), "--columns", "user:customer", "--test-from", "2024-04-01",
                 "--output", "unused.json"])
    assert code == 2 and "key=column" in capsys.readouterr().err


def test_bench_over_rolling_origins(generic_log, tmp_path, capsys) -> None:
    log, catalog = str(generic_log["log"]), str(generic_log["catalog"])
    output = tmp_path / "origins.json"
    assert main(["-q", "bench", "--interactions", log, "--catalog", catalog, *GENERIC_ARGS, "--origins", "2024-03-01,2024-04-01",
                 "--methods", "popularity,repurchase", "--latency-users", "0", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert list(result["origins"]) == ["2024-03-01", "2024-04-01"]
    assert result["origins"]["2024-03-01"]["protocol"]["test_to"] == "2024-03-31"
    assert "| 2024-04-01 |" in output.with_suffix(".md").read_text() and "| 2024-03-01 |" in capsys.readouterr().out
    assert main(["-q", "bench", "--interactions", log, *GENERIC_ARGS, "--origins", "2024-03-01", "--test-to", "2024-03-10",
                 "--output", str(output)]) == 2  # each origin's window is its month
    with pytest.raises(SystemExit):  # a window is required: --test-from or --origins
        main(["-q", "bench", "--interactions", log, *GENERIC_ARGS, "--output", str(output)])
