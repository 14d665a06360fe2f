"""Import the PePR paper's published per-run results (Selvan et al., NLDL 2025).

The authors publish `data/all_results.csv` (131 timm models x 8 experiments) and
`data/model_names.csv` in their repository; `import_paper()` without a source fetches both at
a pinned commit and checks their SHA-256. The whole file is validated before the database is
opened, so malformed input changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from pepr.errors import DownloadError, PeprError, control_character, control_problem
from pepr.resources import FALLBACK_SOURCE, LAST_EPOCH, grams_per_kwh
from pepr.schema import INT64_MAX
from pepr.store import Imported, RunStore, job_key

PAPER_COMMIT = "ce087aafcdce4a5b636152d170475a6df5f4c3d7"
_RAW = f"https://raw.githubusercontent.com/saintslab/PePR/{PAPER_COMMIT}/data"
PAPER_RESULTS_URL = f"{_RAW}/all_results.csv"
PAPER_RESULTS_SHA256 = "1f624ef1a68433aa2c56b83831bb30a1e06c285b56531fde8056f06a42394e98"
PAPER_MODELS_URL = f"{_RAW}/model_names.csv"
PAPER_MODELS_SHA256 = "e26300f35a182a893c90d581684c0d61ed016f6e4f8bfcca370b817ea2bf9e7f"

MAX_SOURCE_BYTES = 50_000_000
EPOCH_COLUMNS = [f"test_{i:02d}" for i in range(10)]
NUMERIC_COLUMNS = ["num_param", "memR", "memM", "energy", "co2", "train_time", "inf_time"]
REQUIRED_COLUMNS = ["model", "dataset", *NUMERIC_COLUMNS, *EPOCH_COLUMNS]

# Experiment label -> (dataset, pretrained, training-data fraction); None where not stated.
EXPERIMENTS = {
    "derma_pt": ("derma", True, 1.0),
    "derma": ("derma", False, 1.0),
    "derma_small": ("derma", None, 0.1),
    "derma_smallest": ("derma", None, None),
    "lidc": ("lidc", True, 1.0),
    "lidc_small": ("lidc", True, 0.1),
    "pneumonia": ("pneumonia", True, 1.0),
    "pneumonia_small": ("pneumonia", True, 0.1),
}
TRAIN_SPLIT_SIZES = {"derma": 7007, "lidc": 9057, "pneumonia": 4708}
# The study's protocol (PEPR.md): 10 epochs, Adam at 5e-4, batch 32, 256x256 images, one RTX 3090.
PROTOCOL = {
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 5e-4,
    "optimizer": "adam",
    "image_size": 256,
    "device": "NVIDIA GeForce RTX 3090 (as published)",
}

# How the published numbers were measured (PEPR.md), recorded with every imported run.
CARBONTRACKER_PUE = 1.58  # Carbontracker multiplies its energy by this data-centre PUE
# 26 of the authors' runs emitted exactly this many g CO2eq per kWh, three times the next
# highest: Carbontracker's fallback world average where its live source failed, it seems.
CARBONTRACKER_FALLBACK_G_PER_KWH = 475.0
PROVENANCE = {
    "energy_tool": "carbontracker",
    "pue": CARBONTRACKER_PUE,
    "energy_cpu_scope": "device",
    "energy_gpu_scope": "device",
    "energy_ram_scope": "device",
    "train_time_scope": LAST_EPOCH,
    "carbon_intensity_source": "live-grid",
    "country": "DNK",
    "provenance": (
        "Selvan et al., NLDL 2025: the authors' published all_results.csv "
        f"(github.com/saintslab/PePR at {PAPER_COMMIT[:12]}, SHA-256 {PAPER_RESULTS_SHA256[:12]}), "
        "measured on one RTX 3090 with Carbontracker (PUE 1.58 included, live Danish grid "
        "intensity, or where it emitted 475 g CO2eq/kWh likely Carbontracker's fallback world "
        "average); train_time is the last epoch's time"
    ),
}


def _origin(data: bytes, name: str) -> tuple[str, dict]:
    """The run id prefix and how the runs of a file in the paper's layout were made: by the
    paper's protocol and measured as published, for the authors' own file (its SHA-256); for
    any other, only what the layout says (10 epochs, the last one's time), its own run ids (the
    authors' runs stay apart), and a provenance that says so."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == PAPER_RESULTS_SHA256:
        return "paper-", {
            **{key: PROTOCOL[key] for key in ("epochs", "batch_size", "learning_rate", "optimizer", "image_size", "device")},
            **PROVENANCE, "config": json.dumps({"origin": "Selvan et al. NLDL 2025, data/all_results.csv"}),
        }
    return f"paper-{digest[:12]}-", {
        "epochs": len(EPOCH_COLUMNS),
        "train_time_scope": LAST_EPOCH,  # what the layout's train_time is
        "provenance": (f"{name} (SHA-256 {digest[:12]}), in the layout of the paper's all_results.csv but "
                       "not the authors' published file: how it was measured is not recorded; train_time "
                       "is read as the layout's, the last epoch's time"),
        "config": json.dumps({"origin": f"a file in the layout of the paper's all_results.csv: {name}"}),
    }


def import_paper(
    source: str | Path | bytes | None,
    db: str | Path,
    *,
    models: str | Path | bytes | None = None,
    sha256: str | None = None,
    name: str | None = None,
    replace: bool = False,
) -> Imported:
    """Validate the paper's results and add the new ones to `db`; says how many (`replace`:
    as for RunStore.import_runs).

    `source`: a path, an http(s) URL or the file's bytes (named `name` in messages); None
    fetches the authors' file at the pinned commit (and, unless `models` is given, their
    model list), both checked against pinned SHA-256s. Re-importing adds nothing.
    """
    store = RunStore(db)
    store.check()  # before any download: a path that cannot be a pepr database is refused
    if source is None:
        source, sha256 = PAPER_RESULTS_URL, PAPER_RESULTS_SHA256
        if models is None:
            models = read_source(PAPER_MODELS_URL, PAPER_MODELS_SHA256, None)
    runs, epochs = load_paper_results(read_source(source, sha256, name), name or str(source))
    if models is not None:
        runs = _join_models(runs, read_source(models, None, None), source_label(models))
    return store.import_runs(runs, epochs, replace=replace)


def load_paper_results(data: bytes, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse and validate `all_results.csv` content into run and epoch rows."""
    table = parse_csv(data, name, REQUIRED_COLUMNS)
    numbers = {column: _numeric(table, column, name) for column in NUMERIC_COLUMNS}
    scores = {column: _numeric(table, column, name) for column in EPOCH_COLUMNS}
    for column, values in numbers.items():
        _check_range(values, column, name, low=0.0)
    for column, values in scores.items():
        _check_range(values, column, name, low=0.0, high=1.0)
    for column in ("model", "dataset"):
        _check_present(table[column], column, name)
    for column in ("model", "dataset", "type"):
        if column in table:
            _check_text(table[column], column, name)
    params = _count(table, "num_param", name)
    repeated = table.duplicated(["dataset", "model"])
    if repeated.any():
        raise PeprError(f"{_where(name, _first_bad(repeated), 'model')}: a second row for this model and experiment")

    labels = table["dataset"]
    known = [EXPERIMENTS.get(label, (None, None, None)) for label in labels]
    dataset, pretrained, fraction = (list(part) for part in zip(*known))
    split_size = pd.Series(dataset, index=table.index, dtype=object).map(TRAIN_SPLIT_SIZES).astype(float)
    train_fraction = pd.Series(fraction, index=table.index, dtype=float)  # labelled by line, as the table
    energy, co2_g = numbers["energy"], numbers["co2"]
    prefix, origin = _origin(data, name)
    intensity = grams_per_kwh(co2_g / 1000.0, energy)
    if origin.get("carbon_intensity_source") == "live-grid":
        fallback = np.isclose(intensity, CARBONTRACKER_FALLBACK_G_PER_KWH, rtol=1e-9)
        origin["carbon_intensity_source"] = np.where(fallback, FALLBACK_SOURCE, "live-grid")
    run_ids = prefix + labels + "-" + table["model"]
    runs = pd.DataFrame(
        {
            "run_id": run_ids,
            "job_key": [job_key({"source": "paper", "run": run_id}) for run_id in run_ids],
            "experiment": labels,
            "dataset": dataset,
            "pretrained": pd.Series(pretrained, index=table.index, dtype="boolean"),
            "train_fraction": train_fraction,
            "train_size": (split_size * train_fraction).round().astype("Int64"),
            "model": table["model"],
            "params": params,
            "model_type": _optional_text(table, "type"),
            "efficient": _optional_flag(table, "efficient", name),
            "metric": "test_accuracy",
            "performance": scores["test_09"],
            "energy_kwh": energy,
            "energy_cpu_method": "imported",
            "energy_gpu_method": "imported",
            "energy_ram_method": "imported",
            "co2_kg": co2_g / 1000.0,
            "carbon_intensity": intensity,
            "train_time_s": numbers["train_time"],
            "infer_time_s": numbers["inf_time"],
            "gpu_mem_reserved_gb": numbers["memR"],
            "gpu_mem_peak_gb": numbers["memM"],
            **origin,
            "source": "paper-import",
            "status": "ok",
        }
    )
    epochs = pd.DataFrame(
        {
            "run_id": np.repeat(run_ids.to_numpy(), len(EPOCH_COLUMNS)),
            "epoch": np.tile(np.arange(1, len(EPOCH_COLUMNS) + 1), len(table)),
            "test_metric": np.column_stack([scores[c] for c in EPOCH_COLUMNS]).ravel(),
        }
    )
    if "tr_acc" in table:
        train_accuracy = _numeric(table, "tr_acc", name)
        _check_range(train_accuracy, "tr_acc", name, low=0.0, high=1.0)
        last = epochs["epoch"] == len(EPOCH_COLUMNS)
        epochs.loc[last, "train_accuracy"] = train_accuracy.to_numpy()
    return runs, epochs


def _join_models(runs: pd.DataFrame, data: bytes, name: str) -> pd.DataFrame:
    """Fill model type and efficient flag from `model_names.csv` where the results lack them."""
    table = parse_csv(data, name, ["model", "type", "efficient"])
    info = pd.DataFrame(
        {
            "model": table["model"],
            "type": _optional_text(table, "type"),
            "efficient": _optional_flag(table, "efficient", name),
        }
    ).drop_duplicates("model").set_index("model")
    runs = runs.copy()
    runs["model_type"] = runs["model_type"].fillna(runs["model"].map(info["type"]))
    runs["efficient"] = runs["efficient"].fillna(runs["model"].map(info["efficient"]))
    return runs


def source_label(source) -> str:
    """How messages name a source: its path or URL, or `upload` for bytes."""
    return "upload" if isinstance(source, bytes) else str(source)


def read_source(source, sha256: str | None, name: str | None) -> bytes:
    """The bytes of a path, URL or upload, checked against `sha256` when one is given."""
    label = name or source_label(source)
    if isinstance(source, bytes):
        data = source
    elif str(source).lower().startswith(("http://", "https://")):
        data = _download(str(source))
    elif URL_SCHEME.match(str(source)):
        raise PeprError(f"{source}: only http(s) URLs and local files can be read")
    else:
        path = Path(source)
        if path.is_dir():
            raise PeprError(f"{source}: a folder, not a CSV file")
        if not path.is_file():
            raise PeprError(f"{source}: no such file")
        if path.stat().st_size > MAX_SOURCE_BYTES:
            raise PeprError(f"{source}: larger than {MAX_SOURCE_BYTES // 1_000_000} MB")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise PeprError(f"{source}: cannot be read ({error.strerror})") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise PeprError(f"{label}: larger than {MAX_SOURCE_BYTES // 1_000_000} MB")
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise PeprError(f"{label}: SHA-256 {digest} does not match the expected {sha256}")
    return data


URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # what starts a URL


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read(MAX_SOURCE_BYTES + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: cannot download ({reason})") from None


def _csv_delimiter(text: str) -> str:
    """Of `,`, `;` and a tab, the one that splits the header line (the first of `text`, ended
    by CR, LF or both) into the most fields, quotes respected; `,` where none splits it."""
    header = re.split(r"\r\n?|\n", text.lstrip("\r\n"), maxsplit=1)[0]
    fields = {mark: len(next(csv.reader([header], delimiter=mark), [])) for mark in ",;\t"}
    return max(fields, key=fields.get)  # a tie: the first, a comma before the others


def parse_csv(data: bytes, name: str, required: list[str]) -> pd.DataFrame:
    """CSV content as a table of strings, every row as long as the header, `required` present.
    Fields are separated by commas, semicolons or tabs, whichever splits the header most (as
    spreadsheets save CSV where the comma is the decimal mark: semicolons); lines end in LF,
    CRLF or CR; `.attrs["delimiter"]` says which."""
    try:
        text = data.decode("utf-8-sig")
        delimiter = _csv_delimiter(text)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)  # CR, LF or CRLF lines
        rows, lines, end = [], [], 0
        for row in reader:  # blank lines are skipped, but counted: rows are named by their line
            start, end = end + 1, reader.line_num
            if row:
                rows.append(row)
                lines.append(start)
    except (UnicodeDecodeError, csv.Error) as error:
        raise PeprError(f"{name}: not a readable CSV file ({error})") from None
    if not rows:
        raise PeprError(f"{name}: empty file")
    header = [column.strip() for column in rows[0]]
    missing = [column for column in required if column not in header]
    if missing:
        raise PeprError(f"{name}: missing column(s): {', '.join(missing)}")
    for line, row in zip(lines[1:], rows[1:]):
        if len(row) != len(header):
            quoted = len(row) < len(header) and any(delimiter in field or "\n" in field for field in row)
            raise PeprError(f"{name}, row {line}: {len(row)} fields, the header has {len(header)}"
                            + (f" (a quoted field holds {delimiter!r} or a line end: a quote left open?)" if quoted else ""))
    if len(rows) == 1:
        raise PeprError(f"{name}: no rows below the header")
    # Labelled as the lines below a header on line 1 would be: row = label + 2.
    table = pd.DataFrame(rows[1:], columns=header, index=[line - 2 for line in lines[1:]])
    table.attrs["delimiter"] = delimiter
    return table


def _first_bad(bad: pd.Series) -> int:
    """The index label of the first flagged row (labels are row positions in the file)."""
    return int(bad.index[np.flatnonzero(bad.to_numpy())[0]])


def _where(name: str, label: int, column: str) -> str:
    return f"{name}, row {label + 2}, column {column}"  # the header is row 1


def _numeric(table: pd.DataFrame, column: str, name: str) -> pd.Series:
    values = pd.to_numeric(table[column].str.strip(), errors="coerce")
    bad = values.isna() | ~np.isfinite(values)
    if bad.any():
        label = _first_bad(bad)
        raise PeprError(
            f"{_where(name, label, column)}: not a number: {table[column].loc[label]!r}"
        )
    return values.astype(float)


def _check_range(values: pd.Series, column: str, name: str, low: float, high: float = np.inf):
    bad = (values < low) | (values > high)
    if bad.any():
        label = _first_bad(bad)
        expected = "negative" if high == np.inf else f"outside [{low:g}, {high:g}]"
        raise PeprError(f"{_where(name, label, column)}: {values.loc[label]:g} is {expected}")


NOT_WHOLE = f"is not a whole number of at most {INT64_MAX}"  # where `whole_number` refuses


def _count(table: pd.DataFrame, column: str, name: str) -> pd.Series:
    """A column of whole numbers that fit a 64-bit integer (`1e6` is fine, `1234.7` is not)."""
    values = []
    for label, text in table[column].str.strip().items():
        value = whole_number(text, float(text))  # finite and >= 0: checked before
        if value is None:
            raise PeprError(f"{_where(name, label, column)}: {text} {NOT_WHOLE}")
        values.append(value)
    return pd.Series(values, index=table.index, dtype="int64")


def whole_number(text: str, number: float) -> int | None:
    """`text` (which reads as `number`) as an int from 0 to INT64_MAX, parsed exactly where it
    is written as an integer (`1e6` is fine, `1234.7` is not); None otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = int(number) if float(number).is_integer() else None
    return value if value is not None and 0 <= value <= INT64_MAX else None


def _check_text(values: pd.Series, column: str, name: str) -> None:
    """No control or invisible format characters (a NUL, a newline, a right-to-left mark)."""
    bad = values.map(lambda text: control_character(text) is not None)
    if bad.any():
        label = _first_bad(bad)
        raise PeprError(f"{_where(name, label, column)}: {control_problem(values.loc[label])}")


def _check_present(values: pd.Series, column: str, name: str) -> None:
    empty = values.str.strip() == ""
    if empty.any():
        raise PeprError(f"{_where(name, _first_bad(empty), column)}: empty")


def _optional_text(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table:
        return pd.Series([None] * len(table), dtype=object)
    return table[column].str.strip().replace("", None).astype(object)


def _optional_flag(table: pd.DataFrame, column: str, name: str) -> pd.Series:
    if column not in table:
        return pd.Series([pd.NA] * len(table), dtype="boolean")
    present = table[column].str.strip() != ""
    values = pd.Series(pd.NA, index=table.index, dtype="boolean")
    if present.any():
        numbers = _numeric(table[present], column, name)
        bad = ~numbers.isin([0, 1])
        if bad.any():
            label = _first_bad(bad)
            raise PeprError(f"{_where(name, label, column)}: expected 0 or 1, got {table[column].loc[label]!r}")
        values[present] = numbers != 0
    return values
