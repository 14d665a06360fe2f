"""`pepr import`: any results table (CSV, Parquet, JSON lines), CodeCarbon's emissions.csv,
exact units, stable ids, and one line per mistake with nothing written."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import logging
import threading

import pandas as pd
import pytest

from pepr.cli import main
from pepr.errors import PeprError
from pepr.importer import ColumnMap, convert, load_emissions, parse_table, preview, read_table
from pepr.store import RunStore

# One row per model; the first row's values have hand-computed conversions below.
TABLE = {
    "name": ["resnet18", "vit_tiny"],
    "acc_pct": [87.5, 80.0],
    "acc": [0.875, 0.8],
    "e_J": [7200.0, 3600.0],
    "e_Wh": [1500.0, 20.0],
    "e_kWh": [0.25, 0.5],
    "c_g": [125.0, 10.0],
    "c_kg": [0.5, 0.1],
    "t_s": [90.0, 30.0],
    "t_min": [2.5, 1.0],
    "t_h": [1.5, 0.5],
    "m_B": [2_000_000_000, 1_000_000_000],
    "m_MB": [1536.0, 512.0],
    "m_MiB": [512.0, 256.0],
    "m_GB": [3.0, 1.0],
    "m_GiB": [2.0, 1.0],
    "n_params": [11_689_512, 5_717_416],
    "seed": [0, 1],
    "pretrained": ["yes", "no"],
    "dataset": ["cifar10", "cifar10"],
}
# (field, column, unit, the first row's value in the store's unit, computed by hand)
UNITS = [
    ("performance", "acc_pct", "%", 0.875),
    ("performance", "acc", "fraction", 0.875),
    ("performance", "acc", None, 0.875),
    ("energy", "e_J", "J", 0.002),  # 7200 J / 3.6e6 J/kWh
    ("energy", "e_Wh", "Wh", 1.5),
    ("energy", "e_kWh", "kWh", 0.25),
    ("energy", "e_kWh", None, 0.25),
    ("energy_cpu", "e_Wh", "Wh", 1.5),
    ("co2", "c_g", "g", 0.125),
    ("co2", "c_kg", "kg", 0.5),
    ("train_time", "t_s", "s", 90.0),
    ("train_time", "t_min", "min", 150.0),
    ("train_time", "t_h", "h", 5400.0),
    ("infer_time", "t_min", "min", 150.0),
    ("gpu_memory", "m_B", "B", 2.0),
    ("gpu_memory", "m_MB", "MB", 1.536),
    ("gpu_memory", "m_MiB", "MiB", 0.536870912),  # 512 * 2**20 bytes
    ("gpu_memory", "m_GB", "GB", 3.0),
    ("gpu_memory", "m_GiB", "GiB", 2.147483648),  # 2 * 2**30 bytes
]
COLUMN_OF = {"performance": "performance", "energy": "energy_kwh", "energy_cpu": "energy_cpu_kwh",
             "co2": "co2_kg", "train_time": "train_time_s", "infer_time": "infer_time_s",
             "gpu_memory": "gpu_mem_reserved_gb"}
BASE = ["--map", "model=name", "--map", "performance=acc_pct:%"]


def write(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in frame.to_dict("records")))


@pytest.fixture(params=["csv", "parquet", "jsonl"])
def source(request, tmp_path):
    path = tmp_path / f"results.{request.param}"
    write(pd.DataFrame(TABLE), path)
    return path


def run(*argv) -> int:
    """`pepr ARGV...` in process; returns the exit code."""
    return main([str(a) for a in argv])


@pytest.mark.parametrize("command", ["import", "report"])
def test_help(command, capsys):
    assert main([command, "--help"]) == 0 and "--db" in capsys.readouterr().out


@pytest.mark.parametrize("field, column, unit, expected", UNITS)
def test_every_unit_converts_exactly(field, column, unit, expected, tmp_path):
    for fmt in ("csv", "parquet", "jsonl"):
        path = tmp_path / f"t.{fmt}"
        write(pd.DataFrame(TABLE), path)
        maps = [ColumnMap("model", "name")] + ([ColumnMap("performance", "acc")] if field != "performance" else [])
        result = convert(read_table(path), [*maps, ColumnMap(field, column, unit)], experiment="x")
        assert result.errors == []
        assert result.runs[COLUMN_OF[field]][0] == expected, (fmt, field, unit)


def test_import_stores_every_field_and_reimport_adds_nothing(source, tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    argv = [
        "import", source, "--db", db, "--experiment-name", "mine", "--map", "model=name",
        "--map", "performance=acc_pct:%", "--map", "energy=e_Wh:Wh", "--map", "co2=c_g:g",
        "--map", "train_time=t_min:min", "--map", "gpu_memory=m_MiB:MiB", "--map", "params=n_params",
        "--map", "seed=seed", "--map", "pretrained=pretrained", "--map", "dataset=dataset",
        "--energy-tool", "codecarbon", "--energy-method", "cpu=rapl,gpu=gpu-energy-counter",
    ]
    assert run(*argv) == 0
    assert capsys.readouterr().out.strip() == f"{db}: added 2 run(s)"
    assert run(*argv) == 0
    assert capsys.readouterr().out.strip() == f"{db}: added 0 run(s); 2 already there (same run_id and results), left as they were"
    runs = RunStore(db).runs().set_index("model")
    assert len(runs) == 2 and set(runs["experiment"]) == {"mine"}
    first = runs.loc["resnet18"]
    assert first["performance"] == 0.875 and first["energy_kwh"] == 1.5 and first["co2_kg"] == 0.125
    assert first["train_time_s"] == 150.0 and first["gpu_mem_reserved_gb"] == 0.536870912
    assert first["params"] == 11_689_512 and first["seed"] == 0 and first["dataset"] == "cifar10"
    assert bool(first["pretrained"]) and not bool(runs.loc["vit_tiny", "pretrained"])
    assert (first["source"], first["status"], first["energy_tool"]) == ("import", "ok", "codecarbon")
    assert (first["energy_cpu_method"], first["energy_gpu_method"], first["energy_ram_method"]) == (
        "rapl", "gpu-energy-counter", "imported")
    assert str(source) in first["provenance"] and "codecarbon" in first["provenance"]
    assert json.loads(first["config"])["origin"] == str(source)
    assert first["run_id"].startswith("import-") and runs["run_id"].nunique() == 2
    assert pd.isna(first["infer_time_s"])  # not mapped: not measured, never 0


def test_a_corrected_unit_is_refused_until_replace_is_given(tmp_path, capsys):
    """Run ids come from the rows' content, so a re-import after fixing a unit names the same
    runs with other values: refused with nothing written, then replaced on request."""
    source = tmp_path / "results.csv"
    write(pd.DataFrame(TABLE), source)
    db = tmp_path / "runs.duckdb"
    argv = ["import", source, "--db", db, "--experiment-name", "mine", *BASE]
    assert run(*argv, "--map", "energy=e_Wh:kWh") == 0  # the mistake: Wh read as kWh
    capsys.readouterr()
    before = db.read_bytes()
    assert run(*argv, "--map", "energy=e_Wh:Wh") == 2
    err = capsys.readouterr().err
    assert "is stored with other values (energy_kwh) (and 1 more run(s)); nothing imported" in err
    assert db.read_bytes() == before
    assert run(*argv, "--map", "energy=e_Wh:Wh", "--replace") == 0
    assert capsys.readouterr().out.strip() == f"{db}: added 0 run(s); replaced 2 stored with other values"
    assert RunStore(db).runs().set_index("model").loc["resnet18", "energy_kwh"] == 1.5


def test_a_replaced_run_keeps_nothing_of_the_stored_copy(tmp_path, capsys):
    """--replace wrote only the columns the new file maps: the old energy and time stayed beside
    the new file's provenance, and the next import was refused again, as if they differed."""
    db = tmp_path / "runs.duckdb"
    measured, bare = tmp_path / "measured.csv", tmp_path / "bare.csv"
    write(pd.DataFrame({"id": ["r1"], "model": ["resnet"], "acc": [0.9], "en": [5.0], "tt": [100.0]}), measured)
    write(pd.DataFrame({"id": ["r1"], "model": ["resnet"], "acc": [0.8]}), bare)
    maps = ["--map", "run_id=id", "--map", "model=model", "--map", "performance=acc", "--experiment-name", "e1"]
    assert run("import", measured, "--db", db, *maps, "--map", "energy=en", "--map", "train_time=tt") == 0
    assert run("import", bare, "--db", db, *maps, "--replace") == 0
    stored = RunStore(db).runs().iloc[0]
    assert stored["performance"] == 0.8 and "bare.csv" in stored["provenance"]
    assert pd.isna(stored["energy_kwh"]) and pd.isna(stored["train_time_s"])  # not in bare.csv: not measured
    capsys.readouterr()
    assert run("import", bare, "--db", db, *maps) == 0  # the same copy again: left as it was
    assert "1 already there (same run_id and results), left as they were" in capsys.readouterr().out


def test_the_training_data_fraction_is_imported_as_the_comparisons_pair_runs(tmp_path):
    path = tmp_path / "r.csv"
    write(pd.DataFrame(TABLE), path)
    db = tmp_path / "runs.duckdb"
    assert run("import", path, "--db", db, *BASE, "--experiment-name", "x", "--map", "train_fraction=acc_pct:%",
               "--map", "pretrained=pretrained") == 0
    runs = RunStore(db).runs().set_index("model")
    assert runs["train_fraction"].to_dict() == {"resnet18": 0.875, "vit_tiny": 0.8}


def test_run_ids_come_from_the_table_when_mapped(tmp_path):
    path = tmp_path / "r.csv"
    write(pd.DataFrame(TABLE).assign(run=["w1", "w2"]), path)
    result = convert(read_table(path), [ColumnMap("model", "name"), ColumnMap("performance", "acc"),
                                        ColumnMap("run_id", "run")], experiment="x")
    assert list(result.runs["run_id"]) == ["w1", "w2"]


def test_an_empty_run_id_is_refused_when_run_ids_are_mapped(tmp_path):
    """The row was dropped, and still counted as added."""
    path = tmp_path / "r.csv"
    path.write_text("run,name,acc\nw1,a,0.8\n,b,0.9\n")
    result = convert(read_table(path), [ColumnMap("model", "name"), ColumnMap("performance", "acc"),
                                        ColumnMap("run_id", "run")], experiment="x")
    assert result.errors == [f"{path}, row 3, column run: empty (run_id is mapped, so every run needs one)"]


def test_content_ids_are_stable_and_tell_rows_apart(tmp_path):
    path = tmp_path / "r.csv"
    write(pd.DataFrame(TABLE), path)
    maps = [ColumnMap("model", "name"), ColumnMap("performance", "acc")]
    once = convert(read_table(path), maps, experiment="x").runs["run_id"]
    again = convert(read_table(path), maps, experiment="x").runs["run_id"]
    other = convert(read_table(path), maps, experiment="y").runs["run_id"]
    assert list(once) == list(again) and once.nunique() == 2
    assert set(once).isdisjoint(other)  # the same row in another experiment is another run


def test_a_re_export_of_the_same_results_adds_nothing(tmp_path, capsys):
    """91.50 for 91.5, 120.0 for 120 or an empty column more gave new ids: the runs were
    added again and counted twice; a corrected unit keeps the id, so it is named, not added."""
    db, maps = tmp_path / "d.duckdb", ["--map", "model=arch", "--map", "performance=acc:%", "--map", "energy=e:Wh"]
    exports = {"first": "arch,acc,e\nresnet,91.5,120\nvit,93,400\n",
               "reformatted": "arch,acc,e\r\nresnet,91.50,120.0\r\nvit,93.0,4e2\r\n",
               "wider": "notes,e,arch,acc\n,120,resnet,91.5\n,400,vit,93\n",
               "semicolons": "arch;acc;e\nresnet;91,50;120\nvit;93;400,0\n"}  # another locale's export
    for name, text in exports.items():
        (tmp_path / f"{name}.csv").write_text(text)
        assert run("import", tmp_path / f"{name}.csv", "--db", db, *maps, "--experiment-name", "x") == 0
    assert capsys.readouterr().out.splitlines()[1:] == [f"{db}: added 0 run(s); 2 already there (same run_id "
                                                        "and results), left as they were"] * 3
    assert len(RunStore(db).runs()) == 2
    assert run("import", tmp_path / "first.csv", "--db", db, *maps[:4], "--map", "energy=e:J",
               "--experiment-name", "x") == 2  # the unit corrected: the same runs, other values
    assert "is stored with other values (energy_kwh)" in capsys.readouterr().err
    # The same value in another unit is the same result (98.659 / 100 is 0.9865900000000001 in floats).
    (tmp_path / "percent.csv").write_text("run,arch,acc\nr1,m,98.659\n")
    (tmp_path / "fraction.csv").write_text("run,arch,acc\nr1,m,0.98659\n")
    for name, unit in (("percent", ":%"), ("fraction", "")):
        assert run("import", tmp_path / f"{name}.csv", "--db", db, "--map", "run_id=run", "--map", "model=arch",
                   "--map", f"performance=acc{unit}", "--experiment-name", "y") == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("added 0 run(s); 1 already there (same run_id and "
                                                             "results), left as they were")
    (tmp_path / "steps.csv").write_text("arch,acc,e,step\nm,90,1,12345678901234567\nm,90,1,12345678901234568\n")
    assert run("import", tmp_path / "steps.csv", "--db", db, *maps, "--experiment-name", "z") == 0  # not one float
    assert "added 2 run(s)" in capsys.readouterr().out
    (tmp_path / "dates.csv").write_text("arch,acc,e,day\nm,90,1,12/06\nm,90,1,24/12\nm,90,1,06/03\n")
    assert run("import", tmp_path / "dates.csv", "--db", db, *maps, "--experiment-name", "d") == 0  # not 2 = 2
    assert "added 3 run(s)" in capsys.readouterr().out
    (tmp_path / "twice.csv").write_text("arch,acc,e\nresnet,91.5,120\nresnet,91.50,120\n")
    assert run("import", tmp_path / "twice.csv", "--db", db, *maps, "--experiment-name", "x") == 2
    assert "row 3, column (whole row): repeats row 2" in capsys.readouterr().err


def test_a_corrected_result_is_the_same_run_named_not_added(tmp_path, capsys):
    """The id came from every cell, results too: a typo corrected in a lab's sheet and imported
    again, even with --replace, added a second run of the model, scored beside the first."""
    db, maps = tmp_path / "d.duckdb", ["--map", "model=arch", "--map", "performance=acc:%", "--map", "energy=e:Wh",
                                       "--experiment-name", "x"]
    sheet = tmp_path / "lab.csv"
    sheet.write_text("arch,seed,acc,e\nresnet,0,91.5,152.4\nresnet,1,91.9,150\nvit,0,93,400\n")
    assert run("import", sheet, "--db", db, *maps) == 0
    ids = RunStore(db).runs().set_index(["model", "energy_kwh"])["run_id"]
    sheet.write_text("arch,seed,acc,e\nresnet,0,91.5,1524\nresnet,1,91.9,150\nvit,0,93,400\n")
    capsys.readouterr()
    assert run("import", sheet, "--db", db, *maps) == 2
    assert "is stored with other values (energy_kwh)" in capsys.readouterr().err
    assert run("import", sheet, "--db", db, *maps, "--replace") == 0
    assert "added 0 run(s)" in capsys.readouterr().out
    runs = RunStore(db).runs().set_index("run_id")
    assert len(runs) == 3 and runs.loc[ids[("resnet", 0.1524)], "energy_kwh"] == pytest.approx(1.524)


def test_rows_alike_but_for_their_results_are_runs_in_their_order(tmp_path, capsys):
    """Repeats with no seed column: each its own run, kept apart by their order among
    themselves, so a corrected one is still named, not added."""
    db, maps = tmp_path / "d.duckdb", ["--map", "model=arch", "--map", "performance=acc", "--experiment-name", "x"]
    sheet = tmp_path / "repeats.csv"
    sheet.write_text("arch,acc\nresnet,0.91\nresnet,0.92\nvit,0.93\n")
    assert run("import", sheet, "--db", db, *maps) == 0
    assert run("import", sheet, "--db", db, *maps) == 0
    assert "added 0 run(s); 3 already there" in capsys.readouterr().out
    sheet.write_text("arch,acc\nresnet,0.91\nresnet,0.95\nvit,0.93\n")
    assert run("import", sheet, "--db", db, *maps, "--replace") == 0
    assert sorted(RunStore(db).runs()["performance"]) == [0.91, 0.93, 0.95]
    # Training data and model size tell runs apart: a run inserted between two is added alone.
    sized = [*maps[:-2], "--map", "train_size=n", "--map", "params=p", "--experiment-name", "sized"]
    sheet.write_text("arch,n,p,acc\nresnet,1000,11,0.8\nresnet,4000,11,0.9\n")
    assert run("import", sheet, "--db", db, *sized) == 0
    sheet.write_text("arch,n,p,acc\nresnet,1000,11,0.8\nresnet,2000,11,0.85\nresnet,4000,11,0.9\n")
    assert run("import", sheet, "--db", db, *sized) == 0
    assert "added 1 run(s); 2 already there" in capsys.readouterr().out.splitlines()[-1]


# The ids earlier pepr versions gave the file's two rows: from every cell's raw text (empty ones
# too), then from every cell in one spelling of its number (91.50 is 183/2; empty ones left out).
EARLIER_ROWS = {
    "raw text": {"resnet18": {"model": "resnet18", "acc": "91.50", "energy_wh": "120", "notes": ""},
                 "vit_tiny": {"model": "vit_tiny", "acc": "88.2", "energy_wh": "80", "notes": "ok"}},
    "every cell": {"resnet18": {"model": "resnet18", "acc": "183/2", "energy_wh": "120"},
                   "vit_tiny": {"model": "vit_tiny", "acc": "441/5", "energy_wh": "80", "notes": "ok"}},
}


@pytest.mark.parametrize("scheme", EARLIER_ROWS)
def test_a_database_with_earlier_ids_is_not_imported_into_twice_and_takes_todays(tmp_path, capsys, scheme):
    """The same file imported again into a database of an earlier version was added a second
    time; matched by its old id, a run takes today's, so a result corrected later is its own."""
    import hashlib

    import duckdb

    path, db = tmp_path / "runs.csv", tmp_path / "d.duckdb"
    path.write_text("model,acc,energy_wh,notes\nresnet18,91.50,120,\nvit_tiny,88.2,80,ok\n")
    maps = ["--map", "model=model", "--map", "performance=acc:%", "--map", "energy=energy_wh:Wh", "--experiment-name", "x"]
    assert run("import", path, "--db", db, *maps) == 0
    today = set(RunStore(db).runs()["run_id"])

    def then(row: dict) -> str:
        text = json.dumps({**row, "experiment": "x"}, sort_keys=True, separators=(",", ":"))
        return "import-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    with duckdb.connect(str(db)) as con:  # as a database of that time holds them
        for model, row in EARLIER_ROWS[scheme].items():
            con.execute("UPDATE runs SET run_id = ? WHERE model = ?", [then(row), model])
    capsys.readouterr()
    assert run("import", path, "--db", db, *maps) == 0
    assert "added 0 run(s); 2 already there" in capsys.readouterr().out
    assert set(RunStore(db).runs()["run_id"]) == today
    path.write_text("model,acc,energy_wh,notes\nresnet18,91.50,1200,\nvit_tiny,88.2,80,ok\n")  # a typo mended
    assert run("import", path, "--db", db, *maps, "--replace") == 0
    runs = RunStore(db).runs()
    assert len(runs) == 2 and runs.set_index("model").loc["resnet18", "energy_kwh"] == pytest.approx(1.2)


def test_a_name_in_two_unicode_spellings_is_one_model(tmp_path, capsys):
    """Ü as one character (NFC) and as U with a combining diaeresis (NFD, as macOS may write
    it) became two models that look alike, each ranked; and the same run imported again."""
    db = tmp_path / "d.duckdb"
    maps = ["--map", "model=arch", "--map", "seed=seed", "--map", "performance=acc", "--experiment-name", "M\u00fcnchen"]
    (tmp_path / "a.csv").write_text("arch,seed,acc\n\u00dcnet,0,0.9\n\u00dcnet,1,0.8\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("arch,seed,acc\nU\u0308net,0,0.9\nU\u0308net,1,0.8\n", encoding="utf-8")
    assert run("import", tmp_path / "a.csv", "--db", db, *maps) == 0
    nfd = [*maps[:-1], "Mu\u0308nchen"]
    assert run("import", tmp_path / "b.csv", "--db", db, *nfd) == 0
    assert "added 0 run(s); 2 already there" in capsys.readouterr().out
    runs = RunStore(db).runs()
    assert set(runs["model"]) == {"\u00dcnet"} and set(runs["experiment"]) == {"M\u00fcnchen"}
    (tmp_path / "keyed.csv").write_text("run,arch,acc\nru\u0308n1,U\u0308net,0.9\n", encoding="utf-8")
    assert run("import", tmp_path / "keyed.csv", "--db", db, "--map", "run_id=run", *maps[:2], *maps[4:]) == 0
    assert "ru\u0308n1" in set(RunStore(db).runs()["run_id"])  # a run id is another system's key: as written


def test_a_spreadsheets_total_row_is_refused_and_its_empty_rows_skipped(tmp_path, capsys):
    """A TOTAL row was imported as a model, the dearest of all, setting every other run's R; and
    the rows of bare commas a spreadsheet exports were refused as empty models."""
    db, maps = tmp_path / "d.duckdb", ["--map", "model=arch", "--map", "performance=acc", "--map", "energy=e",
                                       "--experiment-name", "x"]
    (tmp_path / "first.csv").write_text("arch,acc,e\nresnet,0.9,1\n")
    assert run("import", tmp_path / "first.csv", "--db", db, *maps) == 0
    before = db.read_bytes()
    (tmp_path / "sheet.csv").write_text("arch,acc,e\nvit,0.93,4\nmlp,0.8,2\n,,\n  ,,\nTotal:,0.9,7\n,,\n")
    capsys.readouterr()
    assert run("import", tmp_path / "sheet.csv", "--db", db, *maps) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sheet.csv, row 6, column arch: 'Total:' looks like a summary row, not a run" in err
    assert db.read_bytes() == before
    (tmp_path / "sheet.csv").write_text("arch,acc,e\nvit,0.93,4\nmlp,0.8,2\n,,\n  ,,\n")
    assert run("import", tmp_path / "sheet.csv", "--db", db, *maps) == 0
    assert "added 2 run(s)" in capsys.readouterr().out
    assert sorted(RunStore(db).runs()["model"]) == ["mlp", "resnet", "vit"]


def test_a_wandb_export_through_the_real_command(tmp_path):
    """A W&B runs-table export (Name, State, Runtime, config and summary columns), imported,
    scored and reported with the three commands the README shows."""
    import subprocess
    import sys

    export = tmp_path / "wandb_export.csv"
    rows = [
        ["Name", "State", "Created", "Runtime", "Group", "model", "test/acc", "energy (Wh)", "gpu_mem_MiB"],
        ["sunny-dawn-1", "finished", "2025-01-02T10:00:00", "3600", "cifar", "resnet50", "93.1", "410.5", "9000"],
        ["brisk-sky-2", "finished", "2025-01-02T11:00:00", "1200", "cifar", "resnet18", "91.4", "120.25", "3000"],
        ["quiet-sea-3", "finished", "2025-01-02T12:00:00", "600", "cifar", "mobilenetv3", "89.0", "55", "1500"],
    ]
    with export.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    db, out = tmp_path / "w.duckdb", tmp_path / "report"

    def pepr(*args):
        return subprocess.run([sys.executable, "-m", "pepr", *map(str, args)], capture_output=True, text=True, timeout=180)

    imported = pepr("import", export, "--db", db, "--map", "run_id=Name", "--map", "model=model",
                    "--map", "experiment=Group", "--map", "performance=test/acc:%",
                    "--map", "energy=energy (Wh):Wh", "--map", "train_time=Runtime:s",
                    "--map", "gpu_memory=gpu_mem_MiB:MiB")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == f"{db}: added 3 run(s)"
    scored = pepr("score", "--db", db, "--format", "json")
    assert scored.returncode == 0, scored.stderr
    table = {row["model"]: row for row in json.loads(scored.stdout)}
    # min-max energy: resnet18 R = (120.25 - 55) / (410.5 - 55) = 65.25 / 355.5
    assert table["resnet18"]["pepr"] == pytest.approx(0.914 / (1 + 65.25 / 355.5))
    assert table["mobilenetv3"]["rank"] == 1 and table["resnet50"]["pepr"] == pytest.approx(0.931 / 2)
    reported = pepr("report", "--db", db, "--experiment", "cifar", "--out", out)
    assert reported.returncode == 0, reported.stderr
    assert (out / "table.tex").is_file() and (out / "performance_vs_resource.svg").is_file()
    runs = RunStore(db).runs().set_index("run_id")
    assert runs.loc["brisk-sky-2", "energy_kwh"] == 0.12025 and runs.loc["brisk-sky-2", "gpu_mem_reserved_gb"] == 3000 * 2**20 / 1e9


# -- CodeCarbon ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emissions_csv(tmp_path_factory):
    """A real emissions.csv: CodeCarbon's offline tracker around three tiny workloads; the
    first flushes once mid-run, so its run has two rows (CodeCarbon appends cumulative totals)."""
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    folder = tmp_path_factory.mktemp("codecarbon")
    for name in ("exp-a", "exp-b", "exp-c"):
        tracker = OfflineEmissionsTracker(
            country_iso_code="DNK", output_dir=str(folder), experiment_id=name, project_name="demo",
            measure_power_secs=1, log_level="error",
        )
        tracker.start()
        sum(i * i for i in range(300_000))
        if name == "exp-a":
            tracker.flush()
            sum(i * i for i in range(300_000))
        tracker.stop()
    path = folder / "emissions.csv"
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["experiment_id"] for row in rows] == ["exp-a", "exp-a", "exp-b", "exp-c"]
    return path


@pytest.fixture
def results_csv(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("run,arch,top1\nexp-a,resnet18,0.91\nexp-b,vit_tiny,0.88\nexp-c,mobilenet,0.85\n")
    return path


def test_codecarbon_emissions_join_the_results(emissions_csv, results_csv, tmp_path):
    db = tmp_path / "cc.duckdb"
    argv = ["import", results_csv, "--db", db, "--map", "model=arch", "--map", "performance=top1",
            "--experiment-name", "cc", "--codecarbon", emissions_csv, "--join", "experiment_id=run"]
    assert run(*argv) == 0
    assert run(*argv) == 0  # idempotent
    runs = RunStore(db).runs().set_index("model")
    assert len(runs) == 3
    with emissions_csv.open() as handle:
        last = {row["experiment_id"]: row for row in csv.DictReader(handle)}  # the last row per run
    for model, key in (("resnet18", "exp-a"), ("vit_tiny", "exp-b"), ("mobilenet", "exp-c")):
        row, stored = last[key], runs.loc[model]
        assert stored["energy_kwh"] == float(row["energy_consumed"])
        assert stored["energy_cpu_kwh"] == float(row["cpu_energy"])
        no_gpu = float(row["gpu_count"] or 0) == 0
        assert pd.isna(stored["energy_gpu_kwh"]) if no_gpu else stored["energy_gpu_kwh"] == float(row["gpu_energy"])
        assert stored["energy_ram_kwh"] == float(row["ram_energy"])
        assert stored["co2_kg"] == float(row["emissions"])
        assert stored["train_time_s"] == float(row["duration"])
        assert stored["country"] == row["country_iso_code"] == "DNK"
        assert stored["carbon_intensity"] == pytest.approx(float(row["emissions"]) * 1000 / float(row["energy_consumed"]))
        assert stored["energy_tool"] == f"codecarbon {row['codecarbon_version']}"
        assert stored["pue"] == float(row["pue"])
        assert stored["energy_cpu_scope"] == {"machine": "device", "process": "process"}[row["tracking_mode"]]
        expected_gpu = "none" if no_gpu else "imported"
        assert (stored["energy_cpu_method"], stored["energy_gpu_method"]) == ("imported", expected_gpu)
        assert "emissions.csv" in stored["provenance"]
    first_flush = [r for r in csv.DictReader(emissions_csv.open()) if r["experiment_id"] == "exp-a"][0]
    assert float(first_flush["duration"]) < runs.loc["resnet18", "train_time_s"]  # the last row counts


def test_energy_from_the_table_takes_none_of_codecarbons_energy_parts_nor_co2(emissions_csv, tmp_path):
    """Before, the table's energy sat beside CodeCarbon's parts (adding up to a thousandth of
    it), CO2, intensity and tool: a run at 0.006 g/kWh credited to CodeCarbon."""
    results = tmp_path / "results.csv"
    results.write_text("run,arch,top1,e_Wh\nexp-a,resnet18,0.91,150\nexp-b,vit_tiny,0.88,90\nexp-c,mobilenet,0.85,40\n")
    maps = [ColumnMap("model", "arch"), ColumnMap("performance", "top1"), ColumnMap("energy", "e_Wh", "Wh")]
    result = convert(read_table(results), maps, experiment="x", emissions=read_table(emissions_csv),
                     join="experiment_id=run")
    assert result.errors == []
    first = result.runs.iloc[0]
    assert first["energy_kwh"] == 0.15 and first["train_time_s"] > 0 and first["country"] == "DNK"
    taken = ("co2_kg", "carbon_intensity", "energy_tool", "pue", "energy_cpu_kwh", "energy_ram_kwh", "energy_cpu_scope")
    assert {c: first.get(c) for c in taken if pd.notna(first.get(c))} == {}
    assert first["energy_cpu_method"] == "imported"  # part of the table's total, not measured apart
    assert "duration and country from CodeCarbon's" in first["provenance"]
    parts = convert(read_table(results), [*maps[:2], ColumnMap("energy_cpu", "e_Wh", "Wh")], experiment="x",
                    emissions=read_table(emissions_csv), join="experiment_id=run").runs.iloc[0]
    assert parts["energy_cpu_kwh"] == 0.15 and pd.isna(parts.get("energy_kwh"))  # one reading, never two mixed
    assert parts["energy_cpu_method"] == "imported" and pd.isna(parts["energy_gpu_method"])
    co2_mapped = convert(read_table(results), [*maps[:2], ColumnMap("co2", "e_Wh", "g")], experiment="x",
                         emissions=read_table(emissions_csv), join="experiment_id=run").runs.iloc[0]
    assert co2_mapped["co2_kg"] == 0.15 and co2_mapped["energy_kwh"] > 0 and pd.isna(co2_mapped.get("carbon_intensity"))


def test_codecarbon_join_errors(emissions_csv, results_csv, tmp_path, capsys):
    db = tmp_path / "cc.duckdb"
    base = ["import", results_csv, "--db", db, "--map", "model=arch", "--map", "performance=top1",
            "--experiment-name", "cc", "--codecarbon", emissions_csv]
    assert run(*base, "--join", "project_name=run") == 2
    assert f"{emissions_csv}, row 4, column project_name: 'demo' is also in row 3; join on a key that names one " \
           "run (CodeCarbon writes one value for every run unless the tracker is given its own" in capsys.readouterr().err
    extra = results_csv.with_name("more.csv")
    extra.write_text(results_csv.read_text() + "exp-z,convnext,0.8\n")
    base[1] = extra
    assert run(*base, "--join", "experiment_id=run") == 2
    assert capsys.readouterr().err.strip() == (
        f"pepr: {extra}, row 5, column run: no row of {emissions_csv} has experiment_id 'exp-z'")
    twice = results_csv.with_name("twice.csv")
    twice.write_text(results_csv.read_text() + "exp-a,convnext,0.8\n")  # one measurement, two models
    base[1] = twice
    assert run(*base, "--join", "experiment_id=run") == 2
    assert capsys.readouterr().err.strip() == (
        f"pepr: {twice}, row 5, column run: 'exp-a' is also in row 2; "
        f"one row of {emissions_csv} cannot be the energy of two runs")
    assert run(*base, "--join", "nope=run") == 2
    assert "no column 'nope'" in capsys.readouterr().err
    assert run(*base) == 2
    assert "--join" in capsys.readouterr().err
    assert not db.exists()



@pytest.mark.parametrize("content, energy, suffix", [
    ("model;acc;energy\nm1;0,5;1,25\nm2;0,75;2\n", [1.25, 2.0], "csv"),  # a spreadsheet's European export
    ("model\tacc\tenergy\nm1\t0.5\t1.25\nm2\t0.75\t2\n", [1.25, 2.0], "csv"),
    ("model\tacc\tenergy\nm1\t0.5\t1.25\nm2\t0.75\t2\n", [1.25, 2.0], "tsv"),  # was an unknown format
    ("model,acc,energy\rm1,0.5,1.25\rm2,0.75,2\r", [1.25, 2.0], "csv"),  # classic Mac lines (were refused)
    ("model;acc;energy\rm1;0,5;1,25\rm2;0,75;2\r", [1.25, 2.0], "csv"),
    ('model;"acc (top-1, fraction)";energy\nm1;0,5;1,25\nm2;0,75;2\n', [1.25, 2.0], "csv"),  # read as commas
])
def test_semicolon_and_tab_separated_files_read_as_their_spreadsheet_meant(content, energy, suffix, tmp_path):
    path = tmp_path / f"r.{suffix}"
    path.write_bytes(content.encode())
    acc = "acc (top-1, fraction)" if "top-1" in content else "acc"
    result = convert(read_table(path), [ColumnMap("model", "model"), ColumnMap("performance", acc),
                                        ColumnMap("energy", "energy")], experiment="x")
    assert result.errors == []
    assert result.runs["performance"].tolist() == [0.5, 0.75] and result.runs["energy_kwh"].tolist() == energy


@pytest.mark.parametrize("cell, hint", [
    ('"0,5"', "decimal commas are read in ';'-separated files only"),
    ('"1,234"', "a thousands separator? write numbers without one; decimal commas are read in ';'-separated files only"),
    ('"1,234.5"', "a thousands separator? write numbers without one; decimal commas are read in ';'-separated files only"),
    ("NA", "leave the cell empty, or null in JSON: an empty cell is not measured"),
])
def test_a_number_written_otherwise_is_refused_with_a_hint(cell, hint, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(f"model,acc,energy\nm1,0.5,{cell}\n")
    result = convert(read_table(path), [ColumnMap("model", "model"), ColumnMap("performance", "acc"),
                                        ColumnMap("energy", "energy")], experiment="x")
    assert result.errors == [f"{path}, row 2, column energy: not a number: {cell.strip(chr(34))!r} ({hint})"]


def test_a_semicolon_column_mixing_decimal_commas_and_points_is_refused(tmp_path):
    """In `1,234` next to `2.5` the comma may group thousands: a 1000x error if guessed wrong."""
    path = tmp_path / "r.csv"
    path.write_text("model;acc;energy\nm1;0,5;1,234\nm2;0,75;2.5\n")
    result = convert(read_table(path), [ColumnMap("model", "model"), ColumnMap("performance", "acc"),
                                        ColumnMap("energy", "energy", "J")], experiment="x")
    assert result.errors == [f"{path}, row 3, column energy: '2.5': the column mixes decimal commas and "
                             "points; write one kind"]


@pytest.mark.parametrize("energy, error", [
    # 1.234 and 1.050 next to a decimal-comma accuracy: Wh with thousands points, read as 1.234 Wh
    # before, 1000x too little.
    ("1.234\n900\n1.050", "row 2, column energy: '1.234' may be a thousand and more or a decimal"),
    ("12.500.000\n900\n7", "row 2, column energy: '12.500.000' may be a thousand and more or a decimal"),
    ("1.234\n0.5\n1.050", None),  # 0.5 cannot group thousands: a column of decimal points
    ("1.234,5\n900,25\n1.050,0", None),  # points group thousands before a decimal comma
])
def test_a_semicolon_file_reads_thousands_points_only_where_unambiguous(energy, error, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("model;acc;energy\n" + "".join(f"m{i};0,8;{e}\n" for i, e in enumerate(energy.split())))
    result = convert(read_table(path), [ColumnMap("model", "model"), ColumnMap("performance", "acc"),
                                        ColumnMap("energy", "energy", "Wh")], experiment="x")
    if error:
        assert len(result.errors) == 1 and result.errors[0].startswith(f"{path}, {error}")
    else:
        assert result.errors == []
        expected = {"1.234": [1.234, 0.5, 1.05], "1.234,5": [1234.5, 900.25, 1050.0]}[energy.split()[0]]
        assert result.runs["energy_kwh"].tolist() == pytest.approx([e / 1000 for e in expected])


def test_a_semicolon_file_says_a_thousands_comma_is_one():
    table = parse_table(b"model;acc;energy\nm1;0,5;1,234.5\n", "r.csv", "csv")
    result = convert(table, [ColumnMap("model", "model"), ColumnMap("performance", "acc"),
                             ColumnMap("energy", "energy")], experiment="x")
    assert result.errors == ["r.csv, row 2, column energy: not a number: '1,234.5' (a thousands separator? "
                             "write numbers without one)"]  # not "decimal commas are read in ';' files only"


def test_a_semicolon_emissions_file_reads_its_decimal_commas(tmp_path):
    emissions = tmp_path / "emissions.csv"
    emissions.write_text("run_id;experiment_id;duration;emissions;cpu_energy;gpu_energy;ram_energy;"
                         "energy_consumed;country_iso_code;pue\nu1;w1;10,5;0,001;0,002;0;0,001;0,003;DNK;1,2\n")
    results = tmp_path / "r.csv"
    results.write_text("run,arch,top1\nw1,resnet18,0.9\n")
    result = convert(read_table(results), [ColumnMap("model", "arch"), ColumnMap("performance", "top1")],
                     experiment="x", emissions=read_table(emissions), join="experiment_id=run")
    assert result.errors == []
    run = result.runs.iloc[0]
    assert (run["energy_kwh"], run["train_time_s"], run["pue"]) == (0.003, 10.5, 1.2)


def test_an_emissions_file_names_its_first_bad_row_whichever_column_it_is_in(tmp_path):
    emissions = tmp_path / "emissions.csv"
    header = "run_id,experiment_id,duration,emissions,cpu_energy,gpu_energy,ram_energy,energy_consumed,country_iso_code,pue\n"
    emissions.write_text(header + "u1,w1,10,0.001,0.002,0,0.001,0.003,DNK,high\n"
                                  "u2,w2,10,0.001,0.002,0,0.001,-0.003,DNK,1.2\n")
    with pytest.raises(PeprError) as error:
        load_emissions(read_table(emissions))
    assert str(error.value) == f"{emissions}, row 2, column pue: not a number: 'high'"
# -- mistakes ------------------------------------------------------------------------------


BAD = [
    (["--map", "colour=name"], "--map colour=name: unknown field 'colour'"),
    (["--map", "energy=e_Wh:kJ"], "--map energy=e_Wh:kJ: unknown unit 'kJ' for energy (takes one of kWh, J, Wh)"),
    (["--map", "params=n_params:k"], "unknown unit 'k' for params (takes no unit)"),
    (["--map", "energy=energy_kwh"], "--map energy=energy_kwh: no column 'energy_kwh'"),
    (["--map", "energy=e_Wh:Wh", "--map", "energy=e_J:J"], "energy is mapped twice"),
    (["--map", "energy"], "--map energy: expected FIELD=COLUMN[:UNIT]"),
    (["--experiment-name", "ci\x1bfar"], "--experiment-name: a label: control character U+001B"),
    (["--energy-tool", "code\ncarbon"], "--energy-tool: a label: control character U+000A"),
    (["--energy-method", "gpu=rapl,gpu=none"], "--energy-method: gpu is given twice"),
    (["--energy-method", "gpu=magic"], "--energy-method gpu=magic: expected PART=METHOD"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_mapping_mistakes_are_one_line_and_write_nothing(extra, message, tmp_path, capsys):
    path = tmp_path / "r.csv"
    write(pd.DataFrame(TABLE), path)
    db = tmp_path / "none.duckdb"
    assert run("import", path, "--db", db, *BASE, "--experiment-name", "x", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not db.exists()


def bad_value(column, value):
    frame = pd.DataFrame(TABLE).astype(object)
    frame.loc[1, column] = value
    return frame


VALUES = [
    ("e_Wh", "abc", ["--map", "energy=e_Wh:Wh"], "row 3, column e_Wh: not a number: 'abc'"),
    ("acc_pct", "101", [], "row 3, column acc_pct: performance 1.01 is outside [0, 1]"),
    ("acc_pct", "100.00000001", [], "row 3, column acc_pct: performance 1.0000000001 is outside [0, 1]"),  # not "1"
    ("c_g", "-5", ["--map", "co2=c_g:g"], "row 3, column c_g: co2 -5 is negative"),
    ("name", "", [], "row 3, column name: empty (model is required)"),
    ("n_params", "1.5", ["--map", "params=n_params"], "row 3, column n_params: 1.5 is not a whole number of at most"),
    ("pretrained", "maybe", ["--map", "pretrained=pretrained"], "row 3, column pretrained: 'maybe' is not true/false"),
    ("n_params", "1e20", ["--map", "params=n_params"], "row 3, column n_params: 1e20 is not a whole number of at most 9223372036854775807"),
    ("n_params", "-5", ["--map", "params=n_params"], "row 3, column n_params: -5 is negative"),
    ("acc", "1.5", ["--map", "train_fraction=acc"], "row 3, column acc: train_fraction 1.5 is outside (0, 1]"),
    ("acc", "0", ["--map", "train_fraction=acc"], "row 3, column acc: train_fraction 0 is outside (0, 1]"),
    ("seed", "99999999999", ["--map", "seed=seed"], "row 3, column seed: 99999999999 is not a whole number of at most 2147483647"),
    ("t_h", "1e308", ["--map", "train_time=t_h:h"], "row 3, column t_h: 1e308 h is too large to store"),
    ("name", "res\u202enet", [], "row 3, column name: control character U+202E"),
    ("name", "a\x00b", [], "row 3, column name: control character U+0000"),
]


@pytest.mark.parametrize("column, value, extra, message", VALUES)
def test_bad_values_name_file_row_and_column_and_change_nothing(column, value, extra, message, tmp_path, capsys):
    db = tmp_path / "runs.duckdb"
    good = tmp_path / "good.csv"
    write(pd.DataFrame(TABLE), good)
    assert run("import", good, "--db", db, *BASE, "--experiment-name", "x") == 0
    before = RunStore(db).runs()
    path = tmp_path / "bad.csv"
    write(bad_value(column, value), path)
    capsys.readouterr()
    assert run("import", path, "--db", db, *BASE, "--experiment-name", "y", *extra) == 2
    err = capsys.readouterr().err
    assert err == f"pepr: {path}, {message}" + err.split(message, 1)[1] and err.count("\n") == 1
    pd.testing.assert_frame_equal(RunStore(db).runs(), before)


def test_a_performance_in_percent_gets_a_hint(tmp_path, capsys):
    path = tmp_path / "r.csv"
    write(pd.DataFrame(TABLE), path)
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=name",
               "--map", "performance=acc_pct", "--experiment-name", "x") == 2
    assert "performance 87.5 is outside [0, 1] (a percentage? map it as COLUMN:%)" in capsys.readouterr().err


def test_rows_are_named_by_their_line_blank_lines_and_quoted_newlines_counted(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('name,acc,energy\n\na,0.8,1\n"b, the\nsecond",0.9,2\n\nc,0.7,abc\n')
    result = convert(read_table(path), [ColumnMap("model", "name"), ColumnMap("performance", "acc"),
                                        ColumnMap("energy", "energy")], experiment="x")
    # Lines 2 and 6 are blank, and the record on line 4 runs on to line 5.
    assert result.errors == [f"{path}, row 4, column name: control character U+000A in 'b, the\\nsecond'",
                             f"{path}, row 7, column energy: not a number: 'abc'"]


def test_energy_given_as_its_three_parts_is_their_sum(tmp_path):
    """Mapped as parts alone, every run was then excluded as 'energy not measured'."""
    path = tmp_path / "r.csv"
    path.write_text("name,acc,cpu,gpu,ram\na,0.8,1,2,0.5\nb,0.9,1,,0.5\n")
    maps = [ColumnMap("model", "name"), ColumnMap("performance", "acc"), ColumnMap("energy_cpu", "cpu"),
            ColumnMap("energy_gpu", "gpu"), ColumnMap("energy_ram", "ram")]
    runs = convert(read_table(path), maps, experiment="x").runs
    assert runs["energy_kwh"].tolist()[0] == 3.5 and pd.isna(runs["energy_kwh"][1])  # b's GPU part is missing
    assert runs["energy_cpu_method"].tolist()[0] == "imported"
    some = convert(read_table(path), [m for m in maps if m.field != "energy_gpu"], experiment="x").runs
    assert "energy_kwh" not in some  # two parts are not the total: not measured


def test_fractions_mapped_as_percent_are_refused(tmp_path, capsys):
    """0.85 with :% was stored as 0.0085 and scored."""
    path = tmp_path / "r.csv"
    path.write_text("name,acc\na,0.85\nb,0.9\n")
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=name",
               "--map", "performance=acc:%", "--experiment-name", "x") == 2
    assert capsys.readouterr().err.strip() == (f"pepr: {path}, row 3, column acc: 0.9 is the largest value, as a "
                                               "percentage at most 1 %: fractions? map it as acc without :%")
    assert not (tmp_path / "d.duckdb").exists()
    path.write_text("name,acc\na,91.2\nb,93.1\nc,0.89\nd,88.5\n")  # one fraction among percentages
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=name",
               "--map", "performance=acc:%", "--experiment-name", "x") == 2
    assert capsys.readouterr().err.strip() == (f"pepr: {path}, row 4, column acc: 0.89 % among percentages up "
                                               "to 93.1: a fraction? write it as a percentage")
    assert not (tmp_path / "d.duckdb").exists()
    path.write_text("name,acc,e\na,91.2,1\ndiverged,0,-0\n")  # 0 reads the same either way; -0 is 0
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=name", "--map", "energy=e",
               "--map", "performance=acc:%", "--experiment-name", "x") == 0
    stored = RunStore(tmp_path / "d.duckdb").runs().set_index("model")
    assert stored.loc["diverged", "performance"] == 0 and str(stored.loc["diverged", "energy_kwh"]) == "0.0"


def test_experiment_is_one_name_or_one_column(tmp_path, capsys):
    path = tmp_path / "r.csv"
    write(pd.DataFrame(TABLE), path)
    db = tmp_path / "d.duckdb"
    assert run("import", path, "--db", db, *BASE) == 2
    assert "either one experiment name for all rows or --map experiment=COLUMN" in capsys.readouterr().err
    assert run("import", path, "--db", db, *BASE, "--experiment-name", "x", "--map", "experiment=dataset") == 2
    assert "either one experiment name" in capsys.readouterr().err
    assert run("import", path, "--db", db, "--map", "model=name", "--experiment-name", "x") == 2
    assert "nothing mapped to performance" in capsys.readouterr().err
    assert not db.exists()


def test_identical_rows_are_refused(tmp_path, capsys):
    path = tmp_path / "r.csv"
    write(pd.concat([pd.DataFrame(TABLE)] * 2, ignore_index=True), path)
    assert run("import", path, "--db", tmp_path / "d.duckdb", *BASE, "--experiment-name", "x") == 2
    assert f"{path}, row 4, column (whole row): repeats row 2; map run_id or seed" in capsys.readouterr().err
    ids = tmp_path / "ids.csv"
    ids.write_text("rid,name,acc_pct\nr1,a,50\nr1,b,60\n")  # a mapped run id, repeated
    assert run("import", ids, "--db", tmp_path / "d.duckdb", *BASE, "--map", "run_id=rid", "--experiment-name", "x") == 2
    assert capsys.readouterr().err == f"pepr: {ids}, row 3, column rid: run id 'r1' is also in row 2\n"


@pytest.mark.parametrize("name, data, message", [
    ("r.xlsx", b"x", "unknown format '.xlsx'; use .csv, .tsv, .parquet or .jsonl"),
    ("r.jsonl", b'{"a": 1}\n[1, 2]\n', "r.jsonl, row 2: not a JSON object"),
    ("r.jsonl", b'{"a": 1}\n\n{"a": \n', "r.jsonl, row 3: not JSON"),
    ("r.parquet", b"PAR1 not really", "r.parquet: not a readable Parquet file"),
    ("r.csv", b"a,b\n1,2,3\n", "r.csv, row 2: 3 fields, the header has 2"),
    ("r.csv", b'model,acc,kwh\n"a,0.9,1\n', "r.csv, row 2: 1 fields, the header has 3 (a quoted field holds ',' "
                                           "or a line end: a quote left open?)"),
    ("r.csv", b"a,a\n1,2\n", "r.csv: column 'a' appears twice"),
    ("r.csv", b"a,b\n", "r.csv: no rows below the header"),
    ("r.jsonl", b'{"a": 1}\n{"a": ' + b'{"b": ' * 5000 + b'1' + b'}' * 5001 + b'\n',
     "r.jsonl, row 2: JSON nested too deeply"),  # an unexpected RecursionError, exit 1
    ("r.json", b"[" * 100_000 + b"]" * 100_000, "r.json: JSON nested too deeply"),
])
def test_unreadable_files(name, data, message, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(data)
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=a", "--experiment-name", "x") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d.duckdb").exists()


def test_a_json_array_of_records_reads_as_json_lines_do(tmp_path):
    """`to_json(orient="records")` writes an array: it was refused as 'row 1: not JSON'."""
    path = tmp_path / "runs.json"
    pd.DataFrame(TABLE).to_json(path, orient="records")
    lines = tmp_path / "runs.jsonl"
    write(pd.DataFrame(TABLE), lines)
    maps = [ColumnMap("model", "name"), ColumnMap("performance", "acc_pct", "%"), ColumnMap("energy", "e_Wh", "Wh")]
    array, each = (convert(read_table(p), maps, experiment="x") for p in (path, lines))
    assert array.errors == [] and array.runs.drop(columns=["run_id", "job_key", "config", "provenance"]).equals(
        each.runs.drop(columns=["run_id", "job_key", "config", "provenance"]))
    path.write_text('[{"name": "a"}, 3]')
    with pytest.raises(PeprError, match=r"runs.json, row 2: not a JSON object"):
        read_table(path)


@pytest.mark.parametrize("constant", ["NaN", "Infinity"])
def test_a_json_nan_or_infinity_is_refused_as_a_csvs_is(constant, tmp_path, capsys):
    """Python's json.dumps writes NaN for a float nan: it was read as an empty cell, the energy
    as not measured and the performance as missing."""
    path = tmp_path / "runs.jsonl"
    path.write_text(f'{{"name": "a", "acc": 0.5, "e": 1}}\n{{"name": "b", "acc": 0.6, "e": {constant}}}\n')
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=name", "--map", "performance=acc",
               "--map", "energy=e", "--experiment-name", "x") == 2
    assert capsys.readouterr().err.startswith(f"pepr: {path}, row 2, column e: not a number: '{constant}'")
    assert not (tmp_path / "d.duckdb").exists()


@pytest.mark.parametrize("fmt, names, what", [
    ("jsonl", [["a", "b"], "ok"], "a list"), ("parquet", [b"a", b"ok"], "bytes")])
def test_a_cell_that_is_not_one_value_is_refused(fmt, names, what, tmp_path, capsys):
    """A JSON list was stored as the model name "['a', 'b']" and a Parquet binary as "b'a'"."""
    path = tmp_path / f"runs.{fmt}"
    write(pd.DataFrame({"name": names, "acc": [0.5, 0.6]}), path)
    assert run("import", path, "--db", tmp_path / "d.duckdb", "--map", "model=name",
               "--map", "performance=acc", "--experiment-name", "x") == 2
    assert capsys.readouterr().err == f"pepr: {path}, row 1, column name: {what}, not one value\n"
    assert not (tmp_path / "d.duckdb").exists()


def test_jsonl_nested_keys_become_dotted_columns():
    table = parse_table(b'{"config": {"model": "m1"}, "summary": {"acc": 0.5}}\n', "w.jsonl", "jsonl")
    result = convert(table, [ColumnMap("model", "config.model"), ColumnMap("performance", "summary.acc")], experiment="x")
    assert (result.runs["model"][0], result.runs["performance"][0]) == ("m1", 0.5)


def test_preview_shows_first_rows_and_every_problem_before_writing(tmp_path):
    frame = pd.DataFrame(TABLE).astype(object)
    frame.loc[1, "e_Wh"] = "n/a"
    frame.loc[0, "c_g"] = -1
    table = parse_table(frame.to_csv(index=False).encode(), "up.csv", "csv")
    maps = [ColumnMap("model", "name"), ColumnMap("performance", "acc_pct", "%"),
            ColumnMap("energy", "e_Wh", "Wh"), ColumnMap("co2", "c_g", "g")]
    shown = preview(table, maps, rows=1, experiment="x")
    assert shown.count == 2 and len(shown.runs) == 1 and shown.runs["performance"][0] == 0.875
    assert shown.errors == ["up.csv, row 2, column c_g: co2 -1 is negative",
                            "up.csv, row 3, column e_Wh: not a number: 'n/a' (leave the cell empty, or null in JSON: an empty cell is not measured)"]
    broken = preview(table, [ColumnMap("model", "nope")], experiment="x")
    assert broken.count == 0 and "no column 'nope'" in broken.errors[0]


def test_import_over_http(tmp_path, capsys):
    folder = tmp_path / "site"
    folder.mkdir()
    write(pd.DataFrame(TABLE), folder / "results.csv")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/results.csv"
        db = tmp_path / "d.duckdb"
        assert run("import", url, "--db", db, *BASE, "--experiment-name", "x") == 0
        assert RunStore(db).runs()["provenance"].str.contains(url, regex=False).all()
        assert run("import", url.replace("results", "missing"), "--db", db, *BASE, "--experiment-name", "x") == 1
        assert "cannot download" in capsys.readouterr().err
    finally:
        server.shutdown()


def test_the_papers_csv_through_the_generic_import_scores_like_import_paper(paper_dir, tmp_path):
    """An independent path to the same numbers: mapping the paper's columns by hand (CO2 in g,
    memory in GB) must give import-paper's PePR-E, PePR-C and PePR-M to the last bit."""
    from pepr.paper import import_paper
    from pepr.score import score

    generic, reference = tmp_path / "generic.duckdb", tmp_path / "paper.duckdb"
    assert run("import", paper_dir / "all_results.csv", "--db", generic, "--map", "model=model",
               "--map", "experiment=dataset", "--map", "performance=test_09", "--map", "energy=energy:kWh",
               "--map", "co2=co2:g", "--map", "gpu_memory=memR:GB", "--map", "params=num_param",
               "--energy-tool", "carbontracker") == 0
    import_paper(paper_dir / "all_results.csv", reference)
    for weights in ({"energy": 1}, {"co2": 1}, {"gpu_memory": 1, "params": 1}):
        ours = score(RunStore(generic).runs(), weights).table.set_index(["experiment", "model"]).sort_index()
        theirs = score(RunStore(reference).runs(), weights).table.set_index(["experiment", "model"]).sort_index()
        assert len(ours) == 1048
        assert (ours["pepr"] == theirs["pepr"]).all() and (ours["rank"] == theirs["rank"]).all()


def test_a_mapped_field_wins_over_codecarbon(emissions_csv, tmp_path):
    results = tmp_path / "r.csv"
    results.write_text("run,arch,top1,hours\nexp-a,resnet18,0.91,2\nexp-b,vit_tiny,0.88,1\n")
    result = convert(read_table(results), [ColumnMap("model", "arch"), ColumnMap("performance", "top1"),
                                           ColumnMap("train_time", "hours", "h")],
                     experiment="cc", emissions=read_table(emissions_csv), join="experiment_id=run")
    assert result.errors == [] and list(result.runs["train_time_s"]) == [7200.0, 3600.0]
    assert result.runs["energy_kwh"].gt(0).all()  # the rest still comes from CodeCarbon


def test_whole_numbers_are_stored_exactly_not_through_a_float(tmp_path):
    path, db = tmp_path / "r.csv", tmp_path / "runs.duckdb"
    frame = pd.DataFrame(TABLE).astype(object)
    frame["n_params"] = ["12345678901234567", "1e6"]  # a float would store ...568
    write(frame, path)
    assert run("import", path, "--db", db, *BASE, "--map", "params=n_params", "--experiment-name", "x") == 0
    stored = RunStore(db).runs()
    assert dict(zip(stored["model"], stored["params"].astype(int))) == {
        "resnet18": 12345678901234567, "vit_tiny": 1_000_000}


def test_a_spreadsheets_percent_cells_are_read_in_a_percent_column(tmp_path):
    """`91.5 %`, as a spreadsheet's percent format saves it, was 'not a number' even mapped in %."""
    path = tmp_path / "r.csv"
    path.write_text("name,acc\na,91.5 %\nb,80%\n")
    result = convert(read_table(path), [ColumnMap("model", "name"), ColumnMap("performance", "acc", "%")],
                     experiment="x")
    assert result.runs.set_index("model")["performance"].to_dict() == pytest.approx({"a": 0.915, "b": 0.8})
    unmapped = convert(read_table(path), [ColumnMap("model", "name"), ColumnMap("performance", "acc")], experiment="x")
    assert unmapped.errors[0] == f"{path}, row 2, column acc: not a number: '91.5 %' (a percentage: map the column in %, as COLUMN:%)"
    energy = convert(read_table(path), [ColumnMap("model", "name"), ColumnMap("performance", "acc", "%"),
                                        ColumnMap("energy", "acc")], experiment="x")
    assert energy.errors[0] == f"{path}, row 2, column acc: not a number: '91.5 %'"  # energy takes no %
