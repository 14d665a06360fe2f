"""Budget pick: the best model within hard resource caps."""

import streamlit as st

from dashboard import views
from dashboard.sidebar import View, current

CAPS = {  # column -> (label, scale of the number the user types)
    "energy_kwh": ("Energy (kWh)", 1.0),
    "gpu_mem_reserved_gb": ("GPU memory (GB)", 1.0),
    "train_time_s": ("Training time (s)", 1.0),
    "params": ("Parameters (millions)", 1e6),
}
LABELS = {"rank": "PePR rank", "pepr": "PePR", **{c: label for c, (label, _) in CAPS.items()}}
LABELS["params"] = "parameters"


def render(view: View) -> None:
    st.title("The best model within a budget")
    models = view.models
    if models.empty:
        st.warning("No scoreable runs in the selected experiments.")
        return
    unmeasured = [c for c in CAPS if models[c].isna().all()]
    st.caption(
        "Leave a cap empty for no limit. Scores stay relative to the whole experiment."
        + (f" Not measured here (greyed out): {', '.join(CAPS[c][0] for c in unmeasured)}." if unmeasured else "")
    )
    caps = {}
    for col, (column, (label, scale)) in zip(st.columns(len(CAPS)), CAPS.items()):
        value = col.number_input(
            label, min_value=0.0, value=None, placeholder="no cap", key=f"b_{column}", disabled=column in unmeasured
        )
        caps[column] = None if value is None else value * scale
    feasible, excluded = views.budget(models, caps)
    if feasible.empty:
        st.warning("No model fits within these caps.")
    else:
        by_perf = feasible.sort_values(["performance", "pepr"], ascending=False).iloc[0]
        by_pepr = feasible.iloc[0]
        left, right = st.columns(2)
        left.metric("Best feasible by performance", by_perf["model"], border=True)
        left.caption(f"performance {by_perf['performance']:.3f}, PePR {by_perf['pepr']:.3f}")
        right.metric("Best feasible by PePR", by_pepr["model"], border=True)
        right.caption(f"performance {by_pepr['performance']:.3f}, PePR {by_pepr['pepr']:.3f}")
    st.subheader(f"Feasible: {len(feasible)} of {len(models)} models")
    shown = feasible[["rank", "model", "pepr", "performance", *CAPS]].dropna(axis=1, how="all")
    st.dataframe(shown.rename(columns=LABELS), hide_index=True, width="stretch")
    if len(excluded):
        st.subheader(f"Excluded: {len(excluded)}")
        st.dataframe(excluded.rename(columns=LABELS), hide_index=True, width="stretch")


render(current("scores"))
