"""Sensitivity: how robust the ranking is to the weights."""

from __future__ import annotations

import math

import streamlit as st

from dashboard import charts
from dashboard.app_pages import provenance, ready, scoreable
from dashboard.controls import CONCENTRATIONS, SAMPLES
from dashboard.views import View


def page(view: View | None, problem: str | None, source) -> None:
    st.title("How robust is the ranking to the weights?")
    if not ready(view, problem, source):
        return
    provenance(view)
    if not scoreable(view):
        return
    cols = st.columns(len(view.taus))
    for col, (label, tau) in zip(cols, view.taus.items()):
        col.metric(f"Kendall tau vs {label}", "n/a" if tau is None else f"{tau:.2f}")
    if len(view.models) < 2:
        st.info("One model in view: it ranks first under any weights. Choose experiments with more models.")
        return
    if len(view.weights) < 2:
        what = "All weights are zero: PePR is the performance" if not view.weights else "Only one resource is weighted: every weight sample is that one resource"
        st.info(f"{what}, so there is nothing to vary. Weigh a second resource in the sidebar to see how robust the ranking is.")
        return
    left, right = st.columns(2)
    left.select_slider("Weight samples", SAMPLES, key="s_n")
    right.select_slider("Concentration (higher = closer to the current weights)", CONCENTRATIONS, key="s_c")
    table = view.sensitivity
    st.caption(
        f"{view.controls.samples} weight vectors drawn from a Dirichlet centred on the current weights; "
        "each ranks the models by mean PePR. Each probability is an estimate from these draws, within "
        f"about ±{1 / math.sqrt(view.controls.samples):.2f} (two standard errors at most)."
    )
    charts.show(st, charts.rank_probabilities(table), width="stretch")
    st.dataframe(
        table.rename(columns={"rank": "current rank", "pepr": "PePR", "p_first": "P(rank 1)", "p_top5": "P(top 5)"}),
        hide_index=True,
        width="stretch",
    )
