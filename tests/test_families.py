"""Every endpoint family through the `batchrun` command against the real mock server.

For each family: the row is ok, the answer columns (`text`, `tool_calls`, `embedding`, `media`,
`content_type`) hold what the server sent, and the server saw exactly one request per row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.mock.audio import speech_audio, speech_stream, transcript_of
from batchrun.mock.images import png_of
from batchrun.mock.multipart import FormFile
from batchrun.mock.payloads import _vector
from tests.helpers import TEST_KEY, read_results, write_jsonl
from tests.test_cli import ROOT, batchrun_cmd, env_with_key, run_cli
from tests.torture import kill_9_repeatedly


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer(MockConfig(port=0, latency_ms=1)) as server:
        yield server


def line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def run(tmp_path: Path, mock: MockServer, rows: list[dict[str, Any]], *args: str) -> list[Any]:
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli("run", path, "--out", out, "--base-url", mock.base_url, "-q", *args)
    assert done.returncode == 0, done.stderr + done.stdout
    return read_results(out)


def api_requests(mock: MockServer) -> dict[str, int]:
    by_path = dict(mock.stats()["requests"]["by_path"])
    by_path.pop("/v1/models", None)  # the check at start
    by_path.pop("/v1/dashboard/billing/subscription", None)
    by_path.pop("/v1/dashboard/billing/usage", None)
    return by_path


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_chat_and_embeddings_answers_are_columns(
    tmp_path: Path, mock: MockServer, engine: tuple[str, ...]
) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    rows = [
        line(
            "ask",
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "mock_echo": True,
            },
        ),
        line(
            "call",
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [tool],
            },
        ),
        line(
            "vec",
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 4},
        ),
    ]
    results = run(tmp_path, mock, rows, *engine)
    ask, call, vec = results
    assert [r["status"] for r in results] == ["ok"] * 3
    assert ask["text"] == "What is the capital of France?"
    assert ask["tool_calls"] is None and ask["embedding"] is None
    assert [(c["name"], json.loads(c["arguments"])) for c in json.loads(call["tool_calls"])] == [
        ("weather", {"city": "mock"})
    ]
    assert call["finish_reason"] == "tool_calls"
    # float32 in the column: the server's vectors to float32 precision, in input order.
    expected = [_vector("one", 4), _vector("two", 4)]
    assert len(vec["embedding"]) == 2
    for got, sent in zip(vec["embedding"], expected, strict=True):
        assert got == pytest.approx(sent, abs=1e-6)
    assert {r["content_type"] for r in results} == {"application/json"}
    assert all(r["media"] is None for r in results)
    assert api_requests(mock) == {"/v1/chat/completions": 2, "/v1/embeddings": 1}


def speech(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "tts-1", "input": text, "voice": "alloy", **extra}
    return line(custom_id, "/v1/audio/speech", body)


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_speech_is_saved_as_a_media_file_at_the_first_attempt(
    tmp_path: Path, mock: MockServer, engine: tuple[str, ...]
) -> None:
    long_text = "A sentence of speech, said again and again. " * 90  # ~4,000 characters
    rows = [
        speech("hello", "Hello there!"),
        speech("wav", "In a wave file.", response_format="wav"),
        speech("long", long_text),
    ]
    results = run(tmp_path, mock, rows, *engine)
    out = tmp_path / "out"
    expected = [
        speech_audio("Hello there!", "alloy", "mp3"),
        speech_audio("In a wave file.", "alloy", "wav"),
        speech_audio(long_text, "alloy", "mp3"),
    ]
    for record, audio in zip(results, expected, strict=True):
        assert (record["status"], record["attempts"], record["response"]) == ("ok", 1, None)
        (media,) = record["media"]
        assert media.startswith("media/")
        assert (out / media).read_bytes() == audio  # byte for byte
    assert [r["content_type"] for r in results] == ["audio/mpeg", "audio/wav", "audio/mpeg"]
    assert [Path(r["media"][0]).suffix for r in results] == [".mp3", ".wav", ".mp3"]
    assert api_requests(mock) == {"/v1/audio/speech": 3}  # one each: never retried as "not JSON"
    assert sorted(p.name for p in (out / "media").rglob(".*")) == []  # no temporary file left


def test_a_truncated_audio_body_is_sent_again_and_the_file_is_whole(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = [speech("cut", "Cut short once.", mock_fault="truncated", mock_fault_times=1)]
    (record,) = run(tmp_path, mock, rows)
    out = tmp_path / "out"
    assert (record["status"], record["attempts"]) == ("ok", 2)
    audio = speech_audio("Cut short once.", "alloy", "mp3")
    assert (out / record["media"][0]).read_bytes() == audio
    assert [p.name for p in (out / "media").rglob("*") if p.is_file()] == [
        Path(record["media"][0]).name
    ]  # the cut attempt left nothing behind
    assert api_requests(mock) == {"/v1/audio/speech": 2}


def test_a_json_error_on_a_200_from_speech_is_an_error_not_a_media_file(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = [speech("err", "No audio.", mock_fault="error200")]
    (record,) = run(tmp_path, mock, rows, "--max-retries", "0")
    assert (record["status"], record["error_type"], record["media"]) == ("error", "api_error", None)
    assert not (tmp_path / "out" / "media").exists()


def test_kill_9_during_speech_then_resume_leaves_each_row_one_record_and_one_whole_file(
    tmp_path: Path,
) -> None:
    """Exactly once for media: files in place before their part, swept and rewritten on resume."""
    n_rows = 400
    texts = [f"Sentence number {i}, spoken. " * (1 + i % 7) for i in range(n_rows)]
    rows = [speech(f"s-{i}", text) for i, text in enumerate(texts)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(port=0, latency_ms=30)) as server:
        args = batchrun_cmd(
            "run", path, "--out", out, "--base-url", server.base_url, "-q",
            "--concurrency", "8", "--flush-rows", "10", "--flush-interval", "0.05",
        )  # fmt: skip
        # Each run sends 10 requests, then dies within 0.3 s: at most ~90 rows of 400 each.
        kills = kill_9_repeatedly(
            args, progress=lambda: api_requests(server).get("/v1/audio/speech", 0),
            rng=random.Random(20261202), times=4, step=10,
        )  # fmt: skip
        final = subprocess.run(args, env=env_with_key(), cwd=ROOT, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr
    assert kills >= 3, "the run finished too fast to be killed; make it longer"
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(n_rows))  # none missing, none twice
    referenced = set()
    for record, text in zip(records, texts, strict=True):
        assert record["status"] == "ok"
        (media,) = record["media"]
        assert (out / media).read_bytes() == speech_audio(text, "alloy", "mp3")
        referenced.add(media)
    on_disk = {str(p.relative_to(out)) for p in (out / "media").rglob("*") if p.is_file()}
    # No half-written file, and no file that no record names (a resend reuses its row's name).
    assert on_disk == referenced


def run_measured(args: list[str], log: Path) -> tuple[int, float]:
    """Run a batchrun command to its end: its exit code and its peak RSS in MB."""
    with log.open("wb") as sink:
        child = subprocess.Popen(args, env=env_with_key(), cwd=ROOT, stdout=sink, stderr=sink)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss / 1024


@pytest.mark.slow
def test_a_50_mb_speech_answer_lands_byte_for_byte_and_memory_stays_flat(
    tmp_path: Path, mock: MockServer
) -> None:
    """Bodies stream to disk: a run whose answer is 50 MB peaks about where a 10 KB one does."""
    peaks = {}
    for size in (10_000, 50_000_000):
        rows = [speech("big", "Big.", mock_audio_bytes=size)]
        path = write_jsonl(tmp_path / f"in-{size}.jsonl", rows)
        out = tmp_path / f"out-{size}"
        args = batchrun_cmd("run", path, "--out", out, "--base-url", mock.base_url, "-q")
        code, peaks[size] = run_measured(args, tmp_path / f"log-{size}")
        assert code == 0, (tmp_path / f"log-{size}").read_text()
        (record,) = read_results(out)
        assert (record["status"], record["attempts"], record["response"]) == ("ok", 1, None)
        expected, saved = hashlib.sha256(), hashlib.sha256()
        for chunk in speech_stream("Big.", "alloy", size):
            expected.update(chunk)
        with (out / record["media"][0]).open("rb") as f:
            while chunk := f.read(1 << 20):
                saved.update(chunk)
        assert saved.hexdigest() == expected.hexdigest()  # byte for byte
    assert api_requests(mock) == {"/v1/audio/speech": 2}
    # Held in memory, the answer alone would add 50 MB (and a copy or two on the way).
    assert peaks[50_000_000] - peaks[10_000] < 20, peaks


def clips(folder: Path) -> dict[str, bytes]:
    """Two audio files the mock can check: an MP3 and a WAV of its own speech."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "a.mp3": speech_audio("The first clip, in MP3.", "alloy", "mp3"),
        "b.wav": speech_audio("The second clip, a wave file.", "echo", "wav"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def heard(name: str, data: bytes, task: str = "transcribe") -> str:
    return transcript_of(FormFile(filename=name, content_type=None, data=data), task)


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_transcriptions_upload_the_file_intact_in_every_response_format(
    tmp_path: Path, mock: MockServer, engine: tuple[str, ...]
) -> None:
    files = clips(tmp_path / "clips")
    url = "/v1/audio/transcriptions"
    rows = [
        line("json", url, {"model": "whisper-1", "file": "clips/a.mp3"}),
        line("text", url, {"model": "whisper-1", "file": "clips/b.wav", "response_format": "text"}),
        line("srt", url, {"model": "whisper-1", "file": "clips/a.mp3", "response_format": "srt"}),
        line(
            "verbose",
            url,
            {
                "model": "whisper-1",
                "file": "clips/b.wav",
                "response_format": "verbose_json",
                "timestamp_granularities": ["segment"],
                "temperature": 0.2,
            },
        ),
        line(
            "translate",
            "/v1/audio/translations",
            {"model": "whisper-1", "file": "clips/a.mp3"},
        ),
    ]
    results = {r["custom_id"]: r for r in run(tmp_path, mock, rows, *engine)}
    assert {k: r["status"] for k, r in results.items()} == dict.fromkeys(results, "ok")
    assert results["json"]["text"] == heard("a.mp3", files["a.mp3"])  # every byte arrived
    assert results["text"]["text"] == heard("b.wav", files["b.wav"]) + "\n"
    assert results["text"]["response"] is None  # a text answer is the text itself
    assert results["text"]["content_type"].startswith("text/plain")
    srt = results["srt"]["text"]
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,") and heard("a.mp3", files["a.mp3"]) in srt
    assert results["verbose"]["text"] == heard("b.wav", files["b.wav"])
    assert json.loads(results["verbose"]["response"])["duration"] == pytest.approx(
        len("The second clip, a wave file.") / 15
    )
    assert results["translate"]["text"] == heard("a.mp3", files["a.mp3"], "translate")
    assert all(r["attempts"] == 1 for r in results.values())
    assert api_requests(mock) == {"/v1/audio/transcriptions": 4, "/v1/audio/translations": 1}


def test_an_upload_outside_the_files_root_missing_or_too_large_is_bad_input_never_sent(
    tmp_path: Path, mock: MockServer
) -> None:
    clips(tmp_path / "data" / "clips")
    (tmp_path / "secret.txt").write_text("not yours")
    huge = tmp_path / "data" / "huge.wav"
    with huge.open("wb") as f:
        f.truncate(25 * 1024 * 1024 + 1)  # sparse: one byte over whisper's 25 MB
    (tmp_path / "data" / "link.mp3").symlink_to(tmp_path / "secret.txt")
    url = "/v1/audio/transcriptions"
    names = [
        "clips/a.mp3",
        "../secret.txt",
        "/etc/passwd",
        "clips/none.mp3",
        "huge.wav",
        "link.mp3",
    ]
    rows = [line(f"r{i}", url, {"model": "whisper-1", "file": n}) for i, n in enumerate(names)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli(
        "run", path, "--out", out, "--base-url", mock.base_url, "-q",
        "--files-root", tmp_path / "data",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = read_results(out)
    assert [r["status"] for r in results] == ["ok"] + ["error"] * 5
    messages = [r["error_message"] for r in results[1:]]
    assert all(r["error_type"] == "bad_input" for r in results[1:])
    assert messages[0].startswith("line 2: '../secret.txt' is outside the files root")
    assert messages[1].startswith("line 3: '/etc/passwd' is outside the files root")
    assert messages[2].startswith("line 4: file not found: 'clips/none.mp3'")
    assert messages[3].startswith("line 5: 'huge.wav' is 26,214,401 bytes, over this endpoint's")
    assert messages[4].startswith("line 6: 'link.mp3' is outside the files root")
    assert api_requests(mock) == {"/v1/audio/transcriptions": 1}  # the bad rows never went
    # The run's own estimate read the clip inside --files-root too: priced by its minutes.
    (group,) = json.loads((out / "estimate.json").read_text())["groups"]
    assert group["rows"] == 1 and group["cost_expected_usd"] is not None


def test_a_damaged_upload_is_refused_by_the_server_and_recorded(
    tmp_path: Path, mock: MockServer
) -> None:
    data = speech_audio("A wave file.", "alloy", "wav")
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])  # its header says more
    rows = [line("cut", "/v1/audio/transcriptions", {"model": "whisper-1", "file": "cut.wav"})]
    (record,) = run(tmp_path, mock, rows)
    assert (record["status"], record["error_type"]) == ("error", "invalid_request")
    assert "could not be decoded" in record["error_message"]


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_a_500_mid_upload_is_sent_again_and_the_file_arrives_whole(
    tmp_path: Path, engine: tuple[str, ...]
) -> None:
    long_clip = speech_audio(
        "A long clip to upload, sentence after sentence. " * 20, "alloy", "mp3"
    )
    assert len(long_clip) > 1_000_000  # far more than one read of the socket
    (tmp_path / "long.mp3").write_bytes(long_clip)
    url = "/v1/audio/transcriptions"
    rows = [line(f"r{i}", url, {"model": "whisper-1", "file": "long.mp3"}) for i in range(6)]
    with MockServer(MockConfig(port=0, faults={"500_upload": 0.5}, seed=7)) as server:
        results = run(tmp_path, server, rows, "--max-retries", "20", *engine)
        stats = server.stats()
    faults = stats["faults"].get("500_upload", 0)
    assert faults > 0  # the server did answer 500 before the uploads had arrived
    assert [r["status"] for r in results] == ["ok"] * 6
    assert {r["text"] for r in results} == {heard("long.mp3", long_clip)}
    assert sum(r["attempts"] for r in results) == 6 + faults
    assert stats["requests"]["by_path"][url] == 6 + faults


@pytest.mark.parametrize("kind", ["500", "500_upload"])
def test_an_upload_row_that_fails_once_is_sent_again_and_the_file_arrives_whole(
    tmp_path: Path, mock: MockServer, kind: str
) -> None:
    """`mock_fault_times` counts a multipart row's attempts by its fields and file hashes (each
    attempt has a new boundary): it fails once, is retried, the file streams again intact."""
    files = clips(tmp_path / "clips")
    body = {"model": "whisper-1", "file": "clips/a.mp3", "mock_fault": kind, "mock_fault_times": 1}
    rows = [line("again", "/v1/audio/transcriptions", body)]
    (record,) = run(tmp_path, mock, rows)
    assert (record["status"], record["attempts"]) == ("ok", 2)
    assert record["text"] == heard("a.mp3", files["a.mp3"])  # the mock checked every byte
    assert api_requests(mock) == {"/v1/audio/transcriptions": 2}
    assert mock.stats()["faults"] == {kind: 1}
    assert len(read_results(tmp_path / "out")) == 1  # one record


def image_name(model: str, prompt: str, size: str, index: int) -> str:
    seed = hashlib.sha256(f"{model}\x00{prompt}".encode()).hexdigest()[:16]
    return f"{seed}-{size}-{index}.png"


def generation(custom_id: str, model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "size": "256x256", **extra}
    return line(custom_id, "/v1/images/generations", body)


@pytest.fixture
def keyed() -> Iterator[MockServer]:
    """A mock that wants the key (so a client sends it), for the tests of where it goes."""
    with MockServer(MockConfig(port=0, api_key=TEST_KEY)) as server:
        yield server


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_images_as_b64_json_and_as_urls_become_files_and_the_key_stays_home(
    tmp_path: Path, keyed: MockServer, engine: tuple[str, ...]
) -> None:
    rows = [
        generation("b64", "gpt-image-1", "A red square", n=2),
        generation("url", "dall-e-3", "A blue circle"),
        generation("asked-b64", "dall-e-2", "A green line", response_format="b64_json"),
    ]
    results = {r["custom_id"]: r for r in run(tmp_path, keyed, rows, *engine)}
    out = tmp_path / "out"
    b64, url, asked = results["b64"], results["url"], results["asked-b64"]
    assert [r["status"] for r in results.values()] == ["ok"] * 3
    assert [r["error_message"] for r in results.values()] == [None] * 3
    for record, model, prompt, n in [
        (b64, "gpt-image-1", "A red square", 2),
        (url, "dall-e-3", "A blue circle", 1),
        (asked, "dall-e-2", "A green line", 1),
    ]:
        names = [image_name(model, prompt, "256x256", i) for i in range(n)]
        assert [(out / m).read_bytes() for m in record["media"]] == [
            png_of(name, 256, 256) for name in names
        ]
        assert all(m.endswith(".png") for m in record["media"])
        # The stored answer names the files; base64 is not kept, URLs are.
        data = json.loads(record["response"])["data"]
        assert [item["batchrun_media"] for item in data] == record["media"]
        assert all("b64_json" not in item for item in data)
    assert "url" in json.loads(url["response"])["data"][0]
    assert (b64["prompt_tokens"], b64["completion_tokens"]) == (3, 544)  # gpt-image-1's usage
    stats = keyed.stats()
    assert stats["media"] == {"requests": 1, "200": 1}  # and none with a key
    assert api_requests(keyed) == {"/v1/images/generations": 3}


def test_no_download_keeps_the_urls(tmp_path: Path, mock: MockServer) -> None:
    rows = [generation("url", "dall-e-3", "A blue circle")]
    (record,) = run(tmp_path, mock, rows, "--no-download")
    assert (record["status"], record["media"]) == ("ok", None)
    assert json.loads(record["response"])["data"][0]["url"].startswith(mock.base_url[:-3])
    assert mock.stats()["media"] == {}


def test_a_media_url_that_404s_or_redirects_to_ftp_leaves_the_row_ok_with_the_failure(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = [
        generation("gone", "dall-e-3", "Expired", mock_url_fault="expired"),
        generation("ftp", "dall-e-3", "To ftp", mock_url_fault="ftp"),
    ]
    gone, ftp = run(tmp_path, mock, rows)
    assert (gone["status"], gone["media"]) == ("ok", None)  # the API did the paid work
    assert gone["error_message"].startswith("data[0].url not downloaded: HTTP 404 (expired?): ")
    assert "?" not in gone["error_message"].split(": ", 2)[-1]  # no signature in the message
    assert (ftp["status"], ftp["media"]) == ("ok", None)
    assert ftp["error_message"] == (
        "data[0].url not downloaded: not an http(s) URL: ftp://127.0.0.1/image.png"
    )
    assert "url" in json.loads(gone["response"])["data"][0]  # kept, for `batchrun media`
    assert mock.stats()["media"] == {"requests": 2, "404": 1, "302": 1}  # a 404: no retry
    assert api_requests(mock) == {"/v1/images/generations": 2}


def test_a_download_redirected_to_another_host_never_carries_the_key(tmp_path: Path) -> None:
    with MockServer(MockConfig(port=0, api_key=TEST_KEY)) as cdn:
        cdn_base = cdn.base_url.removesuffix("/v1")
        config = MockConfig(port=0, api_key=TEST_KEY, media_redirect_base=cdn_base)
        with MockServer(config) as api:
            rows = [generation(f"r{i}", "dall-e-3", f"Picture {i}") for i in range(3)]
            results = run(tmp_path, api, rows)
            api_media, cdn_media = api.stats()["media"], cdn.stats()["media"]
    assert [r["status"] for r in results] == ["ok"] * 3
    for i, record in enumerate(results):
        (media,) = record["media"]
        name = image_name("dall-e-3", f"Picture {i}", "256x256", 0)
        assert (tmp_path / "out" / media).read_bytes() == png_of(name, 256, 256)
    assert api_media == {"requests": 3, "302": 3}  # the API's host redirected every download
    assert cdn_media == {"requests": 3, "200": 3}  # and the other host saw no key, ever


def test_image_edits_upload_the_images_and_save_the_answer(
    tmp_path: Path, mock: MockServer
) -> None:
    (tmp_path / "in.png").write_bytes(png_of("source", 64, 64))
    (tmp_path / "mask.png").write_bytes(png_of("mask", 64, 64))
    body = {"model": "gpt-image-1", "prompt": "Add a hat", "image": ["in.png"], "mask": "mask.png"}
    (record,) = run(tmp_path, mock, [line("edit", "/v1/images/edits", body)])
    assert record["status"] == "ok", record["error_message"]
    name = image_name("gpt-image-1", "Add a hat", "1024x1024", 0)
    assert (tmp_path / "out" / record["media"][0]).read_bytes() == png_of(name, 1024, 1024)
    assert record["prompt_tokens"] == 2 + 65  # text tokens, and the uploaded image's tokens


def test_no_custom_id_can_put_a_media_file_outside_out_media_or_share_one(
    tmp_path: Path, mock: MockServer
) -> None:
    ids = ["../../x", "/etc/passwd", "a\x00b", "x" * 300, "Case", "case", ".hidden", "..", "~"]
    rows = [speech(custom_id, f"Row {i}.") for i, custom_id in enumerate(ids)]
    results = run(tmp_path, mock, rows)
    media_root = (tmp_path / "out" / "media").resolve()
    paths = [(tmp_path / "out" / r["media"][0]).resolve() for r in results]
    assert all(p.is_relative_to(media_root) and p.is_file() for p in paths)
    assert len(set(paths)) == len(ids)  # no two rows share a file
    assert not any(p.name.startswith(".") for p in paths)
    assert [p.read_bytes() for p in paths] == [
        speech_audio(f"Row {i}.", "alloy", "mp3") for i in range(len(ids))
    ]
    outside = {p for p in tmp_path.rglob("*") if p.is_file()} - set(paths)
    assert all(p.is_relative_to(tmp_path / "out") or p.name == "in.jsonl" for p in outside)


def test_claude_and_gemini_native_rows_answer_in_their_own_shapes(
    tmp_path: Path, keyed: MockServer
) -> None:
    system = "You are a careful assistant. " * 160  # ~4,600 characters: cached after first use
    claude = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 200,
        "system": system,
        "messages": [{"role": "user", "content": "Say bonjour"}],
        "mock_echo": True,
    }
    tool = {"name": "lookup", "input_schema": {"type": "object"}}
    gemini_url = "/v1beta/models/gemini-2.5-flash:generateContent"
    rows = [
        line("c1", "/v1/messages", claude),
        line("c2", "/v1/messages", claude),  # the same system prompt: read from the cache
        line("tool", "/v1/messages", {**claude, "tools": [tool], "mock_echo": False}),
        line("g", gemini_url, {"contents": [{"parts": [{"text": "Say hola"}]}], "mock_echo": True}),
    ]
    c1, c2, tool_row, g = run(tmp_path, keyed, rows)
    assert [r["status"] for r in (c1, c2, tool_row, g)] == ["ok"] * 4
    assert (c1["text"], c1["finish_reason"]) == ("Say bonjour", "end_turn")
    cached = (len(system) + 3) // 4
    # prompt_tokens counts every input token billed: the cache write, then the cache read.
    assert (c1["cached_tokens"], c2["cached_tokens"]) == (0, cached)
    assert c1["prompt_tokens"] == c2["prompt_tokens"] > cached
    assert [c["name"] for c in json.loads(tool_row["tool_calls"])] == ["lookup"]
    assert tool_row["finish_reason"] == "tool_use"
    assert (g["text"], g["finish_reason"], g["model"]) == ("Say hola", "STOP", "gemini-2.5-flash")
    assert (g["prompt_tokens"], g["completion_tokens"], g["reasoning_tokens"]) == (2, 2 + 48, 48)
    assert api_requests(keyed) == {"/v1/messages": 3, gemini_url: 1}


def test_each_family_is_priced_by_what_it_is_billed_by(tmp_path: Path, mock: MockServer) -> None:
    clip = speech_audio("A clip of a few seconds for whisper.", "alloy", "wav")
    (tmp_path / "clip.wav").write_bytes(clip)
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."dall-e-3".per_image]\n"hd 1024x1024" = 0.08\n"1024x1024" = 0.04\n')
    speech_text = "Forty-two characters, said out loud. Yes."
    rows = [
        speech("tts", speech_text),
        line("stt", "/v1/audio/transcriptions", {"model": "whisper-1", "file": "clip.wav"}),
        generation("std", "dall-e-3", "A", size="1024x1024", n=2, response_format="b64_json"),
        generation(
            "hd", "dall-e-3", "B", size="1024x1024", quality="hd", response_format="b64_json"
        ),
        generation("unknown", "dall-e-3", "C", size="512x512", response_format="b64_json"),
        generation("tokens", "gpt-image-1", "A red square"),
        line(
            "claude",
            "/v1/messages",
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        ),
    ]
    results = {r["custom_id"]: r for r in run(tmp_path, mock, rows, "--prices", str(prices))}
    cost = {k: r["cost_usd"] for k, r in results.items()}
    assert cost["tts"] == pytest.approx(len(speech_text) * 15 / 1e6)  # tts-1: $15 / 1M chars
    seconds = len("A clip of a few seconds for whisper.") / 15
    assert cost["stt"] == pytest.approx(seconds * 0.36 / 3600)  # whisper-1: $0.36 / hour
    assert (cost["std"], cost["hd"]) == (pytest.approx(0.08), pytest.approx(0.08))
    assert cost["unknown"] is None  # no price for 512x512: unknown, never 0
    tokens = results["tokens"]
    # gpt-image-1: text input $5, image input $10 (none here), output $40 per 1M tokens.
    assert cost["tokens"] == pytest.approx((3 * 5 + 272 * 40) / 1e6)
    assert tokens["prompt_tokens"] == 3
    claude = results["claude"]
    assert cost["claude"] == pytest.approx(
        (claude["prompt_tokens"] * 3 + claude["completion_tokens"] * 15) / 1e6
    )


def test_the_estimate_prices_speech_whisper_and_images_by_their_units(tmp_path: Path) -> None:
    (tmp_path / "clip.wav").write_bytes(speech_audio("Thirty characters of speech ok", "a", "wav"))
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."dall-e-3".per_image]\n"standard 1024x1024" = 0.04\n')
    rows = [
        speech("tts", "x" * 1000),
        speech("tts2", "y" * 500),
        line("stt", "/v1/audio/transcriptions", {"model": "whisper-1", "file": "clip.wav"}),
        line("gone", "/v1/audio/transcriptions", {"model": "whisper-1", "file": "none.wav"}),
        generation("img", "dall-e-3", "A", size="1024x1024", n=3),
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_cli("estimate", path, "--json", "--prices", prices)
    assert done.returncode == 0, done.stderr
    estimate = json.loads(done.stdout)
    groups = {g["model"]: g for g in estimate["groups"]}
    assert groups["tts-1"]["rows"] == 2
    assert groups["tts-1"]["cost_expected_usd"] == pytest.approx(1500 * 15 / 1e6)
    # The missing file is a bad row, as in the run; the clip is billed by its 2 s of audio.
    assert (estimate["bad_rows"], estimate["bad_row_examples"][0]["line"]) == (1, 4)
    assert groups["whisper-1"]["rows"] == 1
    assert groups["whisper-1"]["cost_expected_usd"] == pytest.approx(2 / 60 * 0.006)
    assert groups["dall-e-3"]["cost_expected_usd"] == pytest.approx(3 * 0.04)
    assert groups["dall-e-3"]["cost_high_usd"] == pytest.approx(3 * 0.04)


def test_the_estimate_reads_uploads_inside_files_root_as_the_run_does(tmp_path: Path) -> None:
    """`--files-root` applies to `estimate` as to `run`: a file outside it or missing is a bad
    row with its line number; a file inside it is priced by its audio minutes."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "clip.wav").write_bytes(speech_audio("Thirty characters of speech ok", "a", "wav"))
    (tmp_path / "outside.wav").write_bytes(speech_audio("Not inside the root at all", "a", "wav"))
    url = "/v1/audio/transcriptions"
    rows = [
        line("in", url, {"model": "whisper-1", "file": "clip.wav"}),
        line("out", url, {"model": "whisper-1", "file": "../outside.wav"}),
        line("gone", url, {"model": "whisper-1", "file": "none.wav"}),
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    done = run_cli("estimate", path, "--json", "--files-root", data)
    assert done.returncode == 0, done.stderr
    estimate = json.loads(done.stdout)
    (group,) = estimate["groups"]
    assert group["rows"] == 1 and group["cost_expected_usd"] == pytest.approx(2 / 60 * 0.006)
    bad = [(b["line"], b["message"]) for b in estimate["bad_row_examples"]]
    assert estimate["bad_rows"] == 2
    assert bad[0][0] == 2 and "'../outside.wav' is outside the files root" in bad[0][1]
    assert bad[1][0] == 3 and "file not found: 'none.wav'" in bad[1][1]
    # Without the flag the files are looked for beside the input: all three rows are bad.
    text = run_cli("estimate", path)
    assert text.returncode == 0, text.stderr
    assert "bad rows (not counted): 3" in text.stdout
    assert "line 1: file not found: 'clip.wav'" in text.stdout
    missing = run_cli("estimate", path, "--files-root", tmp_path / "nowhere")
    assert missing.returncode == 2 and "--files-root is not a folder" in missing.stderr


def test_batchrun_media_fetches_what_a_run_left_as_urls_without_calling_the_api(
    tmp_path: Path, keyed: MockServer
) -> None:
    rows = [generation(f"r{i}", "dall-e-3", f"Later {i}", n=2) for i in range(3)]
    rows.append(generation("gone", "dall-e-3", "Expired", mock_url_fault="expired"))
    first = run(tmp_path, keyed, rows, "--no-download")
    assert all(r["media"] is None for r in first)
    api_before = api_requests(keyed)
    out = tmp_path / "out"
    done = run_cli("media", out)
    assert done.returncode == 0, done.stderr
    assert "fetched 6 media files for 4 rows" in done.stdout
    assert "not fetched: gone: HTTP 404 (expired?)" in done.stdout
    results = read_results(out)
    assert len(results) == 4  # still one record per row
    for i, record in enumerate(results[:3]):
        names = [image_name("dall-e-3", f"Later {i}", "256x256", k) for k in range(2)]
        assert [(out / m).read_bytes() for m in record["media"]] == [
            png_of(n, 256, 256) for n in names
        ]
        data = json.loads(record["response"])["data"]
        assert [d["batchrun_media"] for d in data] == record["media"]
        assert record["error_message"] is None
    assert results[3]["media"] is None
    assert api_requests(keyed) == api_before  # the API was not called again
    assert keyed.stats()["media"].get("with_credentials") is None
    again = run_cli("media", out)
    assert "fetched 0 media files for 1 rows" in again.stdout  # only the expired one is left


def test_export_carries_the_answer_columns_in_every_table_format(
    tmp_path: Path, mock: MockServer
) -> None:
    files = clips(tmp_path / "clips")
    rows = [
        line("ask", "/v1/chat/completions",
             {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}],
              "mock_echo": True}),
        line("vec", "/v1/embeddings",
             {"model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 2}),
        speech("say", "Hello there!"),
        line("srt", "/v1/audio/transcriptions",
             {"model": "whisper-1", "file": "clips/a.mp3", "response_format": "srt"}),
    ]  # fmt: skip
    results = run(tmp_path, mock, rows)
    out = tmp_path / "out"
    media = results[2]["media"][0]
    assert (out / media).read_bytes() == speech_audio("Hello there!", "alloy", "mp3")
    vectors = [_vector("one", 2), _vector("two", 2)]
    exported = {}
    for fmt in ("parquet", "csv", "jsonl"):
        to = tmp_path / f"answers.{fmt}"
        done = run_cli("export", out, "--to", to)
        assert done.returncode == 0, done.stderr
        exported[fmt] = to
    table = pq.read_table(exported["parquet"]).to_pylist()
    assert [r["text"] for r in table[:1]] == ["Hi"]
    assert table[1]["embedding"] == [pytest.approx(v, abs=1e-6) for v in vectors]
    assert (table[2]["media"], table[2]["content_type"]) == ([media], "audio/mpeg")
    assert heard("a.mp3", files["a.mp3"]) in table[3]["text"]
    assert table[3]["content_type"].startswith("text/plain")
    lines = [json.loads(x) for x in exported["jsonl"].read_text().splitlines()]
    with exported["csv"].open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    for got in (lines, csv_rows):

        def nested(value: Any) -> Any:
            return json.loads(value) if isinstance(value, str) else value

        assert [nested(v) for v in nested(got[1]["embedding"])] == [
            pytest.approx(v, abs=1e-6) for v in vectors
        ]
        assert nested(got[2]["media"]) == [media]
        assert got[2]["content_type"] == "audio/mpeg"
        assert got[0]["text"] == "Hi" and heard("a.mp3", files["a.mp3"]) in got[3]["text"]


def test_completions_and_responses_answers_are_columns(tmp_path: Path, mock: MockServer) -> None:
    rows = [
        line(
            "cmpl",
            "/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "mock_echo": True},
        ),
        line(
            "resp",
            "/v1/responses",
            {"model": "o3-pro", "input": "Think, then say hi", "mock_echo": True},
        ),
        line(
            "call",
            "/v1/responses",
            {
                "model": "gpt-4.1",
                "input": "Weather?",
                "tools": [{"type": "function", "name": "weather"}],
            },
        ),
    ]
    cmpl, resp, call = run(tmp_path, mock, rows)
    assert (cmpl["text"], cmpl["finish_reason"]) == ("Say hi", "stop")
    assert (resp["text"], resp["finish_reason"]) == ("Think, then say hi", "completed")
    assert (resp["completion_tokens"], resp["reasoning_tokens"]) == (5 + 64, 64)
    assert [c["name"] for c in json.loads(call["tool_calls"])] == ["weather"]
    assert api_requests(mock) == {"/v1/completions": 1, "/v1/responses": 2}


def test_the_families_sample_runs_through_the_mock(tmp_path: Path, mock: MockServer) -> None:
    """samples/families.jsonl: every family ok, its files saved, from the samples' own folder."""
    out = tmp_path / "out"
    done = run_cli(
        "run", ROOT / "samples" / "families.jsonl", "--out", out, "--base-url", mock.base_url, "-q"
    )
    assert done.returncode == 0, done.stderr
    records = read_results(out)
    assert [r["status"] for r in records] == ["ok"] * 15, [r["error_message"] for r in records]
    media = [m for r in records for m in (r["media"] or [])]
    assert len(media) == 5  # two speech files, three images
    assert all((out / m).is_file() for m in media)
    texts = {r["custom_id"]: r["text"] for r in records}
    greeting = (ROOT / "samples" / "files" / "greeting.wav").read_bytes()
    assert texts["transcription-1"] == heard("greeting.wav", greeting)
    assert all(texts[k] for k in ("chat-1", "completion-1", "responses-1", "claude-1", "gemini-1"))
    calls = {r["custom_id"]: r["tool_calls"] for r in records}
    assert [c["name"] for c in json.loads(calls["tools-1"])] == ["get_weather"]


def test_an_output_started_before_the_answer_columns_resumes_and_reports(
    tmp_path: Path, mock: MockServer
) -> None:
    """Made as an older batchrun left it: 18 columns, no results_schema in the checkpoint."""
    import pyarrow.parquet as pq

    from batchrun.store.writer import result_schema

    rows = [
        line(
            f"r{i}",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]},
        )
        for i in range(6)
    ]
    rows += [speech("tts", "Speech in an old output.")]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli(
        "run",
        path,
        "--out",
        out,
        "--base-url",
        mock.base_url,
        "-q",
        "--flush-rows",
        "3",
        "--concurrency",
        "1",
    )
    assert done.returncode == 0, done.stderr
    # Keep the first part only, in the first schema, and a checkpoint of that time.
    parts = sorted((out / "results").glob("part-*.parquet"))
    first = pq.read_table(parts[0])
    pq.write_table(first.select(result_schema(1).names).cast(result_schema(1)), parts[0])
    for extra in parts[1:]:
        extra.unlink()
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    del checkpoint["results_schema"]
    kept = sorted(first.column("row").to_pylist())
    checkpoint |= {"parts": 1, "done": [[kept[0], kept[-1] + 1]]}
    checkpoint["counts"] = {"ok": len(kept), "error": 0}
    (out / "checkpoint.json").write_text(json.dumps(checkpoint))

    again = run_cli("run", path, "--out", out, "--base-url", mock.base_url, "-q")
    assert again.returncode == 0, again.stderr
    assert f"(resumed at {len(kept)} done)" in again.stdout
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(7))
    assert set(records[0]) == set(result_schema(1).names)  # every part reads alike
    tts = next(r for r in records if r["custom_id"] == "tts")
    (media,) = json.loads(tts["response"])["batchrun_media"]  # named where a column cannot
    assert (out / media).read_bytes() == speech_audio("Speech in an old output.", "alloy", "mp3")
    report = run_cli("report", out, "--json")
    assert report.returncode == 0, report.stderr
    assert (json.loads(report.stdout)["rows"], json.loads(report.stdout)["rows_ok"]) == (7, 7)


def test_max_cost_holds_for_speech_rows_priced_by_characters(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = [speech(f"s{i}", f"{i}" + "x" * 999) for i in range(10)]  # $0.015 each at tts-1
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli(
        "run", path, "--out", out, "--base-url", mock.base_url, "-q", "--max-cost", "0.05"
    )
    assert done.returncode == 3, done.stderr + done.stdout  # stopped, resumable
    assert "cost budget" in done.stderr + done.stdout
    records = read_results(out)
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    assert sum(r["cost_usd"] for r in records) == pytest.approx(0.045)  # never past $0.05
    assert api_requests(mock) == {"/v1/audio/speech": 3}


def test_a_url_batchrun_has_no_profile_for_goes_through_as_json_in_json_out(
    tmp_path: Path, mock: MockServer
) -> None:
    rows = [
        line("calm", "/v1/moderations", {"input": "A quiet walk by the river."}),
        line("two", "/v1/moderations", {"input": ["Some violence.", "Tea."]}),
    ]
    calm, two = run(tmp_path, mock, rows)
    for record in (calm, two):
        assert (record["status"], record["attempts"], record["http_status"]) == ("ok", 1, 200)
        # No answer columns for a family batchrun does not know: the body is the answer.
        assert record["text"] is None and record["media"] is None and record["embedding"] is None
    assert json.loads(calm["response"])["results"][0]["flagged"] is False
    flagged = [r["flagged"] for r in json.loads(two["response"])["results"]]
    assert flagged == [True, False]
    assert api_requests(mock) == {"/v1/moderations": 2}
