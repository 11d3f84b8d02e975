"""Evaluation: metrics, the fixed protocol, latency timing, reports."""

from ecomrec.evaluation.latency import LatencyStats, time_calls
from ecomrec.metrics import ranking_metrics
from ecomrec.data.split import EvalSplit, make_split, validation_split
from ecomrec.evaluation.protocol import METHOD_ORDER, benchmark, benchmark_origins
from ecomrec.evaluation.report import BenchmarkReport, origins_markdown

__all__ = ["BenchmarkReport", "EvalSplit", "LatencyStats", "METHOD_ORDER", "benchmark", "benchmark_origins", "make_split",
           "origins_markdown", "ranking_metrics", "time_calls", "validation_split"]
