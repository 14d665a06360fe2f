"""A self-contained panel to import one's own results: upload, map columns, preview, import.

The mapping, conversion and checks are `pepr.importer`'s; this only draws widgets. Nothing is
written until every row converts without a problem and the user presses the button.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from dashboard import data
from dashboard.text import plain, without_path
from pepr.errors import PeprError
from pepr.importer import CODECARBON_NUMBERS, FIELDS, FORMATS, ColumnMap, Table, detect_format, import_converted, parse_table, preview

MAX_UPLOAD_MB = 50
NONE = "(none)"
SHOWN = ["run_id", "experiment", "model", "performance"]
SHOWN_ROWS = 5
COMMON = ("model", "performance", "run_id", "energy", "co2", "train_time", "gpu_memory", "params", "dataset")
# The fields CodeCarbon's emissions file gives: not guessed from the results table beside it.
FROM_EMISSIONS = {name for name, field in FIELDS.items()
                  if field.column in {*CODECARBON_NUMBERS.values(), "country"}}


def _guess(field: str, columns: list[str]) -> int:
    """The position of a column named like `field` in the choices (0: none)."""
    lowered = [column.lower() for column in columns]
    return lowered.index(field) + 1 if field in lowered else 0


def _once(slot: str, key, make):
    """`make()`, kept in this session until `key` changes: every widget change reruns the page,
    and parsing or checking a large upload again each time took seconds."""
    held = st.session_state.get(slot)
    if held is None or held[0] != key:
        held = st.session_state[slot] = (key, make())
    return held[1]


def _read(upload, slot: str, fmt: str | None = None) -> Table | None:
    """The upload parsed (once per uploaded file), or None with the reason shown."""
    def parse() -> Table | PeprError:
        try:
            return parse_table(upload.getvalue(), upload.name, fmt or detect_format(upload.name))
        except PeprError as error:
            return error

    table = _once(slot, (upload.file_id, fmt), parse)
    if isinstance(table, PeprError):
        st.error(plain(table))
        return None
    return table


def _choosers(names: list[str], columns: list[str], with_emissions: bool) -> list[ColumnMap]:
    """One column (and unit) chooser per field, three a row; fields left at (none) are not mapped."""
    maps = []
    cells = st.columns(3)
    for position, name in enumerate(names):
        with cells[position % 3]:
            default = 0 if with_emissions and name in FROM_EMISSIONS else _guess(name, columns)
            column = st.selectbox(name, [NONE, *columns], index=default, key=f"ip_col_{name}")
            if column == NONE:
                continue
            units = list(FIELDS[name].units)
            unit = st.selectbox(f"{name} unit", units, key=f"ip_unit_{name}") if units else None
            maps.append(ColumnMap(name, column, unit))
    return maps


def _follow_emissions(file_id: str | None) -> None:
    """Where CodeCarbon's file comes or goes, the choosers of what it gives start again from
    their defaults: (none) with the file, so that its values are taken, else the column guessed."""
    if st.session_state.get("ip_emissions_seen") != file_id:
        st.session_state["ip_emissions_seen"] = file_id
        for name in FROM_EMISSIONS:
            st.session_state.pop(f"ip_col_{name}", None)


def _mapping(table: Table, with_emissions: bool) -> list[ColumnMap]:
    """The common fields in view, the others in an expander."""
    columns = list(table.frame.columns)
    maps = _choosers(list(COMMON), columns, with_emissions)
    with st.expander("More fields"):
        rest = [name for name in FIELDS if name not in COMMON and name != "experiment"]
        maps += _choosers(rest, columns, with_emissions)
    return maps


def import_panel(target_db_path: str, on_imported: Callable[[str], None] | None = None) -> None:
    """Upload a results table (and optionally CodeCarbon's emissions.csv), map its columns,
    check the converted rows and every problem, then import into `target_db_path`; what it
    added is said, or handed to `on_imported` (which may rerun the app to show it)."""
    st.caption(
        "A table exported from W&B, MLflow or a spreadsheet: CSV, Parquet or JSON (lines or an array). Units are "
        "converted exactly; rows without a run id get one from their content, so importing the same "
        "file again adds nothing."
    )
    upload = st.file_uploader(
        "Results table", type=[suffix.lstrip(".") for suffix in FORMATS],
        key="ip_table", max_upload_size=MAX_UPLOAD_MB,
    )
    if upload is None:
        return
    table = _read(upload, "ip_table_parsed")
    if table is None:
        return
    st.caption(f"{len(table.frame)} row(s), columns: {plain(', '.join(map(str, table.frame.columns)))}")

    carbon = st.file_uploader("CodeCarbon's emissions.csv (optional)", type=["csv"], key="ip_emissions")
    emissions = _read(carbon, "ip_emissions_parsed", "csv") if carbon is not None else None
    _follow_emissions(None if emissions is None else carbon.file_id)
    join = None
    if emissions is not None:
        left, right = st.columns(2)
        key = left.selectbox("emissions.csv key", list(emissions.frame.columns),
                             index=list(emissions.frame.columns).index("project_name") if "project_name" in emissions.frame else 0,
                             key="ip_join_emissions")
        other = right.selectbox("matches the results column", list(table.frame.columns), key="ip_join_results")
        join = f"{key}={other}"

    mode, choice = st.columns([1, 2])
    by_column = mode.radio("Experiment", ["one name for all rows", "from a column"], key="ip_exp_mode")
    experiment, maps = None, []
    if by_column == "from a column":
        columns = list(table.frame.columns)
        guessed = max(_guess("experiment", columns) - 1, 0)  # a column named so, else the first
        maps.append(ColumnMap("experiment", choice.selectbox("experiment column", columns, index=guessed, key="ip_exp_col")))
    else:
        experiment = choice.text_input("experiment name", value="", key="ip_exp_name").strip() or None
    maps += _mapping(table, emissions is not None)
    if by_column != "from a column" and experiment is None:
        st.info("Name the experiment: the runs of one experiment are normalised together.")
        return

    sources = [(t.name, t.sha256) for t in (table, emissions) if t is not None]  # names go in the provenance
    checked_with = (sources, tuple(maps), experiment, join)
    result = _once("ip_checked", checked_with,
                   lambda: preview(table, maps, rows=None, experiment=experiment, emissions=emissions, join=join))
    if len(result.runs):
        first = result.runs.head(SHOWN_ROWS)
        st.write(f"First {len(first)} of {result.count} run(s), converted:")
        shown = [c for c in SHOWN + [FIELDS[m.field].column for m in maps] if c in first]
        st.dataframe(first[list(dict.fromkeys(shown))], hide_index=True, width="stretch")
    for error in result.errors:
        st.error(plain(error))
    name = Path(target_db_path).stem  # the database's name, not where the server keeps it
    replace = st.checkbox("Replace runs stored with other values (--replace)", key="ip_replace",
                          help="As after a corrected unit; without it such an import writes nothing.")
    if st.button(f"Import {result.count} run(s) into {name}", key="ip_import",
                 disabled=bool(result.errors) or not result.count):
        try:
            Path(target_db_path).parent.mkdir(parents=True, exist_ok=True)
            imported = import_converted(result, target_db_path, replace)  # the runs checked above
        except PeprError as error:
            st.error(plain(without_path(error, target_db_path)))
        else:
            data.refresh()
            said = f"{plain(name)}: {imported}."
            if on_imported is None:
                st.success(said)
            else:
                on_imported(said)
