"""JSON Schema (draft 2020-12) validation against the schemas shipped in resm_core/schemas: merge recipes,
evaluation outputs, and (next) the workflow config. Errors name the offending key path."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jsonschema
import yaml

from resm_core.errors import ConfigError


def load_schema(name: str) -> dict:
    text = resources.files("resm_core.schemas").joinpath(name).read_text()
    return yaml.safe_load(text)


def validate(data: Any, schema_name: str, source: str) -> None:
    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: {where}: {err.message}")
