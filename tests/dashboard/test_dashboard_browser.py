"""A real browser: `streamlit run` headless, driven by Debian's Chromium through Playwright.

Skips (with the reason) where Chromium or Playwright is missing, unless PEPR_REQUIRE_BROWSER=1
(CI), where that fails. PEPR_SCREENSHOT=docs/dashboard.png keeps the screenshot of the
default view there (the README's picture).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
CHART = "[data-testid='stVegaLiteChart']"


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("PEPR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PEPR_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def start_streamlit(script: str, env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run script` headless on a free port; returns once its health check answers."""
    port = _free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)  # the server is not listening yet: poll again until the deadline
    proc.kill()
    raise RuntimeError("streamlit did not come up: " + log_path.read_text()[-2000:])


@pytest.fixture
def serve(tmp_path):
    """Start the dashboard on a database; yields a function that returns the app's URL."""
    started = []

    def start(db, **env) -> str:
        proc, url = start_streamlit("dashboard/app.py", {"PEPR_DB": str(db), "PEPR_DATA_DIR": str(tmp_path / "user"), **env},
                                    tmp_path / f"streamlit-{len(started)}.log")
        started.append(proc)
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=20)


def _browser(playwright):
    _need(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright (python) is not installed")
    return sync_playwright()


def charts_drawn(page, count: int, timeout_ms: int = 60_000) -> None:
    """Wait until `count` charts are on the page, each drawn (a canvas or svg with a size), and
    the app is idle (no 'running' indicator)."""
    page.wait_for_function(
        """(n) => {
            const charts = [...document.querySelectorAll("[data-testid='stVegaLiteChart']")];
            const drawn = charts.filter(c => [...c.querySelectorAll('canvas, svg')].some(e => e.getBoundingClientRect().width > 50));
            const state = document.querySelector("[data-testid='stApp']")?.getAttribute("data-test-script-state");
            return drawn.length >= n && state === "notRunning";
        }""",
        arg=count,
        timeout=timeout_ms,
    )


def idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the app's script has run and finished (the page's own state attribute)."""
    page.wait_for_function(
        """() => document.querySelector("[data-testid='stApp']")?.getAttribute("data-test-script-state") === "notRunning" """,
        timeout=timeout_ms,
    )


def _no_errors(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0


def test_explorer_in_a_real_browser(serve, crafted_db):
    url = serve(crafted_db)
    with _playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{url}/?x=exp&w=energy:1,gpu_memory:0.5")
            charts_drawn(page, 2)
            _no_errors(page)
            assert page.get_by_text("tiny", exact=True).first.is_visible()
            # the sidebar was restored from the link and mirrors it back
            assert page.get_by_text("Training energy 67%, GPU memory reserved 33%").is_visible()
            assert "w=energy" in page.url
        finally:
            browser.close()


def test_two_downloads_in_quick_succession_both_arrive(serve, crafted_db):
    """The ranking's CSV, then at once the report's zip (built when asked): the first click's
    rerun dropped the zip's deferred file, and the second click gave nothing, 2 times of 3."""
    url = serve(crafted_db)
    with _playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
            page.goto(f"{url}/?x=exp")
            charts_drawn(page, 2)
            for _ in range(3):
                with page.expect_download(timeout=60_000) as csv:
                    page.get_by_role("button", name="Download CSV").click()
                with page.expect_download(timeout=60_000) as zipped:  # before the first click's rerun ends
                    page.get_by_role("button", name="Report: Markdown, LaTeX table, figures (zip)").click()
                assert csv.value.suggested_filename == "pepr-ranking.csv"
                assert zipped.value.suggested_filename == "pepr-report-exp.zip"
                assert zipfile.is_zipfile(zipped.value.path())
            _no_errors(page)
        finally:
            browser.close()


def test_markup_in_names_is_never_rendered(serve, db, rows):
    """An experiment and a model named like a Markdown image: shown as text, never fetched."""
    run, _ = rows
    evil = "![p](http://127.0.0.1:9/pixel.png)"
    path = db([run("a", evil, experiment=evil, performance=0.9), run("b", "plain", experiment=evil, energy_kwh=5.0, performance=0.5)])
    url = serve(path)
    fetched = []
    with _playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.on("request", lambda request: fetched.append(request.url) if "pixel" in request.url else None)
            for where in ("", "budget", "comparisons", "curves", "runs", "data"):
                page.goto(f"{url}/{where}")
                idle(page)
                if where in ("", "budget"):  # the top model's name in its card, as text
                    names = page.locator("[data-testid='stMarkdownContainer'] strong").all_inner_texts()
                    assert evil in [n.replace("\u200b", "") for n in names], where
                assert page.locator("img[src*='pixel']").count() == 0, where
                assert page.locator("a[href*='pixel']").count() == 0, where
        finally:
            browser.close()
    assert fetched == []


def test_the_default_view_opens_the_paper_and_a_link_reproduces_a_view(serve, tmp_path):
    """What `make dashboard` shows a newcomer: the paper's Derma, its provenance, charts."""
    paper = ROOT / "results" / "paper.duckdb"
    if not paper.is_file():
        pytest.skip("results/paper.duckdb is not built (make paper)")
    url = serve(paper)
    shot = Path(os.environ.get("PEPR_SCREENSHOT") or tmp_path / "dashboard.png")
    with _playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(url)
            charts_drawn(page, 2)
            _no_errors(page)
            assert page.get_by_text("derma_pt: pretrained, all data").first.is_visible()
            assert page.get_by_text("Carbontracker (PUE 1.58 included", exact=False).first.is_visible()
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            # a shared link: the same view in a fresh browser context
            link = f"{url}/budget?w=energy:1,gpu_memory:1&cap=gpu_memory:4&ci=FRA"
            page.goto(link)
            page.get_by_text("Feasible:", exact=False).wait_for(timeout=60_000)
            first = page.locator("[data-testid='stMarkdownContainer'] strong").all_inner_texts()
            other = browser.new_context().new_page()
            other.goto(link)
            other.get_by_text("Feasible:", exact=False).wait_for(timeout=60_000)
            assert other.locator("[data-testid='stMarkdownContainer'] strong").all_inner_texts() == first
            assert other.url == page.url
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
