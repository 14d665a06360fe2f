"""The sidebar: which database, its hard states, and the what-if controls (mirrored in the URL)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from dashboard import carbon, data, views
from dashboard.controls import (
    NORMALIZATION_LABELS,
    PERFORMANCE,
    RESOURCES,
    Controls,
    from_query,
    to_query,
)
from pepr.errors import PeprError, StoreBusyError, StoreError
from pepr.score import Scored, normalize_weights, score
from pepr.store import RunStore

RETRY_S = 5
_CI_MODES = {"": "as measured", "country": "a country's grid", "custom": "a number (g/kWh)"}


@dataclass
class View:
    """What every page reads: the runs, the controls, and the scores under them."""

    path: str
    problem: str | None = None  # a hard state: no file, busy, unreadable, no runs
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # every run, any status
    controls: Controls = field(default_factory=Controls)
    weights: dict[str, float] = field(default_factory=dict)  # normalised, measured only
    unmeasured: list[str] = field(default_factory=list)  # resources with no value in scope
    scored: Scored | None = None
    models: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per model


def database_path() -> str:
    """The database file: $PEPR_DB or results/pepr.duckdb, or what the user types."""
    return st.sidebar.text_input(
        "Database file", value=data.default_path(), key="db", help="A pepr DuckDB file; opened read-only."
    ).strip()


def _load(path: str, read=data.runs) -> tuple[pd.DataFrame | None, str | None]:
    """All runs (through `read`), or the hard state that prevents reading them."""
    if not path or not RunStore(path).exists():
        return None, (
            f"No database at `{path}`. Run the agent to record runs, or import the paper's "
            "published results on the **Data** page."
        )
    try:
        runs = read(path)
    except StoreBusyError:
        return None, "The database is being written by another process (the agent?)."
    except StoreError as error:
        return None, f"Cannot read the database: {error}"
    if runs.empty:
        return None, (
            f"`{path}` holds no runs yet. Start the agent, or import the paper's results on "
            "the **Data** page."
        )
    return runs, None


@st.fragment(run_every=RETRY_S)
def _retry(path: str, problem: str) -> None:
    """Look again every few seconds (quickly, uncached); reload the app once it changed."""
    st.caption(f"Checking again every {RETRY_S} s.")
    if _load(path, lambda p: RunStore(p, timeout=0.5).runs())[1] != problem:
        data.refresh()
        st.rerun()


def show_problem(view: View) -> None:
    """Tell the user why there is nothing to show yet (and keep checking)."""
    st.info(view.problem)
    _retry(view.path, view.problem)


def _seed(experiments: list[str], metrics: list[str]) -> None:
    """Set the widgets from the URL once per session."""
    if st.session_state.get("_seeded") == st.session_state.get("db"):
        return
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    start = from_query(params, experiments, metrics)
    state = st.session_state
    state["c_x"] = list(start.experiments)
    state["c_m"] = start.metric
    state["c_p"] = start.performance
    for name in RESOURCES:
        state[f"c_w_{name}"] = float(start.weights.get(name, 0.0))
    state["c_n"] = start.normalization
    state["c_a"] = float(start.alpha)
    code = start.intensity.upper()
    state["c_ci_value"] = 400.0  # a typical grid, until the user types another
    if code in carbon.countries():
        state["c_ci"], state["c_ci_country"] = "country", code
    elif carbon.intensity(start.intensity) is not None:
        state["c_ci"], state["c_ci_value"] = "custom", carbon.intensity(start.intensity)
    else:
        state["c_ci"] = ""
    state["c_t"] = start.threshold_m
    state["_seeded"] = state.get("db")


def _choices(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The experiments and the performance metrics (of ok runs) a user can pick from."""
    experiments = sorted(runs["experiment"].dropna().unique())
    metrics = sorted(runs.loc[runs["status"] == "ok", "metric"].dropna().unique())
    return experiments, metrics


def _controls(
    runs: pd.DataFrame, experiments: list[str], metrics: list[str], best_val: bool
) -> tuple[Controls, set[str]]:
    """Draw the what-if controls; return them and the resources measured in the chosen scope."""
    sb = st.sidebar
    _seed(experiments, metrics)
    state = st.session_state
    state["c_x"] = [e for e in state.get("c_x", []) if e in experiments]
    chosen = sb.multiselect("Experiments", experiments, key="c_x", help="Empty = all.")
    scope = runs[runs["experiment"].isin(chosen or experiments) & (runs["status"] == "ok")]
    metric = None
    if metrics:
        if state.get("c_m") not in metrics:
            state["c_m"] = metrics[0]
        metric = sb.selectbox("Performance metric", metrics, key="c_m")
        scope = scope[scope["metric"] == metric]
    performance = "final"
    if best_val:
        performance = sb.radio(
            "Performance", list(PERFORMANCE), format_func=PERFORMANCE.get, key="c_p", horizontal=True
        )
    has = views.measured(scope)
    sb.markdown("**Resource weights**")
    raw = {}
    for name, (label, unit) in RESOURCES.items():  # labels stay fixed: they are the widget's identity
        label = f"{label} ({unit})" if unit else label
        raw[name] = sb.slider(label, 0.0, 1.0, step=0.05, key=f"c_w_{name}", disabled=name not in has)
    shown = normalize_weights({k: v for k, v in raw.items() if k in has})
    sb.caption(
        "Normalised: " + (", ".join(f"{RESOURCES[k][0]} {v:.0%}" for k, v in shown.items()) or "none (PePR = performance)")
    )
    missing = [RESOURCES[k][0] for k in RESOURCES if k not in has]
    if missing:
        sb.caption(f"Not measured in these experiments (greyed out): {', '.join(missing)}.")
    normalization = sb.radio(
        "Normalisation per experiment", list(NORMALIZATION_LABELS), format_func=NORMALIZATION_LABELS.get, key="c_n", horizontal=True
    )
    alpha = sb.number_input("Trade-off factor alpha", min_value=1.0, step=0.5, key="c_a", help="1 = basic PePR; large = resources matter little.")
    mode = sb.radio("Grid carbon intensity", list(_CI_MODES), format_func=_CI_MODES.get, key="c_ci")
    intensity = ""
    countries = carbon.countries()
    if mode == "country" and countries:
        intensity = sb.selectbox(
            "Country",
            list(countries),
            key="c_ci_country",
            format_func=lambda c: f"{countries[c][0]} ({c}), {countries[c][1]:.0f} g/kWh",
        )
    elif mode == "custom":
        intensity = f"{sb.number_input('g CO2eq per kWh', min_value=0.0, step=10.0, key='c_ci_value'):g}"
    threshold = sb.number_input(
        "Small/large threshold (M parameters)", min_value=0.0, value=None, step=1.0, key="c_t", placeholder="median"
    )
    sb.caption("The address bar holds these settings: copy it to share this view.")
    controls = Controls(
        experiments=tuple(chosen or experiments),
        metric=metric,
        performance=performance,
        weights=raw,
        normalization=normalization,
        alpha=float(alpha),
        intensity=intensity,
        threshold_m=threshold,
    )
    return controls, has


def _mirror(controls: Controls, experiments: list[str], metrics: list[str]) -> None:
    """Write the controls into the URL (only when they changed)."""
    query = to_query(controls, experiments, metrics)
    current = {key: st.query_params.get_all(key) for key in st.query_params}
    wanted = {key: value if isinstance(value, list) else [value] for key, value in query.items()}
    if current != wanted:
        st.query_params.from_dict(query)


def current(needs: str = "scores") -> View:
    """This run's view for a page; where it lacks what the page `needs` ("scores", "runs" or
    ""), show the hard state and stop the page there."""
    found = st.session_state["_view"]
    if (needs == "scores" and found.scored is None) or (needs == "runs" and found.runs.empty):
        show_problem(found)
        st.stop()
    return found


def view(path: str) -> View:
    """Load the runs, draw the controls, score the runs in scope; pages get it by `current`."""
    st.session_state["_view"] = found = _view(path)
    return found


def _view(path: str) -> View:
    runs, problem = _load(path)
    if problem:
        return View(path=path, problem=problem)
    epochs = data.epochs(path)
    best_val = bool(epochs[["val_metric", "test_metric"]].notna().all(axis=1).any())
    experiments, metrics = _choices(runs)
    controls, has = _controls(runs, experiments, metrics, best_val)
    _mirror(controls, experiments, metrics)
    scope = runs[runs["experiment"].isin(controls.experiments)]
    if controls.metric is not None:
        scope = scope[scope["metric"] == controls.metric]
    if controls.performance == "bestval":
        scope = views.with_best_validation(scope, epochs)
    scope = carbon.with_intensity(scope, carbon.intensity(controls.intensity))
    weights = {k: v for k, v in controls.weights.items() if k in has}
    unmeasured = [k for k, v in controls.weights.items() if v > 0 and k not in has]
    try:
        scored = score(scope, weights, controls.normalization, controls.alpha)
    except PeprError as error:
        return View(path=path, problem=f"Cannot score these runs: {error}", runs=runs, controls=controls)
    return View(
        path=path,
        runs=runs,
        controls=controls,
        weights=scored.weights,
        unmeasured=unmeasured,
        scored=scored,
        models=views.by_model(scored.table),
    )
