"""Every choice a user can make, and its URL form, so that a link reproduces the view exactly.

Query parameters (all optional; an absent one takes its default, a bad one is ignored with a
message naming it):

    db   database: a key of the picker (`paper`, `agent`, `start`, `user:NAME`)
    x    experiment to include, repeated (default: one experiment, see `default_experiments`)
    m    performance metric (default: the first present)
    p    performance: `final` (last epoch) or `bestval` (test metric at the best validation epoch)
    w    resource weights, `energy:1,co2:0.5`, `none` for all zero (default: energy:1, PePR-E)
    n    normalisation per experiment: `minmax` or `max`
    a    trade-off factor alpha >= 1
    ci   grid carbon intensity what-if: an ISO-3 country code or g CO2eq/kWh (default: as measured)
    t    small/large threshold in millions of parameters (default: the median model)
    cap  budget caps in the resources' stored units, `energy:0.00003,gpu_memory:4`
    d    the deployment device whose inference benchmarks give the inference costs
    bw, bn, ba   the pinned baseline: weights, normalisation, alpha (default: PePR-E, min-max, 1)
    k    how many top models the baseline comparison follows (default 5)
    sn, sc       sensitivity: weight samples and Dirichlet concentration
    col  Explorer colour: `model_type` or `efficient`
    r    a run on the Curves page, repeated (default: the top three by PePR)
    ax   Curves axis: `cum_energy_kwh`, `cum_time_s` or `epoch`
    rs, rx, rq   Runs page filters: status (repeated), experiment (repeated), model text
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pepr.store import RUN_STATUSES

# The resources a user can weight, in the order of the sidebar.
WEIGHTED = ("energy", "co2", "train_time", "gpu_memory", "params", "infer_time", "infer_latency", "infer_energy")
CAPPED = ("energy", "co2", "gpu_memory", "train_time", "params", "infer_latency")
PERFORMANCE = {"final": "final", "bestval": "test at best validation epoch"}
NORMALIZATION_LABELS = {"minmax": "min-max", "max": "share of max"}
COLOR_BY = {"model_type": "model type", "efficient": "efficient or not"}
AXES = {"cum_energy_kwh": "cumulative energy", "cum_time_s": "cumulative time", "epoch": "epochs"}
SAMPLES = (100, 200, 500, 1000, 2000)
CONCENTRATIONS = (2, 5, 10, 20, 50, 100, 200)
DEFAULT_WEIGHTS = {"energy": 1.0}
MAX_G_PER_KWH = 5000.0  # above any grid on Earth (coal is about 1000)
MAX_ALPHA = 1e6  # far past where resources stop counting
MAX_CAP = 1e15  # in a resource's stored unit (kWh, kg, s, GB, parameters): past any run, and readable in every unit
THRESHOLD_RANGE_M = (0.001, 1e6)  # the small/large threshold, millions of parameters


@dataclass(frozen=True)
class Controls:
    """Everything the user decides, on every page."""

    db: str = ""
    experiments: tuple[str, ...] = ()
    metric: str | None = None
    performance: str = "final"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    normalization: str = "minmax"
    alpha: float = 1.0
    intensity: str = ""
    threshold_m: float | None = None
    caps: Mapping[str, float] = field(default_factory=dict)
    baseline_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    baseline_normalization: str = "minmax"
    baseline_alpha: float = 1.0
    top_k: int = 5
    samples: int = 500
    concentration: float = 20.0
    color: str = "model_type"
    curve_runs: tuple[str, ...] = ()
    curve_axis: str = ""
    run_status: tuple[str, ...] = ()
    run_experiments: tuple[str, ...] = ()
    run_model: str = ""
    device: str = ""  # the deployment device whose inference benchmarks price infer_*


def default_experiments(runs) -> tuple[str, ...]:
    """One experiment to open on, as leaderboards do: the one with most finished runs, then
    full data before reduced, pretrained before from scratch, then by name (the paper's
    study opens on `derma_pt`)."""
    ok = runs[runs["status"] == "ok"] if len(runs) else runs
    if ok.empty:
        return ()
    per = ok.groupby("experiment").agg(
        n=("model", "size"),
        full=("train_fraction", lambda s: bool((s >= 1).all())),
        pretrained=("pretrained", lambda s: bool(s.fillna(False).astype(bool).all())),
    )
    per = per.reset_index().sort_values(
        ["n", "full", "pretrained", "experiment"], ascending=[False, False, False, True]
    )
    return (str(per["experiment"].iloc[0]),)


def number(text: str | None, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A finite number in [low, high] from text, else None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def parse_pairs(text: str, names: Sequence[str], low: float, high: float = math.inf) -> tuple[dict[str, float], list[str]]:
    """`energy:1,co2:0.5` -> ({name: value}, [items that are not NAME:NUMBER in range])."""
    pairs: dict[str, float] = {}
    bad: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition(":")
        parsed = number(value, low, high)
        if name.strip() in names and parsed is not None:
            pairs[name.strip()] = parsed
        else:
            bad.append(item)
    return pairs, bad


def _weights(text: str | None, key: str, ignored: list[str]) -> dict[str, float] | None:
    if text is None:
        return None
    if text == "none":
        return {}
    weights, bad = parse_pairs(text, WEIGHTED, 0.0, 1.0)
    if bad:
        ignored.append(f"{key}: {', '.join(bad)} (expected NAME:WEIGHT with a weight in [0, 1], "
                       f"NAME one of {', '.join(WEIGHTED)})")
    if not weights and bad:
        return None  # nothing usable: the default weighting, said so above
    return weights


def from_query(
    params: Mapping[str, str | Sequence[str]],
    experiments: Sequence[str],
    metrics: Sequence[str],
    default: Sequence[str] = (),
    dbs: Sequence[str] = (),
    countries: Sequence[str] = (),
    devices: Sequence[str] = (),
    best_val: bool = True,
) -> tuple[Controls, list[str]]:
    """Controls from query parameters, each value checked against what the data offers (the
    best-validation performance where `best_val`), and one line per value that was ignored
    (shown to the user)."""
    ignored: list[str] = []

    def many(key: str) -> list[str]:
        value = params.get(key)
        return [value] if isinstance(value, str) else list(value or [])

    def one(key: str) -> str | None:
        values = many(key)
        return values[-1] if values else None

    def pick(key: str, allowed, fallback):
        value = one(key)
        if value is None:
            return fallback
        if value in allowed:
            return value
        ignored.append(f"{key}: {value!r} is not one of {', '.join(map(str, allowed)) or 'the choices here'}")
        return fallback

    def num(key: str, low: float, high: float, fallback, kind=float):
        value = one(key)
        if value is None:
            return fallback
        parsed = number(value, low, high)
        if parsed is None or (kind is int and parsed != int(parsed)):
            ignored.append(f"{key}: {value!r} is not a {'whole ' if kind is int else ''}number in [{low:g}, {high:g}]")
            return fallback
        return kind(parsed)

    chosen = many("x")
    unknown = [e for e in chosen if e not in experiments]
    if unknown:
        ignored.append(f"x: no experiment {', '.join(map(repr, unknown))} in this database")
    picked = tuple(dict.fromkeys(e for e in chosen if e in experiments)) or tuple(default) or tuple(experiments[:1])
    weights = _weights(one("w"), "w", ignored)
    baseline = _weights(one("bw"), "bw", ignored)
    caps, bad_caps = parse_pairs(one("cap") or "", CAPPED, 0.0, MAX_CAP)
    if bad_caps:
        ignored.append(f"cap: {', '.join(bad_caps)} (expected NAME:NUMBER in [0, {MAX_CAP:g}], "
                       f"NAME one of {', '.join(CAPPED)})")
    intensity = (one("ci") or "").strip()
    if intensity and intensity.upper() not in countries and number(intensity, 0.0, MAX_G_PER_KWH) is None:
        ignored.append(f"ci: {intensity!r} is neither a country code nor g CO2eq/kWh in [0, {MAX_G_PER_KWH:g}]")
        intensity = ""
    elif intensity.upper() in countries:
        intensity = intensity.upper()
    statuses = tuple(status for status in many("rs") if status in RUN_STATUSES)
    unknown_statuses = [status for status in many("rs") if status not in RUN_STATUSES]
    if unknown_statuses:
        verb = "is not a run status" if len(unknown_statuses) == 1 else "are not run statuses"
        ignored.append(f"rs: {', '.join(map(repr, unknown_statuses))} {verb} ({', '.join(RUN_STATUSES)})")
    run_experiments = tuple(e for e in many("rx") if e in experiments)
    unknown_runs = [e for e in many("rx") if e not in experiments]
    if unknown_runs:
        ignored.append(f"rx: no experiment {', '.join(map(repr, unknown_runs))} in this database")
    controls = Controls(
        db=pick("db", dbs, dbs[0] if dbs else "") if dbs else "",
        experiments=picked,
        metric=pick("m", metrics, metrics[0] if metrics else None),
        performance=pick("p", list(PERFORMANCE) if best_val else ["final"], "final"),
        weights=dict(DEFAULT_WEIGHTS) if weights is None else weights,
        normalization=pick("n", list(NORMALIZATION_LABELS), "minmax"),
        alpha=num("a", 1.0, MAX_ALPHA, 1.0),
        intensity=intensity,
        threshold_m=num("t", *THRESHOLD_RANGE_M, None),
        caps=caps,
        baseline_weights=dict(DEFAULT_WEIGHTS) if baseline is None else baseline,
        baseline_normalization=pick("bn", list(NORMALIZATION_LABELS), "minmax"),
        baseline_alpha=num("ba", 1.0, MAX_ALPHA, 1.0),
        top_k=num("k", 1, 50, 5, int),
        samples=int(pick("sn", [str(s) for s in SAMPLES], "500")),
        concentration=float(pick("sc", [str(c) for c in CONCENTRATIONS], "20")),
        color=pick("col", list(COLOR_BY), "model_type"),
        curve_runs=tuple(dict.fromkeys(many("r"))),
        curve_axis=pick("ax", list(AXES), ""),
        run_status=statuses,
        run_experiments=run_experiments,
        run_model=one("rq") or "",
        device=pick("d", devices, devices[0]) if devices else "",
    )
    return controls, ignored


def _pairs(values: Mapping[str, float]) -> str:
    return ",".join(f"{k}:{_short(v)}" for k, v in values.items() if v > 0) or "none"


def to_query(
    controls: Controls, metrics: Sequence[str] = (), default: Sequence[str] = (), dbs: Sequence[str] = (),
    devices: Sequence[str] = (),
) -> dict[str, str | list[str]]:
    """Query parameters for controls; defaults are left out to keep links short."""
    base = Controls()
    query: dict[str, str | list[str]] = {}
    if controls.device and controls.device != next(iter(devices), ""):
        query["d"] = controls.device
    if controls.db and controls.db != next(iter(dbs), ""):
        query["db"] = controls.db
    if tuple(controls.experiments) != tuple(default):
        query["x"] = list(controls.experiments)
    if controls.metric and controls.metric != next(iter(metrics), None):
        query["m"] = controls.metric
    simple = {"p": "performance", "n": "normalization", "bn": "baseline_normalization",
              "col": "color", "ax": "curve_axis", "rq": "run_model"}
    for key, name in simple.items():
        if getattr(controls, name) != getattr(base, name):
            query[key] = getattr(controls, name)
    numbers = {"a": "alpha", "ba": "baseline_alpha", "k": "top_k", "sn": "samples", "sc": "concentration"}
    for key, name in numbers.items():
        if getattr(controls, name) != getattr(base, name):
            query[key] = _short(getattr(controls, name))
    if controls.threshold_m is not None:
        query["t"] = _short(controls.threshold_m)
    for key, name in {"w": "weights", "bw": "baseline_weights"}.items():
        if {k: v for k, v in getattr(controls, name).items() if v > 0} != DEFAULT_WEIGHTS:
            query[key] = _pairs(getattr(controls, name))
    if controls.intensity:
        query["ci"] = controls.intensity
    if controls.caps:
        query["cap"] = ",".join(f"{k}:{_short(v)}" for k, v in controls.caps.items())
    for key, name in {"r": "curve_runs", "rs": "run_status", "rx": "run_experiments"}.items():
        if getattr(controls, name):
            query[key] = list(getattr(controls, name))
    return query


def _short(value: float) -> str:
    """The shortest text that reads back as the same number."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
