"""pytest front-end: matrix files as test files, one item per cell (see ``harness.pytest_items``)."""

from __future__ import annotations

import os
import time


def pytest_unconfigure(config: object) -> None:
    """Give rattler's background threads a moment before the interpreter exits."""
    if os.environ.get("HARNESS_USED_RATTLER"):
        time.sleep(0.1)
