"""``ecomrec demo``: the whole pipeline on a shop's log (UCI Online Retail by default), end to end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecomrec.config import EngineConfig, ProtocolConfig
from ecomrec.data.dataset import Dataset
from ecomrec.engine import Engine, describe

#: Searches shown on Online Retail; other shops get ones made from their best sellers' texts.
SEARCHES = ("red retrospot lunch bag", "christmas tree decoration", "vintage doormat")


def run_demo(data: Dataset, test_from: str, config: EngineConfig, output: str | Path, report_path: str | Path, *,
             show_progress: bool = True, users: int = 3, searches: Sequence[str] | None = None) -> int:
    """Fit on purchases before ``test_from``, save, show recommendations and searches, benchmark.

    Prints to stdout (this is the command's output, not library logging). Returns 0.
    """
    from ecomrec.evaluation import benchmark
    from ecomrec.data.split import make_split

    start = time.perf_counter()
    if data.report is not None:
        print(f"Loaded {data.report.raw_rows:,} rows, kept {data.report.kept_rows:,} purchases "
              f"({data.n_users:,} customers, {data.n_items:,} products).")
    split = make_split(data, test_from)
    print(f"Fitting on the {len(split.history):,} purchases before {test_from} ...")
    engine = Engine(config, show_progress=show_progress).fit(split.history)
    engine.save(output)
    print(f"Fitted in {engine.fit_seconds_ / 60:.1f} min; engine saved to {output} (Engine.load({str(output)!r})).")
    print("Fit time by stage: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in engine.fit_stages_.items()) + "\n")

    _show_users(engine, split, users)
    for query in searches or default_searches(split.history):
        print(f'Search "{query}":')
        print(describe(engine.search(query, k=5)) + "\n")
    shown = engine.users_.ids[split.users[0]]
    print(f'Search "candle" personalised for customer {shown}:')
    print(describe(engine.search("candle", user_id=shown, k=5)) + "\n")

    fitted = {**engine.hybrid_.models_, "hybrid": engine.hybrid_}
    methods = ["popularity", "repurchase", "itemknn", "als", "bi_encoder", "hybrid"]
    if engine.model_ is not engine.hybrid_:
        fitted[engine.model_.name] = engine.model_
        methods.append(engine.model_.name)
    methods = [m for m in methods if m in fitted or m in ("popularity", "repurchase", "itemknn", "als")]
    print(f"Benchmark on the purchases from {test_from} (the protocol of docs/evaluation.md; the engine's models are reused):")
    bench = benchmark(data, test_from, methods=methods, fitted=fitted,
                      protocol=ProtocolConfig(latency_users=50, warmup=5), show_progress=show_progress)
    written = bench.save(report_path)
    print(bench.to_markdown())
    print(f"Report: {', '.join(str(p) for p in written)}. Demo took {(time.perf_counter() - start) / 60:.1f} min.")
    return 0


def default_searches(data: Dataset, count: int = 3) -> list[str]:
    """Online Retail's showcase searches; for another shop, the first words of its best sellers' texts."""
    if str(data.name).startswith("online-retail"):
        return list(SEARCHES)
    best = np.argsort(-np.asarray(data.user_items("binary").sum(axis=0)).ravel(), kind="stable")
    queries: list[str] = []
    for item in best:
        words = " ".join(str(data.item_texts[item]).lower().split()[:2])
        if words and words not in queries:
            queries.append(words)
        if len(queries) == count:
            break
    return queries


def _show_users(engine: Engine, split, count: int) -> None:  # type: ignore[no-untyped-def]
    """Recommendations for a few test-window customers, with what they bought next marked."""
    history = split.history.user_items("counts")
    busy = split.users[np.argsort(-history[split.users].getnnz(axis=1), kind="stable")]
    chosen = busy[len(busy) // 4 :: max(len(busy) // (count + 1), 1)][:count]  # typical, not the extremes
    ids = [str(engine.users_.ids[u]) for u in chosen]
    recs = engine.recommend(ids, k=8)
    texts = engine.item_texts_
    for row, (user, customer) in enumerate(zip(chosen, ids)):
        bought = history[user].indices[np.argsort(-history[user].data, kind="stable")][:3]
        future = set(split.targets_all[np.flatnonzero(split.users == user)[0]].indices)
        print(f"Customer {customer}: {history[user].nnz} products bought before, most often: "
              + "; ".join(texts[i] for i in bought))
        lines = describe(recs[[row]]).splitlines()
        marks = ["   "] + ["[*]" if d in future else "   " for d in recs.candidates.item_ids[row] if d >= 0]
        print("\n".join(f"{m} {line}" for m, line in zip(marks, lines)))
        print("    [*] = bought in the test window\n")

