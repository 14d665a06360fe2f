"""What light modules need to know of the store's schema, without loading DuckDB or pandas
(`pepr-agent` reads its flags and starts its clock before those imports): the largest values
its integer columns hold, and its clock. `pepr.store` owns the rest."""

from __future__ import annotations

from datetime import datetime, timezone

INT32_MAX = 2**31 - 1  # the largest value of an INTEGER column (seeds, counts)
INT64_MAX = 2**63 - 1  # of a BIGINT column (parameters, set sizes)


def now() -> datetime:
    """The time now as the store keeps it (TIMESTAMP columns): UTC, without a zone."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
