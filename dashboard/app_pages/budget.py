"""Budget pick: the best model within hard resource caps, typed in readable units."""

from __future__ import annotations

import streamlit as st

from dashboard.app_pages import card, provenance, ready, scoreable
from dashboard.controls import CAPPED, MAX_CAP
from dashboard.views import View, readable_table
from pepr.resources import RESOURCES
from pepr.score import measured, strongest

LABELS = {"rank": "PePR rank", "model": "model", "pepr": "PePR", "performance": "performance", "reason": "why excluded"}


def _store(name: str, factor: float) -> None:
    """Keep a typed cap in the resource's stored unit (so it survives a change of unit)."""
    value = st.session_state[f"b_cap_{name}"]
    st.session_state[f"cap_{name}"] = None if value is None else float(f"{float(value) * factor:.12g}")


def page(view: View | None, problem: str | None, source) -> None:
    st.title("The best model within a budget")
    if not ready(view, problem, source):
        return
    provenance(view)
    if not scoreable(view):
        return
    models = view.models
    in_models = measured(models, CAPPED)
    present = [n for n in CAPPED if n in in_models]
    missing = [RESOURCES[n].label for n in CAPPED if n not in present]
    unused = [RESOURCES[n].label for n in view.controls.caps if n not in present]
    if unused:
        st.warning(f"Ignored: the cap on {', '.join(unused)}, which no model here has measured.")
    st.caption(
        "Leave a cap empty for no limit. Scores stay relative to the whole experiment."
        + (f" Not measured here: {', '.join(missing)}." if missing else "")
        + (f" CO2 at {view.carbon.chosen:g} g/kWh." if view.carbon.chosen is not None else "")
    )
    state = st.session_state
    for column, name in zip(st.columns(len(present) or 1), present):
        resource = RESOURCES[name]
        unit, factor = view.units[name]
        cap = state.get(f"cap_{name}")
        state[f"b_cap_{name}"] = None if cap is None else float(f"{cap / factor:.12g}")  # 30 mWh, not 30.000000000000004
        typical = models[resource.column].median() / factor
        column.number_input(
            resource.heading(unit),
            value=None, min_value=0.0, max_value=float(f"{MAX_CAP / factor:.12g}"), step=_step(typical),
            format="%g", placeholder="no cap",  # None: clearable
            key=f"b_cap_{name}", on_change=_store, args=(name, factor),
        )
    feasible, excluded = view.budget
    if feasible.empty:
        st.warning("No model fits within these caps.")
    else:
        by_perf = strongest(feasible)
        by_pepr = feasible.iloc[0]
        left, right = st.columns(2)
        for box, label, row in ((left, "Best feasible by performance", by_perf), (right, "Best feasible by PePR", by_pepr)):
            card(box, label, row["model"], f"performance {row['performance']:.3f}, PePR {row['pepr']:.3f}")
    columns = ["rank", "model", "pepr", "performance", *(RESOURCES[n].column for n in present)]
    st.subheader(f"Feasible: {len(feasible)} of {len(models)} models")
    st.dataframe(readable_table(feasible[columns], view.units, LABELS), hide_index=True, width="stretch")
    if len(excluded):
        st.subheader(f"Excluded: {len(excluded)}")
        st.dataframe(readable_table(excluded[["model", "reason", *columns[4:]]], view.units, LABELS), hide_index=True, width="stretch")


def _step(typical: float) -> float:
    """A step of about a tenth of a typical value, rounded to 1, 2 or 5 times a power of ten."""
    import math

    if not typical or not math.isfinite(typical) or typical <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(typical / 10))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= typical / 10))
