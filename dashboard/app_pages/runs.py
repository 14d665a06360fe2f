"""Runs: every run, failed and interrupted included, with how its numbers were obtained."""

from __future__ import annotations

import streamlit as st

from dashboard import views
from dashboard.app_pages import ready
from dashboard.text import plain
from dashboard.views import View


def page(view: View | None, problem: str | None, source) -> None:
    st.title("Runs")
    if not ready(view, problem, source):
        return
    runs = view.runs.assign(estimated_share=views.estimated_share(view.runs))
    left, middle, right = st.columns(3)
    left.multiselect("Status", sorted(runs["status"].unique()), key="r_status", placeholder="all")
    middle.multiselect("Experiment", view.offer.experiments, key="r_exp", placeholder="all")
    right.text_input("Model contains", key="r_model")
    c = view.controls
    statuses = set(c.run_status) & set(runs["status"])  # a status kept from another database may be absent
    if statuses:
        runs = runs[runs["status"].isin(statuses)]
    if c.run_experiments:
        runs = runs[runs["experiment"].isin(c.run_experiments)]
    if c.run_model:
        runs = runs[runs["model"].str.contains(c.run_model, case=False, regex=False, na=False)]
    if runs.empty:
        st.info("No run matches these filters.")
        return
    counts = runs["status"].value_counts()
    st.caption(
        f"{len(runs)} run{'s' * (len(runs) != 1)}: " + ", ".join(f"{n} {plain(s)}" for s, n in counts.items())
        + f"; {int((runs['estimated_share'] > 0).sum())} with part of their energy estimated"
        " (models of CPU or RAM power, such as CodeCarbon's, where no counter could be read)."
    )
    st.dataframe(
        views.runs_table(runs),
        hide_index=True,
        width="stretch",
        column_config={
            "energy estimated": st.column_config.ProgressColumn(
                "energy estimated", help="Share of the energy that is an estimate", format="percent", min_value=0, max_value=1
            )
        },
    )
