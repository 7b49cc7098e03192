"""Each option is declared once, on its stage's request dataclass: the CLI flags, the config schema and the
flags a rule passes all come from that declaration, and agree with it."""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO

from resm_core.cli import build_parser
from resm_core.data.request import BuildRequest, MixRequest
from resm_core.errors import ConfigError
from resm_core.evaluate.request import EvalRequest
from resm_core.merge.request import MergeRequest
from resm_core.options import add_arguments, build, config_flags, config_schema, from_namespace, option, to_flags
from resm_core.train.request import TrainRequest
from resm_core.workflow_config import check_config

REQUIRED = ["--base", "b", "--data", "d", "--out", "o"]
REQUIRED_FIELDS = {
    TrainRequest: {"base": Path("b"), "data": Path("d"), "out": Path("o")},
    BuildRequest: {"dim": "honesty", "out": Path("o")},
    EvalRequest: {"model": Path("m"), "out": Path("o"), "data_root": Path("d")},
    MergeRequest: {"base": Path("b"), "experts": [Path("e")], "method": "ties", "out": Path("o")},
}


def _parsed(cls, argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return from_namespace(cls, parser.parse_args(argv))


def test_the_cli_adds_no_default_of_its_own():
    args = build_parser().parse_args(["train", *REQUIRED])
    req = from_namespace(TrainRequest, args)
    assert req == TrainRequest(base=Path("b"), data=Path("d"), out=Path("o"))
    assert (req.learning_rate, req.steps, req.lora_r, req.warmup, req.extra) == (1e-5, 100, 16, 0.0, {})


def test_the_default_config_travels_to_the_trainer_through_the_flags():
    training = yaml.safe_load((REPO / "config.yaml").read_text())["training"]
    flags = config_flags(TrainRequest, training, steps=32, architecture="llama")
    req = _parsed(TrainRequest, REQUIRED + shlex.split(flags))
    assert (req.adapter, req.learning_rate, req.steps, req.lora_r, req.lora_alpha, req.max_length) == (
        "lora",
        1e-3,
        32,
        16,
        32,
        256,
    )
    assert req.architecture == "llama" and req.objective == "sft"
    assert req == build(
        TrainRequest,
        {**training, "steps": 32, "architecture": "llama", "base": Path("b"), "data": Path("d"), "out": Path("o")},
    )


@pytest.mark.parametrize("value", ["my results", "r2;touch PWNED;:", "'$(touch PWNED)'", "`id`", 'a"b'])
def test_a_value_reaches_the_command_intact_whatever_it_holds(value):
    flags = to_flags(BuildRequest, {"salt": value, "sources": [{"kind": "local", "path": value}]})
    req = _parsed(BuildRequest, ["--dim", "honesty", "--out", "o"] + shlex.split(flags))
    assert req.salt == value and req.sources == [{"kind": "local", "path": value}]


def test_booleans_lists_and_mappings_round_trip():
    flags = to_flags(BuildRequest, {"base_answers": False, "max_train": 16})
    assert flags == "--no-base-answers --max-train 16"
    assert to_flags(BuildRequest, {"base_answers": True}) == ""  # the default: nothing to say
    mix = _parsed(
        MixRequest,
        ["--strategy", "ratio", "--inputs", "honesty=a", "helpfulness=b", "--out", "o"]
        + shlex.split(to_flags(MixRequest, {"ratios": {"honesty": 2, "helpfulness": 1}})),
    )
    assert mix.ratios == {"honesty": 2.0, "helpfulness": 1.0} and mix.inputs == {
        "honesty": Path("a"),
        "helpfulness": Path("b"),
    }
    train = _parsed(
        TrainRequest,
        REQUIRED
        + shlex.split(
            to_flags(
                TrainRequest,
                {"extra": {"gradient_checkpointing": True, "weight_decay": 0.01}, "lora_targets": ["q_proj", "v_proj"]},
            )
        ),
    )
    assert train.extra == {"gradient_checkpointing": True, "weight_decay": 0.01}
    assert train.lora_targets == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "cls,values,message",
    [
        (TrainRequest, {"steps": 0}, r"training\.steps: must be at least 1 \(got 0\)"),
        (TrainRequest, {"objective": "ppo"}, r"training\.objective: 'ppo' is not one of sft, dpo"),
        (TrainRequest, {"learning_rate": 0}, r"training\.learning_rate: must be greater than 0"),
        (TrainRequest, {"lr": 1e-4}, r"training: unknown option\(s\) lr"),
        (BuildRequest, {"near_duplicate_cosine": 1.5}, r"data\.near_duplicate_cosine: must be at most 1"),
        (EvalRequest, {"backend": "sglang"}, r"evaluation\.backend: 'sglang' is not one of"),
        (MergeRequest, {"device": "gpu"}, r"merge\.device: 'gpu' does not match"),
    ],
)
def test_a_bad_value_names_its_key(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        build(cls, {**REQUIRED_FIELDS[cls], **values})


def test_the_config_schema_is_the_dataclasses():
    from resm_core.validation import load_schema

    schema = load_schema("config.schema.yaml")["properties"]
    settable = {f.name for f in fields(TrainRequest) if f.metadata.get("config", True)}
    # every option of `resm train`, and the one workflow key beside them (a run per seed)
    assert set(schema["training"]["properties"]) == settable | {"seeds"}
    assert schema["training"]["properties"]["learning_rate"] == {
        "description": "peak learning rate",
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 1e-5,  # for the generated reference; the dataclass applies it
    }
    assert {"max_train", "near_duplicate_cosine", "base_answers"} <= set(schema["data"]["properties"])
    assert {"temperature", "margin", "strategies", "judge"} <= set(schema["mixtures"]["properties"])
    assert {"backend", "n_bootstrap", "benchmarks", "models"} <= set(schema["evaluation"]["properties"])
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    wider = copy.deepcopy(config)
    wider["training"]["lora_dropout"] = 0.05  # an option the schema file never names
    check_config(wider)
    wider["training"]["lora_dropout"] = 2
    with pytest.raises(ConfigError, match=r"training\.lora_dropout: 2 is greater than the maximum of 1"):
        check_config(wider)


def test_adding_an_option_is_one_declaration():
    @dataclass
    class Extended(TrainRequest):
        label_smoothing: float = option(0.0, help="label smoothing of the SFT loss", minimum=0, maximum=1)

    assert config_schema(Extended)["label_smoothing"] == {
        "description": "label smoothing of the SFT loss",
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "default": 0.0,  # documented in the generated configuration reference
    }
    flags = config_flags(Extended, {"label_smoothing": 0.1, "not_an_option_here": 1} | {"steps": 3})
    assert flags == "--label-smoothing 0.1 --steps 3"
    assert _parsed(Extended, REQUIRED + shlex.split(flags)).label_smoothing == 0.1
    with pytest.raises(ConfigError, match=r"training\.label_smoothing: must be at most 1"):
        _parsed(Extended, REQUIRED + ["--label-smoothing", "2"])
