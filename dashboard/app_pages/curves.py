"""Curves: performance per epoch against cumulative resource, and the PePR curve's peak."""

import streamlit as st

from dashboard import charts, data, views
from dashboard.sidebar import View, current

AXES = {"cum_energy_kwh": "cumulative energy (kWh)", "cum_time_s": "cumulative time (s)", "epoch": "epochs"}


def render(view: View) -> None:
    st.title("Learning curves and diminishing returns")
    table = view.scored.table
    if table.empty:
        st.warning("No scoreable runs in the selected experiments.")
        return
    ranked = table.sort_values(["rank", "pepr"], ascending=[True, False])
    labels = views.run_labels(ranked).to_dict()
    chosen = st.multiselect(
        "Runs", list(labels), default=list(labels)[:3], format_func=labels.get, key="k_runs"
    )
    if not chosen:
        st.info("Choose one or more runs.")
        return
    epochs = data.epochs(view.path, tuple(sorted(chosen)))
    if epochs.empty:
        st.info("These runs have no per-epoch records.")
        return
    axes = [axis for axis in AXES if epochs[axis].notna().any()]
    if st.session_state.get("k_x") not in axes:
        st.session_state.pop("k_x", None)
    if axes == ["epoch"]:
        st.caption("No cumulative energy or time recorded per epoch for these runs: epochs stand in.")
    x = st.radio("Resource axis", axes, format_func=AXES.get, horizontal=True, key="k_x")
    lines, peaks = views.curves(table[table["run_id"].isin(chosen)], epochs, x, "max", view.controls.alpha)
    if lines.empty:
        st.info("These runs have no per-epoch performance recorded.")
        return
    left, right = st.columns(2)
    left.altair_chart(charts.learning_curves(lines, x, AXES[x]), width="stretch")
    right.altair_chart(charts.pepr_curves(lines, peaks), width="stretch")
    st.caption(
        "R is the share of each run's total. Triangle: where the PePR curve peaks; beyond it "
        "more resource buys too little performance."
    )
    st.dataframe(
        peaks[["label", "epoch", "performance", "pepr"]].rename(
            columns={"label": "run", "epoch": "peak epoch", "pepr": "PePR"}
        ),
        hide_index=True,
        width="stretch",
    )


render(current("scores"))
