"""Charts as pure functions: DataFrames in, Altair charts out (no Streamlit here)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from pepr.score import pepr

_TOOLTIP = [
    alt.Tooltip("model:N", title="model"),
    alt.Tooltip("performance:Q", title="performance", format=".3f"),
    alt.Tooltip("pepr:Q", title="PePR", format=".3f"),
    alt.Tooltip("rank:Q", title="PePR rank"),
]
COLOR_BY = {"model_type": "model type", "efficient": "efficient"}


def pepr_vs_params(models: pd.DataFrame, threshold: float, color: str = "model_type") -> alt.Chart:
    """PePR against parameter count (log x), the small-model region shaded (paper, Fig. 3d)."""
    data = models.dropna(subset=["params"]).assign(
        group=lambda d: d[color].astype("string").fillna("unknown")
    )[["model", "params", "performance", "pepr", "rank", "group"]]
    low = float(data["params"].min()) if len(data) else 1.0
    region = pd.DataFrame({"x0": [min(low, threshold) * 0.9], "x1": [threshold]})
    shade = (
        alt.Chart(region)
        .mark_rect(color="#2ca02c", opacity=0.08)
        .encode(x=alt.X("x0:Q"), x2="x1:Q")
    )
    edge = alt.Chart(region).mark_rule(strokeDash=[4, 3], color="#2ca02c").encode(x="x1:Q")
    label = (
        alt.Chart(region)
        .mark_text(align="right", baseline="top", dx=-4, dy=4, color="#2ca02c")
        .encode(x="x1:Q", y=alt.value(0), text=alt.value("small models"))
    )
    points = (
        alt.Chart(data)
        .mark_circle(size=60, opacity=0.8)
        .encode(
            x=alt.X("params:Q", scale=alt.Scale(type="log"), title="parameters (log scale)"),
            y=alt.Y("pepr:Q", title="PePR", scale=alt.Scale(zero=False)),
            color=alt.Color("group:N", title=COLOR_BY.get(color, color)),
            tooltip=[*_TOOLTIP, alt.Tooltip("params:Q", title="parameters", format=",")],
        )
    )
    return alt.layer(shade, edge, label, points).properties(height=380)


def performance_vs_resource(
    models: pd.DataFrame, front: np.ndarray, knee: int | None, alpha: float = 1.0, levels: int = 6
) -> alt.Chart:
    """Performance against weighted normalised resource over shaded PePR iso-lines, the Pareto
    front drawn and its knee marked (paper, Fig. 4a)."""
    data = models[["model", "performance", "pepr", "rank", "resource"]].assign(
        front=np.asarray(front, dtype=bool)
    )
    p_low = float(min(data["performance"].min(), 1.0)) if len(data) else 0.0
    p_low = max(0.0, np.floor(p_low * 20) / 20 - 0.05)
    r_grid, p_grid = np.meshgrid(np.linspace(0, 1, 41), np.linspace(p_low, 1, 41))
    surface = pd.DataFrame({"R": r_grid.ravel(), "P": p_grid.ravel()})
    surface["pepr"] = pepr(surface["P"].to_numpy(), surface["R"].to_numpy(), alpha)
    step_r, step_p = 1 / 40, (1 - p_low) / 40
    heat = (
        alt.Chart(surface.assign(R2=surface.R + step_r, P2=surface.P + step_p))
        .mark_rect(opacity=0.35)
        .encode(
            x=alt.X("R:Q", title="weighted normalised resource R", scale=alt.Scale(domain=[0, 1])),
            x2="R2:Q",
            y=alt.Y("P:Q", title="performance", scale=alt.Scale(domain=[p_low, 1])),
            y2="P2:Q",
            color=alt.Color("pepr:Q", title="PePR", scale=alt.Scale(scheme="greens")),
        )
    )
    r_line = np.linspace(0, 1, 21)
    values = np.linspace(surface["pepr"].min(), surface["pepr"].max(), levels + 2)[1:-1]
    iso = pd.DataFrame(
        [
            {"level": round(float(c), 3), "R": r, "P": float(c * (alpha + r) / alpha)}
            for c in values
            for r in r_line
        ]
    ).query("@p_low <= P <= 1")
    lines = (
        alt.Chart(iso)
        .mark_line(color="#555", strokeDash=[2, 3], strokeWidth=1, clip=True)
        .encode(x="R:Q", y="P:Q", detail="level:N", tooltip=alt.Tooltip("level:Q", title="PePR"))
    )
    points = (
        alt.Chart(data)
        .mark_circle(size=55, opacity=0.85)
        .encode(
            x="resource:Q",
            y="performance:Q",
            color=alt.value("#1f77b4"),
            tooltip=[*_TOOLTIP, alt.Tooltip("resource:Q", title="R", format=".3f")],
        )
    )
    front_line = (
        alt.Chart(data[data["front"]].sort_values("resource"))
        .mark_line(color="#d62728", point=True)
        .encode(x="resource:Q", y="performance:Q", order="resource:Q", tooltip=_TOOLTIP)
    )
    layers = [heat, lines, points, front_line]
    if knee is not None:
        knee_row = data.iloc[[knee]]
        layers.append(
            alt.Chart(knee_row)
            .mark_point(shape="diamond", size=260, color="#d62728", filled=True)
            .encode(x="resource:Q", y="performance:Q", tooltip=_TOOLTIP)
        )
        layers.append(
            alt.Chart(knee_row)
            .mark_text(align="left", dx=10, dy=-10, fontWeight="bold", color="#d62728")
            .encode(x="resource:Q", y="performance:Q", text=alt.value("knee"))
        )
    return alt.layer(*layers).properties(height=380)


def rank_probabilities(table: pd.DataFrame, top: int = 15) -> alt.Chart:
    """Per model, the probability of ranking first and of being in the top 5, as bars."""
    head = table.sort_values(["p_top5", "p_first"], ascending=False).head(top)
    long = head.melt(
        id_vars="model", value_vars=["p_first", "p_top5"], var_name="event", value_name="p"
    ).replace({"event": {"p_first": "rank 1", "p_top5": "top 5"}})
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", sort=list(head["model"]), title=None),
            x=alt.X("p:Q", title="probability", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("event:N", title=None),
            yOffset="event:N",
            tooltip=["model:N", "event:N", alt.Tooltip("p:Q", format=".2f")],
        )
    )


def distributions(frame: pd.DataFrame, value: str, title: str, max_dots: int = 600) -> alt.Chart:
    """Two groups side by side: boxes (quartiles, min-max whiskers, median tick) computed here,
    over the individual values where there are at most `max_dots` of them."""
    order = list(frame["group"].cat.categories) if hasattr(frame["group"], "cat") else None
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
        tooltip=["group:N", *(alt.Tooltip(f"{c}:Q", format=".3f") for c in ("low", "q1", "median", "q3", "high"))],
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
                tooltip=["model:N", "experiment:N", alt.Tooltip(f"{value}:Q", format=".3f")],
            )
        )
        layers.append(dots)
    return alt.layer(*layers).properties(height=300)


def learning_curves(curves: pd.DataFrame, x: str, x_title: str) -> alt.Chart:
    """Performance per epoch against cumulative resource, one line per run."""
    return (
        alt.Chart(curves)
        .mark_line(point=True)
        .encode(
            x=alt.X(f"{x}:Q", title=x_title),
            y=alt.Y("performance:Q", title="performance", scale=alt.Scale(zero=False)),
            color=alt.Color("label:N", title="run"),
            tooltip=["label:N", "epoch:Q", alt.Tooltip("performance:Q", format=".3f")],
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
            color=alt.Color("label:N", title="run"),
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
            tooltip=["label:N", alt.Tooltip("epoch:Q", title="peak epoch"), "pepr:Q"],
        )
    )
    return alt.layer(lines, peak).properties(height=320)
