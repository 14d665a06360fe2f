"""Errors that reach a user as one line, never as a traceback."""

import unicodedata

# Unicode categories of control (NUL, newline, ESC, ...) and invisible format characters
# (right-to-left overrides, zero-width spaces): never part of a name, never printed raw.
_CONTROL_CATEGORIES = ("Cc", "Cf")


class PeprError(Exception):
    """A problem the user can fix: bad input, bad usage. Exits with code 2."""

    exit_code = 2


class StoreError(PeprError):
    """The database cannot be used: missing, not DuckDB, newer schema, unwritable."""


class StoreWriteError(StoreError):
    """A write failed part way (disk full, I/O error): the input was fine, nothing was written."""

    exit_code = 1


class StoreBusyError(StoreError):
    """Another process held the database lock for longer than the timeout."""

    exit_code = 1


class DownloadError(PeprError):
    """A remote file could not be fetched (no network, server error)."""

    exit_code = 1


def control_character(text: str) -> str | None:
    """The first control or invisible format character in `text`, or None."""
    return next((char for char in text if unicodedata.category(char) in _CONTROL_CATEGORIES), None)


def control_problem(text: str) -> str | None:
    """`control character U+XXXX in '...'` for the first such character in `text`, or None."""
    char = control_character(text)
    return None if char is None else f"control character U+{ord(char):04X} in {text!r}"


def check_name(text: str, what: str) -> str:
    """`text` if it has no control or invisible format character; else a PeprError naming `what`."""
    problem = control_problem(text)
    if problem is not None:
        raise PeprError(f"{what}: {problem}")
    return text


def one_line(text: str) -> str:
    """`text` with control and invisible format characters escaped, so it prints as one line."""
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in _CONTROL_CATEGORIES else char
        for char in text
    )


def described(error: BaseException) -> str:
    """`OSError: the first line of its message`, or the error's type alone where it says nothing."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def described_whole(error: BaseException) -> str:
    """`described`, with the whole message on one line: what a failed run or benchmark records."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
