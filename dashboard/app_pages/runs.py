"""Runs: every run, failed and interrupted included, with how its energy was obtained."""

import streamlit as st

from dashboard import views
from dashboard.sidebar import View, current

COLUMNS = [
    "status", "experiment", "model", "performance", "energy_kwh", "estimated_share",
    "energy_cpu_method", "energy_gpu_method", "energy_ram_method", "co2_kg", "train_time_s",
    "gpu_mem_reserved_gb", "params", "source", "device", "error", "started_at", "run_id",
]


def render(view: View) -> None:
    st.title("Runs")
    runs = view.runs.assign(estimated_share=views.estimated_share(view.runs))
    left, middle, right = st.columns(3)
    statuses = left.multiselect("Status", sorted(runs["status"].unique()), key="r_status", placeholder="all")
    experiments = middle.multiselect("Experiment", sorted(runs["experiment"].unique()), key="r_exp", placeholder="all")
    text = right.text_input("Model contains", key="r_model")
    if statuses:
        runs = runs[runs["status"].isin(statuses)]
    if experiments:
        runs = runs[runs["experiment"].isin(experiments)]
    if text:
        runs = runs[runs["model"].str.contains(text, case=False, regex=False)]
    counts = runs["status"].value_counts()
    st.caption(
        f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; {int((runs['estimated_share'] > 0).sum())} with part of their energy estimated"
        " (CodeCarbon's models of CPU or RAM power where no counter could be read)."
    )
    st.dataframe(
        runs[COLUMNS],
        hide_index=True,
        width="stretch",
        column_config={
            "estimated_share": st.column_config.ProgressColumn(
                "energy estimated", help="Share of the energy that is an estimate", format="percent", min_value=0, max_value=1
            )
        },
    )


render(current("runs"))
