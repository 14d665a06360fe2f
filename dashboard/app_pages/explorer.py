"""Explorer: which model, given what you can afford (headline, Fig. 3d and 4a, the ranking,
and what changed against the pinned baseline)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts
from dashboard.app_pages import card, provenance, ready, scoreable
from dashboard.controls import COLOR_BY, NORMALIZATION_LABELS
from dashboard.report_panel import report_downloads
from dashboard.text import plain
from dashboard.views import View, readable_table
from pepr.resources import RESOURCES, format_value
from pepr.text import spreadsheet_csv


def page(view: View | None, problem: str | None, source) -> None:
    st.title("Which model, given what you can afford?")
    if not ready(view, problem, source):
        return
    provenance(view)
    notes(view)
    if not scoreable(view):
        return
    headline(view)
    charts_row(view)
    baseline(view)
    ranking(view)


def notes(view: View) -> None:
    """What the user should know about the scope: unmeasured resources, runs left out, CO2."""
    if view.unmeasured:
        names = ", ".join(RESOURCES[k].label for k in view.unmeasured)
        st.warning(f"Not measured in the selected experiments, so ignored: {names}.")
    if len(view.excluded):
        with st.expander(f"{len(view.excluded)} run(s) left out of the scores"):
            st.dataframe(view.excluded.rename(columns={"run_id": "run", "reason": "why left out"}),
                         hide_index=True, width="stretch")
    single = view.scope.groupby("experiment")["model"].nunique().loc[lambda s: s == 1]
    if len(single):
        pooled = bool(view.weights) and view.scope["experiment"].nunique() > 1
        lone = f"Only one model in {', '.join(plain(e) for e in single.index)}: nothing to compare it with, so "
        if view.weights and view.controls.normalization == "max":
            st.info(lone + "under share of max its costs are shares of its own dearest run's: its PePR says "
                    "nothing of what it costs beside other models" + (
                        ", and its rank beside the other experiments' models neither." if pooled else "."))
        else:
            st.info(lone + "its PePR equals its performance" + (
                ", free of any cost: beside the other experiments' models it ranks higher than its cost "
                "warrants." if pooled else "."))
    if view.carbon.chosen is not None or "co2" in view.weights:
        st.caption(f"Grid carbon intensity: {view.carbon.message}")


def headline(view: View) -> None:
    top = view.headline
    best, strongest = top["best"], top["strongest"]
    left, middle, right = st.columns(3)
    card(left, "Top model by PePR", best["model"], f"PePR {best['pepr']:.3f}, performance {best['performance']:.3f}")
    card(middle, "Top model by performance", strongest["model"], f"PePR {strongest['pepr']:.3f}, performance {strongest['performance']:.3f}")
    if best["model"] == strongest["model"]:
        box = right.container(border=True)
        box.caption("Choosing by PePR costs")
        box.markdown("**nothing**")
        box.caption("it is also the top model by performance")
    else:
        saved = ", ".join(_times(ratio, RESOURCES[name].noun) for name, ratio in top["saved"].items())
        box = right.container(border=True)
        box.caption("Choosing by PePR costs")
        box.markdown(f"**{top['points_lost']:.1f} points**")
        box.caption(f"of performance, and uses {saved}" if saved else "of performance (no resource data to compare)")
    scope = view.scope
    totals = [
        format_value(scope[RESOURCES[name].column].sum(), RESOURCES[name])
        + f" {RESOURCES[name].noun}"
        for name in ("energy", "co2")
        if RESOURCES[name].column in scope and scope[RESOURCES[name].column].notna().any()
    ]
    grid = "" if view.carbon.chosen is None else f" (CO2 at {view.carbon.chosen:g} g/kWh)"
    runs, models = len(scope), len(view.models)
    st.caption(f"{runs} scored run{'s' * (runs != 1)} of {models} model{'s' * (models != 1)}; together {' and '.join(totals) or 'no energy recorded'}{grid}.")


def charts_row(view: View) -> None:
    models = view.models
    left, right = st.columns(2)
    with left:
        st.subheader("PePR against model size")
        st.radio("Colour by", list(COLOR_BY), format_func=COLOR_BY.get, horizontal=True, key="e_color")
        if view.threshold is not None:
            charts.show(st, charts.pepr_vs_params(models, view.threshold, view.controls.color, view.units), width="stretch")
            unsized = models.loc[models["params"] <= 0, "model"]
            if len(unsized):
                st.caption(f"Not drawn, recorded with 0 parameters (a log axis has no place for 0): "
                           f"{', '.join(map(plain, unsized))}.")
        else:
            st.info("No parameter counts recorded for these models.")
    with right:
        st.subheader("Performance against resource")
        st.caption("Dotted lines: equal PePR. Red: the Pareto front; the diamond is the top-PePR model, where the highest iso-line touches the front.")
        charts.show(st, charts.performance_vs_resource(models, view.front, view.controls.alpha, units=view.units), width="stretch")


def baseline(view: View) -> None:
    c = view.controls
    weights = ", ".join(f"{RESOURCES[k].label} {v:g}" for k, v in c.baseline_weights.items() if v > 0) or "none"
    st.subheader("Against the pinned baseline")
    st.number_input("Top k", min_value=1, max_value=50, step=1, key="bl_k")
    st.caption(
        f"Baseline: weights {weights}, {NORMALIZATION_LABELS[c.baseline_normalization]}, alpha {c.baseline_alpha:g} "
        "(pin the current weights in the sidebar). 'entered' and 'left': the top k now against the baseline's."
    )
    st.dataframe(view.baseline, hide_index=True, width="stretch")


RANKING = {
    "rank": "PePR rank", "model": "model", "pepr": "PePR", "performance": "performance",
    "perf_rank": "performance rank", "rank_change": "places above its performance rank",
}


def ranking(view: View) -> None:
    st.subheader("Ranking")
    models = view.models
    if models["experiments"].max() > 1:
        st.caption("Mean over the selected experiments per model.")
    labels = {**RANKING, **{f"loss_{k}": f"lowered by {RESOURCES[k].noun}" for k in view.weights}, "resource": "R"}
    columns = [*RANKING, *(f"loss_{k}" for k in view.weights), "resource",
               *(r.column for r in RESOURCES.values() if r.column in models and models[r.column].notna().any()), "runs"]
    labels["runs"] = "runs"
    shown = readable_table(models[columns], view.units, labels).round(4)
    st.dataframe(shown, hide_index=True, width="stretch")
    # A download changes nothing: no rerun, which would drop the report's deferred zip while
    # it is being fetched (a click on it right after this one gave nothing).
    st.download_button("Download CSV", spreadsheet_csv(shown), "pepr-ranking.csv", "text/csv", key="e_download",
                       on_click="ignore")
    c = view.controls
    if len(c.experiments) == 1:  # a report is of one experiment, as `pepr report` writes it
        report_downloads(view.in_scope, c.experiments[0], view.weights, c.normalization, c.alpha)
    else:
        st.caption("Choose one experiment to download its report (Markdown, LaTeX table, figures).")


def _times(ratio: float, label: str) -> str:
    """`3.1× less energy` (or `2× more` where the top-PePR model uses more, `about as much`
    within 5%, which read `1× less`)."""
    if abs(ratio - 1) < 0.05:
        return f"about as much {label}"
    return f"{ratio:.2g}× less {label}" if ratio > 1 else f"{1 / ratio:.2g}× more {label}"
