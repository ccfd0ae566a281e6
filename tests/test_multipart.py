"""batchrun.send.multipart: a row's body and files as one streamed multipart body."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.mock.multipart import FormFile, parse_form
from batchrun.models import Upload
from batchrun.send.multipart import UploadChanged, multipart_body


async def collect(body: object) -> bytes:
    chunks = []
    async for chunk in body.chunks():  # type: ignore[attr-defined]
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.anyio
async def test_fields_and_files_arrive_as_sent_and_the_length_is_exact(tmp_path: Path) -> None:
    audio = bytes(range(256)) * 1000  # 256,000 bytes: several chunks
    (tmp_path / "a.mp3").write_bytes(audio)
    fields = {
        "model": "whisper-1",
        "file": "clips/a.mp3",  # the file field itself is not sent as text
        "temperature": 0.2,
        "timestamp_granularities": ["word", "segment"],
        "chunking_strategy": {"type": "auto"},
        "prompt": 'Quotes " and\r\nnew lines',
        "stream": False,
        "language": None,
    }
    upload = Upload(field="file", path=str(tmp_path / "a.mp3"), filename="a.mp3")
    body = multipart_body(fields, (upload,), file_fields=("file",))
    data = await collect(body)
    assert len(data) == body.length
    assert await collect(body) == data  # every attempt gets the same bytes again
    form = parse_form(body.content_type.encode(), data)
    assert form == {
        "model": "whisper-1",
        "temperature": "0.2",
        "timestamp_granularities": ["word", "segment"],
        "chunking_strategy": '{"type":"auto"}',
        "prompt": 'Quotes " and\r\nnew lines',
        "stream": "false",
        "file": FormFile(filename="a.mp3", content_type="audio/mpeg", data=audio),
    }


@pytest.mark.anyio
async def test_a_file_that_changes_size_after_the_length_was_taken_stops_the_upload(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"x" * 1000)
    body = multipart_body({}, (Upload("file", str(path), "a.wav"),), file_fields=("file",))
    path.write_bytes(b"x" * 10)
    with pytest.raises(UploadChanged, match="changed size"):
        await collect(body)
