"""Deterministic train/val/test splits keyed on the normalised prompt.

The split of an item depends only on its normalised text and a salt, never on the source, the order or
a seed: the same question arriving through two sources (or two dimensions) lands in the same split, so
an evaluation item cannot reach a training set through a near-duplicate.
"""

from __future__ import annotations

import hashlib

from resm_core.data.schema import text_key
from resm_core.errors import DataError

DEFAULT_SALT = "resm-3h-split-v1"


def unit_hash(key: str, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}\0{key}".encode()).hexdigest()[:12], 16) / 16**12


def check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions: val={val} and test={test} must be in [0, 1) and leave room for train")


def split_of(prompt: str, val: float, test: float, salt: str = DEFAULT_SALT) -> str:
    u = unit_hash(text_key(prompt), salt)
    return "test" if u < test else "val" if u < test + val else "train"


def take(rows: list[dict], n: int | None, salt: str = DEFAULT_SALT) -> list[dict]:
    """The first n rows in hash order: a deterministic sample that grows by adding rows, not reshuffling."""
    ordered = sorted(rows, key=lambda r: unit_hash(text_key(r["prompt"]), salt + "/take"))
    return ordered if n is None else ordered[:n]
