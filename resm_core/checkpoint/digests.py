"""SHA-256 of input files, remembered across runs: a hyperparameter sweep merges the same experts many times,
and a manifest, a task vector's base check and a hub origin's check all ask for the same digests. No torch:
`hub` reads it when the Snakefile checks provenance.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 8 * 1024 * 1024


def hash_cache_dir() -> Path:
    """Where file digests are remembered: $RESM_HASH_CACHE, else ~/.cache/resm/sha256."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resm" / "sha256"
    return Path(os.environ.get("RESM_HASH_CACHE", default))


def sha256_file(path: Path, cache: bool = True) -> str:
    """SHA-256 of a file. A hyperparameter sweep merges the same experts many times, so digests
    are cached, keyed by (resolved path, size, mtime); a rewritten file gets a new key. One small
    file per entry, written by rename, so parallel jobs never see a torn entry."""
    path = Path(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    entry = hash_cache_dir() / key
    if cache and entry.is_file():
        cached = entry.read_text().strip()
        if len(cached) == 64:
            return cached
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    if cache:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f".{key}.{os.getpid()}")
            tmp.write_text(value)
            tmp.replace(entry)
        except OSError:  # a read-only or full cache only costs speed
            pass
    return value


def input_files(path: Path) -> list[Path]:
    """The files of an input that determine its content: every regular file of a directory
    (not recursive, hidden files skipped), or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
