"""Sensitivity: how robust the ranking is to the weights."""

import streamlit as st

from dashboard import charts
from dashboard.sidebar import View, current
from pepr.sensitivity import kendall_tau, rank_stability, sample_weights


def render(view: View) -> None:
    st.title("How robust is the ranking to the weights?")
    models = view.models
    if models.empty:
        st.warning("No scoreable runs in the selected experiments.")
        return
    left, right = st.columns(2)
    n = left.slider("Weight samples", 100, 2000, 500, step=100, key="s_n")
    concentration = right.select_slider(
        "Concentration (higher = closer to the current weights)", [2, 5, 10, 20, 50, 100, 200], 20, key="s_c"
    )
    taus = {
        "performance only": kendall_tau(models["pepr"], models["performance"]),
        "energy only (least first)": kendall_tau(models["pepr"], -models["energy_kwh"])
        if models["energy_kwh"].notna().all()
        else None,
    }
    cols = st.columns(len(taus))
    for col, (label, tau) in zip(cols, taus.items()):
        col.metric(f"Kendall tau vs {label}", "n/a" if tau is None else f"{tau:.2f}")
    if not view.weights:
        st.info("All weights are zero: PePR is the performance, nothing to vary.")
        return
    if len(view.weights) == 1:
        st.info("Only one resource is weighted, so every weight sample is the same: add another weight to vary.")
    samples = sample_weights(view.weights, n=n, concentration=float(concentration))
    stability = rank_stability(view.scored.table, samples, alpha=view.controls.alpha)
    table = models[["model", "rank", "pepr"]].merge(stability, on="model")
    table = table.sort_values(["p_first", "p_top5", "rank"], ascending=[False, False, True])
    st.caption(
        f"{n} weight vectors drawn from a Dirichlet centred on the current weights; "
        "each ranks the models by mean PePR."
    )
    st.altair_chart(charts.rank_probabilities(table), width="stretch")
    st.dataframe(
        table.rename(columns={"rank": "current rank", "pepr": "PePR", "p_first": "P(rank 1)", "p_top5": "P(top 5)"}),
        hide_index=True,
        width="stretch",
    )


render(current("scores"))
