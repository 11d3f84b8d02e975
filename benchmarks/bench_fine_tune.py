"""Bi-encoder fine-tuning: time and validation recall@100, this tree against an earlier revision.

Fits the default ``BiEncoderRetriever`` on Online Retail purchases before ``--test-from`` (the
fine-tune, its validation every ``eval_every`` steps and early stopping, then embedding the
catalog and building the index) and reports the wall-clock fit time and the best validation
recall@100 (new items, the last 30 days of the training data: a window before the test window).
With ``--baseline-rev`` the same is measured first on that revision of ecomrec (checked out in a
temporary git worktree, run in a subprocess), so both figures come from one run on one machine.

    python benchmarks/bench_fine_tune.py --data ../shared/data/online-retail --test-from 2011-10-01 \
        --baseline-rev 5a1ff35 --output benchmarks/results/bench_fine_tune.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(data_path: str, test_from: str) -> dict[str, object]:
    """Fit the default bi-encoder here; time it and read its validation log."""
    import ecomrec
    from ecomrec.datasets import online_retail
    from ecomrec.retrieval.bi_encoder import BiEncoderRetriever

    history, _ = online_retail(data_path).split_by_time(test_from)
    start = time.perf_counter()
    model = BiEncoderRetriever(show_progress=False).fit(history)
    seconds = time.perf_counter() - start
    log = model.training_log_
    return {
        "ecomrec": str(Path(ecomrec.__file__).parent),
        "fit_seconds": seconds,
        "steps": int(log[-1]["step"]),
        "zero_shot_valid_recall@100": float(log[0]["valid_recall@100"]),
        "best_valid_recall@100": float(max(row["valid_recall@100"] for row in log)),
        "log": log,
    }


def measure_revision(rev: str, data_path: str, test_from: str) -> dict[str, object]:
    """:func:`measure` on the ecomrec of git revision ``rev`` (a temporary worktree)."""
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
        try:
            out = Path(folder) / "result.json"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            subprocess.run([sys.executable, __file__, "--measure-only", str(out), "--data", str(Path(data_path).resolve()),
                            "--test-from", test_from], check=True, env=env, cwd=tree)
            return json.loads(out.read_text())
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/online-retail")
    parser.add_argument("--test-from", default="2011-10-01")
    parser.add_argument("--baseline-rev", default=None, help="git revision to measure first (e.g. the commit before a change)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/bench_fine_tune.json"))
    parser.add_argument("--measure-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only is not None:
        args.measure_only.write_text(json.dumps(measure(args.data, args.test_from)))
        return
    from ecomrec.evaluation.report import environment

    report: dict[str, object] = {"environment": environment(), "test_from": args.test_from}
    if args.baseline_rev:
        report["baseline"] = {"rev": args.baseline_rev, **measure_revision(args.baseline_rev, args.data, args.test_from)}
    report["current"] = measure(args.data, args.test_from)
    if args.baseline_rev:
        base, now = report["baseline"], report["current"]
        report["time_ratio"] = now["fit_seconds"] / base["fit_seconds"]  # type: ignore[index,operator]
        report["recall_difference"] = now["best_valid_recall@100"] - base["best_valid_recall@100"]  # type: ignore[index,operator]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    summary = {k: report[k] for k in ("time_ratio", "recall_difference") if k in report}
    for side in ("baseline", "current"):
        if side in report:
            summary[side] = {k: report[side][k] for k in ("fit_seconds", "steps", "best_valid_recall@100")}  # type: ignore[index]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
