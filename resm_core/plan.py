"""`resm plan CONFIG`: what a run will cost before it is submitted: jobs per rule (the DAG Snakemake's API
builds, with the profile's settings), what each rule asks sbatch for, the models it writes and their size on
disk, and GPU hours.

Sizes come from the base's architecture (its config.json, counted on the meta device: no weights are read
or downloaded) and the dtypes the config implies. GPU hours are the runtime limits the jobs ask for, an
upper bound: SLURM bills what they use.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from resm_core.errors import ConfigError
from resm_core.workflow_config import load_config
from resm_core.workflow_jobs import PlannedJob, planned_jobs

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# rule -> what each of its jobs writes (a model of the base's size), for the disk estimate
WRITES = {
    "prepare_base": "base",
    "train_expert": "trained",
    "train_mixture": "trained",
    "adopt_model": "adopted",
    "extract_taskvec": "task_vector",
    "merge": "merged",
}


@dataclass
class RuleCost:
    jobs: int = 0
    gpu_hours: float = 0.0
    gpus: set[int] = field(default_factory=set)
    runtime_min: set[int] = field(default_factory=set)
    sbatch: set[str] = field(default_factory=set)
    local: bool = False


def rule_costs(jobs: list[PlannedJob]) -> dict[str, RuleCost]:
    """Jobs, GPUs, runtime limits and sbatch flags per rule."""
    rules: dict[str, RuleCost] = {}
    for job in jobs:
        cost = rules.setdefault(job.rule, RuleCost(local=job.local))
        cost.jobs += 1
        runtime = int(float(job.resources.get("runtime", 0) or 0))
        gpus = int(float(job.resources.get("gpu", 0) or 0))
        cost.runtime_min.add(runtime)
        cost.gpus.add(gpus)
        cost.gpu_hours += gpus * runtime / 60
        if job.sbatch:
            cost.sbatch.add(job.sbatch)
    return rules


def base_size(config: dict) -> tuple[int, str, str]:
    """(parameters, stored dtype, where the architecture came from), without reading or downloading weights:
    the prepared base, a local path, the hub's config.json in the cache, a known paper base
    (synthetic.HUB_SHAPES), the hub itself, the packaged GGUF's header, or the tiny base's settings."""
    from transformers import AutoConfig

    from resm_core.synthetic import HUB_SHAPES, SHAPES, LlamaShape

    base = config["base"]
    prepared = Path(config["results"]) / "base"
    if (prepared / "config.json").is_file():
        return _counted(AutoConfig.from_pretrained(prepared), str(prepared))
    if base["kind"] == "local":
        return _counted(AutoConfig.from_pretrained(base["path"]), base["path"])
    if base["kind"] == "hub":
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(base["name"], "config.json", revision=base.get("revision"))
        if isinstance(cached, str):
            return _counted(AutoConfig.from_pretrained(Path(cached).parent), "the hub cache")
        if base["name"] in HUB_SHAPES:
            shape = SHAPES[HUB_SHAPES[base["name"]]]
            return shape.n_params(), "bfloat16", f"resm's table of published bases ({HUB_SHAPES[base['name']]})"
        try:
            path = hf_hub_download(base["name"], "config.json", revision=base.get("revision"))
        except Exception as exc:  # offline, gated, unknown
            raise ConfigError(
                f"base.name: {base['name']}: its config.json is not in the cache and the hub did not give it "
                f"({type(exc).__name__}); run where the hub is reachable, or set HF_TOKEN for a gated model"
            ) from None
        return _counted(AutoConfig.from_pretrained(Path(path).parent), "the hub")
    if base["kind"] == "packaged":
        from resm_core.assets import asset_path
        from resm_core.base_models import GGUF_BASES

        asset, member = GGUF_BASES[base.get("name", "smollm2-135m-instruct")]
        gguf = asset_path(asset, member, config.get("assets", "resources"))
        params, _, where = _counted(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name), gguf.name)
        return params, "bfloat16", where  # `resm base prepare` writes bfloat16
    tiny = LlamaShape(
        hidden=base.get("hidden", 64),
        layers=base.get("layers", 2),
        intermediate=base.get("intermediate", 128),
        heads=base.get("heads", 4),
        kv_heads=base.get("kv_heads", 2),
        vocab=base.get("vocab_size", 512),
        tied=True,
    )
    return tiny.n_params(), "float32", "the tiny base's settings"


def _counted(model_config, where: str) -> tuple[int, str, str]:
    """Stored parameters (tied embeddings once), counted on the meta device, and the stored dtype."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    dtype = str(getattr(model_config, "dtype", None) or getattr(model_config, "torch_dtype", None) or "float32")
    return sum(p.numel() for p in model.parameters()), dtype.removeprefix("torch."), where


def artifact_dtypes(config: dict, base_dtype: str) -> dict[str, str]:
    """The dtype each kind of model is stored in, as the stages decide it."""
    training = config["training"]
    on_gpu = bool(config.get("resources", {}).get("train", {}).get("gpu"))
    trained = training.get("save_dtype", "auto")
    if trained == "auto":
        trained = training.get("model_dtype", "auto")
    if trained == "auto":
        trained = "bfloat16" if on_gpu else "float32"
    expert = "bfloat16" if config.get("experts") else trained  # released experts come as the base does
    task_vector = "bfloat16" if base_dtype == expert == "bfloat16" else "float32"
    merged = "float32" if "float32" in (expert, base_dtype) else expert  # the base's, or the experts' when wider
    return {
        "base": base_dtype,
        "trained": trained,
        "adopted": expert,
        "task_vector": task_vector,
        "merged": merged,
    }


def plan(configfile: Path, snakefile: Path, profile: Path | None = None) -> str:
    config = load_config(configfile)
    rules = rule_costs(planned_jobs(configfile, snakefile, profile))
    params, base_dtype, where = base_size(config)
    dtypes = artifact_dtypes(config, base_dtype if base_dtype in BYTES else "float32")
    keep = config.get("keep_merged_models", True)
    gb = {kind: params * BYTES.get(dtype, 4) / 1e9 for kind, dtype in dtypes.items()}

    lines = [
        f"plan for {configfile}" + (f" under {profile}" if profile else "") + ":",
        f"base {config['base'].get('name', config['base']['kind'])}: {params / 1e9:.2f} B parameters, "
        f"{base_dtype} (architecture from {where})",
        "",
        f"{'rule':22s} {'jobs':>5s} {'GPUs/job':>8s} {'h/job':>6s} {'GPU h':>8s}  writes",
    ]
    kept = written = 0.0
    for rule, cost in rules.items():
        kind = WRITES.get(rule)
        writes = ""
        if kind:
            each = gb[kind]
            written += each * cost.jobs
            transient = kind == "merged" and not keep
            kept += 0 if transient else each * cost.jobs
            writes = f"{cost.jobs} x {each:.2f} GB {dtypes[kind]} {kind.replace('_', ' ')}"
            writes += ", each deleted once evaluated" if transient else ""
        gpus = "/".join(str(g) for g in sorted(cost.gpus))
        hours = "/".join(f"{r / 60:g}" for r in sorted(cost.runtime_min))
        lines.append(f"{rule:22s} {cost.jobs:5d} {gpus:>8s} {hours:>6s} {cost.gpu_hours:8.0f}  {writes}".rstrip())
    total_gpu = sum(c.gpu_hours for c in rules.values())
    lines += [
        "",
        f"jobs: {sum(c.jobs for c in rules.values())}; GPU hours asked for: {total_gpu:.0f} "
        f"(each job's runtime limit x its GPUs: an upper bound)",
        f"models on disk at the end: {kept:.0f} GB; written in all: {written:.0f} GB "
        f"(plus hub downloads, datasets and each training job's checkpoints)",
    ]
    if not keep:
        lines.append(f"merged models are deleted once evaluated: {gb['merged']:.1f} GB per merge in flight at once")
    lines += [
        "",
        "what each rule asks sbatch for (the SLURM plugin's flags"
        + (f" under {profile}" if profile else "")
        + "; local rules run where snakemake runs):",
    ]
    for rule, cost in rules.items():
        flags = " | ".join(sorted(cost.sbatch)) if not cost.local else "local"
        lines.append(f"  {rule:22s} {flags}")
    return "\n".join(lines)


def default_snakefile() -> Path:
    snakefile = Path(__file__).resolve().parents[1] / "Snakefile"
    if not snakefile.is_file():
        raise ConfigError(f"{snakefile}: no Snakefile beside the package; pass --snakefile")
    return snakefile


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="a run's jobs, GPU hours and disk, from a dry run, before submitting it")
    p.add_argument("config", type=Path, help="the workflow config (e.g. configs/paper-llama3-8b.yaml)")
    p.add_argument("--profile", type=Path, help="the workflow profile whose resources the jobs ask for")
    p.add_argument("--snakefile", type=Path, help="default: the Snakefile beside this package")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    print(plan(args.config, args.snakefile or default_snakefile(), args.profile))
