# Config validation, grid helpers and wildcard constraints shared by every rule.
import json
import os
import re
import shlex
from pathlib import Path

from resm_core.assets import DATA_ASSETS, asset_dir
from resm_core.base_request import ModelRequest, TinyBaseRequest
from resm_core.data.request import BuildRequest, DecontaminateRequest, MixRequest
from resm_core.data.schema import DIMS
from resm_core.data.sources import fetched, hub_download
from resm_core.evaluate.benchmarks import DEFAULT as DEFAULT_BENCHMARKS, item_options
from resm_core.evaluate.harness import cache_env, is_harness
from resm_core.evaluate.request import EvalRequest
from resm_core.grid import (
    FRONT_MIXTURE,
    FRONT_VARIANT,
    arms,
    front_point_of,
    frontier_points,
    mixture_ratios,
    combo_dims,
    expert_dims,
    hub_datasets,
    outside_models,
    merge_cells,
    merge_params,
    run_prefix,
    training_seeds,
)
from resm_core.merge.request import MergeRequest
from resm_core.options import config_flags, to_flags
from resm_core.slurm import check_profile
from resm_core.stage_code import code_fingerprint
from resm_core.taskvec.request import ExtractRequest
from resm_core.train.request import TrainRequest
from resm_core.workflow_config import check_config

check_config(config, "config")  # before any job: errors name the key
# resources come from the config; a profile supplies site settings only
if workflow.is_main_process:
    check_profile(
        workflow.resource_settings.default_resources,
        workflow.resource_settings.overwrite_resources,
        workflow.resource_settings.overwrite_threads,
    )

RESULTS = config["results"]
CACHE = config.get("assets", "resources")
CODE_DIR = Path(workflow.basedir) / "resm_core"
ARMS = arms(config)
TRAIN = config["training"]
DATA = config.get("data", {})
EVAL = config["evaluation"]
MIX = config["mixtures"]
# one pickle policy for every rule that loads a model
PICKLE = bool(config.get("allow_pickle", False))
# a merged model deleted once evaluated (its records stay) when false
KEEP_MERGED = bool(config.get("keep_merged_models", True))
# arm -> model source: made elsewhere, adopted instead of trained
OUTSIDE = outside_models(config)
TRAINED_DIMS = [d for d in expert_dims(config) if f"expert/{d}" not in OUTSIDE]
# the dims whose training rows a run here trains on (experts trained here, mixtures): decontaminated first
TRAINED_DATA_DIMS = [
    d
    for d in DIMS
    if d in TRAINED_DIMS
    or (MIX["strategies"] and any(d in combo_dims(c) for c in config["combos"]))
]
# one run of every trained arm per seed: the first at the plain paths, the others under seedN/ ({rep})
SEEDS = training_seeds(config)
RUNS = {run_prefix(s, SEEDS): s for s in SEEDS}
# hub sources, fetched on the login node before the builds
HUB_DATA = hub_datasets(config)
# the trade-off frontier: its points' arms (with the base and the experts it is drawn against) and combos
FRONTIER = config.get("frontier") or {}
FRONT_POINTS = frontier_points(config)
FRONT_COMBOS = list(dict.fromkeys(p.arm.combo for p in FRONT_POINTS))
FRONT_ARMS = (
    ["base"]
    + [f"expert/{d}" for d in expert_dims({"combos": FRONT_COMBOS})]
    + [p.arm.path for p in FRONT_POINTS]
)
# benchmarks that are lm-eval tasks: their datasets fetched on the login node too
HARNESS = {
    name: opts
    for name, opts in (EVAL.get("benchmarks") or {}).items()
    if is_harness(opts)
}
# Each rule's conda environment (--sdm conda). The env files install this checkout from $RESM_REPO: Snakemake
# copies an env file into .snakemake/conda/ before creating it, so a relative path would point there.
os.environ.update(RESM_REPO=str(Path(workflow.basedir).resolve()))
RESM_ENV = str(Path(workflow.basedir) / "envs" / "resm.yaml")
# vLLM pins its own CUDA torch: evaluation with it runs in its own environment
EVAL_ENV = (
    RESM_ENV.replace("resm.yaml", "vllm.yaml")
    if EVAL.get("backend") == "vllm"
    else RESM_ENV
)


wildcard_constraints:
    dim="helpfulness|honesty|harmlessness",
    combo="[a-z]+(\\+[a-z]+){1,2}",
    strategy="uniform|ratio|reward_weighted|conflict_filtered|"
    + re.escape(FRONT_MIXTURE)
    + "[0-9.]+(?:-[0-9.]+){1,2}",
    method="[a-z_]+",
    hp="[A-Za-z0-9_.+=-]+",
    rep="(?:" + "|".join(re.escape(r) for r in RUNS) + ")",


def merged_model(path):
    """A merge's output: kept, or deleted once its evaluation no longer needs it."""
    return directory(path) if KEEP_MERGED else temp(directory(path))


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def hub_source(arm):
    """The hub id of an adopted model that comes from the hub, else None."""
    spec = OUTSIDE[arm]
    if spec["kind"] == "hub" or (spec["kind"] == "lora" and "repo" in spec):
        return spec["repo"] + (f"@{spec['revision']}" if spec.get("revision") else "")
    return None


def adopt_source(arm):
    """What `resm model adopt` reads: the fetched hub directory, or the local path the config names."""
    return f"{RESULTS}/hub/models/{arm}" if hub_source(arm) else OUTSIDE[arm]["path"]


def code(stage):
    """Fingerprint of the resm_core modules a stage runs: editing them reruns exactly these rules."""
    return code_fingerprint(stage, CODE_DIR)


def res(kind, key, default):
    """A stage's resource from the config. Threads default to 1: on CPU two 1-thread jobs side by side
    beat two 2-thread jobs in turn (evaluation: 1.57x), and GPU configs set their own.
    """
    return config.get("resources", {}).get(kind, {}).get(key, default)


def mem(kind, default):
    """A stage's memory from the config, doubled, tripled... on each retry (a job killed for memory)."""
    return lambda wildcards, attempt: attempt * res(kind, "mem_mb", default)


def gpu_model(kind):
    """The GPU model sbatch asks for (`--gpus=MODEL:N`): only for a job that asks for GPUs."""
    return res(kind, "gpu_model", "") if res(kind, "gpu", 0) else ""


def report_description():
    """The report's description page: the finished run's summary.rst, else the workflow's own."""
    summary = Path(RESULTS, "report", "summary.rst").resolve()
    return str(summary) if summary.is_file() else "captions/workflow.rst"


def asset_marker(name):
    return str(asset_dir(name, CACHE) / "asset.json")


def needed_assets():
    names = list(DATA_ASSETS)
    if config["base"]["kind"] == "packaged":
        names.append("smollm2")
    return names


def base_dir():
    if config["base"]["kind"] == "local":
        return config["base"]["path"]
    return f"{RESULTS}/base"


def base_command():
    """The whole command, already shell-quoted (the rule adds only --out)."""
    b = config["base"]
    if b["kind"] == "packaged":
        name = b.get("name", "smollm2-135m-instruct")
        return shlex.join(["resm", "-q", "base", "prepare", name, "--cache", CACHE])
    if b["kind"] == "hub":
        revision = ["--revision", b["revision"]] if b.get("revision") else []
        pickle = ["--allow-pickle"] if PICKLE else []
        return shlex.join(
            ["resm", "-q", "base", "download", b["name"], *revision, *pickle]
        )
    options = config_flags(TinyBaseRequest, b, cache=CACHE, dtype="float32")
    return f"resm -q base tiny {options}"


def fetched_dataset(name):
    return f"{RESULTS}/hub/datasets/{name}"


def dim_hub_datasets(dim):
    """The fetched directories of the hub sources a dim builds from."""
    sources = config.get("dims", {}).get(dim, {}).get("sources") or []
    return [fetched_dataset(d["name"]) for d in map(hub_download, sources) if d]


def source_args(dim):
    """The dim's sources as `--source` flags; a hub source is read from the directory fetch_dataset filled."""
    sources = config.get("dims", {}).get(dim, {}).get("sources")
    if not sources:
        return ""
    local = [
        fetched(s, fetched_dataset(d["name"])) if (d := hub_download(s)) else s
        for s in sources
    ]
    return to_flags(BuildRequest, {"sources": local})


def model_dir(arm):
    return base_dir() if arm == "base" else f"{RESULTS}/models/{arm}"


def mix_judge():
    """(judge spec for `resm data mix`, files it needs): keywords | refusal | reward:NAME (evaluation.models)."""
    spec = MIX.get("judge")
    if not spec:
        return None, []
    if spec == "refusal":
        return f"refusal:{RESULTS}/judges", [f"{RESULTS}/judges/refusal_judge.json"]
    if spec.startswith("reward:") and spec[7:] in EVAL.get("models", {}):
        return f"reward:{judge_model_dir(spec[7:])}", [judge_model_dir(spec[7:])]
    return spec, []


def mix_strategy(strategy):
    """What `resm data mix` runs: a frontier point's mixture is the ratio strategy at its weights."""
    return "ratio" if strategy.startswith(FRONT_MIXTURE) else strategy


def mix_args(strategy, combo):
    """One mixture per strategy and combo, shared by every training run (a seed varies training only)."""
    ratios = mixture_ratios(strategy, combo)
    if strategy == "ratio":
        ratios = {d: MIX["ratios"][d] for d in combo_dims(combo)}
    return config_flags(
        MixRequest, MIX, ratios=ratios, judge=mix_judge()[0], seed=SEEDS[0]
    )


def judge_model_dir(name):
    return f"{RESULTS}/hub/{name}"


def eval_models():
    """Hub models the benchmarks score with (reward, guard), each downloaded once."""
    return [judge_model_dir(n) for n in EVAL.get("models", {})]


def eval_args():
    benches = {}
    for name, opts in (EVAL.get("benchmarks") or {}).items():
        opts = dict(opts or {})
        for key in ("reward_model", "guard_model"):
            if key in opts:
                opts[key] = judge_model_dir(opts[key])
        benches[name] = opts
    options = shlex.join(["--options", json.dumps(benches)]) if benches else ""
    return f"{options} {config_flags(EvalRequest, EVAL, allow_pickle=PICKLE)}".strip()


def pool_benchmarks():
    """The benchmarks' options as the decontamination reads them: without the run options (n and n_val choose
    items from the pool it checks whole; in_balance and max_new_tokens change scoring), so a change to them
    retrains nothing."""
    benches = {
        name: item_options(name, opts)
        for name, opts in (EVAL.get("benchmarks") or {}).items()
    }
    return json.dumps(benches or {name: {} for name in DEFAULT_BENCHMARKS})


def lm_eval_fetched():
    """The markers of the lm-eval tasks fetched on the login node: inputs of every job that reads them."""
    return [f"{RESULTS}/hub/lm_eval/{name}.json" for name in HARNESS]


def lm_eval_env(offline):
    """`env ...` pointing datasets, the hub and nltk at the run's lm-eval cache (offline for compute jobs);
    nothing when no benchmark is an lm-eval task."""
    if not HARNESS:
        return ""
    env = cache_env(f"{RESULTS}/hub/lm_eval/cache", offline)
    return f"env {shlex.join(f'{k}={v}' for k, v in env.items())}"


def lm_eval_task_files(name):
    """A benchmark's own task YAML and data (include_path): a change to them fetches and evaluates again."""
    root = HARNESS[name].get("include_path")
    return sorted(str(p) for p in Path(root).rglob("*") if p.is_file()) if root else []


def lm_eval_fetch_args(name):
    opts = HARNESS[name]
    extra = ["--include-path", opts["include_path"]] if opts.get("include_path") else []
    return shlex.join(["--task", opts["task"], *extra])


def train_args(steps, rep):
    return config_flags(
        TrainRequest,
        TRAIN,
        steps=steps,
        seed=RUNS[rep],
        architecture=config["base"].get("architecture"),
        allow_pickle=PICKLE,
    )


def expert_taskvecs(combo, rep):
    """A merge's task vectors: this run's for experts trained here, the one adopted run's for the others."""
    return [
        f"{RESULTS}/taskvec/{rep if d in TRAINED_DIMS else ''}{d}"
        for d in combo_dims(combo)
    ]


def front_recipe(method, combo, rep):
    """Where a frontier's merges read the hyperparameters chosen on validation: [] when the method has one
    set (passed as flags, so the front waits for no evaluation)."""
    if len(config["merges"][method] or [{}]) == 1:
        return []
    return [f"{RESULTS}/frontier/{rep}{method}/{combo}/recipe.yaml"]


def front_candidates(method, combo, rep):
    """The grid's merges of one method and combo: the sets a frontier chooses among, with their params."""
    return {
        f"{rep}merge/{method}/{combo}/{hp}": params
        for m, c, hp, params in merge_cells(config)
        if m == method and c == combo
    }


def merge_hyperparameters(method, combo, hp):
    """A grid merge's params; a frontier point's per-expert weights (and the method's one set, if one)."""
    point = front_point_of(f"merge/{method}/{combo}/{hp}")
    if point is None:
        return {"params": merge_params(config, method, hp)}
    sets = config["merges"][method] or [{}]
    return {
        "params": dict(sets[0] or {}) if len(sets) == 1 else {},
        "weights": point.merge_weights,
    }


def merge_args(method, combo, hp, rep):
    return to_flags(
        MergeRequest,
        {
            **merge_hyperparameters(method, combo, hp),
            "seed": RUNS[rep],
            "allow_pickle": PICKLE,
        },
    )
