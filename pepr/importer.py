"""Import results from other trackers: a table (CSV, Parquet, JSON lines) mapped column by column.

A mapping names, for each run field a user has, the column holding it and its unit
(`energy=energy_Wh:Wh`); units are converted exactly into the store's (kWh, kg, s, GB, a
fraction). CodeCarbon's own `emissions.csv` can supply energy (with its CPU, GPU and RAM parts),
CO2, duration and country, joined to the results table by a key the user names. Everything is
read, converted and checked before the database is opened, so a mistake changes nothing; each
problem is one line naming the file, the row and the column.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import PurePosixPath
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from pepr.errors import PeprError, control_character, control_problem
from pepr.paper import parse_csv, read_source, source_label, whole_number
from pepr.resources import ENERGY_METHODS, ENERGY_PARTS, RESOURCES, grams_per_kwh
from pepr.schema import INT32_MAX, INT64_MAX
from pepr.store import RUN_COLUMNS, Imported, RunStore, job_key
from pepr.text import one_spelling

# unit -> (multiply, divide): value * multiply / divide is the value in the column's unit.
ENERGY_UNITS = {"J": (1, 3_600_000), "Wh": (1, 1000), "kWh": (1, 1)}
CO2_UNITS = {"g": (1, 1000), "kg": (1, 1)}
TIME_UNITS = {"s": (1, 1), "min": (60, 1), "h": (3600, 1)}
MEMORY_UNITS = {"B": (1, 10**9), "MB": (1, 1000), "MiB": (2**20, 10**9), "GB": (1, 1), "GiB": (2**30, 10**9)}
PERFORMANCE_UNITS = {"fraction": (1, 1), "%": (1, 100)}


@dataclass(frozen=True)
class Field:
    """A run field a table may hold: its run column, kind, units (the first is the default)."""

    column: str
    kind: str  # text, number, integer or flag
    units: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    cost: bool = False  # a resource cost: never negative

    @property
    def default_unit(self) -> str | None:
        return next(iter(self.units), None)


def _in(units: Mapping[str, tuple[int, int]], default: str) -> dict[str, tuple[int, int]]:
    """`units` with `default` first: the registry's unit, the store's (its factor is 1)."""
    assert units[default] == (1, 1), f"{default} is not the store's unit"
    return {default: units[default], **units}


def _cost(resource: str, kind: str, units: Mapping[str, tuple[int, int]] | None = None) -> Field:
    """The field of a resource, in the registry's column."""
    return Field(RESOURCES[resource].column, kind, units or {}, cost=True)


FIELDS: dict[str, Field] = {
    "model": Field("model", "text"),
    "experiment": Field("experiment", "text"),
    "performance": Field("performance", "number", PERFORMANCE_UNITS),
    "energy": _cost("energy", "number", _in(ENERGY_UNITS, RESOURCES["energy"].unit)),
    **{f"energy_{part}": Field(f"energy_{part}_kwh", "number", _in(ENERGY_UNITS, RESOURCES["energy"].unit), cost=True)
       for part in ENERGY_PARTS},
    "co2": _cost("co2", "number", _in(CO2_UNITS, RESOURCES["co2"].unit)),
    "train_time": _cost("train_time", "number", TIME_UNITS),
    "infer_time": _cost("infer_time", "number", TIME_UNITS),
    "gpu_memory": _cost("gpu_memory", "number", _in(MEMORY_UNITS, RESOURCES["gpu_memory"].unit)),
    "params": _cost("params", "integer"),
    "train_size": _cost("train_size", "integer"),
    "run_id": Field("run_id", "text"),
    "seed": Field("seed", "integer"),
    "dataset": Field("dataset", "text"),
    "pretrained": Field("pretrained", "flag"),
    "train_fraction": Field("train_fraction", "number", PERFORMANCE_UNITS),  # of the training data used
    "metric": Field("metric", "text"),
    "country": Field("country", "text"),
}
DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")
# In a ';'-separated file: 1.234,5 (points group thousands before a decimal comma), and 1.234 or
# 12.500.000, which may group thousands or be a decimal point.
GROUPED_DECIMAL_COMMA = re.compile(r"[-+]?[1-9]\d{0,2}(\.\d{3})+,\d+")
POINT_GROUPS = re.compile(r"[-+]?[1-9]\d{0,2}(\.\d{3})+")
# A model "name" that a spreadsheet's total or average row has.
SUMMARY_ROW = re.compile(r"(grand )?(total|sum|mean|average|avg|median|overall)s?:?", re.IGNORECASE)
REQUIRED = ("model", "performance")  # and an experiment: a column or one label for all rows
# What --energy-method takes: every method but `not-sampled`, which an import has no use for.
IMPORTABLE_METHODS = tuple(method for method in ENERGY_METHODS if method != "not-sampled")
FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

# CodeCarbon's emissions.csv: its column -> the run column. CodeCarbon writes energies in kWh,
# emissions in kg and duration in s, the store's units.
CODECARBON_NUMBERS = {
    "energy_consumed": "energy_kwh",
    "cpu_energy": "energy_cpu_kwh",
    "gpu_energy": "energy_gpu_kwh",
    "ram_energy": "energy_ram_kwh",
    "emissions": "co2_kg",
    "duration": "train_time_s",
}
CODECARBON_REQUIRED = ["run_id", "country_iso_code", *CODECARBON_NUMBERS]
CODECARBON_SCOPES = {"machine": "device", "process": "process"}


@dataclass(frozen=True)
class ColumnMap:
    """One mapping: the run `field` is in `column`, in `unit` (None: the field's default)."""

    field: str
    column: str
    unit: str | None = None

    def __str__(self) -> str:
        return f"{self.field}={self.column}" + (f":{self.unit}" if self.unit else "")


@dataclass(frozen=True)
class Table:
    """A source table: raw values, indexed by the row numbers a user sees (a CSV's header is 1)."""

    name: str
    frame: pd.DataFrame
    sha256: str
    decimal_comma: bool = False  # a ';'-separated CSV: `0,5` is a half


@dataclass(frozen=True)
class Preview:
    """What an import would add: the converted runs, and every problem found (empty: none)."""

    runs: pd.DataFrame
    errors: list[str]
    count: int = 0  # how many runs in all (`runs` may be the first few)
    earlier_ids: Callable[[], list[pd.Series]] | None = None  # the runs' ids as earlier pepr versions gave them


# -- reading -------------------------------------------------------------------------------


def detect_format(name: str) -> str:
    """csv, parquet or jsonl, from the file name's (or URL path's) extension."""
    suffix = PurePosixPath(urlparse(name).path if "://" in name else name).suffix.lower()
    if suffix not in FORMATS:
        raise PeprError(f"{name}: unknown format {suffix or '(no extension)'!r}; use .csv, .tsv, .parquet or .jsonl, or --format")
    return FORMATS[suffix]


def read_table(source, name: str | None = None, fmt: str | None = None) -> Table:
    """Read a path, http(s) URL or bytes (named `name`) as a table of raw values."""
    name = name or source_label(source)
    data = read_source(source, None, name)
    return parse_table(data, name, fmt or detect_format(name))


def parse_table(data: bytes, name: str, fmt: str) -> Table:
    decimal_comma = False
    if fmt == "csv":
        frame = parse_csv(data, name, [])
        frame.index = frame.index + 2  # row 1 is the header
        decimal_comma = frame.attrs["delimiter"] == ";"
    elif fmt == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as error:  # pyarrow raises many kinds
            raise PeprError(f"{name}: not a readable Parquet file ({error})") from None
        frame.index = pd.RangeIndex(1, len(frame) + 1)
    elif fmt == "jsonl":
        frame = _parse_json_lines(data, name)
    else:
        raise PeprError(f"{name}: unknown format {fmt!r}; use csv, parquet or jsonl")
    frame = frame[~frame.apply(lambda column: column.map(_missing_or_blank)).all(axis=1)]  # a sheet's ",,,," rows
    if frame.empty:
        raise PeprError(f"{name}: no rows")
    frame.columns = [str(column).strip() for column in frame.columns]
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise PeprError(f"{name}: column {repeated[0]!r} appears twice")
    return Table(name, frame.astype(object), hashlib.sha256(data).hexdigest(), decimal_comma)


def _parse_json_lines(data: bytes, name: str) -> pd.DataFrame:
    """One JSON object a line, or one JSON array of objects (as `to_json(orient="records")`
    writes; row N is its Nth object); nested objects become `outer.inner` columns."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PeprError(f"{name}: not UTF-8 text ({error})") from None
    def record(number: int, value) -> dict:
        if not isinstance(value, dict):
            raise PeprError(f"{name}, row {number}: not a JSON object")
        return value

    def parse(text: str, where: str):
        """JSON, with NaN and Infinity (not JSON, but Python writes them) kept as text: refused
        where a number belongs, as a CSV's are, not read as empty (not measured)."""
        try:
            return json.loads(text, parse_constant=str)
        except RecursionError:
            raise PeprError(f"{where}: JSON nested too deeply") from None

    if text.lstrip().startswith("["):
        try:
            rows = [(number, record(number, value)) for number, value in enumerate(parse(text, name), start=1)]
        except json.JSONDecodeError as error:
            raise PeprError(f"{name}: not JSON ({error.msg}, line {error.lineno})") from None
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    value = parse(line, f"{name}, row {number}")
                except json.JSONDecodeError as error:
                    raise PeprError(f"{name}, row {number}: not JSON ({error.msg})") from None
                rows.append((number, record(number, value)))
    numbers, records = [number for number, _ in rows], [value for _, value in rows]
    if not records:
        return pd.DataFrame()
    try:
        return pd.json_normalize(records).set_axis(numbers)
    except RecursionError:
        raise PeprError(f"{name}: JSON nested too deeply") from None


# -- mapping -------------------------------------------------------------------------------


def parse_map(items: Iterable[str], columns: Sequence[str]) -> list[ColumnMap]:
    """`FIELD=COLUMN[:UNIT]` items as mappings. A column whose own name holds a colon is taken
    whole when the table has it. Checked by `check_mapping`."""
    maps = []
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not rest:
            raise PeprError(f"--map {item}: expected FIELD=COLUMN[:UNIT], e.g. energy=energy_Wh:Wh")
        column, unit = rest, None
        if rest not in columns and ":" in rest:
            column, unit = rest.rsplit(":", 1)
        maps.append(ColumnMap(name.strip(), column, unit))
    return maps


def check_mapping(maps: Sequence[ColumnMap], columns: Sequence[str], name: str) -> None:
    """Every field known and mapped once, every unit known for its field, every column there."""
    seen = set()
    for spec in maps:
        if spec.field not in FIELDS:
            raise PeprError(f"{name}: --map {spec}: unknown field {spec.field!r}; fields: {', '.join(FIELDS)}")
        if spec.field in seen:
            raise PeprError(f"{name}: --map {spec}: {spec.field} is mapped twice")
        seen.add(spec.field)
        units = FIELDS[spec.field].units
        if spec.unit is not None and spec.unit not in units:
            known = f"one of {', '.join(units)}" if units else "no unit"
            raise PeprError(f"{name}: --map {spec}: unknown unit {spec.unit!r} for {spec.field} (takes {known})")
        if spec.column not in columns:
            shown = ", ".join(map(str, columns[:30])) + (", ..." if len(columns) > 30 else "")
            raise PeprError(f"{name}: --map {spec}: no column {spec.column!r} (columns: {shown})")


def parse_energy_methods(text: str | None) -> dict[str, str]:
    """`cpu=rapl,gpu=gpu-energy-counter` as {part: method}, each checked."""
    methods = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        part, _, method = item.partition("=")
        if part not in ENERGY_PARTS or method not in IMPORTABLE_METHODS:
            raise PeprError(
                f"--energy-method {item}: expected PART=METHOD, PART one of {', '.join(ENERGY_PARTS)}, "
                f"METHOD one of {', '.join(IMPORTABLE_METHODS)}"
            )
        if part in methods:
            raise PeprError(f"--energy-method: {part} is given twice")
        methods[part] = method
    return methods


# -- converting ----------------------------------------------------------------------------


def _where(name: str, row, column: str) -> str:
    return f"{name}, row {row}, column {column}"


def _missing(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _missing_or_blank(value) -> bool:
    return _missing(value) or (isinstance(value, str) and not value.strip())


def _compound(value) -> str | None:
    """What a cell holds where it is not one value (a list, an object, bytes), else None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "bytes" if isinstance(value, (bytes, bytearray)) else None


def _text(raw: pd.Series) -> pd.Series:
    """Raw values as stripped text; missing values (None, NaN, NA, empty) as ''."""
    return raw.map(lambda v: "" if _missing(v) else str(v).strip()).astype(object)


def _numbers(text: pd.Series, column: str, name: str, errors: list, decimal_comma: bool = False,
             takes_percent: bool = False) -> pd.Series:
    """Text as floats: '' is missing (NaN), anything else that is not a finite number an error
    (`91 %` with a hint where the field `takes_percent`); `0,5` is a half with `decimal_comma`;
    -0 is 0."""
    missing = text == ""
    numbers = text.where(~missing)
    if decimal_comma:
        grouped = numbers.str.fullmatch(GROUPED_DECIMAL_COMMA, na=False)
        commas = numbers.str.fullmatch(DECIMAL_COMMA, na=False) | grouped
        points = numbers.str.contains(".", regex=False, na=False) & ~grouped
        if commas.any() and points.any():  # is 1,234 a thousand or one point two?
            row = (commas if commas.idxmax() > points.idxmax() else points).idxmax()
            errors.append((row, f"{_where(name, row, column)}: {text[row]!r}: the column mixes decimal "
                                "commas and points; write one kind"))
            return pd.Series(np.nan, index=text.index)
        if points.any() and numbers[points].str.fullmatch(POINT_GROUPS).all():
            row = points.idxmax()  # no point that must be a decimal one, as in 0.5 or 1.25
            errors.append((row, f"{_where(name, row, column)}: {text[row]!r} may be a thousand and more "
                                "or a decimal; write it without grouping points (a decimal with a comma)"))
            return pd.Series(np.nan, index=text.index)
        numbers = numbers.where(~commas, numbers.str.replace(".", "", regex=False).str.replace(",", "."))
    values = pd.to_numeric(numbers, errors="coerce").astype(float)
    bad = ~missing & ~np.isfinite(values)
    if bad.any():
        row = bad.idxmax()
        hint = ""
        if re.fullmatch(r"[-+]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?", text[row]):
            hint = " (a thousands separator? write numbers without one" + (
                ")" if decimal_comma else "; decimal commas are read in ';'-separated files only)")
        elif DECIMAL_COMMA.fullmatch(text[row]) and not decimal_comma:
            hint = " (decimal commas are read in ';'-separated files only)"
        elif takes_percent and text[row].endswith("%"):
            hint = " (a percentage: map the column in %, as COLUMN:%)"
        elif text[row].strip().lower() in ("na", "n/a", "nan", "null", "none", "-"):
            hint = " (leave the cell empty, or null in JSON: an empty cell is not measured)"
        errors.append((row, f"{_where(name, row, column)}: not a number: {text[row]!r}{hint}"))
    return values.where(~bad) + 0.0  # -0.0 + 0.0 is 0.0


def _whole_numbers(text: pd.Series, values: pd.Series, column: str, name: str, errors: list,
                   largest: int) -> pd.Series:
    """Whole numbers parsed exactly (not through a float) from 0 to `largest`."""
    whole = []
    for row, number in values.items():
        if pd.isna(number):
            whole.append(None)
            continue
        value = whole_number(text[row], number)
        if value is None or value > largest:
            problem = "is negative" if number < 0 else f"is not a whole number of at most {largest}"
            errors.append((row, f"{_where(name, row, column)}: {text[row]} {problem}"))
            value = None
        whole.append(value)
    return pd.Series(whole, index=values.index, dtype="Int64")


def _convert_column(raw: pd.Series, spec: ColumnMap, name: str, errors: list,
                    decimal_comma: bool = False) -> pd.Series:
    """One mapped column converted into its run column's type and unit; problems appended to
    `errors` as (row, message), the first of each kind only."""
    kind = FIELDS[spec.field]
    compound = raw.map(_compound)
    if compound.notna().any():  # a JSON list or a Parquet binary: its repr is no value
        row = compound.first_valid_index()
        errors.append((row, f"{_where(name, row, spec.column)}: {compound[row]}, not one value"))
        raw = raw.where(compound.isna(), None)
    text = _text(raw)
    missing = text == ""
    if spec.field in REQUIRED or spec.field in ("experiment", "run_id"):
        if missing.any():
            why = "mapped, so every run needs one" if spec.field == "run_id" else "required"
            errors.append((missing.idxmax(), f"{_where(name, missing.idxmax(), spec.column)}: empty ({spec.field} is {why})"))
    if kind.kind == "text":
        bad = text.map(lambda value: control_character(value) is not None)
        if bad.any():
            row = bad.idxmax()
            errors.append((row, f"{_where(name, row, spec.column)}: {control_problem(text[row])}"))
        spelt = text if spec.field == "run_id" else text.map(one_spelling)  # a run id is a key: as written
        return spelt.where(~missing, None).astype(object)
    if kind.kind == "flag":
        lowered = text.str.lower()
        values = lowered.map({"true": True, "yes": True, "1": True, "1.0": True,
                              "false": False, "no": False, "0": False, "0.0": False})
        bad = ~missing & values.isna()
        if bad.any():
            row = bad.idxmax()
            errors.append((row, f"{_where(name, row, spec.column)}: {text[row]!r} is not true/false, yes/no or 1/0"))
        return values.astype("boolean")
    unit = spec.unit or kind.default_unit
    if unit == "%":  # a spreadsheet's percent format: 91.5 %
        text = text.str.replace(r"\s*%$", "", regex=True)
    values = _numbers(text, spec.column, name, errors, decimal_comma, "%" in kind.units and unit != "%")
    if kind.kind == "integer":
        largest = INT32_MAX if RUN_COLUMNS[kind.column] == "INTEGER" else INT64_MAX
        return _whole_numbers(text, values, spec.column, name, errors, largest)
    multiply, divide = kind.units[unit]
    if multiply != 1:
        values = values * multiply
    if divide != 1:
        values = values / divide
    overflowed = values.notna() & ~np.isfinite(values)
    if overflowed.any():
        row = overflowed.idxmax()
        errors.append((row, f"{_where(name, row, spec.column)}: {text[row]} {unit} is too large to store"))
    return values.where(~overflowed)


def _check_values(runs: pd.DataFrame, frame: pd.DataFrame, maps: Mapping[str, ColumnMap], name: str, errors: list) -> None:
    """Ranges: performance in [0, 1] after conversion, a training-data fraction in (0, 1], costs
    not negative; and no model named like a spreadsheet's summary row."""
    summary = runs["model"].fillna("").str.fullmatch(SUMMARY_ROW)
    if summary.any():
        row, spec = summary.idxmax(), maps["model"]
        errors.append((row, f"{_where(name, row, spec.column)}: {runs['model'][row]!r} looks like a summary row, "
                            "not a run: remove that row (its costs would set the scale of every other run's)"))
    performance = pd.to_numeric(runs["performance"], errors="coerce")
    bad = (performance < 0) | (performance > 1)
    if bad.any():
        row, spec = bad.idxmax(), maps["performance"]
        hint = " (a percentage? map it as COLUMN:%)" if spec.unit != "%" and 1 < performance[row] <= 100 else ""
        errors.append((row, f"{_where(name, row, spec.column)}: performance {performance[row]:.15g} is outside [0, 1]{hint}"))
    elif maps["performance"].unit == "%" and ((performance > 0) & (performance <= 0.01)).any():  # a fraction as a %?
        spec, text, largest = maps["performance"], _text(frame[maps["performance"].column]), performance.idxmax()
        if performance[largest] <= 0.01:  # 0.85 read as 0.85 %: all of them
            errors.append((largest, f"{_where(name, largest, spec.column)}: {text[largest]} is the largest value, as "
                                    f"a percentage at most 1 %: fractions? map it as {spec.column} without :%"))
        else:  # 0.89 among 91.2 and 93.1 (0 reads the same either way)
            row = ((performance > 0) & (performance <= 0.01)).idxmax()
            errors.append((row, f"{_where(name, row, spec.column)}: {text[row]} % among percentages up to "
                                f"{text[largest]}: a fraction? write it as a percentage"))
    if "train_fraction" in maps:
        fraction, spec = pd.to_numeric(runs["train_fraction"], errors="coerce"), maps["train_fraction"]
        bad = (fraction <= 0) | (fraction > 1)
        if bad.any():
            row = bad.idxmax()
            hint = " (map a percentage as COLUMN:%)" if spec.unit != "%" else ""
            errors.append((row, f"{_where(name, row, spec.column)}: train_fraction {_text(frame[spec.column])[row]} is "
                                f"outside (0, 1]: the share of the training data used{hint}"))
    for spec in maps.values():
        kind = FIELDS[spec.field]
        bad = kind.cost & (pd.to_numeric(runs[kind.column], errors="coerce") < 0)
        if bad.any():
            row = bad.idxmax()
            errors.append((row, f"{_where(name, row, spec.column)}: {spec.field} {_text(frame[spec.column])[row]} is negative"))


def _repeat(values: pd.Series) -> tuple | None:
    """(row, earlier row) of the first value that repeats an earlier one, missing values
    aside; None where none does."""
    repeated = values.duplicated() & values.notna()
    if not repeated.any():
        return None
    row = repeated.idxmax()
    return row, values.index[(values == values[row]).to_numpy()][0]


# What a row measured, not which run it is (its model's size and its training data are): a
# corrected value keeps the run's id.
MEASURED_FIELDS = frozenset(name for name, spec in FIELDS.items() if spec.cost) - {"params", "train_size"} | {"performance"}


def _content_ids(texts: pd.DataFrame, experiment: pd.Series, decimal_comma: bool = False) -> list[str]:
    """An id from each row's raw content (`texts`) and its experiment: the same row, however a
    re-export spells it (91.50 or 91.5, 120 or 120.0, an empty column more or fewer, the columns
    in another order), the same id; a mapping or a unit changed, the same id too."""
    spelt = texts.apply(lambda column: column.map({cell: _canonical(cell, decimal_comma) for cell in column.unique()}))
    return ["import-" + job_key({**{k: v for k, v in row.items() if v != ""}, "experiment": name})
            for row, name in zip(spelt.to_dict("records"), experiment)]


def _row_ids(texts: pd.DataFrame, experiment: pd.Series, decimal_comma: bool) -> pd.Series:
    """A stable run id from what each row says of its run (`texts`: its cells but those mapped
    to results) and its experiment, spelt as `_content_ids` reads them: a re-export, or a
    corrected result, keeps it. Rows alike but for their results (repeats with no seed column)
    are told apart by their order among themselves."""
    seen: Counter = Counter()
    ids = []
    for key in _content_ids(texts.map(one_spelling), experiment, decimal_comma):
        seen[key] += 1
        ids.append(key if seen[key] == 1 else "import-" + job_key({"row": key, "repeat": seen[key]}))
    return pd.Series(ids, index=experiment.index, dtype=object)


def _earlier_ids(texts: pd.DataFrame, experiment: pd.Series, decimal_comma: bool) -> list[pd.Series]:
    """The ids earlier pepr versions gave the rows, which a database may hold, in the order of
    the runs: from every cell's raw text, then from every cell as `_content_ids` spells it."""
    raw = ["import-" + job_key({**row, "experiment": name}) for row, name in zip(texts.to_dict("records"), experiment)]
    return [pd.Series(ids, dtype=object) for ids in (raw, _content_ids(texts, experiment, decimal_comma))]


# A plain decimal number, its exponent bounded (Fraction would write out 1e999999999 in full).
PLAIN_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,3})?")


def _canonical(cell: str, decimal_comma: bool) -> str:
    """A cell's text as content ids read it: a plain decimal number in one exact spelling
    (91.50, 91.5 and, in a ';' file, 91,5 are 183/2; 120.0 is 120), other text (a date 12/06,
    a name, 1e9999) as it is."""
    if decimal_comma and (DECIMAL_COMMA.fullmatch(cell) or GROUPED_DECIMAL_COMMA.fullmatch(cell)):
        cell = cell.replace(".", "").replace(",", ".")
    return str(Fraction(cell)) if PLAIN_NUMBER.fullmatch(cell) else cell


def convert(
    table: Table,
    maps: Sequence[ColumnMap],
    *,
    experiment: str | None = None,
    emissions: Table | None = None,
    join: str | None = None,
    energy_tool: str | None = None,
    energy_methods: Mapping[str, str] | None = None,
) -> Preview:
    """The runs `table` holds under `maps` (and `emissions` joined on `join`), and every
    problem found, the first of each kind per column, in row order. Writes nothing."""
    check_mapping(maps, list(table.frame.columns), table.name)
    fields = {spec.field: spec for spec in maps}
    if (experiment is None) == ("experiment" not in fields):
        raise PeprError(f"{table.name}: give either one experiment name for all rows or --map experiment=COLUMN")
    if experiment is not None and not experiment.strip():
        raise PeprError(f"{table.name}: the experiment name is empty")
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        raise PeprError(f"{table.name}: nothing mapped to {', '.join(missing)}, which every run needs: map each to a column")

    frame = table.frame
    errors: list[tuple[int, str]] = []
    runs = pd.DataFrame(index=frame.index)
    for spec in maps:
        runs[FIELDS[spec.field].column] = _convert_column(frame[spec.column], spec, table.name, errors, table.decimal_comma)
    if experiment is not None:
        runs["experiment"] = one_spelling(experiment.strip())
    parts = [f"energy_{part}" for part in ENERGY_PARTS]
    if "energy" not in fields and all(part in fields for part in parts):
        runs["energy_kwh"] = sum(runs[FIELDS[part].column] for part in parts)  # missing if a part is

    matched = None
    if emissions is not None:
        matched = _join_emissions(frame, emissions, join, table.name, errors)
        for column in matched.columns.drop("raw").difference(_measured_with(fields)):
            if column not in runs:  # a field mapped from the results table wins
                runs[column] = matched[column]
    _check_values(runs, frame, fields, table.name, errors)

    raw_parts = [frame] + ([pd.DataFrame(matched["raw"].tolist(), index=frame.index)] if matched is not None else [])
    earlier = None
    repeat_of = runs["run_id"].where(runs["run_id"].notna()) if "run_id" in runs else None
    if "run_id" not in runs:
        texts = pd.concat([part.apply(_text) for part in raw_parts], axis=1)
        measured = {spec.column for spec in maps if spec.field in MEASURED_FIELDS}
        runs["run_id"] = _row_ids(frame.drop(columns=list(measured)).apply(_text), runs["experiment"], table.decimal_comma)
        earlier = functools.partial(_earlier_ids, texts, runs["experiment"].copy(), table.decimal_comma)
        repeat_of = pd.Series(_content_ids(texts, runs["experiment"], table.decimal_comma), index=frame.index)
    repeat = _repeat(repeat_of)
    if repeat:
        row, first = repeat
        if "run_id" in fields:
            problem = f"run id {runs['run_id'][row]!r} is also in row {first}"
            where = _where(table.name, row, fields["run_id"].column)
        else:
            problem = f"repeats row {first}; map run_id or seed to tell them apart"
            where = _where(table.name, row, "(whole row)")
        errors.append((row, f"{where}: {problem}"))

    _describe(runs, table, emissions, fields, energy_tool, energy_methods or {})
    errors.sort(key=lambda item: item[0])
    return Preview(runs.reset_index(drop=True), [message for _, message in errors], len(runs), earlier)


# CodeCarbon's columns that describe its energy reading, and those that describe its CO2.
_CODECARBON_ENERGY = ("energy_kwh", "energy_tool", "pue", *(f"energy_{part}_{what}" for part in ENERGY_PARTS
                                                          for what in ("kwh", "method", "scope")))
_CODECARBON_CO2 = ("co2_kg", "carbon_intensity", "carbon_intensity_source")


def _energy_from_table(fields: Mapping[str, ColumnMap]) -> bool:
    """Whether the results table gives the energy, or any part of it."""
    return any(field == "energy" or field.startswith("energy_") for field in fields)


def _measured_with(fields: Mapping[str, ColumnMap]) -> list[str]:
    """CodeCarbon's columns that a field mapped from the results table makes untrue of its
    run: its energy, parts, tool and CO2 do not describe an energy measured otherwise (the
    table's energy or any of its parts: one run, one reading)."""
    if _energy_from_table(fields):
        return [*_CODECARBON_ENERGY, *_CODECARBON_CO2]
    return list(_CODECARBON_CO2) if "co2" in fields else []


def preview(table: Table, maps: Sequence[ColumnMap], rows: int | None = 5, **options) -> Preview:
    """The first `rows` runs converted (None: all) and every problem in the whole table (a
    mapping mistake included), for a person to check before importing; see `convert` for the
    options."""
    try:
        result = convert(table, maps, **options)
    except PeprError as error:
        return Preview(pd.DataFrame(), [str(error)], 0)
    return result if rows is None else Preview(result.runs.head(rows), result.errors, result.count)  # to show, not import


def _describe(runs, table, emissions, fields, energy_tool, methods) -> None:
    """Where each run comes from and, where known, how its energy was measured."""
    origin = {"origin": table.name, "sha256": table.sha256, "mapping": [str(s) for s in fields.values()]}
    provenance = f"imported from {table.name} (SHA-256 {table.sha256[:12]})"
    if emissions is not None:
        origin["emissions"] = {"origin": emissions.name, "sha256": emissions.sha256}
        taken = ("duration and country" if _energy_from_table(fields) else
                 "energy" if "co2" in fields else "energy and CO2")
        provenance += f", {taken} from CodeCarbon's {emissions.name} (SHA-256 {emissions.sha256[:12]})"
    if energy_tool:
        runs["energy_tool"] = energy_tool
        provenance += f"; energy measured with {energy_tool}"
    nothing = pd.Series(np.nan, index=runs.index)
    for part in ENERGY_PARTS:
        column = f"energy_{part}_method"  # where the total or this part is known
        measured = runs.get("energy_kwh", nothing).notna() | runs.get(f"energy_{part}_kwh", nothing).notna()
        current = runs[column] if column in runs else pd.Series(None, index=runs.index, dtype=object)
        declared = methods.get(part)
        runs[column] = current.where(current.notna(), declared or "imported").where(measured, None)
    if methods:
        provenance += "; parts: " + ", ".join(f"{part} {method}" for part, method in methods.items())
    runs["job_key"] = runs["run_id"].map(_import_key)
    runs["config"] = json.dumps(origin, sort_keys=True)
    runs["provenance"] = provenance
    runs["source"] = "import"
    runs["status"] = "ok"


# -- CodeCarbon --------------------------------------------------------------------------


def load_emissions(table: Table) -> pd.DataFrame:
    """CodeCarbon's emissions.csv as run columns, one row per CodeCarbon run (its last row:
    CodeCarbon appends cumulative totals), indexed like `table`, with the raw row in `raw`."""
    frame = table.frame
    missing = [column for column in CODECARBON_REQUIRED if column not in frame]
    if missing:
        raise PeprError(f"{table.name}: not CodeCarbon's emissions.csv: missing column(s) {', '.join(missing)}")
    frame = frame[~frame["run_id"].duplicated(keep="last")]
    errors: list = []
    out = pd.DataFrame(index=frame.index, data={"pue": np.nan})
    for column, target in {**CODECARBON_NUMBERS, **({"pue": "pue"} if "pue" in frame else {})}.items():
        values = _numbers(_text(frame[column]), column, table.name, errors, table.decimal_comma)
        bad = values < 0
        if bad.any():
            errors.append((bad.idxmax(), f"{_where(table.name, bad.idxmax(), column)}: {values[bad.idxmax()]:g} is negative"))
        out[target] = values
    if errors:
        raise PeprError(min(errors, key=lambda item: item[0])[1])
    out["country"] = _text(frame["country_iso_code"]).replace("", None)
    out["carbon_intensity"] = grams_per_kwh(out["co2_kg"], out["energy_kwh"]).astype(float)
    out["carbon_intensity_source"] = "codecarbon"
    version = _text(frame["codecarbon_version"]) if "codecarbon_version" in frame else ""
    out["energy_tool"] = ("codecarbon " + version).str.strip() if "codecarbon_version" in frame else "codecarbon"
    scope = _text(frame["tracking_mode"]).map(CODECARBON_SCOPES) if "tracking_mode" in frame else None
    for part in ENERGY_PARTS:
        out[f"energy_{part}_scope"] = scope
    gpus = pd.to_numeric(frame.get("gpu_count", pd.Series(np.nan, index=frame.index)), errors="coerce").fillna(0)
    no_gpu = (gpus == 0) & (out["energy_gpu_kwh"] == 0)
    out["energy_gpu_method"] = np.where(no_gpu, "none", None)
    out["energy_gpu_kwh"] = out["energy_gpu_kwh"].where(~no_gpu)  # no such part: NULL, not 0
    cpu = _text(frame["cpu_model"]) if "cpu_model" in frame else pd.Series("", index=frame.index)
    gpu = _text(frame["gpu_model"]) if "gpu_model" in frame else pd.Series("", index=frame.index)
    out["device"] = [(g if count else c) or None for c, g, count in zip(cpu, gpu, gpus)]
    out["raw"] = [{f"emissions.{k}": v for k, v in row.items()} for row in frame.to_dict("records")]
    return out


def parse_join(join: str | None) -> tuple[str, str]:
    """`KEY` (the same column in both files) or `EMISSIONS_COLUMN=RESULTS_COLUMN`."""
    if not join or not join.strip():
        raise PeprError("--join: name the key that links emissions.csv to the results, e.g. --join project_name=run")
    left, _, right = join.partition("=")
    return left.strip(), (right or left).strip()


def _join_emissions(frame: pd.DataFrame, emissions: Table, join, name: str, errors: list) -> pd.DataFrame:
    emission_key, result_key = parse_join(join)
    if emission_key not in emissions.frame:
        raise PeprError(f"{emissions.name}: --join {join}: no column {emission_key!r}")
    if result_key not in frame:
        raise PeprError(f"{name}: --join {join}: no column {result_key!r}")
    rows = load_emissions(emissions)
    keys = _text(emissions.frame.loc[rows.index, emission_key])
    repeat = _repeat(keys)
    if repeat:
        row, first = repeat
        hint = (" (CodeCarbon writes one value for every run unless the tracker is given its own:"
                " set project_name per run, or keep CodeCarbon's run_id in your table and join on it)"
                if emission_key in ("experiment_id", "project_name") else "")
        raise PeprError(f"{_where(emissions.name, row, emission_key)}: {keys[row]!r} is also in row {first}; "
                        f"join on a key that names one run{hint}")
    wanted = _text(frame[result_key])
    repeat = _repeat(wanted.where(wanted != ""))
    if repeat:  # one measurement would be credited to each of them
        row, first = repeat
        errors.append((row, f"{_where(name, row, result_key)}: {wanted[row]!r} is also in row {first}; "
                            f"one row of {emissions.name} cannot be the energy of two runs"))
    position = pd.Series(rows.index, index=keys.to_numpy())
    lost = ~wanted.isin(position.index)
    if lost.any():
        row = lost.idxmax()
        errors.append((row, f"{_where(name, row, result_key)}: no row of {emissions.name} has {emission_key} {wanted[row]!r}"))
    found = wanted.map(position)
    matched = rows.reindex(found.to_numpy()).set_axis(frame.index)
    matched["raw"] = [raw if isinstance(raw, dict) else {} for raw in matched["raw"]]
    return matched


# -- importing -----------------------------------------------------------------------------


def _import_key(run_id: str) -> str:
    """The job key of an imported run."""
    return job_key({"source": "import", "run": run_id})


def import_converted(result: Preview, db, replace: bool = False) -> Imported:
    """Add the converted runs of `result` (no errors) to `db` (RunStore.import_runs). A run
    `db` holds under the id an earlier pepr gave its row takes the row's id now, so that the
    file is not added again, and a result corrected later is that run's."""
    store, runs = RunStore(db), result.runs
    renamed = {}
    if result.earlier_ids is not None and store.exists():
        held = set(store.runs(experiments=sorted(runs["experiment"].unique()))["run_id"]) - set(runs["run_id"])
        if any(run_id.startswith("import-") for run_id in held):  # imported before: perhaps under those ids
            for earlier in result.earlier_ids():
                found = earlier.isin(held) & ~runs["run_id"].isin(renamed.values())
                renamed |= dict(zip(earlier[found], runs["run_id"][found]))
    return store.import_runs(runs, replace=replace, renamed=renamed)


def import_table(
    source,
    db,
    maps: Sequence[str],
    *,
    experiment: str | None = None,
    fmt: str | None = None,
    emissions=None,
    join: str | None = None,
    energy_tool: str | None = None,
    energy_methods: Mapping[str, str] | None = None,
    replace: bool = False,
) -> Imported:
    """Read, convert and check `source`, then add its new runs to `db`; says how many.
    A run `db` holds with other values stops the import unless `replace` (RunStore.import_runs).

    `maps`: `FIELD=COLUMN[:UNIT]` texts. `emissions`: CodeCarbon's emissions.csv (a path or
    URL), joined on `join`. Nothing is written on any error.
    """
    table = read_table(source, fmt=fmt)
    emission_table = read_table(emissions, fmt="csv") if emissions is not None else None
    result = convert(
        table, parse_map(maps, list(table.frame.columns)), experiment=experiment, emissions=emission_table, join=join,
        energy_tool=energy_tool, energy_methods=energy_methods,
    )
    if result.errors:
        raise PeprError(result.errors[0])
    return import_converted(result, db, replace)
