"""The `pepr` command: import the paper's results, score runs, summarise and merge databases.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from pepr import __version__
from pepr.errors import PeprError
from pepr.paper import PAPER_RESULTS_URL, import_paper
from pepr.score import NORMALIZATIONS, RESOURCES, parse_weights, score
from pepr.store import RunStore, merge

FORMATS = ("table", "csv", "json")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pepr",
        description="PePR: performance per resource unit (Selvan et al., NLDL 2025).",
    )
    parser.add_argument("--version", action="version", version=f"pepr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    imp = commands.add_parser(
        "import-paper",
        help="import the paper's published per-run results",
        description="Import the PePR paper's all_results.csv (131 models x 8 experiments). "
        f"Without SRC, fetch the authors' file at a pinned commit ({PAPER_RESULTS_URL}) "
        "and check its SHA-256. Re-importing adds nothing.",
    )
    imp.add_argument("src", nargs="?", help="all_results.csv: a path or an http(s) URL")
    imp.add_argument("--models", metavar="CSV", help="model_names.csv, for model type and efficient flag")
    imp.add_argument("--sha256", help="expected SHA-256 of SRC")
    imp.add_argument("--db", required=True, help="DuckDB file to add the runs to (created if absent)")

    sc = commands.add_parser(
        "score",
        help="score runs with PePR",
        description="One line per run: experiment, model, performance, the normalised resources "
        "used, PePR = alpha*P/(alpha + sum_i w_i R_i) and its rank within the experiment.",
    )
    sc.add_argument("--db", required=True)
    sc.add_argument("--experiment", nargs="+", action="extend", metavar="LABEL", help="only these experiments")
    sc.add_argument(
        "--weights",
        default="energy=1",
        help=f"resource weights, rescaled to sum 1 (default energy=1, PePR-E); resources: {', '.join(RESOURCES)}",
    )
    sc.add_argument("--normalization", choices=NORMALIZATIONS, default="minmax", help="within each experiment (default minmax)")
    sc.add_argument("--alpha", type=float, default=1.0, help="trade-off factor > 0 (default 1; large ignores resources)")
    sc.add_argument("--format", choices=FORMATS, default="table")

    info = commands.add_parser("info", help="runs per experiment, source and status")
    info.add_argument("--db", required=True)

    mg = commands.add_parser(
        "merge",
        help="combine databases (e.g. one per GPU shard)",
        description="Copy every run of the sources into the target: runs it lacks are added, runs it "
        "holds as running are updated where a source has them finished. Merging again changes nothing.",
    )
    mg.add_argument("sources", nargs="+", metavar="DB")
    mg.add_argument("--into", required=True, metavar="DB")
    return parser


def _import(args) -> int:
    added = import_paper(args.src, args.db, models=args.models, sha256=args.sha256)
    print(f"{args.db}: added {added} run(s)")
    return 0


def _score(args) -> int:
    weights = parse_weights(args.weights)
    runs = RunStore(args.db).runs()
    if args.experiment:
        unknown = sorted(set(args.experiment) - set(runs["experiment"]))
        if unknown:
            known = ", ".join(sorted(runs["experiment"].unique())) or "none"
            raise PeprError(f"{args.db}: no experiment {', '.join(unknown)} (known: {known})")
        runs = runs[runs["experiment"].isin(args.experiment)]
    result = score(runs, weights, args.normalization, args.alpha)
    columns = ["experiment", "model", "performance", *(f"R_{name}" for name in result.weights), "pepr", "rank", "run_id"]
    table = result.table.sort_values(["experiment", "rank", "model"])[columns]
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(table.to_json(orient="records", indent=1))
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(table) else "no runs to score")
    for row in result.excluded.itertuples():
        print(f"excluded: {row.run_id} ({row.model} in {row.experiment}): {row.reason}", file=sys.stderr)
    return 0


def _info(args) -> int:
    summary = RunStore(args.db).summary()
    if summary.empty:
        print(f"{args.db}: no runs")
        return 0
    table = summary.pivot_table(
        index=["experiment", "source"], columns="status", values="runs", aggfunc="sum", fill_value=0
    )
    table.insert(0, "runs", table.sum(axis=1))
    print(f"{args.db}: {int(table['runs'].sum())} run(s) in {summary['experiment'].nunique()} experiment(s)")
    print(table.reset_index().rename_axis(columns=None).to_string(index=False))
    return 0


def _merge(args) -> int:
    merged = merge(args.sources, args.into)
    updated = f", updated {merged.updated} it had unfinished" if merged.updated else ""
    print(f"{args.into}: added {merged.added} run(s){updated}")
    return 0


COMMANDS = {"import-paper": _import, "score": _score, "info": _info, "merge": _merge}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PeprError as error:
        print(f"pepr: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("pepr: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: still one line, and exit 1
        print(f"pepr: unexpected error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
