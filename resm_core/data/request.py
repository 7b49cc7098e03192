"""What `resm data build`, `resm data decontaminate` and `resm data mix` are asked to do: the single declaration
of each data option (flag, key in the workflow config's `data` and `mixtures` sections, default, help, range)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import yaml

from resm_core.data.near_duplicates import DEFAULT_COSINE
from resm_core.data.schema import DIMS
from resm_core.data.splits import DEFAULT_SALT
from resm_core.options import device_option, option, pickle_option, split_pair

STRATEGIES = ("uniform", "ratio", "reward_weighted", "conflict_filtered")


def source_spec(text: str) -> str | dict:
    """A source name, or an inline YAML mapping such as '{kind: local, path: x.jsonl}'."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a source name or a YAML mapping ({str(exc).splitlines()[0]})"
        ) from None
    return value if isinstance(value, dict) else text


def keyed_path(text: str) -> tuple[str, Path]:
    key, value = split_pair(text, "DIM=DIR")
    return key, Path(value)


def ratios(text: str) -> dict[str, float]:
    """dim=number,... or a JSON/YAML mapping (as the workflow passes it)."""
    try:
        if text.lstrip().startswith("{"):
            return {str(k): float(v) for k, v in json.loads(text).items()}
        return {k.strip(): float(v) for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios expects dim=number,..., got {text!r}") from None


def near_duplicate_option():
    """One key, `data.near_duplicate_cosine`, for the build (its own test split) and the decontamination (every
    evaluation item of the run)."""
    return option(
        DEFAULT_COSINE,
        help="drop training and validation rows whose MiniLM cosine to an evaluation prompt reaches this (1 "
        "turns the check off)",
        exclusive_minimum=0,
        maximum=1,
    )


@dataclass
class BuildRequest:
    SECTION: ClassVar[str] = "data"  # where its options sit in a config; errors name it

    dim: str = option(help="the dimension to build", choices=DIMS, config=False)
    out: Path = option(help="output directory", config=False)
    sources: list = option(
        help="a source name (`resm data sources`), hub:PRESET, or an inline YAML mapping; "
        "repeatable (default: the embedded sources of the dimension)",
        flag="--source",
        parse=source_spec,
        append=True,
        config=False,
        default_factory=list,
    )
    base: Path | None = option(
        None, help="base model whose own answers become `rejected` for harmful prompts", config=False
    )
    base_answers: bool = option(
        True,
        help="harmlessness `rejected` = the base's own answers (needed for DPO); "
        "without them harmful prompts are SFT-only",
    )
    cache: str | None = option(None, help="asset cache (default: $RESM_CACHE or resources/)", config=False)
    val: float = option(0.1, help="validation fraction", minimum=0, maximum=0.5)
    test: float = option(0.1, help="test fraction, the held-out benchmark", minimum=0, maximum=0.5)
    max_train: int | None = option(None, help="cap on training rows (a deterministic hash-ordered sample)", minimum=1)
    max_val: int | None = option(None, help="cap on validation rows", minimum=0)
    max_test: int | None = option(None, help="cap on test rows", minimum=0)
    salt: str = option(DEFAULT_SALT, help="split salt; changing it reshuffles every split")
    max_new_tokens: int = option(96, help="length of the base model's answers", minimum=1)
    near_duplicate_cosine: float = near_duplicate_option()
    batch_size: int = option(8, help="generation batch size for the base model's answers", minimum=1, config=False)
    device: str = device_option()
    allow_pickle: bool = pickle_option()
    holdout: list | None = option(None, config=False, cli=False)
    force: bool = option(False, help="replace the output if it exists", config=False)
    progress: bool = option(True, config=False, cli=False)


@dataclass
class MixRequest:
    SECTION: ClassVar[str] = "mixtures"  # where its options sit in a config; errors name it

    strategy: str = option(help="how the combo's rows are drawn", choices=STRATEGIES, config=False)
    inputs: dict = option(
        help="built dataset directories, e.g. helpfulness=data/helpfulness",
        parse=keyed_path,
        nargs="+",
        metavar="DIM=DIR",
        config=False,
    )
    out: Path = option(help="output directory", config=False)
    budget: int | None = option(
        None, help="total examples (default: the inputs' training rows combined)", minimum=1, config=False
    )
    ratios: dict | None = option(None, help="per-dimension ratios, e.g. helpfulness=2,harmlessness=1", parse=ratios)
    judge: str | None = option(
        None, help="keywords, refusal:JUDGES_DIR, table:PATH.jsonl or reward:MODEL_DIR[:dim=head,...]", config=False
    )
    temperature: float = option(0.25, help="reward_weighted: softmax temperature", exclusive_minimum=0)
    margin: float = option(0.5, help="conflict_filtered: contradiction threshold", minimum=0)
    seed: int = option(0, help="seed of the draw", config=False)
    force: bool = option(False, help="replace the output if it exists", config=False)


@dataclass
class DecontaminateRequest:
    SECTION: ClassVar[str] = "data"  # where its options sit in a config; errors name it

    data: Path = option(help="one dimension's built dataset (train.jsonl, val.jsonl)", config=False)
    eval_data: Path = option(help="root of every dimension's built dataset (DIM/test.jsonl)", config=False)
    benchmarks: dict = option(
        help="JSON: benchmark -> options, as `resm evaluate --options` takes them (n and n_val are ignored: the "
        "whole pool each benchmark draws from is checked)",
        parse=json.loads,
        config=False,
    )
    out: Path = option(help="output directory", config=False)
    near_duplicate_cosine: float = near_duplicate_option()
    cache: str | None = option(None, help="asset cache (default: $RESM_CACHE or resources/)", config=False)
    force: bool = option(False, help="replace the output if it exists", config=False)
