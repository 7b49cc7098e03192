"""Bad inputs, as a hostile or unlucky user gives them, through the CLI: each exits non-zero with one line on
stderr that names the file, key or tensor, prints no traceback, and leaves nothing that looks finished."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from resm_core.cli import main
from resm_core.errors import NumericError
from resm_core.synthetic import SHAPES, write_base, write_experts


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run `resm ARGV`; it must exit 2 (a named error) with one line naming every needle."""
    capsys.readouterr()
    try:
        code = main(["-q", *map(str, argv)])
    except SystemExit as exc:  # argparse's own one-line errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nothing_finished(folder: Path, name: str) -> None:
    assert not (folder / name).exists()
    assert not list(folder.glob(f".{name}.tmp-*")), list(folder.iterdir())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    base = write_base(root / "base", SHAPES["tiny"], seed=2)
    experts = write_experts(base, [root / "e1", root / "e2"], seed=2)
    return {"root": root, "base": base, "experts": experts}


# ---------------------------------------------------------------- outputs checked before they are published


def test_a_merge_that_overflows_the_output_dtype_is_not_published(models, tmp_path, capsys):
    argv = ["merge", "--method", "task_arithmetic", "--base", models["base"], "--experts", *models["experts"]]
    fails(
        capsys,
        [*argv, "--param", "scale=1e8", "--out-dtype", "float16", "--out", tmp_path / "out"],
        "overflows float16",
    )
    nothing_finished(tmp_path, "out")
    fails(capsys, [*argv, "--param", "scale=inf", "--out", tmp_path / "out"], "holds NaN or Inf")
    nothing_finished(tmp_path, "out")


def test_trained_weights_that_diverged_are_not_published(tiny_llm, built, tmp_path):
    from transformers import TrainerCallback

    from resm_core.train.trainer import TrainRequest, train

    class Diverge(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    req = TrainRequest(base=tiny_llm, data=built["helpfulness"], out=tmp_path / "out", steps=1, progress=False)
    with pytest.raises(
        NumericError, match=r"training .*out: \d+ tensor\(s\) hold NaN or Inf, first \S+; nothing was written"
    ):
        train(req, callbacks=[Diverge()])
    nothing_finished(tmp_path, "out")


# ---------------------------------------------------------------- data


def local_source(path: Path) -> str:
    return json.dumps({"kind": "local", "path": str(path), "dim": "honesty"})


@pytest.mark.parametrize(
    "record,needle",
    [
        ({"prompt": None, "chosen": "yes"}, "field 'prompt' is null, not text"),
        ({"prompt": "Is it?", "chosen": 42}, "field 'chosen' is int 42, not text"),
        ({"prompt": "Is it?", "chosen": "yes", "rejected": ["no"]}, "field 'rejected' is list"),
    ],
)
def test_a_local_source_with_null_or_numbers_is_refused(tmp_path, capsys, assets_root, record, needle):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"prompt": "Fine?", "chosen": "Fine."}) + "\n" + json.dumps(record) + "\n")
    argv = ["data", "build", "--dim", "honesty", "--source", local_source(data), "--cache", assets_root]
    fails(capsys, [*argv, "--no-base-answers", "--out", tmp_path / "out"], f"{data}:2", needle)
    nothing_finished(tmp_path, "out")


def test_records_must_be_objects_and_a_whole_array_file_is_read(tmp_path, capsys):
    from resm_core.data.schema import read_jsonl

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "a", "chosen": "b"}\n["a", "b"]\n')
    argv = ["data", "build", "--dim", "honesty", "--source", local_source(rows), "--no-base-answers"]
    fails(capsys, [*argv, "--out", tmp_path / "out"], f"{rows}:2: expected a JSON object", "got list")
    whole = tmp_path / "rows.json"
    whole.write_text(json.dumps([{"prompt": "a", "chosen": "b"}, {"prompt": "c", "chosen": "d"}], indent=2))
    assert read_jsonl(whole) == [{"prompt": "a", "chosen": "b"}, {"prompt": "c", "chosen": "d"}]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--source", "{kind: local, path: ["], "is not a source name or a YAML mapping"),
        (["--source", '{"kind": "local", "path": "x.jsonl", "eval_onyl": true}'], "'eval_onyl' is not a key"),
        (["--source", '{"kind": "local", "path": "x.jsonl", "eval_only": "no"}'], "eval_only must be true or false"),
        (["--max-train", "-5"], "data.max_train: must be at least 1 (got -5)"),
    ],
)
def test_bad_build_options_are_named(tmp_path, capsys, extra, needle):
    fails(capsys, ["data", "build", "--dim", "honesty", *extra, "--out", tmp_path / "out"], needle)
    nothing_finished(tmp_path, "out")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--strategy", "uniform", "--budget", "0"], "mixtures.budget: must be at least 1 (got 0)"),
        (["--strategy", "ratio", "--ratios", "helpfulness=inf,honesty=1"], "ratios must be numbers >= 0"),
        (["--strategy", "ratio", "--ratios", "helpfulness=nan,honesty=1"], "ratios must be numbers >= 0"),
        (["--strategy", "ratio", "--ratios", "helpfulness=0,honesty=0"], "at least one positive"),
        (["--strategy", "uniform", "--ratios", "helpfulness=2,honesty=1"], "mixture uniform: takes no ratios"),
    ],
)
def test_an_empty_or_misweighted_mixture_is_an_error(built, tmp_path, capsys, extra, needle):
    inputs = ["--inputs", f"helpfulness={built['helpfulness']}", f"honesty={built['honesty']}"]
    fails(capsys, ["data", "mix", *extra, *inputs, "--out", tmp_path / "mix"], needle)
    nothing_finished(tmp_path, "mix")


def test_a_missing_mixture_input_is_named(built, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    inputs = ["--inputs", f"helpfulness={built['helpfulness']}", f"honesty={missing}"]
    fails(capsys, ["data", "mix", "--strategy", "uniform", *inputs, "--out", tmp_path / "mix"], str(missing))
    nothing_finished(tmp_path, "mix")


# ---------------------------------------------------------------- one-line errors everywhere


def test_an_unwritable_output_is_one_line(models, tmp_path, capsys):
    argv = ["merge", "--method", "linear", "--base", models["base"], "--experts", *models["experts"]]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    fails(capsys, [*argv, "--out", a_file / "out"], str(a_file), "Not a directory")
    if os.geteuid() != 0:  # root writes anywhere: the read-only case needs a plain user
        parent = tmp_path / "ro"
        parent.mkdir(mode=0o500)
        try:
            fails(capsys, [*argv, "--out", parent / "out"], str(parent), "Permission denied")
        finally:
            parent.chmod(0o700)


def test_a_corrupt_adapter_config_is_named(models, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8, "lora_alpha":')
    save_file({}, str(adapter / "adapter_model.safetensors"))
    argv = ["merge", "--method", "linear", "--base", models["base"], "--experts", models["experts"][0], adapter]
    fails(capsys, [*argv, "--out", tmp_path / "out"], str(adapter / "adapter_config.json"))
    nothing_finished(tmp_path, "out")


def test_an_expert_without_config_or_tokenizer_is_refused(models, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(models["experts"][1] / "model.safetensors", bare / "model.safetensors")
    argv = ["merge", "--method", "linear", "--base", models["base"], "--experts", models["experts"][0], bare]
    fails(capsys, [*argv, "--out", tmp_path / "out"], str(bare), "config.json")
    nothing_finished(tmp_path, "out")


def test_an_unknown_trainer_arg_is_named(tiny_llm, built, tmp_path, capsys):
    argv = ["train", "--base", tiny_llm, "--data", built["honesty"], "--steps", "1", "--trainer-arg", "warmup_stepz=3"]
    fails(capsys, [*argv, "--out", tmp_path / "out"], "warmup_stepz")
    nothing_finished(tmp_path, "out")


def test_a_bad_item_count_is_named(tiny_llm, built, tmp_path, capsys):
    argv = ["evaluate", "--model", tiny_llm, "--data", built["honesty"].parent, "--n", "qa_mc=abc"]
    fails(capsys, [*argv, "--out", tmp_path / "ev"], "qa_mc", "abc")
    nothing_finished(tmp_path, "ev")


def test_a_truncated_judge_file_is_named(tiny_llm, built, judges_dir, tmp_path, capsys):
    judges = tmp_path / "judges"
    shutil.copytree(judges_dir, judges)
    broken = judges / "compliance_judge.json"  # the judge harmful_refusal scores with
    broken.write_text(broken.read_text()[:100])
    argv = ["evaluate", "--model", tiny_llm, "--data", built["honesty"].parent, "--judges", judges]
    fails(
        capsys,
        [*argv, "--benchmarks", "harmful_refusal", "--n", "harmful_refusal=2", "--out", tmp_path / "ev"],
        str(broken),
    )
    nothing_finished(tmp_path, "ev")


@pytest.mark.parametrize("text", ["", "{not json", "[]"])
def test_a_corrupt_summary_is_named(tmp_path, capsys, text):
    summary = tmp_path / "eval" / "base" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(text)
    fails(capsys, ["report", "--arms", "base", "--results", tmp_path, "--out", tmp_path / "report"], str(summary))
    nothing_finished(tmp_path, "report")


# ---------------------------------------------------------------- outputs do not clobber each other or their inputs


def merge_argv(models, *experts) -> list:
    return ["merge", "--method", "linear", "--base", models["base"], "--experts", *(experts or models["experts"])]


@pytest.mark.parametrize("out", ["expert", "parent"])
def test_an_output_that_is_or_holds_an_input_is_refused_even_with_force(models, tmp_path, capsys, out):
    root = tmp_path / "models"
    shutil.copytree(models["root"], root)
    target = root / "e1" if out == "expert" else root
    argv = ["merge", "--method", "linear", "--base", root / "base", "--experts", root / "e1", root / "e2"]
    fails(capsys, [*argv, "--out", target, "--force"], f"{target}: the output is (or holds) the input")
    assert (root / "e1" / "model.safetensors").is_file() and (root / "base" / "model.safetensors").is_file()


def test_a_live_writer_of_the_same_output_is_refused_and_a_killed_ones_staging_is_cleared(models, tmp_path, capsys):
    import socket
    import subprocess

    host = socket.gethostname()
    live = subprocess.Popen(["sleep", "60"])
    try:
        staged = tmp_path / f".out.tmp-{host}-{live.pid}-0123abcd"
        staged.mkdir()
        fails(capsys, [*merge_argv(models), "--out", tmp_path / "out"], f"process {live.pid} is writing this output")
        assert staged.is_dir() and not (tmp_path / "out").exists()
    finally:
        live.kill()
        live.wait()
    (staged / "shard-00000.safetensors").write_bytes(b"partial")  # a killed run's half-written shard
    assert main(["-q", *map(str, merge_argv(models)), "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the stale staging is gone


def test_an_output_that_appears_while_writing_is_not_replaced(tmp_path):
    from resm_core.checkpoint.atomic import AtomicDirectory
    from resm_core.errors import CheckpointError

    out = tmp_path / "out"
    with (
        pytest.raises(CheckpointError, match="appeared while this run was writing it"),
        AtomicDirectory(out) as staging,
    ):
        (staging / "mine.txt").write_text("mine")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")  # another run published first
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_over_a_file_leaves_nothing_behind(models, tmp_path):
    out = tmp_path / "out"
    out.write_text("a file where the model goes")
    assert main(["-q", *map(str, merge_argv(models)), "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_task_vector_onto_another_base_is_refused_unless_allowed(models, tmp_path, capsys):
    other = write_base(tmp_path / "other_base", SHAPES["tiny"], seed=3)  # same shapes, other weights
    tv = tmp_path / "tv"
    assert (
        main(["-q", "extract", "--base", str(models["base"]), "--expert", str(models["experts"][0]), "--out", str(tv)])
        == 0
    )
    argv = ["merge", "--method", "task_arithmetic", "--base", other, "--experts", tv, models["experts"][1]]
    fails(capsys, [*argv, "--out", tmp_path / "out"], f"{tv}: extracted from the base", "--allow-other-base")
    nothing_finished(tmp_path, "out")
    assert main(["-q", *map(str, argv), "--out", str(tmp_path / "out"), "--allow-other-base"]) == 0


def test_a_summary_without_scores_is_named(tmp_path, capsys):
    summary = tmp_path / "eval" / "base" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"arm": "base"}))
    fails(
        capsys,
        ["report", "--arms", "base", "--results", tmp_path, "--out", tmp_path / "report"],
        str(summary),
        "'dims'",
    )


# ---------------------------------------------------------------- code from the asset cache


def test_a_tampered_pickle_in_the_asset_cache_is_not_loaded(assets_root, tmp_path):
    import pickle

    from resm_core.assets import asset_dir
    from resm_core.errors import AssetError
    from resm_core.judges.profanity import offensive_probability

    cache = tmp_path / "cache"
    shutil.copytree(asset_dir("profanity", assets_root), asset_dir("profanity", cache))
    assert offensive_probability(["you are kind"], root=cache)[0] < 0.5  # the verified copy loads
    ran = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    tampered = tmp_path / "tampered"
    shutil.copytree(asset_dir("profanity", assets_root), asset_dir("profanity", tampered))
    vectorizer = asset_dir("profanity", tampered) / "profanity_check" / "data" / "vectorizer.joblib"
    vectorizer.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(AssetError, match=r"vectorizer\.joblib: SHA-256 \w+ differs from the pinned"):
        offensive_probability(["you are kind"], root=tampered)
    assert not ran.exists()


# ---------------------------------------------------------------- one pickle policy


@pytest.fixture(scope="module")
def pickled_llm(tiny_llm, tmp_path_factory) -> Path:
    """The tiny chat model with its weights as pytorch_model.bin only (as some released experts ship)."""
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(tiny_llm, out, ignore=shutil.ignore_patterns("*.safetensors*"))
    torch.save(load_file(str(tiny_llm / "model.safetensors")), out / "pytorch_model.bin")
    return out


def test_every_model_load_follows_the_pickle_policy(pickled_llm, built, tmp_path, capsys):
    from resm_core.generation import cached_generate

    refused = f"{pickled_llm / 'pytorch_model.bin'}: pickle weights are refused"
    fails(capsys, ["train", "--base", pickled_llm, "--data", built["honesty"], "--out", tmp_path / "t"], refused)
    nothing_finished(tmp_path, "t")
    evaluate = ["evaluate", "--model", pickled_llm, "--data", built["honesty"].parent, "--benchmarks", "qa_mc"]
    fails(capsys, [*evaluate, "--n", "qa_mc=2", "--out", tmp_path / "ev"], refused, "--allow-pickle")
    nothing_finished(tmp_path, "ev")
    with pytest.raises(Exception, match="pickle weights are refused"):  # data build's base answers
        cached_generate(pickled_llm, ["Hello?"], tmp_path / "gen", max_new_tokens=2, progress=False)
    assert main(["-q", *map(str, evaluate), "--n", "qa_mc=2", "--out", str(tmp_path / "ev"), "--allow-pickle"]) == 0
    assert (tmp_path / "ev" / "summary.json").is_file()


# ---------------------------------------------------------------- models from elsewhere: read, never followed


@pytest.fixture
def expert_copy(tiny_llm, tmp_path) -> Path:
    """A copy of the tiny model to spoil."""
    src = tmp_path / "expert"
    shutil.copytree(tiny_llm, src)
    return src


def adopt_argv(src, base, out) -> list:
    return ["model", "adopt", "--source", src, "--base", base, "--out", out]


def test_a_link_inside_an_adopted_model_or_adapter_is_refused(tiny_llm, expert_copy, tmp_path, capsys):
    import peft
    import transformers

    secret = tmp_path / "secret.txt"
    secret.write_text("token=hunter2")
    (expert_copy / "notes.txt").symlink_to(secret)
    line = fails(capsys, adopt_argv(expert_copy, tiny_llm, tmp_path / "out"), str(expert_copy / "notes.txt"))
    assert "symbolic link" in line
    nothing_finished(tmp_path, "out")

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llm)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    (tmp_path / "private").mkdir()
    (tmp_path / "adapter" / "extra").symlink_to(tmp_path / "private", target_is_directory=True)
    fails(capsys, adopt_argv(tmp_path / "adapter", tiny_llm, tmp_path / "out"), str(tmp_path / "adapter" / "extra"))
    nothing_finished(tmp_path, "out")


def test_an_adopted_model_owns_its_bytes(tiny_llm, expert_copy, tmp_path):
    import hashlib

    assert main(["-q", *map(str, adopt_argv(expert_copy, tiny_llm, tmp_path / "out"))]) == 0
    adopted = tmp_path / "out" / "model.safetensors"
    before = hashlib.sha256(adopted.read_bytes()).hexdigest()
    with open(expert_copy / "model.safetensors", "r+b") as f:  # the source rewritten in place
        f.seek(-64, os.SEEK_END)
        f.write(b"\x7f" * 64)
    assert hashlib.sha256(adopted.read_bytes()).hexdigest() == before
    assert adopted.stat().st_nlink == 1


def test_code_is_not_carried_and_a_config_must_name_its_architecture(tiny_llm, expert_copy, tmp_path, capsys):
    config_path = expert_copy / "config.json"
    config = json.loads(config_path.read_text())
    (expert_copy / "modeling_evil.py").write_text("import os; os.system('touch PWNED')\n")
    config_path.write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling_evil.Model"}}))
    assert main(["-q", *map(str, adopt_argv(expert_copy, tiny_llm, tmp_path / "out"))]) == 0
    assert not (tmp_path / "out" / "modeling_evil.py").exists()
    assert json.loads((tmp_path / "out" / "resm_manifest.json").read_text())["not_carried"] == ["modeling_evil.py"]

    for spoilt, needle in (({"model_type": None}, "model_type"), ({"vocab_size": "300"}, "vocab_size")):
        config_path.write_text(json.dumps({**config, **spoilt}))
        fails(capsys, adopt_argv(expert_copy, tiny_llm, tmp_path / "bad"), str(config_path), needle)
        nothing_finished(tmp_path, "bad")


def test_a_lora_adapter_of_another_base_is_refused_unless_allowed(tiny_llm, tmp_path, capsys):
    import peft
    import transformers
    from conftest import tiny_corpus

    from resm_core.base_models import tiny_base

    other = tiny_base(tmp_path / "other", tiny_corpus(), seed=1, vocab_size=300, hidden=32, layers=2, heads=4,
                      kv_heads=2, intermediate=64, dtype="float32")  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llm)  # the adapter declares tiny_llm
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    assert json.loads(config.read_text())["base_model_name_or_path"] == str(tiny_llm)
    fails(capsys, adopt_argv(tmp_path / "adapter", other, tmp_path / "out"), str(config), "--allow-other-base")
    nothing_finished(tmp_path, "out")
    merge = ["merge", "--method", "linear", "--base", other, "--experts", tmp_path / "adapter", tiny_llm]
    fails(capsys, [*merge, "--out", tmp_path / "merged"], str(config), "--allow-other-base")
    argv = [*adopt_argv(tmp_path / "adapter", other, tmp_path / "out"), "--allow-other-base"]
    assert main(["-q", *map(str, argv)]) == 0
    assert main(["-q", *map(str, adopt_argv(tmp_path / "adapter", tiny_llm, tmp_path / "same"))]) == 0


def test_an_expert_listed_twice_is_refused(models, tmp_path, capsys):
    e1 = models["experts"][0]
    argv = ["merge", "--method", "linear", "--base", models["base"], "--experts", e1, models["experts"][1]]
    fails(capsys, [*argv, Path(str(e1) + "/"), "--out", tmp_path / "out"], "listed twice", str(e1))
    nothing_finished(tmp_path, "out")


def test_pickle_weights_that_hold_more_than_tensors_are_one_line(models, tmp_path, capsys):
    from fractions import Fraction

    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(models["experts"][0], pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save({**state, "smuggled": Fraction(1, 2)}, pickled / "pytorch_model.bin")  # not an allowed global
    argv = ["merge", "--method", "linear", "--base", models["base"], "--experts", pickled, models["experts"][1]]
    line = fails(capsys, [*argv, "--allow-pickle", "--out", tmp_path / "out"], str(pickled / "pytorch_model.bin"))
    assert "weights_only=True" in line and "Fraction" in line
    nothing_finished(tmp_path, "out")


def test_malformed_mergekit_recipes_are_one_line(models, tmp_path, capsys):
    base, (e1, e2) = models["base"], models["experts"]
    cases = {
        "models.0.parameters.weight: expected a finite number, got 'abc'": {"weight": "abc"},
        "models.0.parameters.weight: expected a finite number, got None": {"weight": None},
        "models.0.parameters: expected a mapping": [1],
        "weights that sum to zero": {"weight": 0},
    }
    for needle, params in cases.items():
        recipe = {
            "merge_method": "task_arithmetic",
            "base_model": str(base),
            "parameters": {"normalize": True},
            "models": [{"model": str(e1), "parameters": params}, {"model": str(e2), "parameters": {"weight": 0}}],
        }
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        fails(capsys, ["merge", path, "--out", tmp_path / "out"], str(path), needle)
    path.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(base), "parameters": [1, 2]}))
    fails(capsys, ["merge", path, "--out", tmp_path / "out"], "parameters: expected a mapping")
    nothing_finished(tmp_path, "out")


ALIAS_BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh")
)


def test_yaml_aliases_that_expand_without_bound_are_refused(models, tmp_path, capsys):
    from resm_core.errors import ConfigError
    from resm_core.workflow_config import check_config

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)  # 9**8 values once expanded, a few hundred bytes on disk
    fails(capsys, ["merge", path, "--out", tmp_path / "out"], str(path), "aliases")
    fails(
        capsys,
        ["evaluate", "--model", models["base"], "--data", tmp_path, "--config", path, "--out", tmp_path / "ev"],
        "aliases",
    )
    with pytest.raises(ConfigError, match="aliases"):  # a workflow config, as Snakemake hands it over
        check_config(yaml.safe_load(ALIAS_BOMB), "bomb.yaml")


@pytest.mark.parametrize(
    "text,needle",
    [
        ("benchmarks: 5", "evaluation.benchmarks: expected a mapping of benchmark -> options, got 5"),
        ("benchmarks: {qa_mc: 5}", "evaluation.benchmarks.qa_mc: expected a mapping of options, got 5"),
        ("benchmarks: {qa_mc: {nn: 3}}", "evaluation.benchmarks.qa_mc.nn: not an option of qa_mc"),
    ],
)
def test_malformed_evaluation_configs_are_one_line(models, tmp_path, capsys, text, needle):
    path = tmp_path / "eval.yaml"
    path.write_text(text)
    fails(
        capsys,
        ["evaluate", "--model", models["base"], "--data", tmp_path, "--config", path, "--out", tmp_path / "ev"],
        needle,
    )
    options = json.dumps(yaml.safe_load(text)["benchmarks"])
    fails(
        capsys,
        ["evaluate", "--model", models["base"], "--data", tmp_path, "--options", options, "--out", tmp_path / "ev"],
    )
    nothing_finished(tmp_path, "ev")


@pytest.mark.parametrize(
    "config,needle",
    [
        ({"alpha_pattern": {"(.*.*.*)*x": 4}}, "repeats a repeat"),  # hangs Python's re (and PEFT) on a module name
        ({"alpha_pattern": {".*.*.*.*.*x": 4}}, "has 5 repeats"),
        ({"rank_pattern": {"q_proj": "four"}}, "rank_pattern must map patterns to numbers"),
        ({"lora_alpha": "abc"}, "lora_alpha must be a number, got 'abc'"),
    ],
)
def test_an_adapter_config_that_would_hang_or_crash_is_one_line(models, tmp_path, capsys, config, needle):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, **config}))
    save_file({}, str(adapter / "adapter_model.safetensors"))
    argv = ["merge", "--method", "linear", "--base", models["base"], "--experts", models["experts"][0], adapter]
    fails(capsys, [*argv, "--out", tmp_path / "out"], str(adapter / "adapter_config.json"), needle)
    fails(capsys, adopt_argv(adapter, models["base"], tmp_path / "out"), needle)
    nothing_finished(tmp_path, "out")


def test_a_chat_template_that_raises_is_one_line(tiny_llm, built, expert_copy, tmp_path, capsys):
    (expert_copy / "chat_template.jinja").write_text("{{ raise_exception('only system turns, please') }}")
    argv = ["evaluate", "--model", expert_copy, "--data", built["honesty"].parent, "--benchmarks", "qa_mc"]
    line = fails(capsys, [*argv, "--n", "qa_mc=2", "--out", tmp_path / "ev"], "chat template", "only system turns")
    assert str(expert_copy) in line
    nothing_finished(tmp_path, "ev")


def test_names_in_a_card_are_text_not_markdown(tiny_llm, tmp_path):
    hostile = tmp_path / "ev|il <img src=x onerror=alert(1)>\n# [click](javascript:x)"  # a directory name
    shutil.copytree(tiny_llm, hostile)
    assert main(["-q", *map(str, adopt_argv(hostile, tiny_llm, tmp_path / "out"))]) == 0
    body = (tmp_path / "out" / "README.md").read_text().split("---\n", 2)[2]
    assert "<img" not in body and "](javascript" not in body and "\n# [" not in body
    assert "# ev\\|il &lt;img src=x onerror=alert\\(1\\)&gt; \\# \\[click\\]\\(javascript:x\\)\n" in body


def test_a_hub_origin_is_what_resm_can_verify_not_what_a_directory_claims(tiny_llm, expert_copy, tmp_path):
    import yaml as _yaml

    claim = {"repo": "famous-lab/famous-model", "revision": None, "commit": "a" * 40}
    (expert_copy / "resm_source.json").write_text(json.dumps(claim))
    assert main(["-q", *map(str, adopt_argv(expert_copy, tiny_llm, tmp_path / "out"))]) == 0
    manifest = json.loads((tmp_path / "out" / "resm_manifest.json").read_text())
    assert "hub" not in manifest["inputs"]["source"][0]  # no cache holds that commit: a claim, not an origin
    card = (tmp_path / "out" / "README.md").read_text()
    front = _yaml.safe_load(card.split("---\n")[1])
    assert "famous" not in card and "base_model" not in front


def test_a_link_inside_a_local_dataset_directory_is_refused(assets_root, tmp_path, capsys):
    private = tmp_path / "private.jsonl"
    private.write_text(json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: my password is hunter2", "rejected": "x"}))
    (tmp_path / "hh" / "helpful-base").mkdir(parents=True)
    (tmp_path / "hh" / "helpful-base" / "train.jsonl").symlink_to(private)
    spec = {"kind": "hub", "preset": "hh_rlhf_helpful", "path": str(tmp_path / "hh")}
    argv = ["data", "build", "--dim", "helpfulness", "--source", json.dumps(spec), "--cache", assets_root]
    line = fails(capsys, [*argv, "--out", tmp_path / "built"], str(tmp_path / "hh" / "helpful-base" / "train.jsonl"))
    assert "symbolic link" in line
    nothing_finished(tmp_path, "built")
