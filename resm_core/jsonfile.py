"""The small JSON files every stage reads (configs, manifests, judges, summaries): a missing, truncated or
wrong-shaped one is a one-line error naming the file, raised as the caller's own error type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resm_core.errors import ResmError


def read_json(path: str | Path, error: type[ResmError] = ResmError, shape: type = dict) -> Any:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc}); was it cut short?") from None
    if not isinstance(data, shape):
        want = "an object" if shape is dict else "an array" if shape is list else shape.__name__
        raise error(f"{path}: expected {want} of JSON, got {type(data).__name__}")
    return data


def write_json_atomic(path: str | Path, data: Any) -> None:
    """The file appears whole or not at all (a marker Snakemake takes as done)."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
