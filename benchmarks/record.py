"""A benchmark's figures as a record the docs site renders (docs/benchmarks.md, through docs/hooks.py): what was
measured, the command that measured it, the date and the machine, and the rows. One record per script and
variant, replaced by each run, committed with the change it measures."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {memory:.0f} GiB, {device}, {platform.system()}, torch {torch.__version__}"


def save(name: str, title: str, rows: list[dict], note: str = "") -> Path:
    """Write benchmarks/results/NAME.json (atomically: a reader never sees half a record)."""
    RESULTS.mkdir(exist_ok=True)
    script = Path(sys.argv[0])
    script_name = f"benchmarks/{script.name}" if script.parent.name == "benchmarks" else str(script)
    record = {
        "title": title,
        "command": " ".join(["python", script_name, *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "note": note,
        "rows": rows,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path
