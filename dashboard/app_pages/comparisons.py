"""Comparisons (paper, Fig. 3 a-c): pretrained vs scratch, full vs reduced data, small vs large."""

import streamlit as st

from dashboard import charts, views
from dashboard.sidebar import View, current


def render(view: View) -> None:
    st.title("Comparisons")
    threshold = view.controls.threshold_m
    found = views.comparisons(view.scored.table, None if threshold is None else threshold * 1e6)
    if not found:
        st.info(
            "The selected experiments hold no such pairs: pretrained and from-scratch runs of a "
            "dataset, full and reduced training data, or models on both sides of the size threshold."
        )
        return
    st.caption("Each run's PePR is relative to its own experiment. p-values: Welch t-test, Mann-Whitney U.")
    for title, frame in found.items():
        st.subheader(title)
        left, right, stats = st.columns([1, 1, 1.4])
        left.altair_chart(charts.distributions(frame, "performance", "performance"))
        right.altair_chart(charts.distributions(frame, "pepr", "PePR"))
        stats.dataframe(_readable(views.comparison_stats(frame)), hide_index=True)


def _readable(table):
    def p(value):
        return "n/a" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")

    return table.assign(
        welch_p=table["welch_p"].map(p), mannwhitney_p=table["mannwhitney_p"].map(p)
    ).rename(columns={"welch_p": "Welch p", "mannwhitney_p": "Mann-Whitney p"})


render(current("scores"))
