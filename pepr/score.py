"""The PePR score and the analyses built on it: the one place for the score math.

PePR(R, P; alpha) = alpha * P / (alpha + R), with P the performance in [0, 1] and R the
weighted sum of resource costs, each normalised to [0, 1] within its experiment
(Selvan et al., NLDL 2025). Every function here is pure and works on whole columns at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pepr.errors import PeprError
from pepr.resources import ENERGY_PARTS, FALLBACK_SOURCE, RESOURCES, grams_per_kwh, is_estimate

NORMALIZATIONS = ("minmax", "max")


@dataclass(frozen=True)
class Scored:
    """The result of `score`.

    `table`: the scored runs, with `R_<resource>` (normalised) for each weighted resource,
    `resource` (their weighted sum), `pepr`, `rank` (1 = best PePR in its experiment) and
    `loss_<resource>` (how much of the gap between performance and PePR each resource
    accounts for).
    `excluded`: runs left out, with the reason.
    """

    table: pd.DataFrame
    excluded: pd.DataFrame
    weights: dict[str, float]


def parse_weights(text: str) -> dict[str, float]:
    """Parse `energy=1,co2=0.5` into a mapping (checked by `normalize_weights`); `energy:1`,
    as a dashboard link writes it, reads the same."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.replace(":", "=", 1).partition("=")
        name = name.strip()
        try:
            if not sep:
                raise ValueError
            number = float(value)
        except ValueError:
            raise PeprError(f"bad weight {item!r}: expected NAME=NUMBER, e.g. energy=1") from None
        if name in weights:
            raise PeprError(f"{name} weighted twice")
        weights[name] = number
    if not weights:
        raise PeprError(f"no weights in {text!r}: expected NAME=NUMBER, e.g. energy=1 (energy=0 ignores resources)")
    normalize_weights(weights)  # checks names and values
    return weights


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights rescaled to sum 1, zero weights dropped; all zero gives {} (resources ignored)."""
    for name, value in weights.items():
        if name not in RESOURCES:
            raise PeprError(f"unknown resource {name!r}; known: {', '.join(RESOURCES)}")
        if not np.isfinite(value) or value < 0:
            raise PeprError(f"weight of {name} must be a number >= 0, got {value}")
    top = max(weights.values(), default=0.0)  # scaled by it first, no sum overflows
    relative = {name: share for name, value in weights.items() if value > 0 and (share := value / top) > 0}
    total = sum(relative.values())
    return {name: value / total for name, value in relative.items()}


def measured(runs: pd.DataFrame, names: Iterable[str] = RESOURCES) -> set[str]:
    """The resources among `names` with at least one value among `runs`."""
    return {name for name in names if RESOURCES[name].column in runs and runs[RESOURCES[name].column].notna().any()}


def unmeasured(runs: pd.DataFrame, weights: Mapping[str, float]) -> list[str]:
    """The resources weighted above 0 that no finished (`ok`) run among `runs` measured, in
    the order given; none where no run finished (there is nothing to weigh then)."""
    finished = runs[runs["status"] == "ok"]
    if finished.empty:
        return []
    found = measured(finished, weights)
    return [name for name, weight in weights.items() if weight > 0 and name not in found]


def check_measured(runs: pd.DataFrame, weights: Mapping[str, float], scope: str) -> None:
    """A PeprError naming the weighted resources that no run of `scope` (`runs`) measured."""
    missing = unmeasured(runs, weights)
    if missing:
        hint = " (inference costs: benchmark its models with `pepr-agent bench`)" if any(
            RESOURCES[name].benchmarked for name in missing) else ""
        raise PeprError(f"--weights: {', '.join(missing)} measured in no run of {scope}; weight what was measured{hint}")


def grid_spans(runs: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """Per experiment whose finished runs emitted different CO2 per kWh of their energy (other
    grids, or other hours of one grid): the lowest and highest, in g CO2eq/kWh, and how many
    runs were priced at a fallback average, not their grid's (`FALLBACK_SOURCE`). There a CO2
    ranking rewards where and when a model ran as well as what it used."""
    ok = runs[runs["status"] == "ok"]
    per_kwh = pd.Series(grams_per_kwh(ok["co2_kg"], ok["energy_kwh"]), index=ok.index).dropna()
    experiments = ok.loc[per_kwh.index, "experiment"]
    spans = per_kwh.groupby(experiments).agg(["min", "max"])
    source = ok["carbon_intensity_source"] if "carbon_intensity_source" in ok else pd.Series(None, index=ok.index, dtype=object)
    fallbacks = (source.loc[per_kwh.index] == FALLBACK_SOURCE).groupby(experiments).sum()
    differ = spans["max"] - spans["min"] > 1e-9 * spans["max"].abs()
    return {experiment: (row["min"], row["max"], int(fallbacks[experiment])) for experiment, row in spans[differ].iterrows()}


def nothing_to_score(scope: str, excluded: pd.DataFrame) -> PeprError:
    """The error where no run of `scope` can be scored: each reason, with how many runs it left out."""
    reasons = excluded.groupby("reason", sort=False).size()
    why = "; ".join(f"{count} run(s): {reason}" for reason, count in reasons.items()) or "there are no runs"
    return PeprError(f"{scope}: no run can be scored ({why})")


def grid_span_text(low: float, high: float, fallbacks: int = 0) -> str:
    """What a span of `grid_spans` means for a CO2 ranking, after "the runs (of X)"."""
    fallback = f"; {fallbacks} run(s) at a fallback average, not their grid's" if fallbacks else ""
    return (f"emitted {low:.0f} to {high:.0f} g CO2eq per kWh (other grids or hours{fallback}): their CO2 ranks "
            "where they ran as well as what they used")


def estimated_energy_text(runs: pd.DataFrame, weights: Mapping[str, float]) -> str | None:
    """Where energy or CO2 is weighted and energy parts of `runs` were modelled, not measured:
    how many runs and which parts, in words; else None."""
    if not {"energy", "co2"} & set(weights):
        return None
    methods = {part: runs[f"energy_{part}_method"] for part in ENERGY_PARTS if f"energy_{part}_method" in runs}
    flags = {part: column.map(is_estimate).astype(bool) for part, column in methods.items()}
    estimated = np.logical_or.reduce([flag.to_numpy() for flag in flags.values()]) if flags else np.zeros(len(runs), bool)
    if not estimated.any():
        return None
    kinds = ", ".join(f"{part}: {method}" for part, column in methods.items()
                      for method in sorted(column[flags[part]].unique()))
    return (f"the energy of {int(estimated.sum())} of {len(runs)} run(s) is in part an estimate ({kinds}), modelled "
            "rather than measured: good for comparing runs measured alike, not as an absolute figure")


def check_alpha(alpha: float) -> float:
    """alpha itself, if in the paper's range: a finite number >= 1."""
    if not (np.isfinite(alpha) and alpha >= 1):
        raise PeprError(f"alpha must be a finite number >= 1 (1 is the basic score), got {alpha}")
    return alpha


def _check_normalization(method: str) -> None:
    if method not in NORMALIZATIONS:
        raise PeprError(f"unknown normalization {method!r}; use one of {', '.join(NORMALIZATIONS)}")


def pepr(performance, resource, alpha: float = 1.0):
    """alpha * P / (alpha + R): alpha = 1 is the basic score, a large alpha ignores resources."""
    check_alpha(alpha)
    return alpha * np.asarray(performance, dtype=float) / (alpha + np.asarray(resource, dtype=float))


def performance_for(score_value, resource, alpha: float = 1.0):
    """The performance that scores `score_value` at `resource` (`pepr` solved for P): the
    points of one PePR iso-line."""
    check_alpha(alpha)
    return np.asarray(score_value, dtype=float) * (alpha + np.asarray(resource, dtype=float)) / alpha


def normalize(values, method: str = "minmax", groups=None) -> np.ndarray:
    """Resource costs scaled to [0, 1] within each group (one group if `groups` is None).

    `minmax`: (r - min) / (max - min), 0 where all are equal (a lone model, too: it scores its
    performance, the paper's rule); `max`: r / max, the share of the dearest (the same model is
    its own dearest: 1), 0 where the max is 0.
    """
    _check_normalization(method)
    values = np.asarray(values, dtype=float)
    codes = np.zeros(len(values), dtype=np.intp) if groups is None else pd.factorize(np.asarray(groups))[0]
    return _normalize_codes(values, codes, method)


def _normalize_codes(values: np.ndarray, codes: np.ndarray, method: str) -> np.ndarray:
    """`normalize` with groups given as integer codes 0..G-1."""
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    high = np.full(n_groups, -np.inf)
    np.maximum.at(high, codes, values)
    low = np.full(n_groups, np.inf)
    np.minimum.at(low, codes, values)
    if method == "max":  # r_min = 0: continuous as costs come together, 2.0 and 2.000001 alike
        low = np.zeros(n_groups)
    span = (high - low)[codes]
    return np.divide(values - low[codes], span, out=np.zeros(len(values)), where=span > 0)


def _rank_descending(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Rank within each group, 1 for the largest value; ties share the smallest rank."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    n_groups = int(codes.max()) + 1
    by_value = np.argsort(values)[::-1]
    # A stable sort of 16-bit codes is a radix sort: cheap next to the sort by value.
    order = by_value[np.argsort(codes[by_value], kind="stable")]
    sorted_codes, sorted_values = codes[order], values[order]
    position = np.arange(n)
    new_tie = np.ones(n, dtype=bool)
    new_tie[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_values[1:] != sorted_values[:-1])
    tie_start = np.maximum.accumulate(np.where(new_tie, position, 0))
    group_start = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=n_groups))[:-1]))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = tie_start - group_start[sorted_codes] + 1
    return ranks


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=float, na_value=np.nan)


# Resources computed from the energy parts: a part not measured leaves them NULL.
_FROM_ENERGY_PARTS = ("energy", "co2")


def _not_measured(runs: pd.DataFrame, name: str, cost: np.ndarray) -> np.ndarray:
    """Why each run lacks a usable `name`, in words: infinite, negative, or not measured, e.g.
    `CO2 not measured (cpu: not-sampled)`, naming the parts it is made of that are NULL with
    their methods."""
    noun = RESOURCES[name].noun
    absent = (f"no {noun}: no usable benchmark of this model on the chosen device (none, a failed one, "
              f"or none at the batch size it is read at)"
              if RESOURCES[name].benchmarked else f"{noun} not measured")
    reasons = np.select([np.isinf(cost), cost < 0], [f"{noun} is not a finite number", f"{noun} is negative"],
                        absent).astype(object)
    if name not in _FROM_ENERGY_PARTS:
        return reasons
    missing = np.isnan(cost)
    if name == "co2" and "energy_kwh" in runs:  # the parts explain CO2 only where energy is missing too
        missing &= runs["energy_kwh"].isna().to_numpy()
    columns = [c for part in ENERGY_PARTS for c in (f"energy_{part}_kwh", f"energy_{part}_method") if c in runs]
    for position, run in zip(np.flatnonzero(missing), runs.loc[missing, columns].to_dict("records")):
        parts = [
            f"{part}: {run[f'energy_{part}_method']}"
            for part in ENERGY_PARTS
            if pd.isna(run.get(f"energy_{part}_kwh"))
            and not pd.isna(run.get(f"energy_{part}_method"))
            and run.get(f"energy_{part}_method") not in ("none", "imported")  # which says nothing of why
        ]
        if parts:
            reasons[position] += f" ({', '.join(parts)})"
    return reasons


def score(
    runs: pd.DataFrame,
    weights: Mapping[str, float],
    normalization: str = "minmax",
    alpha: float = 1.0,
    group_by: str = "experiment",
) -> Scored:
    """Score every run against the others of its experiment (see `Scored`).

    Runs that did not finish `ok`, or lack the performance or a finite, non-negative value of a
    resource with weight > 0, are excluded with a reason (for energy and CO2 naming the parts not
    measured and why) rather than scored as NaN. Benchmarked resources (inference cost on a
    device) must be attached first (`pepr.inference.attach`). A performance outside [0, 1] is an
    error naming the run.
    """
    weights = normalize_weights(weights)
    check_alpha(alpha)
    _check_normalization(normalization)
    frame = runs.reset_index(drop=True)
    performance = _column(frame, "performance")
    for name in weights:
        if RESOURCES[name].column not in frame:
            raise PeprError(f"no {name} column: attach the benchmarks of a device first (pepr.inference.attach)")
    costs = {name: _column(frame, RESOURCES[name].column) for name in weights}

    status = frame["status"] if "status" in frame else pd.Series("ok", index=frame.index)
    problems = [(status != "ok").to_numpy(), np.isnan(performance),
                *(~np.isfinite(cost) | (cost < 0) for cost in costs.values())]
    dropped = np.logical_or.reduce(problems)
    rerun = _rerun_ok(frame, status)[dropped]
    reasons = ["status " + status[dropped].astype(str).to_numpy(dtype=object) + np.where(rerun, ", rerun ok", ""),
               "no performance"]
    reasons += [_not_measured(frame.loc[dropped], name, cost[dropped]) for name, cost in costs.items()]
    excluded = frame.loc[dropped, [c for c in ("run_id", group_by, "model") if c in frame]]
    excluded = excluded.assign(
        reason=np.select([problem[dropped] for problem in problems], reasons, "")
    ).reset_index(drop=True)
    if dropped.any():
        keep = ~dropped
        frame = frame[keep].reset_index(drop=True)
        performance = performance[keep]
        costs = {name: cost[keep] for name, cost in costs.items()}

    bad = (performance < 0) | (performance > 1)
    if bad.any():
        row = frame.iloc[int(np.flatnonzero(bad)[0])]
        raise PeprError(
            f"run {row.get('run_id', row.name)} ({row.get('model', '?')} in "
            f"{row.get(group_by, '?')}): performance {row['performance']} is outside [0, 1]"
        )

    codes = pd.factorize(frame[group_by])[0]
    codes = codes.astype(np.uint16) if len(codes) and codes.max() < 1 << 16 else codes
    columns = {f"R_{name}": _normalize_codes(cost, codes, normalization) for name, cost in costs.items()}
    weighted = np.zeros(len(frame))
    for name, weight in weights.items():
        weighted += weight * columns[f"R_{name}"]
    scores = pepr(performance, weighted, alpha)
    gap = performance - scores
    for name, weight in weights.items():
        share = np.divide(weight * columns[f"R_{name}"], weighted, out=np.zeros(len(frame)), where=weighted > 0)
        columns[f"loss_{name}"] = gap * share
    columns.update(
        resource=weighted,
        pepr=scores,
        rank=_rank_descending(scores, codes),
    )
    table = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
    return Scored(table=table, excluded=excluded, weights=weights)


def by_model(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: means over its scored runs (across the chosen experiments), ranked by
    mean PePR (`rank`) and by mean performance (`perf_rank`)."""
    if table.empty:
        return pd.DataFrame(columns=["model", "rank", "perf_rank", "rank_change", "pepr", "performance", "resource", "params", "runs", "experiments"])
    numeric = ["performance", "pepr", "resource", *(c for c in table if c.startswith(("R_", "loss_")))]
    numeric += [r.column for r in RESOURCES.values() if r.column in table and r.column != "params"]
    first = [c for c in ("params", "model_type", "efficient") if c in table]
    models = table.groupby("model", sort=True).agg(
        runs=("model", "size"),
        experiments=("experiment", "nunique"),
        **{c: (c, "mean") for c in dict.fromkeys(numeric)},
        **{c: (c, "first") for c in first},
    )
    models["rank"] = models["pepr"].rank(method="min", ascending=False).astype(int)
    models["perf_rank"] = models["performance"].rank(method="min", ascending=False).astype(int)
    models["rank_change"] = models["perf_rank"] - models["rank"]
    return models.reset_index().sort_values(["rank", "perf_rank", "model"], ignore_index=True)


def _rerun_ok(frame: pd.DataFrame, status: pd.Series) -> np.ndarray:
    """Which runs did not finish ok but their job did, in a later run (a sweep resumed after an
    interruption): left out as the rest are, and said to be."""
    if "job_key" not in frame:
        return np.zeros(len(frame), dtype=bool)
    done = set(frame.loc[status == "ok", "job_key"].dropna())
    return ((status != "ok") & frame["job_key"].isin(done)).to_numpy()


def strongest(scored: pd.DataFrame) -> pd.Series:
    """The scored run (or model) with the best performance: ties go to the better PePR, then
    to the first model name."""
    return scored.sort_values(["performance", "pepr", "model"], ascending=[False, False, True]).iloc[0]


def pareto_front(performance, resource) -> np.ndarray:
    """Mask of the runs on the Pareto front: no other run has as much performance or more for
    less, or more for as little (runs alike in both are on it or off it together)."""
    performance = np.asarray(performance, dtype=float)
    resource = np.asarray(resource, dtype=float)
    order = np.lexsort((-performance, resource))
    p, r = performance[order], resource[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], p[:-1])))
    alike = np.concatenate(([False], (p[1:] == p[:-1]) & (r[1:] == r[:-1])))  # as the run before
    first_alike = np.maximum.accumulate(np.where(alike, 0, np.arange(len(p))))
    on_front = np.zeros(len(performance), dtype=bool)
    on_front[order] = (p > best_before)[first_alike]
    return on_front


@dataclass(frozen=True)
class Curve:
    """A PePR curve: normalised cumulative resource, PePR at each point, and its peak."""

    resource: np.ndarray
    pepr: np.ndarray
    peak: int  # position of the maximum (ties: the smallest resource)


def pepr_curve(cum_resource, performance, normalization: str = "max", alpha: float = 1.0) -> Curve:
    """PePR along a performance curve, e.g. test accuracy against cumulative energy by epoch.

    The default normalisation is share of the total (R = r / r_max): cumulative resource has
    a natural zero. The peak marks the point of diminishing returns.
    """
    cum_resource = np.asarray(cum_resource, dtype=float)
    resource = normalize(cum_resource, normalization)
    values = pepr(performance, resource, alpha)
    best = np.flatnonzero(values == np.nanmax(values))
    return Curve(resource, values, int(best[np.argmin(cum_resource[best])]))


def split_by_params(params, threshold: float | None = None) -> tuple[np.ndarray, float]:
    """Label runs `small` (params <= threshold) or `large`; the default threshold is the median."""
    params = np.asarray(params, dtype=float)
    if threshold is None:
        threshold = float(np.nanmedian(params))
    return np.where(params <= threshold, "small", "large"), float(threshold)


def compare_groups(values, labels, a: str, b: str) -> dict:
    """Medians of two groups and the p-values of unpaired tests: Student's t-test (the paper's,
    `scipy.stats.ttest_ind`), Welch's t-test and the Mann-Whitney U test.

    p-values are None where a group has fewer than two values or the test is undefined.
    """
    values = np.asarray(values, dtype=float)
    labels = np.asarray(labels)
    x = values[(labels == a) & ~np.isnan(values)]
    y = values[(labels == b) & ~np.isnan(values)]
    result = {
        "a": a,
        "b": b,
        "n_a": len(x),
        "n_b": len(y),
        "median_a": float(np.median(x)) if len(x) else None,
        "median_b": float(np.median(y)) if len(y) else None,
        "student_p": None,
        "welch_p": None,
        "mannwhitney_p": None,
    }
    if len(x) >= 2 and len(y) >= 2:
        result["student_p"] = _p(stats.ttest_ind(x, y).pvalue)
        result["welch_p"] = _p(stats.ttest_ind(x, y, equal_var=False).pvalue)
        result["mannwhitney_p"] = _p(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return result


def compare_paired(a, b) -> dict:
    """Tests for two samples paired position by position (the same models in two settings):
    the number of complete pairs, the median difference a - b, and the p-values of the
    Wilcoxon signed-rank test and the paired t-test (None where undefined)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    result = {"pairs": len(a), "median_diff": float(np.median(a - b)) if len(a) else None,
              "wilcoxon_p": None, "paired_t_p": None}
    if len(a) >= 2 and np.any(a != b):
        result["wilcoxon_p"] = _p(stats.wilcoxon(a, b).pvalue)
        result["paired_t_p"] = _p(stats.ttest_rel(a, b).pvalue)
    return result


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjustment of p-values tested together (None stays None): an adjusted
    p below 0.05 keeps the chance of any false finding among them all under 5%."""
    known = [(p, i) for i, p in enumerate(pvalues) if p is not None and not np.isnan(p)]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[i] = running
    return adjusted


def _p(value) -> float | None:
    return None if np.isnan(value) else float(value)
