"""The pepr dashboard: `streamlit run dashboard/app.py` (or `make dashboard`).

The sidebar (database and what-if controls) is shared by every page and mirrored in the URL
(see `dashboard.controls`); each page in `app_pages/` (not `pages/`: Streamlit treats a folder of that name as an old-style multipage app, which runs a page without this script) reads what it decided with
`dashboard.sidebar.current()`. The server listens on localhost (.streamlit/config.toml);
pass `--server.address 0.0.0.0` to share it on a network.
"""

import streamlit as st

from dashboard import sidebar

st.set_page_config(page_title="pepr · PePR explorer", page_icon="🌱", layout="wide")
sidebar.view(sidebar.database_path())
st.navigation(
    [
        st.Page("app_pages/explorer.py", title="Explorer", icon=":material/insights:", default=True),
        st.Page("app_pages/sensitivity.py", title="Sensitivity", icon=":material/tune:"),
        st.Page("app_pages/budget.py", title="Budget pick", icon=":material/savings:"),
        st.Page("app_pages/comparisons.py", title="Comparisons", icon=":material/compare:"),
        st.Page("app_pages/curves.py", title="Curves", icon=":material/show_chart:"),
        st.Page("app_pages/runs.py", title="Runs", icon=":material/table_rows:"),
        st.Page("app_pages/data_page.py", title="Data", icon=":material/database:", url_path="data"),
    ]
).run()
