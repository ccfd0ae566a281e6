"""Fixtures shared by every test file."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, which batchrun and the mock use."""
    return "asyncio"


@pytest.fixture(autouse=True)
def no_openai_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """`RunConfig` reads $OPENAI_API_KEY / $OPENAI_BASE_URL: a developer's own must not leak in."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
