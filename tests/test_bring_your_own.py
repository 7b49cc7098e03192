"""Experts from anywhere: hub ids resolved through a local huggingface_hub cache (offline), model cards and
reproducing recipes in merged outputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_dir

transformers = pytest.importorskip("transformers")


def fake_commit(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def put_in_cache(cache: Path, repo: str, model_dir: Path) -> str:
    """`model_dir` as huggingface_hub stores a download: blobs, a snapshot of symlinks, refs/main."""
    commit = fake_commit(repo)
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copy(f, blob)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return commit


def tiny_llama(seed: int, noise: float = 0.0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A huggingface_hub cache holding org/base and two experts, and the environment that uses it offline."""
    root = tmp_path_factory.mktemp("hub")
    cache = root / "cache"
    commits = {}
    for repo, model in (("org/base", tiny_llama(0)), ("org/e0", tiny_llama(0, 0.01)), ("org/e1", tiny_llama(0, 0.02))):
        local = root / "models" / repo.split("/")[1]
        model.save_pretrained(local)
        commits[repo] = put_in_cache(cache, repo, local)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return {"root": root, "cache": cache, "commits": commits, "env": env}


def resm(env: dict, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resm_core.cli", "-q", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True
    )


def test_hub_ids_merge_offline_from_the_cache_and_the_manifest_names_the_commit(hub, tmp_path):
    out = tmp_path / "merged"
    e1 = f"org/e1@{hub['commits']['org/e1']}"
    done = resm(hub["env"], "merge", "--method", "ties", "--base", "org/base", "--experts", "org/e0", e1, "--out", out)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((out / "resm_manifest.json").read_text())
    assert manifest["inputs"]["base"][0]["hub"] == {"repo": "org/base", "commit": hub["commits"]["org/base"]}
    assert [e["hub"]["repo"] for e in manifest["inputs"]["experts"]] == ["org/e0", "org/e1"]
    missing = resm(
        hub["env"], "merge", "--method", "ties", "--base", "org/base", "--experts", "org/nope", "--out", tmp_path / "x"
    )
    assert missing.returncode == 2 and "org/nope: not a local directory, and the hub did not give it" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_merge_carries_a_card_and_a_recipe_that_reproduces_it(hub, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "merged"
    args = ["--method", "dare_ties", "--param", "density=0.4", "--seed", "3", "--weights", "0.7,0.3"]
    done = resm(hub["env"], "merge", *args, "--base", "org/base", "--experts", "org/e0", "org/e1", "--out", out)
    assert done.returncode == 0, done.stderr
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == ["org/base", "org/e0", "org/e1"] and card.data.base_model_relation == "merge"
    assert card.data.library_name == "transformers" and "merge" in card.data.tags
    assert "dare_ties" in card.text and hub["commits"]["org/e1"] in card.text
    recipe = yaml.safe_load((out / "resm_recipe.yaml").read_text())
    assert recipe["base"] == f"org/base@{hub['commits']['org/base']}"
    assert recipe["params"]["density"] == 0.4 and [e["weight"] for e in recipe["experts"]] == [0.7, 0.3]
    again = resm(
        hub["env"], "merge", out / "resm_recipe.yaml", "--out", tmp_path / "again", "--records", tmp_path / "rec"
    )
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
        "README.md", "config.json", "merge_diagnostics.csv", "resm_manifest.json", "resm_recipe.yaml",
    ]  # fmt: skip
    first, second = load_dir(out), load_dir(tmp_path / "again")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_a_merged_output_names_no_machine_path_and_its_recipe_still_finds_local_inputs(tmp_path):
    """Everything written into a merged model (weights' metadata, config, card, recipe, manifest, diagnostics) is
    free of absolute paths, so `hf upload` publishes none: local inputs are named relative to the model. The
    recipe rebuilds the same weights from another working directory; the inputs' shared license is the card's."""
    from huggingface_hub import ModelCard

    models = tmp_path / "models"
    for name, noise in (("base", 0.0), ("e0", 0.01), ("e1", 0.02)):
        tiny_llama(0, noise).save_pretrained(models / name)
        (models / name / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# a tiny model\n")
    out = tmp_path / "results" / "merged"
    args = ["--method", "task_arithmetic", "--base", models / "base", "--experts", models / "e0", models / "e1"]
    records = tmp_path / "kept" / "at" / "another" / "depth"
    done = resm(dict(os.environ), "merge", *args, "--out", out, "--records", records)
    assert done.returncode == 0, done.stderr
    machine = {str(tmp_path), str(tmp_path.resolve()), str(Path.cwd())}
    for path in out.rglob("*"):
        text = path.read_bytes().decode("utf-8", errors="ignore")
        assert not any(m in text for m in machine), f"{path.name} names a machine path"
    manifest = json.loads((out / "resm_manifest.json").read_text())
    assert manifest["inputs"]["experts"][0]["path"] == "../../models/e0"
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.base_model_relation == "merge"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = resm(dict(os.environ), "merge", out / "resm_recipe.yaml", "--out", tmp_path / "again", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    first, second = load_dir(out), load_dir(tmp_path / "again")
    assert all(torch.equal(first[k], second[k]) for k in first)
    # the records' recipe (paths rewritten for where the records are) rebuilds the same weights too
    assert json.loads((records / "resm_manifest.json").read_text())["inputs"]["experts"][0]["path"] == (
        "../../../../models/e0"
    )
    from_records = resm(dict(os.environ), "merge", records / "resm_recipe.yaml", "--out", tmp_path / "third")
    assert from_records.returncode == 0, from_records.stderr
    third = load_dir(tmp_path / "third")
    assert all(torch.equal(first[k], third[k]) for k in first)


def test_evaluate_takes_hub_ids(tiny_llm, built, tmp_path):
    import json

    cache = tmp_path / "cache"
    commit = put_in_cache(cache, "lab/chat", tiny_llm)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    args = ["evaluate", "--model", "lab/chat", "--data", built["honesty"].parent, "--benchmarks", "qa_mc"]
    done = resm(env, *args, "--n", "qa_mc=2", "--out", tmp_path / "ev")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["model_hub"] == {"repo": "lab/chat", "commit": commit}


def test_extract_takes_hub_ids(hub, tmp_path):
    done = resm(hub["env"], "extract", "--base", "org/base", "--expert", "org/e0", "--out", tmp_path / "tv")
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((tmp_path / "tv" / "resm_manifest.json").read_text())
    assert manifest["inputs"]["expert"][0]["hub"]["commit"] == hub["commits"]["org/e0"]


def test_a_trained_model_has_a_card(tiny_llm, built, tmp_path):
    from huggingface_hub import ModelCard

    from resm_core.train.trainer import TrainRequest, train

    train(TrainRequest(base=tiny_llm, data=built["honesty"], out=tmp_path / "expert", steps=1, progress=False))
    card = ModelCard.load(tmp_path / "expert" / "README.md")
    assert card.data.library_name == "transformers" and "sft" in card.data.tags
    assert "steps" in card.text


# ---------------------------------------------------------------- the workflow with experts made elsewhere


def perturbed(base_dir: Path, seed: int) -> dict:
    from safetensors.torch import load_file

    torch.manual_seed(seed)
    return {k: v + 0.02 * torch.randn_like(v) for k, v in load_file(str(base_dir / "model.safetensors")).items()}


def model_dir(base_dir: Path, out: Path, state: dict, shards: int = 1, pickle: bool = False) -> Path:
    """A look-alike of a released expert: the base's config and tokenizer, `state` as safetensors or as
    pytorch_model.bin (as the released Llama-3 experts ship), in `shards` files with an index when several."""
    import json

    from safetensors.torch import save_file

    shutil.copytree(base_dir, out, ignore=shutil.ignore_patterns("*.safetensors", "resm_*", "README.md"))
    stem, ext = ("pytorch_model", "bin") if pickle else ("model", "safetensors")
    if shards == 1:
        torch.save(state, out / f"{stem}.{ext}") if pickle else save_file(state, str(out / f"{stem}.{ext}"))
        return out
    names, weight_map = sorted(state), {}
    for i in range(shards):
        shard = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        part = {k: state[k] for k in names[i::shards]}
        torch.save(part, out / shard) if pickle else save_file(part, str(out / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (out / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


@pytest.mark.workflow
def test_the_grid_adopts_released_hub_local_pickled_and_lora_experts(
    tiny_llm, assets_root, built, judges_dir, tmp_path
):
    import pandas as pd
    import peft
    from workflow_helpers import SNAKEMAKE, copy_workflow, job_counts

    models = tmp_path / "elsewhere"
    helpful = model_dir(tiny_llm, models / "helpful", perturbed(tiny_llm, 1), shards=2, pickle=True)
    honest = model_dir(tiny_llm, models / "honest", perturbed(tiny_llm, 2), shards=3)
    joint = model_dir(tiny_llm, models / "joint", perturbed(tiny_llm, 3))
    cache = tmp_path / "hf_cache"
    commit = put_in_cache(cache, "lab/honest-expert", honest)
    lora = peft.get_peft_model(
        transformers.AutoModelForCausalLM.from_pretrained(tiny_llm),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(models / "harmless_adapter")

    def edit(config):
        config.update(
            base={"kind": "local", "path": str(tiny_llm)},
            allow_pickle=True,
            experts={
                "helpfulness": {"kind": "local", "path": str(helpful)},
                "honesty": {"kind": "hub", "repo": "lab/honest-expert"},
                "harmlessness": {"kind": "lora", "path": str(models / "harmless_adapter")},
            },
            combos=["helpfulness+honesty"],
            merges={"task_arithmetic": [{"scale": "0.5"}]},
            keep_merged_models=False,  # as in the paper presets: deleted once evaluated, records kept
        )
        config["mixtures"] = {
            "strategies": [],
            "models": {"helpfulness+honesty": {"joint": {"kind": "local", "path": str(joint)}}},
        }
        config["data"]["base_answers"] = False
        config["evaluation"]["benchmarks"] = {  # one per dimension, as few items as a verdict needs
            "qa_mc": {"n": 2, "n_val": 1},
            "halueval_verify": {"n": 2, "n_val": 1},
            "harmful_refusal": {"n": 2, "n_val": 1},
        }

    work = tmp_path / "work"
    work.mkdir()
    configfile, config = copy_workflow(work, assets_root, edit)
    for dim, data in built.items():  # built and fitted once per session (for this base): not what this tests
        shutil.copytree(data, work / config["results"] / "data" / dim)
    shutil.copytree(judges_dir, work / config["results"] / "judges")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        SNAKEMAKE + ["--configfile", str(configfile), "--cores", "2", "--quiet"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = work / config["results"]
    assert not (results / "logs" / "train").exists() and not (results / "logs" / "data").exists()  # nothing trained
    grid = pd.read_csv(results / "report" / "grid.csv")
    assert set(grid["arm"]) == {
        "base", "expert/helpfulness", "expert/honesty", "expert/harmlessness",
        "mix/joint/helpfulness+honesty", "merge/task_arithmetic/helpfulness+honesty/scale-0.5",
    }  # fmt: skip
    experts = results / "models" / "expert"
    assert (experts / "helpfulness" / "model.safetensors").is_file()  # the pickles, rewritten once
    assert not list((experts / "helpfulness").glob("*.bin"))
    helpful_manifest = yaml.safe_load((experts / "helpfulness" / "resm_manifest.json").read_text())
    assert helpful_manifest["converted_from_pickle"] is True
    honest_manifest = yaml.safe_load((experts / "honesty" / "resm_manifest.json").read_text())
    assert honest_manifest["inputs"]["source"][0]["hub"] == {"repo": "lab/honest-expert", "commit": commit}
    assert (experts / "harmlessness" / "adapter" / "adapter_config.json").is_file()
    adopted = load_dir(experts / "helpfulness")
    assert all(torch.allclose(adopted[k], v) for k, v in perturbed(tiny_llm, 1).items())
    cell = Path("merge") / "task_arithmetic" / "helpfulness+honesty" / "scale-0.5"
    assert not (results / "models" / cell).exists()  # evaluated, then deleted
    records = results / "records" / cell
    assert "base_model_relation: merge" in (records / "README.md").read_text()
    assert yaml.safe_load((records / "resm_recipe.yaml").read_text())["method"] == "task_arithmetic"
    assert job_counts(work, configfile) == {}  # a complete run: nothing left to do


# ---------------------------------------------------------------- added tokens, opt-in


def test_an_expert_with_added_tokens_merges_only_with_the_base_vocabulary(tiny_llm, tmp_path):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    from resm_core.cli import main

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llm)
    tokenizer.add_tokens(["<tool_call>", "<think>"])
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llm)
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    added = tmp_path / "added"
    model.save_pretrained(added)
    tokenizer.save_pretrained(added)
    base = load_file(str(tiny_llm / "model.safetensors"))
    argv = ["-q", "merge", "--method", "task_arithmetic", "--param", "scale=1", "--base", str(tiny_llm)]
    argv += ["--experts", str(added)]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()
    assert main([*argv, "--out", str(tmp_path / "merged"), "--base-vocabulary"]) == 0
    merged, expert = load_file(str(tmp_path / "merged" / "model.safetensors")), load_dir(added)
    rows = base["model.embed_tokens.weight"].shape[0]
    assert torch.allclose(merged["model.embed_tokens.weight"], expert["model.embed_tokens.weight"][:rows], atol=1e-6)
    manifest = yaml.safe_load((tmp_path / "merged" / "resm_manifest.json").read_text())
    assert manifest["dropped_vocabulary_rows"]["../added"]["model.embed_tokens.weight"] == 2  # relative to the model
    assert "lost 2 rows of model.embed_tokens.weight" in ModelCard.load(tmp_path / "merged" / "README.md").text


def test_the_refusal_names_the_option(tiny_llm, tmp_path, capsys):
    from resm_core.cli import main

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llm)
    tokenizer.add_tokens(["<x>"])
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llm)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path / "added")
    tokenizer.save_pretrained(tmp_path / "added")
    argv = [
        "-q",
        "extract",
        "--base",
        str(tiny_llm),
        "--expert",
        str(tmp_path / "added"),
        "--out",
        str(tmp_path / "tv"),
    ]
    assert main(argv) == 2
    assert "--base-vocabulary" in capsys.readouterr().err
    assert main([*argv, "--base-vocabulary"]) == 0


def test_a_lora_adapter_from_the_hub_is_fetched_and_adopted(tiny_llm, tmp_path):
    import peft

    lora = peft.get_peft_model(
        transformers.AutoModelForCausalLM.from_pretrained(tiny_llm),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "adapter")
    cache = tmp_path / "cache"
    commit = put_in_cache(cache, "lab/adapter", tmp_path / "adapter")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = resm(env, "base", "download", "lab/adapter", "--out", tmp_path / "fetched")  # the workflow's fetch_model
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fetched" / "adapter_config.json").is_file()
    done = resm(env, "model", "adopt", "--source", "lab/adapter", "--base", tiny_llm, "--out", tmp_path / "adopted")
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((tmp_path / "adopted" / "resm_manifest.json").read_text())
    assert manifest["kind"] == "lora" and manifest["inputs"]["source"][0]["hub"]["commit"] == commit
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "adopted")
    expected = lora.merge_and_unload().state_dict()
    assert all(torch.allclose(merged.state_dict()[k], v, atol=1e-6) for k, v in expected.items())


def test_a_hub_dataset_is_fetched_then_built_offline_from_its_directory(assets_root, tmp_path):
    """`resm data fetch` (the workflow's local rule) copies the preset's files out of the hub cache; the build
    then reads that directory with the hub cache gone, as a compute node without internet would."""
    from resm_core.data.sources import fetched

    repo = "Anthropic/hh-rlhf"
    commit = fake_commit(repo)
    root = tmp_path / "cache" / f"datasets--{repo.replace('/', '--')}"
    topics = ["bread", "a bicycle", "tomatoes", "a fence", "soup", "a kite", "rice", "a shelf", "tea", "a raft"]
    for part in ("helpful-base", "harmless-base"):
        (root / "snapshots" / commit / part).mkdir(parents=True)
        with open(root / "snapshots" / commit / part / "train.jsonl", "w") as f:
            for i, topic in enumerate(topics * 3):
                ask = f"\n\nHuman: How do I make {topic}, take {i}?\n\nAssistant:"
                f.write(json.dumps({"chosen": f"{ask} Step {i}: gather what {topic} needs.", "rejected": f"{ask} No."}))
                f.write("\n")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets")

    done = resm(env, "data", "fetch", "hub:hh_rlhf_helpful", "--out", tmp_path / "fetched")
    assert done.returncode == 0, done.stderr
    files = sorted(str(p.relative_to(tmp_path / "fetched")) for p in (tmp_path / "fetched").rglob("*") if p.is_file())
    assert files == ["helpful-base/train.jsonl", "resm_source.json"]  # only the preset's data_dir
    origin = json.loads((tmp_path / "fetched" / "resm_source.json").read_text())
    assert origin["repo"] == repo and origin["commit"] == commit

    shutil.rmtree(tmp_path / "cache")  # the build needs only the fetched directory
    spec = fetched("hub:hh_rlhf_helpful", str(tmp_path / "fetched"))
    done = resm(env, "data", "build", "--dim", "helpfulness", "--source", json.dumps(spec), "--cache", assets_root,
                "--near-duplicate-cosine", "1", "--out", tmp_path / "built")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "built" / "train.jsonl").read_text().splitlines()]
    assert rows and {r["source"] for r in rows} == {"hh_rlhf_helpful"} and all(r["rejected"] == "No." for r in rows)

    not_hub = resm(env, "data", "fetch", "nq_open", "--out", tmp_path / "nq")
    assert not_hub.returncode == 2 and "not a hub source" in not_hub.stderr
