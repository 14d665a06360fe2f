"""The sidebar and the session state: widgets only; what they mean is `dashboard.views`.

Every widget's value lives in `st.session_state` under a fixed key, seeded once from the link
(`dashboard.controls.from_query`) and read back into one `Controls` by `controls()`.
"""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from dashboard import carbon
from dashboard.controls import (
    CAPPED,
    MAX_ALPHA,
    MAX_G_PER_KWH,
    NORMALIZATION_LABELS,
    PERFORMANCE,
    THRESHOLD_RANGE_M,
    WEIGHTED,
    Controls,
    from_query,
)
from dashboard.sources import Source
from dashboard.text import plain
from dashboard.views import Offer
from pepr.resources import RESOURCES
from pepr.score import normalize_weights

CI_MODES = {"": "as measured", "country": "a country's grid", "custom": "a number (g/kWh)"}
# Widget keys drawn on pages: kept when their page is not shown (Streamlit forgets them otherwise).
PAGE_KEYS = ("e_color", "s_n", "s_c", "k_runs", "k_x", "r_status", "r_exp", "r_model", "bl_k")


def pick_database(found: Mapping[str, Source]) -> Source | None:
    """The database picker; the link's `db` chooses the first one of a session."""
    state = st.session_state
    keys = list(found)
    if state.get("_switch_db") in keys:
        state["db"] = state.pop("_switch_db")
    if "db" not in state or state["db"] not in keys:
        wanted = st.query_params.get("db")
        state["db"] = wanted if wanted in keys else (keys[0] if keys else None)
    if not keys:
        st.sidebar.error("No database to open: none shipped, none in the user data folder.")
        return None
    key = st.sidebar.selectbox("Database", keys, key="db", format_func=lambda k: found[k].label)
    return found[key]


def keep_page_state() -> None:
    """Re-assign page widgets' values so that they survive a visit to another page."""
    state = st.session_state
    for key in (*PAGE_KEYS, *(k for k in state if str(k).startswith(("cap_", "bl_")))):
        if key in state:
            state[key] = state[key]


# Link keys of the what-if choices that mean the same in any database: a switch keeps them.
KEPT_ACROSS_DATABASES = ("w", "n", "a", "ci", "t", "cap", "bw", "bn", "ba", "k", "sn", "sc", "col", "rs")


def seed(offer: Offer, dbs: list[str]) -> list[str]:
    """Set every widget from the link, once per session and database (a switch keeps the
    choices of KEPT_ACROSS_DATABASES, the rest start anew); returns the link values that were
    ignored, with why."""
    state = st.session_state
    if state.get("_seeded") == state.get("db"):
        return state.get("_ignored", [])
    first = "_seeded" not in state
    params = {key: st.query_params.get_all(key) for key in st.query_params
              if first or key in KEPT_ACROSS_DATABASES}
    start, ignored = from_query(params, offer.experiments, offer.metrics, offer.default, dbs, list(carbon.countries()),
                                 offer.devices, offer.best_val)
    for dataset, experiments in offer.groups.items():
        state[f"c_x:{dataset}"] = [e for e in start.experiments if e in experiments]
    state["c_m"] = start.metric
    state["c_p"] = start.performance
    for name in WEIGHTED:
        state[f"c_w_{name}"] = float(start.weights.get(name, 0.0))
    state["c_n"] = start.normalization
    state["c_a"] = float(start.alpha)
    code = start.intensity.upper()
    countries = carbon.countries()
    state["c_ci_country"] = code if code in countries else home_country(offer, countries)
    state["c_ci_value"] = 400.0
    if code in countries:
        state["c_ci"] = "country"
    elif carbon.intensity(start.intensity) is not None:
        state["c_ci"], state["c_ci_value"] = "custom", carbon.intensity(start.intensity)
    else:
        state["c_ci"] = ""
    state["c_t"] = start.threshold_m
    for name in CAPPED:
        state[f"cap_{name}"] = start.caps.get(name)
    state["bl_weights"] = dict(start.baseline_weights)
    state["bl_n"] = start.baseline_normalization
    state["bl_a"] = start.baseline_alpha
    state["bl_k"] = start.top_k
    state["s_n"], state["s_c"] = start.samples, int(start.concentration)
    state["e_color"] = start.color
    state["c_d"] = start.device or None
    state["k_runs"] = list(start.curve_runs)
    state["k_x"] = start.curve_axis or None
    state["r_status"], state["r_exp"], state["r_model"] = list(start.run_status), list(start.run_experiments), start.run_model
    state["_seeded"], state["_ignored"] = state.get("db"), ignored
    return ignored


def home_country(offer: Offer, countries: Mapping[str, tuple[str, float]]) -> str | None:
    """The runs' own country; where none is recorded, the one whose grid is closest to the
    intensity they were measured at."""
    if offer.country in countries:
        return offer.country
    if offer.intensity is None or not countries:
        return next(iter(countries), None)
    return min(countries, key=lambda code: abs(countries[code][1] - offer.intensity))


def controls(offer: Offer, state: Mapping | None = None) -> Controls:
    """The controls as the widgets hold them now."""
    state = st.session_state if state is None else state
    chosen = tuple(e for dataset in offer.groups for e in state.get(f"c_x:{dataset}", []) if e in offer.experiments)
    mode = state.get("c_ci", "")
    intensity = ""
    if mode == "country" and state.get("c_ci_country"):
        intensity = state["c_ci_country"]
    elif mode == "custom" and state.get("c_ci_value") is not None:
        intensity = f"{float(state['c_ci_value']):g}"
    caps = {name: float(state[f"cap_{name}"]) for name in CAPPED if state.get(f"cap_{name}") is not None}
    base = Controls()  # the defaults of what is not chosen yet
    return Controls(
        db=state.get("db") or "",
        experiments=chosen or offer.default,
        metric=state.get("c_m") if state.get("c_m") in offer.metrics else next(iter(offer.metrics), None),
        performance=state.get("c_p") or base.performance,
        weights={name: float(state.get(f"c_w_{name}", 0.0)) for name in WEIGHTED},
        normalization=state.get("c_n") or base.normalization,
        alpha=float(state.get("c_a") if state.get("c_a") is not None else base.alpha),
        intensity=intensity,
        threshold_m=state.get("c_t"),
        caps=caps,
        baseline_weights=dict(state.get("bl_weights", base.baseline_weights)),
        baseline_normalization=state.get("bl_n", base.baseline_normalization),
        baseline_alpha=float(state.get("bl_a", base.baseline_alpha)),
        top_k=int(state.get("bl_k") or base.top_k),
        samples=int(state.get("s_n") or base.samples),
        concentration=float(state.get("s_c") or base.concentration),
        color=state.get("e_color") or base.color,
        # what the Curves page filled in itself is the default, kept out of the link
        curve_runs=() if state.get("k_runs") == state.get("_k_runs_auto") else tuple(state.get("k_runs") or ()),
        curve_axis="" if state.get("k_x") == state.get("_k_x_auto") else state.get("k_x") or "",
        run_status=tuple(state.get("r_status") or ()),
        run_experiments=tuple(state.get("r_exp") or ()),
        run_model=state.get("r_model") or "",
        device=state.get("c_d") if state.get("c_d") in offer.devices else next(iter(offer.devices), ""),
    )


def pin_baseline() -> None:
    """Pin the current weighting as the baseline the Explorer compares with."""
    state = st.session_state
    state["bl_weights"] = {name: float(state.get(f"c_w_{name}", 0.0)) for name in WEIGHTED if state.get(f"c_w_{name}", 0.0) > 0}
    state["bl_n"] = state.get("c_n", "minmax")
    state["bl_a"] = max(1.0, float(state.get("c_a") or 1.0))


def draw(offer: Offer, measured: set[str]) -> None:
    """Draw the what-if controls (their values are read by `controls`)."""
    sb = st.sidebar
    sb.markdown("**Experiments** (normalisation groups)")
    for dataset, experiments in offer.groups.items():
        sb.multiselect(
            plain(dataset), experiments, key=f"c_x:{dataset}", placeholder="none",
            help="Each experiment is scored within itself; a model's figures are its mean over those chosen.",
        )
        sb.caption("; ".join(plain(offer.describe[e]) for e in experiments))
    if not any(st.session_state.get(f"c_x:{dataset}") for dataset in offer.groups):
        sb.warning(f"No experiment chosen: the pages show {plain(', '.join(offer.default))}, the default.")
    if offer.metrics:
        sb.selectbox("Performance metric", offer.metrics, key="c_m")
    if offer.best_val:
        sb.radio("Performance", list(PERFORMANCE), format_func=PERFORMANCE.get, key="c_p", horizontal=True)
    if offer.devices:
        sb.selectbox("Deployment device (inference cost)", offer.devices, key="c_d",
                     help="Inference latency and energy per image as benchmarked on this device "
                          "(`pepr-agent bench`), joined to the runs by model name.")
    sb.markdown("**Resource weights**")
    # Inference cost is offered only where a deployment device was benchmarked.
    offered = [name for name in WEIGHTED if offer.devices or not RESOURCES[name].benchmarked]
    for name in offered:  # labels stay fixed: they are the widget's identity
        resource = RESOURCES[name]
        sb.slider(resource.label, 0.0, 1.0, step=0.05, key=f"c_w_{name}", disabled=name not in measured)
    state = st.session_state
    shown = normalize_weights({k: float(state.get(f"c_w_{k}", 0.0)) for k in WEIGHTED if k in measured})
    sb.caption(
        "Normalised: " + (", ".join(f"{RESOURCES[k].label} {v:.0%}" for k, v in shown.items()) or "none (PePR = performance)")
    )
    missing = [RESOURCES[k].label for k in offered if k not in measured]
    if missing:
        sb.caption(f"Not measured in these experiments (greyed out): {', '.join(missing)}.")
    sb.button("Pin these weights as the baseline", key="c_pin", on_click=pin_baseline,
              help="The Explorer then shows which models moved, entered or left the top k.")
    sb.radio("Normalisation per experiment", list(NORMALIZATION_LABELS), format_func=NORMALIZATION_LABELS.get, key="c_n", horizontal=True)
    sb.number_input("Trade-off factor alpha (at least 1)", min_value=1.0, max_value=MAX_ALPHA, step=0.5, key="c_a", format="%g",
                    help="1 = basic PePR; large = resources matter little.")
    mode = sb.radio("Grid carbon intensity", list(CI_MODES), format_func=CI_MODES.get, key="c_ci")
    countries = carbon.countries()
    if mode == "country" and countries:
        sb.selectbox(
            "Country", list(countries), key="c_ci_country",
            format_func=lambda c: f"{countries[c][0]} ({c}), {countries[c][1]:.0f} g/kWh",
        )
    elif mode == "custom":
        sb.number_input("g CO2eq per kWh", min_value=0.0, max_value=MAX_G_PER_KWH, step=10.0, key="c_ci_value", format="%g")
    low, high = THRESHOLD_RANGE_M
    sb.number_input("Small/large threshold (millions of parameters)", value=None, min_value=low, max_value=high,
                    step=1.0, key="c_t", placeholder="median model", format="%g")  # value None: clearable
    sb.caption("The address bar holds every choice on every page: copy it to share this view.")
