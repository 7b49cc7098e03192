"""Scores read from a JSONL table `{dim, prompt, response, score}`: precomputed reward-model scores,
human labels, or a stub with known answers in tests."""

from __future__ import annotations

from pathlib import Path

from resm_core.data.schema import read_jsonl
from resm_core.errors import DataError


class TableJudge:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = f"table:{self.path.name}"
        self.scores: dict[tuple[str, str, str], float] = {}
        for i, rec in enumerate(read_jsonl(self.path), 1):
            try:
                self.scores[(rec["dim"], rec["prompt"], rec["response"])] = float(rec["score"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{self.path}:{i}: needs dim, prompt, response and a numeric score") from None

    def score(self, dim: str, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for p, r in zip(prompts, responses):
            if (dim, p, r) not in self.scores:
                raise DataError(f"{self.path}: no {dim} score for prompt {p[:60]!r} with response {r[:40]!r}")
            out.append(self.scores[(dim, p, r)])
        return out
