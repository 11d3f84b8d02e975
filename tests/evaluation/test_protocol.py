"""The protocol's split and targets on hand-made data; the benchmark run, report and CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ecomrec.cli import main
from ecomrec.config import ALSConfig, ProtocolConfig
from ecomrec.data.synthetic import synthetic
from ecomrec.datasets import InteractionColumns, from_files
from ecomrec.evaluation import BenchmarkReport, benchmark, make_split, validation_split
from tests.conftest import write_retail_folder

FAST = ProtocolConfig(latency_users=5, warmup=1)


@pytest.fixture
def shop(tmp_path: Path):
    # history before Mar 1: a {x, y}, b {y}, c {z}; window: a {x, w}, b {z}, d {x} (d has no history)
    frame = pd.DataFrame(
        {
            "user": ["a", "a", "b", "c", "a", "a", "b", "d"],
            "item": ["x", "y", "y", "z", "x", "w", "z", "x"],
            "ts": ["2024-01-05", "2024-02-01", "2024-02-10", "2024-02-20", "2024-03-02", "2024-03-03", "2024-03-05", "2024-03-06"],
        }
    )
    frame.to_csv(tmp_path / "log.csv", index=False)
    return from_files(tmp_path / "log.csv", columns=InteractionColumns("user", "item", "ts"))


def test_split_targets_all_and_new(shop) -> None:
    split = make_split(shop, "2024-03-01")
    users = shop.users.ids_of(split.users).tolist()
    assert users == ["a", "b"]  # c bought nothing in the window, d nothing before it
    items = shop.items.ids

    def row(matrix, r):
        return sorted(items[matrix[r].indices])

    assert row(split.targets_all, 0) == ["w", "x"] and row(split.targets_new, 0) == ["w"]
    assert row(split.targets_all, 1) == ["z"] and row(split.targets_new, 1) == ["z"]
    assert split.new_rows.tolist() == [0, 1]
    # targets (a,w) (a,x) (b,z): w was never bought before March -> 1 cold pair of 3
    assert split.cold_target_share("all") == pytest.approx(1 / 3)
    assert split.cold_target_share("new") == pytest.approx(1 / 2)


def test_validation_split_never_touches_the_test_window(shop) -> None:
    split = validation_split(shop, "2024-03-01", valid_days=20)
    assert split.target.start >= pd.Timestamp("2024-02-10") and split.target.end < pd.Timestamp("2024-03-01")
    assert split.history.end < pd.Timestamp("2024-02-10")


def test_empty_window_is_an_error(shop) -> None:
    with pytest.raises(ValueError, match="both must be non-empty"):
        make_split(shop, "2025-01-01")


def test_benchmark_ranks_methods_sensibly_on_planted_data(tmp_path: Path) -> None:
    data = synthetic(n_users=300, n_items=160, n_clusters=4, purchases_per_user=24, noise=0.05, seed=11)
    report = benchmark(
        data, "2024-03-01", methods=["popularity", "repurchase", "itemknn", "als"],
        configs={"als": ALSConfig(factors=8, iterations=10)}, protocol=FAST, show_progress=False,
    )
    assert list(report.results) == ["popularity", "repurchase", "itemknn", "als"]
    for method in ("itemknn", "als"):  # personalised methods find the planted clusters
        assert report.results[method]["new"]["recall@50"] > report.results["popularity"]["new"]["recall@50"] + 0.1
    assert set(report.latency_ms) == set(report.results)
    assert report.dataset["evaluated_users"] > 250 and report.dataset["cold_target_share"] == 0.0
    written = report.save(tmp_path / "out" / "report.json")
    assert [p.name for p in written] == ["report.json", "report.md", "report.png", "report-latency.png"]
    assert all(p.stat().st_size > 0 for p in written)
    payload = json.loads(written[0].read_text())
    assert set(payload) >= {"dataset", "protocol", "results", "latency_ms", "throughput", "environment"}
    assert set(payload["results"]["als"]["all"]) == {
        "recall@10", "recall@20", "recall@50", "recall@100", "recall@200", "ndcg@10", "mrr@10", "hit@10", "coverage@10"
    }
    assert set(payload["latency_ms"]["als"]) >= {"p50", "p95", "p99"}
    assert BenchmarkReport.load(written[0]).results == report.results
    assert "| als |" in written[1].read_text()


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        benchmark(synthetic(seed=0), "2024-03-01", methods=["magic"], protocol=FAST, show_progress=False)


def test_cli_bench_end_to_end(tmp_path: Path, capsys) -> None:
    folder = write_retail_folder(synthetic(n_users=80, n_items=40, seed=4), tmp_path / "retail")
    out = tmp_path / "r" / "report.json"
    code = main(
        ["-q", "bench", "--data", str(folder), "--test-from", "2024-03-01", "--methods", "popularity,repurchase",
         "--output", str(out), "--latency-users", "5"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| repurchase |" in printed and "wrote" in printed
    payload = json.loads(out.read_text())
    assert list(payload["results"]) == ["popularity", "repurchase"]  # methods not asked for are absent
    assert payload["dataset"]["load_seconds"] > 0 and payload["dataset"]["raw_rows"] == 80 * 16
    assert out.with_suffix(".png").is_file()


def test_cli_bad_input_exit_code(tmp_path: Path, capsys) -> None:
    assert main(["-q", "bench", "--data", str(tmp_path / "none"), "--test-from", "2024-03-01", "--output", str(tmp_path / "r.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench"])  # required arguments missing
    assert exit_info.value.code == 2


def test_stages_honour_each_methods_config_and_share_examples_only_when_configs_agree() -> None:
    from ecomrec.config import ALSConfig, RerankConfig
    from ecomrec.data.synthetic import synthetic
    from ecomrec.evaluation.protocol import BenchmarkRun, build_method, examples_key, fit_stage

    assert examples_key(RerankConfig(text=False, cutoffs=3)) == examples_key(RerankConfig(text=True, cutoffs=3))  # text: same lists
    assert examples_key(RerankConfig(text=False, cutoffs=0)) != examples_key(RerankConfig(text=True, cutoffs=0))  # auto: 2 vs 3
    assert examples_key(RerankConfig(window_days=15)) != examples_key(RerankConfig())  # other labels
    split = make_split(synthetic(seed=0), "2024-03-01")
    run = BenchmarkRun(split, {"als": ALSConfig(factors=3, iterations=2)}, show_progress=False)
    als = build_method(run, "als")
    assert als.config.factors == 3
    fitted, seconds = fit_stage(run, "als")
    assert fitted.is_fitted and seconds is not None and run.fitted["als"] is fitted
    again, seconds = fit_stage(run, "als")
    assert again is fitted and seconds is None  # fitted once per run, then reused


def test_a_rerankers_fit_seconds_include_its_training_examples(monkeypatch) -> None:
    import time

    import ecomrec.rerank as rerank
    from ecomrec.config import ALSConfig, FusionConfig, HybridConfig, RerankConfig
    from ecomrec.data.synthetic import synthetic
    from ecomrec.evaluation.protocol import BenchmarkRun, fit_stage

    real = rerank.training_examples

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(3.0)  # longer than the fit itself takes here
        return real(*args, **kwargs)

    monkeypatch.setattr(rerank, "training_examples", slow)
    fusion = FusionConfig(quotas={"own": 30, "als": 30, "popularity": 30}, tune=False)
    configs = {"hybrid": HybridConfig(als=ALSConfig(factors=4, iterations=2), fusion=fusion),
               "feature_rerank": RerankConfig(cutoffs=2, window_days=15, candidates=20, trees=10, min_child_samples=5)}
    run = BenchmarkRun(make_split(synthetic(days=120, seed=1), "2024-04-01"), configs, show_progress=False)
    fit_stage(run, "hybrid")
    _, seconds = fit_stage(run, "feature_rerank")
    assert seconds is not None and seconds >= 3.0
