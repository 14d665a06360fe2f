"""Runs: every run, failed and interrupted included, with how its numbers were obtained."""

from __future__ import annotations

import streamlit as st

from dashboard import views
from dashboard.app_pages import ready
from dashboard.text import plain
from dashboard.views import View, readable_table
from pepr.resources import RESOURCES, typical_unit

LABELS = {
    "status": "status", "experiment": "experiment", "model": "model", "performance": "performance",
    "estimated_share": "energy estimated", "energy_tool": "energy measured with", "pue": "PUE included",
    "energy_cpu_method": "CPU energy method", "energy_gpu_method": "GPU energy method",
    "energy_ram_method": "RAM energy method", "carbon_intensity": "grid intensity (g/kWh)",
    "carbon_intensity_source": "intensity source", "train_time_scope": "training time covers",
    "seed": "seed", "source": "source", "device": "device", "error": "error",
    "started_at": "started", "run_id": "run id",
}
SHOWN_RESOURCES = ("energy", "co2", "train_time", "infer_time", "gpu_memory", "params")


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
    columns = [*list(LABELS)[:4], *(RESOURCES[n].column for n in SHOWN_RESOURCES), *list(LABELS)[4:]]
    units = {n: typical_unit(RESOURCES[n], runs[RESOURCES[n].column]) for n in SHOWN_RESOURCES}
    shown = readable_table(runs[[c for c in columns if c in runs]], units, LABELS)
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={
            "energy estimated": st.column_config.ProgressColumn(
                "energy estimated", help="Share of the energy that is an estimate", format="percent", min_value=0, max_value=1
            )
        },
    )
