"""batchrun.endpoints.profiles: the family of every path, and the key headers per provider."""

from __future__ import annotations

import pytest

from batchrun.endpoints.answers import ANSWER_READERS
from batchrun.endpoints.profiles import GENERIC, PROFILES, auth_headers, profile_for
from batchrun.endpoints.usage import USAGE_READERS


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/chat/completions", "chat"),
        ("/v1/chat/completions?api-version=2024-10-21", "chat"),
        ("/v1/completions", "completions"),
        ("/v1/responses", "responses"),
        ("/v1/messages", "claude"),
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini"),
        ("/v1/models/gemini-2.5-pro:generateContent", "gemini"),
        ("/v1/embeddings", "embeddings"),
        ("/v1/images/generations", "images"),
        ("/v1/images/edits", "image_edits"),
        ("/v1/audio/speech", "speech"),
        ("/v1/audio/transcriptions", "transcriptions"),
        ("/v1/audio/translations", "transcriptions"),
        ("/v1/models", "models"),
        ("/v1/moderations", "generic"),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "generic"),
        ("/v1/chat/completions/extra", "generic"),
    ],
)
def test_profile_for(path: str, name: str) -> None:
    assert profile_for(path).name == name


def test_the_model_of_a_gemini_path() -> None:
    profile = profile_for("/v1beta/models/gemini-2.5-flash:generateContent")
    assert profile.model_in_path("/v1beta/models/gemini-2.5-flash:generateContent?x=1") == (
        "gemini-2.5-flash"
    )
    assert profile_for("/v1/chat/completions").model_in_path("/v1/chat/completions") is None


def test_every_profile_names_readers_that_exist() -> None:
    for profile in PROFILES:
        assert profile.answer is None or profile.answer in ANSWER_READERS, profile.name
        assert profile.usage in USAGE_READERS, profile.name
        assert bool(profile.files) == profile.multipart, profile.name


def test_generic_is_json_in_json_out() -> None:
    assert (GENERIC.answer, GENERIC.reply, GENERIC.multipart) == (None, "json", False)


KEY = "sk-test-key"


@pytest.mark.parametrize(
    ("path", "base_url", "expected"),
    [
        ("/v1/chat/completions", "https://api.openai.com/v1", {"authorization": f"Bearer {KEY}"}),
        (
            "/v1/messages",
            "https://api.anthropic.com",
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        ),
        (
            "/v1/messages",
            "https://api.apicore.ai/v1",
            {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "https://generativelanguage.googleapis.com",
            {"x-goog-api-key": KEY},
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "http://127.0.0.1:8000/v1",
            {"authorization": f"Bearer {KEY}"},
        ),
        # A host that only ends like the provider's is not the provider.
        (
            "/v1/messages",
            "https://evilanthropic.com",
            {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
        ),
    ],
)
def test_auth_headers(path: str, base_url: str, expected: dict[str, str]) -> None:
    assert auth_headers(profile_for(path), base_url, KEY) == expected


def test_no_key_no_key_header() -> None:
    assert auth_headers(profile_for("/v1/messages"), "https://api.anthropic.com", None) == {
        "anthropic-version": "2023-06-01"
    }
    assert auth_headers(profile_for("/v1/chat/completions"), "https://x", None) == {}
