"""Charts as pure functions: DataFrames in, Vega-Lite charts out (Altair charts, or spec dicts
with named datasets where a chart is redrawn on every rerun); no Streamlit here."""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd

from pepr.resources import RESOURCES
from pepr.score import pepr

_TOOLTIP = [
    {"field": "model", "type": "nominal", "title": "model"},
    {"field": "performance", "type": "quantitative", "title": "performance", "format": ".3f"},
    {"field": "pepr", "type": "quantitative", "title": "PePR", "format": ".3f"},
    {"field": "rank", "type": "quantitative", "title": "PePR rank"},
]
TOOLTIP_RESOURCES = ("energy", "co2", "train_time", "gpu_memory", "params")
GROUPS = {  # colour-by column -> {value: legend label}, colours
    "model_type": ({"CNN": "CNN", "Other": "Other"}, ["#1f77b4", "#ff7f0e", "#9e9e9e"]),
    "efficient": ({True: "efficient", False: "not efficient"}, ["#2ca02c", "#7f7f7f", "#d0d0d0"]),
}
COLOR_TITLES = {"model_type": "model type", "efficient": "efficient (own paper's claim)"}
NO_LIMIT = 0  # Vega-Lite: a label limit of 0 never cuts a label


def show(where, chart: alt.TopLevelMixin | dict, **kwargs) -> None:
    """Draw `chart` (an Altair chart, or a Vega-Lite spec with named datasets) in `where` (st
    or a column), its spec sent as built: Altair's schema check costs tens of milliseconds
    on every rerun, and the chart tests check the specs."""
    where.vega_lite_chart(chart if isinstance(chart, dict) else chart.to_dict(validate=False), **kwargs)


def readable(models: pd.DataFrame, units: Mapping[str, tuple[str, float]]) -> tuple[pd.DataFrame, list[dict]]:
    """Resource columns scaled to readable units, and tooltips naming the units."""
    data = models.copy()
    tips = []
    for name in TOOLTIP_RESOURCES:
        resource = RESOURCES[name]
        if resource.column in data and name in units and data[resource.column].notna().any():
            unit, factor = units[name]
            field = f"show_{name}"
            data[field] = data[resource.column].astype(float) / factor
            title = f"{resource.label} ({unit})" if unit else f"{resource.label} ({'count' if not resource.unit else resource.unit})"
            tips.append(_quantity(field, title, format=".3~g"))
    return data, tips


def _quantity(field: str, title: str | None = None, **settings) -> dict:
    """A quantitative Vega-Lite field definition."""
    return {"field": field, "type": "quantitative", **({} if title is None else {"title": title}), **settings}


def _layer(dataset: str, mark: dict, **encoding) -> dict:
    return {"data": {"name": dataset}, "mark": mark, "encoding": encoding}


# The Explorer's charts, redrawn on every change of a control, are Vega-Lite specs built as
# dicts: Altair's objects cost ~0.15 s a rerun. Their data travel as named datasets, and
# nothing a weight changes is in the spec, so the browser updates the data in place.


def pepr_vs_params(
    models: pd.DataFrame, threshold: float, color: str = "model_type", units: Mapping[str, tuple[str, float]] | None = None
) -> dict:
    """PePR against parameter count (log x over the models' own range), the small-model region
    shaded and named in the title (paper, Fig. 3d)."""
    labels, colours = GROUPS[color]
    data, tips = readable(models.dropna(subset=["params"]), units or {})
    data = data.assign(group=data[color].map(lambda v: labels.get(v if not pd.isna(v) else None, "unknown")))
    data = data[["model", "params", "performance", "pepr", "rank", "group", *(c for c in data if c.startswith("show_"))]]
    low = float(data["params"].min()) if len(data) else 1e6
    high = float(data["params"].max()) if len(data) else 1e8
    domain = [min(low, threshold) / 1.3, max(high, threshold) * 1.3]
    x_title = "parameters (log scale)"
    scale = {"type": "log", "domain": domain, "nice": False}
    return {
        "height": 380,
        "title": {"text": f"Shaded: small models, at most {threshold / 1e6:.3g}M parameters",
                  "fontSize": 12, "fontWeight": "normal", "anchor": "start"},
        "datasets": {"region": pd.DataFrame({"x0": [domain[0]], "x1": [threshold]}), "models": data},
        "layer": [
            _layer("region", {"type": "rect", "color": "#2ca02c", "opacity": 0.08},
                   x=_quantity("x0", x_title, scale=scale), x2={"field": "x1"}),
            _layer("region", {"type": "rule", "strokeDash": [4, 3], "color": "#2ca02c"},
                   x=_quantity("x1", x_title, scale=scale)),
            _layer("models", {"type": "circle", "size": 60, "opacity": 0.85},
                   x=_quantity("params", x_title, scale=scale, axis={"format": "~s"}),
                   y=_quantity("pepr", "PePR", scale={"zero": False}),
                   color={"field": "group", "type": "nominal", "title": COLOR_TITLES[color],
                          "scale": {"domain": [*labels.values(), "unknown"], "range": colours},
                          "legend": {"orient": "bottom", "labelLimit": NO_LIMIT}},
                   tooltip=[*_TOOLTIP, *tips]),
        ],
    }


def performance_vs_resource(
    models: pd.DataFrame,
    front: np.ndarray,
    alpha: float = 1.0,
    levels: int = 5,
    units: Mapping[str, tuple[str, float]] | None = None,
) -> dict:
    """Performance against weighted normalised resource over labelled PePR iso-lines, the
    Pareto front drawn and the top-PePR model marked: where the highest iso-line touches the
    front (paper, Fig. 4a)."""
    data, tips = readable(models, units or {})
    data = data[["model", "performance", "pepr", "rank", "resource", *(c for c in data if c.startswith("show_"))]].assign(
        front=np.asarray(front, dtype=bool)
    )
    p_low = float(min(data["performance"].min(), 1.0)) if len(data) else 0.0
    p_low = max(0.0, np.floor(p_low * 20) / 20 - 0.05)
    r_grid, p_grid = np.meshgrid(np.linspace(0, 1, 21), np.linspace(p_low, 1, 21))
    surface = pd.DataFrame({"R": r_grid.ravel(), "P": p_grid.ravel()})
    surface["pepr"] = pepr(surface["P"].to_numpy(), surface["R"].to_numpy(), alpha)
    surface["R2"], surface["P2"] = surface["R"] + 1 / 20, surface["P"] + (1 - p_low) / 20
    top = float(data["pepr"].max()) if len(data) else 0.5
    steps = {round(float(v), 2) for v in np.linspace(p_low / (1 + 1 / alpha), top, levels)}
    values = sorted({v for v in steps if abs(v - top) > 0.03} | {round(top, 3)})  # no two labels on one spot
    r_line = np.linspace(0, 1, 21)
    iso = pd.DataFrame(
        [{"level": c, "R": r, "P": float(c * (alpha + r) / alpha)} for c in values for r in r_line]
    ).query("@p_low <= P <= 1")
    ends = iso.sort_values("R").groupby("level", as_index=False).last()
    best = data[data["rank"] == data["rank"].min()].head(1)
    x_title, y_title = "weighted normalised resource R", "performance"
    scales = {"x": {"domain": [0, 1]}, "y": {"domain": [p_low, 1]}}

    def xy(x: str, y: str) -> dict:
        return {"x": _quantity(x, x_title, scale=scales["x"]), "y": _quantity(y, y_title, scale=scales["y"])}

    red = "#d62728"
    return {
        "height": 380,
        "datasets": {
            "surface": surface, "iso": iso, "iso_ends": ends.assign(text=ends["level"].map(lambda v: f"PePR {v:g}")),
            "models": data, "front": data[data["front"]].sort_values("resource"),
            "best": best.assign(text="top PePR: " + best["model"]),
        },
        "layer": [
            _layer("surface", {"type": "rect", "opacity": 0.3}, **xy("R", "P"), x2={"field": "R2"}, y2={"field": "P2"},
                   color=_quantity("pepr", "PePR", scale={"scheme": "greens"})),
            _layer("iso", {"type": "line", "color": "#555", "strokeDash": [2, 3], "strokeWidth": 1,
                           "clip": True},
                   **xy("R", "P"), detail={"field": "level", "type": "nominal"}),
            _layer("iso_ends", {"type": "text", "align": "right", "baseline": "bottom", "dx": -2, "dy": -2,
                                "fontSize": 10, "color": "#444"},
                   **xy("R", "P"), text={"field": "text", "type": "nominal"}),
            _layer("models", {"type": "circle", "size": 55, "opacity": 0.85, "color": "#1f77b4"},
                   **xy("resource", "performance"),
                   tooltip=[*_TOOLTIP, _quantity("resource", "R (normalised)", format=".3f"), *tips]),
            _layer("front", {"type": "line", "color": red, "point": True}, **xy("resource", "performance"),
                   order=_quantity("resource"), tooltip=[*_TOOLTIP, *tips]),
            _layer("best", {"type": "point", "shape": "diamond", "size": 260, "color": red, "filled": True},
                   **xy("resource", "performance"), tooltip=[*_TOOLTIP, *tips]),
            _layer("best", {"type": "text", "align": "left", "dx": 10, "dy": -10, "fontWeight": "bold", "color": red},
                   **xy("resource", "performance"), text={"field": "text", "type": "nominal"}),
        ],
    }


def rank_probabilities(table: pd.DataFrame, top: int = 15) -> alt.Chart:
    """Per model, the probability of ranking first and of being in the top 5, as bars; model
    names in full."""
    head = table.sort_values(["p_top5", "p_first"], ascending=False).head(top)
    long = head.melt(
        id_vars="model", value_vars=["p_first", "p_top5"], var_name="event", value_name="p"
    ).replace({"event": {"p_first": "rank 1", "p_top5": "top 5"}})
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", sort=list(head["model"]), title=None, axis=alt.Axis(labelLimit=NO_LIMIT)),
            x=alt.X("p:Q", title="probability", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("event:N", title=None, legend=alt.Legend(orient="bottom")),
            yOffset="event:N",
            tooltip=["model:N", "event:N", alt.Tooltip("p:Q", format=".2f")],
        )
        .properties(height=max(120, 34 * len(head)))
    )


def distributions(frame: pd.DataFrame, value: str, title: str, max_dots: int = 600, scale: float = 1.0) -> alt.Chart:
    """Two groups side by side: boxes (quartiles, min-max whiskers, median tick) computed here,
    over the individual values where there are at most `max_dots` of them; values divided by
    `scale` (a readable unit)."""
    order = list(frame["group"].cat.categories) if hasattr(frame["group"], "cat") else None
    frame = frame.assign(**{value: frame[value].astype(float) / scale})
    stats = (
        frame.groupby("group", observed=True)[value]
        .quantile([0.0, 0.25, 0.5, 0.75, 1.0])
        .unstack()
        .set_axis(["low", "q1", "median", "q3", "high"], axis=1)
        .reset_index()
        .astype({"group": str})
    )
    x = alt.X("group:N", title=None, sort=order, axis=alt.Axis(labelAngle=0))
    base = alt.Chart(stats).encode(x=x)
    whisker = base.mark_rule(color="#555").encode(
        y=alt.Y("low:Q", title=title, scale=alt.Scale(zero=False)), y2="high:Q"
    )
    box = base.mark_bar(size=40, opacity=0.5).encode(
        y="q1:Q",
        y2="q3:Q",
        color=alt.Color("group:N", legend=None, sort=order),
        tooltip=["group:N", *(alt.Tooltip(f"{c}:Q", format=".3~g") for c in ("low", "q1", "median", "q3", "high"))],
    )
    median = base.mark_tick(size=40, thickness=2, color="black").encode(y="median:Q")
    layers = [whisker, box, median]
    if len(frame) <= max_dots:
        dots = (
            alt.Chart(frame[["group", value, "model", "experiment"]].astype({"group": str}))
            .transform_calculate(jitter="random() - 0.5")
            .mark_circle(size=14, opacity=0.45, color="#333")
            .encode(
                x=x,
                y=f"{value}:Q",
                xOffset=alt.XOffset("jitter:Q", scale=alt.Scale(domain=[-1, 1])),
                tooltip=["model:N", "experiment:N", alt.Tooltip(f"{value}:Q", title=title, format=".3~g")],
            )
        )
        layers.append(dots)
    return alt.layer(*layers).properties(height=260)


def _run_colour(curves: pd.DataFrame) -> alt.Color:
    return alt.Color("label:N", title="run", legend=alt.Legend(orient="bottom", columns=1, labelLimit=NO_LIMIT))


def learning_curves(curves: pd.DataFrame, x: str, x_title: str, scale: float = 1.0) -> alt.Chart:
    """Performance per epoch against cumulative resource (divided by `scale`), one line per run."""
    data = curves.assign(**{x: curves[x].astype(float) / scale})
    return (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X(f"{x}:Q", title=x_title),
            y=alt.Y("performance:Q", title="performance", scale=alt.Scale(zero=False)),
            color=_run_colour(data),
            tooltip=["label:N", "epoch:Q", alt.Tooltip(f"{x}:Q", title=x_title, format=".3~g"),
                     alt.Tooltip("performance:Q", format=".3f")],
        )
        .properties(height=320)
    )


def pepr_curves(curves: pd.DataFrame, peaks: pd.DataFrame) -> alt.Chart:
    """The PePR curve of each run, its peak (the point of diminishing returns) marked."""
    lines = (
        alt.Chart(curves)
        .mark_line()
        .encode(
            x=alt.X("R:Q", title="normalised cumulative resource R"),
            y=alt.Y("pepr:Q", title="PePR", scale=alt.Scale(zero=False)),
            color=_run_colour(curves),
            tooltip=["label:N", "epoch:Q", alt.Tooltip("pepr:Q", format=".3f")],
        )
    )
    peak = (
        alt.Chart(peaks)
        .mark_point(shape="triangle-up", size=180, filled=True)
        .encode(
            x="R:Q",
            y="pepr:Q",
            color=alt.Color("label:N"),
            tooltip=["label:N", alt.Tooltip("epoch:Q", title="peak epoch"), alt.Tooltip("pepr:Q", format=".3f")],
        )
    )
    return alt.layer(lines, peak).properties(height=320)
