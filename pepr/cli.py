"""The `pepr` command: import the paper's results, score runs, summarise and merge databases.

Exit codes (see `pepr.cli_frame`): 0 success, 2 bad usage or bad input (one line on stderr),
1 anything else.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from pepr import __version__
from pepr.claims import owners_gone
from pepr.cli_frame import Parser, label, run_command
from pepr.errors import PeprError, one_line
from pepr.inference import BUSY_SIGNS, attach_where_weighted, busy_bench_text, size_gap_text
from pepr.inference import summary as bench_summary
from pepr.paper import PAPER_RESULTS_URL, import_paper
from pepr.resources import RESOURCES
from pepr.score import NORMALIZATIONS, check_alpha, check_measured, estimated_energy_text, grid_span_text, grid_spans, nothing_to_score, parse_weights, score
from pepr.store import RunStore, merge
from pepr.text import spreadsheet_csv

FORMATS = ("table", "csv", "json")
REPLACE_HELP = ("replace runs the database holds with other values (as after a corrected unit); "
                "without it such an import writes nothing")


def _alpha(text: str) -> float:
    try:
        return check_alpha(float(text))
    except (ValueError, PeprError):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 1, got {text!r}") from None


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits, got {text!r}")
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pepr",
        description="PePR: performance per resource unit (Selvan et al., NLDL 2025).",
    )
    parser.add_argument("--version", action="version", version=f"pepr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    imp = commands.add_parser(
        "import-paper",
        help="import the paper's published per-run results",
        description="Import the PePR paper's all_results.csv (131 models x 8 experiments). "
        f"Without SRC, fetch the authors' file at a pinned commit ({PAPER_RESULTS_URL}) "
        "and check its SHA-256. Re-importing adds nothing.",
    )
    imp.add_argument("src", nargs="?", help="all_results.csv: a path or an http(s) URL")
    imp.add_argument("--models", metavar="CSV", help="model_names.csv, for model type and efficient flag")
    imp.add_argument("--sha256", type=_sha256, help="expected SHA-256 of SRC")
    imp.add_argument("--db", required=True, help="DuckDB file to add the runs to (created if absent)")
    imp.add_argument("--replace", action="store_true", help=REPLACE_HELP)

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
    sc.add_argument("--alpha", type=_alpha, default=1.0, help="trade-off factor >= 1 (default 1; large ignores resources)")
    sc.add_argument("--format", choices=FORMATS, default="table")
    sc.add_argument(
        "--bench-device",
        metavar="NAME",
        help="the device whose inference benchmarks price infer_latency and infer_energy "
        "(needed when several were benchmarked; a unique part of the name will do)",
    )

    info = commands.add_parser("info", help="runs per experiment, source and status")
    info.add_argument("--db", required=True)

    _add_import_parser(commands)
    _add_report_parser(commands)

    mg = commands.add_parser(
        "merge",
        help="combine databases (e.g. one per GPU shard)",
        description="Copy every run of the sources into the target: runs it lacks are added, runs it "
        "holds as running are updated where a source has them finished. Merging again changes nothing.",
    )
    mg.add_argument("sources", nargs="+", metavar="DB")
    mg.add_argument("--into", required=True, metavar="DB")
    mg.add_argument("--prefer", metavar="DB", help="for a finished run that databases hold with different "
                    "results, keep this database's copy (a source or the target), and for a job trained ok in "
                    "several, its run; without it such runs stop the merge")
    return parser


def _add_import_parser(commands) -> None:
    from pepr.importer import FIELDS, IMPORTABLE_METHODS

    fields = ", ".join(f"{name} ({'/'.join(f.units)})" if f.units else name for name, f in FIELDS.items())
    ti = commands.add_parser(
        "import",
        help="import runs from your own results table (CSV, Parquet, JSON lines)",
        description="Map the columns of a results table (e.g. exported from W&B or MLflow) to run "
        "fields, convert their units exactly and add the runs. Everything is checked before "
        "the database is opened: one line names the file, row and column of the first problem. "
        "Rows without a run id get one from their content, so re-importing adds nothing; "
        "a run stored with other values stops the import unless --replace is given.",
    )
    ti.add_argument("src", metavar="SRC", help="the table: a path or an http(s) URL")
    ti.add_argument("--db", required=True, help="DuckDB file to add the runs to (created if absent)")
    ti.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    ti.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN[:UNIT]",
                    help=f"repeatable; the first unit listed is the default. Fields: {fields}".replace("%", "%%"))
    ti.add_argument("--experiment-name", type=label, metavar="LABEL", help="one experiment for every row (or --map experiment=COLUMN)")
    ti.add_argument("--format", choices=("csv", "parquet", "jsonl"), help="SRC's format (default: from its extension)")
    ti.add_argument("--codecarbon", metavar="CSV", help="CodeCarbon's emissions.csv: energy (CPU/GPU/RAM), CO2, duration, country")
    ti.add_argument("--join", metavar="KEY|CC_COLUMN=SRC_COLUMN", help="the key linking --codecarbon rows to SRC rows, e.g. experiment_id=run")
    ti.add_argument("--energy-tool", type=label, metavar="NAME", help="what measured the energy, e.g. codecarbon, carbontracker")
    ti.add_argument("--energy-method", metavar="PART=METHOD,...",
                    help=f"how each energy part was measured; PART cpu, gpu or ram; METHOD one of {', '.join(IMPORTABLE_METHODS)}")


def _import_table(args) -> int:
    from pepr.importer import import_table, parse_energy_methods

    if args.join and not args.codecarbon:
        raise PeprError("--join links --codecarbon to SRC: give --codecarbon too")
    imported = import_table(
        args.src, args.db, args.map, experiment=args.experiment_name, fmt=args.format,
        emissions=args.codecarbon, join=args.join, energy_tool=args.energy_tool,
        energy_methods=parse_energy_methods(args.energy_method), replace=args.replace,
    )
    print(f"{args.db}: {imported}")
    return 0


def _add_report_parser(commands) -> None:
    rp = commands.add_parser(
        "report",
        help="write a report of one experiment: Markdown, a LaTeX table, figures",
        description="Write report.md (what was compared, what it cost, how it was measured, the "
        "top models and what choosing by PePR saves), table.tex (booktabs) and figures as SVG, "
        "PNG and PDF into DIR. Needs the report extra (altair, vl-convert-python).",
    )
    rp.add_argument("--db", required=True)
    rp.add_argument("--experiment", required=True, metavar="LABEL")
    rp.add_argument("--weights", default="energy=1", help="resource weights, as for pepr score (default energy=1)")
    rp.add_argument("--normalization", choices=NORMALIZATIONS, default="minmax")
    rp.add_argument("--alpha", type=_alpha, default=1.0, help="trade-off factor >= 1 (default 1)")
    rp.add_argument("--bench-device", metavar="NAME", help="as for pepr score")
    rp.add_argument("--out", required=True, metavar="DIR", help="folder for the files (created if absent)")


def _weights(args) -> dict[str, float]:
    try:
        return parse_weights(args.weights)
    except PeprError as error:
        raise PeprError(f"--weights: {error}") from None


def _report(args) -> int:
    try:
        import altair  # noqa: F401
        import vl_convert  # noqa: F401  (altair renders through it)
    except ImportError as error:
        raise PeprError(f"pepr report needs the report extra ({error.name} is missing): "
                        "pip install 'pepr[report]'") from None
    from pepr.report import write_report

    paths = write_report(args.db, args.experiment, args.out, _weights(args), args.normalization,
                         args.alpha, args.bench_device)
    print("\n".join(str(path) for path in paths))
    return 0


def _import(args) -> int:
    imported = import_paper(args.src, args.db, models=args.models, sha256=args.sha256, replace=args.replace)
    print(f"{args.db}: {imported}")
    return 0


def _score(args) -> int:
    weights = _weights(args)
    store = RunStore(args.db)
    runs = store.runs()
    if args.experiment:
        unknown = sorted(set(args.experiment) - set(runs["experiment"]))
        if unknown:
            known = ", ".join(sorted(runs["experiment"].unique())) or "none"
            raise PeprError(f"--experiment: {args.db} has no experiment {', '.join(map(repr, unknown))} (known: {known})")
        runs = runs[runs["experiment"].isin(args.experiment)]
    runs, device = attach_where_weighted(store, runs, weights, args.bench_device)
    if device:
        print(one_line(f"inference cost measured on: {device}"), file=sys.stderr)
        for note in (busy_bench_text(runs), size_gap_text(runs)):
            if note:
                print(one_line(f"note: {note}"), file=sys.stderr)
    scored = f"experiment {', '.join(args.experiment)}" if args.experiment else args.db
    check_measured(runs, weights, scored)
    result = score(runs, weights, args.normalization, args.alpha)
    if result.table.empty:  # as `pepr report` says it: exit 2, not an empty table
        raise nothing_to_score(scored, result.excluded)
    bench_columns = [RESOURCES[name].column for name in result.weights if RESOURCES[name].benchmarked]
    bench_columns += ["bench_image_size"] if bench_columns else []
    bench_columns += ["bench_batch_size"] if "infer_energy" in result.weights else []
    columns = ["experiment", "model", "performance", *(f"R_{name}" for name in result.weights), *bench_columns, "pepr", "rank", "run_id"]
    table = result.table.sort_values(["experiment", "rank", "model"])[columns]
    if args.format == "csv":
        sys.stdout.write(spreadsheet_csv(table))
    elif args.format == "json":
        records = table.astype(object).where(table.notna(), None).to_dict("records")
        print(json.dumps(records, indent=1))  # every digit (pandas' to_json keeps 10 decimals)
    else:
        shown = table.assign(**{c: table[c].map(_cell) for c in ("experiment", "model", "run_id")})
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    estimated = estimated_energy_text(result.table, result.weights)
    if estimated:
        print(one_line(f"note: {estimated}"), file=sys.stderr)
    if "co2" in result.weights:
        for experiment, span in grid_spans(runs).items():
            print(one_line(f"note: the runs of {experiment} {grid_span_text(*span)}"), file=sys.stderr)
    for row in result.excluded.itertuples():
        print(one_line(f"excluded: {row.run_id} ({row.model} in {row.experiment}): {row.reason}"), file=sys.stderr)
    return 0


def _cell(text, width: int = 40) -> str:
    """A name as one line of at most `width` characters, for the terminal table (the csv and
    json formats give it whole)."""
    text = one_line(str(text))
    return text if len(text) <= width else text[: width - 1] + "…"


def _info(args) -> int:
    store = RunStore(args.db)
    summary = store.summary()
    if summary.empty:
        print(f"{args.db}: no runs")
        _bench_info(store)
        return 0
    table = summary.pivot_table(
        index=["experiment", "source"], columns="status", values="runs", aggfunc="sum", fill_value=0
    )
    table.insert(0, "runs", table.sum(axis=1))
    print(f"{args.db}: {int(table['runs'].sum())} run(s) in {summary['experiment'].nunique()} experiment(s)")
    table = table.reset_index().rename_axis(columns=None)
    print(table.assign(experiment=table["experiment"].map(_cell), source=table["source"].map(_cell)).to_string(index=False))
    running = store.runs(status="running").to_dict("records")
    gone = [(row["model"], why) for row, why in zip(running, owners_gone(running, by_agent=False), strict=True) if why]
    if gone:
        named = "; ".join(f"{model}: {why}" for model, why in gone[:3]) + (f"; {len(gone) - 3} more" if len(gone) > 3 else "")
        print(one_line(f"{len(gone)} running run(s) whose agent is gone ({named}): the next sweep over their "
                       "jobs takes them over"))
    _bench_info(store)
    return 0


def _bench_info(store: RunStore) -> None:
    """One line per device with inference benchmarks."""
    benchmarks = bench_summary(store.benchmarks())
    for row in benchmarks.itertuples():
        failed = f", {row.models_failed} failed" if row.models_failed else ""
        noisy = f" ({row.models_noisy} on a busy machine: {BUSY_SIGNS})" if row.models_noisy else ""
        print(one_line(f"benchmarks on {row.device}: {row.models_ok} model(s) ok{noisy} at {row.image_size} px{failed}, "
                       f"last {row.last:%Y-%m-%d}"))


def _merge(args) -> int:
    print(f"{args.into}: {merge(args.sources, args.into, args.prefer)}")
    return 0


COMMANDS = {"import-paper": _import, "score": _score, "info": _info, "merge": _merge, "import": _import_table, "report": _report}


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """The console entry point; returns the exit status (see `pepr.cli_frame`)."""
    return run_command("pepr", _run, argv)


if __name__ == "__main__":
    sys.exit(main())
