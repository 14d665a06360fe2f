"""The databases the dashboard may read (a picker, never a free path) and where it may write.

Readable: the shipped files in `results/`, every `*.duckdb` in the user data folder
($PEPR_DATA_DIR, default ~/.local/share/pepr), and the one file named at start by $PEPR_DB.
Writable: only databases in the user data folder, new or existing, that are not links (a link
could lead anywhere, `results/` included); never `results/`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
SHIPPED = {  # key -> (label, file in results/)
    "paper": ("The paper's study (Selvan et al., NLDL 2025)", "paper.duckdb"),
    "agent": ("The agent's own CPU runs (digits)", "pepr.duckdb"),
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Source:
    key: str  # in the picker and the link (`db=`)
    label: str
    path: Path
    writable: bool


def user_key(path: Path) -> str:
    """The picker's key of a database in the user data folder."""
    return f"user:{path.stem}"


def user_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The user data folder: $PEPR_DATA_DIR, else ~/.local/share/pepr."""
    return Path(env.get("PEPR_DATA_DIR") or Path.home() / ".local" / "share" / "pepr").expanduser()


def sources(env: Mapping[str, str] = os.environ, results: Path = RESULTS) -> dict[str, Source]:
    """Every database the dashboard may read, the one to open first listed first."""
    found: dict[str, Source] = {}
    for key, (label, name) in SHIPPED.items():
        if (results / name).is_file():
            found[key] = Source(key, label, results / name, writable=False)
    folder = user_dir(env)
    if folder.is_dir():
        for path in sorted(folder.glob("*.duckdb")):
            if path.is_file() and _NAME.fullmatch(path.stem):
                link = path.is_symlink()
                key = user_key(path)
                found[key] = Source(key, f"Yours: {path.stem}" + (" (a link)" if link else ""), path, writable=not link)
    start = env.get("PEPR_DB")
    if start:
        path = Path(start).expanduser().resolve()
        same = next((s for s in found.values() if s.path.resolve() == path), None)
        first = same or Source("start", f"Given at start: {start}", path, writable=False)
        found = {first.key: first, **{k: v for k, v in found.items() if k != first.key}}
    return found


def new_database(name: str, env: Mapping[str, str] = os.environ) -> Path:
    """The path of a new user database called `name` (letters, digits, `_.-`), in the user
    data folder (made when the first import writes); ValueError for any other name, and for
    a name taken by a database or a link there (links are never written)."""
    name = name.strip().removesuffix(".duckdb")
    if not _NAME.fullmatch(name):
        raise ValueError(
            "a database name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    path = user_dir(env) / f"{name}.duckdb"
    if path.is_symlink():
        raise ValueError("that name is a link in your data folder, and links are never written; choose another name")
    if path.exists():
        raise ValueError("you already have a database of that name; choose it under 'Import into'")
    return path
