"""The pepr dashboard: `streamlit run dashboard/app.py` (or `make dashboard`).

The frame around every page: pick a database, seed the widgets from the link, draw the
sidebar, compute the one view (`dashboard.views.build_view`), mirror the choices into the
link, and run the page, a function of that view. The server listens on localhost
(.streamlit/config.toml); pass `--server.address 0.0.0.0` to share it on a network.
"""

import functools
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` from anywhere

from dashboard import data, sidebar, sources  # noqa: E402
from dashboard.app_pages import budget, comparisons, curves, data_page, explorer, runs, sensitivity  # noqa: E402
from dashboard.controls import WEIGHTED, to_query  # noqa: E402
from dashboard.views import build_view  # noqa: E402
from pepr.errors import StoreError  # noqa: E402
from pepr.score import measured  # noqa: E402

PAGES = [  # (module, title, icon, url path)
    (explorer, "Explorer", ":material/insights:", "explorer"),
    (sensitivity, "Sensitivity", ":material/tune:", "sensitivity"),
    (budget, "Budget pick", ":material/savings:", "budget"),
    (comparisons, "Comparisons", ":material/compare:", "comparisons"),
    (curves, "Curves", ":material/show_chart:", "curves"),
    (runs, "Runs", ":material/table_rows:", "runs"),
    (data_page, "Data", ":material/database:", "data"),
]


def open_view(source, found) -> tuple:
    """(the view of the chosen database, None), or (None, why there is none: missing, empty,
    locked, unreadable); seeds and draws the sidebar and mirrors the choices into the link."""
    all_runs, problem = data.load(source.path)
    if all_runs is None:
        return None, problem
    path = str(source.path)
    try:  # the file may be locked, or replaced, since its runs were read
        epochs = data.epochs(path)
        offered = data.offered(path)
        ignored = sidebar.seed(offered, list(found))
        sidebar.keep_page_state()
        linked = sidebar.controls(offered)  # as seeded, before the sidebar is drawn
        if linked.device:  # inference cost on the chosen deployment device, by model name
            all_runs = data.runs_on_device(path, linked.device)
    except StoreError as error:
        return None, data.unreadable(error, path)
    scope = all_runs[all_runs["experiment"].isin(linked.experiments)]
    sidebar.draw(offered, measured(scope[scope["status"] == "ok"], WEIGHTED))
    controls = sidebar.controls(offered)  # drawn widgets (the grid's) have values only now
    view = build_view(all_runs, epochs, controls, ignored, offered)
    query = to_query(controls, offered.metrics, offered.default, list(found), offered.devices)
    if {k: st.query_params.get_all(k) for k in st.query_params} != {
        k: v if isinstance(v, list) else [v] for k, v in query.items()
    }:
        st.query_params.from_dict(query)
    return view, None


st.set_page_config(page_title="pepr · PePR explorer", page_icon="🌱", layout="wide")
found = sources.sources()
source = sidebar.pick_database(found)
view, problem = open_view(source, found) if source is not None else (None, "No database to open.")
pages = [
    st.Page(functools.partial(module.page, view, problem, source), title=title, icon=icon, url_path=path,
            default=module is explorer)
    for module, title, icon, path in PAGES
]
st.navigation(pages).run()
