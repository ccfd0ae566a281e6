"""The task families (batchrun.endpoints.tasks) on the real shapes of the gateway notes."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.endpoints.tasks import (
    MIDJOURNEY,
    RESPONSES,
    SUNO_LYRICS,
    SUNO_MUSIC,
    Accepted,
    PollRequest,
    Rejected,
    TaskState,
    output_text,
    task_family_for,
    video_family,
)

# -------------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("path", "body", "name"),
    [
        ("/mj/submit/imagine", {"prompt": "x"}, "midjourney"),
        ("/mj/submit/action", {}, "midjourney"),
        ("/mj/submit/blend", {}, "midjourney"),
        ("/mj-fast/mj/submit/imagine", {}, "midjourney"),
        ("/mj/insight-face/swap", {}, "midjourney"),
        ("/mj/submit/imagine?x=1", {}, "midjourney"),
        ("/v1/chat/completions", {}, None),
        ("/mj/task/list-by-condition", {}, None),
        ("/v1/images/generations", {}, None),
    ],
)
def test_task_family_for(path: str, body: dict[str, Any], name: str | None) -> None:
    family = task_family_for(path, body)
    assert (family.name if family else None) == name


# -------------------------------------------------------------------------------- Midjourney


@pytest.mark.parametrize("code", [1, 21, 22, "1"])
def test_midjourney_accepts_codes_1_21_22(code: Any) -> None:
    body = {"code": code, "description": "提交成功", "result": "1712345678901234", "properties": {}}
    assert MIDJOURNEY.read_submit(200, body) == Accepted("1712345678901234", body)


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize(
    ("code", "description", "expected"),
    [
        (3, "无可用的账号实例", "无可用的账号实例 (code 3, not found / no account available)"),
        (4, "task_no_found", "task_no_found (code 4, validation error)"),
        (9, "", "system failure (code 9)"),
        (23, "队列已满，请稍后尝试", "队列已满，请稍后尝试 (code 23, queue full)"),
        (24, "可能包含敏感词", "可能包含敏感词: nsfw (code 24, banned prompt)"),
    ],
)
def test_midjourney_rejects_every_other_code_on_200_and_on_400(
    status: int, code: int, description: str, expected: str
) -> None:
    body = {"code": code, "description": description, "result": None,
            "properties": {"bannedWord": "nsfw"} if code == 24 else {}}  # fmt: skip
    if status == 400 and not description:
        assert MIDJOURNEY.read_submit(status, body) is None  # not the MJ shape: retry rules
        return
    assert MIDJOURNEY.read_submit(status, body) == Rejected(expected)


def test_midjourney_leaves_429_and_foreign_bodies_to_the_retry_rules() -> None:
    assert MIDJOURNEY.read_submit(429, {"code": 30, "description": "rate limited"}) is None
    assert MIDJOURNEY.read_submit(500, {"error": {"message": "boom"}}) is None
    assert MIDJOURNEY.read_submit(200, {"code": 1, "description": "ok"}) is None  # no task id
    assert MIDJOURNEY.read_submit(200, [1, 2]) is None


def test_midjourney_polls_in_batches_and_falls_back_to_fetch() -> None:
    assert MIDJOURNEY.poll(["a", "b"]) == PollRequest(
        "POST", "/mj/task/list-by-condition", {"ids": ["a", "b"]}
    )
    assert MIDJOURNEY.fallback_poll("17/x") == PollRequest("GET", "/mj/task/17%2Fx/fetch")
    assert MIDJOURNEY.batch > 1 and MIDJOURNEY.timeout_s == 3600 and MIDJOURNEY.refresh_s == 15


def _mj(status: str, progress: str = "0%", **extra: Any) -> dict[str, Any]:
    return {"id": "t1", "status": status, "progress": progress, "imageUrl": "", "failReason": "",
            "buttons": [], **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("task", "status"),
    [
        (_mj(""), "pending"),
        (_mj("NOT_START"), "pending"),
        (_mj("SUBMITTED"), "pending"),
        (_mj("MODAL"), "pending"),
        (_mj("IN_PROGRESS", "45%"), "running"),
        (_mj("IN_PROGRESS", "100%"), "success"),
        (_mj("SUCCESS", "100%"), "success"),
        (_mj("FAILURE", "0%"), "failure"),
        (_mj("CANCEL"), "failure"),
        (_mj("SOMETHING_NEW"), "pending"),
        ({"id": "t1"}, "pending"),
    ],
)
def test_midjourney_status_values(task: dict[str, Any], status: str) -> None:
    assert MIDJOURNEY.read_poll(200, [task], ["t1"])["t1"].status == status


def test_midjourney_reads_a_bare_array_and_leaves_out_what_it_lacks() -> None:
    done = _mj("SUCCESS", "100%", imageUrl="http://gw/mj/image/t1",
               videoUrls=[{"url": "http://cdn/v.mp4"}])  # fmt: skip
    body = [done, {**_mj("IN_PROGRESS", "45%"), "id": "t2"}, {**_mj(""), "id": "other"}]
    states = MIDJOURNEY.read_poll(200, body, ["t1", "t2", "t3"])
    assert set(states) == {"t1", "t2"}
    assert states["t1"] == TaskState(task_id="t1", status="success", progress="100%",
                                     media_urls=("http://gw/mj/image/t1", "http://cdn/v.mp4"),
                                     body=done)  # fmt: skip
    assert states["t2"].progress == "45%" and states["t2"].media_urls == ()
    assert MIDJOURNEY.read_poll(200, [], ["t1"]) == {}
    assert MIDJOURNEY.read_poll(400, {"code": 4, "description": "task_no_found"}, ["t1"]) == {}
    assert set(MIDJOURNEY.read_poll(200, done, ["t1"])) == {"t1"}  # the fetch's single task


def test_midjourney_failure_carries_its_reason() -> None:
    state = MIDJOURNEY.read_poll(
        200, [_mj("FAILURE", failReason="上游任务超时（超过1小时）")], ["t1"]
    )
    assert state["t1"].fail_reason == "上游任务超时（超过1小时）"
    assert MIDJOURNEY.read_poll(200, [_mj("FAILURE")], ["t1"])["t1"].fail_reason


_BUTTONS = [
    {"customId": "MJ::JOB::upsample::1::abc", "label": "U1", "emoji": ""},
    {"customId": "MJ::JOB::reroll::0::abc::SOLO", "label": "", "emoji": "🔄"},
    {"customId": "MJ::JOB::variation::2::abc", "label": "V2", "emoji": ""},
]


def _parent(status: str = "success") -> TaskState:
    return TaskState(task_id="p1", status=status, body=_mj("SUCCESS", buttons=_BUTTONS))  # type: ignore[arg-type]


def test_a_follow_up_takes_the_customid_of_its_parents_button() -> None:
    assert MIDJOURNEY.follow_up({"button": "U1"}, _parent()) == {
        "taskId": "p1",
        "customId": "MJ::JOB::upsample::1::abc",
    }
    assert MIDJOURNEY.follow_up({"button": "🔄", "state": "s"}, _parent())["customId"].startswith(
        "MJ::JOB::reroll"
    )
    assert MIDJOURNEY.follow_up({"customId": "MJ::own"}, _parent()) == {
        "taskId": "p1",
        "customId": "MJ::own",
    }


def test_a_follow_up_that_cannot_be_resolved_says_why() -> None:
    with pytest.raises(ValueError, match=r"no button 'U4' \(its buttons: U1, 🔄, V2\)"):
        MIDJOURNEY.follow_up({"button": "U4"}, _parent())
    with pytest.raises(ValueError, match="has not succeeded"):
        MIDJOURNEY.follow_up({"button": "U1"}, _parent("failure"))
    with pytest.raises(ValueError, match='names a "button"'):
        MIDJOURNEY.follow_up({}, _parent())


def test_a_follow_up_resolves_alike_from_the_view_the_journal_keeps() -> None:
    full = _parent()
    view = MIDJOURNEY.follow_up_view(full)
    assert {k for b in view["buttons"] for k in b} <= {"customId", "label", "emoji"}
    kept = TaskState(task_id="p1", status="success", body=view)  # as a resume rebuilds it
    for body in ({"button": "U1"}, {"button": "🔄", "state": "s"}, {"button": "V2"}):
        assert MIDJOURNEY.follow_up(body, kept) == MIDJOURNEY.follow_up(body, full)
    with pytest.raises(ValueError, match=r"no button 'U4' \(its buttons: U1, 🔄, V2\)"):
        MIDJOURNEY.follow_up({"button": "U4"}, kept)
    assert SUNO_MUSIC.follow_up_view(full) is None  # no follow-ups: nothing kept


# -------------------------------------------------------------------------------- routing 2


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/suno/submit/music", {}, SUNO_MUSIC),
        ("/suno/submit/LYRICS", {}, SUNO_LYRICS),
        ("/v1/video/generations", {}, video_family("/v1/video/generations")),
        ("/v1/videos", {}, video_family("/v1/videos")),
        ("/v1/videos/task_1/remix", {}, video_family("/v1/videos")),
        ("/kling/v1/videos/text2video", {}, video_family("/kling/v1/videos/text2video")),
        ("/v1/responses", {"background": True}, RESPONSES),
        ("/v1/responses", {"background": False}, None),
        ("/v1/responses", {}, None),
        ("/suno/fetch", {}, None),
        ("/v1/videos/task_1", {}, None),
    ],
)
def test_task_family_for_the_other_families(path: str, body: dict[str, Any], expected: Any) -> None:
    assert task_family_for(path, body) == expected


def test_timeouts_follow_the_gateways() -> None:
    assert {f.timeout_s for f in (SUNO_MUSIC, RESPONSES, video_family("/v1/videos"))} == {86400}


# -------------------------------------------------------------------------------- Suno


def _suno(task_id: str, status: str, progress: str = "0%", **extra: Any) -> dict[str, Any]:
    return {"id": 7, "task_id": task_id, "platform": "suno", "action": "MUSIC", "status": status,
            "fail_reason": "", "progress": progress, "data": None, **extra}  # fmt: skip


def test_suno_submit_reads_the_envelope() -> None:
    body = {"code": "success", "message": "", "data": "task_abc"}
    assert SUNO_MUSIC.read_submit(200, body) == Accepted("task_abc", body)
    assert SUNO_MUSIC.read_submit(200, {"code": "fail", "message": "bad prompt", "data": None}) == (
        Rejected("bad prompt (code fail)")
    )
    assert SUNO_MUSIC.read_submit(200, {"code": "success", "data": None}) is None
    assert SUNO_MUSIC.read_submit(400, {"code": "invalid_action", "message": "x"}) is None


@pytest.mark.parametrize(
    ("status", "progress", "expected"),
    [
        ("NOT_START", "0%", "pending"),
        ("SUBMITTED", "10%", "pending"),
        ("QUEUED", "20%", "pending"),
        ("UNKNOWN", "", "pending"),
        ("IN_PROGRESS", "30%", "running"),
        ("IN_PROGRESS", "100%", "success"),
        ("SUCCESS", "100%", "success"),
        ("FAILURE", "100%", "failure"),
    ],
)
def test_suno_status_values(status: str, progress: str, expected: str) -> None:
    body = {"code": "success", "data": [_suno("task_a", status, progress)]}
    assert SUNO_MUSIC.read_poll(200, body, ["task_a"])["task_a"].status == expected


def test_suno_media_are_the_clips_audio_urls_not_result_url() -> None:
    clips = [
        {"id": f"c{n}", "status": "complete", "audio_url": f"https://cdn1.suno.ai/c{n}.mp3"}
        for n in (1, 2)
    ]
    done = _suno("task_a", "SUCCESS", "100%", data=clips, result_url="not a url")
    failed = _suno("task_b", "FAILURE", fail_reason="quota refunded")
    body = {"code": "success", "data": [done, failed, _suno("task_x", "SUCCESS")]}
    states = SUNO_MUSIC.read_poll(200, body, ["task_a", "task_b", "task_c"])
    assert set(states) == {"task_a", "task_b"}
    assert states["task_a"].media_urls == (
        "https://cdn1.suno.ai/c1.mp3",
        "https://cdn1.suno.ai/c2.mp3",
    )
    assert states["task_b"].fail_reason == "quota refunded"
    single = {"code": "success", "message": "", "data": done}
    assert SUNO_MUSIC.read_poll(200, single, ["task_a"])["task_a"].status == "success"
    assert SUNO_MUSIC.read_poll(500, body, ["task_a"]) == {}


def test_suno_polls_with_its_action_and_falls_back_per_id() -> None:
    assert SUNO_LYRICS.poll(["a"]) == PollRequest(
        "POST", "/suno/fetch", {"ids": ["a"], "action": "LYRICS"}
    )
    assert SUNO_MUSIC.fallback_poll("task_a") == PollRequest("GET", "/suno/fetch/task_a")
    assert SUNO_MUSIC != SUNO_LYRICS and SUNO_MUSIC.name == SUNO_LYRICS.name == "suno"


# -------------------------------------------------------------------------------- video

VIDEOS = video_family("/v1/videos")
GENERATIONS = video_family("/v1/video/generations")


@pytest.mark.parametrize(
    ("body", "task_id"),
    [
        ({"id": "task_x", "task_id": "task_x", "object": "video", "status": "queued"}, "task_x"),
        ({"task_id": "task_t", "status": "queued"}, "task_t"),
        ({"id": "task_i", "status": "queued", "progress": 0}, "task_i"),
        ({"code": "success", "data": {"task_id": "task_e"}}, "task_e"),
    ],
)
def test_video_submit_reads_task_id_then_id(body: dict[str, Any], task_id: str) -> None:
    assert VIDEOS.read_submit(200, body) == Accepted(task_id, body)


def test_video_submit_refusals() -> None:
    refused = {"code": "prompt_blocked", "message": "blocked", "data": None}
    assert VIDEOS.read_submit(200, refused) == Rejected("blocked (code prompt_blocked)")
    assert VIDEOS.read_submit(400, refused) is None
    assert VIDEOS.read_submit(200, {"object": "video"}) is None


def test_video_polls_the_route_it_was_submitted_to() -> None:
    assert VIDEOS.poll(["task_x"]) == PollRequest("GET", "/v1/videos/task_x")
    assert GENERATIONS.poll(["task_x"]) == PollRequest("GET", "/v1/video/generations/task_x")
    kling = video_family("/kling/v1/videos/image2video")
    assert kling.poll(["k1"]) == PollRequest("GET", "/kling/v1/videos/image2video/k1")
    assert VIDEOS.batch == 1 and VIDEOS.fallback_poll("task_x") is None


@pytest.mark.parametrize(
    ("body", "status", "urls"),
    [
        # new-api's envelope around a TaskDto: result_url
        ({"code": "success", "message": "", "data": {"id": 3, "task_id": "task_x",
          "status": "SUCCESS", "progress": "100%", "result_url": "https://v/x.mp4"}},
         "success", ("https://v/x.mp4",)),
        ({"code": "success", "data": {"task_id": "task_x", "status": "IN_PROGRESS",
          "progress": "30%"}}, "running", ()),
        ({"code": "success", "data": {"task_id": "task_x", "status": "NOT_START",
          "progress": "0%"}}, "pending", ()),
        # Kling's raw upstream body inside data
        ({"code": "success", "data": {"task_id": "task_x", "status": "SUCCESS", "progress": "100%",
          "data": {"task_result": {"videos": [{"url": "https://kling/v.mp4"}]}}}},
         "success", ("https://kling/v.mp4",)),
        # Veo, fetched live: {code: success, data: {status: succeeded, url}}
        ({"code": "success", "data": {"task_id": "task_x", "status": "succeeded",
          "url": "https://veo/v.mp4", "format": "mp4", "error": None, "metadata": None}},
         "success", ("https://veo/v.mp4",)),
        ({"code": "success", "data": {"task_id": "task_x", "status": "processing"}},
         "running", ()),
        ({"code": "success", "data": {"task_id": "task_x", "status": "queued"}}, "pending", ()),
        # the OpenAI video object of /v1/videos/{id}: metadata.url, integer progress
        ({"id": "task_x", "object": "video", "status": "completed", "progress": 100,
          "metadata": {"url": "https://v/m.mp4"}}, "success", ("https://v/m.mp4",)),
        ({"id": "task_x", "object": "video", "status": "in_progress", "progress": 40},
         "running", ()),
        ({"id": "task_x", "object": "video", "status": "unknown"}, "pending", ()),
        # the openapi doc's shape
        ({"task_id": "task_x", "status": "completed", "url": "https://d/v.mp4"},
         "success", ("https://d/v.mp4",)),
    ],
)  # fmt: skip
def test_video_reads_both_fetch_shapes(
    body: dict[str, Any], status: str, urls: tuple[str, ...]
) -> None:
    state = VIDEOS.read_poll(200, body, ["task_x"])["task_x"]
    assert (state.status, state.media_urls, state.body) == (status, urls, body)


def test_video_failure_reasons_and_unreadable_answers() -> None:
    sora = {"id": "task_x", "status": "failed", "error": {"message": "moderation", "code": "x"}}
    assert VIDEOS.read_poll(200, sora, ["task_x"])["task_x"].fail_reason == "moderation"
    dto = {"code": "success", "data": {"task_id": "task_x", "status": "FAILURE",
           "fail_reason": "upstream refund"}}  # fmt: skip
    assert GENERATIONS.read_poll(200, dto, ["task_x"])["task_x"].fail_reason == "upstream refund"
    assert VIDEOS.read_poll(404, sora, ["task_x"]) == {}
    assert VIDEOS.read_poll(200, {"code": "task_not_exist", "data": None}, ["task_x"]) == {}
    assert VIDEOS.read_poll(200, {"id": 5, "progress": 45}, ["task_x"])["task_x"].progress == "45%"


# -------------------------------------------------------------------------------- Responses


@pytest.mark.parametrize("status", ["queued", "in_progress"])
def test_a_background_response_is_accepted(status: str) -> None:
    body = {"id": "resp_1", "object": "response", "status": status, "background": True}
    assert RESPONSES.read_submit(200, body) == Accepted("resp_1", body)
    assert RESPONSES.read_submit(400, body) is None
    assert RESPONSES.read_submit(200, {"object": "response"}) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [("queued", "pending"), ("in_progress", "running"), ("completed", "success"),
     ("failed", "failure"), ("cancelled", "failure"), ("incomplete", "failure")],
)  # fmt: skip
def test_responses_status_values(status: str, expected: str) -> None:
    body = {"id": "resp_1", "status": status}
    assert RESPONSES.read_poll(200, body, ["resp_1"])["resp_1"].status == expected


def test_responses_output_text_and_failure_reasons() -> None:
    message = {"type": "message", "content": [{"type": "output_text", "text": "forty-two"}]}
    done = {"id": "resp_1", "status": "completed", "output": [{"type": "reasoning"}, message]}
    state = RESPONSES.read_poll(200, done, ["resp_1"])["resp_1"]
    assert output_text(state.body) == "forty-two"
    failed = {"id": "resp_1", "status": "failed", "error": {"code": "server_error",
              "message": "The model crashed"}}  # fmt: skip
    assert RESPONSES.read_poll(200, failed, ["resp_1"])["resp_1"].fail_reason == "The model crashed"
    cut = {"id": "resp_1", "status": "incomplete",
           "incomplete_details": {"reason": "max_output_tokens"}}  # fmt: skip
    assert "max_output_tokens" in (
        RESPONSES.read_poll(200, cut, ["resp_1"])["resp_1"].fail_reason or ""
    )
    assert RESPONSES.poll(["resp_1"]) == PollRequest("GET", "/v1/responses/resp_1")
    assert RESPONSES.read_poll(404, failed, ["resp_1"]) == {}
    assert RESPONSES.read_poll(200, {"id": "other", "status": "completed"}, ["resp_1"]) == {}
    with pytest.raises(ValueError, match="only Midjourney"):
        RESPONSES.follow_up({"button": "U1"}, state)
