from __future__ import annotations

from pathlib import Path

import pytest

HELP_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "help-latency"


@pytest.fixture(scope="session")
def help_dir() -> Path:
    if not HELP_DIR.is_dir():
        pytest.skip(f"shared latency tables not found at {HELP_DIR}")
    return HELP_DIR
