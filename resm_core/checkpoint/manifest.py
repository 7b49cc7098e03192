"""Provenance manifests: what went in (with SHA-256), what was done, on what, and what it cost.

Hashing tens of GB of inputs is slow, and hashlib releases the GIL, so input hashes are computed
on a background thread while the real work runs; the manifest waits for them only at the end.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch

import resm_core
from resm_core.checkpoint.digests import input_files, sha256_file

MANIFEST_NAME = "resm_manifest.json"
_VERSIONED = ("torch", "safetensors", "numpy", "transformers", "peft")


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


def _paths(value: Any, rewrite: Callable[[str], str | None]) -> Any:
    """A JSON-able value with each string (keys too) that `rewrite` recognises as a path rewritten."""
    if isinstance(value, dict):
        return {_paths(k, rewrite): _paths(v, rewrite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_paths(v, rewrite) for v in value]
    if isinstance(value, str) and "\n" not in value:
        return rewrite(value) or value
    return value


def _relative(path: str | Path, out: Path) -> str:
    """`path` from the directory `out`, always with a leading ./ or ../ (how a recipe tells it from a hub id)."""
    relative = os.path.relpath(Path(path).resolve(), Path(out).resolve())
    return relative if relative.startswith("..") else os.path.join(".", relative)


def relative_paths(value: Any, out: Path) -> Any:
    """Every absolute path in a JSON-able value (keys too), written relative to `out`, the directory the value
    is written into: a model directory that is published (`hf upload`) names no machine path, and a path to
    a sibling still leads there from the model (`../../taskvec/honesty`)."""
    return _paths(value, lambda s: _relative(s, out) if os.path.isabs(s) else None)


def rebased(value: Any, written_for: Path, now_in: Path) -> Any:
    """A value whose relative paths (./ or ../, as `relative_paths` writes them) were written for the directory
    `written_for`, rewritten for `now_in`: a merge's recipe and manifest copied into its records directory
    still lead to the same inputs."""
    return _paths(value, lambda s: _relative(Path(written_for) / s, now_in) if s.startswith(("./", "../")) else None)


def input_license(path: Path) -> str | None:
    """The license an input's own model card states (its README.md front matter), if any."""
    card = Path(path) / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    with contextlib.suppress(Exception):  # a card without front matter, or with broken YAML, states nothing
        license_ = (metadata_load(card) or {}).get("license")
        return str(license_) if license_ else None
    return None


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

    def build(self, *, action: str, device: str, relative_to: Path | None = None, **fields: Any) -> dict[str, Any]:
        """The manifest; with `relative_to` (the output directory), its paths are relative to it."""
        wall = time.perf_counter() - self.started
        from resm_core.hub import hub_origin

        inputs = {
            role: [
                {
                    "path": str(path.resolve()),
                    "files": {f.name: fut.result() for f, fut in files},
                    **({"hub": origin} if (origin := hub_origin(path)) else {}),
                    **({"license": license_} if (license_ := input_license(path)) else {}),
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
        return relative_paths(manifest, relative_to) if relative_to is not None else manifest

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
