"""The `resm` command line: recipes, flags, and one-line errors that name the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import load_dir

from resm_core.cli import main
from resm_core.taskvec.conflicts import SUMMARY_TABLE

REPO = Path(__file__).resolve().parents[1]


def test_merge_from_flags(tiny, tmp_path, capsys):
    code = main(
        [
            "-q",
            "merge",
            "--method",
            "ties",
            "--base",
            str(tiny["base"]),
            "--experts",
            *map(str, tiny["experts"]),
            "--param",
            "density=0.5",
            "--param",
            "granularity=model",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 0
    manifest = json.loads((tmp_path / "m" / "resm_manifest.json").read_text())
    assert manifest["params"]["density"] == 0.5 and manifest["params"]["granularity"] == "model"
    assert "merged 3 experts with ties" in capsys.readouterr().out


def test_merge_from_recipe_with_flag_overrides(tiny, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "base": str(tiny["base"]),
                "method": "resm",
                "out": str(tmp_path / "from_recipe"),
                "experts": [{"path": str(tiny["experts"][0]), "weight": 2.0}, str(tiny["experts"][1])],
                "params": {"rank_rule": "energy", "outlier_m": float("inf")},
                "seed": 4,
                "out_dtype": "bfloat16",
            }
        )
    )
    assert main(["-q", "merge", str(recipe), "--param", "energy_eta=0.5"]) == 0
    manifest = json.loads((tmp_path / "from_recipe" / "resm_manifest.json").read_text())
    assert manifest["params"]["weights"] == [2.0, 1.0]
    assert manifest["params"]["energy_eta"] == 0.5 and manifest["params"]["rank_rule"] == "energy"
    assert manifest["seed"] == 4 and manifest["out_dtype"] == "torch.bfloat16"


@pytest.mark.parametrize(
    "recipe,message",
    [
        ({"method": "ties", "experts": ["x"], "out": "o"}, "base is required \\(in the recipe or as --base\\)"),
        ({"base": "b", "method": "ties", "experts": ["x"], "sed": 1}, "'sed' was unexpected"),
        ({"base": "b", "method": "ties", "experts": [], "out": "o"}, "experts: \\[\\] should be non-empty"),
        ({"base": "b", "method": "ties", "experts": ["x"], "device": "gpu"}, "device: 'gpu' does not match"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, capsys, recipe, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(path)]) == 2
    err = capsys.readouterr().err
    assert "resm merge: error:" in err and "bad.yaml" in err
    assert __import__("re").search(message, err), err


def test_unknown_method_and_parameter_errors(tiny, tmp_path, capsys):
    args = ["merge", "--base", str(tiny["base"]), "--experts", str(tiny["experts"][0]), "--out", str(tmp_path / "o")]
    assert main([*args, "--method", "tiez"]) == 2
    assert "unknown merge method 'tiez'" in capsys.readouterr().err
    assert main([*args, "--method", "ties", "--param", "density=2"]) == 2
    assert "ties: parameter density: 2.0 is outside (0, 1]" in capsys.readouterr().err
    assert main([*args[:-2], "--method", "ties"]) == 2
    assert "out is required" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_extract_conflicts_and_methods_commands(tiny, tmp_path, capsys):
    import pandas as pd
    import torch

    for i, e in enumerate(tiny["experts"][:2]):
        assert (
            main(
                [
                    "-q",
                    "extract",
                    "--base",
                    str(tiny["base"]),
                    "--expert",
                    str(e),
                    "--out",
                    str(tmp_path / f"tv{i}"),
                    "--dtype",
                    "bf16",
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "-q",
                "conflicts",
                str(tmp_path / "tv0"),
                str(tmp_path / "tv1"),
                "--out",
                str(tmp_path / "c"),
                "--names",
                "help",
                "honest",
            ]
        )
        == 0
    )
    capsys.readouterr()
    tv = [load_dir(tmp_path / f"tv{i}") for i in range(2)]
    assert next(iter(tv[0].values())).dtype == torch.bfloat16
    a, b = (torch.cat([t[k].float().flatten() for k in sorted(t)]) for t in tv)
    summary = pd.read_csv(tmp_path / "c" / SUMMARY_TABLE)
    assert summary[["task_a", "task_b"]].values.tolist() == [["help", "honest"]]
    assert summary["cosine"].iloc[0] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(a, b, dim=0)), abs=1e-4
    )
    assert main(["methods", "ties"]) == 0
    shown = capsys.readouterr().out
    assert "density = 0.2  (0, 1]" in shown and "granularity = 'tensor'  {tensor, model}" in shown


def test_demo_runs_every_method(tmp_path, capsys):
    import pandas as pd

    from resm_core.merge.catalogue import all_methods

    assert main(["-q", "demo", "--out", str(tmp_path), "--shape", "tiny"]) == 0
    table = pd.read_csv(tmp_path / "tiny" / "demo_table.csv")
    assert sorted(table["method"]) == sorted(all_methods())
    kept = table.filter(like="kept_")
    assert kept.shape[1] == 3 and kept.notna().all().all()
    # linear averages three experts: each keeps a third of itself plus its share of the others' overlap
    assert ((kept.loc[table["method"] == "linear"] > 0.3) & (kept.loc[table["method"] == "linear"] < 0.7)).all().all()


def test_data_and_train_commands_end_to_end(assets_root, tiny_llm, tmp_path, capsys):
    """The CLI chain a workflow rule runs: build two dims, mix them, train on the mixture."""
    for dim in ("helpfulness", "honesty"):
        assert (
            main(
                [
                    "-q",
                    "data",
                    "build",
                    "--dim",
                    dim,
                    "--out",
                    str(tmp_path / dim),
                    "--max-train",
                    "12",
                    "--max-val",
                    "4",
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "-q",
                "data",
                "mix",
                "--strategy",
                "ratio",
                "--ratios",
                "helpfulness=2,honesty=1",
                "--inputs",
                f"helpfulness={tmp_path / 'helpfulness'}",
                f"honesty={tmp_path / 'honesty'}",
                "--out",
                str(tmp_path / "mix"),
            ]
        )
        == 0
    )
    assert "{'helpfulness': 16, 'honesty': 8}" in capsys.readouterr().out
    assert (
        main(
            [
                "-q",
                "train",
                "--base",
                str(tiny_llm),
                "--data",
                str(tmp_path / "mix"),
                "--out",
                str(tmp_path / "model"),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--max-length",
                "384",  # the embedded rows carry instructions and BBQ contexts: long for a 384-token vocabulary
                "--adapter",
                "lora",
                "--lora-targets",
                "q_proj,v_proj",
                "--trainer-arg",
                "max_grad_norm=0.5",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "model" / "resm_manifest.json").read_text())
    assert manifest["request"]["lora_targets"] == ["q_proj", "v_proj"] and manifest["steps"] == 2
    assert manifest["request"]["extra"] == {"max_grad_norm": 0.5}
    assert "sft/lora: 2 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["data", "build", "--dim", "honesty", "--source", "hh_rlhf", "--out", "x"], "unknown source 'hh_rlhf'"),
        (["data", "build", "--dim", "kindness", "--out", "x"], "dim: 'kindness' is not one of"),
        (["data", "build", "--dim", "honesty", "--source", "advbench", "--out", "x"], "advbench holds harmlessness"),
        (
            ["data", "mix", "--strategy", "best", "--inputs", "honesty=a", "helpfulness=b", "--out", "x"],
            "strategy: 'best' is not one of",
        ),
        (
            [
                "data",
                "mix",
                "--strategy",
                "uniform",
                "--inputs",
                "honesty=a",
                "helpfulness=b",
                "--judge",
                "oracle",
                "--out",
                "x",
            ],
            "judge: cannot read 'oracle'",
        ),
        (["base", "prepare", "llama-7b", "--out", "x"], "unknown packaged base 'llama-7b'"),
        (["train", "--base", "nowhere", "--data", "d", "--out", "x"], "nowhere: not a Hugging Face model directory"),
        (["assets", "fetch", "weights"], "unknown asset 'weights'"),
    ],
)
def test_data_train_errors_are_one_line(argv, message, tmp_path, capsys, monkeypatch, assets_root):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESM_CACHE", str(assets_root.resolve()))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "x").exists()


def test_the_gpu_check_says_when_there_is_no_gpu():
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run benchmarks/gpu_check.sh itself")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(
        ["bash", str(script)], env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert done.returncode == 2 and "no CUDA device visible" in done.stderr and "Traceback" not in done.stderr


def test_every_argument_has_help_and_global_flags_go_anywhere(capsys):
    """Every flag and positional of every (sub)command says what it is; -q and -v work before or after the
    subcommand; --version answers; --help ends with examples."""
    import argparse

    import resm_core
    from resm_core.cli import _commands, build_parser, main

    parser = build_parser()
    for name, command in [("resm", parser), *_commands(parser)]:
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction | argparse._VersionAction):
                continue
            assert action.help, f"resm {name}: {action.option_strings or action.dest} has no help text"
    assert parser.parse_args(["methods", "-q"]).quiet and parser.parse_args(["-q", "methods"]).quiet
    assert not getattr(parser.parse_args(["methods"]), "quiet", False)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert resm_core.__version__ in capsys.readouterr().out
    assert "examples:" in parser.format_help() and "examples:" in dict(_commands(parser))["merge"].format_help()


def test_merging_needs_none_of_the_workflow_stack(tmp_path):
    """`pip install resm-3h` (no extras) merges: the merge engine and the CLI import nothing from the workflow
    stack (Snakemake, TRL, datasets, scikit-learn, matplotlib, lm-eval, gguf, accelerate), which the pyproject
    puts in the `workflow` extra."""
    import tomllib

    blocked = ["snakemake", "trl", "datasets", "sklearn", "matplotlib", "lm_eval", "gguf", "joblib", "accelerate"]
    core = " ".join(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert not any(name.replace("_", "-").replace("sklearn", "scikit-learn") in core for name in blocked)
    script = (
        "import sys, importlib.abc\n"
        f"BLOCKED = {blocked!r}\n"
        "class Blocker(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed')\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from resm_core.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["-q", "demo", "--shape", "tiny", "--methods", "ties", "resm", "--out", str(tmp_path / "demo")]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo" / "tiny" / "demo_table.csv").is_file()


def test_the_references_are_generated_from_the_declarations():
    """docs/configuration.md and docs/cli.md are filled at build time from the schema, the request dataclasses and
    the parser: every top-level config key, every training option with its default, every command appears."""
    import dataclasses

    from resm_core.cli import _commands, build_parser
    from resm_core.reference import cli_reference, config_reference
    from resm_core.train.request import TrainRequest
    from resm_core.validation import load_schema

    config = config_reference()
    for key in load_schema("config.schema.yaml")["properties"]:
        assert f"## `{key}`" in config
    for field in dataclasses.fields(TrainRequest):
        if field.metadata.get("config", True):
            assert f"`training.{field.name}`" in config, field.name
    assert "| `training.steps` | integer | `" in config
    cli = cli_reference()
    for _, command in _commands(build_parser()):
        assert f"## `{command.prog}`" in cli
