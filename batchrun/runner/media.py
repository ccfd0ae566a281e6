"""`batchrun media OUT`: fetch the media files a run left as URLs, without calling the API.

A run downloads the media URLs of answers as they arrive (images); with `--no-download`, or
when a download failed (a timeout, a CDN down), the row is ok with the URL kept in its
`response`. This goes through the committed parts, downloads each URL that has no file yet
(`batchrun.send.download`: no key or API header, http(s), capped, retried) into OUT/media under
the row's own name, and rewrites the part with the file in `media` and in `response`
(`"batchrun_media"`), the download's failure cleared from `error_message` once every file of
the row is in place.

Guarantees:
- Nothing is sent to the API: only the media URLs are fetched, and only GETs.
- It holds the output's lock: it refuses an output a run is writing to.
- A file is in place before the part that names it is replaced, and a part is replaced
  atomically (`batchrun.store.parts`): a kill at any instant leaves every part as it was or
  completed, never a record naming a missing file. Run it again to go on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from batchrun.endpoints.profiles import profile_for
from batchrun.send.download import DEFAULT_MAX_MEDIA_BYTES, DownloadFailed, download
from batchrun.send.http import AiohttpEngine, HttpEngine
from batchrun.store.checkpoint import RESULTS_DIR, Checkpoint, CheckpointError, OutputLock
from batchrun.store.media import MediaStore
from batchrun.store.parts import read_part, replace_part
from batchrun.store.writer import part_name

__all__ = ["MediaSummary", "fetch_media", "fetch_media_sync"]


@dataclass(slots=True)
class MediaSummary:
    rows: int = 0  # rows that had a URL without a file
    files: int = 0  # files fetched now
    failed: list[str] = field(default_factory=list)  # "custom_id: why", one per URL


async def fetch_media(
    out_dir: Path, *, http: HttpEngine | None = None, timeout_s: float = 300.0
) -> MediaSummary:
    checkpoint = Checkpoint.load(out_dir)
    if checkpoint is None:
        raise CheckpointError(f"{out_dir} has no checkpoint.json: not a batchrun output")
    engine = http or AiohttpEngine(connections=8, timeout_s=timeout_s)
    summary = MediaSummary()
    media = MediaStore(out_dir)
    try:
        with OutputLock(out_dir):
            await anyio.to_thread.run_sync(media.sweep)
            for index in range(checkpoint.parts):
                path = out_dir / RESULTS_DIR / part_name(index)
                records, schema = await anyio.to_thread.run_sync(read_part, path)
                changed = False
                for record in records:
                    changed |= await _complete(record, media, engine, timeout_s, summary)
                if changed:
                    await anyio.to_thread.run_sync(replace_part, path, records, schema)
    finally:
        if http is None:
            await engine.aclose()
    return summary


async def _complete(
    record: dict[str, Any],
    media: MediaStore,
    http: HttpEngine,
    timeout_s: float,
    summary: MediaSummary,
) -> bool:
    """Fetch what `record` lacks; True when it changed."""
    if record["status"] != "ok" or not profile_for(record.get("endpoint") or "").media_in_json:
        return False
    try:
        body = json.loads(record.get("response") or "")
    except ValueError:
        return False
    data = body.get("data") if isinstance(body, dict) else None
    items: list[Any] = data if isinstance(data, list) else []
    missing = [
        (i, item)
        for i, item in enumerate(items)
        if isinstance(item, dict)
        and isinstance(item.get("url"), str)
        and "batchrun_media" not in item
    ]
    if not missing:
        return False
    summary.rows += 1
    custom_id = record["custom_id"]
    problems = []
    for i, item in missing:
        try:
            item["batchrun_media"] = await download(
                http,
                item["url"],
                functools.partial(media.open, custom_id, i),
                max_bytes=DEFAULT_MAX_MEDIA_BYTES,
                timeout_s=timeout_s,
            )
            summary.files += 1
        except DownloadFailed as exc:
            problems.append(f"data[{i}].url not downloaded: {exc}")
            summary.failed.append(f"{custom_id}: {exc}")
    saved = [
        item["batchrun_media"]
        for item in items
        if isinstance(item, dict) and "batchrun_media" in item
    ]
    if len(problems) == len(missing):
        return False  # nothing new: the part stays as it is
    record["response"] = json.dumps(body, ensure_ascii=False)
    if "media" in record:
        record["media"] = saved
    record["error_message"] = "; ".join(problems) or None
    return True


def fetch_media_sync(out_dir: Path, *, timeout_s: float = 300.0) -> MediaSummary:
    return anyio.run(lambda: fetch_media(out_dir, timeout_s=timeout_s))
