"""JSON Schema (draft 2020-12) validation against the schemas shipped in resm_core/schemas: the workflow
config, merge recipes and evaluation outputs. Errors name the offending key path.

A schema node with `x-options: module:Class` gets its properties from that stage's request dataclass (the one
declaration of each option, resm_core/options.py); properties written beside it add what a dataclass cannot
say (nested structure) and win.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import resources
from typing import Any

import yaml

from resm_core.errors import ConfigError
from resm_core.options import config_schema


def request_class(path: str) -> type:
    """`module:Class`, as an `x-options` node names it."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _expand(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _expand(v) for k, v in node.items()}
        stage = node.pop("x-options", None)
        if stage is not None:
            node["properties"] = {**config_schema(request_class(stage)), **node.get("properties", {})}
        return node
    if isinstance(node, list):
        return [_expand(v) for v in node]
    return node


@cache
def load_schema(name: str) -> dict:
    text = resources.files("resm_core.schemas").joinpath(name).read_text()
    return _expand(yaml.safe_load(text))


def validate(data: Any, schema_name: str, source: str) -> None:
    import jsonschema  # here, not at the top: every `resm` command imports this module, few validate (0.1 s)

    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message if len(err.message) <= 300 else err.message[:300] + "..."
        raise ConfigError(f"{source}: {where}: {message}")
