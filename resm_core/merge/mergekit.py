"""mergekit recipes, both ways, for the methods both tools have: `resm merge mergekit.yml` translates a
mergekit-format recipe into a resm one (and prints it); `resm merge --to-mergekit FILE` writes the reverse.
What resm does not do (slices, tensor filters, gradient lists, other tokenizer modes, per-model values
that resm takes once per merge) is refused by name rather than approximated.

The correspondence (held by tests/test_mergekit.py, which runs both spellings and compares the weights):
- per-model `weight` -> resm `weights`; top-level `lambda` -> `scale`;
- summing methods (task_arithmetic, dare_linear, breadcrumbs, della_linear): mergekit's `normalize: true`
  divides by the sum of the weights, so the weights are divided here; `normalize: false` (their default)
  is resm's sum;
- electing methods (ties, dare_ties, breadcrumbs_ties, della): mergekit's `normalize: true` (their
  default) is resm's disjoint weighted mean; `normalize: false` (a disjoint sum) has no resm equivalent;
- `linear` is a weighted average in both (normalised); `model_stock` takes no parameters;
- `dtype` is mergekit's arithmetic precision: resm always computes in fp32 and stores in `out_dtype`
  (else `dtype`, as mergekit stores).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from resm_core.errors import ConfigError
from resm_core.yamlfile import short

SUMMING = ("task_arithmetic", "dare_linear", "breadcrumbs", "della_linear")
ELECTING = ("ties", "dare_ties", "breadcrumbs_ties", "della")
SHARED = ("linear", "model_stock", *SUMMING, *ELECTING)
PER_MODEL = ("density", "gamma", "epsilon")  # mergekit takes them per model; resm once per merge
IGNORED = {"int8_mask": "resm computes in fp32 and keeps masks as booleans"}
NORMALIZE_DEFAULT = {**dict.fromkeys(SUMMING, False), **dict.fromkeys(ELECTING, True), "linear": True}
TOP_KEYS = {"models", "merge_method", "base_model", "parameters", "dtype", "out_dtype", "tokenizer_source", "tokenizer"}


def is_mergekit(recipe: dict[str, Any]) -> bool:
    return "merge_method" in recipe


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where}: a gradient or tensor-filtered value ({value!r}) is not supported by resm")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of name -> value, got {short(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {short(value)}")
    return float(value)


def _lora_on_base(model: str, base: str, where: str) -> str:
    """mergekit's `MODEL+LORA` (an adapter applied to a model): resm reads a LoRA adapter as an expert against the
    merge's base, so `BASE+ADAPTER` is the adapter itself; a LoRA on another model is refused, naming the syntax."""
    if "+" not in model or Path(model).exists():
        return model
    on, _, adapter = model.partition("+")
    if on != base:
        raise ConfigError(
            f"{where}: {model!r} is mergekit's MODEL+LORA syntax with MODEL {on!r}, not the base_model {base!r}: resm "
            f"applies a LoRA adapter to the merge's base only (give `{base}+{adapter}`, or the adapter alone)"
        )
    return adapter


def from_mergekit(recipe: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """The resm recipe (a mapping `merge/recipe.py` reads) equivalent to a mergekit recipe."""
    where = f"{source} (mergekit format)"
    if "slices" in recipe:
        raise ConfigError(f"{where}: slices are not supported (resm merges whole models)")
    unknown = sorted(set(recipe) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not supported (resm reads {', '.join(sorted(TOP_KEYS))})")
    method = recipe["merge_method"]
    if method not in SHARED:
        raise ConfigError(f"{where}: merge_method {method!r} has no resm equivalent (shared: {', '.join(SHARED)})")
    tokenizer = recipe.get("tokenizer_source") or (recipe.get("tokenizer") or {}).get("source") or "base"
    if tokenizer != "base" or set(recipe.get("tokenizer") or {}) - {"source"}:
        raise ConfigError(f"{where}: tokenizer source {tokenizer!r} is not supported (resm keeps the base's)")
    if not recipe.get("base_model"):
        raise ConfigError(f"{where}: base_model is required (resm merges task vectors against a base)")
    base = str(recipe["base_model"])
    top = {
        k: _scalar(v, f"{where}: parameters.{k}")
        for k, v in _mapping(recipe.get("parameters"), f"{where}: parameters").items()
    }
    for i, m in enumerate(recipe.get("models") or []):
        if not isinstance(m, dict) or not isinstance(m.get("model"), str):
            raise ConfigError(
                f"{where}: models.{i}: expected `model: PATH_OR_HUB_ID` (a model with a LoRA spec is not supported)"
            )
    listed = [
        {**m, "model": _lora_on_base(m["model"], base, f"{where}: models.{i}")}
        for i, m in enumerate(recipe.get("models") or [])
    ]
    models = [m for m in listed if m["model"] != base]  # the base may be listed
    if not models:
        raise ConfigError(f"{where}: models lists no model besides the base")
    per_model: list[dict[str, Any]] = []
    for i, m in enumerate(models):
        at = f"{where}: models.{i}.parameters"
        own = {k: _scalar(v, f"{at}.{k}") for k, v in _mapping(m.get("parameters"), at).items()}
        per_model.append({**{k: v for k, v in top.items() if k in PER_MODEL + ("weight",)}, **own})
    params: dict[str, Any] = {}
    for key in PER_MODEL:
        values = {p.get(key) for p in per_model}
        if values != {None}:
            if len(values) > 1:
                raise ConfigError(f"{where}: {key} differs between models ({sorted(map(str, values))}); resm takes one")
            params[key] = values.pop()
    extra = sorted({k for p in per_model for k in p} - set(PER_MODEL) - {"weight"})
    if extra:
        raise ConfigError(f"{where}: model parameter {extra[0]!r} is not supported")
    weights = [_number(p.get("weight", 1.0), f"{where}: models.{i}.parameters.weight") for i, p in enumerate(per_model)]
    normalize = bool(top.pop("normalize", NORMALIZE_DEFAULT.get(method, False)))
    if method in ELECTING and not normalize:
        raise ConfigError(f"{where}: normalize: false with {method} (a disjoint sum) has no resm equivalent")
    if method in SUMMING and normalize:
        if sum(weights) == 0:
            raise ConfigError(f"{where}: normalize: true with weights that sum to zero ({weights}) divides by zero")
        weights = [w / sum(weights) for w in weights]
    if "lambda" in top and method not in ("linear", "model_stock"):
        params["scale"] = _number(top.pop("lambda"), f"{where}: parameters.lambda")
    elif method in SUMMING + ELECTING:
        params["scale"] = 1.0
    if method.startswith("della") and top.pop("rescale", True) is not True:
        raise ConfigError(f"{where}: rescale: false is not supported (resm rescales kept entries by 1/p)")
    for key in IGNORED:
        top.pop(key, None)
    leftover = sorted(set(top) - set(PER_MODEL) - {"weight"})
    if leftover:
        raise ConfigError(f"{where}: parameter {leftover[0]!r} is not supported")
    out: dict[str, Any] = {
        "base": base,
        "experts": [{"path": str(m["model"]), "weight": w} for m, w in zip(models, weights)],
        "method": method,
        "params": params,
    }
    if method == "model_stock":
        out["experts"] = [e["path"] for e in out["experts"]]
    dtype = recipe.get("out_dtype") or recipe.get("dtype")
    if dtype:
        out["out_dtype"] = dtype
    return out


def to_mergekit(recipe: dict[str, Any]) -> dict[str, Any]:
    """The mergekit recipe for a resm recipe (after `recipe.request_from`'s reading), for the shared methods."""
    method = recipe["method"]
    if method not in SHARED:
        raise ConfigError(f"--to-mergekit: {method} has no mergekit equivalent (shared: {', '.join(SHARED)})")
    params = dict(recipe.get("params") or {})
    if params.pop("granularity", "tensor") not in ("tensor", "row" if method.startswith("della") else "tensor"):
        raise ConfigError("--to-mergekit: granularity model has no mergekit equivalent (mergekit ranks per tensor)")
    weights = recipe.get("weights") or [1.0] * len(recipe["experts"])
    model_params = {k: params.pop(k) for k in PER_MODEL if k in params}
    top: dict[str, Any] = {}
    if method in SUMMING + ELECTING:
        top = {"lambda": float(params.pop("scale", 1.0)), "normalize": method in ELECTING}
    if params:
        raise ConfigError(f"--to-mergekit: parameter {sorted(params)[0]!r} of {method} has no mergekit equivalent")
    models = [
        {"model": str(e), "parameters": {**({"weight": w} if method != "model_stock" else {}), **model_params}}
        for e, w in zip(recipe["experts"], weights)
    ]
    out: dict[str, Any] = {"merge_method": method, "base_model": str(recipe["base"]), "models": models}
    if top:
        out["parameters"] = top
    out["dtype"] = "float32"  # resm's arithmetic precision
    if recipe.get("out_dtype"):
        out["out_dtype"] = recipe["out_dtype"]
    return out


def write_mergekit(recipe: dict[str, Any], path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_mergekit(recipe), sort_keys=False))
