"""Data: what the database holds and where its numbers come from, and importing the paper's
published results or your own into a database of yours (the dashboard's only writes, never
into `results/`). Each section is one function; add new ones to SECTIONS."""

from __future__ import annotations

import functools

import streamlit as st

from dashboard import data, sources
from dashboard.app_pages import provenance
from dashboard.import_panel import import_panel
from dashboard.text import plain, without_path
from dashboard.views import View
from pepr.errors import PeprError
from pepr.paper import PAPER_COMMIT, PAPER_RESULTS_SHA256, PAPER_RESULTS_URL, import_paper

MAX_UPLOAD_MB = 10  # the uploader refuses larger files itself
NEW = "new"


def page(view: View | None, problem: str | None, source) -> None:
    st.title("Data")
    kind, text = st.session_state.pop("d_message", (None, None))
    if kind:
        getattr(st, kind)(text)
    for section in SECTIONS:
        section(view, problem, source)


def holdings(view: View | None, problem: str | None, source) -> None:
    """What the chosen database holds."""
    if source is not None:
        st.write(f"Database: {plain(source.label)}" + ("" if source.writable else " (read-only here)"))
    if view is None:
        st.info(problem or "No runs yet.")
        return
    provenance(view)
    summary = view.runs.groupby(["experiment", "source", "status"]).size().rename("runs")
    st.dataframe(summary.reset_index(), hide_index=True, width="stretch")


def target(prefix: str = "d") -> tuple[str, object]:
    """Where an import goes: a new database (named here) or one of yours; (key, path).
    `prefix` keeps the widgets of two import sections apart."""
    found = {k: s for k, s in sources.sources().items() if s.writable}
    options = [NEW, *found]
    current = st.session_state.get("db")
    chosen_after_import = st.session_state.pop(f"_{prefix}_target_next", None)
    if chosen_after_import in options:  # the database an import just made: further imports go there
        st.session_state[f"{prefix}_target"] = chosen_after_import
    if st.session_state.get(f"{prefix}_target") not in options:
        st.session_state[f"{prefix}_target"] = current if current in found else NEW
    choice = st.selectbox(
        "Import into", options, key=f"{prefix}_target",
        format_func=lambda k: "a new database of yours" if k == NEW else found[k].label,
        help=f"Your databases live in {sources.user_dir()} ($PEPR_DATA_DIR). The shipped results are never written.",
    )
    if choice != NEW:
        return choice, found[choice].path
    name = st.text_input("Name of the new database", key=f"{prefix}_name", placeholder="e.g. paper")
    return NEW, name


def _run_import(key: str, where, source_bytes, name: str | None = None) -> None:
    if key == NEW:
        try:
            path = sources.new_database(str(where or ""))
        except ValueError as error:
            st.session_state["d_message"] = ("error", f"Import refused: {error}.")
            st.rerun()
    else:
        path = where
    try:
        with st.spinner("Importing..."):
            path.parent.mkdir(parents=True, exist_ok=True)
            imported = import_paper(source_bytes, path, name=name)
    except PeprError as error:
        reason = without_path(error, path)
        st.session_state["d_message"] = ("error", f"Import failed: {plain(reason)}")
    else:
        st.session_state["d_message"] = ("success", f"{plain(path.stem)}: {imported}.")
        data.refresh()
        st.session_state["_switch_db"] = sources.user_key(path)  # open it: the picker reads this first
    st.rerun()


def paper_import(view: View | None, problem: str | None, source) -> None:
    """Import the paper's published results, downloaded (pinned) or uploaded."""
    st.subheader("Import the paper's published results")
    st.caption(
        "Selvan et al. (NLDL 2025) publish 1,048 runs (131 models × 8 experiments), MIT licence. "
        "Runs already in the database are skipped."
    )
    key, where = target()
    st.markdown(f"From the authors' repository at commit `{PAPER_COMMIT[:12]}`: `{PAPER_RESULTS_URL}` (SHA-256 `{PAPER_RESULTS_SHA256[:16]}…`)")
    if st.button("Download and import", key="d_fetch"):
        _run_import(key, where, None)
    upload = st.file_uploader(
        "…or upload `all_results.csv`", type="csv", key="d_upload", max_upload_size=MAX_UPLOAD_MB
    )
    if upload is not None and st.button("Import the uploaded file", key="d_import"):
        _run_import(key, where, upload.getvalue(), upload.name)


def own_results(view: View | None, problem: str | None, source) -> None:
    """Import a results table of one's own (W&B, MLflow, a spreadsheet, CodeCarbon's file)."""
    st.subheader("Import your own results")
    st.caption("A CSV, Parquet or JSON-lines table, with CodeCarbon's emissions.csv if you have it: "
               "map its columns, check the converted preview, then import (as `pepr import` does).")
    key, where = target("o")
    if key != NEW:
        import_panel(str(where), on_imported=functools.partial(_imported, where))
        return
    if not str(where or "").strip():
        st.info("Name the new database to import into.")
        return
    try:
        where = sources.new_database(str(where))
    except ValueError as error:
        st.error(f"Import refused: {error}.")
        return
    import_panel(str(where), on_imported=functools.partial(_imported, where))


def _imported(path, said: str) -> None:
    """After an import of one's own results: open the database it went into at once, as after
    the paper's import (the page was drawn from the runs before it), and import into it next."""
    st.session_state.update(d_message=("success", said), _o_target_next=sources.user_key(path),
                            _switch_db=sources.user_key(path))
    st.rerun()


SECTIONS = [holdings, paper_import, own_results]
