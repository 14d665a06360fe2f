"""`pepr report`: the files parse, the numbers equal `pepr score`'s, what it cost and how it was
measured are stated, and names from data stay text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from pepr.cli import main
from pepr.errors import PeprError
from pepr.report import build_report
from pepr.text import latex_text, markdown_text
from pepr.store import RunStore

# Energy in kWh, CO2 in kg. "odd_net&co" and "<b>bold</b>" test escaping.
RUNS = [
    ("r1", "small_net", 0.80, 0.002, 0.0004, "rapl", "gpu-energy-counter", "ram-estimate"),
    ("r2", "odd_net&co", 0.90, 0.010, 0.0020, "rapl", "gpu-energy-counter", "ram-estimate"),
    ("r3", "<b>bold</b>", 0.85, 0.004, 0.0008, "tdp-estimate", "gpu-energy-counter", "ram-estimate"),
    ("r4", "mid_net", 0.70, 0.006, 0.0012, "imported", "imported", "imported"),
]
WEIGHTS = "energy=1"


def pepr(*args):
    return subprocess.run([sys.executable, "-m", "pepr", *map(str, args)], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "runs.duckdb"
    frame = pd.DataFrame(
        RUNS, columns=["run_id", "model", "performance", "energy_kwh", "co2_kg",
                       "energy_cpu_method", "energy_gpu_method", "energy_ram_method"],
    ).assign(
        job_key=lambda f: f["run_id"], experiment="exp", source="agent", status="ok", country="DNK",
        carbon_intensity=200.0, device="NVIDIA A100", energy_tool="codecarbon", dataset="derma",
        metric="test_accuracy", train_time_s=[60.0, 300.0, 120.0, 180.0], gpu_mem_reserved_gb=[8.0, 4.0, 2.0, 2.0],
    )
    frame.loc[3, ["source", "provenance", "energy_tool"]] = ["import", "imported from mine.csv (SHA-256 abc)", None]
    failed = dict(run_id="r5", job_key="r5", model="crashed", experiment="exp", source="agent", status="failed",
                  energy_kwh=None, energy_cpu_method="not-sampled")  # stopped before the meter's first reading
    RunStore(path).import_runs(pd.concat([frame, pd.DataFrame([failed])], ignore_index=True))
    return path


@pytest.fixture(scope="module")
def report(db, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = pepr("report", "--db", db, "--experiment", "exp", "--weights", WEIGHTS, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_figures_parse(report):
    for name in ("performance_vs_resource", "pepr_ranking"):
        root = ET.parse(report / f"{name}.svg").getroot()
        assert root.tag.endswith("svg")
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    svg = (report / "performance_vs_resource.svg").read_text()
    assert "best PePR: small_net" in svg and "Training energy (Wh)" in svg


def latex_rows(text: str) -> list[list[str]]:
    body = text.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    return [[cell.strip() for cell in line.removesuffix(r"\\").strip().split(" & ")]
            for line in body.strip().splitlines()]


def test_latex_table_structure_and_escaping(report):
    text = (report / "table.tex").read_text()
    order = [text.index(token) for token in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}")]
    assert order == sorted(order)
    columns = re.search(r"\\begin\{tabular\}\{@\{\}(\w+)@\{\}\}", text).group(1)
    header = [cell.strip() for cell in text.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0].strip().removesuffix(r"\\").split(" & ")]
    rows = latex_rows(text)
    assert len(rows) == 4 and all(len(row) == len(header) == len(columns) for row in rows)
    assert r"odd\_net\&co" in text and "odd_net&co" not in text
    assert header == ["Rank", "Model", "Performance", "Training energy (Wh)", "PePR"]
    # The fixture's runs have tdp- and ram-estimates: a paper's table says so in its caption.
    assert "Energy in part estimated (modelled, not measured)" in text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX installed: the table's structure is checked instead")
def test_latex_table_compiles(report, tmp_path):
    document = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + (report / "table.tex").read_text() + "\\end{document}\n"
    (tmp_path / "doc.tex").write_text(document)
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]


def test_report_numbers_equal_pepr_score(db, report):
    scored = pepr("score", "--db", db, "--experiment", "exp", "--weights", WEIGHTS, "--format", "json")
    assert scored.returncode == 0, scored.stderr
    cli = {row["model"]: row for row in json.loads(scored.stdout)}
    rows = latex_rows((report / "table.tex").read_text())
    unescape = {r"odd\_net\&co": "odd_net&co", r"small\_net": "small_net", r"mid\_net": "mid_net",
                r"\textless{}b\textgreater{}bold\textless{}/b\textgreater{}": "<b>bold</b>"}
    for rank, model, performance, energy_wh, score in rows:
        expected = cli[unescape.get(model, model)]
        assert (int(rank), performance, score) == (expected["rank"], f"{expected['performance']:.4f}", f"{expected['pepr']:.4f}")
    markdown = (report / "report.md").read_text()
    for row in cli.values():
        assert f"| {row['rank']} | {markdown_text(row['model'])} | {row['performance']:.4f} |" in markdown


def test_markdown_states_cost_measurement_and_savings(report):
    text = (report / "report.md").read_text()
    # Totals over the runs that measured them, of five (the failed one measured no energy): 22 Wh, 4.4 g.
    assert "| Training energy | 22 Wh | 5 Wh | 4 of 5 |" in text and "| CO2eq emitted | 4.4 g |" in text
    assert "DNK; carbon intensity 200 g CO2eq/kWh" in text
    assert "NVIDIA A100 (4 run(s))" in text
    assert "| CPU | tdp-estimate | 1 | **estimate**" in text and "| RAM | ram-estimate | 3 | **estimate**" in text
    assert "never fewer than two (10 W; 3 W on ARM)" in text  # the floor that most runs draw
    assert "| GPU | gpu-energy-counter | 3 | measured: the GPU's own energy counter |" in text
    assert "| CPU | not-sampled | 1 | not measured: the run ended before the meter's first reading |" in text
    from pepr.report import _trust
    assert _trust("gpu-fan-estimate").startswith("**estimate**: modelled, not measured")  # a name of a newer agent
    assert "imported from mine.csv (SHA-256 abc)" in text
    assert "Not scored: 1 run(s), crashed: status failed." in text  # which model, not only how many
    # small_net (best PePR: 0.80 at 2 Wh) against odd_net&co (best performance: 0.90 at 10 Wh).
    assert "gives up 0.1000 of performance (10.00 points)" in text
    assert "saves 80.0% of training energy: 8 Wh (2 Wh instead of 10 Wh)" in text
    assert "saves 80.0% of training time: 4 min (1 min instead of 5 min)" in text
    assert "costs 100.0% more GPU memory reserved: 4 GB (8 GB instead of 4 GB)" in text  # not "100% of"
    assert "By performance alone (the rank is still by PePR):" in text and "performance metric: test\\_accuracy" in text


def test_names_from_data_stay_text(report):
    text = (report / "report.md").read_text()
    assert "<b>" not in text and r"\<b\>bold\</b\>" in text
    assert latex_text("a_b&c%d$e#f{g}h~i^j\\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k")
    assert latex_text("<b>|`") == r"\textless{}b\textgreater{}\textbar{}\textasciigrave{}"


def test_a_model_with_several_seeds_is_one_row_of_means_as_in_the_dashboard(tmp_path):
    RunStore(tmp_path / "seeds.duckdb").import_runs(pd.DataFrame([
        dict(run_id="a0", model="a", seed=0, performance=0.8, energy_kwh=1.0),
        dict(run_id="a1", model="a", seed=1, performance=0.9, energy_kwh=3.0),
        dict(run_id="b0", model="b", seed=0, performance=0.7, energy_kwh=2.0),
    ]).assign(experiment="exp", status="ok", dataset="d", metric="test_accuracy", source="agent",
              job_key=lambda f: f["run_id"]))
    seeds = RunStore(tmp_path / "seeds.duckdb").runs()
    report = build_report(seeds, "exp", {"energy": 1})
    # Min-max over the runs' energy (1, 3, 2): R = 0, 1, 0.5; PePR = 0.8, 0.45, 0.7 / 1.5.
    assert latex_rows(report.latex) == [["1", "a", "0.8500", "2", f"{(0.8 + 0.45) / 2:.4f}"],
                                        ["2", "b", "0.7000", "2", f"{0.7 / 1.5:.4f}"]]
    assert "of 2 models in experiment" in report.latex and "estimated" not in report.latex  # no method recorded
    assert "2 model(s) in 3 scored run(s)" in report.markdown
    assert "is ranked by their means" in report.markdown
    assert "also the best performer" in report.markdown  # a: best mean PePR and best mean performance
    assert "is ranked by their means" not in build_report(seeds[seeds["seed"] == 0], "exp", {"energy": 1}).markdown


def test_a_co2_report_across_grids_says_so(db):
    runs = RunStore(db).runs()
    assert "CO2 across grids" not in build_report(runs, "exp", {"co2": 1}).markdown  # all at 200 g/kWh
    runs.loc[runs["run_id"] == "r1", "co2_kg"] *= 2
    assert ("- **CO2 across grids**: the runs emitted 200 to 400 g CO2eq per kWh (other grids or hours): "
            "their CO2 ranks where they ran as well as what they used.") in build_report(runs, "exp", {"co2": 1}).markdown
    assert "CO2 across grids" not in build_report(runs, "exp", {"energy": 1}).markdown


def test_the_best_is_also_the_strongest(db):
    runs = RunStore(db).runs()
    only = runs[runs["model"].isin(["small_net", "mid_net"])]
    only = only.assign(performance=only["model"].map({"small_net": 0.9, "mid_net": 0.7}))
    report = build_report(only, "exp", {"energy": 1})
    assert "is also the best performer: nothing to trade" in report.markdown


@pytest.mark.parametrize("missing", ["altair", "vl_convert"])
def test_report_without_its_extra_says_how_to_get_it(db, missing, tmp_path):
    script = (f"import sys; sys.modules[{missing!r}] = None; from pepr.cli import main; "
              f"sys.exit(main(['report', '--db', {str(db)!r}, '--experiment', 'exp', '--out', {str(tmp_path / 'out')!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (
        2, f"pepr: pepr report needs the report extra ({missing} is missing): pip install 'pepr[report]'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--experiment", "nope"], "--experiment: {db} has no experiment 'nope' (known: exp)"),
    (["--experiment", "exp", "--weights", "speed=1"], "unknown resource 'speed'"),
    (["--experiment", "exp", "--weights", "infer_time=1"], "--weights: infer_time measured in no run of experiment exp; weight what was measured"),
    (["--experiment", "exp", "--weights", "energy=1,params=1"], "--weights: params measured in no run of experiment exp; weight what was measured"),
])
def test_report_mistakes(db, argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--db", str(db), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message.format(db=db) in err and err.count("\n") == 1
    assert not out.exists()



def test_an_unwritable_out_is_one_line_and_leaves_no_partial_report(db, tmp_path, capsys):
    args = ["report", "--db", str(db), "--experiment", "exp", "--out"]
    blocked = tmp_path / "blocked"
    (blocked / "table.tex").mkdir(parents=True)  # report.md could be written, table.tex not
    assert main([*args, str(blocked)]) == 2
    assert capsys.readouterr().err == f"pepr: --out {blocked}: table.tex is a folder\n"
    assert [p.name for p in blocked.iterdir()] == ["table.tex"]
    file = tmp_path / "file"
    file.write_text("x")
    assert main([*args, str(file / "sub")]) == 2
    assert capsys.readouterr().err == f"pepr: --out {file / 'sub'}: Not a directory\n"
    assert main([*args, ""]) == 2
    assert "--out: empty" in capsys.readouterr().err


def test_a_report_that_fails_half_way_leaves_no_folder_it_made(db, tmp_path, capsys, monkeypatch):
    import errno
    import pathlib

    def full(self, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "replace", full)  # every file written, none put in place
    out = tmp_path / "new" / "report"
    assert main(["report", "--db", str(db), "--experiment", "exp", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"pepr: --out {out}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_missing_database(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "no.duckdb"), "--experiment", "x", "--out", str(tmp_path / "o")]) == 2
    assert "no such database file" in capsys.readouterr().err


@pytest.mark.parametrize("performance, costs, alpha, placed", [
    # the cheapest, worst model wins: its name above it, off the x axis
    ([0.79, 0.81, 0.80, 0.84], [0.4, 1.2, 1.3, 2.9], 1, ("left", "bottom")),
    # costs all but ignored, the dearest, best one wins: its name left of it and below
    ([0.84, 0.80, 0.81, 0.79], [3.0, 2.0, 2.5, 0.1], 1e6, ("right", "top")),
])
def test_the_best_pepr_label_stays_inside_the_plot(performance, costs, alpha, placed):
    """It was always below and right of the model, so over the axis' numbers where that model
    performs worst (the common case: the cheapest wins)."""
    from pepr.report import pepr_ranking, performance_vs_resource
    from pepr.score import score

    runs = pd.DataFrame({"model": ["a_net", "b_net", "c_net", "d_net"], "experiment": "x", "status": "ok",
                         "performance": performance, "energy_kwh": costs})
    table = score(runs, {"energy": 1}, alpha=alpha).table.sort_values("rank")
    assert table["model"].iloc[0] == "a_net"
    label = performance_vs_resource(table, {"energy": 1}).to_dict()["layer"][3]["mark"]
    assert (label["align"], label["baseline"]) == placed
    bars = pepr_ranking(table).to_dict()["layer"][0]
    assert bars["encoding"]["y"]["sort"][0] == "#1 a_net"  # a name cut short keeps its rank


def test_a_report_with_nothing_to_score_says_why_with_counts():
    runs = pd.DataFrame({"run_id": ["a", "b"], "model": ["m", "n"], "experiment": "x", "status": "failed",
                         "performance": [None, None], "energy_kwh": [None, None]})
    with pytest.raises(PeprError, match=r"^runs.duckdb, experiment 'x': no run can be scored \(2 run\(s\): status failed\)$"):
        build_report(runs, "x", {}, source="runs.duckdb")


def test_names_pdflatex_cannot_typeset_are_said_and_labels_stay_apart(tmp_path):
    """`ConvNeXt‑T α` (a non-breaking hyphen, a Greek letter) stopped pdflatex, while the file
    said it needed booktabs alone; `derma a/b` and `derma-a-b` both got tab:pepr-derma-a-b."""
    import hashlib

    frame = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "model": ["ConvNeXt\u2011T \u03b1", "R\u00e9sNet \u2013 50"] * 2,
                          "experiment": ["derma a/b", "derma a/b", "derma-a-b", "derma-a-b"],
                          "performance": [0.9, 0.8, 0.9, 0.8], "energy_kwh": [2.0, 1.0, 2.0, 1.0]})
    RunStore(tmp_path / "r.duckdb").import_runs(frame.assign(job_key=frame["run_id"], status="ok", source="import"))
    runs = RunStore(tmp_path / "r.duckdb").runs()
    spaced = build_report(runs, "derma a/b", {"energy": 1})
    dashed = build_report(runs[runs["model"] != "ConvNeXt\u2011T \u03b1"], "derma-a-b", {"energy": 1})
    digest = hashlib.sha256("derma a/b".encode()).hexdigest()[:6]
    assert f"\\label{{tab:pepr-derma-a-b-{digest}}}" in spaced.latex and "\\label{tab:pepr-derma-a-b}" in dashed.latex
    assert "% and, for its names, XeLaTeX or LuaLaTeX, with a font that has \u2011\u03b1" in spaced.latex
    assert "its names need XeLaTeX or LuaLaTeX" in spaced.markdown
    assert "its names" not in dashed.latex + dashed.markdown  # é and – are pdflatex's own


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX installed: what a table needs is checked by name")
def test_what_a_table_says_it_needs_is_what_pdflatex_needs(tmp_path):
    """Each name compiled alone: plain pdflatex takes é and –; Ð only with T1, as the file says;
    α not at all, where the file sends one to XeLaTeX or LuaLaTeX."""
    from pepr.text import latex_needs

    def compiles(name: str, preamble: str = "") -> bool:
        body = f"\\documentclass{{article}}{preamble}\\begin{{document}}{latex_text(name)}\\end{{document}}\n"
        (tmp_path / "n.tex").write_text(body)
        return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "n.tex"], cwd=tmp_path,
                              capture_output=True, timeout=120).returncode == 0

    assert latex_needs(["R\u00e9sNet \u2013 50"]) is None and compiles("R\u00e9sNet \u2013 50")
    assert latex_needs(["\u00d0ata"]) == "\\usepackage[T1]{fontenc} for \u00d0"
    assert not compiles("\u00d0ata") and compiles("\u00d0ata", "\\usepackage[T1]{fontenc}")
    assert latex_needs(["\u03b1-net"]).startswith("XeLaTeX or LuaLaTeX")
    assert not compiles("\u03b1-net", "\\usepackage[T1]{fontenc}")


def test_the_papers_training_time_is_saved_per_epoch(tmp_path):
    """The paper's runs recorded their last epoch's time alone: its savings read as a whole run's."""
    frame = pd.DataFrame({"run_id": ["a", "b"], "model": ["lean", "strong"], "experiment": "derma",
                          "performance": [0.8, 0.9], "energy_kwh": [1.0, 4.0], "train_time_s": [10.0, 40.0]})
    for scope, said in (("last-epoch", "saves 75.0% of training time per epoch (the last epoch's, as recorded): 30 s"),
                        ("run", "saves 75.0% of training time: 30 s")):
        db = RunStore(tmp_path / f"{scope}.duckdb")
        db.import_runs(frame.assign(job_key=frame["run_id"], status="ok", source="import", train_time_scope=scope))
        text = build_report(db.runs(), "derma", {"energy": 1}).markdown
        assert said in text
    timed = build_report(db.runs(), "derma", {"train_time": 1})  # the last database: whole runs
    assert "Training time (s)" in timed.latex and "per epoch" not in timed.markdown + timed.latex
    timed = build_report(RunStore(tmp_path / "last-epoch.duckdb").runs(), "derma", {"train_time": 1})
    assert "| rank | model | performance | Training time (s per epoch) | PePR |" in timed.markdown
    assert "Training time (s per epoch)" in timed.latex
    assert timed.charts["performance_vs_resource"].to_dict()["layer"][0]["encoding"]["x"]["title"] == \
        "Training time (s per epoch)"
