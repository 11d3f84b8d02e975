"""Catalog search on judged queries: lexical, dense and fused, from an in-domain and an out-of-domain engine.

The judged sets are built from the dunnhumby product table by rules fixed before any run:

* ``category`` — one query per product category holding at least 3 items with a product type:
  the category's words after its department (``GROCERY - SOFT DRINKS`` → ``soft drinks``).
  Items are searched by what a shelf label says, product type and size (``SFT DRNK 2 LITER BTL
  CARB INCL - 2 LTR``), not by the category itself, so the query must be matched to product
  language. Gain 2: the item is in that category; 1: in the same department; 0 otherwise.
* ``type`` — the issue's example rule: the product type's words verbatim (``HAMBURGER BUNS``),
  items searched by their full catalog text (which holds those words); gain 2: same product
  type, 1: same category. Every method finds the exact words here; it shows the ceiling.

Queries of each set are split in half by a seeded permutation: ``dev`` queries choose the fusion
weight (``SearchConfig.lexical_weight``, a grid from 0 to 1) on the ``category`` set of the
dunnhumby-fitted engine; ``test`` queries are scored once, never tuned on. Methods, all through
the engine's search over the same catalog after ``Engine.rebuild_index``: ``lexical`` (BM25
alone), ``dense`` (the base model alone), ``fused_without_feedback`` (both, the chosen weight),
``fused`` (the same with the dense side's pseudo-relevance feedback, ``SearchConfig.feedback_items``,
chosen on dev queries by bench_search_feedback.py), and
``recommendation_bi_encoder`` (the engine's fine-tuned history → item model used as a search
model, what search did before). Engines: default config without the reranker (search does not
use it), fitted on dunnhumby before its test window and on Online Retail before October 2011.

    python benchmarks/bench_search.py --dunnhumby ../shared/data/dunnhumby-sample \
        --online-retail ../shared/data/online-retail --output benchmarks/results/bench_search.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)
MIN_ITEMS = 3


@dataclasses.dataclass
class JudgedSet:
    """Queries with graded gains over the catalog's rows, the text each item is searched by,
    and which queries are dev (the rest are test)."""

    name: str
    queries: list[str]
    gains: sp.csr_matrix
    item_texts: list[str]
    dev: np.ndarray
    catalog_ids: pd.Index


def _after_department(category: str) -> str:
    parts = [p.strip() for p in category.split(" - ")]
    return " ".join(parts[1:]) if len(parts) > 1 else parts[0]


def _label_text(row: pd.Series) -> str:
    """Product type, plus the size when the catalog text ends with one (``... - 15 OZ``)."""
    last = row["text"].rsplit(" - ", 1)[-1].strip()
    return f"{row['title']} - {last}" if last[:1].isdigit() else row["title"]


def _gains(n_items: int, strong: np.ndarray, weak: np.ndarray, queries_strong: list[str], queries_weak: list[str]) -> sp.csr_matrix:
    rows, cols, values = [], [], []
    for q, (s, w) in enumerate(zip(queries_strong, queries_weak)):
        weak_rows = np.flatnonzero(weak == w)
        strong_rows = np.flatnonzero(strong == s)
        gain = dict.fromkeys(weak_rows.tolist(), 1.0) | dict.fromkeys(strong_rows.tolist(), 2.0)
        rows += [q] * len(gain)
        cols += list(gain)
        values += list(gain.values())
    return sp.csr_matrix((values, (rows, cols)), shape=(len(queries_strong), n_items))


def judged_sets(catalog: pd.DataFrame, seed: int = 0) -> dict[str, JudgedSet]:
    """The two judged sets of the module docstring over ``catalog`` (dunnhumby's product table)."""
    typed = catalog["title"].str.strip() != ""
    rng = np.random.default_rng(seed)
    category, title = catalog["category"].to_numpy(), catalog["title"].to_numpy()
    department = np.array([c.split(" - ")[0].strip() for c in category], dtype=object)
    ids = pd.Index(catalog["item_id"])
    out = {}

    counts = catalog.loc[typed, "category"].value_counts()
    names = sorted(c for c, n in counts.items() if n >= MIN_ITEMS and c.strip())
    gains = _gains(len(catalog), np.where(typed, category, ""), np.where(typed, department, ""),
                   names, [c.split(" - ")[0].strip() for c in names])
    texts = [_label_text(r) if t else r["text"] for (_, r), t in zip(catalog.iterrows(), typed)]
    out["category"] = JudgedSet("category", [_after_department(c).lower() for c in names], gains, texts,
                                rng.permutation(len(names)) < len(names) // 2, ids)

    counts = catalog.loc[typed, "title"].value_counts()
    types = sorted(t for t, n in counts.items() if n >= MIN_ITEMS)
    type_category = catalog.loc[typed].groupby("title")["category"].agg(lambda c: c.mode().iloc[0])
    gains = _gains(len(catalog), np.where(typed, title, ""), category, types, [type_category[t] for t in types])
    out["type"] = JudgedSet("type", [t.lower() for t in types], gains, catalog["text"].tolist(),
                            rng.permutation(len(types)) < len(types) // 2, ids)
    return out


def score(found_ids: np.ndarray, catalog_ids: pd.Index, gains: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per-query ndcg@10 (graded) and recall@100 of gain-2 items, from external ids (None = padding)."""
    from ecomrec.metrics import graded_ndcg, hits, recall

    flat = np.array([i if i is not None else "" for i in found_ids.ravel()], dtype=object)
    rows = catalog_ids.get_indexer(flat).reshape(found_ids.shape)
    strong = sp.csr_matrix(gains >= 2, dtype=np.float32)
    n_strong = np.maximum(np.diff(strong.indptr), 1)
    return {"ndcg@10": graded_ndcg(rows, gains, 10), "recall@100": recall(hits(rows, strong), n_strong, 100)}


def run_method(engine, judged: JudgedSet, method: str, weight: float | None = None, feedback: bool = True) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    snap = engine.snapshot
    if method == "recommendation_bi_encoder":
        bi = snap.hybrid.models_["bi_encoder"]
        found = bi.search(judged.queries, 100)
        ids, valid = np.full(found.item_ids.shape, None, dtype=object), found.item_ids >= 0
        ids[valid] = np.asarray(bi.items_.ids, dtype=object)[found.item_ids[valid]]
    else:
        found = snap.search.search(judged.queries, 100, lexical_weight=weight, feedback=feedback)
        ids, valid = np.full(found.item_ids.shape, None, dtype=object), found.item_ids >= 0
        ids[valid] = np.asarray(snap.search.items_.ids, dtype=object)[found.item_ids[valid]]
    return score(ids, judged.catalog_ids, judged.gains)


def summarise(values: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    return {name: float(v[rows].mean()) for name, v in values.items()}


def main() -> None:
    from ecomrec import datasets
    from ecomrec.config import EngineConfig
    from ecomrec.engine import Engine
    from ecomrec.evaluation.protocol import paired_bootstrap
    from ecomrec.evaluation.report import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dunnhumby", required=True)
    parser.add_argument("--online-retail", required=True)
    parser.add_argument("--dunnhumby-test-from", default="2017-10-29")
    parser.add_argument("--online-retail-test-from", default="2011-10-01")
    parser.add_argument("--config", help="engine config TOML (default: the defaults, without the reranker)")
    parser.add_argument("--output", default="benchmarks/results/bench_search.json")
    args = parser.parse_args()

    catalog = pd.read_csv(Path(args.dunnhumby) / "catalog.csv", dtype=str, keep_default_na=False)
    sets = judged_sets(catalog)
    shop = datasets.dunnhumby_sample(args.dunnhumby).between(None, pd.Timestamp(args.dunnhumby_test_from))
    engines = {
        "dunnhumby": lambda: shop,
        "online-retail": lambda: datasets.online_retail(args.online_retail).between(None, pd.Timestamp(args.online_retail_test_from)),
    }
    config = EngineConfig.from_toml(args.config) if args.config else EngineConfig(use_reranker=False)
    report: dict = {"environment": environment(), "judged_sets": {}, "engines": {}, "config": config.search.to_dict()}
    for name, judged in sets.items():
        report["judged_sets"][name] = {"queries": len(judged.queries), "dev": int(judged.dev.sum()), "test": int((~judged.dev).sum()),
                                       "examples": judged.queries[:8], "mean_gain2_items": float((judged.gains >= 2).sum(axis=1).mean())}
    chosen = None
    for engine_name, load in engines.items():
        start = time.perf_counter()
        engine = Engine(config, show_progress=False).fit(load())
        out: dict = {"fit_seconds": time.perf_counter() - start, "sets": {}}
        for set_name in ("category", "type"):
            judged = sets[set_name]
            table = pd.DataFrame({"item_id": catalog["item_id"], "text": judged.item_texts, "category": catalog["category"]})
            out.setdefault("rebuild", {})[set_name] = engine.rebuild_index(table)
            if chosen is None:  # the weight: dunnhumby engine, category set, dev queries only
                dev_ndcg = {float(w): run_method(engine, judged, "search", w)["ndcg@10"][judged.dev].mean() for w in WEIGHTS}
                best = max(dev_ndcg.values())
                chosen = min((w for w, v in dev_ndcg.items() if v >= best - 1e-12), key=lambda w: abs(w - 0.5))
                report["weight_choice"] = {"dev_ndcg@10": dev_ndcg, "chosen_lexical_weight": chosen}
            methods = {"lexical": (1.0, False), "dense": (0.0, False), "fused_without_feedback": (chosen, False), "fused": (chosen, True)}
            values = {m: run_method(engine, judged, "search", w, f) for m, (w, f) in methods.items()}
            values["recommendation_bi_encoder"] = run_method(engine, judged, "recommendation_bi_encoder")
            test = ~judged.dev
            result = {m: {"test": summarise(v, test), "dev": summarise(v, judged.dev)} for m, v in values.items()}
            for other in ("lexical", "dense", "fused_without_feedback"):
                result[f"fused / {other}"] = {k: result["fused"]["test"][k] / max(result[other]["test"][k], 1e-12) for k in ("ndcg@10", "recall@100")}
                result[f"fused - {other}"] = paired_bootstrap(values["fused"]["ndcg@10"][test], values[other]["ndcg@10"][test])
            out["sets"][set_name] = result
            print(engine_name, set_name, json.dumps({m: r.get("test", r) for m, r in result.items()}, default=float), flush=True)
        report["engines"][engine_name] = out
    Path(args.output).write_text(json.dumps(report, indent=2, default=float))
    Path(args.output).with_suffix(".md").write_text(markdown(report), encoding="utf-8")


def markdown(report: dict) -> str:
    """The test-query table of a report: one row per engine × set × method."""
    lines = [f"Fusion weight chosen on dev queries: lexical {report['weight_choice']['chosen_lexical_weight']}", "",
             "| engine | set | method | ndcg@10 | recall@100 |", "|---|---|---|---|---|"]
    for engine, out in report["engines"].items():
        for name, result in out["sets"].items():
            for method in ("lexical", "dense", "fused_without_feedback", "fused", "recommendation_bi_encoder"):
                test = result[method]["test"]
                lines.append(f"| {engine} | {name} | {method} | {test['ndcg@10']:.4f} | {test['recall@100']:.4f} |")
    lines += ["", "| engine | set | fused / lexical | fused − lexical (ndcg@10) | fused / dense | fused − dense (ndcg@10) | fused − without feedback |",
              "|---|---|---|---|---|---|---|"]
    for engine, out in report["engines"].items():
        for name, r in out["sets"].items():
            cells = []
            for other in ("lexical", "dense"):
                d = r[f"fused - {other}"]
                cells += [f"{r[f'fused / {other}']['ndcg@10']:.3f}×", f"{d['mean_diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"]
            d = r["fused - fused_without_feedback"]
            cells.append(f"{d['mean_diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
            lines.append(f"| {engine} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
