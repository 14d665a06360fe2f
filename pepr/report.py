"""A report of one experiment to take away: Markdown, a LaTeX table and figures.

`build_report` is pure (runs in, text and Altair charts out); `report_files` renders it to the
files' bytes offline (vl-convert, no browser); `write_report` reads a database and writes them.
Every score comes from `pepr.score.score`; labels and readable units from `pepr.resources`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from pepr import __version__
from pepr.errors import PeprError
from pepr.inference import attach_where_weighted
from pepr.resources import (
    ENERGY_METHODS, ENERGY_PARTS, LAST_EPOCH, PER_EPOCH, RESOURCES, format_value, is_estimate, last_epoch_only,
    scoped_unit, three_digits,
)
from pepr.score import by_model, check_measured, estimated_energy_text, grid_span_text, grid_spans, nothing_to_score, normalize_weights, pareto_front, score, strongest
from pepr.store import RunStore
from pepr.text import latex_needs, latex_text, markdown_code, markdown_text

FIGURE_FORMATS = ("svg", "png", "pdf")
TOP = 5
NORMALIZATION_TEXT = {
    "minmax": "min-max within the experiment, R = (r - r_min) / (r_max - r_min)",
    "max": "share of the maximum within the experiment, R = r / r_max",
}


@dataclass(frozen=True, eq=False)  # a DataFrame inside: no field-wise equality
class Report:
    """A report's Markdown and LaTeX table, and the ranked table its charts are drawn from."""

    markdown: str
    latex: str
    table: pd.DataFrame
    weights: Mapping[str, float]
    per_epoch: bool = False  # the runs recorded their last epoch's training time alone (the paper's)

    @property
    def charts(self) -> dict[str, alt.TopLevelMixin]:
        """The figures (name -> Altair chart), built when the files are: the dashboard makes a
        report on every new choice, and only a download needs them."""
        return {
            "performance_vs_resource": performance_vs_resource(self.table, self.weights, self.per_epoch),
            "pepr_ranking": pepr_ranking(self.table),
        }


# -- formatting ----------------------------------------------------------------------------


def _number(value: float) -> str:
    """A table cell: three significant digits, `n/a` where missing."""
    return "n/a" if value is None or not np.isfinite(value) else three_digits(value)


def _amount(name: str, value: float) -> str:
    return format_value(value, RESOURCES[name])


def _lower(label: str) -> str:
    """`Training energy` -> `training energy`, but `CO2eq emitted` stays."""
    return label if label[:2].isupper() else label[:1].lower() + label[1:]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- the report ----------------------------------------------------------------------------


def build_report(
    runs: pd.DataFrame,
    experiment: str,
    weights: Mapping[str, float],
    normalization: str = "minmax",
    alpha: float = 1.0,
    source: str = "",
) -> Report:
    """The report of `experiment` among `runs` (the runs of one database)."""
    known = ", ".join(sorted(runs["experiment"].dropna().unique())) or "none"
    runs = runs[runs["experiment"] == experiment]
    if runs.empty:
        raise PeprError(f"--experiment: {source or 'the runs'} has no experiment {experiment!r} (known: {known})")
    check_measured(runs, weights, f"experiment {experiment}")
    result = score(runs, weights, normalization, alpha)
    if result.table.empty:
        raise nothing_to_score(f"{source or 'the runs'}, experiment {experiment!r}", result.excluded)
    table = by_model(result.table)  # a model's runs (seeds) ranked by their means, as the dashboard does
    weights = result.weights
    per_epoch = last_epoch_only(runs)
    sections = [
        f"# PePR report: {markdown_text(experiment)}",
        _compared(runs, result.table, result.excluded, experiment, weights, normalization, alpha, source),
        _costs(runs),
        _measurement(runs),
        _top(table, weights, per_epoch),
        _savings(table, _bench_device(runs), per_epoch),
        "## Files\n\n- `table.tex`: the ranking as a LaTeX table (needs `\\usepackage{booktabs}`"
        + "".join(f"; its names need {markdown_text(needs)}" for needs in filter(None, [latex_needs([experiment, *table["model"]])]))
        + ")\n"
        + "".join(f"- `{name}.svg`, `.png`, `.pdf`: {chart_title}\n" for name, chart_title in _FIGURE_TITLES.items())
        + "\n![Performance against resource](performance_vs_resource.svg)\n",
    ]
    estimated = estimated_energy_text(result.table, weights) is not None
    return Report("\n\n".join(sections),
                  latex_table(table, experiment, weights, normalization, alpha, estimated, per_epoch),
                  table, weights, per_epoch)


_FIGURE_TITLES = {
    "performance_vs_resource": "performance against resource, the Pareto front drawn and the best PePR model marked",
    "pepr_ranking": "PePR and performance of the top models",
}


def _variant(weights: Mapping[str, float]) -> str:
    named = {"energy": "PePR-E", "co2": "PePR-C", "train_time": "PePR-T", "gpu_memory": "PePR-M", "train_size": "PePR-D"}
    if not weights:
        return "PePR with resources ignored (all weights 0: the score is the performance)"
    if len(weights) == 1:
        name = next(iter(weights))
        return named.get(name, f"PePR over {_lower(RESOURCES[name].label)}")
    return "PePR over " + ", ".join(f"{_lower(RESOURCES[n].label)} (weight {w:.3g})" for n, w in weights.items())


def _compared(runs, table, excluded, experiment, weights, normalization, alpha, source) -> str:
    datasets = ", ".join(markdown_text(d) for d in sorted(runs["dataset"].dropna().unique())) or "not recorded"
    metrics = ", ".join(markdown_text(m) for m in sorted(runs["metric"].dropna().unique())) or "not recorded"
    lines = [
        "## What was compared",
        "",
        f"- Experiment {markdown_code(experiment)}" + (f" in {markdown_code(source)}" if source else "")
        + f": {table['model'].nunique()} "
        f"model(s) in {len(table)} scored run(s); dataset: {datasets}; performance metric: {metrics} "
        f"(from {table['performance'].min():.4f} to {table['performance'].max():.4f}).",
        *(["- A model with several scored runs (seeds) is ranked by their means: its performance, costs "
           "and PePR below are means over its runs."] if table["model"].duplicated().any() else []),
        f"- Score: {_variant(weights)}, PePR = alpha P / (alpha + sum_i w_i R_i) with alpha = {alpha:g}; "
        f"normalisation: {NORMALIZATION_TEXT[normalization]}.",
    ]
    spans = grid_spans(runs) if "co2" in weights else {}
    if spans:
        lines.append(f"- **CO2 across grids**: the runs {grid_span_text(*spans[experiment])}.")
    if len(excluded):
        lines.append("- Not scored: " + "; ".join(
            f"{len(models)} run(s), {_names(models)}: {markdown_text(reason)}"
            for reason, models in excluded.groupby("reason")["model"]) + ".")
    lines.append(f"- Written by pepr {__version__}, which computes PePR as Selvan et al. define it (NLDL 2025).")
    return "\n".join(lines)


def _names(models: pd.Series, most: int = 10) -> str:
    """Model names as Markdown text, the first `most` of them and how many more."""
    names = list(dict.fromkeys(models))
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(markdown_text(name) for name in names[:most]) + more


def _costs(runs: pd.DataFrame) -> str:
    rows = []
    for name in ("energy", "co2", "train_time", "infer_time"):
        values = pd.to_numeric(runs[RESOURCES[name].column], errors="coerce").dropna()
        if values.empty:
            rows.append([RESOURCES[name].label, "not measured", "", f"0 of {len(runs)}"])
            continue
        rows.append([RESOURCES[name].label, _amount(name, values.sum()), _amount(name, values.median()), f"{len(values)} of {len(runs)}"])
    lines = ["## What it cost", "", _md_table(["", "total", "median per run", "runs measured"], rows), ""]
    last_epoch = int((runs["train_time_scope"] == LAST_EPOCH).sum())
    if last_epoch:
        lines.append(f"- Training time is the **last epoch's** time for {last_epoch} of {len(runs)} run(s) (as recorded), not the whole run's.")
    intensity = pd.to_numeric(runs["carbon_intensity"], errors="coerce").dropna()
    countries = ", ".join(markdown_text(c) for c in sorted(runs["country"].dropna().unique())) or "not recorded"
    line = f"- Grid: {countries}"
    if len(intensity):
        low, high = f"{intensity.min():.0f}", f"{intensity.max():.0f}"
        spread = "" if low == high else f" (from {low} to {high})"
        sources = ", ".join(markdown_text(s) for s in sorted(runs["carbon_intensity_source"].dropna().unique()))
        line += f"; carbon intensity {intensity.median():.0f} g CO2eq/kWh (median){spread}" + (f", {sources}" if sources else "")
    lines.append(line + ".")
    pue = pd.to_numeric(runs["pue"], errors="coerce").dropna()
    if len(pue):
        lines.append("- PUE included in the energy: " + ", ".join(f"{p:g}" for p in sorted(pue.unique())) + ".")
    return "\n".join(lines)


def _trust(method) -> str:
    if not is_estimate(method):
        return ENERGY_METHODS.get(method, "not recorded")
    text = ENERGY_METHODS.get(method, ENERGY_METHODS["cpu-load-estimate"])  # a model of some kind
    return "**estimate**" + text.removeprefix("estimate")


def _measurement(runs: pd.DataFrame) -> str:
    lines = ["## Hardware and how it was measured", ""]
    devices = runs["device"].fillna("not recorded").value_counts()
    lines.append("- Hardware: " + "; ".join(f"{markdown_text(d)} ({n} run(s))" for d, n in devices.items()) + ".")
    tools = runs["energy_tool"].fillna("not recorded").value_counts()
    lines.append("- Energy measured with: " + "; ".join(f"{markdown_text(t)} ({n} run(s))" for t, n in tools.items()) + ".")
    benched = runs.dropna(subset=["bench_device"]) if "bench_device" in runs else runs.iloc[:0]
    if len(benched):  # inference costs come from another machine's benchmarks
        sizes = ", ".join(f"{size} px" for size in sorted(benched["bench_image_size"].unique()))
        batches = benched.dropna(subset=[RESOURCES["infer_energy"].column])["bench_batch_size"].value_counts().sort_index()
        lines.append(
            f"- Inference costs: benchmarked on {markdown_text(_bench_device(runs))} at {sizes}; "
            "latency per image at batch 1" + ("; energy per image at batch " if len(batches) else "")
            + ", ".join(f"{batch} ({n} run(s))" for batch, n in batches.items())
            + (": energy at different batch sizes, so compare it with care." if len(batches) > 1 else ".")
        )
    rows = []
    for part in ENERGY_PARTS:
        methods = runs[f"energy_{part}_method"].fillna("not recorded").value_counts()
        for method, count in methods.items():
            rows.append([part.upper(), markdown_text(method), str(count), _trust(None if method == "not recorded" else method)])
    lines += ["", _md_table(["energy part", "method", "runs", "how far to trust it"], rows), ""]
    estimated = runs[[f"energy_{part}_method" for part in ENERGY_PARTS]].map(is_estimate).any(axis=1)
    if estimated.any():
        lines.append(f"- {int(estimated.sum())} of {len(runs)} run(s) include an estimated part (flagged above).")
    provenance = runs["provenance"].dropna().value_counts()
    for text, count in provenance.items():
        lines.append(f"- Provenance ({count} run(s)): {markdown_text(text)}")
    return "\n".join(lines)


def _resource_columns(table: pd.DataFrame, weights, per_epoch: bool) -> list[tuple[str, str, float]]:
    """(resource, readable unit, factor) for each weighted resource."""
    return [(name, *scoped_unit(name, table[RESOURCES[name].column], per_epoch)) for name in weights]


def _top(table: pd.DataFrame, weights, per_epoch: bool) -> str:
    resources = _resource_columns(table, weights, per_epoch)
    header = ["rank", "model", "performance", *(RESOURCES[n].heading(u) for n, u, _ in resources), "PePR"]

    def rows(frame):
        return [
            [str(row["rank"]), markdown_text(row["model"]), f"{row['performance']:.4f}",
             *(_number(row[RESOURCES[n].column] / f) for n, _, f in resources), f"{row['pepr']:.4f}"]
            for _, row in frame.iterrows()
        ]

    by_performance = table.sort_values(["performance", "rank"], ascending=[False, True]).head(TOP)
    return "\n".join([
        "## Top models", "", "By PePR (rank 1 is the best trade-off):", "", _md_table(header, rows(table.head(TOP))),
        "", "By performance alone (the rank is still by PePR):", "", _md_table(header, rows(by_performance)),
    ])


def _bench_device(runs: pd.DataFrame) -> str | None:
    """The device the runs' inference costs were benchmarked on (one a report), or None."""
    return next(iter(runs["bench_device"].dropna()), None) if "bench_device" in runs else None


def _savings(table: pd.DataFrame, bench_device: str | None, per_epoch: bool) -> str:
    """What the best-PePR model saves against the best performer, resource by resource; an
    inference cost says the device it was benchmarked on, which is not where the runs trained,
    and training time that it is per epoch where the runs recorded their last epoch's alone."""
    best = table.iloc[0]
    top = strongest(table)
    lines = ["## What choosing by PePR saves", ""]
    if best["model"] == top["model"]:
        lines.append(f"The best PePR model, {markdown_text(best['model'])}, is also the best performer: nothing to trade.")
        return "\n".join(lines)
    gap = top["performance"] - best["performance"]
    lines.append(
        f"Choosing {markdown_text(best['model'])} (best PePR, performance {best['performance']:.4f}) over "
        f"{markdown_text(top['model'])} (best performance, {top['performance']:.4f}) gives up "
        f"{gap:.4f} of performance ({gap * 100:.2f} points) and:"
    )
    lines.append("")
    for name, resource in RESOURCES.items():
        if resource.column not in best:  # a benchmarked resource not attached to these runs
            continue
        chosen, other = best[resource.column], top[resource.column]
        if pd.isna(chosen) or pd.isna(other) or other <= 0 or chosen == other:
            continue
        change = 1 - chosen / other
        share = f"saves {change * 100:.1f}% of" if change >= 0 else f"costs {-change * 100:.1f}% more"
        where = f", benchmarked on {markdown_text(bench_device)}" if resource.benchmarked and bench_device else ""
        what = _lower(resource.label) + (f"{PER_EPOCH} (the last epoch's, as recorded)"
                                         if name == "train_time" and per_epoch else "")
        lines.append(
            f"- {share} {what}: {_amount(name, abs(other - chosen))} "
            f"({_amount(name, chosen)} instead of {_amount(name, other)}{where})"
        )
    return "\n".join(lines)


def slug(experiment: str) -> str:
    """An experiment's name for a LaTeX label or a file name: the name itself where it is made
    of ASCII letters, digits, `_` and `-` alone (so `derma_pt` and `derma-pt` stay apart); else
    those characters, dashes between them, and a digest of the name, so that `derma a/b` and
    `derma-a-b`, or `dérma` and `derma`, stay apart too."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", experiment):
        return experiment
    ascii_text = unicodedata.normalize("NFKD", experiment).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_text).strip("-") or "experiment"
    return f"{stem}-{hashlib.sha256(experiment.encode()).hexdigest()[:6]}"


def latex_table(table: pd.DataFrame, experiment: str, weights, normalization: str, alpha: float,
                estimated: bool = False, per_epoch: bool = False) -> str:
    """The ranking as a booktabs table, names escaped; `estimated`: the caption says that the
    energy is in part modelled, not measured; `per_epoch`: training time is the last epoch's."""
    resources = _resource_columns(table, weights, per_epoch)
    header = ["Rank", "Model", "Performance", *(latex_text(RESOURCES[n].heading(u)) for n, u, _ in resources), "PePR"]
    body = [
        " & ".join([str(row["rank"]), latex_text(row["model"]), f"{row['performance']:.4f}",
                    *(_number(row[RESOURCES[n].column] / f) for n, _, f in resources), f"{row['pepr']:.4f}"]) + r" \\"
        for _, row in table.iterrows()
    ]
    label = slug(experiment)
    caption = (
        f"{latex_text(_variant(weights))} of {len(table)} models in experiment \\texttt{{{latex_text(experiment)}}} "
        f"($\\alpha = {alpha:g}$, {'min-max' if normalization == 'minmax' else 'share-of-max'} normalisation)."
        + (" Energy in part estimated (modelled, not measured): comparable between these runs, not absolute." if estimated else "")
    )
    needs = latex_needs([experiment, *table["model"]])
    return "\n".join([
        f"% pepr {__version__} report: needs \\usepackage{{booktabs}}",
        *([f"% and, for its names, {needs}"] if needs else []),
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:pepr-{label}}}",
        r"\begin{tabular}{@{}rl" + "r" * (len(header) - 2) + "@{}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])


# -- figures -------------------------------------------------------------------------------

HALO = {"color": "white", "stroke": "white", "strokeWidth": 3, "strokeJoin": "round"}  # drawn under a label


def performance_vs_resource(table: pd.DataFrame, weights, per_epoch: bool = False) -> alt.LayerChart:
    """Performance against the resource (in readable units when one is weighted, else the
    weighted normalised R), the Pareto front drawn, the best PePR model marked and named."""
    if len(weights) == 1:
        name = next(iter(weights))
        unit, factor = scoped_unit(name, table[RESOURCES[name].column], per_epoch)
        x_values, x_title = table[RESOURCES[name].column] / factor, RESOURCES[name].heading(unit)
    else:
        x_values, x_title = table["resource"], "weighted normalised resource R"
    data = pd.DataFrame({
        "model": table["model"].astype(str), "x": x_values.astype(float), "performance": table["performance"],
        "pepr": table["pepr"], "rank": table["rank"],
    })
    data["front"] = pareto_front(data["performance"], data["x"])
    x = alt.X("x:Q", title=x_title)
    y = alt.Y("performance:Q", title="performance", scale=alt.Scale(zero=False, padding=16))  # no mark on an axis
    points = alt.Chart(data).mark_circle(size=50, opacity=0.7, color="#1f77b4").encode(x=x, y=y)
    front = (
        alt.Chart(data[data["front"]].sort_values("x"))
        .mark_line(color="#d62728", point=True, strokeWidth=1.5)
        .encode(x=x, y=y, order="x:Q")
    )
    best = data.iloc[[0]]
    star = alt.Chart(best).mark_point(shape="diamond", size=220, filled=True, color="#2ca02c").encode(x=x, y=y)
    middle = data[["x", "performance"]].min() / 2 + data[["x", "performance"]].max() / 2
    low = best["performance"].iloc[0] < middle["performance"]  # in the lower half: label above, off the axis
    right = best["x"].iloc[0] > middle["x"]  # in the right half: label to its left, inside the plot
    placed = {"align": "right" if right else "left", "baseline": "bottom" if low else "top",
              "dx": -10 if right else 10, "dy": -8 if low else 8, "fontWeight": "bold"}
    named = alt.Chart(best.assign(text="best PePR: " + best["model"]))
    halo = named.mark_text(**placed, **HALO)
    label = named.mark_text(**placed, color="#2ca02c")
    return alt.layer(points, front, star, halo.encode(x=x, y=y, text="text:N"),
                     label.encode(x=x, y=y, text="text:N")).properties(
        width=460, height=320, title="Performance against resource (red: Pareto front)"
    )


def pepr_ranking(table: pd.DataFrame, top: int = 15) -> alt.LayerChart:
    """PePR of the top models as bars, their performance as ticks: the gap is the resource cost."""
    head = table.head(top).assign(model=lambda d: "#" + d["rank"].astype(str) + " " + d["model"].astype(str))  # a long name cut keeps its rank
    order = list(head["model"])
    y = alt.Y("model:N", sort=order, title=None)
    bars = alt.Chart(head).mark_bar(color="#2ca02c").encode(
        y=y, x=alt.X("pepr:Q", title="PePR (bar) and performance (tick)", scale=alt.Scale(domain=[0, 1]))
    )
    ticks = alt.Chart(head).mark_tick(color="black", thickness=2).encode(y=y, x="performance:Q")
    return alt.layer(bars, ticks).properties(width=460, title=f"Top {len(head)} models by PePR")


def render(chart: alt.TopLevelMixin, fmt: str) -> bytes:
    """A chart as SVG, PNG or PDF bytes, rendered offline by vl-convert."""
    if fmt == "svg":
        buffer = io.StringIO()
        chart.save(buffer, format="svg")
        return buffer.getvalue().encode()
    buffer = io.BytesIO()
    chart.save(buffer, format=fmt, **({"scale_factor": 2} if fmt == "png" else {}))
    return buffer.getvalue()


def report_files(report: Report) -> dict[str, bytes]:
    """Every file of a report by name: report.md, table.tex and each figure in each format."""
    files = {"report.md": report.markdown.encode(), "table.tex": report.latex.encode()}
    for name, chart in report.charts.items():
        for fmt in FIGURE_FORMATS:
            files[f"{name}.{fmt}"] = render(chart, fmt)
    return files


def write_report(
    db, experiment: str, out, weights: Mapping[str, float], normalization: str = "minmax",
    alpha: float = 1.0, bench_device: str | None = None,
) -> list[Path]:
    """Write the report of `experiment` in database `db` into folder `out`; returns the paths.
    Inference costs come from the benchmarks of `bench_device` (see `pepr score`)."""
    normalize_weights(weights)
    if not str(out).strip():
        raise PeprError("--out: empty; name the folder to write the report into")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():  # before the figures are rendered
        raise PeprError(f"--out {out}: not a folder")
    store = RunStore(db)
    runs, _ = attach_where_weighted(store, store.runs(), weights, bench_device)
    report = build_report(runs, experiment, weights, normalization, alpha, source=str(db))
    files = report_files(report)
    paths = [folder / name for name in files]
    taken = next((path for path in paths if path.is_dir()), None)
    if taken is not None:
        raise PeprError(f"--out {out}: {taken.name} is a folder")
    parts = [path.with_name(path.name + ".part") for path in paths]
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:  # every file written in full before any is put in place
        folder.mkdir(parents=True, exist_ok=True)
        for part, data in zip(parts, files.values()):
            part.write_bytes(data)
        for part, path in zip(parts, paths):
            part.replace(path)
    except OSError as error:
        for part in parts:
            with contextlib.suppress(OSError):
                part.unlink()
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if still empty
        raise PeprError(f"--out {out}: {error.strerror or error}") from None
    return paths

