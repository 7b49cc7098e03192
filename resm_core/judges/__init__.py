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


NEEDS_ARGUMENT = {"keywords": False, "refusal": True, "guard": True, "table": True, "reward": True}


def check_spec(spec: str) -> tuple[str, str]:
    """(kind, argument) of a judge spec, or a one-line error saying which forms exist."""
    kind, _, arg = str(spec).partition(":")
    if kind not in NEEDS_ARGUMENT or NEEDS_ARGUMENT[kind] != bool(arg):
        raise ConfigError(
            f"judge: cannot read {spec!r}; expected keywords, refusal:DIR, table:PATH.jsonl, "
            f"reward:MODEL_DIR or guard:MODEL_DIR"
        )
    return kind, arg


def make_judge(spec: str, allow_pickle: bool = False) -> Judge:
    """`allow_pickle`: the pickle policy of the command, for judges that load a model (reward, guard)."""
    kind, arg = check_spec(spec)
    if kind == "keywords":
        from resm_core.judges.keywords import KeywordJudge

        return KeywordJudge()
    if kind == "refusal":
        from resm_core.judges.refusal import RefusalJudge

        return RefusalJudge(arg)
    if kind == "guard":
        from resm_core.judges.guard import GuardJudge

        return GuardJudge(arg, allow_pickle=allow_pickle)
    if kind == "table":
        from resm_core.judges.table import TableJudge

        return TableJudge(arg)
    from resm_core.judges.reward_model import RewardModelJudge

    return RewardModelJudge.from_spec(arg, allow_pickle)
