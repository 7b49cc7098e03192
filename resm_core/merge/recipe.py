"""Merge recipes: a YAML file (validated against schemas/merge_recipe.schema.yaml) or CLI flags,
both turned into one `MergeRequest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resm_core.errors import ConfigError
from resm_core.merge.mergekit import from_mergekit, is_mergekit
from resm_core.merge.request import MergeRequest
from resm_core.options import build
from resm_core.validation import validate
from resm_core.yamlfile import load_yaml


def read_recipe(path: Path) -> tuple[dict[str, Any], bool]:
    """(the resm recipe, whether it was translated from a mergekit-format file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    data = load_yaml(path.read_text(), str(path))
    translated = isinstance(data, dict) and is_mergekit(data)
    if translated:
        data = from_mergekit(data, str(path))
    validate(data, "merge_recipe.schema.yaml", str(path))
    recipe: dict[str, Any] = _beside(data, path.parent)
    return recipe, translated


def _beside(recipe: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A model path that starts with ./ or ../ is relative to the recipe file (as resm writes them into a
    merged model's recipe, so it names no machine path); any other is read as before: absolute, relative to
    where resm runs, or a hub id."""

    def resolved(p: Any) -> Any:
        text = str(p)
        return str(folder / text) if text.startswith(("./", "../")) else p

    out = dict(recipe)
    if "base" in out:
        out["base"] = resolved(out["base"])
    if "experts" in out:
        out["experts"] = [
            {**e, "path": resolved(e["path"])} if isinstance(e, dict) else resolved(e) for e in out["experts"]
        ]
    return out


def request_from(recipe: dict[str, Any], overrides: dict[str, Any], source: str = "recipe") -> MergeRequest:
    """Recipe values, with the given overrides (CLI flags) taking precedence; defaults are MergeRequest's."""
    data = {**recipe, **{k: v for k, v in overrides.items() if v is not None and k != "params"}}
    data["params"] = {**(recipe.get("params") or {}), **(overrides.get("params") or {})}
    for key in ("base", "method", "out"):
        if not data.get(key):
            raise ConfigError(f"{source}: {key} is required (in the recipe or as --{key})")
    experts = data.pop("experts", None) or []
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
    if any(w is not None for w in entry_weights):
        if data.get("weights") is not None:
            raise ConfigError(f"{source}: give weights either per expert or as a weights list, not both")
        data["weights"] = [1.0 if w is None else float(w) for w in entry_weights]
    if data.get("weights") is not None:
        data["weights"] = [float(w) for w in data["weights"]]
    for key in ("base", "out"):
        data[key] = Path(data[key])
    request: MergeRequest = build(MergeRequest, {**data, "experts": paths}, source)
    return request
