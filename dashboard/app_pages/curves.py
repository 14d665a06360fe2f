"""Curves: performance per epoch against cumulative resource, and the PePR curve's peak."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, views
from dashboard.app_pages import provenance, ready, scoreable
from dashboard.controls import AXES
from dashboard.text import plain
from dashboard.views import View
from pepr.resources import RESOURCES, typical_unit

AXIS_RESOURCE = {"cum_energy_kwh": "energy", "cum_time_s": "train_time"}


def page(view: View | None, problem: str | None, source) -> None:
    st.title("Learning curves and diminishing returns")
    if not ready(view, problem, source):
        return
    provenance(view)
    if not scoreable(view):
        return
    ranked = view.scope.sort_values(["rank", "pepr", "model"], ascending=[True, False, True])
    labels = views.run_labels(ranked).to_dict()
    shown = view.curve_runs()  # the chosen runs still here, else the top three
    gone = [r for r in view.controls.curve_runs if r not in set(ranked["run_id"])]
    if gone:
        st.warning(f"Ignored: r={plain(', '.join(gone))}, not a run in this view.")
    if not view.controls.curve_runs:
        st.session_state["_k_runs_auto"] = shown  # a default, not a choice: not written into the link
    st.session_state["k_runs"] = shown
    chosen = st.multiselect("Runs (default: the top three by PePR)", list(labels), format_func=labels.get, key="k_runs")
    epochs = view.epochs[view.epochs["run_id"].isin(chosen)]
    if epochs.empty:
        st.info("These runs have no per-epoch records.")
        return
    without = [labels[run] for run in chosen if run not in set(epochs["run_id"])]
    if without:
        st.caption(f"Not drawn, no per-epoch records: {plain(', '.join(without))}.")
    axes = [axis for axis in AXES if axis in epochs and epochs[axis].notna().any()]
    if st.session_state.get("k_x") not in axes:
        st.session_state["k_x"] = st.session_state["_k_x_auto"] = axes[0]
    if axes == ["epoch"]:
        st.caption("No cumulative energy or time recorded per epoch for these runs: epochs stand in.")
    x = st.radio("Resource axis", axes, format_func=AXES.get, horizontal=True, key="k_x")
    lines, peaks = view.curves(chosen, x)
    if lines.empty:
        st.info("These runs have no per-epoch performance recorded.")
        return
    unit, factor = ("", 1.0)
    if x in AXIS_RESOURCE:
        unit, factor = typical_unit(RESOURCES[AXIS_RESOURCE[x]], lines[x])
    title = f"{AXES[x]} ({unit})" if unit else AXES[x]
    left, right = st.columns(2)
    charts.show(left, charts.learning_curves(lines, x, title, factor), width="stretch")
    charts.show(right, charts.pepr_curves(lines, peaks), width="stretch")
    st.caption(
        "R is each epoch's cumulative cost as a share of the run's own total, not the ranking's "
        "normalisation across models, so this PePR is not the ranking's. Triangle: where the PePR "
        "curve peaks; beyond it each step of cost buys less performance than its share."
        + (" With epochs standing in for the cost, every epoch costs the same, so an early peak "
           "(often the first epoch) says little about the resource." if x == "epoch" else "")
    )
    st.dataframe(
        peaks[["label", "epoch", "performance", "pepr"]].rename(
            columns={"label": "run", "epoch": "peak epoch", "pepr": "PePR"}
        ),
        hide_index=True,
        width="stretch",
    )
