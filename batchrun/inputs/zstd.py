"""A .zst input as one byte stream, for `batchrun.inputs.reader.open_input`."""

from __future__ import annotations

import io
from typing import IO, Any

__all__ = ["ZstdReader"]


class ZstdReader(io.RawIOBase):
    """Decompresses every frame of a .zst stream, and fails on a truncated or corrupt one.

    zstandard's own `stream_reader` ends quietly at a truncated frame, which would lose rows.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw = raw
        self._error = zstandard.ZstdError
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out):
            data = self._raw.read(1 << 16)
            if not data:
                if self._in_frame:
                    raise EOFError("the zstd stream ends in the middle of a frame (truncated?)")
                return 0
            self._out, self._pos = self._decompress(data), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        try:
            while data:
                self._in_frame = True
                out.append(self._frame.decompress(data))
                if not self._frame.eof:
                    break
                data = self._frame.unused_data
                self._frame = self._dctx.decompressobj()
                self._in_frame = False
        except self._error as exc:
            raise OSError(f"invalid zstd data: {exc}") from exc
        return b"".join(out)

    def close(self) -> None:
        self._raw.close()
        super().close()
