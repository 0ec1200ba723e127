"""Fixtures shared across the suite: a local Gemini endpoint and a hermetic, fake API key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promptgrade.testing.gemini_server import FakeGemini

FAKE_API_KEY = "test-key-not-real"


@pytest.fixture
def gemini_server() -> Iterator[FakeGemini]:
    """A started fake Gemini API on 127.0.0.1, fresh per test so scripts and logs never leak."""
    with FakeGemini() as server:
        yield server


@pytest.fixture
def fake_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A dummy GEMINI_API_KEY, with every variable that could redirect or re-authenticate the SDK removed.

    Without this a developer's real key or GOOGLE_GEMINI_BASE_URL would leak into tests.
    """
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_API_KEY)
    return FAKE_API_KEY
