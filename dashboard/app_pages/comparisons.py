"""Comparisons (paper, Fig. 3 a-c): pretrained vs scratch, full vs reduced data, small vs large,
with the paper's unpaired t-test next to the sound paired tests, and what each group cost."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts
from dashboard.app_pages import provenance, ready
from dashboard.text import plain
from dashboard.views import View
from pepr.resources import RESOURCES


def page(view: View | None, problem: str | None, source) -> None:
    st.title("Comparisons")
    if not ready(view, problem, source):
        return
    provenance(view)
    for note in view.uncompared:
        st.caption(plain(note))
    found = view.comparisons
    if not found:
        st.info(
            "This database holds no such pairs: pretrained and from-scratch runs of a dataset, "
            "full and reduced training data, or models on both sides of the size threshold."
        )
        return
    tests = sum(c.stats["holm_p"].notna().sum() for c in found)
    st.caption(
        "PePR is relative to each run's own experiment, under the sidebar's weights. "
        "p-values, the sound test first: where the same models are on both sides, the paired Wilcoxon "
        "signed-rank test (then a paired t-test and Mann-Whitney), else Mann-Whitney; then Welch, and last the paper's "
        "unpaired Student t-test (scipy ttest_ind)."
        + (f" With {tests} sound tests on this page, some p below 0.05 come by chance alone: the Holm-adjusted "
           "p of each (Wilcoxon where paired, else Mann-Whitney) below 0.05 keeps the chance of any false "
           "finding among them all under 5%." if tests > 1 else "")
    )
    energy = RESOURCES["energy"]
    for comparison in found:
        st.subheader(plain(comparison.title))
        st.caption(comparison.note)
        if comparison.left_out:
            st.caption("Left out: " + "; ".join(plain(e) for e in comparison.left_out) + ".")
        if comparison.one_side:
            st.caption(f"On one side only, so in the unpaired tests alone: {', '.join(map(plain, comparison.one_side))}.")
        st.dataframe(comparison.costs, hide_index=True, width="stretch")
        st.dataframe(_readable(comparison.stats, comparison.paired), hide_index=True, width="stretch")
        left, middle, right = st.columns(3)
        charts.show(left, charts.distributions(comparison.frame, "performance", "performance"), width="stretch")
        charts.show(middle, charts.distributions(comparison.frame, "pepr", "PePR"), width="stretch")
        if energy.column in comparison.frame and comparison.frame[energy.column].notna().any():
            unit, factor = view.units.get("energy", ("kWh", 1.0))
            charts.show(
                right,
                charts.distributions(comparison.frame.dropna(subset=[energy.column]), energy.column, f"energy ({unit})", scale=factor),
                width="stretch",
            )


def _p(value) -> str:
    return "n/a" if value is None or pd.isna(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _readable(table: pd.DataFrame, paired: bool) -> pd.DataFrame:
    """One row per measure: n and median per group, then the sound test's p (Wilcoxon where
    paired, else Mann-Whitney) and its Holm-adjusted p, in view beside the medians; then the
    pairs and the other tests, the paper's last."""
    a, b = table["a"].iloc[0], table["b"].iloc[0]
    out = {
        "measure": table["measure"],
        f"models {a}": table["n_a"],
        f"models {b}": table["n_b"],
        f"median {a}": table["median_a"].map(lambda v: f"{v:.4g}"),
        f"median {b}": table["median_b"].map(lambda v: f"{v:.4g}"),
    }
    if paired:
        out["paired: Wilcoxon p"] = table["wilcoxon_p"].map(_p)
    else:
        out["Mann-Whitney p"] = table["mannwhitney_p"].map(_p)
    out["Holm-adjusted p (" + ("Wilcoxon" if paired else "Mann-Whitney") + ")"] = table["holm_p"].map(_p)
    if paired:
        out["pairs (same model)"] = table["pairs"]
        out[f"median paired difference ({a} - {b})"] = table["median_diff"].map(lambda v: "n/a" if v is None or pd.isna(v) else f"{v:.4g}")
        out["paired: t p"] = table["paired_t_p"].map(_p)
        out["Mann-Whitney p"] = table["mannwhitney_p"].map(_p)
    out["Welch p"] = table["welch_p"].map(_p)
    out["paper's test: unpaired t p"] = table["student_p"].map(_p)
    return pd.DataFrame(out)
