"""The merge-vs-mix grid as data: which arms a config asks for, how their cells are named on disk, and a
fingerprint of the library code each stage uses (Snakemake's rerun triggers cannot see imported Python).

Names that become paths are strings built one way only, so one cell has one name: a combo is its sorted
dims joined by `+`; a hyperparameter set is its sorted `key-value` pairs joined by `_` ("default" when empty).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError
from resm_core.validation import validate

PACKAGE_DIR = Path(__file__).resolve().parent

# resm_core subpackages and modules each stage runs (its fingerprint changes when any of them does)
STAGE_CODE = {
    "assets": ["assets.py"],
    "base": ["assets.py", "base_models.py", "checkpoint"],
    "data": ["data", "generation.py", "assets.py", "judges/embedder.py"],
    "mix": ["data", "judges"],
    "train": ["train", "data/schema.py", "checkpoint"],
    "taskvec": ["taskvec", "checkpoint"],
    "merge": ["merge", "taskvec", "checkpoint"],
    "judges": ["judges", "data/sources.py", "data/refusals.py"],
    "evaluate": ["evaluate", "judges", "generation.py", "data/schema.py", "data/splits.py", "data/refusals.py"],
    "report": ["report", "grid.py", "evaluate/scores.py", "data/schema.py"],
}


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    config = yaml.safe_load(path.read_text()) or {}
    check_config(config, str(path))
    return config


def check_config(config: dict, source: str = "config") -> None:
    """Schema first (names the key), then what a schema cannot say: combos made of known dims."""
    validate(config, "config.schema.yaml", source)
    models = config["evaluation"].get("models", {})
    for name, opts in (config["evaluation"].get("benchmarks") or {}).items():
        for key in ("reward_model", "guard_model"):
            if opts and key in opts and opts[key] not in models:
                raise ConfigError(f"{source}: evaluation.benchmarks.{name}.{key}: {opts[key]!r} is not a name in "
                                  f"evaluation.models ({', '.join(models) or 'none defined'})")
    judge = (config.get("mixtures") or {}).get("judge") or ""
    if judge.startswith("reward:"):
        scorers = {name: opts["reward_model"] for name, opts in (config["evaluation"].get("benchmarks") or {}).items()
                   if opts and "reward_model" in opts}
        named = judge.removeprefix("reward:")
        clash = [name for name, model in scorers.items() if models.get(model, model) == models.get(named, named)]
        if clash:
            raise ConfigError(f"{source}: mixtures.judge: {judge!r} is the model that scores "
                              f"evaluation.benchmarks.{clash[0]}; a mixture weighted by the evaluator's own reward "
                              f"model would be judged by it too: name a different model in evaluation.models")
    for combo in config["combos"]:
        dims = combo_dims(combo)
        if sorted(dims) != dims or len(set(dims)) != len(dims) or set(dims) - set(DIMS):
            raise ConfigError(f"{source}: combos: {combo!r} must be 2 or 3 distinct dims, sorted, joined by '+' "
                              f"(e.g. {'+'.join(sorted(dims)) if not set(dims) - set(DIMS) else 'harmlessness+helpfulness'})")


def combo_dims(combo: str) -> list[str]:
    return combo.split("+")


def hp_name(params: dict | None) -> str:
    if not params:
        return "default"
    return "_".join(f"{k}-{v}" for k, v in sorted(params.items()))


def merge_cells(config: dict) -> list[tuple[str, str, str, dict]]:
    """(method, combo, hp name, params) for every merge the config asks for."""
    cells = []
    for method, sets in config["merges"].items():
        for params in sets or [{}]:
            for combo in config["combos"]:
                cells.append((method, combo, hp_name(params), dict(params or {})))
    return cells


def merge_params(config: dict, method: str, hp: str) -> dict:
    for params in config["merges"][method] or [{}]:
        if hp_name(params) == hp:
            return dict(params or {})
    raise ConfigError(f"merges.{method}: no hyperparameter set is named {hp!r}")


def arms(config: dict) -> list[str]:
    """Every model to evaluate, as its path under models/ and eval/."""
    out = ["base"] + [f"expert/{d}" for d in DIMS]
    out += [f"mix/{s}/{c}" for s in config["mixtures"]["strategies"] for c in config["combos"]]
    out += [f"merge/{m}/{c}/{h}" for m, c, h, _ in merge_cells(config)]
    return out


def code_fingerprint(stage: str, package_dir: str | Path = PACKAGE_DIR) -> str:
    """SHA-256 over the source of the modules a stage runs, and the data files shipped beside them (the
    borderline-safe requests, the misconceptions): a change reruns exactly those rules."""
    h = hashlib.sha256()
    root = Path(package_dir)
    for item in STAGE_CODE[stage]:
        path = root / item
        files = sorted(f for pattern in ("*.py", "*.yaml", "*.jsonl") for f in path.rglob(pattern)) \
            if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]
