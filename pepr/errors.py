"""Errors that reach a user as one line, never as a traceback."""


class PeprError(Exception):
    """A problem the user can fix: bad input, bad usage. Exits with code 2."""

    exit_code = 2


class StoreError(PeprError):
    """The database cannot be used: missing, not DuckDB, newer schema, unwritable."""


class StoreBusyError(StoreError):
    """Another process held the database lock for longer than the timeout."""

    exit_code = 1


class DownloadError(PeprError):
    """A remote file could not be fetched (no network, server error)."""

    exit_code = 1
