"""Comparisons (paper, Fig. 3 a-c): pretrained vs scratch, full vs reduced data, small vs large."""

import pandas as pd
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
        left, right = st.columns(2)
        left.altair_chart(charts.distributions(frame, "performance", "performance"), width="stretch")
        right.altair_chart(charts.distributions(frame, "pepr", "PePR"), width="stretch")
        st.dataframe(_readable(views.comparison_stats(frame)), hide_index=True, width="stretch")


def _readable(table):
    """One row per measure: n and median of each group, then the two p-values."""
    a, b = table["a"].iloc[0], table["b"].iloc[0]

    def p(value):
        return "n/a" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")

    return pd.DataFrame(
        {
            "measure": table["measure"],
            f"n {a}": table["n_a"],
            f"n {b}": table["n_b"],
            f"median {a}": table["median_a"].round(4),
            f"median {b}": table["median_b"].round(4),
            "Welch p": table["welch_p"].map(p),
            "Mann-Whitney p": table["mannwhitney_p"].map(p),
        }
    )


render(current("scores"))
