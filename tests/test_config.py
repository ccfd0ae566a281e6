"""batchrun.config: RunConfig's defaults are the CLI's (issue 16: "same defaults everywhere")."""

from __future__ import annotations

from pathlib import Path

import pytest

import batchrun
from batchrun.config import DEFAULT_BASE_URL, RunConfig
from batchrun.mock import MockConfig, MockServer
from tests.helpers import TEST_KEY, chat_rows, read_results, write_jsonl
from tests.torture import cli_env, run_cli


def test_base_url_and_key_come_from_the_environment_as_in_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RunConfig(input_path="in", out_dir="out").base_url == DEFAULT_BASE_URL
    assert RunConfig(input_path="in", out_dir="out").api_key is None
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    config = RunConfig(input_path="in", out_dir="out")
    assert (config.base_url, config.api_key) == ("http://127.0.0.1:9/v1", TEST_KEY)
    assert TEST_KEY not in repr(config)


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    config = RunConfig(input_path="in", out_dir="out", base_url="http://h/v1", api_key=None)
    assert (config.base_url, config.api_key) == ("http://h/v1", None)


def test_the_library_and_the_cli_reach_the_same_server_with_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's library snippet against a keyed API printed "0 0 3" before: RunConfig sent
    # no key and went to api.openai.com while the CLI used $OPENAI_API_KEY / $OPENAI_BASE_URL.
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(10))
    with MockServer(MockConfig(api_key=TEST_KEY)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
        summary = batchrun.run_sync(batchrun.RunConfig(input_path=path, out_dir=tmp_path / "a"))
        assert (summary.ok, summary.errors, summary.exit_code, summary.stopped) == (10, 0, 0, None)
        env = cli_env(OPENAI_BASE_URL=server.base_url)
        assert env["OPENAI_API_KEY"] == TEST_KEY
        done = run_cli("run", path, "--out", tmp_path / "b", "-q", env=env)
        assert done.returncode == 0, done.stderr
    assert len(read_results(tmp_path / "a")) == len(read_results(tmp_path / "b")) == 10
