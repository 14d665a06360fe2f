"""Charts as pure functions: DataFrames in, Vega-Lite specs out, as dicts whose data travel as
named datasets (Streamlit sends them as Arrow); no Streamlit here. Built without Altair's
objects, which cost ~0.15 s a rerun; the tests validate every spec against Vega-Lite's schema."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pandas as pd

from pepr.report import HALO
from pepr.resources import RESOURCES, format_value
from pepr.score import pepr, performance_for


_DERIVED = object()  # no title given: Vega-Lite names the axis after the field


def _field(kind: str, field: str, title=_DERIVED, **settings) -> dict:
    """A Vega-Lite field definition of type `kind`; `title=None` shows no title."""
    return {"field": field, "type": kind, **({} if title is _DERIVED else {"title": title}), **settings}


_quantity = functools.partial(_field, "quantitative")
_category = functools.partial(_field, "nominal")


def _layer(dataset: str, mark: dict, **encoding) -> dict:
    return {"data": {"name": dataset}, "mark": mark, "encoding": encoding}


def _haloed(dataset: str, mark: dict, **encoding) -> list[dict]:
    """A text layer with a white halo drawn under it, so that it stays legible over points."""
    return [_layer(dataset, {**mark, **HALO}, **encoding), _layer(dataset, mark, **encoding)]


_TOOLTIP = [
    _category("model", "model"),
    _quantity("performance", "performance", format=".3f"),
    _quantity("pepr", "PePR", format=".3f"),
    _quantity("rank", "PePR rank"),
]
TOOLTIP_RESOURCES = ("energy", "co2", "train_time", "gpu_memory", "params")
GROUPS = {  # colour-by column -> {value: legend label}, colours
    "model_type": ({"CNN": "CNN", "Other": "Other"}, ["#1f77b4", "#ff7f0e", "#9e9e9e"]),
    "efficient": ({True: "efficient", False: "not efficient"}, ["#2ca02c", "#7f7f7f", "#d0d0d0"]),
}
COLOR_TITLES = {"model_type": "model type", "efficient": "efficient (own paper's claim)"}
NO_LIMIT = 0  # Vega-Lite: a label limit of 0 never cuts a label
NAME_LIMIT_PX = 320  # a timm name in full (about 45 characters); a longer one is cut, whole in the tooltip


def show(where, spec: dict, **kwargs) -> None:
    """Draw a chart's spec in `where` (st or a column)."""
    where.vega_lite_chart(spec, **kwargs)


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
            tips.append(_quantity(field, resource.heading(unit), format=".3~g"))
    return data, tips


# Nothing a weight changes is in the Explorer's specs, only in their data: the browser then
# updates the data of the charts in place.


def pepr_vs_params(
    models: pd.DataFrame, threshold: float, color: str = "model_type", units: Mapping[str, tuple[str, float]] | None = None
) -> dict:
    """PePR against parameter count (log x over the models' own range), the small-model region
    shaded and named in the title (paper, Fig. 3d)."""
    labels, colours = GROUPS[color]
    data, tips = readable(models[models["params"] > 0], units or {})  # a log axis has no place for 0
    data = data.assign(group=data[color].map(lambda v: labels.get(v if not pd.isna(v) else None, "unknown")))
    data = data[["model", "params", "performance", "pepr", "rank", "group", *(c for c in data if c.startswith("show_"))]]
    low = float(data["params"].min()) if len(data) else 1e6
    high = float(data["params"].max()) if len(data) else 1e8
    domain = [min(low, threshold) / 1.3, max(high, threshold) * 1.3]
    x_title = "parameters (log scale)"
    scale = {"type": "log", "domain": domain, "nice": False}
    legend = [*labels.values(), *(["unknown"] if (data["group"] == "unknown").any() else [])]  # as the data has them
    return {
        "height": 380,
        "title": {"text": f"Shaded: small models, at most {format_value(threshold, RESOURCES['params'])} parameters",
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
                   color=_category("group", COLOR_TITLES[color],
                                   scale={"domain": legend, "range": colours},
                                   legend={"orient": "bottom", "labelLimit": NO_LIMIT}),
                   tooltip=[*_TOOLTIP, *tips]),
        ],
    }


ISO_LABEL = {"type": "text", "fontSize": 10, "color": "#444"}  # an iso-line's "PePR 0.7"


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
    steps = {round(float(v), 2) for v in np.linspace(pepr(p_low, 1.0, alpha), top, levels)}
    values = sorted({v for v in steps if abs(v - top) > 0.03} | {round(top, 3)})  # no two labels on one spot
    r_line = np.linspace(0, 1, 21)
    iso = pd.DataFrame(
        [{"level": c, "R": r, "P": float(performance_for(c, r, alpha))} for c in values for r in r_line]
    ).query("@p_low <= P <= 1")
    # Each line is labelled where it leaves the plot: left of and above its end near the right
    # edge, right of its end further left (not over the y axis). The top line's value is in
    # the marker's label.
    ends = iso.sort_values("R").groupby("level", as_index=False).last().query("level != @values[-1]")
    ends = ends.assign(text=ends["level"].map(lambda v: f"PePR {v:g}"))
    best = data[data["rank"] == data["rank"].min()].head(1)
    x_title, y_title = "weighted normalised resource R", "performance"
    scales = {"x": {"domain": [0, 1]}, "y": {"domain": [p_low, 1]}}

    def xy(x: str, y: str) -> dict:
        return {"x": _quantity(x, x_title, scale=scales["x"]), "y": _quantity(y, y_title, scale=scales["y"])}

    red = "#d62728"
    return {
        "height": 380,
        "datasets": {
            "surface": surface, "iso": iso, "iso_right": ends[ends["R"] >= 0.8], "iso_top": ends[ends["R"] < 0.8],
            "models": data, "front": data[data["front"]].sort_values("resource"),
            "best": best.assign(text=[f"top PePR {values[-1]:g}: {name}" for name in best["model"]]),
        },
        "layer": [
            _layer("surface", {"type": "rect", "opacity": 0.3}, **xy("R", "P"), x2={"field": "R2"}, y2={"field": "P2"},
                   color=_quantity("pepr", "PePR", scale={"scheme": "greens"})),
            _layer("iso", {"type": "line", "color": "#555", "strokeDash": [2, 3], "strokeWidth": 1,
                           "clip": True},
                   **xy("R", "P"), detail=_category("level")),
            *_haloed("iso_right", {**ISO_LABEL, "align": "right", "baseline": "bottom", "dx": -2, "dy": -2},
                     **xy("R", "P"), text=_category("text")),
            *_haloed("iso_top", {**ISO_LABEL, "align": "left", "baseline": "middle", "dx": 4},
                     **xy("R", "P"), text=_category("text")),
            _layer("models", {"type": "circle", "size": 55, "opacity": 0.85, "color": "#1f77b4"},
                   **xy("resource", "performance"),
                   tooltip=[*_TOOLTIP, _quantity("resource", "R (normalised)", format=".3f"), *tips]),
            _layer("front", {"type": "line", "color": red, "point": True}, **xy("resource", "performance"),
                   order=_quantity("resource"), tooltip=[*_TOOLTIP, *tips]),
            _layer("best", {"type": "point", "shape": "diamond", "size": 260, "color": red, "filled": True},
                   **xy("resource", "performance"), tooltip=[*_TOOLTIP, *tips]),
            *_haloed("best", {"type": "text", "align": "left", "dx": 10, "dy": -10, "fontWeight": "bold", "color": red},
                     **xy("resource", "performance"), text=_category("text")),
        ],
    }


def rank_probabilities(table: pd.DataFrame, top: int = 15) -> dict:
    """Per model, the probability of ranking first and of being in the top 5, as bars; model
    names in full up to NAME_LIMIT_PX (an unlimited one took the bars' room)."""
    head = table.sort_values(["p_top5", "p_first"], ascending=False).head(top)
    long = head.melt(
        id_vars="model", value_vars=["p_first", "p_top5"], var_name="event", value_name="p"
    ).replace({"event": {"p_first": "rank 1", "p_top5": "top 5"}})
    return {
        "height": {"step": 17},  # per model's two bars; the axis and the legend below take room of their own
        "datasets": {"probabilities": long},
        "data": {"name": "probabilities"},
        "mark": {"type": "bar"},
        "encoding": {
            "y": _category("model", None, sort=list(head["model"]), axis={"labelLimit": NAME_LIMIT_PX}),
            "x": _quantity("p", "probability", scale={"domain": [0, 1]}),
            "color": _category("event", None, legend={"orient": "bottom"}),
            "yOffset": _category("event"),
            "tooltip": [_category("model"), _category("event", "outcome"), _quantity("p", "probability", format=".2f")],
        },
    }


BOX_STATS = {"low": "lowest", "q1": "lower quartile", "median": "median", "q3": "upper quartile", "high": "highest"}


def distributions(frame: pd.DataFrame, value: str, title: str, max_dots: int = 600, scale: float = 1.0) -> dict:
    """Two groups side by side: boxes (quartiles, min-max whiskers, median tick) computed here,
    over the individual values where there are at most `max_dots` of them; values divided by
    `scale` (a readable unit)."""
    order = list(frame["group"].cat.categories) if hasattr(frame["group"], "cat") else None
    frame = frame.assign(**{value: frame[value].astype(float) / scale})
    stats = (
        frame.groupby("group", observed=True)[value]
        .quantile([0.0, 0.25, 0.5, 0.75, 1.0])
        .unstack()
        .set_axis(list(BOX_STATS), axis=1)
        .reset_index()
        .astype({"group": str})
    )
    x = _category("group", None, sort=order, axis={"labelAngle": 0})  # sort None: data order
    datasets = {"stats": stats}
    layers = [
        _layer("stats", {"type": "rule", "color": "#555"}, x=x,
               y=_quantity("low", title, scale={"zero": False}), y2={"field": "high"}),
        _layer("stats", {"type": "bar", "size": 40, "opacity": 0.5}, x=x, y=_quantity("q1", title), y2={"field": "q3"},
               color=_category("group", sort=order, legend=None),
               tooltip=[_category("group"), *(_quantity(c, name, format=".3~g") for c, name in BOX_STATS.items())]),
        _layer("stats", {"type": "tick", "size": 40, "thickness": 2, "color": "black"}, x=x, y=_quantity("median", title)),
    ]
    if len(frame) <= max_dots:
        datasets["values"] = frame[["group", value, "model", "experiment"]].astype({"group": str})
        layers.append({
            **_layer("values", {"type": "circle", "size": 14, "opacity": 0.45, "color": "#333"}, x=x,
                     y=_quantity(value, title), xOffset=_quantity("jitter", scale={"domain": [-1, 1]}),
                     tooltip=[_category("model"), _category("experiment"), _quantity(value, title, format=".3~g")]),
            "transform": [{"calculate": "random() - 0.5", "as": "jitter"}],
        })
    return {"height": 260, "datasets": datasets, "layer": layers}


def _run_colour() -> dict:
    return _category("label", "run", legend={"orient": "bottom", "columns": 1, "labelLimit": NO_LIMIT,
                                             "symbolType": "circle", "symbolSize": 64})  # one line's height


CURVE_PLOT_PX = 320
LEGEND_ROW_PX = 28  # a legend entry's line below the plot, as drawn


def _with_run_legend(curves: pd.DataFrame) -> int:
    """A curves chart's height: the plot's, and a line below it per run and for the legend's
    title (the dashboard fits a chart's whole height to it: a long legend squeezed the plot)."""
    return CURVE_PLOT_PX + LEGEND_ROW_PX * (curves["label"].nunique() + 1)


def learning_curves(curves: pd.DataFrame, x: str, x_title: str, scale: float = 1.0) -> dict:
    """Performance per epoch against cumulative resource (divided by `scale`), one line per run."""
    return {
        "height": _with_run_legend(curves),
        "datasets": {"curves": curves.assign(**{x: curves[x].astype(float) / scale})},
        "data": {"name": "curves"},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": _quantity(x, x_title),
            "y": _quantity("performance", "performance", scale={"zero": False}),
            "color": _run_colour(),
            "tooltip": [_category("label", "run"), _quantity("epoch"), _quantity(x, x_title, format=".3~g"),
                        _quantity("performance", format=".3f")],
        },
    }


def pepr_curves(curves: pd.DataFrame, peaks: pd.DataFrame) -> dict:
    """The PePR curve of each run, its peak (the point of diminishing returns) marked."""
    x, y = _quantity("R", "normalised cumulative resource R"), _quantity("pepr", "PePR", scale={"zero": False})
    return {
        "height": _with_run_legend(curves),
        "datasets": {"curves": curves, "peaks": peaks},
        "layer": [
            _layer("curves", {"type": "line"}, x=x, y=y, color=_run_colour(),
                   tooltip=[_category("label", "run"), _quantity("epoch"), _quantity("pepr", "PePR", format=".3f")]),
            _layer("peaks", {"type": "point", "shape": "triangle-up", "size": 180, "filled": True}, x=x, y=y,
                   color=_category("label"),
                   tooltip=[_category("label", "run"), _quantity("epoch", "peak epoch"), _quantity("pepr", "PePR", format=".3f")]),
        ],
    }
