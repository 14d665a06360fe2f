"""The pure parts: the URL form of the choices, the view built from (runs, epochs, choices),
carbon re-pricing, units, budget, baseline, comparisons and sensitivity. Plain pytest."""

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard import carbon, views
from dashboard.controls import DEFAULT_WEIGHTS, WEIGHTED, Controls, from_query, to_query
from dashboard.sources import new_database, sources
from dashboard.text import ZERO_WIDTH, plain
from pepr.errors import PeprError
from pepr.resources import RESOURCES, format_value, typical_unit
from pepr.score import score
from pepr.sensitivity import kendall_tau, rank_stability, sample_weights

EXPERIMENTS = ["a", "b", "c"]
EPOCHS = pd.DataFrame(columns=["run_id", "epoch", "val_metric", "test_metric", "cum_time_s", "cum_energy_kwh"])


def frame(rows, **common) -> pd.DataFrame:
    base = {"status": "ok", "metric": "accuracy", "dataset": "d", "pretrained": True, "train_fraction": 1.0,
            "params": 1e6, "carbon_intensity": 100.0, "country": "DNK", "provenance": None, "seed": 0}
    table = pd.DataFrame([{**base, **common, **row} for row in rows])
    table["run_id"] = [f"{r['experiment']}-{r['model']}" if "run_id" not in r else r["run_id"] for r in table.to_dict("records")]
    if "co2_kg" not in table:
        table["co2_kg"] = table["energy_kwh"] * table["carbon_intensity"] / 1000
    return table


def view_of(runs, epochs=EPOCHS, **choices) -> views.View:
    return views.build_view(runs, epochs, Controls(**{"experiments": tuple(sorted(runs["experiment"].unique())), "metric": "accuracy", **choices}))


# -- links ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    experiments=st.lists(st.sampled_from(EXPERIMENTS), min_size=1, unique=True),
    weights=st.dictionaries(st.sampled_from(WEIGHTED), st.sampled_from([0.0, 0.05, 0.5, 1.0, 0.123456789])),
    normalization=st.sampled_from(["minmax", "max"]),
    alpha=st.sampled_from([1.0, 2.5, 100.0]),
    intensity=st.sampled_from(["", "FRA", "350"]),
    threshold=st.sampled_from([None, 0.001, 24.6]),
    caps=st.dictionaries(st.sampled_from(["energy", "gpu_memory", "co2"]), st.sampled_from([3e-05, 4.0, 0.1])),
    runs=st.lists(st.sampled_from(["r1", "r2", "r3"]), unique=True),
    pages=st.tuples(st.sampled_from([100, 2000]), st.sampled_from([2.0, 200.0]), st.sampled_from(["model_type", "efficient"])),
)
def test_every_choice_round_trips_through_the_link(experiments, weights, normalization, alpha, intensity, threshold, caps, runs, pages):
    controls = Controls(
        db="agent", experiments=tuple(experiments), metric="accuracy", weights=weights, normalization=normalization,
        alpha=alpha, intensity=intensity, threshold_m=threshold, caps=caps, baseline_weights={"co2": 1.0},
        baseline_normalization="max", baseline_alpha=2.0, top_k=7, samples=pages[0], concentration=pages[1],
        color=pages[2], curve_runs=tuple(runs), curve_axis="cum_time_s", run_status=("failed",),
        run_experiments=("b",), run_model="res",
    )
    query = to_query(controls, ["accuracy"], ("a",), ["paper", "agent"])
    back, ignored = from_query(query, EXPERIMENTS, ["accuracy"], ("a",), ["paper", "agent"], ["FRA"])
    assert ignored == []
    positive = {k: v for k, v in weights.items() if v > 0}
    assert back == Controls(**{**controls.__dict__, "weights": positive})


def test_best_validation_from_a_link_needs_validation_epochs():
    """The control is not drawn without them, so a link's p=bestval left every page empty."""
    controls, ignored = from_query({"p": "bestval"}, EXPERIMENTS, ["accuracy"], ("a",), best_val=False)
    assert controls.performance == "final" and ignored == ["p: 'bestval' is not one of final"]


def test_runs_of_another_metric_are_said_to_be_left_out():
    mixed = frame([{"experiment": "a", "model": "m1", "performance": 0.9, "energy_kwh": 1.0},
                   {"experiment": "b", "model": "m2", "performance": 0.8, "energy_kwh": 1.0, "metric": "auc"}])
    view = view_of(mixed)  # the metric chosen: accuracy
    assert list(view.models["model"]) == ["m1"]
    assert view.notes == ["1 run(s) of b measured by another metric (auc), not accuracy, the performance metric chosen."]


def test_default_choices_make_an_empty_link():
    assert to_query(Controls(experiments=("a",), metric="acc"), ["acc", "f1"], ("a",)) == {}
    assert to_query(Controls(experiments=("a", "b"), metric="f1"), ["acc", "f1"], ("a",)) == {"x": ["a", "b"], "m": "f1"}
    assert from_query({}, EXPERIMENTS, ["accuracy"], ("b",))[0] == Controls(experiments=("b",), metric="accuracy")


@pytest.mark.parametrize(
    "params, field, expected, message",
    [
        ({"w": "foo:2,energy:abc"}, "weights", DEFAULT_WEIGHTS, "w: foo:2, energy:abc"),
        ({"w": "foo:2,co2:0.5"}, "weights", {"co2": 0.5}, "w: foo:2"),
        ({"w": "energy:7"}, "weights", DEFAULT_WEIGHTS, "w: energy:7"),
        ({"w": "none"}, "weights", {}, None),
        ({"x": "nope"}, "experiments", ("a",), "x: no experiment 'nope'"),
        ({"x": "![p](http://host/pixel.png)"}, "experiments", ("a",), "x: no experiment"),
        ({"n": "zzz"}, "normalization", "minmax", "n: 'zzz'"),
        ({"a": "-1"}, "alpha", 1.0, "a: '-1'"),
        ({"a": "nan"}, "alpha", 1.0, "a: 'nan'"),
        ({"a": "inf"}, "alpha", 1.0, "a: 'inf'"),
        ({"t": "abc"}, "threshold_m", None, "t: 'abc'"),
        ({"ci": "inf"}, "intensity", "", "ci: 'inf'"),
        ({"ci": "nan"}, "intensity", "", "ci: 'nan'"),
        ({"ci": "-5"}, "intensity", "", "ci: '-5'"),
        ({"ci": "XXX"}, "intensity", "", "ci: 'XXX'"),
        ({"ci": "fra"}, "intensity", "FRA", None),
        ({"cap": "energy:-1,gpu_memory:4"}, "caps", {"gpu_memory": 4.0}, "cap: energy:-1"),
        ({"cap": "bogus:1"}, "caps", {}, "cap: bogus:1"),
        ({"cap": "energy:1e308"}, "caps", {}, "cap: energy:1e308 (expected NAME:NUMBER in [0, 1e+15]"),  # inf in Wh
        ({"k": "2.5"}, "top_k", 5, "k: '2.5'"),
        ({"k": "0"}, "top_k", 5, "k: '0'"),
        ({"sn": "7"}, "samples", 500, "sn: '7'"),
        ({"sc": "1e9"}, "concentration", 20.0, "sc: '1e9'"),
        ({"col": "<b>x</b>"}, "color", "model_type", "col: '<b>x</b>'"),
        ({"ax": "energy"}, "curve_axis", "", "ax: 'energy'"),
        ({"db": "../../etc/passwd"}, "db", "paper", "db: '../../etc/passwd'"),
        ({"p": "best"}, "performance", "final", "p: 'best'"),
        ({"m": "f1"}, "metric", "accuracy", "m: 'f1'"),
        ({"bw": "energy:x"}, "baseline_weights", DEFAULT_WEIGHTS, "bw: energy:x"),
        ({"rs": ["ok", "<b>bad</b>"]}, "run_status", ("ok",), "rs: '<b>bad</b>' is not a run status"),
        ({"rs": "failed"}, "run_status", ("failed",), None),
        ({"rs": ["x", "y"]}, "run_status", (), "rs: 'x', 'y' are not run statuses"),
    ],
)
def test_bad_link_values_fall_back_and_are_named(params, field, expected, message):
    controls, ignored = from_query(params, EXPERIMENTS, ["accuracy"], ("a",), ["paper", "agent"], ["FRA"])
    assert getattr(controls, field) == expected
    if message is None:
        assert ignored == []
    else:
        (line,) = ignored
        assert line.startswith(message)


def test_a_name_from_data_is_escaped():
    name = "![p](http://host/pixel.png) <img src=x> $x$ :red[a] **b** www.x.org a@b.org"
    shown = plain(name)
    assert re.search(r"(?<!\\)[\[\]<>$:*@]", shown) is None  # every Markdown character escaped (! and ( only act after ])
    assert "://" not in shown.replace("\\", "") and "www." not in shown.replace("\\", "")  # no autolink
    assert re.sub(r"\\(.)", r"\1", shown).replace(ZERO_WIDTH, "") == name  # and nothing else changed


# -- databases ------------------------------------------------------------------------------


def test_the_picker_offers_shipped_user_and_start_files_only(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "paper.duckdb").write_bytes(b"")
    (results / "pepr.duckdb").write_bytes(b"")
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.duckdb").write_bytes(b"")
    (user / "notes.txt").write_bytes(b"")
    env = {"PEPR_DATA_DIR": str(user)}
    assert list(sources(env, results)) == ["paper", "agent", "user:mine"]
    assert [s.writable for s in sources(env, results).values()] == [False, False, True]
    started = sources({**env, "PEPR_DB": str(tmp_path / "other.duckdb")}, results)
    assert list(started) == ["start", "paper", "agent", "user:mine"] and not started["start"].writable
    # a start path naming a shipped file opens that entry first, not a copy of it
    assert list(sources({**env, "PEPR_DB": str(results / "pepr.duckdb")}, results)) == ["agent", "paper", "user:mine"]


def test_a_link_in_the_user_folder_is_read_but_never_written(tmp_path):
    """A link could lead anywhere, the shipped results included: it is offered read-only."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "paper.duckdb").write_bytes(b"")
    user = tmp_path / "user"
    user.mkdir()
    (user / "shipped.duckdb").symlink_to(results / "paper.duckdb")
    (user / "mine.duckdb").write_bytes(b"")
    found = sources({"PEPR_DATA_DIR": str(user)}, results)
    assert not found["user:shipped"].writable and found["user:mine"].writable


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "", ".hidden", "x" * 65, "a b", "c:\\d"])
def test_a_new_database_name_cannot_leave_the_user_folder(tmp_path, name):
    with pytest.raises(ValueError, match="a database name is"):
        new_database(name, {"PEPR_DATA_DIR": str(tmp_path)})
    assert new_database("paper.duckdb", {"PEPR_DATA_DIR": str(tmp_path / "u")}) == tmp_path / "u" / "paper.duckdb"
    assert not (tmp_path / "u").exists()  # naming a database writes nothing: the import makes the folder


def test_a_new_database_name_is_not_taken_nor_a_link(tmp_path):
    """The own-results import wrote through a link of that name (to anywhere: results/ too)."""
    env = {"PEPR_DATA_DIR": str(tmp_path)}
    (tmp_path / "mine.duckdb").write_bytes(b"")
    (tmp_path / "linked.duckdb").symlink_to(tmp_path / "elsewhere.duckdb")  # dangling: still a link
    with pytest.raises(ValueError, match="already have a database of that name"):
        new_database("mine", env)
    with pytest.raises(ValueError, match="that name is a link .* never written"):
        new_database("linked", env)
    assert not (tmp_path / "elsewhere.duckdb").exists()


def test_the_default_scope_is_one_experiment():
    rows = [{"experiment": e, "model": m, "performance": 0.5, "energy_kwh": 1.0, "pretrained": p, "train_fraction": f}
            for e, p, f in [("derma", False, 1.0), ("derma_pt", True, 1.0), ("derma_small", None, 0.1), ("lidc", True, 1.0)]
            for m in "xy"]
    runs = frame(rows)
    runs["pretrained"] = runs["pretrained"].astype("boolean")
    found = views.offer(runs, EPOCHS)
    assert found.default == ("derma_pt",)  # full data and pretrained first, then by name
    assert found.groups == {"d": ["derma_pt", "lidc", "derma", "derma_small"]}
    assert found.describe["derma_small"] == "derma_small: pretraining not recorded, 10% of the data"


# -- units ------------------------------------------------------------------------------------


def test_readable_units():
    energy, memory, params = RESOURCES["energy"], RESOURCES["gpu_memory"], RESOURCES["params"]
    assert format_value(0.00003, energy) == "30 mWh"
    assert format_value(3.076e-05, energy) == "30.8 mWh"
    assert format_value(0.0123, energy) == "12.3 Wh"
    assert format_value(2.5, memory) == "2.5 GB" and format_value(0.25, memory) == "250 MB"
    assert format_value(24.6e6, params) == "24.6M"
    assert format_value(5.2e6, energy) == "5200 MWh" and format_value(3e12, params) == "3T"  # no 5.2e+03
    assert format_value(0.9997, energy) == "1000 Wh" and format_value(-999.7e6, params) == "-1000M"  # no 1e+03
    assert format_value(1e307, energy) == "1e+304 MWh" and format_value(3.2e18, params) == "3.2e+06T"  # not 300 digits
    assert format_value(float("nan"), energy) == "n/a"
    assert typical_unit(energy, [1e-5, 2e-5, 3e-5, None]) == ("mWh", 1e-6)
    assert typical_unit(energy, [1e-5, 2e-3, 3e-3, 0, None]) == ("Wh", 1e-3)  # the median's, not the smallest's


# -- carbon intensity -----------------------------------------------------------------------


def test_carbon_intensity_choices():
    assert carbon.countries()["FRA"][0] == "France"
    assert carbon.intensity("fra") == carbon.countries()["FRA"][1]
    assert carbon.intensity("250") == 250.0
    for bad in ("", "-5", "XXX", "inf", "nan", "1e9"):
        assert carbon.intensity(bad) is None, bad
    runs = pd.DataFrame({"energy_kwh": [2.0, None], "co2_kg": [9.0, 1.0]})
    assert carbon.with_intensity(runs, None) is runs
    out = carbon.with_intensity(runs, 500.0)
    assert out["co2_kg"].iloc[0] == 1.0 and pd.isna(out["co2_kg"].iloc[1])
    assert (out["carbon_intensity_source"] == carbon.WHAT_IF).all()  # the downloaded report says so


LIVE_GRID = frame(
    [  # `dirty` used little energy on a dirty grid: cheapest in CO2 as measured, dearer on one grid
        {"experiment": "e", "model": "clean", "performance": 0.9, "energy_kwh": 4.0, "carbon_intensity": 50.0},
        {"experiment": "e", "model": "dirty", "performance": 0.9, "energy_kwh": 2.0, "carbon_intensity": 800.0},
        {"experiment": "e", "model": "mid", "performance": 0.9, "energy_kwh": 3.0, "carbon_intensity": 100.0},
    ]
)


def test_one_grid_re_prices_co2_measured_on_a_live_grid():
    measured = view_of(LIVE_GRID, weights={"co2": 1.0})
    assert list(measured.models["model"]) == ["clean", "mid", "dirty"]  # 0.2, 0.3, 1.6 kg
    assert measured.carbon.changes_ranking and "measured at 50 to 800 g CO2eq/kWh" in measured.carbon.message
    on_one = view_of(LIVE_GRID, weights={"co2": 1.0}, intensity="400")
    assert list(on_one.models["model"]) == ["dirty", "mid", "clean"]  # now as energy ranks them
    assert on_one.models.set_index("model")["co2_kg"].to_dict() == pytest.approx({"dirty": 0.8, "mid": 1.2, "clean": 1.6})


def test_runs_priced_at_a_fallback_average_are_counted_in_the_grid_note():
    """The paper's 26 runs at Carbontracker's fallback 475 g/kWh looked like a dirty live grid."""
    fallback = LIVE_GRID.assign(carbon_intensity_source=["live-grid", "fallback-average", "live-grid"])
    message = view_of(fallback, weights={"co2": 1.0}).carbon.message
    assert "measured at 50 to 800 g CO2eq/kWh of their energy (the grid of each run, recorded or not; 1 at a fallback " \
           "average, not their grid's)" in message
    assert "fallback" not in view_of(LIVE_GRID, weights={"co2": 1.0}).carbon.message


def test_co2_without_a_recorded_intensity_is_re_priced_as_it_was_measured():
    """Imported CO2 often comes without its grid: the CO2 per kWh still tells the grids apart
    (B, C, A as measured; on one grid, as energy ranks them: A, B, C)."""
    imported = frame([{"experiment": "e", "model": m, "performance": p, "energy_kwh": e, "co2_kg": c}
                      for m, p, e, c in [("A", 0.9, 1.0, 0.9), ("B", 0.85, 2.0, 0.1), ("C", 0.8, 3.0, 0.2)]],
                     carbon_intensity=None)
    measured = view_of(imported, weights={"co2": 1.0})
    assert list(measured.models["model"]) == ["B", "C", "A"]
    assert measured.carbon.changes_ranking and "measured at 50 to 900 g CO2eq/kWh" in measured.carbon.message
    assert list(view_of(imported, weights={"co2": 1.0}, intensity="FRA").models["model"]) == ["A", "B", "C"]


def test_a_run_with_energy_but_no_co2_can_enter_the_ranking_on_one_grid():
    lopsided = frame([{"experiment": "e", "model": m, "performance": p, "energy_kwh": e, "co2_kg": c}
                      for m, p, e, c in [("A", 0.9, 2.0, 0.2), ("B", 0.8, 3.0, 0.3), ("C", 0.95, 1.0, None)]])
    measured = view_of(lopsided, weights={"co2": 1.0})
    assert "C" not in set(measured.models["model"])  # no CO2 as measured
    assert measured.carbon.changes_ranking and "1 run(s) have only one of energy and CO2" in measured.carbon.message
    assert view_of(lopsided, weights={"co2": 1.0}, intensity="FRA").models["model"].iloc[0] == "C"


def test_a_grid_of_zero_says_what_co2_then_weighs():
    runs = LIVE_GRID.assign(performance=[0.9, 0.8, 0.95])
    zero = view_of(runs, weights={"co2": 1.0}, intensity="0")
    assert list(zero.models["model"]) == ["mid", "clean", "dirty"]  # by performance alone
    assert zero.carbon.changes_ranking and "performance alone ranks them" in zero.carbon.message
    assert "as energy does" not in zero.carbon.message
    # Beside energy, CO2's share still dilutes energy's cost: P / (1 + R_energy / 4), not P / (1 + R_energy).
    mixed = view_of(runs, weights={"co2": 3.0, "energy": 1.0}, intensity="0")
    r_energy = (runs["energy_kwh"] - runs["energy_kwh"].min()) / (runs["energy_kwh"].max() - runs["energy_kwh"].min())
    expected = (runs["performance"] / (1 + r_energy / 4)).set_axis(runs["model"])
    assert mixed.models.set_index("model")["pepr"].to_dict() == pytest.approx(expected.to_dict())
    assert "CO2 keeps its 75% of the weights: the other costs count 25% as much" in mixed.carbon.message


def test_a_co2_weight_of_zero_is_not_weighted():
    """Every weight box holds a number, 0 where unused: CO2 at 0 was told as weighted."""
    unweighted = view_of(LIVE_GRID, weights={"energy": 1.0, "co2": 0.0}, intensity="0")
    assert not unweighted.carbon.changes_ranking
    assert unweighted.carbon.message.startswith("CO2 is not weighted")


def test_the_page_says_when_the_grid_cannot_change_the_ranking():
    constant = LIVE_GRID.assign(carbon_intensity=150.0, co2_kg=LIVE_GRID["energy_kwh"] * 0.15)
    a = view_of(constant, weights={"co2": 1.0}, intensity="FRA")
    b = view_of(constant, weights={"co2": 1.0}, intensity="POL")
    assert list(a.models["model"]) == list(b.models["model"]) == list(view_of(constant, weights={"energy": 1.0}).models["model"])
    assert not a.carbon.changes_ranking and "cannot change" in a.carbon.message
    assert a.models["co2_kg"].sum() != pytest.approx(b.models["co2_kg"].sum())  # the figures do change
    assert "not weighted" in view_of(constant, weights={"energy": 1.0}, intensity="POL").carbon.message


# -- the view ---------------------------------------------------------------------------------


CRAFTED = frame(
    [
        {"experiment": "e", "model": "big", "performance": 0.95, "energy_kwh": 10.0, "gpu_mem_reserved_gb": 20.0, "params": 100e6},
        {"experiment": "e", "model": "mid", "performance": 0.90, "energy_kwh": 5.0, "gpu_mem_reserved_gb": 8.0, "params": 20e6},
        {"experiment": "e", "model": "tiny", "performance": 0.80, "energy_kwh": 1.0, "gpu_mem_reserved_gb": 1.0, "params": 1e6},
        {"experiment": "e", "model": "odd", "performance": 0.50, "energy_kwh": 5.0, "gpu_mem_reserved_gb": None, "params": 3e6},
    ]
)


def test_view_ranks_headline_and_threshold():
    view = view_of(CRAFTED)
    assert list(view.models["model"]) == ["tiny", "mid", "big", "odd"]  # 0.8, 0.623, 0.475, 0.346
    top = view.headline
    assert (top["best"]["model"], top["strongest"]["model"]) == ("tiny", "big")
    assert top["points_lost"] == pytest.approx(15.0)
    assert top["saved"] == {"energy": 10.0, "co2": 10.0, "gpu_memory": 20.0}
    timed = CRAFTED.assign(train_time_s=CRAFTED["params"] / 1e6)  # tiny takes 1 s, big 100 s
    weighted = view_of(timed, weights={"energy": 1.0, "train_time": 1.0}).headline
    assert list(weighted["saved"].items()) == [("energy", 10.0), ("train_time", 100.0), ("co2", 10.0),
                                               ("gpu_memory", 20.0)]  # what is weighted comes first
    assert "train_time" not in view_of(timed).headline["saved"]  # not weighted: not said
    assert view.threshold == pytest.approx((3e6 + 20e6) / 2)  # the median model
    assert view_of(CRAFTED, threshold_m=5.0).threshold == 5e6


def test_the_runs_table_says_what_each_training_time_covers():
    """The Runs page headed the paper's last-epoch times "Training time (s)", where every other
    page said per epoch; where runs differ in what theirs covers, that column follows the
    resources, not 14 columns to the right."""
    paper = CRAFTED.assign(train_time_s=[30.0, 20.0, 11.4, 15.0], train_time_scope="last-epoch",
                           estimated_share=0.0)
    headers = list(views.runs_table(paper).columns)
    assert "Training time (s per epoch)" in headers
    assert headers.index("training time covers") > headers.index("energy estimated")
    mixed = list(views.runs_table(paper.assign(train_time_scope=["last-epoch", "run", "run", "run"])).columns)
    assert "Training time (s)" in mixed
    resources = [i for i, header in enumerate(mixed) if any(
        header.startswith(RESOURCES[name].label) for name in views.RUN_RESOURCES)]
    assert mixed.index("training time covers") == max(resources) + 1
    imported = list(views.runs_table(paper.assign(train_time_scope=["last-epoch", None, None, None])).columns)
    assert imported.index("training time covers") == max(resources) + 1  # an import records no scope


def test_the_papers_training_times_are_headed_per_epoch():
    """The paper's train_time is its last epoch's: a budget on "Training time (s)" read 11 s as a
    whole run of 10 epochs. Where every run says so, the unit says per epoch; elsewhere not."""
    paper = CRAFTED.assign(train_time_s=[30.0, 20.0, 11.4, 15.0], train_time_scope="last-epoch")
    view = view_of(paper, caps={"train_time": 12.0})
    assert view.units["train_time"] == ("s per epoch", 1.0)
    assert "Training time (s per epoch)" in views.readable_table(view.models, view.units, {}).columns
    reasons = view.budget[1].set_index("model")["reason"]
    assert reasons["mid"] == "Training time 20 s per epoch > 12 s per epoch"
    assert view_of(paper.assign(train_time_scope="run")).units["train_time"] == ("s", 1.0)
    mixed = paper.assign(train_time_scope=["last-epoch", "run", "last-epoch", "last-epoch"])
    assert view_of(mixed).units["train_time"] == ("s", 1.0)


def test_models_alike_in_mean_pepr_share_their_rank():
    """Ranks by model as the CLI ranks runs: ties share the smaller rank (not 1 and 2 by name)."""
    from pepr.score import by_model

    table = pd.DataFrame({"model": ["b", "a", "c"], "experiment": "x", "performance": [0.8, 0.8, 0.9],
                          "pepr": [0.5, 0.5, 0.4], "resource": [0.6, 0.6, 1.25]})
    models = by_model(table).set_index("model")
    assert models["rank"].to_dict() == {"a": 1, "b": 1, "c": 3}
    assert models["perf_rank"].to_dict() == {"a": 2, "b": 2, "c": 1}


def test_budget_caps_in_readable_units():
    small = CRAFTED.assign(energy_kwh=CRAFTED["energy_kwh"] * 3e-5 / 5)  # 60, 30, 6, 30 mWh
    view = view_of(small, caps={"energy": 3e-5, "gpu_memory": 10.0})
    feasible, excluded = view.budget
    assert view.units["energy"] == ("mWh", 1e-6)
    assert list(feasible["model"]) == ["tiny", "mid"]  # 30 mWh is within a 30 mWh cap
    reasons = dict(zip(excluded["model"], excluded["reason"]))
    assert reasons == {"big": "Training energy 60 mWh > 30 mWh", "odd": "GPU memory reserved: not measured"}


def test_baseline_shows_moved_entered_and_left():
    runs = frame([{"experiment": "e", "model": f"m{i}", "performance": p, "energy_kwh": e, "gpu_mem_reserved_gb": g}
                  for i, (p, e, g) in enumerate([(0.9, 1, 9), (0.8, 2, 1), (0.95, 9, 2), (0.5, 1, 1), (0.7, 5, 5)])])
    # baseline PePR-E: m0 0.9, m1 0.8/1.125=0.711, m3 0.5, m4 0.7/1.5=0.467, m2 0.95/2=0.475
    # now memory only: m1 0.8, m3 0.5, m2 0.95/1.125=0.844, m4 0.7/1.5=0.467, m0 0.9/2=0.45
    view = view_of(runs, weights={"gpu_memory": 1.0}, top_k=3)
    changes = view.baseline.set_index("model")
    assert changes["change"].to_dict() == {"m2": "entered", "m1": "same", "m3": "same", "m0": "left"}
    assert changes.loc["m2", "pinned rank"] == 4 and changes.loc["m0", "rank now"] == 5
    moved = view_of(runs, weights={"gpu_memory": 1.0}, top_k=5).baseline.set_index("model")["change"]
    assert moved.to_dict() == {"m2": "up 3", "m1": "same", "m3": "same", "m4": "up 1", "m0": "down 4"}


def test_the_baseline_scores_runs_the_current_weights_cannot():
    runs = frame([{"experiment": "e", "model": f"m{i}", "performance": p, "energy_kwh": e, "gpu_mem_reserved_gb": g}
                  for i, (p, e, g) in enumerate([(0.9, 1, None), (0.8, 2, 1), (0.7, 3, 2)])])
    view = view_of(runs, weights={"gpu_memory": 1.0}, baseline_weights={"energy": 1.0}, top_k=1)
    assert "m0" not in set(view.models["model"])  # no memory recorded: not scored now
    changes = view.baseline.set_index("model")
    assert changes.loc["m0", "change"] == "left" and changes.loc["m0", "pinned rank"] == 1
    assert pd.isna(changes.loc["m0", "rank now"]) and changes.loc["m1", "change"] == "entered"


def test_the_dashboards_report_is_the_clis_with_the_runs_it_could_not_score(crafted_db):
    from pepr.report import build_report
    from pepr.store import RunStore

    runs = RunStore(crafted_db).runs()
    view = views.build_view(runs, EPOCHS, Controls(experiments=("exp",), metric="accuracy", weights={"energy": 1.0}))
    report = build_report(view.in_scope, "exp", view.weights).markdown
    assert report == build_report(runs, "exp", {"energy": 1.0}).markdown  # what `pepr report` writes
    assert "- Not scored: 1 run(s), broken: status failed; 1 run(s), halted: status interrupted." in report


def test_a_baseline_equal_to_the_current_choices_shows_no_change():
    runs = frame([{"experiment": "e", "model": f"m{i}", "performance": p, "energy_kwh": e}
                  for i, (p, e) in enumerate([(0.9, 1), (0.8, 2), (0.95, 9), (0.5, 1)])])
    view = view_of(runs, weights={"energy": 2.0}, baseline_weights={"energy": 1.0}, top_k=3)
    changes = view.baseline.set_index("model")
    assert set(changes["change"]) == {"same"} and list(changes.index) == ["m0", "m1", "m3"]
    assert (changes["pinned rank"] == changes["rank now"]).all()


def test_sensitivity_needs_two_weights():
    assert view_of(CRAFTED).sensitivity is None
    table = view_of(CRAFTED.dropna(subset=["gpu_mem_reserved_gb"]), weights={"energy": 0.5, "gpu_memory": 0.5}, samples=200).sensitivity
    assert table.set_index("model").loc["tiny", "p_first"] == 1.0 and len(table) == 3


def test_curve_runs_fall_back_to_the_top_three_in_a_new_database():
    view = view_of(CRAFTED, curve_runs=("gone-1", "gone-2"))
    assert view.curve_runs() == ["e-tiny", "e-mid", "e-big"]
    assert view_of(CRAFTED, curve_runs=("e-big",)).curve_runs() == ["e-big"]


def test_provenance_lines():
    paper = frame([{"experiment": "e", "model": "x", "performance": 0.5, "energy_kwh": 1.0, "provenance": "Selvan et al."}])
    agent = paper.assign(provenance=None, energy_tool="codecarbon", pue=1.0, device="cpu", train_time_scope="run")
    assert views.provenance(paper) == ["Selvan et al."]
    assert views.provenance(agent) == ["Measured by the pepr agent with codecarbon, PUE 1, on cpu; training time covers the whole run"]


# -- comparisons ------------------------------------------------------------------------------


def paired_study() -> pd.DataFrame:
    """Three models in four experiments, as the paper's Derma: pretrained, from scratch, 10%
    (pretraining not recorded) and an unknown fraction."""
    rows = []
    for e, pretrained, fraction, gain in [("pt", True, 1.0, 0.3), ("scratch", False, 1.0, 0.0),
                                          ("small", None, 0.1, 0.1), ("smallest", None, None, 0.05)]:
        for i, m in enumerate(["m0", "m1", "m2", "m3", "m4"]):
            rows.append({"experiment": e, "model": m, "pretrained": pretrained, "train_fraction": fraction,
                         "performance": 0.5 + gain + 0.01 * i, "energy_kwh": 1.0 + i + (0.5 if pretrained else 0), "params": 10 ** (6 + i % 3)})
    runs = frame(rows)
    runs["pretrained"] = runs["pretrained"].astype("boolean")
    return runs


def test_comparisons_pair_by_model_name_left_out_and_show_costs():
    view = view_of(paired_study(), experiments=("pt",))
    by_title = {c.title: c for c in view.comparisons}
    assert list(by_title)[:1] == ["Pretrained vs from scratch: d, full data"]
    assert not any(t.startswith("Full vs reduced") for t in by_title)  # no full/reduced pair of known pretraining
    pre = by_title["Pretrained vs from scratch: d, full data"]
    assert set(pre.frame["experiment"]) == {"pt", "scratch"}
    assert pre.left_out == ["small (pretraining not recorded)", "smallest (pretraining not recorded)"]
    stats = pre.stats.set_index("measure")
    assert stats.loc["performance", "pairs"] == 5
    assert stats.loc["performance", "median_diff"] == pytest.approx(0.3)
    # every pair differs by exactly 0.3: the paired t-test is undefined-free, Wilcoxon exact
    assert stats.loc["performance", "wilcoxon_p"] == pytest.approx(0.0625)
    assert stats.loc["performance", "student_p"] is not None
    costs = pre.costs.set_index("group")
    assert "median training time per run" not in costs  # not recorded
    assert costs.loc["pretrained", "median energy per run"] == "3.5 kWh"
    timed = view_of(paired_study().assign(train_time_s=30.0, train_time_scope="last-epoch"), experiments=("pt",))
    costs = timed.comparisons[0].costs.set_index("group")  # as the paper's CSV records it: one epoch
    assert costs.loc["pretrained", "median training time per run (last epoch only)"] == "30 s"
    assert costs.loc["pretrained", "total training time (last epoch only)"] == "2.5 min"
    assert costs.loc["from scratch", "total energy"] == "15 kWh"
    energy = stats.loc[f"energy ({view.units['energy'][0]})"]  # medians in the unit named
    pre_energy = pre.frame[pre.frame["experiment"] == "pt"]["energy_kwh"].median()
    assert energy["median_a"] * view.units["energy"][1] == pytest.approx(pre_energy)
    small = next(c for c in view.comparisons if c.title.startswith("Small vs large"))
    assert not small.paired and set(small.frame["experiment"]) == {"pt"}


def test_comparisons_say_why_imported_runs_without_a_fraction_pair_nothing():
    runs = paired_study()
    runs = runs[runs["experiment"].isin(["pt", "scratch"])].assign(train_fraction=None)  # an import's
    failed = runs[runs["experiment"] == "pt"].assign(experiment="crashed", status="failed", run_id=lambda f: "x" + f["run_id"])
    runs = pd.concat([runs, failed], ignore_index=True)  # no scored run: not said to lack a fraction
    runs["pretrained"] = runs["pretrained"].astype("boolean")
    view = view_of(runs, experiments=("pt",))
    assert not any(c.title.startswith("Pretrained") for c in view.comparisons)
    why = "pt (training-data fraction not recorded), scratch (training-data fraction not recorded)."
    assert view.uncompared == [f"Pretrained vs from scratch: none, as {why}", f"Full vs reduced training data: none, as {why}"]
    assert view_of(paired_study(), experiments=("pt",)).uncompared == [  # pretrained vs scratch pairs: not named
        "Full vs reduced training data: none, as small (pretraining not recorded), smallest (training-data fraction not recorded)."]


def test_a_size_threshold_with_every_model_on_one_side_is_said():
    """The small-vs-large comparison vanished, unsaid, at a threshold below the smallest model."""
    only_pt = paired_study().query("experiment == 'pt'")  # models of 1M, 10M and 100M parameters
    below = view_of(only_pt, experiments=("pt",), threshold_m=0.001)
    assert not below.comparisons
    assert below.uncompared == ["Small vs large models: none, as every model of known size has more than 1k parameters "
                                "(the size threshold)."]
    above = view_of(only_pt, experiments=("pt",), threshold_m=1e6)
    assert above.uncompared == ["Small vs large models: none, as every model of known size has at most 1T parameters "
                                "(the size threshold)."]
    assert view_of(only_pt, experiments=("pt",), threshold_m=10.0).uncompared == []


def test_comparisons_exist_only_where_pairs_do():
    runs = paired_study()
    only_pt = runs[runs["experiment"] == "pt"]
    titles = [c.title for c in view_of(only_pt, experiments=("pt",)).comparisons]
    assert titles == ["Small vs large models (threshold 10M parameters)"]
    full = runs.assign(pretrained=runs["pretrained"].fillna(True))
    titles = [c.title for c in view_of(full, experiments=("pt",)).comparisons]
    assert titles[:2] == ["Pretrained vs from scratch: d, full data", "Full vs reduced training data: d, pretrained, reduced to 0.1"]
    reduced = next(c for c in view_of(full, experiments=("pt",)).comparisons if c.title.startswith("Full"))
    assert reduced.left_out == ["smallest (training-data fraction not recorded)", "scratch (no counterpart on the other side)"]


def test_comparisons_test_each_dataset_on_model_means_and_name_the_unpaired():
    """Two datasets whose reduced data moved performance opposite ways were pooled into one
    test, which found nothing; two seeds of a model counted as two samples; a model with no
    counterpart was dropped from the paired tests without a word."""
    rows = []
    for dataset, sign in (("lidc", 1), ("pneumonia", -1)):
        for fraction in (1.0, 0.1):
            for i, model in enumerate(["m0", "m1", "m2", "m3", "m4", "m5"]):
                if dataset == "pneumonia" and fraction == 0.1 and model == "m5":
                    continue  # its reduced-data run is missing
                for seed in (0, 1):
                    gain = 0.1 * sign if fraction == 1.0 else 0.0
                    experiment = f"{dataset}{'' if fraction == 1 else '_small'}"
                    rows.append({"experiment": experiment, "run_id": f"{experiment}-{model}-{seed}", "dataset": dataset,
                                 "model": model, "seed": seed, "pretrained": False, "train_fraction": fraction,
                                 "performance": 0.6 + gain + 0.01 * i + 0.001 * seed, "energy_kwh": 1.0 + i})
    rows.append({**rows[0], "experiment": "other", "run_id": "o1", "dataset": "other"})  # full data only
    runs = frame(rows)
    runs["pretrained"] = runs["pretrained"].astype("boolean")
    found = {c.title: c for c in view_of(runs, experiments=("lidc",)).comparisons if c.title.startswith("Full")}
    assert list(found) == ["Full vs reduced training data: lidc, from scratch, reduced to 0.1",
                           "Full vs reduced training data: pneumonia, from scratch, reduced to 0.1"]
    lidc, pneumonia = (found[t].stats.set_index("measure").loc["performance"] for t in found)
    assert (lidc["n_a"], lidc["n_b"], lidc["pairs"]) == (6, 6, 6)  # models, not their 12 runs
    assert lidc["median_diff"] == pytest.approx(0.1) and pneumonia["median_diff"] == pytest.approx(-0.1)
    assert lidc["wilcoxon_p"] < 0.05 and pneumonia["wilcoxon_p"] < 0.1
    assert (pneumonia["n_a"], pneumonia["n_b"], pneumonia["pairs"]) == (6, 5, 5)
    # Holm over the page's sound tests: each comparison's Wilcoxon p per measure, all at once.
    every = view_of(runs, experiments=("lidc",)).comparisons
    sound = [(c.title, m, p) for c in every for m, p in zip(c.stats["measure"], c.stats["wilcoxon_p" if c.paired else "mannwhitney_p"])]
    known = sorted((p, t, m) for t, m, p in sound if p is not None and p == p)
    expected, floor = {}, 0.0
    for rank, (p, title, measure) in enumerate(known):
        floor = max(floor, min(1.0, (len(known) - rank) * p))
        expected[title, measure] = floor
    shown = {(c.title, m): p for c in every for m, p in zip(c.stats["measure"], c.stats["holm_p"]) if p is not None and p == p}
    assert len(known) >= 4 and shown == pytest.approx(expected)
    assert lidc["holm_p"] > lidc["wilcoxon_p"]  # several tests: each p counts for less
    assert found["Full vs reduced training data: pneumonia, from scratch, reduced to 0.1"].one_side == ["m5"]
    assert found["Full vs reduced training data: lidc, from scratch, reduced to 0.1"].one_side == []
    assert [c.left_out for c in found.values()] == [["other (no counterpart on the other side)"], []]  # said once
    half = frame([{**row, "experiment": row["experiment"] + "_half", "run_id": row["run_id"] + "-half",
                   "train_fraction": 0.5, "performance": row["performance"] - 0.2}
                  for row in rows if row["dataset"] == "lidc" and row["train_fraction"] == 0.1])
    half["pretrained"] = half["pretrained"].astype("boolean")
    found = {c.title: c for c in view_of(pd.concat([runs, half], ignore_index=True), experiments=("lidc",)).comparisons
             if c.title.startswith("Full vs reduced training data: lidc")}
    assert list(found) == ["Full vs reduced training data: lidc, from scratch, reduced to 0.5",
                           "Full vs reduced training data: lidc, from scratch, reduced to 0.1"]  # never one mean of both
    medians = [c.stats.set_index("measure").loc["performance", "median_diff"] for c in found.values()]
    assert medians == [pytest.approx(0.3), pytest.approx(0.1)]


# -- curves, estimates, sensitivity -------------------------------------------------------


def test_best_validation_performance_and_estimates():
    runs = pd.DataFrame({"run_id": ["a", "b"], "performance": [0.9, 0.8]})
    epochs = pd.DataFrame(
        {"run_id": ["a", "a", "a"], "epoch": [1, 2, 3], "val_metric": [0.5, 0.9, 0.9], "test_metric": [0.4, 0.7, 0.8]}
    )
    out = views.with_best_validation(runs, epochs)
    assert out["performance"].iloc[0] == 0.7 and pd.isna(out["performance"].iloc[1])
    parts = pd.DataFrame(
        {
            "energy_kwh": [1.0, 2.0, 1.0, 1.0],
            "energy_cpu_method": ["rapl", "tdp-estimate", "imported", "cpu-load-estimate"],
            "energy_cpu_kwh": [0.2, 0.5, None, None],
            "energy_gpu_method": ["gpu-energy-counter", "none", "imported", "none"],
            "energy_gpu_kwh": [0.7, 0.0, None, 0.0],
            "energy_ram_method": ["ram-estimate", "ram-estimate", "imported", "ram-estimate"],
            "energy_ram_kwh": [0.1, 0.3, None, 0.2],
        }
    )
    shares = views.estimated_share(parts)
    assert shares.iloc[:3].tolist() == pytest.approx([0.1, 0.4, 0.0])
    assert pd.isna(shares.iloc[3])  # an estimated part of unknown size


def test_curves_peak_where_pepr_is_highest():
    runs = pd.DataFrame({"run_id": ["a"], "model": ["m"], "experiment": ["e"], "seed": [3]})
    epochs = pd.DataFrame(
        {"run_id": "a", "epoch": [1, 2, 3], "test_metric": [0.5, 0.9, 0.92], "val_metric": None,
         "cum_energy_kwh": [1.0, 2.0, 3.0]}
    )
    lines, peaks = views.curves(runs, epochs, "cum_energy_kwh", "max", 1.0)
    # PePR = P / (1 + E/3): 0.375, 0.54, 0.46 -> epoch 2
    assert np.allclose(lines["pepr"], [0.5 / (4 / 3), 0.9 / (5 / 3), 0.92 / 2])
    assert peaks["epoch"].tolist() == [2] and peaks["label"].tolist() == ["m · e · seed 3"]


def test_samples_centre_on_the_weights():
    samples = sample_weights({"energy": 3, "co2": 1, "params": 0}, n=4000, concentration=50, seed=1)
    assert list(samples.columns) == ["energy", "co2"]
    assert np.allclose(samples.sum(axis=1), 1.0)
    assert samples.mean().to_dict() == pytest.approx({"energy": 0.75, "co2": 0.25}, abs=0.01)
    tight = sample_weights({"energy": 3, "co2": 1}, n=4000, concentration=500, seed=1)
    assert tight["energy"].std() < samples["energy"].std()
    assert (sample_weights({"energy": 1}, n=3) == 1).all().all()
    with pytest.raises(PeprError):
        sample_weights({"energy": 0})


def test_rank_stability_reflects_who_wins_where():
    # a is cheap in energy, b is cheap in CO2; equal performance.
    table = score(frame([{"experiment": "e", "model": m, "performance": p, "energy_kwh": e, "co2_kg": c}
                         for m, p, e, c in [("a", 0.9, 1.0, 2.0), ("b", 0.9, 2.0, 1.0), ("c", 0.5, 2.0, 2.0)]]),
                  {"energy": 1, "co2": 1}).table
    mostly_energy = sample_weights({"energy": 0.9, "co2": 0.1}, n=500, concentration=100)
    result = rank_stability(table, mostly_energy, top=2).set_index("model")
    assert result.loc["a", "p_first"] > 0.95 and result.loc["c", "p_first"] == 0
    assert result["p_first"].sum() == pytest.approx(1.0)
    assert result.loc["a", "p_top2"] == 1.0 and result.loc["c", "p_top2"] == 0.0
    balanced = rank_stability(table, sample_weights({"energy": 1, "co2": 1}, n=2000, concentration=20))
    assert balanced.set_index("model").loc["a", "p_first"] == pytest.approx(0.5, abs=0.05)


def test_kendall_tau():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1], [1]) is None and kendall_tau([1, 1], [1, 2]) is None


def test_a_cap_on_a_resource_measured_for_no_model_excludes_nothing():
    """A link's latency cap on a database without benchmarks must not hide every model; a
    model that alone lacks a capped resource is still excluded, with why."""
    models = pd.DataFrame({"model": ["a", "b"], "energy_kwh": [0.01, None]})
    units = {"energy": ("kWh", 1.0)}
    feasible, excluded = views.budget(models, {"infer_latency": 0.05}, units)
    assert list(feasible["model"]) == ["a", "b"] and excluded.empty
    feasible, excluded = views.budget(models, {"energy": 1.0}, units)
    assert list(feasible["model"]) == ["a"] and list(excluded["reason"]) == ["Training energy: not measured"]


@pytest.mark.parametrize("ratio, said", [(16.0, "16× less energy"), (1.02, "about as much energy"),
                                         (0.97, "about as much energy"), (0.5, "2× more energy")])
def test_the_headline_says_how_much_less_or_more_the_top_model_uses(ratio, said):
    from dashboard.app_pages.explorer import _times

    assert _times(ratio, "energy") == said  # 1.02 read "1× less energy"
