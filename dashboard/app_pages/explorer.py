"""Explorer: which model, given what you can afford (headline, Fig. 3d and 4a live, ranking)."""

import pandas as pd
import streamlit as st

from dashboard import charts, views
from dashboard.controls import RESOURCES
from dashboard.sidebar import View, current
from pepr.score import knee, pareto_front, split_by_params


def notes(view: View) -> None:
    """What the user should know about the scope: unmeasured resources, runs left out."""
    if view.unmeasured:
        names = ", ".join(RESOURCES[k][0] for k in view.unmeasured)
        st.warning(f"Not measured in the selected experiments, so ignored: {names}.")
    excluded = view.scored.excluded
    if len(excluded):
        with st.expander(f"{len(excluded)} run(s) left out of the scores"):
            st.dataframe(excluded, hide_index=True, width="stretch")
    table = view.scored.table
    single = table.groupby("experiment")["model"].nunique().loc[lambda s: s == 1]
    if len(single):
        st.info(
            f"Only one model in {', '.join(single.index)}: nothing to compare it with, so its PePR "
            "equals its performance."
        )


def ranking(models: pd.DataFrame, weights: dict) -> pd.DataFrame:
    """The ranking table as shown (and downloaded)."""
    losses = {f"loss_{k}": f"lowered by {RESOURCES[k][0].lower()}" for k in weights}
    columns = {
        "rank": "PePR rank",
        "model": "model",
        "pepr": "PePR",
        "performance": "performance",
        "perf_rank": "performance rank",
        "rank_change": "places gained",
        **losses,
        "resource": "R",
        "params": "parameters",
        "runs": "runs",
    }
    return models[list(columns)].rename(columns=columns).round(4)


def render(view: View) -> None:
    st.title("Which model, given what you can afford?")
    notes(view)
    models = view.models
    if models.empty:
        counts = view.runs[view.runs["experiment"].isin(view.controls.experiments)]["status"]
        counts = ", ".join(f"{n} {s}" for s, n in counts.value_counts().items())
        st.warning(
            f"No scoreable runs in the selected experiments ({counts or 'none'}). "
            "The **Runs** page lists every run with its status and error."
        )
        return
    top = views.headline(models)
    best, strongest = top["best"], top["strongest"]
    left, middle, right = st.columns(3)
    _card(left, "Top model by PePR", best["model"], f"PePR {best['pepr']:.3f}, performance {best['performance']:.3f}")
    _card(middle, "Top model by performance", strongest["model"], f"PePR {strongest['pepr']:.3f}, performance {strongest['performance']:.3f}")
    if best["model"] == strongest["model"]:
        _card(right, "Choosing by PePR costs", "nothing", "it is also the top model by performance")
    else:
        saved = ", ".join(_times(ratio, label) for label, ratio in top["saved"].items())
        _card(right, "Choosing by PePR costs", f"{top['points_lost']:.1f} points", f"of performance, and uses {saved}" if saved else "of performance (no resource data to compare)")

    threshold = view.controls.threshold_m
    sized = models["params"].dropna()
    cut = split_by_params(sized, None if threshold is None else threshold * 1e6)[1] if len(sized) else 0.0
    front = pareto_front(models["performance"], models["resource"])
    knee_at = knee(models["performance"], models["resource"], front)
    left, right = st.columns(2)
    with left:
        st.subheader("PePR against model size")
        color = st.radio("Colour by", list(charts.COLOR_BY), format_func=charts.COLOR_BY.get, horizontal=True, key="e_color")
        if models["params"].notna().any():
            st.altair_chart(charts.pepr_vs_params(models, cut, color), width="stretch")
        else:
            st.info("No parameter counts recorded for these models.")
    with right:
        st.subheader("Performance against resource")
        st.caption("Shading and dotted lines: PePR iso-lines. Red: the Pareto front and its knee.")
        st.altair_chart(charts.performance_vs_resource(models, front, knee_at, view.controls.alpha), width="stretch")

    st.subheader("Ranking")
    many = models["experiments"].max() > 1
    st.caption(
        ("Mean over the selected experiments per model. " if many else "")
        + "'lowered by' columns: how much each resource term took off the performance."
    )
    shown = ranking(models, view.weights)
    st.dataframe(shown, hide_index=True, width="stretch", column_config={"parameters": st.column_config.NumberColumn(format="localized")})
    st.download_button("Download CSV", shown.to_csv(index=False), "pepr-ranking.csv", "text/csv")


def _times(ratio: float, label: str) -> str:
    """`3.1× less energy` (or `2× more` where the top-PePR model uses more)."""
    return f"{ratio:.2g}× less {label}" if ratio >= 1 else f"{1 / ratio:.2g}× more {label}"


def _card(column, label: str, value: str, note: str) -> None:
    with column.container(border=True):
        st.metric(label, value)
        st.caption(note)


render(current("scores"))
