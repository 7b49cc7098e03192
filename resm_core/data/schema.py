"""The one row schema every source is mapped to, and the text key that splits and de-duplicates.

A row is a preference pair `{id, dim, source, prompt, chosen, rejected}`; `rejected` may be null
for sources that only have good answers (TruthfulQA): such rows train SFT and are skipped, with a
count, by DPO. The SFT view of a row is `{id, dim, source, prompt, response=chosen}`. `meta` holds
what evaluation needs (options, all correct answers, harm category) and is never trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from resm_core.errors import DataError

DIMS = ("helpfulness", "honesty", "harmlessness")
REQUIRED = ("id", "dim", "source", "prompt", "chosen")
TEXT_FIELDS = ("prompt", "chosen", "rejected")
SPLITS = ("train", "val", "test")

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing removed: two prompts that differ only in those are the
    same item for splitting and for the leakage guard."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def text_key(prompt: str) -> str:
    return hashlib.sha256(normalise(prompt).encode()).hexdigest()


def make_row(source: str, dim: str, prompt: str, chosen: str, rejected: str | None = None, **meta) -> dict:
    row: dict[str, Any] = {
        "id": f"{source}-{text_key(prompt)[:16]}",
        "dim": dim,
        "source": source,
        "prompt": prompt.strip(),
        "chosen": chosen.strip(),
        "rejected": rejected.strip() if rejected is not None else None,
    }
    if meta:
        row["meta"] = meta
    return row


def check_row(row: dict, where: str) -> dict:
    """Reject rows that would train on nothing or on the wrong dimension, naming the field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be an object, got {type(row).__name__}")
    missing = [f for f in REQUIRED if f not in row]
    if missing:
        raise DataError(
            f"{where}: row {row.get('id', '?')!r} lacks field(s) {', '.join(missing)} (has {', '.join(sorted(row))})"
        )
    if row["dim"] not in DIMS:
        raise DataError(f"{where}: row {row['id']!r} has dim {row['dim']!r}; expected one of {', '.join(DIMS)}")
    for f in TEXT_FIELDS:
        value = row.get(f)
        if f == "rejected" and value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: row {row['id']!r} field {f!r} must be non-empty text, got {value!r}")
    return row


def sft_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "dim": row["dim"],
        "source": row["source"],
        "prompt": row["prompt"],
        "response": row["chosen"],
    }


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):  # one JSON array of records, as many tools write
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        numbered = list(enumerate(rows, 1))
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    for n, row in numbered:
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object (one record per line), got {type(row).__name__}")
    return [row for _, row in numbered]


def read_rows(path: Path) -> list[dict]:
    """Rows of a built split, each checked against the schema."""
    return [check_row(r, f"{path}:{i + 1}") for i, r in enumerate(read_jsonl(path))]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
