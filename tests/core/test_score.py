"""The score math against the properties the paper states, and its analyses."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pepr.errors import PeprError
from pepr.score import (
    compare_groups,
    holm,
    normalize,
    normalize_weights,
    parse_weights,
    pareto_front,
    pepr,
    pepr_curve,
    performance_for,
    score,
    split_by_params,
    strongest,
)


def runs(performance, energy, experiment="e", **columns) -> pd.DataFrame:
    n = len(performance)
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n)],
            "experiment": [experiment] * n if isinstance(experiment, str) else experiment,
            "model": [f"m{i}" for i in range(n)],
            "status": "ok",
            "performance": performance,
            "energy_kwh": energy,
            **columns,
        }
    )


def test_single_model_scores_its_performance():
    table = score(runs([0.7], [5.0]), {"energy": 1}).table
    assert table["pepr"].tolist() == [0.7]


@pytest.mark.parametrize("normalization", ["minmax", "max"])
def test_two_models_cheaper_keeps_p0_dearer_gets_half(normalization):
    energy = [0.0, 3.0] if normalization == "max" else [1.0, 3.0]
    table = score(runs([0.8, 0.9], energy), {"energy": 1}, normalization).table
    assert table["pepr"].tolist() == pytest.approx([0.8, 0.45])
    assert table["rank"].tolist() == [1, 2]


def test_alpha_100_all_but_ignores_resources():
    assert pepr(1.0, 1.0, alpha=100) == pytest.approx(100 / 101)
    table = score(runs([0.8, 1.0], [1.0, 3.0]), {"energy": 1}, alpha=100).table
    assert table["pepr"].tolist() == pytest.approx([0.8, 100 / 101])


@given(
    st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1e6, allow_subnormal=False)),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["minmax", "max"]),
)
def test_pepr_lies_between_half_p_and_p(points, normalization):
    performance, energy = zip(*points)
    table = score(runs(list(performance), list(energy)), {"energy": 1}, normalization).table
    p = table["performance"].to_numpy()
    assert np.all(table["resource"].between(0, 1))
    assert np.all(table["pepr"].to_numpy() <= p + 1e-12)
    assert np.all(table["pepr"].to_numpy() >= p / 2 - 1e-12)


def test_weights_are_rescaled_to_sum_one():
    assert normalize_weights({"energy": 2, "co2": 6}) == {"energy": 0.25, "co2": 0.75}
    assert normalize_weights({"energy": 0, "co2": 3}) == {"co2": 1.0}
    assert parse_weights("energy=1, co2=0.5") == {"energy": 1.0, "co2": 0.5}
    assert parse_weights("energy:1,co2:0.5") == {"energy": 1.0, "co2": 0.5}  # as a dashboard link has them
    frame = runs([0.5, 0.5], [1.0, 2.0], co2_kg=[4.0, 2.0])
    scaled = score(frame, {"energy": 2, "co2": 6}).table
    plain = score(frame, {"energy": 0.25, "co2": 0.75}).table
    assert scaled["pepr"].tolist() == pytest.approx(plain["pepr"].tolist())
    # R = 0.25 * 0 + 0.75 * 1 for the first run (cheapest energy, dearest CO2), 0.25 for the second.
    assert scaled["resource"].tolist() == pytest.approx([0.75, 0.25])
    assert scaled["pepr"].tolist() == pytest.approx([0.5 / 1.75, 0.5 / 1.25])



def test_huge_weights_count_as_their_ratio_not_as_nothing():
    """Their sum overflowed to inf, every weight became 0 and PePR fell back to performance."""
    assert normalize_weights({"energy": 1e308, "train_time": 1e308}) == {"energy": 0.5, "train_time": 0.5}
    assert normalize_weights({"energy": 1e-320, "co2": 3e-320}) == pytest.approx({"energy": 0.25, "co2": 0.75})
    assert normalize_weights({"energy": 1e308, "co2": 1e-320}) == {"energy": 1.0}  # co2's share is no share


def test_the_dearest_run_costs_exactly_one():
    assert 49.9 * (1 / 49.9) != 1.0  # how it was computed
    assert normalize([5.0, 20.0, 49.9], method="max")[-1] == 1.0
    assert normalize([0.40634564900027514, 1.768710758623552])[-1] == 1.0

def test_all_zero_weights_ignore_resources():
    table = score(runs([0.6, 0.9], [1.0, 100.0]), {"energy": 0}).table
    assert table["pepr"].tolist() == [0.6, 0.9]


def test_degenerate_ranges_give_zero_resource():
    assert normalize([3.0, 3.0, 3.0]).tolist() == [0, 0, 0]
    assert normalize([0.0, 0.0], "max").tolist() == [0, 0]
    table = score(runs([0.4, 0.6], [2.0, 2.0]), {"energy": 1}).table
    assert table["pepr"].tolist() == [0.4, 0.6]


def test_share_of_max_is_the_share_of_the_dearest_when_all_cost_the_same():
    """R = r / r_max (r_min = 0): equal costs are each the dearest, R = 1, as they are a hair
    apart; they had R = 0, so a millionth more energy halved every score."""
    assert normalize([3.0, 3.0, 3.0], "max").tolist() == [1, 1, 1]
    assert normalize([2.0, 2.0, 1.0, 4.0], "max", groups=["a", "a", "b", "b"]).tolist() == [1, 1, 0.25, 1]
    equal = score(runs([0.6, 0.9], [2.0, 2.0]), {"energy": 1}, "max").table["pepr"]
    apart = score(runs([0.6, 0.9], [2.0, 2.000001]), {"energy": 1}, "max").table["pepr"]
    assert equal.tolist() == [0.3, 0.45]
    assert apart.tolist() == pytest.approx(equal.tolist(), rel=1e-6)
    assert score(runs([0.7], [5.0]), {"energy": 1}, "max").table["pepr"].tolist() == [0.35]


def test_normalisation_is_within_each_experiment():
    frame = runs([0.5] * 4, [1.0, 2.0, 10.0, 30.0], experiment=["a", "a", "b", "b"])
    table = score(frame, {"energy": 1}).table
    assert table["R_energy"].tolist() == [0, 1, 0, 1]
    assert table["rank"].tolist() == [1, 2, 1, 2]
    shares = score(frame, {"energy": 1}, "max").table
    assert shares["R_energy"].tolist() == pytest.approx([0.5, 1, 1 / 3, 1])


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"energy": -1}, "must be a number >= 0"),
        ({"watts": 1}, "unknown resource 'watts'"),
        ({"energy": float("nan")}, "must be a number >= 0"),
    ],
)
def test_bad_weights_are_rejected(weights, message):
    with pytest.raises(PeprError, match=message):
        score(runs([0.5], [1.0]), weights)


@pytest.mark.parametrize("text", ["energy", "energy=abc", "=1"])
def test_unparseable_weights_are_rejected(text):
    with pytest.raises(PeprError):
        parse_weights(text)


@pytest.mark.parametrize("performance", [1.5, -0.1])
def test_performance_outside_unit_interval_names_the_run(performance):
    with pytest.raises(PeprError, match=r"run r1 \(m1 in e\): performance .* outside \[0, 1\]"):
        score(runs([0.5, performance], [1.0, 2.0]), {"energy": 1})


def test_bad_alpha_and_normalization_are_rejected():
    with pytest.raises(PeprError, match="alpha"):
        score(runs([0.5], [1.0]), {"energy": 1}, alpha=0)
    with pytest.raises(PeprError, match="normalization"):
        score(runs([0.5], [1.0]), {"energy": 1}, "zscore")


def test_runs_missing_a_weighted_resource_are_excluded_with_a_reason():
    frame = runs([0.9, 0.8, 0.7, 0.6], [1.0, np.nan, 3.0, 2.0], co2_kg=[1.0, 1.0, np.nan, 1.0])
    frame.loc[3, "status"] = "failed"
    result = score(frame, {"energy": 1, "co2": 1})
    assert result.table["run_id"].tolist() == ["r0"]
    assert dict(zip(result.excluded["run_id"], result.excluded["reason"])) == {
        "r1": "energy not measured",
        "r2": "CO2 not measured",
        "r3": "status failed",
    }
    # A resource with weight 0 does not exclude anyone.
    assert score(frame, {"co2": 1}).table["run_id"].tolist() == ["r0", "r1"]
    # An interrupted attempt of a job that a resumed sweep then finished says so.
    frame = frame.assign(job_key=["k0", "k1", "k2", "k0"])
    assert score(frame, {"energy": 1}).excluded.set_index("run_id")["reason"].to_dict() == {
        "r1": "energy not measured", "r3": "status failed, rerun ok"}



def test_imported_parts_do_not_pose_as_the_reason_a_resource_is_missing():
    """An imported table with energy but no CO2: its parts (method `imported`, no values) said
    `CO2 not measured (cpu: imported, gpu: imported, ram: imported)`."""
    parts = {f"energy_{part}_{what}": [value] * 2 for part in ("cpu", "gpu", "ram")
             for what, value in (("kwh", np.nan), ("method", "imported"))}
    frame = runs([0.9, 0.8], [1.0, np.nan], co2_kg=[np.nan, np.nan], **parts)
    reasons = score(frame, {"energy": 1, "co2": 1}).excluded.set_index("run_id")["reason"]
    assert reasons.to_dict() == {"r0": "CO2 not measured", "r1": "energy not measured"}

def test_a_negative_cost_is_excluded_not_scored_above_its_performance():
    """Written past the importer (a merged or hand-made file): energy -1 scored PePR 1.6 for
    performance 0.8 under share-of-max, and shifted the others' R under min-max."""
    frame = runs([0.8, 0.9, 0.7], [-1.0, 2.0, 4.0])
    result = score(frame, {"energy": 1}, "max")
    assert result.excluded.set_index("run_id")["reason"].to_dict() == {"r0": "energy is negative"}
    assert result.table.set_index("run_id")["pepr"].to_dict() == pytest.approx({"r1": 0.9 / 1.5, "r2": 0.7 / 2})


def test_a_part_not_sampled_or_an_infinite_value_excludes_the_run_and_says_why():
    frame = runs([0.9, 0.8, 0.7, 0.6], [1.0, np.nan, np.nan, 2.0], co2_kg=[1.0, np.nan, np.inf, 1.0])
    frame = frame.assign(
        energy_cpu_kwh=[0.5, np.nan, np.nan, 1.0], energy_cpu_method=["rapl", "not-sampled", "not-sampled", "rapl"],
        energy_gpu_kwh=[0.5, np.nan, np.nan, 1.0], energy_gpu_method=["gpu-energy-counter", "none", "not-sampled", "x"],
        energy_ram_kwh=[0.0, 0.1, np.nan, 0.0], energy_ram_method=["ram-estimate"] * 3 + [None],
        train_time_s=[1.0, 2.0, 3.0, 4.0],
    )
    reasons = lambda weights: dict(zip(*score(frame, weights).excluded[["run_id", "reason"]].T.values))  # noqa: E731
    # The GPU part that does not exist ('none') is no reason; the parts not sampled are.
    assert reasons({"energy": 1}) == {
        "r1": "energy not measured (cpu: not-sampled)",
        "r2": "energy not measured (cpu: not-sampled, gpu: not-sampled, ram: ram-estimate)",
    }
    assert reasons({"co2": 1}) == {"r1": "CO2 not measured (cpu: not-sampled)", "r2": "CO2 is not a finite number"}
    assert reasons({"train_time": 1}) == {}
    frame.loc[0, "train_time_s"] = np.nan
    assert reasons({"train_time": 1}) == {"r0": "training time not measured"}
    assert score(frame, {"co2": 1}).table["pepr"].notna().all()


def test_loss_terms_split_the_gap_between_performance_and_pepr():
    frame = runs([0.9, 0.5, 0.7], [1.0, 2.0, 3.0], co2_kg=[3.0, 1.0, 2.0])
    table = score(frame, {"energy": 1, "co2": 3}).table
    gap = table["performance"] - table["pepr"]
    assert (table["loss_energy"] + table["loss_co2"]).tolist() == pytest.approx(gap.tolist())
    # Run r1: R_energy = 0.5, R_co2 = 0, so energy accounts for all of its loss.
    assert table.loc[1, "loss_co2"] == 0
    assert table.loc[1, "loss_energy"] == pytest.approx(gap[1])


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from([0.1, 0.2, 0.5, 0.9, 1.0])), min_size=1, max_size=40)
)
def test_ranks_match_pandas_min_ranking_within_experiments(rows):
    experiments, performance = zip(*rows)
    frame = runs(list(performance), [1.0] * len(rows), experiment=list(experiments))
    table = score(frame, {}).table
    expected = table.groupby("experiment")["pepr"].rank(method="min", ascending=False).astype(int)
    assert table["rank"].tolist() == expected.tolist()


def test_pareto_front():
    performance = np.array([0.50, 0.80, 0.85, 0.86, 0.70, 0.60])
    resource = np.array([0.00, 0.10, 0.50, 1.00, 0.60, 0.05])
    front = pareto_front(performance, resource)
    assert front.tolist() == [True, True, True, True, False, True]


def test_pareto_front_ties_keep_one_point():
    front = pareto_front([0.5, 0.5, 0.6], [1.0, 1.0, 1.0])
    assert front.tolist() == [False, False, True]


def test_the_strongest_breaks_ties_by_pepr_then_name():
    frame = pd.DataFrame({"model": ["b", "a", "c", "d"], "performance": [0.9, 0.9, 0.8, 0.9],
                          "pepr": [0.6, 0.6, 0.7, 0.5]})
    assert strongest(frame)["model"] == "a"
    assert strongest(frame.iloc[[0, 3, 2]])["model"] == "b"


def test_runs_alike_in_both_are_on_the_front_together():
    # Neither of two runs with equal performance and cost dominates the other.
    front = pareto_front([0.8, 0.8, 0.9, 0.9, 0.7, 0.8, 0.8], [1.0, 1.0, 2.0, 3.0, 0.5, 1.5, 1.5])
    assert front.tolist() == [True, True, True, False, True, False, False]


def test_an_iso_line_holds_its_score():
    resource = np.linspace(0, 1, 11)
    for alpha in (1.0, 3.0):
        assert pepr(performance_for(0.7, resource, alpha), resource, alpha) == pytest.approx(np.full(11, 0.7))


def test_pepr_curve_peaks_at_diminishing_returns():
    energy = [1.0, 2.0, 3.0, 4.0]
    accuracy = [0.50, 0.80, 0.85, 0.86]
    curve = pepr_curve(energy, accuracy)
    assert curve.resource.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve.pepr.tolist() == pytest.approx([0.5 / 1.25, 0.8 / 1.5, 0.85 / 1.75, 0.86 / 2])
    assert curve.peak == 1


def test_pepr_curve_ties_go_to_the_smallest_resource():
    curve = pepr_curve([2.0, 1.0, 3.0], [0.0, 0.0, 0.0], normalization="minmax")  # PePR 0 at every epoch
    assert (curve.pepr == 0).all() and curve.peak == 1


def test_a_resource_only_failed_runs_measured_is_refused_by_name():
    """The ok runs are what is scored: a failed run's energy does not make energy measured."""
    from pepr.score import check_measured

    runs = pd.DataFrame({"model": ["a", "b", "c"], "experiment": "x", "status": ["ok", "ok", "failed"],
                         "performance": [0.5, 0.6, None], "energy_kwh": [None, None, 0.2]})
    with pytest.raises(PeprError, match="^--weights: energy measured in no run of x; weight what was measured$"):
        check_measured(runs, {"energy": 1}, "x")


def test_carbon_intensity_needs_energy_above_zero():
    """A CodeCarbon row with CO2 but 0 kWh has no intensity (NaN), not an infinite one."""
    from pepr.resources import grams_per_kwh

    intensity = grams_per_kwh(pd.Series([0.5, 0.5, 0.0]), pd.Series([2.0, 0.0, 0.0]))
    assert intensity[0] == 250.0 and np.isnan(intensity[1:]).all()


def test_split_by_params_and_group_comparison():
    labels, threshold = split_by_params([1e6, 2e6, 3e6, 4e6, 5e6])
    assert threshold == 3e6
    assert labels.tolist() == ["small", "small", "small", "large", "large"]
    assert split_by_params([1, 10], threshold=5)[0].tolist() == ["small", "large"]

    values = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    groups = ["small"] * 3 + ["large"] * 3
    result = compare_groups(values, groups, "small", "large")
    assert (result["n_a"], result["n_b"]) == (3, 3)
    assert result["median_a"] == pytest.approx(0.2)
    assert result["median_b"] == pytest.approx(0.8)
    # Welch's t: difference 0.6, each variance 0.01, so t = 0.6 / sqrt(0.01/3 * 2) = 7.35, df = 4.
    assert result["welch_p"] == pytest.approx(0.00183, abs=1e-4)
    assert result["mannwhitney_p"] == pytest.approx(0.1)


def test_holm_adjusts_step_down_and_keeps_missing_values():
    # Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the 0.06 before it.
    assert holm([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]


def test_group_comparison_with_too_few_values_has_no_p_values():
    result = compare_groups([0.5, 0.6, 0.7], ["a", "b", "b"], "a", "b")
    assert result["welch_p"] is None and result["mannwhitney_p"] is None
    assert result["median_a"] == 0.5
