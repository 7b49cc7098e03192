"""Fitted judges are JSON files (coefficients, thresholds and their held-out figures), never pickles:
written atomically by `resm judge fit`, read back with an error that says how to make them."""

from __future__ import annotations

import json
from pathlib import Path

from resm_core.errors import JudgeError
from resm_core.jsonfile import read_json


def write_report(out_dir: str | Path, name: str, report: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.rename(out_dir / name)


def read_report(judge_dir: str | Path, name: str, what: str) -> dict:
    path = Path(judge_dir) / name
    if not path.is_file():
        raise JudgeError(f"{path}: the {what} is not fitted; run `resm judge fit --out {judge_dir}`")
    report: dict = read_json(path, JudgeError)
    return report
