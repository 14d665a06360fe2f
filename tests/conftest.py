"""Shared fixtures: the paper's reference data beside the checkout, and small run tables."""

from pathlib import Path

import pytest

PAPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "pepr-paper"


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    """`../shared/pepr-paper/` (the authors' published results); skipped where it is absent."""
    if not (PAPER_DIR / "all_results.csv").is_file():
        pytest.skip(f"the paper's reference data is not at {PAPER_DIR} (it lives beside the checkout)")
    return PAPER_DIR
