"""The import panel through AppTest: upload, map, preview with errors, then import."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from streamlit.testing.v1 import AppTest

from dashboard.text import plain
from pepr.store import RunStore

RESULTS = b"run,arch,acc,energy_Wh\nw1,resnet18,91.5,12.5\nw2,vit_tiny,88,3\nw3,<b>x</b>,90,abc\n"


def panel_script(db: str) -> None:
    from dashboard.import_panel import import_panel

    import_panel(db)


def mapped(at, **columns):
    for field, column in columns.items():
        at.selectbox(key=f"ip_col_{field}").set_value(column)
    return at.run()


def test_upload_map_preview_errors_then_import(tmp_path):
    db = str(tmp_path / "mine.duckdb")
    at = AppTest.from_function(panel_script, args=(db,), default_timeout=60).run()
    assert not at.exception
    at.file_uploader(key="ip_table").set_value(("results.csv", RESULTS, "text/csv"))
    at.run()
    at.text_input(key="ip_exp_name").set_value("mine").run()
    at = mapped(at, model="arch", performance="acc", energy="energy_Wh", run_id="run")
    at.selectbox(key="ip_unit_performance").set_value("%")
    at.selectbox(key="ip_unit_energy").set_value("Wh")
    at.run()
    assert not at.exception
    errors = [element.value for element in at.error]
    assert errors == [plain("results.csv, row 4, column energy_Wh: not a number: 'abc'")]
    preview = at.dataframe[0].value
    assert list(preview["model"]) == ["resnet18", "vit_tiny", "<b>x</b>"]
    assert list(preview["performance"])[:2] == [0.915, 0.88] and list(preview["energy_kwh"])[:2] == [0.0125, 0.003]
    button = at.button(key="ip_import")
    assert button.disabled and not (tmp_path / "mine.duckdb").exists()  # nothing written while wrong

    fixed = RESULTS.replace(b"abc", b"7.5")
    at.file_uploader(key="ip_table").set_value(("results.csv", fixed, "text/csv"))
    at.run()
    assert not at.error and not at.button(key="ip_import").disabled
    at.button(key="ip_import").click().run()
    assert at.success[0].value == "mine: added 3 run(s)."
    runs = RunStore(db).runs().set_index("run_id")
    assert runs.loc["w3", "energy_kwh"] == 0.0075 and runs.loc["w1", "performance"] == 0.915
    assert set(runs["experiment"]) == {"mine"}



def test_a_corrected_unit_needs_the_replace_box(tmp_path):
    db = str(tmp_path / "mine.duckdb")
    at = AppTest.from_function(panel_script, args=(db,), default_timeout=60).run()
    at.file_uploader(key="ip_table").set_value(("results.csv", RESULTS.replace(b"abc", b"7.5"), "text/csv"))
    at.run()
    at.text_input(key="ip_exp_name").set_value("mine").run()
    at = mapped(at, model="arch", performance="acc", energy="energy_Wh", run_id="run")
    at.selectbox(key="ip_unit_performance").set_value("%").run()
    at.button(key="ip_import").click().run()  # energy read as kWh: the mistake
    at.selectbox(key="ip_unit_energy").set_value("Wh").run()
    at.button(key="ip_import").click().run()
    (error,) = [element.value for element in at.error]
    assert plain("run w1 is stored with other values (energy_kwh) (and 2 more run(s)); nothing imported") in error
    assert RunStore(db).runs().set_index("run_id").loc["w1", "energy_kwh"] == 12.5
    at.checkbox(key="ip_replace").check().run()
    at.button(key="ip_import").click().run()
    assert at.success[0].value == "mine: added 0 run(s); replaced 3 stored with other values."
    assert RunStore(db).runs().set_index("run_id").loc["w1", "energy_kwh"] == 0.0125


def test_an_upload_is_parsed_once_and_checked_once_per_mapping(tmp_path, monkeypatch):
    """Every widget change reruns the page; a large upload must not be parsed and converted
    again each time, and the import writes the runs that the preview checked."""
    import dashboard.import_panel as panel
    import pepr.importer as importer

    calls = Counter()

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(panel, "parse_table")
    counted(importer, "convert")
    db = str(tmp_path / "mine.duckdb")
    at = AppTest.from_function(panel_script, args=(db,), default_timeout=60).run()
    at.file_uploader(key="ip_table").set_value(("results.csv", RESULTS.replace(b"abc", b"7.5"), "text/csv"))
    at.run()
    at.text_input(key="ip_exp_name").set_value("mine").run()
    at = mapped(at, model="arch", performance="acc", run_id="run")
    assert calls == {"parse_table": 1, "convert": 2}  # named, then mapped: one check each
    at.run()  # a rerun that changes nothing
    assert calls == {"parse_table": 1, "convert": 2}
    at.selectbox(key="ip_unit_performance").set_value("%").run()
    assert calls == {"parse_table": 1, "convert": 3}
    at.button(key="ip_import").click().run()
    assert calls == {"parse_table": 1, "convert": 3} and at.success[0].value == "mine: added 3 run(s)."
    assert RunStore(db).runs().set_index("run_id").loc["w2", "performance"] == 0.88
    at.file_uploader(key="ip_table").set_value(("results.csv", RESULTS.replace(b"abc", b"8"), "text/csv"))
    at.run()
    assert calls == {"parse_table": 2, "convert": 4}  # a new upload is read and checked anew

def test_an_unreadable_upload_is_one_error(tmp_path):
    at = AppTest.from_function(panel_script, args=(str(tmp_path / "x.duckdb"),), default_timeout=60).run()
    at.file_uploader(key="ip_table").set_value(("bad.jsonl", b"not json\n", "application/json"))
    at.run()
    assert [e.value for e in at.error] == [plain("bad.jsonl, row 1: not JSON (Expecting value)")]


def test_column_names_from_an_upload_are_shown_as_text_not_links(tmp_path):
    at = AppTest.from_function(panel_script, args=(str(tmp_path / "x.duckdb"),), default_timeout=60).run()
    at.file_uploader(key="ip_table").set_value(("r.csv", b"model,http://evil.example/acc\nm,0.9\n", "text/csv"))
    at.run()
    (columns,) = [c.value for c in at.caption if "columns:" in c.value]
    assert "http://" not in columns and "http\\:" in columns  # no autolink can form
    assert columns.endswith(plain("model, http://evil.example/acc"))


def test_the_experiment_column_is_guessed_by_its_name(tmp_path):
    at = AppTest.from_function(panel_script, args=(str(tmp_path / "x.duckdb"),), default_timeout=60).run()
    at.file_uploader(key="ip_table").set_value(("r.csv", b"model,acc,Experiment\nm,0.9,e1\n", "text/csv"))
    at.run()
    at.radio(key="ip_exp_mode").set_value("from a column").run()
    assert at.selectbox(key="ip_exp_col").value == "Experiment"  # not the first column, model


def test_codecarbon_upload_joins(tmp_path):
    emissions = pd.DataFrame({
        "run_id": ["u1", "u2"], "project_name": ["w1", "w2"], "experiment_id": ["x", "x"], "duration": [10.0, 20.0], "emissions": [0.001, 0.002],
        "cpu_energy": [0.002, 0.004], "gpu_energy": [0.0, 0.0], "ram_energy": [0.001, 0.002],
        "energy_consumed": [0.003, 0.006], "country_iso_code": ["DNK", "DNK"], "gpu_count": [0, 0],
    }).to_csv(index=False).encode()
    db = str(tmp_path / "cc.duckdb")
    at = AppTest.from_function(panel_script, args=(db,), default_timeout=60).run()
    table = b"run,arch,acc,energy_cpu,co2\nw1,a,0.9,5,1\nw2,b,0.8,7,1\n"  # costs CodeCarbon's file gives too
    at.file_uploader(key="ip_table").set_value(("results.csv", table, "text/csv"))
    at.run()
    at.file_uploader(key="ip_emissions").set_value(("emissions.csv", emissions, "text/csv"))
    at.run()
    assert at.selectbox(key="ip_col_energy_cpu").value == at.selectbox(key="ip_col_co2").value == "(none)"
    assert at.selectbox(key="ip_join_emissions").value == "project_name"  # CodeCarbon's experiment_id is one for all
    at.selectbox(key="ip_join_results").set_value("run")
    at.text_input(key="ip_exp_name").set_value("cc")
    at = mapped(at, model="arch", performance="acc")
    assert not at.error, [e.value for e in at.error]
    at.button(key="ip_import").click().run()
    runs = RunStore(db).runs().set_index("model")
    assert runs.loc["b", "energy_kwh"] == 0.006 and runs.loc["b", "co2_kg"] == 0.002 and runs.loc["b", "country"] == "DNK"
    assert runs.loc["b", "energy_cpu_kwh"] == 0.004  # CodeCarbon's, not the table's


def report_script(db: str) -> None:
    from dashboard.report_panel import report_downloads
    from pepr.store import RunStore

    report_downloads(RunStore(db).runs(), "exp", {"energy": 1.0})


def test_report_downloads_offer_the_cli_report(crafted_db, tmp_path):
    import io
    import zipfile

    from dashboard.report_panel import report_zip
    from pepr.report import build_report

    at = AppTest.from_function(report_script, args=(str(crafted_db),), default_timeout=60).run()
    assert not at.exception and len(at.get("download_button")) == 2
    files = zipfile.ZipFile(io.BytesIO(report_zip(build_report(RunStore(crafted_db).runs(), "exp", {"energy": 1.0}))))
    assert {"report.md", "table.tex", "performance_vs_resource.svg", "pepr_ranking.png"} <= set(files.namelist())
    assert "| 1 | tiny | 0.8000 |" in files.read("report.md").decode()


def test_report_downloads_are_named_after_the_experiment():
    from dashboard.report_panel import download_names

    import hashlib

    digest = hashlib.sha256("derma_pt f0.1/ü".encode()).hexdigest()[:6]
    assert download_names("derma_pt f0.1/ü") == {"zip": f"pepr-report-derma_pt-f0-1-u-{digest}.zip",
                                                 "tex": f"pepr-derma_pt-f0-1-u-{digest}.tex"}
    assert download_names("derma_pt") == {"zip": "pepr-report-derma_pt.zip", "tex": "pepr-derma_pt.tex"}
    assert download_names("derma-pt") == {"zip": "pepr-report-derma-pt.zip", "tex": "pepr-derma-pt.tex"}
    assert download_names("//")["tex"] == f"pepr-experiment-{hashlib.sha256(b'//').hexdigest()[:6]}.tex"


def test_a_failed_import_names_the_database_not_where_the_server_keeps_it(tmp_path):
    db = tmp_path / "mine.duckdb"
    db.write_bytes(b"not a database")  # refused when the import writes
    at = AppTest.from_function(panel_script, args=(str(db),), default_timeout=60).run()
    at.file_uploader(key="ip_table").set_value(("results.csv", RESULTS.replace(b"abc", b"7"), "text/csv"))
    at.run()
    at.text_input(key="ip_exp_name").set_value("mine").run()
    at = mapped(at, model="arch", performance="acc")
    at.selectbox(key="ip_unit_performance").set_value("%").run()
    at.button(key="ip_import").click().run()
    (shown,) = [element.value for element in at.error]
    assert "mine" in shown and str(tmp_path) not in shown.replace("\\", "")
    assert db.read_bytes() == b"not a database"
