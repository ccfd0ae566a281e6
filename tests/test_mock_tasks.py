"""The mock's task families over HTTP: whole lifecycles with a short refresh interval."""

from __future__ import annotations

import argparse
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchrun.endpoints.audio_length import audio_seconds_of
from batchrun.endpoints.tasks import MIDJOURNEY, Accepted, TaskState, output_text, task_family_for
from batchrun.mock import MockConfig, MockServer
from batchrun.mock.cli_args import add_arguments, config_from_args

REFRESH_S = 0.05


@pytest.fixture
def mock() -> Iterator[MockServer]:
    config = MockConfig(port=0, task_refresh_s=REFRESH_S, task_duration_s=0.3, api_key="sk-test")
    with MockServer(config) as server:
        yield server


def root(mock: MockServer) -> str:
    return mock.base_url.removesuffix("/v1")


def call(
    mock: MockServer, method: str, path: str, body: Any = None, *, timeout_s: float = 5
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(root(mock) + path, data=data, method=method)
    request.add_header("Authorization", "Bearer sk-test")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def download(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.headers["content-type"], answer.read()


def wait_for(
    poll: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 5
) -> list[Any]:
    """Every answer of `poll` until `done` (each refresh tick seen at least once)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.append(poll())
        if done(seen[-1]):
            return seen
        time.sleep(REFRESH_S / 3)
    raise AssertionError(f"never done; last answer {seen[-1]!r}")


def imagine(mock: MockServer, prompt: str, **extra: Any) -> str:
    status, body = call(mock, "POST", "/mj/submit/imagine", {"prompt": prompt, **extra})
    assert (status, body["code"]) == (200, 1), body
    return str(body["result"])


# -------------------------------------------------------------------------------- Midjourney


def test_a_midjourney_task_goes_through_every_status_and_serves_its_grid(mock: MockServer) -> None:
    task_id = imagine(mock, "a lighthouse at dawn")
    status, first = call(mock, "GET", f"/mj/task/{task_id}/fetch")
    assert status == 200
    assert (first["status"], first["progress"], first["imageUrl"]) == ("", "0%", "")

    answers = wait_for(
        lambda: call(mock, "GET", f"/mj/task/{task_id}/fetch")[1],
        lambda task: task["status"] == "SUCCESS",
    )
    statuses = [a["status"] for a in answers]
    assert statuses.index("SUBMITTED") < statuses.index("IN_PROGRESS") < statuses.index("SUCCESS")
    progress = [int(a["progress"].rstrip("%")) for a in answers if a["status"] == "IN_PROGRESS"]
    assert progress == sorted(progress) and 0 < progress[-1] < 100
    done = answers[-1]
    assert done["progress"] == "100%" and done["finishTime"] >= done["submitTime"] > 0
    labels = [b["label"] for b in done["buttons"]]
    assert labels == ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
    assert all(b["customId"].startswith("MJ::JOB::") for b in done["buttons"])
    content_type, png = download(done["imageUrl"])
    assert content_type == "image/png" and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert mock.stats()["tasks"]["submits_by_prompt"] == {"a lighthouse at dawn": 1}


def test_states_change_only_at_refresh_ticks() -> None:
    """A task done at once still reads "" until the gateway's next refresh, however often
    it is polled: polling faster than the refresh gains nothing."""
    config = MockConfig(port=0, task_refresh_s=3600, task_duration_s=0)
    with MockServer(config) as slow:
        task_id = imagine(slow, "ticks")
        for _ in range(20):
            status, task = call(slow, "GET", f"/mj/task/{task_id}/fetch")
            assert (status, task["status"], task["progress"]) == (200, "", "0%")
        assert slow.stats()["tasks"]["by_status"] == {"pending": 1}
        assert slow.stats()["tasks"]["polls"] == {"/mj/task/{id}/fetch": 20}


def test_list_by_condition_answers_a_bare_array_of_known_ids_only(mock: MockServer) -> None:
    ids = [imagine(mock, f"poster {n}") for n in range(3)]
    status, body = call(mock, "POST", "/mj/task/list-by-condition", {"ids": [*ids, "999"]})
    assert status == 200 and isinstance(body, list)
    assert [t["id"] for t in body] == ids
    assert call(mock, "POST", "/mj/task/list-by-condition", {"ids": []}) == (200, [])
    polls = mock.stats()["tasks"]["polls"]
    assert polls == {"/mj/task/list-by-condition": 2}


def test_a_mode_prefix_reaches_the_same_routes(mock: MockServer) -> None:
    status, body = call(mock, "POST", "/mj-fast/mj/submit/imagine", {"prompt": "fast"})
    assert (status, body["code"]) == (200, 1)
    status, task = call(mock, "GET", f"/mj-fast/mj/task/{body['result']}/fetch")
    assert status == 200 and task["prompt"] == "fast"


def test_a_failing_task_ends_failure_with_a_reason(mock: MockServer) -> None:
    task_id = imagine(mock, "doomed", mock_task="fail")
    answers = wait_for(
        lambda: call(mock, "GET", f"/mj/task/{task_id}/fetch")[1],
        lambda task: task["status"] == "FAILURE",
    )
    assert "mock_task=fail" in answers[-1]["failReason"]
    assert answers[-1]["imageUrl"] == "" and answers[-1]["buttons"] == []
    assert mock.stats()["tasks"]["by_status"] == {"failure": 1}


def test_a_banned_prompt_is_http_200_code_24_and_creates_no_task(mock: MockServer) -> None:
    status, body = call(
        mock, "POST", "/mj/submit/imagine", {"prompt": "nsfw cat", "mock_task": "banned"}
    )
    assert status == 200 and body["code"] == 24
    assert body["properties"]["bannedWord"] == "nsfw" and body["result"] is None
    stats = mock.stats()["tasks"]
    assert stats["created"] == 0 and stats["rejected"] == 1
    assert stats["submits_by_prompt"] == {"nsfw cat": 1}


def test_a_never_ending_task_stays_in_progress(mock: MockServer) -> None:
    task_id = imagine(mock, "forever", mock_task="never")
    time.sleep(0.3 * 3)
    status, task = call(mock, "GET", f"/mj/task/{task_id}/fetch")
    assert status == 200 and task["status"] == "IN_PROGRESS" and task["progress"] != "100%"


def test_timeout_after_submit_creates_the_task_then_hangs(mock: MockServer) -> None:
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        call(mock, "POST", "/mj/submit/imagine", {"prompt": "lost answer",
             "mock_task": "timeout_after_submit"}, timeout_s=0.3)  # fmt: skip
    stats = mock.stats()["tasks"]
    assert stats["created"] == 1 and stats["submits_by_prompt"] == {"lost answer": 1}


def test_unknown_ids_and_bad_bodies_get_midjourneys_code_4(mock: MockServer) -> None:
    assert call(mock, "GET", "/mj/task/123/fetch") == (
        400,
        {"code": 4, "description": "task_no_found", "type": "upstream_error"},
    )
    status, body = call(mock, "POST", "/mj/submit/imagine", {"prompt": ""})
    assert (status, body["code"]) == (400, 4)
    status, body = call(mock, "POST", "/mj/submit/imagine", {"prompt": "x", "mock_task": "odd"})
    assert status == 400 and "mock_task" in body["error"]["message"]


def test_an_action_needs_a_parent_that_succeeded_and_one_of_its_buttons(mock: MockServer) -> None:
    parent = imagine(mock, "a red fox")
    status, body = call(mock, "POST", "/mj/submit/action", {"taskId": parent, "customId": "x"})
    assert (status, body["description"]) == (400, "task_status_not_success")
    done = wait_for(
        lambda: call(mock, "GET", f"/mj/task/{parent}/fetch")[1],
        lambda task: task["status"] == "SUCCESS",
    )[-1]
    status, body = call(mock, "POST", "/mj/submit/action", {"taskId": parent, "customId": "MJ::x"})
    assert (status, body["code"]) == (400, 4)
    u1 = next(b["customId"] for b in done["buttons"] if b["label"] == "U1")
    status, body = call(mock, "POST", "/mj/submit/action", {"taskId": parent, "customId": u1})
    assert (status, body["code"]) == (200, 1)
    upscale = wait_for(
        lambda: call(mock, "GET", f"/mj/task/{body['result']}/fetch")[1],
        lambda task: task["status"] == "SUCCESS",
    )[-1]
    assert upscale["action"] == "UPSCALE" and upscale["imageUrl"] != done["imageUrl"]
    assert download(upscale["imageUrl"])[1].startswith(b"\x89PNG")
    assert mock.stats()["tasks"]["submits_by_prompt"] == {"a red fox": 1, "a red fox [U1]": 1}


def test_mock_fault_applies_to_submits_and_polls(mock: MockServer) -> None:
    flaky = {"prompt": "flaky", "mock_fault": "500", "mock_fault_times": 1}
    assert call(mock, "POST", "/mj/submit/imagine", flaky)[0] == 500
    assert mock.stats()["tasks"]["created"] == 0
    task_id = imagine(mock, "flaky", mock_fault="500", mock_fault_times=1)
    mock.set_faults({"503": 1.0})
    assert call(mock, "POST", "/mj/task/list-by-condition", {"ids": [task_id]})[0] == 503
    assert call(mock, "GET", f"/mj/task/{task_id}/fetch")[0] == 503
    mock.set_faults({})
    assert call(mock, "GET", f"/mj/task/{task_id}/fetch")[0] == 200
    assert mock.stats()["tasks"]["submits_by_prompt"] == {"flaky": 1}


def test_reset_forgets_the_tasks(mock: MockServer) -> None:
    task_id = imagine(mock, "gone")
    mock.reset()
    assert call(mock, "GET", f"/mj/task/{task_id}/fetch")[0] == 400
    assert mock.stats()["tasks"]["created"] == 0


# ------------------------------------------------- every family, read by its own family code


def drive(mock: MockServer, path: str, body: dict[str, Any]) -> tuple[list[str], TaskState]:
    """Submit as a row would, then poll with the family's own requests until it finishes:
    the statuses seen (deduplicated in order) and the final state."""
    family = task_family_for(path, body)
    assert family is not None
    accepted = family.read_submit(*call(mock, "POST", path, body))
    assert isinstance(accepted, Accepted), accepted
    task_id = accepted.task_id

    def poll() -> TaskState | None:
        request = family.poll([task_id])
        status, answer = call(mock, request.method, request.path, request.json)
        return family.read_poll(status, answer, [task_id]).get(task_id)

    states = wait_for(poll, lambda state: state is not None and state.finished)
    seen: list[str] = []
    for state in states:
        if state is not None and state.status not in seen:
            seen.append(state.status)
    return seen, states[-1]


def test_the_midjourney_family_reads_the_mock(mock: MockServer) -> None:
    seen, state = drive(mock, "/mj/submit/imagine", {"prompt": "a harbour"})
    assert seen == ["pending", "running", "success"]
    assert len(state.media_urls) == 1 and download(state.media_urls[0])[1].startswith(b"\x89PNG")
    follow = MIDJOURNEY.follow_up({"button": "V2"}, state)
    seen, child = drive(mock, "/mj/submit/action", follow)
    assert child.body["action"] == "VARIATION" and seen[-1] == "success"


def test_a_suno_song_has_two_clips_of_real_audio(mock: MockServer) -> None:
    seen, state = drive(mock, "/suno/submit/music", {"prompt": "a sea shanty", "mv": "chirp-v4"})
    assert seen == ["pending", "running", "success"]
    assert len(state.media_urls) == 2
    for url in state.media_urls:
        content_type, audio = download(url)
        assert content_type == "audio/mpeg" and audio.startswith(b"ID3")
        assert audio_seconds_of(audio, len(audio)) == pytest.approx(2, abs=0.1)
    assert [clip["model_name"] for clip in state.body["data"]] == ["chirp-v4", "chirp-v4"]
    assert set(mock.stats()["tasks"]["polls"]) == {"/suno/fetch"}


def test_suno_lyrics_fetch_by_id_and_refusals(mock: MockServer) -> None:
    seen, state = drive(mock, "/suno/submit/lyrics", {"prompt": "rain"})
    assert seen[-1] == "success" and state.media_urls == () and "rain" in state.body["data"]["text"]
    status, body = call(mock, "GET", f"/suno/fetch/{state.task_id}")
    assert status == 200 and body["data"]["task_id"] == state.task_id
    status, body = call(
        mock, "POST", "/suno/submit/music", {"prompt": "bad", "mock_task": "banned"}
    )
    assert status == 400 and body["code"] == "prompt_banned" and body["data"] is None
    assert call(mock, "GET", "/suno/fetch/task_nope")[0] == 400


def test_a_failing_suno_song_ends_failure(mock: MockServer) -> None:
    seen, state = drive(mock, "/suno/submit/music", {"prompt": "x", "mock_task": "fail"})
    assert seen[-1] == "failure" and "mock_task=fail" in (state.fail_reason or "")


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/video/generations", "kling-v1"),
        ("/v1/video/generations", "veo-3.0-generate-preview"),
        ("/v1/videos", "sora-2"),
    ],
)
def test_a_video_task_on_either_route_ends_with_its_video(
    mock: MockServer, path: str, model: str
) -> None:
    seen, state = drive(mock, path, {"model": model, "prompt": "a drone shot", "seconds": "4"})
    assert seen == ["pending", "running", "success"]
    (url,) = state.media_urls
    content_type, video = download(url)
    assert content_type == "video/mp4" and video[4:8] == b"ftyp"
    if "veo" in model:
        assert state.body["data"]["status"] == "succeeded" and state.body["data"]["url"] == url
    elif path == "/v1/videos":
        assert state.body["metadata"]["url"] == url and state.body["progress"] == 100
    else:
        assert state.body["data"]["result_url"] == url


def test_a_failing_video_and_an_unknown_one(mock: MockServer) -> None:
    seen, state = drive(mock, "/v1/videos", {"model": "sora-2", "prompt": "x", "mock_task": "fail"})
    assert seen[-1] == "failure" and "mock_task=fail" in (state.fail_reason or "")
    assert call(mock, "GET", "/v1/videos/task_nope")[0] == 404


def test_a_background_response_completes_with_its_text(mock: MockServer) -> None:
    body = {"model": "o3-pro", "input": "what is 6 x 7?", "background": True}
    seen, state = drive(mock, "/v1/responses", body)
    assert seen == ["pending", "running", "success"]
    assert state.body["status"] == "completed" and output_text(state.body)
    status, sync = call(mock, "POST", "/v1/responses", {"model": "o3-pro", "input": "hi"})
    assert status == 200 and sync["status"] == "completed"  # without background: answered
    assert mock.stats()["tasks"]["created"] == 1


def test_a_failing_background_response(mock: MockServer) -> None:
    body = {"model": "o3-pro", "input": "x", "background": True, "mock_task": "fail"}
    seen, state = drive(mock, "/v1/responses", body)
    assert seen[-1] == "failure" and "mock_task=fail" in (state.fail_reason or "")
    assert call(mock, "GET", "/v1/responses/resp_nope")[0] == 404


def test_the_mock_server_flags_set_the_task_timing() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--task-refresh-s", "0.5", "--task-duration-s", "30,120"])
    config = config_from_args(args)
    assert (config.task_refresh_s, config.task_duration_s) == (0.5, (30.0, 120.0))
    assert config_from_args(parser.parse_args(["--task-duration-s", "7"])).task_duration_s == (7, 7)
    with pytest.raises(ValueError, match="task_duration_s: min 9 is above max 1"):
        MockConfig(task_duration_s=(9, 1))
    with pytest.raises(ValueError, match="task_refresh_s"):
        MockConfig(task_refresh_s=0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/suno/submit/music", {"prompt": "lost song"}),
        ("/v1/videos", {"model": "sora-2", "prompt": "lost film"}),
        ("/v1/responses", {"model": "o3-pro", "input": "lost answer", "background": True}),
    ],
)
def test_timeout_after_submit_on_every_family(
    mock: MockServer, path: str, body: dict[str, Any]
) -> None:
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        call(mock, "POST", path, {**body, "mock_task": "timeout_after_submit"}, timeout_s=0.3)
    stats = mock.stats()["tasks"]
    assert stats["created"] == 1 and sum(stats["submits_by_prompt"].values()) == 1
