"""Dashboard latency as a user feels it, in headless Chromium, against a minimal Streamlit app
(one slider, one Altair chart) on the same machine, the two measured alternately (not a test).

    .venv/bin/python benchmarks/dashboard_browser_latency.py [--db results/paper.duckdb] [--repeat 5]

Times (1) the cold page load until the charts are drawn, in a fresh browser context, and
(2) for each sidebar control, from the change until the app's script has finished and the
browser has painted twice (two animation frames). The minimal app's slider is timed right
after each dashboard control, so both see the same load. Prints the medians and the ratio
dashboard / minimal per measurement; target: every ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from tests.dashboard.test_dashboard_browser import ARGS, CHROMIUM, start_streamlit  # noqa: E402

MINIMAL = '''
import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

n = st.slider("points", 10, 200, 100)
x = np.linspace(0, 1, n)
st.altair_chart(alt.Chart(pd.DataFrame({"x": x, "y": x ** 2})).mark_line().encode(x="x", y="y"))
'''

WAIT_RUN = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    window.__t0 = performance.now();
    window.__done = new Promise(resolve => {
        let running = false;
        const observer = new MutationObserver(() => {
            const state = app.getAttribute("data-test-script-state");
            if (state !== "notRunning") running = true;  // running, rerunRequested, ...
            if (running && state === "notRunning") {
                observer.disconnect();
                requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now())));
            }
        });
        observer.observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]});
    });
}"""
CHARTS_DRAWN = """(n) => {
    const charts = [...document.querySelectorAll("[data-testid='stVegaLiteChart']")];
    const drawn = charts.filter(c => [...c.querySelectorAll('canvas, svg')].some(e => e.getBoundingClientRect().width > 50));
    const state = document.querySelector("[data-testid='stApp']")?.getAttribute("data-test-script-state");
    return drawn.length >= n && state === "notRunning";
}"""


def timed(page, action) -> float:
    """Milliseconds from `action` until the rerun it causes has finished and been painted."""
    page.evaluate(WAIT_RUN)
    action()
    page.evaluate("() => { window.__elapsed = undefined; window.__done.then(t => { window.__elapsed = t - window.__t0; }); }")
    try:
        page.wait_for_function("() => window.__elapsed !== undefined", timeout=20_000)
    except PlaywrightTimeout:  # a rerun too quick to be seen: no sample, said in the output
        return float("nan")
    return page.evaluate("() => window.__elapsed")


def cold_load(browser, url: str, charts: int) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto("about:blank")
    t0 = page.evaluate("() => Date.now()")
    page.goto(url)
    page.wait_for_function(CHARTS_DRAWN, arg=charts, timeout=120_000)
    elapsed = page.evaluate("() => Date.now()") - t0
    context.close()
    return float(elapsed)


def controls(page) -> dict:
    """Each sidebar control of the dashboard: name -> an action that changes it."""
    sidebar = page.locator("[data-testid='stSidebar']")
    sliders = sidebar.locator("[data-testid='stSlider'] input[type='range']")
    found = {}
    for i in range(sliders.count()):
        slider = sliders.nth(i)
        if slider.is_disabled():
            continue
        label = sidebar.locator("[data-testid='stSlider']").nth(i).locator("label").inner_text()
        at_max = float(slider.get_attribute("value")) >= float(slider.get_attribute("max"))
        keys = iter((["ArrowLeft", "ArrowRight"] if at_max else ["ArrowRight", "ArrowLeft"]) * 1000)
        found[f"weight: {label}"] = lambda s=slider, k=keys: s.press(next(k))
    flip = iter(["share of max", "min-max"] * 1000)
    found["normalisation"] = lambda: sidebar.get_by_text(next(flip), exact=True).click()
    alpha = iter(["StepUp", "StepDown"] * 1000)
    found["alpha"] = lambda: sidebar.locator("[data-testid='stNumberInput']").nth(0).locator(
        f"[data-testid='stNumberInput{next(alpha)}']").click()
    grid = iter(["a number (g/kWh)", "as measured"] * 1000)
    found["carbon intensity"] = lambda: sidebar.get_by_text(next(grid), exact=True).click()
    threshold = iter(["30", "20"] * 1000)
    found["small/large threshold"] = lambda: sidebar.locator("[data-testid='stNumberInput'] input").last.fill(next(threshold)) or \
        sidebar.locator("[data-testid='stNumberInput'] input").last.press("Enter")
    found["pin baseline"] = lambda: sidebar.get_by_role("button", name="Pin these weights as the baseline").click()
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "results" / "paper.duckdb"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        minimal_script = Path(tmp) / "minimal.py"
        minimal_script.write_text(MINIMAL)
        env = {"PEPR_DB": args.db, "PEPR_DATA_DIR": str(Path(tmp) / "user")}
        app, app_url = start_streamlit("dashboard/app.py", env, Path(tmp) / "app.log")
        mini, mini_url = start_streamlit(str(minimal_script), {}, Path(tmp) / "minimal.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                cold = {"dashboard": [], "minimal": []}
                cold_load(browser, app_url, 2), cold_load(browser, mini_url, 1)  # warm the servers' caches
                for _ in range(args.repeat):
                    cold["dashboard"].append(cold_load(browser, app_url, 2))
                    cold["minimal"].append(cold_load(browser, mini_url, 1))
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.goto(app_url)
                page.wait_for_function(CHARTS_DRAWN, arg=2, timeout=120_000)
                other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                other.goto(mini_url)
                other.wait_for_function(CHARTS_DRAWN, arg=1, timeout=120_000)
                slider = other.locator("input[type='range']")
                keys = iter(["ArrowRight", "ArrowLeft"] * 10_000)
                changes = {name: ([], []) for name in controls(page)}
                actions = controls(page)
                for _ in range(args.repeat):
                    for name, action in actions.items():
                        changes[name][0].append(timed(page, action))
                        changes[name][1].append(timed(other, lambda: slider.press(next(keys))))
                browser.close()
        finally:
            for proc in (app, mini):
                proc.terminate()
                proc.wait(timeout=20)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; db {args.db}; {args.repeat} repeats")
    print(f"{'measurement':40} {'dashboard ms':>13} {'minimal ms':>11} {'ratio':>6}")
    rows = [("cold load until charts drawn", cold["dashboard"], cold["minimal"])]
    rows += [(f"change: {name}", a, b) for name, (a, b) in changes.items()]
    worst = 0.0
    for name, a, b in rows:
        missed = sum(math.isnan(x) for x in a + b)
        a, b = [x for x in a if not math.isnan(x)], [x for x in b if not math.isnan(x)]
        if missed:
            name = f"{name} ({missed} missed)"
        ratio = statistics.median(a) / statistics.median(b)
        worst = max(worst, ratio)
        print(f"{name[:40]:40} {statistics.median(a):13.0f} {statistics.median(b):11.0f} {ratio:6.2f}")
    print(f"worst ratio {worst:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
