"""Choosing one arm on validation items, reported on test items: `resm pick` ("the most helpful model whose
harmlessness is at least 0.9", for merges and mixtures apart) and the hyperparameters a frontier's merges
start from (`resm frontier choose`). The test items never enter a choice."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from resm_core.errors import ConfigError, ReportError
from resm_core.grid import Arm, combo_dims
from resm_core.jsonfile import write_text_atomic
from resm_core.report.paired import ArmItems, load_arm, paired, point_scores
from resm_core.report.tables import grid

_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
KINDS = ("merge", "mixture")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str, dims: list[str]) -> Constraint:
        match = _CONSTRAINT.match(text)
        if not match:
            raise ConfigError(f"--subject-to {text!r}: expected METRIC>=NUMBER (or <=, >, <), e.g. harmlessness>=0.9")
        metric, op, value = match.groups()
        if metric not in [*dims, "balance"]:
            raise ConfigError(
                f"--subject-to {text!r}: {metric} is not one of the combo's dims or balance ({', '.join(dims)})"
            )
        return cls(metric, op, float(value))

    def holds(self, scores: dict[str, float]) -> bool:
        return bool(_OPS[self.op](scores[self.metric], self.value))

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def combo_arms(results: Path, combo: str) -> list[str]:
    """Every evaluated merge and mixture of a combo under RESULTS/eval (the first training run's paths)."""
    root = Path(results) / "eval"
    found = sorted(p.parent.relative_to(root).as_posix() for p in root.glob(f"merge/*/{combo}/*/summary.json"))
    found += sorted(p.parent.relative_to(root).as_posix() for p in root.glob(f"mix/*/{combo}/summary.json"))
    if not found:
        raise ReportError(f"{root}: no evaluated merge or mixture of {combo}")
    return found


def _validation(results: Path, arm: str, dims: list[str]) -> tuple[dict[str, ArmItems], dict[str, float]]:
    splits = load_arm(results, arm)
    if "val" not in splits:
        raise ReportError(
            f"{Path(results) / 'eval' / arm}: no validation items; set evaluation.benchmarks.*.n_val above 0 to "
            f"choose on validation"
        )
    return splits, point_scores(splits["val"], dims)


def pick(
    results: Path,
    combo: str,
    maximize: str = "balance",
    constraints: list[str] | tuple[str, ...] = (),
    arms: list[str] | None = None,
    seed: int = 0,
) -> dict:
    """Per kind (merges, mixtures): the arm whose validation `maximize` is highest among those meeting every
    constraint on validation (ties: the first in path order), with its test scores, their intervals and its
    paired difference from the base on test items (when the base was evaluated)."""
    dims = combo_dims(combo)
    if maximize not in [*dims, "balance"]:
        raise ConfigError(f"--maximize {maximize!r}: expected one of the combo's dims ({', '.join(dims)}) or balance")
    rules = [Constraint.parse(c, dims) for c in constraints]
    results = Path(results)
    base = load_arm(results, "base").get("test") if (results / "eval" / "base" / "summary.json").is_file() else None
    out: dict = {"combo": combo, "maximize": maximize, "subject_to": [str(r) for r in rules]}
    for kind in KINDS:
        candidates = [a for a in (arms or combo_arms(results, combo)) if Arm.parse(a).kind == kind]
        feasible = []
        for arm in candidates:
            splits, val = _validation(results, arm, dims)
            if all(r.holds(val) for r in rules):
                feasible.append((arm, splits, val))
        entry: dict = {"candidates": len(candidates), "feasible": len(feasible), "chosen": None}
        if feasible:
            arm, splits, val = max(feasible, key=lambda f: f[2][maximize])  # max keeps the first of ties
            summary = grid(results, [arm]).iloc[0]  # the test intervals `resm evaluate` stored
            test = point_scores(splits["test"], dims)
            entry.update(
                chosen=arm,
                validation={m: val[m] for m in [*dims, "balance"]},
                test={
                    **{d: {"score": test[d], **_interval(summary, d)} for d in dims},
                    "balance": {"score": test["balance"]},
                },
            )
            if base is not None:
                rows = paired(splits["test"], base, dims, seed=seed)
                entry["vs_base"] = {
                    r["metric"]: {k: r[k] for k in ("difference", "ci_low", "ci_high", "p_value", "n_items")}
                    for r in rows
                    if r["metric"] in [*dims, "balance"]
                }
        out[kind] = entry
    return out


def _interval(row: pd.Series, dim: str) -> dict[str, float]:
    return {k: float(row[f"{dim}_{k}"]) for k in ("ci_low", "ci_high") if pd.notna(row[f"{dim}_{k}"])}


def choose_front(results: Path, method: str, combo: str, candidates: dict[str, dict]) -> dict:
    """The merge recipe a frontier's points start from: the method and the hyperparameter set (of
    `candidates`, arm -> params) with the best validation balance over the combo's dims (ties: the first)."""
    if not candidates:
        raise ConfigError(f"frontier: merges.{method} has no hyperparameter sets to choose among")
    dims = combo_dims(combo)
    balances = {arm: _validation(results, arm, dims)[1]["balance"] for arm in candidates}
    chosen = max(balances, key=lambda a: balances[a])
    return {
        "method": method,
        "params": dict(candidates[chosen] or {}),
        "chosen_on_validation": {"arm": chosen, "balance": balances},
    }


def write_recipe(recipe: dict, out: Path) -> None:
    """The chosen recipe, atomically; `chosen_on_validation` travels as a comment (a recipe holds no extra keys)."""
    note = recipe.pop("chosen_on_validation")
    lines = [f"# chosen on validation balance over the combo's dims: {note['arm']}"]
    lines += [f"#   {arm}: {value:.4f}" for arm, value in note["balance"].items()]
    write_text_atomic(Path(out), "\n".join(lines) + "\n" + yaml.safe_dump(recipe, sort_keys=False))
