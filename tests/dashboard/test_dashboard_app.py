"""The app end to end through AppTest: pages, links, the database picker, writes, hard states."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from pepr.store import RunStore
from dashboard.text import ZERO_WIDTH, plain
from tests.dashboard.conftest import goto, make_db

PAGES = ["explorer", "sensitivity", "budget", "comparisons", "curves", "runs", "data"]
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"paper": ROOT / "results" / "paper.duckdb", "agent": ROOT / "results" / "pepr.duckdb"}


def texts(at, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


def unescape(text: str) -> str:
    """Markdown as the user reads it."""
    return re.sub(r"\\(.)", r"\1", text).replace(ZERO_WIDTH, "")


def cards(at) -> list[str]:
    """The bold names of the headline cards, as the user reads them."""
    return [unescape(m.value.strip("*")) for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]


def top_model(at) -> str:
    return cards(at)[0]


def link(at) -> dict[str, list[str]]:
    """The address bar's query, each value as a list."""
    return {k: v if isinstance(v, list) else [v] for k, v in at.query_params.items()}


def test_every_page_renders(app, crafted_db):
    at = app(crafted_db).run()
    for page in PAGES:
        goto(at, page)
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, texts(at, "error"))
        if page in ("explorer", "comparisons", "curves"):
            assert at.get("vega_lite_chart"), f"{page} draws no chart"
        if page not in ("runs", "data"):  # the pages over the chosen experiments say where they come from
            assert any(c.startswith("Source: ") for c in texts(at, "caption")), page


@pytest.mark.parametrize("key", list(SHIPPED))
def test_every_page_renders_on_the_shipped_databases(app, key):
    if not SHIPPED[key].is_file():
        pytest.skip(f"{SHIPPED[key]} is not built (make results/paper.duckdb)")
    at = app(None, db=key).run()
    for page in PAGES:
        goto(at, page)
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, texts(at, "error"))
        assert not at.warning, (page, texts(at, "warning"))
    assert at.selectbox(key="db").value == key


def test_make_dashboard_opens_the_paper_on_derma_with_its_provenance(app):
    if not SHIPPED["paper"].is_file():
        pytest.skip("results/paper.duckdb is not built")
    at = app(str(SHIPPED["paper"])).run()
    assert at.multiselect(key="c_x:derma").value == ["derma_pt"]
    assert at.multiselect(key="c_x:lidc").value == [] and at.multiselect(key="c_x:pneumonia").value == []
    source = unescape(next(c for c in texts(at, "caption") if c.startswith("Source:")))
    assert "Selvan et al., NLDL 2025" in source and "Carbontracker (PUE 1.58" in source and "last epoch" in source
    assert "131 scored runs of 131 models" in " ".join(texts(at, "caption"))
    assert dict(at.query_params) == {}  # the default view has the shortest link
    assert not any("No experiment chosen" in w for w in texts(at, "warning"))
    at.multiselect(key="c_x:derma").set_value([]).run()  # the pages go on showing the default: said so
    assert f"No experiment chosen: the pages show {plain('derma_pt')}, the default." in texts(at, "warning")


def test_explorer_shows_what_matters(app, crafted_db):
    at = app(crafted_db, x="exp").run()
    assert cards(at)[:2] == ["tiny", "big"]
    assert len(at.get("vega_lite_chart")) == 2
    ranking = at.dataframe[-1].value
    assert list(ranking["model"]) == ["tiny", "mid", "big"]
    assert list(ranking["performance rank"]) == [3, 2, 1]
    # the energy term takes off performance - PePR: 0.95 - 0.95 / 2 for `big`
    assert ranking.set_index("model").loc["big", "lowered by energy"] == pytest.approx(0.475)
    assert list(ranking["Training energy (kWh)"]) == [1.0, 5.0, 10.0]
    assert list(ranking["GPU memory reserved (GB)"]) == [1.0, 8.0, 20.0]
    assert "of performance, and uses 10× less energy, 10× less CO2, 20× less GPU memory" in texts(at, "caption")
    assert "**15.0 points**" in texts(at, "markdown")


def test_energy_weight_decides_the_top_model(app, crafted_db):
    at = app(crafted_db, x="exp", w="none").run()
    assert top_model(at) == "big"  # no resource weighted: PePR is performance
    at.slider(key="c_w_energy").set_value(1.0).run()
    assert top_model(at) == "tiny"
    assert "w" not in at.query_params  # energy:1 is the default, left out of the link


def test_a_link_restores_every_choice_and_changes_go_back_into_it(app, crafted_db):
    query = dict(x=["exp", "scratch"], w="energy:0.5,co2:0.5", n="max", a="3", ci="FRA", t="15",
                 cap="gpu_memory:10", k="2", col="efficient", rq="i")
    at = app(crafted_db, **query).run()
    assert at.multiselect(key="c_x:digits").value == ["exp", "scratch"]
    assert at.slider(key="c_w_energy").value == 0.5 and at.slider(key="c_w_co2").value == 0.5
    assert at.slider(key="c_w_train_time").value == 0.0
    assert at.radio(key="c_n").value == "max"
    assert at.number_input(key="c_a").value == 3.0
    assert at.radio(key="c_ci").value == "country" and at.selectbox(key="c_ci_country").value == "FRA"
    assert at.number_input(key="c_t").value == 15.0
    assert at.radio(key="e_color").value == "efficient"
    assert "Training energy 50%, CO2eq emitted 50%" in " ".join(texts(at, "caption"))
    goto(at, "budget")
    assert at.number_input(key="b_cap_gpu_memory").value == 10.0
    goto(at, "runs")
    assert at.text_input(key="r_model").value == "i"
    assert {k: link(at)[k] for k in query} == {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    at.radio(key="c_n").set_value("minmax").run()
    assert "n" not in at.query_params and link(at)["a"] == ["3"]
    assert not at.number_input(key="c_t").proto.HasField("default")  # clearable, as for the caps
    at.number_input(key="c_t").set_value(None).run()  # cleared: the median model again
    assert "t" not in at.query_params


def test_budget_caps_in_readable_units_survive_other_pages_and_the_link(app, db, rows):
    run, _ = rows
    path = db([run(f"r{i}", f"m{i}", performance=0.5 + i / 10, energy_kwh=e, gpu_mem_reserved_gb=None)
               for i, e in enumerate([0.00001, 0.00002, 0.00003, 0.00004])])
    at = goto(app(path).run(), "budget")
    cap = at.number_input(key="b_cap_energy")
    assert cap.label == "Training energy (mWh)" and cap.step == 5.0  # a tenth of the typical 25 mWh, rounded up
    cap.set_value(30.0).run()  # mWh
    feasible = at.dataframe[0].value
    assert list(feasible["model"]) == ["m0", "m1", "m2"]  # PePR-E: 0.5, 0.45, 0.42
    assert list(feasible["Training energy (mWh)"]) == pytest.approx([10.0, 20.0, 30.0])
    excluded = at.dataframe[1].value
    assert list(excluded.columns[:2]) == ["model", "why excluded"]  # beside the name, not off-screen
    assert list(excluded["why excluded"]) == ["Training energy 40 mWh > 30 mWh"]
    assert link(at)["cap"] == ["energy:3e-05"]
    goto(at, "explorer")
    goto(at, "budget")
    assert at.number_input(key="b_cap_energy").value == 30.0
    assert len(at.dataframe[0].value) == 3
    # The browser lets a field be emptied only where it has no default: it snapped to 0 (a cap
    # no model meets) before.
    assert not at.number_input(key="b_cap_energy").proto.HasField("default")
    at.number_input(key="b_cap_energy").set_value(None).run()  # cleared: no cap
    assert "cap" not in link(at) and len(at.dataframe[0].value) == 4


def test_budget_answers_the_clinic_with_one_4gb_gpu(app):
    if not SHIPPED["paper"].is_file():
        pytest.skip("results/paper.duckdb is not built")
    from pepr.score import score

    runs = RunStore(SHIPPED["paper"]).runs().query("experiment == 'derma_pt'")
    table = score(runs, {"energy": 1}).table
    fits = table[table["gpu_mem_reserved_gb"] <= 4.0]
    expected = fits.sort_values("pepr", ascending=False)["model"].iloc[0]
    at = goto(app(str(SHIPPED["paper"])).run(), "budget")
    at.number_input(key="b_cap_gpu_memory").set_value(4.0).run()
    assert cards(at)[1] == expected  # best feasible by PePR, as `pepr score` ranks it
    assert len(at.dataframe[0].value) == len(fits)


def test_alpha_below_one_cannot_be_entered(app, crafted_db):
    """The box took 0.5, which the page then ignored and its link (a=0.5) refused on opening."""
    at = app(crafted_db, x="exp").run()
    at.number_input(key="c_a").set_value(0.5).run()
    assert at.number_input(key="c_a").value == 1.0
    assert not texts(at, "warning") and not at.exception and top_model(at) == "tiny"


@pytest.mark.parametrize(
    "query, shown",
    [
        (dict(w="foo:2,energy:abc"), "w: foo:2, energy:abc"),
        (dict(w="co2:1", ci="inf"), "ci: 'inf'"),
        (dict(x="![p](http://host/pixel.png)"), "x: no experiment"),
        (dict(a="nan"), "a: 'nan'"),
        (dict(cap="energy:-1"), "cap: energy:-1"),
        (dict(db="../../etc/passwd"), "db: '../../etc/passwd'"),
        (dict(t="1e400"), "t: '1e400'"),
        (dict(t="0"), "t: '0'"),  # every model "large", and a log axis from 0
        (dict(k="x"), "k: 'x'"),
    ],
)
def test_a_bad_link_value_is_named_and_changes_nothing(app, crafted_db, query, shown):
    before = RunStore(crafted_db).runs()
    at = app(crafted_db, **query).run()
    assert not at.exception
    (warning,) = texts(at, "warning")
    assert unescape(warning).startswith(f"Ignored: {shown}")
    assert re.search(r"(?<!\\)[\[\]]", warning) is None  # every bracket escaped: text, never an image or link
    assert top_model(at) == "tiny"  # the defaults: PePR-E on `exp`
    pd.testing.assert_frame_equal(RunStore(crafted_db).runs(), before)


def test_carbon_intensity_re_prices_a_live_grid(app, db, rows):
    run, _ = rows
    path = db([run("a", "clean", performance=0.9, energy_kwh=4.0, co2_kg=0.2, carbon_intensity=50.0, country="DNK"),
               run("b", "dirty", performance=0.9, energy_kwh=2.0, co2_kg=1.6, carbon_intensity=800.0, country="DNK")])
    at = app(path, w="co2:1").run()
    assert top_model(at) == "clean"
    assert any("measured at 50 to 800 g CO2eq/kWh" in c for c in texts(at, "caption"))
    at.radio(key="c_ci").set_value("country").run()
    assert at.selectbox(key="c_ci_country").value == "DNK"  # the runs' own country first
    assert top_model(at) == "dirty"
    assert link(at)["ci"] == ["DNK"]


def test_names_from_data_are_shown_as_text(app, db, rows):
    run, _ = rows
    evil = "![p](http://host/pixel.png)"
    path = db([run("a", evil, experiment=evil, dataset=evil, performance=0.9),
               run("b", "other", experiment=evil, dataset=evil, performance=0.5, energy_kwh=5),
               run("c", "other", experiment="scratch", dataset=evil, pretrained=False, performance=0.4)])
    at = app(path).run()  # Comparisons: the dataset in a title, the model on one side only in a caption
    for page in PAGES:
        goto(at, page)
        assert not at.exception, page
        for kind in ("markdown", "caption", "info", "warning", "success", "error", "subheader"):
            for shown in texts(at, kind):
                assert "![p](" not in shown, (page, kind, shown)
    goto(at, "explorer")
    assert top_model(at) == evil


def test_unmeasured_resource_is_named_not_fatal(app, db, rows):
    run, _ = rows
    path = db([run(f"r{i}", f"m{i}", gpu_mem_reserved_gb=None, performance=0.5 + i / 10) for i in range(3)])
    at = app(path, w="gpu_memory:1").run()
    assert at.slider(key="c_w_gpu_memory").disabled
    assert "Not measured in these experiments (greyed out): GPU memory reserved." in texts(at, "caption")
    assert any("GPU memory" in w for w in texts(at, "warning"))
    assert top_model(at) == "m2"  # scored on performance alone


@pytest.mark.parametrize(
    "state, message",
    [
        ("missing", "does not exist (yet)"),
        ("empty", "holds no runs"),
        ("not duckdb", "Cannot read this database (exists but is not a DuckDB database file)."),
        ("a folder", "Cannot read this database (a folder, not a database file)."),
        ("only failed", "No scoreable runs"),
        ("single model", "Only one model in exp"),
    ],
)
def test_hard_states_show_a_message(app, db, rows, tmp_path, state, message):
    run, crafted = rows
    path = tmp_path / "state.duckdb"
    if state == "empty":
        RunStore(path).ensure()
    elif state == "not duckdb":
        path.write_text("model,energy\nresnet,1\n")
    elif state == "a folder":
        path.mkdir()
    elif state == "only failed":
        path = db([row for row in crafted if row["status"] != "ok"])
    elif state == "single model":
        path = db([run("one", "solo")])
    at = app(str(path)).run()
    assert not at.exception
    shown = " ".join(texts(at, "info") + texts(at, "warning"))
    assert message in shown
    assert str(tmp_path) not in shown  # nothing about the server's files
    goto(at, "runs")
    assert not at.exception
    goto(at, "data")
    assert not at.exception and at.button(key="d_fetch")


@pytest.mark.parametrize("read", [None, "epochs", "benchmarks"])
def test_a_locked_database_says_busy_whichever_read_meets_the_lock(app, crafted_db, monkeypatch, read):
    """Another process holds the lock from before the first read (None), or takes it after the
    runs were read, before the epochs or the benchmarks are: the page says the file is busy (a
    traceback, but for the first read) and recovers once it is released."""
    import dashboard.data

    monkeypatch.setattr(dashboard.data, "READ_TIMEOUT_S", 0.3)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,sys; sys.stdin.readline(); c=duckdb.connect({crafted_db!r}); print('x', flush=True); sys.stdin.read()"],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
    )

    def lock() -> None:
        if holder.poll() is None and not getattr(holder, "locked", False):
            holder.stdin.write("lock\n")
            holder.stdin.flush()
            holder.locked = holder.stdout.readline() == "x\n"  # the lock is held

    if read is None:
        lock()
    else:
        original = getattr(dashboard.data, read)

        def lock_then_read(path):
            lock()
            return original(path)

        lock_then_read.clear = original.clear  # dashboard.data.refresh clears every cached read
        monkeypatch.setattr(dashboard.data, read, lock_then_read)
    try:
        at = app(crafted_db).run()
        assert holder.locked and not at.exception
        assert any("being written by another process" in i for i in texts(at, "info"))
    finally:
        holder.stdin.close()  # the holder exits and releases the lock
        holder.wait(timeout=30)
    dashboard.data.refresh()
    at.run()  # the retry: readable again
    assert top_model(at) == "tiny"


def test_curves_offer_recorded_axes_mark_the_peak_and_follow_the_database(app, crafted_db, rows, user_dir):
    run, _ = rows
    user_dir.mkdir()
    make_db(user_dir / "bare.duckdb", [run("p1", "m1", seed=4)], pd.DataFrame({"run_id": "p1", "epoch": [1, 2], "test_metric": [0.5, 0.6]}))
    at = app(crafted_db, x="exp").run()
    goto(at, "curves")
    assert at.radio(key="k_x").options == ["cumulative energy", "cumulative time", "epochs"]
    peaks = at.dataframe[-1].value
    # test 0.5, 0.75, 0.8, 0.81 at a quarter of the energy each: PePR peaks at epoch 2
    assert list(peaks["peak epoch"]) == [2, 2, 2]
    assert list(peaks["run"]) == ["tiny · exp", "mid · exp", "big · exp"]
    assert not any("every epoch costs the same" in c for c in texts(at, "caption"))
    at.run()
    assert "r" not in link(at) and "ax" not in link(at)  # defaults stay out of the link
    mid = next(r for r in at.multiselect(key="k_runs").value if "mid" in r)
    at.multiselect(key="k_runs").set_value([mid]).run()
    at.radio(key="k_x").set_value("cum_time_s").run()
    assert link(at)["r"] == [mid] and link(at)["ax"] == ["cum_time_s"]  # choices go in
    at.slider(key="c_w_co2").set_value(0.5).run()
    at.number_input(key="c_a").set_value(2.0).run()
    at.selectbox(key="db").set_value("user:bare").run()
    goto(at, "curves")
    assert not at.exception
    assert at.multiselect(key="k_runs").value == ["p1"]  # the default runs, picked again
    # The what-if choices mean the same in any database: kept (they were reset to the defaults).
    assert (at.slider(key="c_w_energy").value, at.slider(key="c_w_co2").value) == (1.0, 0.5)
    assert at.number_input(key="c_a").value == 2.0
    assert not at.warning and not any("ignored" in t for t in texts(at, "caption"))
    assert at.radio(key="k_x").options == ["epochs"]
    assert any("epochs stand in" in c for c in texts(at, "caption"))
    assert any("every epoch costs the same, so an early peak" in c for c in texts(at, "caption"))  # said, not claimed
    assert list(at.dataframe[-1].value["run"]) == ["m1 · exp · seed 4"]


def test_curves_name_the_chosen_runs_they_cannot_draw(app, db, rows):
    run, _ = rows
    path = db([run("p1", "m1"), run("p2", "m2")], pd.DataFrame({"run_id": "p1", "epoch": [1, 2], "test_metric": [0.5, 0.6]}))
    at = goto(app(path).run(), "curves")
    assert sorted(at.multiselect(key="k_runs").value) == ["p1", "p2"]
    assert "Not drawn, no per-epoch records: m2 · exp." in [unescape(c) for c in texts(at, "caption")]
    assert list(at.dataframe[-1].value["run"]) == ["m1 · exp"]


def upload(at, name: str, content: bytes):
    at.get("file_uploader")[0].set_value((name, content, "text/csv")).run()
    at.button(key="d_import").click().run()
    return at


def test_data_page_imports_into_a_new_user_database_never_into_results(app, user_dir, paper_dir):
    head = b"".join((paper_dir / "all_results.csv").read_bytes().splitlines(keepends=True)[:4])
    shipped = {p: p.stat().st_mtime_ns for p in (ROOT / "results").glob("*.duckdb")}
    at = goto(app(None).run(), "data")
    at.text_input(key="d_name").set_value("mine").run()
    upload(at, "all_results.csv", head)
    assert not at.exception
    assert "mine: added 3 run(s)." in texts(at, "success")
    assert len(RunStore(user_dir / "mine.duckdb").runs()) == 3
    assert at.selectbox(key="db").value == "user:mine"  # and it is open now
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "results").glob("*.duckdb")} == shipped
    goto(at, "explorer")
    assert at.get("vega_lite_chart")  # the new runs are scored at once


BAD_UPLOADS = [
    ("mine.csv", b"model,dataset\nresnet,derma\n", "mine.csv: missing column(s): num_param"),
    ("empty.csv", b"", "empty.csv"),
    ("bytes.csv", bytes(range(256)) * 4, "bytes.csv"),
]


@pytest.fixture(scope="module")
def good_rows(paper_dir):
    return (paper_dir / "all_results.csv").read_bytes().splitlines(keepends=True)


def _broken(good_rows, column: str, value: str) -> bytes:
    header = good_rows[0].decode().rstrip("\r\n").replace('"', "").split(",")
    row = good_rows[1].decode().rstrip("\r\n").split(",")
    row[header.index(column)] = value
    return good_rows[0] + (",".join(row) + "\n").encode()


@pytest.mark.parametrize(
    "column, value",
    [("energy", "abc"), ("energy", "-1"), ("energy", "inf"), ("test_09", "1.5"), ("test_09", "nan"), ("num_param", "-5"), ("co2", "")],
)
def test_a_bad_upload_is_refused_with_its_reason_and_nothing_written(app, crafted_db, user_dir, good_rows, column, value):
    target = user_dir / "kept.duckdb"
    user_dir.mkdir()
    target.write_bytes(Path(crafted_db).read_bytes())
    before = RunStore(target).runs()
    at = goto(app(None, db="user:kept").run(), "data")
    assert at.selectbox(key="d_target").value == "user:kept"
    upload(at, "all_results.csv", _broken(good_rows, column, value))
    assert not at.exception
    (message,) = texts(at, "error")
    assert unescape(message).startswith("Import failed: all_results.csv") and column in unescape(message)
    pd.testing.assert_frame_equal(RunStore(target).runs(), before)


@pytest.mark.parametrize("name, content, message", BAD_UPLOADS)
def test_a_broken_file_is_refused_and_no_database_is_created(app, user_dir, name, content, message):
    at = goto(app(None).run(), "data")
    at.text_input(key="d_name").set_value("fresh").run()
    upload(at, name, content)
    assert not at.exception
    (error,) = texts(at, "error")
    assert unescape(error).startswith(f"Import failed: {message}")
    assert not (user_dir / "fresh.duckdb").exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/x", "a b", ""])
def test_a_new_database_must_be_a_plain_name(app, user_dir, tmp_path, name):
    at = goto(app(None).run(), "data")
    at.text_input(key="d_name").set_value(name).run()
    upload(at, "all_results.csv", b"model\n")
    (error,) = texts(at, "error")
    assert error.startswith("Import refused: a database name is")
    assert not list(tmp_path.glob("*.duckdb")) and not (tmp_path / "escape.duckdb").exists()


@pytest.fixture
def paper_server(paper_dir):
    """The paper's two files over real HTTP on localhost."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(paper_dir), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("localhost", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()


def test_data_page_download_imports_the_pinned_files(app, user_dir, paper_server, monkeypatch):
    import pepr.paper

    monkeypatch.setattr(pepr.paper, "PAPER_RESULTS_URL", f"{paper_server}/all_results.csv")
    monkeypatch.setattr(pepr.paper, "PAPER_MODELS_URL", f"{paper_server}/model_names.csv")
    at = goto(app(None).run(), "data")
    at.text_input(key="d_name").set_value("paper").run()
    at.button(key="d_fetch").click().run()
    assert texts(at, "error") == []
    assert texts(at, "success") == ["paper: added 1048 run(s)."]
    assert len(RunStore(user_dir / "paper.duckdb").runs()) == 1048


def test_data_page_download_failure_is_said_and_writes_nothing(app, user_dir, monkeypatch):
    import pepr.paper

    monkeypatch.setattr(pepr.paper, "PAPER_RESULTS_URL", "http://localhost:9/all_results.csv")  # discard port
    at = goto(app(None).run(), "data")
    at.text_input(key="d_name").set_value("paper").run()
    at.button(key="d_fetch").click().run()
    assert texts(at, "success") == []
    (error,) = texts(at, "error")
    assert "cannot download" in unescape(error)
    assert not (user_dir / "paper.duckdb").exists()


def test_runs_page_lists_every_status_in_readable_units(app, crafted_db):
    at = goto(app(crafted_db).run(), "runs")
    table = at.dataframe[-1].value
    assert set(table["status"]) == {"ok", "failed", "interrupted"}
    assert "energy_kwh" not in table and "gpu_mem_reserved_gb" not in table
    ok = table[table["status"] == "ok"].set_index("model")
    assert ok.loc["tiny", "Training energy (kWh)"].tolist() == [1.0, 1.0]
    # RAM (0.1 of 1 kWh by default) is the only estimated part of the crafted runs
    assert ok.loc["tiny", "energy estimated"].tolist() == pytest.approx([0.1, 0.1])
    assert ok.loc["big", "energy estimated"].tolist() == pytest.approx([0.01, 0.01])
    assert "CUDA out of memory" in set(table["error"].dropna())
    assert "None" not in set(table["error"]) and "" in set(table["error"])  # no error: an empty cell
    at.multiselect(key="r_status").set_value(["failed"]).run()
    assert list(at.dataframe[-1].value["model"]) == ["broken"]
    assert any(c.startswith("1 run: 1 failed;") for c in texts(at, "caption"))  # not "1 runs"
    assert link(at)["rs"] == ["failed"]
    at.text_input(key="r_model").set_value("no such model").run()
    assert "No run matches these filters." in texts(at, "info") and not at.exception
    # A status this database has no run of (kept from another, or in a link): all runs, as the
    # filter shows "all"; an unknown experiment is named as ignored.
    at = goto(app(crafted_db, rs="running", rx="nope").run(), "runs")
    assert len(at.dataframe[-1].value) == 8 and not at.info
    assert "Ignored: rx: no experiment 'nope' in this database" in unescape(" ".join(texts(at, "warning")))


def test_a_lone_model_pooled_with_other_experiments_is_flagged(app, db, rows):
    make, _ = rows
    path = db([make("r1", "lonely", "solo", performance=0.7, energy_kwh=50.0),
               make("r2", "a", performance=0.9, energy_kwh=1.0), make("r3", "b", performance=0.8, energy_kwh=2.0)])
    at = app(path, x=["solo", "exp"]).run()
    (note,) = [i for i in texts(at, "info") if "Only one model" in i]
    assert "solo" in note and "ranks higher than its cost warrants" in note
    at = app(path, x="solo").run()
    assert "cost warrants" not in " ".join(texts(at, "info"))  # alone in view: nothing is skewed
    at = app(path, x=["solo", "exp"], w="none").run()
    assert "cost warrants" not in " ".join(texts(at, "info"))  # no cost weighted: PePR is performance for all
    at = app(path, x=["solo", "exp"], n="max").run()  # share of max: the lone model is its own dearest
    (note,) = [i for i in texts(at, "info") if "Only one model" in i]
    assert "shares of its own dearest run's" in note and "cost warrants" not in note


def test_a_model_with_0_parameters_is_named_where_the_size_chart_leaves_it_out(app, db, rows):
    make, _ = rows
    at = app(db([make("r1", "frozen", params=0), make("r2", "a", energy_kwh=2.0), make("r3", "b", energy_kwh=3.0)])).run()
    assert any(c.startswith("Not drawn, recorded with 0 parameters") and "frozen" in c for c in texts(at, "caption"))


def test_sensitivity_of_one_model_says_so_instead_of_an_empty_chart(app, db, rows):
    make, _ = rows
    at = goto(app(db([make("r1", "lonely")]), w="energy:0.5,co2:0.5").run(), "sensitivity")
    assert not at.exception and not at.get("vega_lite_chart")
    assert any("One model in view" in i for i in texts(at, "info"))


def test_sensitivity_needs_a_second_weight(app, crafted_db):
    at = goto(app(crafted_db, x="exp").run(), "sensitivity")
    assert [m.value for m in at.metric] == ["-1.00", "1.00"]
    assert [m.label for m in at.metric] == ["Kendall tau vs the ranking by performance",
                                            "Kendall tau vs the ranking by raw energy (least first)"]
    assert not at.get("vega_lite_chart") and any("nothing to vary" in i for i in texts(at, "info"))
    at = goto(app(crafted_db, x="exp", w="energy:0.5,co2:0.5", sn="200").run(), "sensitivity")
    table = at.dataframe[-1].value.set_index("model")
    assert table.loc["tiny", "P(rank 1)"] == 1.0  # cheapest in energy and CO2 alike
    assert table["P(top 5)"].tolist() == [1.0, 1.0, 1.0]  # only three models
    assert at.select_slider(key="s_n").value == 200
    assert any("within about ±0.07 (two standard errors at most)" in c for c in texts(at, "caption"))  # 1/sqrt(200)
    assert at.get("vega_lite_chart")


def test_comparisons_label_the_papers_test_and_the_paired_one(app, crafted_db):
    at = goto(app(crafted_db, x="exp").run(), "comparisons")
    headers = [list(frame.value.columns) for frame in at.dataframe]
    stats = next(h for h in headers if "paper's test: unpaired t p" in h)
    assert stats[5:] == ["paired: Wilcoxon p", "Holm-adjusted p (Wilcoxon)", "pairs (same model)",
                         "median paired difference (pretrained - from scratch)", "paired: t p", "Mann-Whitney p",
                         "Welch p", "paper's test: unpaired t p"]  # the sound tests beside the medians, in view
    assert any("sound tests on this page" in c.value for c in at.caption)
    costs = at.dataframe[0].value.set_index("group")
    assert costs.loc["pretrained", "median energy per run"] == "5 kWh"
    assert costs.loc["from scratch", "total energy"] == "16 kWh"


def test_top_five_against_the_pinned_baseline(app, crafted_db):
    at = app(crafted_db, x="exp").run()
    at.slider(key="c_w_energy").set_value(0.0).run()
    changes = next(f.value for f in at.dataframe if "change" in f.value)
    assert changes.set_index("model")["change"].to_dict() == {"big": "up 2", "mid": "same", "tiny": "down 2"}
    at.button(key="c_pin").click().run()
    changes = next(f.value for f in at.dataframe if "change" in f.value)
    assert set(changes["change"]) == {"same"}
    assert link(at)["bw"] == ["none"]


def test_top_five_with_co2_and_memory_in_three_interactions_with_the_clis_numbers(app, tmp_path):
    """The acceptance question: how does the top 5 change when CO2 and memory are weighed too?"""
    if not SHIPPED["paper"].is_file():
        pytest.skip("results/paper.duckdb is not built")
    import csv
    import io
    from contextlib import redirect_stdout

    from pepr.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["score", "--db", str(SHIPPED["paper"]), "--experiment", "derma_pt",
                     "--weights", "energy=1,co2=1,gpu_memory=1", "--format", "csv"]) == 0
    cli = {row["model"]: float(row["pepr"]) for row in csv.DictReader(io.StringIO(out.getvalue()))}
    at = app(str(SHIPPED["paper"])).run()
    at.slider(key="c_w_co2").set_value(1.0).run()  # 1
    at.slider(key="c_w_gpu_memory").set_value(1.0).run()  # 2: the Explorer shows it at once
    ranking = at.dataframe[-1].value
    assert dict(zip(ranking["model"], ranking["PePR"])) == pytest.approx({m: round(v, 4) for m, v in cli.items()}, abs=1e-4)
    changes = next(f.value for f in at.dataframe if "change" in f.value)
    top_cli = sorted(cli, key=cli.get, reverse=True)[:5]
    assert list(changes.loc[changes["rank now"] <= 5, "model"]) == top_cli
    assert set(changes["change"]) - {"same"}  # something moved, entered or left


def test_data_page_imports_ones_own_table_into_a_user_database(app, user_dir):
    shipped = {p: p.stat().st_mtime_ns for p in (ROOT / "results").glob("*.duckdb")}
    at = goto(app(None).run(), "data")
    at.text_input(key="o_name").set_value("own").run()
    table = b"arch,acc,energy_Wh\nresnet18,91.5,12.5\nvit_tiny,88,3\n"
    at.file_uploader(key="ip_table").set_value(("results.csv", table, "text/csv"))
    at.run()
    at.text_input(key="ip_exp_name").set_value("mine").run()
    for field, column in {"model": "arch", "performance": "acc", "energy": "energy_Wh"}.items():
        at.selectbox(key=f"ip_col_{field}").set_value(column)
    at.run()
    at.selectbox(key="ip_unit_performance").set_value("%")
    at.selectbox(key="ip_unit_energy").set_value("Wh")
    at.run()
    at.button(key="ip_import").click().run()
    assert not at.exception
    # Opened at once, its runs in view: the sidebar had said the old database until the next click.
    assert at.selectbox(key="db").value == "user:own" and "own: added 2 run(s)" in texts(at, "success")[0]
    assert texts(at, "caption")[0].startswith("Source: imported from results.csv")  # the view is of it
    runs = RunStore(user_dir / "own.duckdb").runs().set_index("model")
    assert runs.loc["resnet18", "energy_kwh"] == 0.0125 and runs.loc["vit_tiny", "performance"] == 0.88
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "results").glob("*.duckdb")} == shipped
    # The next change goes to the database just made, upload and mapping kept: before, "own"
    # was refused as a name already taken and the panel went away.
    at.selectbox(key="ip_unit_energy").set_value("kWh").run()
    assert at.selectbox(key="o_target").value == "user:own" and not at.error
    assert at.selectbox(key="db").value == "user:own"  # the page goes on with it, as after the paper's import
    at.checkbox(key="ip_replace").check().run()
    at.button(key="ip_import").click().run()
    assert RunStore(user_dir / "own.duckdb").runs().set_index("model").loc["resnet18", "energy_kwh"] == 12.5
    assert "replaced 2 stored with other values" in texts(at, "success")[0] and at.selectbox(key="db").value == "user:own"


def test_explorer_offers_the_report_of_the_one_experiment_in_view(app):
    at = app(None).run()  # the paper's derma_pt
    assert not at.exception
    labels = [button.label for button in at.get("download_button")]
    assert "LaTeX table" in labels and any(label.startswith("Report:") for label in labels)


def test_ranking_download_keeps_names_from_starting_spreadsheet_formulas(app, db, rows, monkeypatch):
    import csv
    import io

    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files = {}
    keep = MemoryMediaFileStorage.load_and_get_id

    def capture(self, data, mimetype, kind, filename=None):
        files[filename] = data
        return keep(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", capture)
    make, _ = rows
    at = app(db([make("r1", '=HYPERLINK("http://x.test","open")', performance=0.8),
                 make("r2", "fine", performance=0.9, energy_kwh=2.0)])).run()
    assert not at.exception
    ranking = list(csv.DictReader(io.StringIO(files["pepr-ranking.csv"].decode())))
    assert [row["model"] for row in ranking] == ["'=HYPERLINK(\"http://x.test\",\"open\")", "fine"]
    assert float(ranking[0]["PePR"]) == 0.8  # the cheaper model, R = 0


def test_a_deployment_device_prices_inference_and_caps_latency(app, db, rows):
    """Benchmarks on two devices: the chosen one (in the link) ranks by latency per image."""
    make, _ = rows
    path = db([make("r1", "fast_net", performance=0.80), make("r2", "slow_net", performance=0.90),
               make("r3", "unbenched_net", performance=0.95)])
    stamp = pd.Timestamp("2026-11-26 08:00")
    benches = [dict(bench_id=f"{device[:3]}{model}{batch}", bench_key=f"{model}-{device}-{batch}", model=model,
                    device=device, image_size=64, batch_size=batch, status="ok", started_at=stamp,
                    latency_median_s=latency * batch, energy_per_image_j=latency * 10,
                    latency_p95_s=latency * batch * (10 if (model, device) == ("slow_net", "Server GPU") else 1.2))
               for device, scale in (("Laptop CPU, 2 threads", 1.0), ("Server GPU", 0.01))
               for model, latency in (("fast_net", 0.005 * scale), ("slow_net", 0.050 * scale))
               for batch in (1, 8)]
    RunStore(path).append_benchmarks(pd.DataFrame(benches))
    at = app(path, w="infer_latency:1", d="Server GPU").run()
    assert not at.exception
    assert at.selectbox(key="c_d").value == "Server GPU"
    ranking = at.dataframe[-1].value if at.dataframe else None
    assert at.query_params.get("d") == "Server GPU"  # kept in the link
    cards = [t.value for t in at.markdown if "fast" in t.value or "slow" in t.value]
    assert cards and "fast" in cards[0]  # the top PePR card: faster at a small accuracy cost
    (left_out,) = [frame.value for frame in at.dataframe if "why left out" in frame.value]
    assert list(left_out.columns) == ["run", "experiment", "model", "why left out"]  # words, not fields
    assert left_out["why left out"].str.startswith("no inference latency: no usable benchmark of this model "
                                                   "on the chosen device").all() and ranking is not None
    busy = [unescape(c) for c in texts(at, "caption") if "busy machine" in c]  # slow_net's p95 is 10x its median
    assert busy == ["Source: inference benchmarks: 1 model(s) were benchmarked on a busy machine (p95 latency over 3x "
                    "the median, or one image taking over 1.5x a whole larger batch), so their inference costs may read "
                    "high: slow_net; bench them again on an idle one (pepr-agent bench --rebench)"]
    # "At most 0.1 ms per image on this server": the slower, more accurate model is out.
    at = goto(app(path, d="Server GPU", cap="infer_latency:0.0001").run(), "budget")
    assert not at.exception
    assert at.number_input(key="b_cap_infer_latency").value == pytest.approx(100)  # in µs
    cards = [t.value for t in at.markdown if "fast" in t.value or "slow" in t.value]
    assert cards and all("fast" in card for card in cards)


def test_the_paper_ranked_by_latency_on_a_2_core_cpu_matches_the_cli(app):
    """A newcomer's first question on the shipped study: best Derma model per millisecond."""
    import json

    cli = subprocess.run([sys.executable, "-m", "pepr", "score", "--db", str(ROOT / "results" / "paper.duckdb"),
                          "--experiment", "derma_pt", "--weights", "infer_latency=1", "--format", "json"],
                         capture_output=True, text=True, check=True)
    ranked = sorted(json.loads(cli.stdout), key=lambda row: row["rank"])
    at = app(None, w="infer_latency:1").run()
    assert not at.exception and at.selectbox(key="c_d").value.endswith("2 threads")
    assert top_model(at) == ranked[0]["model"]
    busy = [line.removeprefix("note: ") for line in cli.stderr.splitlines() if "busy machine" in line]
    shown = [unescape(c) for c in texts(at, "caption") if "busy machine" in c]
    assert shown == [f"Source: inference benchmarks: {line}" for line in busy]  # as the CLI says, if it does
    at = app(None).run()  # energy weighted, no cap on latency: as the CLI, no word of the benchmarks
    assert not any("busy machine" in c for c in texts(at, "caption"))


def test_link_values_a_page_cannot_use_are_named_as_ignored(app, crafted_db):
    """A cap on what no model measured, and a run not in the view, were dropped without a word."""
    at = goto(app(crafted_db, x="exp", cap="energy:5,infer_latency:0.01").run(), "budget")
    assert "Ignored: the cap on Inference latency per image (batch 1), which no model here has measured." in texts(at, "warning")
    at = goto(app(crafted_db, x="exp", r="bogus").run(), "curves")
    assert "Ignored: r=bogus, not a run in this view." in texts(at, "warning") and not at.exception
    assert len(at.multiselect(key="k_runs").value) == 3  # the top three instead
