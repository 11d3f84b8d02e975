"""The ``ecomrec`` command: every subcommand on a small Online Retail-shaped folder."""

from __future__ import annotations

import json
from pathlib import Path

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
    pd.DataFrame({"item_id": ["i00000", "i00001", "NEW9"], "title": ["red retrospot mug", "blue polkadot bowl", "tartan umbrella"]}).to_csv(catalog, index=False)
    assert main(["-q", "index", "rebuild", "--engine", engine, "--catalog", str(catalog)]) == 0
    assert json.loads(capsys.readouterr().out)["listed"] == 2
    assert main(["-q", "search", "--engine", engine, "--query", "umbrella", "-k", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["item_id"] == "NEW9"  # the reloaded engine kept the rebuild


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
    report = json.loads((tmp_path / "demo.json").read_text())
    assert set(report["results"]) == {"popularity", "repurchase", "itemknn", "als", "bi_encoder", "hybrid", "feature_rerank"}
    assert (tmp_path / "engine" / "manifest.json").is_file()
