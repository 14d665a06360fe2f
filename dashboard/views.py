"""What the pages show, as one pure function of (runs, epochs, controls): `build_view`.

Scores come from `pepr.score` only; this module chooses the runs in scope, re-prices CO2,
averages per model, and labels with readable units. No Streamlit here: plain pytest tests it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dashboard.carbon import intensity, with_intensity
from dashboard.controls import CAPPED, WEIGHTED, Controls, default_experiments
from pepr.inference import busy_bench_text
from pepr.resources import (
    COLUMNS, ENERGY_PARTS, PER_EPOCH, RESOURCES, format_value, is_estimate, last_epoch_only, scoped_unit, timed_scopes,
)
from pepr.score import (
    by_model,
    compare_groups,
    compare_paired,
    grid_spans,
    holm,
    measured,
    normalize_weights,
    pareto_front,
    pepr_curve,
    score,
    split_by_params,
    strongest,
    unmeasured,
)
from pepr.sensitivity import kendall_tau, rank_stability, sample_weights

SAVINGS = ("energy", "co2", "gpu_memory")
COSTS = ("energy", "co2", "train_time")  # shown per group on the Comparisons page


@dataclass(frozen=True)
class Offer:
    """What a database offers to choose from."""

    experiments: list[str]
    metrics: list[str]
    default: tuple[str, ...]  # the experiments to open on
    best_val: bool  # per-epoch validation and test metrics exist
    groups: dict[str, list[str]]  # dataset -> its experiments, ordered
    describe: dict[str, str]  # experiment -> `pretrained · all data` (for the selector)
    country: str | None  # where most runs were measured
    intensity: float | None  # their median grid intensity, g/kWh
    devices: list[str] = field(default_factory=list)  # benchmarked deployment devices


def offer(runs: pd.DataFrame, epochs: pd.DataFrame, devices: Sequence[str] = ()) -> Offer:
    ok = runs[runs["status"] == "ok"]
    metrics = sorted(ok["metric"].dropna().unique())
    info = runs.groupby("experiment", sort=True).agg(
        dataset=("dataset", "first"), pretrained=("pretrained", "first"), fraction=("train_fraction", "first")
    )
    info["dataset"] = info["dataset"].fillna("other").astype(str)
    info["order"] = [
        (2 if pd.isna(p) else 0 if bool(p) else 1, -(f if pd.notna(f) else -1)) for p, f in zip(info["pretrained"], info["fraction"])
    ]
    info = info.sort_values(["dataset", "order"])
    groups: dict[str, list[str]] = {}
    for experiment, row in info.iterrows():
        groups.setdefault(row["dataset"], []).append(str(experiment))
    describe = {str(e): experiment_label(e, row["pretrained"], row["fraction"]) for e, row in info.iterrows()}
    countries = ok["country"].dropna()
    has_val = epochs[["val_metric", "test_metric"]].notna().all(axis=1).any() if len(epochs) else False
    return Offer(
        experiments=[e for es in groups.values() for e in es],
        metrics=metrics,
        default=default_experiments(runs),
        best_val=bool(has_val),
        groups=groups,
        describe=describe,
        country=str(countries.mode().iloc[0]) if len(countries) else None,
        intensity=float(ok["carbon_intensity"].median()) if ok["carbon_intensity"].notna().any() else None,
        devices=list(devices),
    )


def experiment_label(experiment: str, pretrained, fraction) -> str:
    """`derma_pt: pretrained, all data`, naming what is not recorded as such."""
    training = {True: "pretrained", False: "from scratch"}.get(None if pd.isna(pretrained) else bool(pretrained), "pretraining not recorded")
    data = "data fraction not recorded" if pd.isna(fraction) else ("all data" if fraction >= 1 else f"{fraction:.0%} of the data")
    return f"{experiment}: {training}, {data}"


@dataclass(frozen=True)
class Carbon:
    """What the grid carbon-intensity choice does here."""

    chosen: float | None  # g/kWh, None = as measured
    message: str
    changes_ranking: bool


@dataclass(frozen=True)
class View:
    """Everything the pages show. Cheap parts are computed at once, the rest when a page asks."""

    controls: Controls
    offer: Offer
    runs: pd.DataFrame  # every run of the database, any status
    epochs: pd.DataFrame
    priced: pd.DataFrame  # every run, CO2 re-priced at the chosen grid
    in_scope: pd.DataFrame  # every run of the chosen experiments, any status, CO2 re-priced
    scope: pd.DataFrame  # the scored runs of the chosen experiments
    excluded: pd.DataFrame  # runs in scope left out of the scores, with the reason
    models: pd.DataFrame  # one row per model in scope, ranked
    weights: dict[str, float]  # normalised, measured ones only
    unmeasured: list[str]  # weighted but not measured in scope
    measured: set[str]
    threshold: float | None  # small/large split in parameters, computed once
    units: dict[str, tuple[str, float]]  # resource -> readable unit for this scope
    carbon: Carbon
    provenance: list[str]
    notes: list[str] = field(default_factory=list)  # ignored link values, ...

    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """Scored runs of every experiment, as the chosen ones are (for the comparisons)."""
        c = self.controls
        return score(self.priced, self.weights, c.normalization, c.alpha).table

    @functools.cached_property
    def headline(self) -> dict | None:
        return headline(self.models, self.weights)

    @functools.cached_property
    def front(self) -> np.ndarray:
        """Which models are on the performance-versus-resource Pareto front."""
        return pareto_front(self.models["performance"], self.models["resource"])

    @functools.cached_property
    def budget(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return budget(self.models, self.controls.caps, self.units)

    @functools.cached_property
    def baseline(self) -> pd.DataFrame:
        c = self.controls
        weights = {k: v for k, v in c.baseline_weights.items() if k in self.measured}
        same = (normalize_weights(weights) == self.weights and c.baseline_normalization == c.normalization
                and c.baseline_alpha == c.alpha)
        before = self.models if same else by_model(
            score(self.in_scope, weights, c.baseline_normalization, c.baseline_alpha).table)
        return top_changes(before, self.models, c.top_k)

    @functools.cached_property
    def comparisons(self) -> list[Comparison]:
        return comparisons(self.table, self.scope, self.offer, self.threshold, self.units)

    @functools.cached_property
    def uncompared(self) -> list[str]:
        return uncompared(self.table, self.offer, self.scope, self.threshold)

    @functools.cached_property
    def sensitivity(self) -> pd.DataFrame | None:
        """P(rank 1) and P(top 5) per model, None where fewer than two resources are weighted."""
        if len(self.weights) < 2 or self.models.empty:
            return None
        samples = sample_weights(self.weights, n=self.controls.samples, concentration=self.controls.concentration)
        stability = rank_stability(self.scope, samples, alpha=self.controls.alpha)
        table = self.models[["model", "rank", "pepr"]].merge(stability, on="model")
        return table.sort_values(["p_first", "p_top5", "rank"], ascending=[False, False, True], ignore_index=True)

    @functools.cached_property
    def taus(self) -> dict[str, float | None]:
        models = self.models
        energy = models["energy_kwh"] if "energy_kwh" in models else pd.Series(dtype=float)
        return {
            "the ranking by performance": kendall_tau(models["pepr"], models["performance"]),
            "the ranking by raw energy (least first)":
                kendall_tau(models["pepr"], -energy) if len(energy) and energy.notna().all() else None,
        }

    def curve_runs(self) -> list[str]:
        """The runs on the Curves page: the chosen ones still in scope, else the top three."""
        ranked = self.scope.sort_values(["rank", "pepr", "model"], ascending=[True, False, True])
        chosen = [r for r in self.controls.curve_runs if r in set(ranked["run_id"])]
        return chosen or list(ranked["run_id"].head(3))

    def curves(self, run_ids: list[str], axis: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """`curves` of these runs, in this order."""
        runs = self.scope.set_index("run_id").loc[[r for r in run_ids if r in set(self.scope["run_id"])]].reset_index()
        epochs = self.epochs[self.epochs["run_id"].isin(run_ids)]
        return curves(runs, epochs, axis, "max", self.controls.alpha)


def build_view(
    runs: pd.DataFrame, epochs: pd.DataFrame, controls: Controls, notes: list[str] | None = None, found: Offer | None = None
) -> View:
    """The one function from (runs, epochs, choices) to what every page shows (`found`: the
    database's `offer`, where the caller has it already)."""
    found = found or offer(runs, epochs)
    notes = list(notes or [])
    table = runs
    if controls.metric is not None:
        other = runs[runs["experiment"].isin(controls.experiments) & (runs["status"] == "ok")
                     & (runs["metric"] != controls.metric)]  # a NULL metric too
        if len(other):
            metrics = ", ".join(sorted(other["metric"].fillna("none recorded").astype(str).unique()))
            notes.append(f"{len(other)} run(s) of {', '.join(sorted(other['experiment'].astype(str).unique()))} "
                         f"measured by another metric ({metrics}), not {controls.metric}, the performance metric chosen.")
        table = table[table["metric"] == controls.metric]
    if controls.performance == "bestval":
        table = with_best_validation(table, epochs)
    chosen_g = intensity(controls.intensity)
    unpriced = table[table["experiment"].isin(controls.experiments)]
    priced = with_intensity(table, chosen_g)
    in_scope = priced[priced["experiment"].isin(controls.experiments)]
    measured_here = measured(in_scope[in_scope["status"] == "ok"], WEIGHTED)
    weights = {k: v for k, v in controls.weights.items() if k in measured_here}
    missing = unmeasured(in_scope, controls.weights)
    scored = score(in_scope, weights, controls.normalization, controls.alpha)  # each experiment alone
    scope = scored.table
    excluded = scored.excluded
    models = by_model(scope)
    sized = models["params"].loc[lambda p: p > 0] if "params" in models else pd.Series(dtype=float)
    threshold = None
    if len(sized):
        given = None if controls.threshold_m is None else controls.threshold_m * 1e6
        threshold = split_by_params(sized, given)[1]  # the median model, computed here once
    per_epoch = last_epoch_only(scope)  # the paper's training times: headings say so
    units = {
        name: scoped_unit(name, models[RESOURCES[name].column], per_epoch)
        for name in RESOURCES
        if RESOURCES[name].column in models
    }
    return View(
        controls=controls,
        offer=found,
        runs=runs,
        epochs=epochs,
        priced=priced,
        in_scope=in_scope,
        scope=scope,
        excluded=excluded,
        models=models,
        weights=scored.weights,
        unmeasured=missing,
        measured=measured_here,
        threshold=threshold,
        units=units,
        carbon=carbon_effect(unpriced, scored.weights, chosen_g),
        provenance=provenance(in_scope, priced=any(RESOURCES[name].benchmarked
                                                   for name in (*scored.weights, *controls.caps))),
        notes=notes,
    )


def carbon_effect(measured_runs: pd.DataFrame, weights: Mapping[str, float], chosen: float | None) -> Carbon:
    """Say what the intensity choice changes (`measured_runs`: the runs in scope as measured;
    `weights`: the score's, summing to 1):
    CO2 figures, totals and caps always; the ranking only where CO2 is weighted and the runs
    of an experiment emitted different CO2 per kWh (the intensity as measured, whether or not
    it was recorded: one grid for all prices CO2 as energy), or some have only one of energy
    and CO2 (one grid gives CO2 to the first, and takes it from the second)."""
    ok = measured_runs[measured_runs["status"] == "ok"]
    lopsided = int((ok["co2_kg"].isna() != ok["energy_kwh"].isna()).sum())
    spans = grid_spans(ok)
    share = weights.get("co2")
    if share is None:
        text = "CO2 is not weighted: the grid changes the CO2 figures, totals and caps, not the ranking."
        return Carbon(chosen, text, False)
    if chosen == 0:
        text = ("At 0 g CO2eq/kWh no run emits CO2, so every model's CO2 cost is 0: performance alone ranks them."
                if share == 1 else
                f"At 0 g CO2eq/kWh no run emits CO2, so every model's CO2 cost is 0, yet CO2 keeps its {share:.0%} "
                f"of the weights: the other costs count {1 - share:.0%} as much as weighted alone (weight CO2 0 "
                "to rank by them alone).")
        return Carbon(chosen, text, True)
    if not spans and not lopsided:
        text = (
            "Each experiment's runs emitted the same CO2 per kWh, so any single intensity "
            "scales every run's CO2 by the same factor: the ranking cannot change, only the CO2 "
            "figures, totals and caps do."
        )
        return Carbon(chosen, text, False)
    measured_as = []
    if spans:
        low, high = min(span[0] for span in spans.values()), max(span[1] for span in spans.values())
        fallbacks = sum(span[2] for span in spans.values())
        measured_as.append(f"These runs' CO2 was measured at {low:.0f} to {high:.0f} "
                           "g CO2eq/kWh of their energy (the grid of each run, recorded or not"
                           + (f"; {fallbacks} at a fallback average, not their grid's" if fallbacks else "") + ")")
    if lopsided:
        measured_as.append(f"{lopsided} run(s) have only one of energy and CO2")
    advice = ("on one grid for all, CO2 ranks them as energy does." if chosen is not None
              else "choose one grid to compare them on equal terms.")
    return Carbon(chosen, "; ".join(measured_as) + ": " + advice, True)


def provenance(runs: pd.DataFrame, priced: bool = False) -> list[str]:
    """One line per way the runs in view were measured; where an inference cost is weighted or
    capped (`priced`), the models benchmarked on a busy machine, as `pepr score` names them."""
    lines = []
    for text in runs["provenance"].dropna().unique() if "provenance" in runs else []:
        lines.append(str(text))
    own = runs[runs["provenance"].isna()] if "provenance" in runs else runs
    if len(own):
        tools = ", ".join(sorted(own["energy_tool"].dropna().astype(str).unique())) if "energy_tool" in own else ""
        pues = sorted(own["pue"].dropna().unique()) if "pue" in own else []
        devices = ", ".join(sorted(own["device"].dropna().astype(str).unique())) if "device" in own else ""
        scopes = sorted(own["train_time_scope"].dropna().unique()) if "train_time_scope" in own else []
        lines.append(
            "Measured by the pepr agent"
            + (f" with {tools}" if tools else "")
            + (f", PUE {', '.join(f'{p:g}' for p in pues)}" if pues else "")
            + (f", on {devices}" if devices else "")
            + (f"; training time covers the {'whole run' if scopes == ['run'] else ', '.join(scopes)}" if scopes else "")
        )
    busy = busy_bench_text(runs[runs["status"] == "ok"]) if priced else None
    if busy:
        lines.append(f"inference benchmarks: {busy}")
    return lines


def with_best_validation(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose performance is the test metric at their best validation epoch (ties: the
    earliest); runs without such epochs get no performance."""
    rows = epochs.dropna(subset=["val_metric", "test_metric"]).sort_values(["run_id", "epoch"])
    best = rows.loc[rows.groupby("run_id")["val_metric"].idxmax(), ["run_id", "test_metric"]]
    performance = runs["run_id"].map(best.set_index("run_id")["test_metric"])
    return runs.assign(performance=performance.astype(float))


def headline(models: pd.DataFrame, weights: Mapping[str, float]) -> dict | None:
    """The top model by PePR, the top by performance, and what the first costs and saves: in
    each resource weighted (say, inference latency) first, then in energy, CO2 and GPU memory."""
    if models.empty:
        return None
    best = models.iloc[0]
    top = strongest(models)
    saved = {}
    for name in dict.fromkeys([*weights, *SAVINGS]):
        column = RESOURCES[name].column
        mine, theirs = best.get(column), top.get(column)
        if pd.notna(mine) and pd.notna(theirs) and mine > 0:
            saved[name] = float(theirs / mine)
    return {
        "best": best,
        "strongest": top,
        "points_lost": float((top["performance"] - best["performance"]) * 100),
        "saved": saved,  # resource -> how many times less the top-PePR model uses
    }


def budget(
    models: pd.DataFrame, caps: Mapping[str, float | None], units: Mapping[str, tuple[str, float]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models within every cap (resource -> maximum in its stored unit), and the others with
    why, in readable units."""
    reasons = pd.Series("", index=models.index, dtype=object)
    for name, cap in caps.items():
        if cap is None or name not in CAPPED:
            continue
        resource = RESOURCES[name]
        values = models[resource.column] if resource.column in models else pd.Series(np.nan, index=models.index)
        if values.isna().all():  # not measured here at all (say, no benchmarks): no cap to apply
            continue
        unit = units.get(name)
        open_ = reasons == ""
        over = (values > cap * (1 + 1e-9)) & open_  # a cap typed in mWh is exact to the digit shown
        reasons[over] = [
            f"{resource.label} {format_value(v, resource, unit)} > {format_value(cap, resource, unit)}" for v in values[over]
        ]
        reasons[values.isna() & open_] = f"{resource.label}: not measured"
    ok = reasons == ""
    excluded = models.loc[~ok].assign(reason=reasons[~ok])
    return models[ok], excluded.reset_index(drop=True)


def top_changes(before: pd.DataFrame, after: pd.DataFrame, k: int) -> pd.DataFrame:
    """The top k before and after a change of weighting: each model in either, its two ranks
    and what happened (`entered`, `left`, `up 2`, `down 1`, `same`)."""
    b = before.set_index("model")["rank"]
    a = after.set_index("model")["rank"]
    names = list(dict.fromkeys([*after.loc[after["rank"] <= k, "model"], *before.loc[before["rank"] <= k, "model"]]))
    rows = []
    for name in names:
        was, now = b.get(name), a.get(name)
        in_before, in_after = was is not None and was <= k, now is not None and now <= k
        if in_after and not in_before:
            change = "entered"
        elif in_before and not in_after:
            change = "left"
        elif was == now:
            change = "same"
        else:
            change = f"up {was - now}" if now < was else f"down {now - was}"
        rows.append({"model": name, "pinned rank": was, "rank now": now, "change": change})
    frame = pd.DataFrame(rows, columns=["model", "pinned rank", "rank now", "change"])
    return frame.sort_values(["rank now", "pinned rank"], ignore_index=True)


@dataclass(frozen=True)
class Comparison:
    """Two groups of scored runs (paper, Fig. 3 a-c) with their tests and costs."""

    title: str
    frame: pd.DataFrame  # scored runs with a categorical `group`
    stats: pd.DataFrame  # one row per measure
    costs: pd.DataFrame  # one row per group: runs, median energy, CO2, time per run, totals
    left_out: list[str]  # experiments not compared, with why
    paired: bool  # the same models on both sides
    note: str = ""
    one_side: list[str] = field(default_factory=list)  # paired: the models with no counterpart


# title: (the column telling the sides apart, what both sides share, side labels, and the column
# whose values on the False side are compared one at a time: full data against 0.1, against 0.5)
_PAIRS = {
    "Pretrained vs from scratch": ("pretrained", ["dataset", "train_fraction"], {True: "pretrained", False: "from scratch"}, None),
    "Full vs reduced training data": ("full_data", ["dataset", "pretrained"], {True: "full data", False: "reduced data"}, "train_fraction"),
}


def comparisons(
    table: pd.DataFrame, scope: pd.DataFrame, found: Offer, threshold: float | None,
    units: Mapping[str, tuple[str, float]],
) -> list[Comparison]:
    """Pretrained vs scratch and full vs reduced data over every experiment of the database,
    one comparison per dataset and other setting (effects may run opposite ways in two
    datasets: pooled, they cancel), paired by model; small vs large models in the chosen
    experiments (unpaired). Every test is on model means: n counts models, not runs."""
    result: list[Comparison] = []
    if table.empty:
        return result
    frame = _with_full_data(table)
    for title, (column, keys, labels, each) in _PAIRS.items():
        rows = _pairable(frame, column, keys)
        if rows.empty:
            continue
        left = _left_out(frame, found, column, keys, set(rows["experiment"]))
        for (stratum, reduced), part in _strata(rows, column, keys, each):
            group = part[column].astype(bool).map(labels)
            part = part.assign(group=pd.Categorical(group, list(labels.values())))
            sides = part.groupby("model")["group"].nunique()
            result.append(
                Comparison(
                    title=f"{title}: {_stratum(dict(zip(keys, stratum)))}" + (f", reduced to {reduced:g}" if reduced else ""),
                    frame=part,
                    stats=_stats(part, True, units),
                    costs=_costs(part, units),
                    left_out=left,  # said once, under the first of its comparisons
                    paired=True,
                    note="Each run scored within its own experiment; tests on model means (over seeds).",
                    one_side=sorted(sides.index[sides < 2]),
                )
            )
            left = []
    sized, labels = _size_sides(scope, threshold)
    if len(set(labels)) == 2:
        rows = sized.assign(group=pd.Categorical(labels, ["small", "large"]))
        result.append(
            Comparison(
                title=f"Small vs large models (threshold {format_value(threshold, RESOURCES['params'])} parameters)",
                frame=rows,
                stats=_stats(rows, False, units),
                costs=_costs(rows, units),
                left_out=[],
                paired=False,
                note="In the chosen experiments; different models on each side, so unpaired tests only, "
                     "on model means (over seeds and experiments).",
            )
        )
    return _adjusted(result)


def _size_sides(scope: pd.DataFrame, threshold: float | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The runs of known size (parameters > 0: a count of 0 says nothing of size) and the side
    of `threshold` each is on (`small`, `large`); none without a threshold."""
    if threshold is None or "params" not in scope:
        return scope.iloc[:0], np.array([])
    sized = scope[scope["params"] > 0]
    return sized, (split_by_params(sized["params"], threshold)[0] if len(sized) else np.array([]))


def _adjusted(found: list[Comparison]) -> list[Comparison]:
    """Each comparison's stats with `holm_p`: its sound test's p-value (paired Wilcoxon where
    the same models are on both sides, else Mann-Whitney), Holm-adjusted over every such
    p-value of the page, where many tests make a low p by chance likely."""
    sound = [c.stats["wilcoxon_p" if c.paired else "mannwhitney_p"].tolist() for c in found]
    adjusted = iter(holm([p for ps in sound for p in ps]))
    return [dataclasses.replace(c, stats=c.stats.assign(holm_p=[next(adjusted) for _ in ps]))
            for c, ps in zip(found, sound)]


def uncompared(table: pd.DataFrame, found: Offer, scope: pd.DataFrame, threshold: float | None) -> list[str]:
    """For each paired comparison that pairs nothing in `table`, why, where experiments do not
    record what it pairs by (an imported table without a training-data fraction); and why
    small and large models are not compared where the size threshold leaves all on one side."""
    if table.empty:
        return []
    sides = set(_size_sides(scope, threshold)[1])
    size_note = ([f"Small vs large models: none, as every model of known size has "
                  f"{'at most' if sides == {'small'} else 'more than'} "
                  f"{format_value(threshold, RESOURCES['params'])} parameters (the size threshold)."]
                 if len(sides) == 1 else [])
    frame = _with_full_data(table)
    notes = []
    for title, (column, keys, _, _) in _PAIRS.items():
        if not _pairable(frame, column, keys).empty:
            continue
        unknown = [why for why in _left_out(frame, found, column, keys, set()) if why.endswith("not recorded)")]
        if unknown:
            notes.append(f"{title}: none, as {', '.join(unknown)}.")
    return notes + size_note


def _with_full_data(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(full_data=table["train_fraction"].ge(1.0).astype("boolean").where(table["train_fraction"].notna()))


def _pairable(frame: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """The runs whose `keys` are shared by runs on both sides of `column`."""
    known = frame.dropna(subset=[column, *keys])
    both = known.groupby(keys, dropna=False)[column].transform("nunique") == 2
    return known[both.to_numpy()]


def _left_out(frame: pd.DataFrame, found: Offer, column: str, keys: list[str], used: set) -> list[str]:
    """`experiment (why)` for each experiment of the database not among those `used`."""
    left = []
    for experiment in found.experiments:
        if experiment in used:
            continue
        sample = frame[frame["experiment"] == experiment]
        missing = [k for k in (column, *keys) if k in sample and sample[k].isna().all()]
        why = ("no scored runs" if sample.empty else f"{_KNOWN[missing[0]]} not recorded" if missing
               else "no counterpart on the other side")
        left.append(f"{experiment} ({why})")
    return left


def _strata(rows: pd.DataFrame, column: str, keys: list[str], each: str | None):
    """((key values, value of `each` or None), runs) for each comparison of `rows`: one per
    value of `keys`, and with `each`, one per its value on the False side of `column` (full
    data against 0.1, against 0.5: a model's mean never mixes them)."""
    for stratum, part in rows.groupby(keys, sort=True):
        side = part[column].astype(bool)
        for value in [None] if each is None else sorted(part.loc[~side, each].unique(), reverse=True):
            yield (stratum, value), part if value is None else part[side | (part[each] == value)]


def _stratum(values: Mapping) -> str:
    """`derma, full data` or `lidc, pretrained`: the dataset and the setting both sides share."""
    words = [str(values["dataset"])]
    if "train_fraction" in values:
        words.append("full data" if values["train_fraction"] >= 1 else f"fraction {values['train_fraction']:g}")
    if "pretrained" in values:
        words.append("pretrained" if values["pretrained"] else "from scratch")
    return ", ".join(words)


_KNOWN = {"pretrained": "pretraining", "train_fraction": "training-data fraction", "full_data": "training-data fraction", "dataset": "dataset"}
MEASURES = {"performance": "performance", "pepr": "PePR", "energy_kwh": "energy"}


def _stats(rows: pd.DataFrame, paired: bool, units: Mapping[str, tuple[str, float]]) -> pd.DataFrame:
    """Per measure, on each model's mean over its runs (seeds, experiments: n counts models):
    n and median per group, the paper's unpaired t-test, Welch and Mann-Whitney, and where
    `paired` (the same models on both sides) the Wilcoxon signed-rank and paired t-tests over
    the models on both. Energy medians in the readable unit of the view (named in the measure)."""
    a, b = rows["group"].cat.categories
    measured = [column for column in MEASURES if column in rows and rows[column].notna().any()]
    models = rows.groupby(["model", "group"], observed=True)[measured].mean().reset_index()
    pairs = models.pivot(index="model", columns="group", values=measured) if paired else None
    out = []
    for column in measured:
        entry = {"measure": MEASURES[column], **compare_groups(models[column], models["group"].astype(str), a, b)}
        if pairs is not None:
            entry.update(compare_paired(pairs[(column, a)], pairs[(column, b)]))
        resource = COLUMNS.get(column)
        if resource is not None:  # a cost: in the view's readable unit
            unit, factor = units.get(resource.name, (resource.unit, 1.0))
            entry["measure"] = f"{MEASURES[column]} ({unit})"
            for key in ("median_a", "median_b", "median_diff"):
                if entry.get(key) is not None:
                    entry[key] = entry[key] / factor
        out.append(entry)
    return pd.DataFrame(out)


def _costs(rows: pd.DataFrame, units: Mapping[str, tuple[str, float]]) -> pd.DataFrame:
    """Per group: runs, and the median per run and the total of energy, CO2 and time (the
    time named as one epoch's where every run recorded only its last epoch's, as the paper's)."""
    out = []
    for group, part in rows.groupby("group", observed=True):
        entry = {"group": str(group), "runs": len(part)}
        for name in COSTS:
            resource = RESOURCES[name]
            values = part[resource.column].dropna() if resource.column in part else pd.Series(dtype=float)
            if values.empty:
                continue
            epoch = " (last epoch only)" if name == "train_time" and last_epoch_only(part) else ""
            unit = units.get(name)  # said per group: the comparisons span every experiment
            unit = unit and (unit[0].removesuffix(PER_EPOCH), unit[1])
            entry[f"median {resource.noun} per run{epoch}"] = format_value(values.median(), resource, unit)
            entry[f"total {resource.noun}{epoch}"] = format_value(values.sum(), resource)
        out.append(entry)
    return pd.DataFrame(out)


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """`model · experiment · seed N` per run_id (no seed part where none was recorded)."""
    seeds = runs["seed"] if "seed" in runs else pd.Series(None, index=runs.index, dtype=float)
    seed = seeds.map(lambda value: "" if pd.isna(value) else f" · seed {int(value)}")
    return pd.Series((runs["model"] + " · " + runs["experiment"] + seed).to_numpy(), index=runs["run_id"])


def curves(
    runs: pd.DataFrame, epochs: pd.DataFrame, x: str, normalization: str, alpha: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch performance against cumulative `x` with the PePR curve, and each run's peak.

    Performance per epoch is the test metric, else the validation metric."""
    labels = run_labels(runs)
    parts, peaks = [], []
    by_run = dict(tuple(epochs.sort_values("epoch").groupby("run_id", sort=False)))
    for run_id in runs["run_id"]:
        if run_id not in by_run:
            continue
        rows = by_run[run_id]
        rows = rows.assign(performance=rows["test_metric"].fillna(rows["val_metric"]))
        rows = rows.dropna(subset=["performance", x])
        if rows.empty:
            continue
        curve = pepr_curve(rows[x].to_numpy(), rows["performance"].to_numpy(), normalization, alpha)
        part = rows.assign(R=curve.resource, pepr=curve.pepr, label=labels.get(run_id, run_id))
        parts.append(part)
        peaks.append(part.iloc[[curve.peak]])
    if not parts:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(parts, ignore_index=True), pd.concat(peaks, ignore_index=True)


def estimated_share(runs: pd.DataFrame) -> pd.Series:
    """The share of each run's energy that is an estimate, not a measurement (0 = all
    measured); NaN where an estimated part's kWh is unknown."""
    estimated = pd.Series(0.0, index=runs.index)
    for part in ENERGY_PARTS:
        guessed = runs[f"energy_{part}_method"].map(is_estimate).astype(bool)
        estimated += runs[f"energy_{part}_kwh"].where(guessed, 0.0).astype(float)
    return estimated / runs["energy_kwh"]


RUN_LABELS = {
    "status": "status", "experiment": "experiment", "model": "model", "performance": "performance",
    "estimated_share": "energy estimated", "energy_tool": "energy measured with", "pue": "PUE included",
    "energy_cpu_method": "CPU energy method", "energy_gpu_method": "GPU energy method",
    "energy_ram_method": "RAM energy method", "carbon_intensity": "grid intensity (g/kWh)",
    "carbon_intensity_source": "intensity source", "train_time_scope": "training time covers",
    "seed": "seed", "source": "source", "device": "device", "error": "error",
    "started_at": "started", "run_id": "run id",
}
RUN_RESOURCES = ("energy", "co2", "train_time", "infer_time", "gpu_memory", "params")


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The Runs page's table: every resource in a readable unit, training time said per epoch
    where every run recorded its last epoch alone; where runs differ in that, what each one's
    covers stands right after the resources."""
    per_epoch = last_epoch_only(runs)
    resources = [name for name in RUN_RESOURCES if RESOURCES[name].column in runs]
    units = {name: scoped_unit(name, runs[RESOURCES[name].column], per_epoch) for name in resources}
    first, rest = list(RUN_LABELS)[:4], list(RUN_LABELS)[4:]
    if timed_scopes(runs).nunique(dropna=False) > 1:
        rest = ["train_time_scope", *(column for column in rest if column != "train_time_scope")]
    columns = [*first, *(RESOURCES[name].column for name in resources), *rest]
    return readable_table(runs[[c for c in columns if c in runs]], units, RUN_LABELS)


def readable_table(frame: pd.DataFrame, units: Mapping[str, tuple[str, float]], labels: Mapping[str, str]) -> pd.DataFrame:
    """Resource columns scaled to readable units with the unit in the header; other columns
    renamed by `labels` (columns in neither are dropped)."""
    out = {}
    for column in frame:
        resource = COLUMNS.get(column)
        if resource is not None and resource.name in units:
            unit, factor = units[resource.name]
            header = labels.get(column, resource.label)
            out[f"{header} ({unit})" if unit else header] = (
                frame[column].astype(float) / factor
            )
        elif column in labels:
            text = pd.api.types.is_string_dtype(frame[column]) or frame[column].dtype == object
            out[labels[column]] = frame[column].astype(object).fillna("") if text else frame[column]  # not "None"
    return pd.DataFrame(out, index=frame.index)
