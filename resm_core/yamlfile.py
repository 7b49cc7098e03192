"""YAML that users write (workflow configs, merge recipes, evaluation configs, options), read with bounds.

PyYAML builds an alias once and shares it, so a "billion laughs" document loads in microseconds and then
hangs whatever walks it: schema validation, a check of every value, an error message's repr. A document
that would take more than MAX_VALUES steps to walk is refused before anything walks it, and error messages
quote values through `short`, which never expands more than a few levels.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from resm_core.errors import ConfigError, ResmError

MAX_VALUES = 1_000_000  # a paper preset has a few hundred; a recipe of a 70B model's slices a few thousand

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 60, 60


def short(value: Any) -> str:
    """A repr of at most a few dozen characters, whatever the value holds."""
    return _SHORT.repr(value)


def check_bounded(data: Any, where: str, error: type[ResmError] = ConfigError) -> None:
    """Refuse a document whose walk (shared aliases counted each time they are reached) exceeds MAX_VALUES."""
    seen, todo = 0, [data]
    while todo:
        value = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise error(
                f"{where}: holds more than {MAX_VALUES:,} values once its YAML aliases are expanded "
                f"(aliases nested inside aliases?); write the values out"
            )
        if isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, (list, tuple)):
            todo.extend(value)


def load_yaml(text: str, where: str, error: type[ResmError] = ConfigError) -> Any:
    """The document in `text`, bounded; `where` (a file, a flag) names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    check_bounded(data, where, error)
    return data
