"""The ``ecomrec`` command. Exit codes: 0 ok, 1 unexpected failure, 2 bad usage or bad input data."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ecomrec import __version__
from ecomrec.exceptions import EcomrecError

logger = logging.getLogger("ecomrec")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (EcomrecError, ValueError) as exc:
        print(f"ecomrec {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecomrec", description="E-commerce recommendation and search.")
    parser.add_argument("--version", action="version", version=f"ecomrec {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser(
        "bench",
        help="run the offline evaluation protocol (every method, one split) and write the report",
        description="Run the fixed offline protocol (DESIGN.md) on UCI Online Retail data and write "
        "report.json plus .md and .png files beside it.",
    )
    bench.add_argument("--data", required=True, help="Online Retail folder of per-day CSVs, one CSV, or the xlsx")
    bench.add_argument("--test-from", required=True, help="first day of the target window, YYYY-MM-DD")
    bench.add_argument("--test-to", help="last day of the target window (inclusive); default: end of the data")
    bench.add_argument("--methods", help="comma-separated subset of methods (default: all)")
    bench.add_argument("--output", required=True, help="path of the JSON report")
    bench.add_argument("--latency-users", type=int, help="users timed one at a time per method")
    bench.set_defaults(run=_bench)

    index = commands.add_parser("index", help="vector index maintenance", description="Vector index maintenance.")
    index_commands = index.add_subparsers(dest="index_command", metavar="INDEX_COMMAND")
    rebuild = index_commands.add_parser(
        "rebuild",
        help="build a model's index for the current catalog, validate it, swap it in atomically",
        description="Build a new index over a saved model's item vectors, restricted to the items of "
        "--catalog when given; check it against exact search; write it to --output, replacing what "
        "is there in one atomic step (readers of the old index are unaffected; a killed rebuild "
        "leaves the old index in place).",
    )
    rebuild.add_argument("--model", required=True, help="folder of a saved ALSRetriever (ALSRetriever.save)")
    rebuild.add_argument("--catalog", help="CSV or Parquet listing the items to index (default: every item with factors)")
    rebuild.add_argument("--item-column", default="item_id", help="catalog column holding item ids (default item_id)")
    rebuild.add_argument("--kind", choices=("auto", "flat", "ivf_flat", "hnsw", "ivf_pq"), help="index kind (default: the model's)")
    rebuild.add_argument("--output", required=True, help="index folder to write, e.g. indexes/als")
    rebuild.set_defaults(run=_index_rebuild)
    return parser


def _bench(args: argparse.Namespace) -> int:
    from ecomrec.config import ProtocolConfig
    from ecomrec.evaluation import benchmark

    protocol = ProtocolConfig() if args.latency_users is None else ProtocolConfig(latency_users=args.latency_users)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = benchmark(
        args.data, args.test_from, args.test_to, methods=methods, protocol=protocol, show_progress=not args.quiet
    )
    written = report.save(args.output)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _index_rebuild(args: argparse.Namespace) -> int:
    from ecomrec.index.store import rebuild_model_index

    result = rebuild_model_index(args.model, args.output, catalog=args.catalog, item_column=args.item_column, kind=args.kind)
    print(
        f"index {result['output']}: {result['kind']} over {result['n_items']:,} items "
        f"(recall@10 vs exact {result['recall_at_10']:.3f}; {result['cold_items']:,} catalog items without factors skipped) "
        f"in {result['seconds']:.2f}s"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
