"""The task families (batchrun.endpoints.tasks) on the real shapes of the gateway notes."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.endpoints.tasks import (
    MIDJOURNEY,
    Accepted,
    PollRequest,
    Rejected,
    TaskState,
    task_family_for,
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
