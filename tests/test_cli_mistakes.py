"""A newcomer's mistakes, through the `batchrun` command against the real mock (issue 16).

Each mistake stops at once with one line that names the fix. Every test checks the message, the
exit code, how long it took to stop (generous bounds: the machine is shared) and how many
requests the server saw, and that nothing was lost: a stopped run leaves every row pending.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun.mock import MockConfig, MockServer
from tests.helpers import chat_rows, faulty_rows, read_results, write_jsonl
from tests.torture import ROOT, batchrun_cmd, chat_requests, cli_env, parts, run_cli

ROWS = 200


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer(MockConfig(latency_ms=1)) as server:
        yield server


def timed_run(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_cli("run", *args)
    return result, time.monotonic() - started


def requests_seen(server: MockServer) -> int:
    return int(server.stats()["requests"]["total"])


def test_https_to_a_plain_http_port_stops_at_the_first_request(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    https = mock.base_url.replace("http://", "https://", 1)
    result, elapsed = timed_run(path, "--out", out, "--base-url", https, "--no-estimate")
    assert result.returncode == 3, result.stderr
    assert "stopped early: cannot send requests: the TLS handshake failed (" in result.stdout
    assert "WRONG_VERSION_NUMBER" in result.stdout
    assert "use http:// in --base-url" in result.stdout
    assert "0 of ? rows done; resume with:" in result.stdout  # stopped by the check at start
    assert elapsed < 30  # it was 331 s: the outage clock waited out a handshake that cannot work
    assert chat_requests(mock) == 0  # the handshake never got as far as a request
    # One handshake, the check at start (GET /v1/models); no worker started, no retries.
    assert requests_seen(mock) <= 1
    assert parts(out) == []  # nothing recorded: every row is still pending


def test_a_full_endpoint_as_base_url_is_refused_before_anything(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    endpoint = f"{mock.base_url}/chat/completions"
    result, elapsed = timed_run(path, "--out", out, "--base-url", endpoint)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"batchrun: error: base_url (--base-url) {endpoint} ends with the endpoint "
        f"/chat/completions: give the API's base URL, {mock.base_url}; batchrun adds the "
        "endpoint (--endpoint, or each row's url)\n"
    )
    assert elapsed < 30
    assert requests_seen(mock) == 0
    assert not out.exists()


def test_every_row_answered_404_invalid_url_stops_after_20_and_resumes(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    wrong = mock.base_url.removesuffix("/v1") + "/api/v2"  # a path the server does not serve
    result, elapsed = timed_run(path, "--out", out, "--base-url", wrong, "-q")
    assert result.returncode == 3, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("stopped early: 20 requests answered HTTP 404 (Invalid URL (POST ")
    assert f"Rows went to {wrong}/v1/chat/completions, that is --base-url {wrong}" in first
    assert "--base-url must be the API's base URL" in first
    assert elapsed < 30
    # 20 answers decide; requests already in flight (50 workers) are the most that also went.
    unknown = mock.stats()["requests"]["by_path"].get("(unknown)", 0)
    assert 20 <= unknown <= 50 + 2  # + the two quota look-ups
    assert parts(out) == []  # the 404'd rows were held back, not recorded: all pending

    resumed = run_cli("run", path, "--out", out, "--base-url", mock.base_url, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished: {ROWS} of {ROWS} rows done" in resumed.stdout
    assert f"whole output: {ROWS} ok, 0 errors" in resumed.stdout
    assert chat_requests(mock) == ROWS  # each row sent once to the right URL


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_on_a_terminal(*args: str | Path, timeout_s: float = 60) -> tuple[int, str]:
    """`batchrun ARGS` with stderr on a pseudo-terminal (so the bar draws); exit code, stderr."""
    primary, secondary = pty.openpty()
    # A real terminal's size: tqdm draws nothing on a terminal 0 columns wide.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen(
        batchrun_cmd(*args), cwd=ROOT, env=cli_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    seen = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    return proc.wait(timeout=timeout_s), seen.decode("utf-8", "replace")


def test_a_server_that_cannot_be_reached_at_start_stops_at_once_naming_it(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(20))
    host = f"127.0.0.1:{_free_port()}"  # nothing listens there
    result, elapsed = timed_run(
        path, "--out", tmp_path / "out", "--base-url", f"http://{host}/v1", "--no-estimate"
    )
    assert result.returncode == 3, result.stderr
    # It froze at `0/20 [00:00<?]` with a quota line claiming "no billing endpoints" before.
    assert "stopped early: cannot connect to the server: " in result.stdout
    assert f"(GET http://{host}/v1/models); check --base-url, or run the same command again" in (
        result.stdout
    )
    assert "billing endpoints" not in result.stdout + result.stderr
    assert elapsed < 30


def test_a_server_that_goes_away_is_named_on_the_bar_whose_clock_keeps_moving(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(20))
    with MockServer(MockConfig(latency_ms=300)) as server:
        host = server.base_url.split("//", 1)[1].split("/", 1)[0]
        # Down 1.5 s in (after the check at start and the first answers), for longer than
        # --max-outage: the rows still pending then fail as connection_error.
        timer = threading.Timer(1.5, server.go_down, args=(30.0,))
        timer.start()
        try:
            code, stderr = run_on_a_terminal(
                "run", path, "--out", tmp_path / "out", "--base-url", server.base_url,
                "--max-outage", "3", "--max-retries", "0", "--no-estimate", "--concurrency", "2",
            )  # fmt: skip
        finally:
            timer.cancel()
    assert code == 0  # past --max-outage the rows fail as connection_error (documented)
    text = re.sub(r"\s+", " ", stderr)
    # Logged once with the engine's words, and on the bar itself while it is waited out...
    assert f"cannot connect to {host} (" in text
    assert f"cannot connect to {host}, waiting up to 3 s (--max-outage): " in text
    # ...whose clock kept moving while no row came back.
    clocks = [int(s) for s in re.findall(r"\| \d+/20 \[00:(\d\d)<", text)]
    assert clocks and max(clocks) >= 3, text[-2000:]


def test_a_json_array_is_refused_by_run_and_estimate_before_anything(
    tmp_path: Path, mock: MockServer
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps([row["body"] for row in chat_rows(342)]))
    out = tmp_path / "out"
    result, elapsed = timed_run(path, "--out", out, "--base-url", mock.base_url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"batchrun: error: {path} holds one JSON array, not JSON Lines (one request object per "
        "line); convert it: python -c "
    )
    assert result.stdout == ""  # it used to say "finished: 342 of 342 rows done, 0 ok"
    assert elapsed < 30
    assert requests_seen(mock) == 0
    assert not out.exists()
    estimate = run_cli("estimate", path)
    assert estimate.returncode == 2
    assert "holds one JSON array, not JSON Lines" in estimate.stderr


# ---------------------------------------------------------------------------------- honest ends


def test_fail_on_errors_exits_4_when_rows_ended_in_error_and_0_without_it(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = faulty_rows(30, {3: ("400", None), 7: ("400", None)})
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    plain = run_cli("run", path, "--out", tmp_path / "a", "--base-url", mock.base_url, "-q")
    assert plain.returncode == 0, plain.stderr  # the documented default stays
    strict, elapsed = timed_run(
        path, "--out", tmp_path / "b", "--base-url", mock.base_url, "-q", "--fail-on-errors"
    )
    assert strict.returncode == 4, strict.stderr
    assert "finished: 30 of 30 rows done\n" in strict.stdout
    assert "  2 rows ended in error: exit code 4 (--fail-on-errors)" in strict.stdout
    assert elapsed < 30
    assert chat_requests(mock) == 60  # each row once per output, the 400s not retried
    clean = write_jsonl(tmp_path / "clean.jsonl", chat_rows(5))
    ok = run_cli("run", clean, "--out", tmp_path / "c", "--base-url", mock.base_url, "-q",
                 "--fail-on-errors")  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_a_resume_shows_the_whole_outputs_figures_on_the_bar_and_in_the_summary(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    args = ("run", path, "--out", out, "--base-url", mock.base_url, "--concurrency", "4")
    first = run_cli(*args, "--max-cost", "0.0003")  # stops part way: exit 3, resumable
    assert first.returncode == 3, first.stderr
    done = int(re.search(r"([\d,]+) of 200 rows done", first.stdout).group(1))  # type: ignore[union-attr]
    assert 0 < done < ROWS
    code, stderr = run_on_a_terminal(*args)
    assert code == 0
    text = re.sub(r"\s+", " ", stderr)
    assert f"resuming: {done} of {ROWS} rows done" in text
    final = re.sub(r"\s+", " ", stderr.rstrip().rsplit("\r", 1)[-1])
    # The bar ends where the summary does: whole-output ok and cost, this run's share beside it.
    assert f"{ROWS}/{ROWS} [" in final and f"ok={ROWS}, err=0" in final, final
    whole = re.search(r"cost=\$([\d.]+), run cost=\$([\d.]+)", final)
    assert whole is not None, final
    total_cost = sum(r["cost_usd"] for r in read_results(out))
    assert abs(float(whole.group(1)) - total_cost) < 1e-4
    assert float(whole.group(2)) < float(whole.group(1))


# ------------------------------------------------------------------------------- the command


def test_version() -> None:
    from batchrun import __version__

    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"batchrun {__version__}\n")


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("--rmp", "500"), "unrecognized arguments: --rmp 500 (--rmp: did you mean --rpm?)"),
        (("--concurrensy=8",), "(--concurrensy: did you mean --concurrency?)"),
        (("--max-cots", "5"), "(--max-cots: did you mean --max-cost?)"),
    ],
)
def test_a_mistyped_flag_gets_a_did_you_mean(
    tmp_path: Path, args: tuple[str, ...], hint: str
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(1))
    result = run_cli("run", path, "--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert hint in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_mistyped_required_flag_gets_a_did_you_mean_too(tmp_path: Path) -> None:
    result = run_cli("run", tmp_path / "in.jsonl", "--ot", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "error: the following arguments are required: --out (--ot: did you mean --out?)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rpm", "abc"), "argument --rpm: must be a positive number, got 'abc'"),
        (("--concurrency", "x"), "--concurrency: must be a positive whole number, got 'x'"),
        (("--grace", "-1"), "argument --grace: must be zero or more seconds, got -1"),
    ],
)  # fmt: skip
def test_a_bad_value_is_named_in_plain_words(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_cli("run", tmp_path / "in.jsonl", "--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "_positive" not in result.stderr and "invalid" not in result.stderr


def test_the_resume_command_printed_is_the_one_that_was_run(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    https = mock.base_url.replace("http://", "https://", 1)  # stops at once, exit 3
    script = os.path.relpath(Path(sys.executable).with_name("batchrun"), ROOT)
    args = ["run", str(path), "--out", str(tmp_path / "my out"), "--base-url", https]
    typed = subprocess.run(
        [script, *args], capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60
    )
    assert typed.returncode == 3, typed.stderr
    assert f"resume with:\n  {shlex.join([script, *args])}\n" in typed.stdout
    as_module = run_cli(*args)
    assert f"resume with:\n  {shlex.join([sys.executable, '-m', 'batchrun', *args])}\n" in (
        as_module.stdout
    )


def test_max_row_bytes_named_in_the_row_error_is_a_real_flag(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = chat_rows(3)
    rows[1]["body"]["messages"][0]["content"] = "x" * 500
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli("run", path, "--out", out, "--base-url", mock.base_url, "-q",
                   "--max-row-bytes", "400")  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = read_results(out)
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert records[1]["error_message"].endswith("over the limit of 400 bytes (--max-row-bytes)")
