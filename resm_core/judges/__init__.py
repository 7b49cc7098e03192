"""Judges score a response to a prompt on one 3H dimension, in [0, 1] (higher is better on that dimension).

Data mixtures use them to weight or filter preference pairs; evaluation uses them to score arms.
A judge spec is a string: `keywords`, `refusal:JUDGE_DIR` (the fitted refusal classifier),
`table:PATH.jsonl`, `reward:MODEL_DIR[:HEADS]` or `guard:MODEL_DIR`.
"""

from __future__ import annotations

from typing import Protocol

from resm_core.errors import ConfigError


class Judge(Protocol):
    name: str

    def score(self, dim: str, prompts: list[str], responses: list[str]) -> list[float]: ...


def make_judge(spec: str) -> Judge:
    kind, _, arg = spec.partition(":")
    if kind == "keywords" and not arg:
        from resm_core.judges.keywords import KeywordJudge

        return KeywordJudge()
    if kind == "refusal" and arg:
        from resm_core.judges.refusal import RefusalJudge

        return RefusalJudge(arg)
    if kind == "guard" and arg:
        from resm_core.judges.guard import GuardJudge

        return GuardJudge(arg)
    if kind == "table" and arg:
        from resm_core.judges.table import TableJudge

        return TableJudge(arg)
    if kind == "reward" and arg:
        from resm_core.judges.reward_model import RewardModelJudge

        return RewardModelJudge.from_spec(arg)
    raise ConfigError(
        f"judge: cannot read {spec!r}; expected keywords, refusal:DIR, table:PATH.jsonl, "
        f"reward:MODEL_DIR or guard:MODEL_DIR"
    )
