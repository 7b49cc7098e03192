"""Merge recipes: a YAML file (validated against schemas/merge_recipe.schema.yaml) or CLI flags,
both turned into one `MergeRequest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from resm_core.errors import ConfigError
from resm_core.merge.engine import MergeRequest
from resm_core.validation import validate


def read_recipe(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    validate(data, "merge_recipe.schema.yaml", str(path))
    return data


def request_from(recipe: dict, overrides: dict[str, Any], source: str = "recipe") -> MergeRequest:
    """Recipe values, with non-None overrides (CLI flags) taking precedence."""
    data = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
    params = {**(recipe.get("params") or {}), **(overrides.get("params") or {})}
    for key in ("base", "method", "out"):
        if not data.get(key):
            raise ConfigError(f"{source}: {key} is required (in the recipe or as --{key})")
    experts = data.get("experts") or []
    if not experts:
        raise ConfigError(f"{source}: experts is required (in the recipe or as --experts)")
    paths, entry_weights = [], []
    for e in experts:
        if isinstance(e, dict):
            paths.append(Path(e["path"]))
            entry_weights.append(e.get("weight"))
        else:
            paths.append(Path(e))
            entry_weights.append(None)
    weights = data.get("weights")
    if any(w is not None for w in entry_weights):
        if weights is not None:
            raise ConfigError(f"{source}: give weights either per expert or as a weights list, not both")
        weights = [1.0 if w is None else float(w) for w in entry_weights]
    return MergeRequest(
        base=Path(data["base"]), experts=paths, method=data["method"], out=Path(data["out"]),
        params=params, weights=[float(w) for w in weights] if weights is not None else None,
        device=data.get("device", "auto"), out_dtype=data.get("out_dtype"), seed=int(data.get("seed", 0)),
        shard_size=data.get("shard_size", "2GB"), vocab_rule=data.get("vocab_rule"),
        allow_pickle=bool(data.get("allow_pickle", False)), force=bool(data.get("force", False)),
        progress=bool(data.get("progress", True)),
    )
