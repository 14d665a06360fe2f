"""One real browser: `streamlit run` headless, driven by Debian's Chromium through Playwright.

Skips (with the reason) where Chromium or Playwright is missing, unless PEPR_REQUIRE_BROWSER=1
(CI), where that fails. PEPR_SCREENSHOT=docs/dashboard.png keeps the screenshot of the shipped
results there (the README's picture).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("PEPR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PEPR_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve(tmp_path):
    """Start `streamlit run` on a database; yields a function that returns the app's URL."""
    started = []

    def start(db) -> str:
        port = _free_port()
        log = open(tmp_path / f"streamlit-{port}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env={**os.environ, "PEPR_DB": str(db)}, stdout=log, stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        url = f"http://localhost:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
        pytest.fail("streamlit did not come up: " + Path(log.name).read_text()[-2000:])

    yield start
    for proc, log in started:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _browser(playwright):
    _need(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright (python) is not installed")
    return sync_playwright()


def _wait_for_explorer(page) -> None:
    charts = page.locator("[data-testid='stVegaLiteChart']")
    charts.nth(1).wait_for(timeout=60_000)
    page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg").first.wait_for(timeout=30_000)
    page.get_by_text("Top model by PePR").wait_for(timeout=30_000)
    assert charts.count() == 2
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0


def test_explorer_in_a_real_browser(serve, crafted_db):
    url = serve(crafted_db)
    with _playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{url}/?x=exp&w=energy:1,gpu_memory:0.5")
            _wait_for_explorer(page)
            assert page.get_by_text("tiny", exact=True).first.is_visible()
            # the sidebar was restored from the link and mirrors it back
            assert page.get_by_text("Energy 67%, GPU memory 33%").is_visible()
            assert "w=energy" in page.url
        finally:
            browser.close()


def test_the_shipped_results_open_in_a_real_browser(serve, tmp_path):
    """What `make dashboard` shows a newcomer: every shipped experiment, charts, no error."""
    url = serve(ROOT / "results" / "pepr.duckdb")
    shot = Path(os.environ.get("PEPR_SCREENSHOT") or tmp_path / "dashboard.png")
    with _playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(url)
            _wait_for_explorer(page)
            sidebar = page.locator("[data-testid='stSidebar']")
            for experiment in ("digits", "digits_f0.1"):
                assert sidebar.get_by_text(experiment, exact=True).is_visible()
            time.sleep(1)  # let Vega finish drawing before the picture
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
