"""Fixtures shared by every test file."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, which batchrun and the mock use."""
    return "asyncio"
