"""Provenance manifests: what went in (with SHA-256), what was done, on what, and what it cost.

Hashing tens of GB of inputs is slow, and hashlib releases the GIL, so input hashes are computed
on a background thread while the real work runs; the manifest waits for them only at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import resource
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch

import resm_core

MANIFEST_NAME = "resm_manifest.json"
_CHUNK = 8 * 1024 * 1024
_VERSIONED = ("torch", "safetensors", "numpy", "transformers", "peft")


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


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "resm_core": resm_core.__version__}
    for name in _VERSIONED:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[name] = importlib_metadata.version(name)
    return versions


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


class ManifestRecorder:
    """Start it before the work (hashing begins in the background); call `build` at the end."""

    def __init__(self, inputs: dict[str, list[Path] | Path]):
        self.started = time.perf_counter()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resm-hash")
        self._inputs: dict[str, list[tuple[Path, list[tuple[Path, Future[str]]]]]] = {}
        for role, paths in inputs.items():
            paths = paths if isinstance(paths, list) else [paths]
            self._inputs[role] = [
                (Path(p), [(f, self._pool.submit(sha256_file, f)) for f in input_files(Path(p))]) for p in paths
            ]

    def build(self, *, action: str, device: str, **fields: Any) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        from resm_core.hub import hub_origin

        inputs = {
            role: [
                {
                    "path": str(path.resolve()),
                    "files": {f.name: fut.result() for f, fut in files},
                    **({"hub": origin} if (origin := hub_origin(path)) else {}),
                }
                for path, files in entries
            ]
            for role, entries in self._inputs.items()
        }
        self._pool.shutdown()
        manifest = {
            "action": action,
            **fields,
            "inputs": inputs,
            "device": device,
            "device_name": torch.cuda.get_device_name()
            if device.startswith("cuda")
            else platform.processor() or platform.machine(),
            "versions": library_versions(),
            "started_at": self.started_at,
            "wall_time_s": round(wall, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        if device.startswith("cuda"):
            manifest["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return manifest

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
