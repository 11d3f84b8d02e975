"""The ``ecomrec`` command.

Exit codes: 0 ok; 1 unexpected failure; 2 bad usage or bad input data; 3 a missing, corrupt or
mismatched artifact (engine or index folder); 4 an unknown user or item id; 5 ``monitor``: refit
advised (its own code, so a scheduler can tell it from a broken engine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ecomrec.version import __version__
from ecomrec.config import INDEX_KINDS
from ecomrec.exceptions import ArtifactError, EcomrecError, UnknownIdError
from ecomrec.scale import BACKENDS

logger = logging.getLogger("ecomrec")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ARTIFACT, EXIT_UNKNOWN_ID, EXIT_REFIT_ADVISED = 0, 1, 2, 3, 4, 5


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or EXIT_OK)
    except UnknownIdError as exc:
        return _fail(args, exc, EXIT_UNKNOWN_ID)
    except ArtifactError as exc:
        return _fail(args, exc, EXIT_ARTIFACT)
    except (EcomrecError, ValueError, TypeError, FileNotFoundError) as exc:
        return _fail(args, exc, EXIT_USAGE)


def _fail(args: argparse.Namespace, exc: Exception, code: int) -> int:
    print(f"ecomrec {args.command}: error: {exc}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecomrec", description="E-commerce recommendation and search: hybrid retrieval (ALS + fine-tuned bi-encoder, "
        "FAISS) and a purchase-probability reranker.",
        epilog="Exit codes: 0 ok, 1 unexpected failure, 2 bad usage or input data, 3 missing/corrupt artifact, 4 unknown id, "
        "5 monitor: refit advised.")
    parser.add_argument("--version", action="version", version=f"ecomrec {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_fit, _add_update, _add_monitor, _add_forget, _add_recommend, _add_search, _add_index, _add_bench, _add_demo):
        add(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int], help: str,
             description: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` that runs ``run(args)``."""
    sub = commands.add_parser(name, help=help, description=description)
    sub.set_defaults(run=run)
    return sub


def _add_data_arguments(sub: argparse.ArgumentParser, data_help: str) -> None:
    """The data a command reads: Online Retail (``--data``) or any shop's log (``--interactions``)."""
    sub.add_argument("--data", help=data_help)
    sub.add_argument("--interactions", help="instead of --data: any shop's log, a CSV/Parquet file or folder "
                     "(columns user_id, item_id, timestamp unless --columns says otherwise)")
    sub.add_argument("--catalog", help="with --interactions: the catalog, CSV or Parquet (items never bought are kept)")
    sub.add_argument("--columns", help="the log's column names, e.g. user=customer,item=sku,time=ts,quantity=qty "
                     "(keys user, item, time, quantity, weight, event)")
    sub.add_argument("--catalog-item", default="item_id", help="the catalog's item id column (default item_id)")
    sub.add_argument("--catalog-text", default="title", help="catalog column(s) joined into the item text, e.g. "
                     "title,category (default title)")
    sub.add_argument("--catalog-category", help="the catalog's category column (search can filter by it)")


def _add_output_format(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")


def _add_fit(commands: argparse._SubParsersAction) -> None:
    fit = _command(commands, "fit", _fit, "fit the whole pipeline on a log and save the engine",
                   "Fit candidate generation (ALS, item-kNN, fine-tuned bi-encoder, fusion) and the "
                   "purchase-probability reranker, build the indexes, and save everything to --output.")
    _add_data_arguments(fit, "Online Retail data: folder of per-day CSVs, one CSV, or the UCI xlsx")
    fit.add_argument("--config", help="EngineConfig TOML file (default: the tuned defaults)")
    fit.add_argument("--until", help="fit only on purchases before this day, YYYY-MM-DD (e.g. to evaluate later)")
    fit.add_argument("--warm-start", metavar="ENGINE", help="a saved engine to continue from (a warm refit: its models "
                     "continue on the new purchases, its fusion is kept; without --config, its config; without --data "
                     "or --interactions, its own log, updates included); prints what each part did as JSON")
    fit.add_argument("--output", required=True, help="engine folder to write, e.g. indexes/online-retail")


def _add_update(commands: argparse._SubParsersAction) -> None:
    update = _command(commands, "update", _update, "serve new purchases from a saved engine, training nothing",
                      "Append new purchases to a saved engine (histories, popularity, ALS rows of the customers and items "
                      "they touch, new customers and items) and save it as a new version; prints a JSON report. Rows it "
                      "holds already are skipped, so running the same update twice changes nothing; rows dated before its "
                      "last purchase that it lacks are an error (they need a refit).")
    update.add_argument("--engine", required=True, help="engine folder written by `ecomrec fit` (a new version is saved there)")
    _add_data_arguments(update, "new Online Retail purchases: folder of per-day CSVs or one CSV")


def _add_monitor(commands: argparse._SubParsersAction) -> None:
    monitor = _command(commands, "monitor", _monitor, "judge a saved engine on recent purchases it has not seen",
                       "Replay recent purchases (after the engine's last one) against what the engine recommends: ndcg@10, "
                       "recall, calibration (ECE, Brier), coverage, unknown customers and items, item-share drift (PSI), "
                       "beside its own validation figures; writes a JSON report and optionally a plot. Exit code 0: ok; "
                       "5: refit advised.")
    monitor.add_argument("--engine", required=True, help="engine folder written by `ecomrec fit`")
    _add_data_arguments(monitor, "recent Online Retail purchases: folder of per-day CSVs or one CSV")
    monitor.add_argument("--output", required=True, help="the JSON report to write")
    monitor.add_argument("--plot", help="also write this PNG (reliability diagram, item-share drift)")
    monitor.add_argument("-k", type=int, default=10, help="recommendations judged per customer (default 10)")


def _add_forget(commands: argparse._SubParsersAction) -> None:
    forget = _command(commands, "forget", _forget, "forget customers: their purchases, ids and per-customer state",
                      "Remove customers from a saved engine (their purchases, ids, histories, ALS rows, vectors) and save it "
                      "as its only version (older ones may hold them); prints a JSON report. Networks trained on their "
                      "purchases keep an aggregate influence until the next fit.")
    forget.add_argument("--engine", required=True, help="engine folder written by `ecomrec fit`")
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated customer ids")
    who.add_argument("--users-file", help="a text file of customer ids, one per line")


def _add_recommend(commands: argparse._SubParsersAction) -> None:
    rec = _command(commands, "recommend", _recommend, "top items per user with purchase probabilities and why",
                   "Recommend items for known users (--users) or for one unseen user given what they bought (--history).")
    rec.add_argument("--engine", required=True, help="engine folder written by `ecomrec fit`")
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated customer ids")
    who.add_argument("--history", help="comma-separated item ids bought by an unseen user")
    rec.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    rec.add_argument("--exclude-seen", action="store_true", help="leave out items the user already bought")
    rec.add_argument("--on-unknown", choices=("raise", "warn", "drop"), help="unknown ids: fail (default), warn, or drop")
    _add_output_format(rec)


def _add_search(commands: argparse._SubParsersAction) -> None:
    search = _command(commands, "search", _search, "free-text product search",
                      "Search the catalog by text, optionally personalised by a known user.")
    search.add_argument("--engine", required=True, help="engine folder written by `ecomrec fit`")
    search.add_argument("--query", required=True, action="append", help="search text (repeat for a batch)")
    search.add_argument("--user", help="personalise with this customer's history")
    search.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--category", action="append", help="only items of this catalog category (repeat for several)")
    _add_output_format(search)


def _add_index(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser("index", help="vector index maintenance", description="Vector index maintenance.")
    rebuild = _command(index.add_subparsers(dest="index_command", metavar="INDEX_COMMAND"), "rebuild", _index_rebuild,
                       "re-index for a changed catalog, validate, swap in atomically",
                       "With --engine: re-embed the changed titles of --catalog (unchanged ones come from the cache), rebuild "
                       "and validate the indexes and save the engine in place (atomic). With --model: build a saved "
                       "ALSRetriever's index over the --catalog items and write it to --output. Readers of the old version are "
                       "unaffected; a killed rebuild leaves the old one in place.")
    target = rebuild.add_mutually_exclusive_group(required=True)
    target.add_argument("--engine", help="engine folder written by `ecomrec fit` (updated in place)")
    target.add_argument("--model", help="folder of a saved ALSRetriever (ALSRetriever.save)")
    rebuild.add_argument("--catalog", help="CSV or Parquet of the current catalog (item ids; with --engine also titles)")
    rebuild.add_argument("--item-column", default="item_id", help="catalog column holding item ids (default item_id)")
    rebuild.add_argument("--text-column", default="title", help="catalog column holding titles, with --engine (default title)")
    rebuild.add_argument("--category-column", help="catalog column holding categories (search filters), with --engine")
    rebuild.add_argument("--kind", choices=INDEX_KINDS, help="with --model: index kind")
    rebuild.add_argument("--output", help="with --model: index folder to write, e.g. indexes/als")
    rebuild.add_argument("--backend", choices=BACKENDS, default="local",
                         help="with --engine: where new titles are encoded; ray needs the scale extra (default local)")
    rebuild.add_argument("--workers", type=int, default=2, help="with --backend ray: encoding actors, one CPU each (default 2)")
    rebuild.add_argument("--address", help="with --backend ray: a running cluster's address, or auto (default: a local Ray for the call)")
    rebuild.add_argument("--shards", type=int, help="with --engine: split each index over this many FAISS shards from now on "
                         "(unchanged shards are kept as they are; with --backend ray changed ones build in parallel)")


def _add_bench(commands: argparse._SubParsersAction) -> None:
    bench = _command(commands, "bench", _bench,
                     "run the offline evaluation protocol (every method, one split) and write the report",
                     "Run the fixed offline protocol (docs/evaluation.md) on UCI Online Retail (--data) or any "
                     "shop's log (--interactions, --catalog) and write report.json plus .md and .png files beside it.")
    _add_data_arguments(bench, "Online Retail folder of per-day CSVs, one CSV, or the xlsx")
    window = bench.add_mutually_exclusive_group(required=True)
    window.add_argument("--test-from", help="first day of the target window, YYYY-MM-DD")
    window.add_argument("--origins", help="rolling origins, comma-separated YYYY-MM-DD: one fit per origin, each "
                        "scored on the month after it, the slice table pooled over them")
    bench.add_argument("--test-to", help="last day of the target window (inclusive); default: end of the data")
    bench.add_argument("--methods", help="comma-separated subset of methods (default: all)")
    bench.add_argument("--output", required=True, help="path of the JSON report")
    bench.add_argument("--latency-users", type=int, help="users timed one at a time per method")


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = _command(commands, "demo", _demo,
                    "the whole pipeline on a shop's log (Online Retail by default): fit, recommend, search, benchmark",
                    "Fit the engine on the purchases before --test-from, save it, print a few users' recommendations (purchase "
                    "probabilities, why) and searches, then score it against the baselines on the weeks after --test-from. "
                    "Online Retail (--data) or any shop's log (--interactions).")
    _add_data_arguments(demo, "Online Retail data (default: $ECOMREC_ONLINE_RETAIL, the cache, or a download)")
    demo.add_argument("--search", action="append", help="a search to show (repeat; default: a few for the shop)")
    demo.add_argument("--test-from", default="2011-10-01", help="split day (default 2011-10-01)")
    demo.add_argument("--config", help="EngineConfig TOML file (default: the tuned defaults)")
    demo.add_argument("--output", default="indexes/online-retail", help="engine folder (default indexes/online-retail)")
    demo.add_argument("--report", default="benchmarks/results/demo.json", help="benchmark report path")


# ---------------------------------------------------------------------- commands
def _load_data(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ecomrec import datasets

    if not args.interactions:
        if args.catalog or args.columns:
            raise ValueError("--catalog and --columns go with --interactions (a generic log)")
        return datasets.online_retail(args.data)
    if args.data:
        raise ValueError("give --data (Online Retail) or --interactions (generic log), not both")
    names = {"user": "user", "item": "item", "time": "timestamp", "quantity": "quantity", "weight": "weight", "event": "event"}
    given = dict(part.split("=", 1) for part in _split(args.columns or "") if "=" in part)
    if malformed := [part for part in _split(args.columns or "") if "=" not in part] + sorted(set(given) - set(names)):
        raise ValueError(f"--columns takes key=column pairs with keys {sorted(names)}; cannot read {malformed}")
    columns = datasets.InteractionColumns(**{names[key]: column for key, column in given.items()})
    catalog_columns = datasets.CatalogColumns(item=args.catalog_item, text=tuple(_split(args.catalog_text)), category=args.catalog_category)
    return datasets.from_files(args.interactions, args.catalog, columns=columns, catalog_columns=catalog_columns)


def _engine_config(path: str | None):  # type: ignore[no-untyped-def]
    from ecomrec.config import EngineConfig

    return EngineConfig.from_toml(path) if path else EngineConfig()


def _fit(args: argparse.Namespace) -> int:
    from ecomrec.engine import Engine

    served = None if args.warm_start is None else Engine.load(args.warm_start)
    if served is not None and not (args.data or args.interactions):
        if served.snapshot.log is None:
            raise ArtifactError(f"{args.warm_start} holds no purchase log (saved before engines kept it): give --data or --interactions")
        data = served.snapshot.log
    else:
        data = _load_data(args)
    if args.until:
        data = data.between(None, args.until)
    config = served.config if served is not None and not args.config else _engine_config(args.config)
    engine = Engine(config, show_progress=not args.quiet).fit(data, warm_start=served)
    engine.save(args.output)
    if served is not None:
        print(json.dumps(engine.fit_report_["warm_start"], indent=2, default=float))
    print(f"fitted on {len(data):,} purchases ({data.n_users:,} users, {data.n_items:,} items) "
          f"in {engine.fit_seconds_:.0f} s; saved to {args.output}")
    return EXIT_OK


def _update(args: argparse.Namespace) -> int:
    from ecomrec.engine import Engine

    engine = Engine.load(args.engine)
    report = engine.update(_load_data(args))
    if report["snapshot"] == "updated":
        engine.save(args.engine)
    print(json.dumps(report, indent=2, default=float))
    return EXIT_OK


def _monitor(args: argparse.Namespace) -> int:
    from ecomrec.engine import Engine

    report = Engine.load(args.engine).monitor(_load_data(args), k=args.k, plot=args.plot)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    print(f"{report['verdict']}{': ' + ', '.join(report['reasons']) if report['reasons'] else ''} "
          f"(ndcg@10 {report.get('ndcg@10', float('nan')):.4f}, validation {report['validation'].get('ndcg@10', float('nan')):.4f}; "
          f"PSI {report['drift'].get('psi', float('nan')):.3f}); report in {args.output}")
    return EXIT_REFIT_ADVISED if report["reasons"] else EXIT_OK


def _forget(args: argparse.Namespace) -> int:
    from ecomrec.artifacts import older_versions
    from ecomrec.engine import Engine

    users = _split(args.users) if args.users else [u.strip() for u in Path(args.users_file).read_text().splitlines() if u.strip()]
    engine = Engine.load(args.engine)
    report = engine.forget(users)
    if report["forgotten"]:
        engine.save(args.engine)
    report["older_versions_left"] = older_versions(args.engine)  # ones a reader held open: run forget again later
    print(json.dumps(report, indent=2, default=float))
    return EXIT_OK


def _recommend(args: argparse.Namespace) -> int:
    from ecomrec.engine import Engine

    engine = Engine.load(args.engine)
    who = {"user_ids": _split(args.users)} if args.users else {"histories": [_split(args.history)]}
    exclude = "seen" if args.exclude_seen else None
    _print(engine.recommend(**who, k=args.k, exclude=exclude, on_unknown=args.on_unknown), args.format)
    return EXIT_OK


def _search(args: argparse.Namespace) -> int:
    from ecomrec.engine import Engine

    _print(Engine.load(args.engine).search(args.query, user_id=args.user, k=args.k, category=args.category), args.format)
    return EXIT_OK


def _index_rebuild(args: argparse.Namespace) -> int:
    if args.engine:
        return _engine_rebuild(args)
    if args.backend != "local":
        raise ValueError("--backend goes with --engine (a saved ALS model's index has no titles to encode)")
    if args.shards is not None:
        raise ValueError("--shards goes with --engine")
    if not args.output:
        raise ValueError("--model needs --output (the index folder to write)")
    from ecomrec.retrieval.als import rebuild_model_index

    result = rebuild_model_index(args.model, args.output, catalog=args.catalog, item_column=args.item_column, kind=args.kind)
    print(f"index {result['output']}: {result['kind']} over {result['n_items']:,} items (recall@10 vs exact "
          f"{result['recall_at_10']:.3f}; {result['cold_items']:,} catalog items without factors skipped) "
          f"in {result['seconds']:.2f}s")
    return EXIT_OK


def _engine_rebuild(args: argparse.Namespace) -> int:
    from ecomrec.data.io import read_table
    from ecomrec.engine import Engine

    engine = Engine.load(args.engine)
    catalog = None
    if args.catalog:
        wanted = {args.item_column: "item_id", args.text_column: "text", **({args.category_column: "category"} if args.category_column else {})}
        catalog = read_table(Path(args.catalog), list(wanted)).rename(columns=wanted)[list(wanted.values())]
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON report only (Ray prints worker events)
        report = engine.rebuild_index(catalog, backend=args.backend, workers=args.workers, address=args.address, shards=args.shards)
        engine.save(args.engine)
    print(json.dumps(report, indent=2, default=float))
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from ecomrec.config import ProtocolConfig
    from ecomrec.evaluation import benchmark

    protocol = ProtocolConfig() if args.latency_users is None else ProtocolConfig(latency_users=args.latency_users)
    methods = _split(args.methods) if args.methods else None
    data = args.data if args.data and not args.interactions else _load_data(args)  # a path: load time is reported
    if args.origins:
        return _bench_origins(args, data, methods, protocol)
    report = benchmark(data, args.test_from, args.test_to, methods=methods, protocol=protocol, show_progress=not args.quiet)
    written = report.save(args.output)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _bench_origins(args: argparse.Namespace, data: Any, methods: list[str] | None, protocol: Any) -> int:
    from ecomrec.evaluation import benchmark_origins, origins_markdown

    if args.test_to:
        raise ValueError("--test-to goes with --test-from; with --origins each window is the month after its origin")
    result = benchmark_origins(data, _split(args.origins), methods=methods, protocol=protocol, show_progress=not args.quiet)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    markdown = origins_markdown(result)
    output.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {output}, {output.with_suffix('.md')}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ecomrec.demo import run_demo

    return run_demo(_load_data(args), args.test_from, _engine_config(args.config), args.output, args.report,
                    show_progress=not args.quiet, searches=args.search)


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _print(results, fmt: str) -> None:  # type: ignore[no-untyped-def]
    from ecomrec.engine import describe

    print(json.dumps(results.to_records(), indent=2) if fmt == "json" else describe(results))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
