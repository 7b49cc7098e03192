"""Each option of a stage is declared once: as a field of the stage's request dataclass, with its type,
default, help and range. The CLI flags, the workflow config's JSON schema for that section, the flags a
workflow rule passes and the range checks are all derived from that one declaration.

A field's metadata (from `option(...)`):
  help       one line for `--help` and the schema's description
  flag       the flag's name (default: --field-name, which stays accepted)
  flags      further spellings of the flag
  choices    accepted values; minimum / maximum / exclusive_minimum: accepted range
  pattern    a regular expression a string value must match in full
  parse      how a flag's text becomes a value (default: the field's type)
  config     settable from the workflow config (default True); cli: has a flag (default True)
  append     the flag repeats (its values are collected in a list, or a dict for KEY=VALUE pairs)
  nargs      the flag takes several values (argparse's nargs)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from resm_core.errors import ConfigError

MISSING = dataclasses.MISSING


def split_pair(text: str, shape: str = "KEY=VALUE") -> tuple[str, str]:
    """`key=value` as (key, value text); anything else is argparse's one-line error."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected {shape}, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with the value read as YAML (numbers, booleans, lists)."""
    key, value = split_pair(text)
    return key, yaml.safe_load(value) if value.strip() else None


def option(
    default: Any = MISSING,
    *,
    help: str = "",
    flag: str | None = None,
    flags: tuple[str, ...] = (),
    choices: tuple = (),
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    pattern: str | None = None,
    parse: Callable[[str], Any] | None = None,
    config: bool = True,
    cli: bool = True,
    append: bool = False,
    metavar: str | None = None,
    nargs: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    meta = {
        "help": help,
        "flag": flag,
        "flags": flags,
        "choices": tuple(choices),
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "pattern": pattern,
        "parse": parse,
        "config": config,
        "cli": cli,
        "append": append,
        "metavar": metavar,
        "nargs": nargs,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_DEFAULT_META = dict(option().metadata)


def _meta(f: dataclasses.Field) -> dict:
    """A field's option metadata; a plain dataclass field gets `option()`'s defaults."""
    return {**_DEFAULT_META, **dict(f.metadata)}


def _base_type(annotation: Any) -> Any:
    """int | None -> int; anything else with several members -> str (the field declares its parse)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return args[0] if len(args) == 1 else str
    return typing.get_origin(annotation) or annotation


@cache
def declared(cls: type) -> tuple[tuple[dataclasses.Field, Any, dict], ...]:
    """(field, its base type, its metadata) for every field of a request dataclass (read once per class:
    rules ask for every job)."""
    hints = typing.get_type_hints(cls)
    return tuple((f, _base_type(hints[f.name]), _meta(f)) for f in dataclasses.fields(cls))


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _own_flag(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or _own_flag(f)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (), required: bool = True
) -> None:
    """One flag per field. Defaults stay on the dataclass: an absent flag is absent from the namespace.
    required=False: fields without a default may come from elsewhere (a recipe file)."""
    for f, kind, meta in declared(cls):
        if not meta["cli"] or f.name in skip:
            continue
        default = default_of(f)
        needed = default is MISSING and required
        shown = f" (default: {default})" if default not in (MISSING, None, {}, [], ()) and kind is not bool else ""
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"] + shown, "default": argparse.SUPPRESS}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        else:
            kw["type"] = meta["parse"] or kind
            kw["required"] = needed
            if meta["metavar"]:
                kw["metavar"] = meta["metavar"]
            if meta["choices"]:  # checked by `check`, so a bad value is a one-line error naming the key
                kw["help"] += f" (one of: {', '.join(map(str, meta['choices']))})"
            if meta["append"]:
                kw["action"] = "append"
            if meta["nargs"]:
                kw["nargs"] = meta["nargs"]
        names = dict.fromkeys([flag_of(f), _own_flag(f), *meta["flags"]])
        parser.add_argument(*names, **kw)


def command_line(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` a parsed command line sets (an absent flag is absent); repeated KEY=VALUE
    pairs become a dict."""
    values: dict[str, Any] = {}
    for f, kind, meta in declared(cls):
        if f.name not in vars(args) or not meta["cli"]:  # a command's own flag of the same name is not this field
            continue
        value = getattr(args, f.name)
        if kind is dict and isinstance(value, list):
            if len(dict(value)) != len(value):
                raise ConfigError(f"{flag_of(f)}: a key is given twice")
            value = dict(value)
        values[f.name] = value
    return values


def from_namespace(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The request a parsed command line asks for (fields without a flag come from `given`)."""
    return build(cls, {**command_line(cls, args), **given})


def build(cls: type, values: dict[str, Any], source: str | None = None) -> Any:
    """A request from a mapping of field -> value (a config section, a recipe, parsed flags), range-checked.
    Errors name `source`, by default the request's config section (its SECTION)."""
    source = source or str(getattr(cls, "SECTION", cls.__name__))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    request = cls(**values)
    check(request, source)
    return request


def check(request: Any, section: str) -> None:
    """The declared ranges and choices: a bad value names its key before any work starts."""
    cls: type = type(request)
    for f, kind, meta in declared(cls):
        value = getattr(request, f.name)
        if value is None or kind is bool or meta["parse"] is not None and not meta["choices"]:
            continue
        where = f"{section}.{f.name}"
        if meta["pattern"] and not re.fullmatch(meta["pattern"], str(value)):
            raise ConfigError(f"{where}: {value!r} does not match {meta['pattern']!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: expected a number, got {value!r}")
            if meta["minimum"] is not None and value < meta["minimum"]:
                raise ConfigError(f"{where}: must be at least {meta['minimum']} (got {value!r})")
            if meta["exclusive_minimum"] is not None and value <= meta["exclusive_minimum"]:
                raise ConfigError(f"{where}: must be greater than {meta['exclusive_minimum']} (got {value!r})")
            if meta["maximum"] is not None and value > meta["maximum"]:
                raise ConfigError(f"{where}: must be at most {meta['maximum']} (got {value!r})")


def config_schema(cls: type) -> dict[str, dict]:
    """JSON-schema properties of the fields settable from the workflow config."""
    props: dict[str, dict] = {}
    for f, kind, meta in declared(cls):
        if not meta["config"]:
            continue
        prop: dict[str, Any] = {"description": meta["help"]}
        default = default_of(f)
        if isinstance(default, Path):
            default = str(default)
        if default is not MISSING and default is not None and isinstance(default, bool | int | float | str):
            prop["default"] = default  # documentation only: the request dataclass applies it
        if meta["choices"]:
            prop["enum"] = list(meta["choices"])
        elif kind is bool:
            prop["type"] = "boolean"
        elif kind is int:
            prop["type"] = "integer"
        elif kind is float:
            prop["type"] = "number"
        elif kind is dict:
            prop["type"] = "object"
        elif kind in (str, Path):
            prop["type"] = "string"
        if meta["pattern"]:
            prop["pattern"] = f"^({meta['pattern']})$"
        for key, schema_key in (
            ("minimum", "minimum"),
            ("maximum", "maximum"),
            ("exclusive_minimum", "exclusiveMinimum"),
        ):
            if meta[key] is not None:
                prop[schema_key] = meta[key]
        props[f.name] = prop
    return props


def to_flags(cls: type, values: dict[str, Any]) -> str:
    """The command-line flags for a mapping of field -> value, each shell-quoted: what a workflow rule passes.
    Lists and mappings travel as JSON, which the fields' parsers read."""
    known = {f.name: (f, kind, meta) for f, kind, meta in declared(cls)}
    parts: list[str] = []
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{cls.__name__}: {name!r} is not an option (known: {', '.join(sorted(known))})")
        f, kind, meta = known[name]
        if not meta["cli"] or value is None:
            continue
        if kind is bool:
            if bool(value) != bool(default_of(f)):  # store_true, or --no-X of a flag that is on by default
                parts.append(flag_of(f) if value else "--no-" + flag_of(f)[2:])
        elif meta["append"] and isinstance(value, dict):
            for key, item in value.items():
                parts += [flag_of(f), f"{key}={json.dumps(item)}"]
        elif meta["append"]:
            for item in value:
                parts += [flag_of(f), json.dumps(item) if isinstance(item, (list, dict)) else str(item)]
        else:
            text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
            parts += [flag_of(f), text]
    return shlex.join(parts)


def pickle_option(config: bool = False) -> Any:
    """One pickle policy for every model a command loads; the workflow sets it from the top-level config key
    `allow_pickle`, not per section (config: a merge recipe key)."""
    return option(
        False, help="also read pytorch_model.bin weights (loaded with torch.load(weights_only=True))", config=config
    )


def base_vocabulary_option(config: bool = False) -> Any:
    """Experts with added tokens, opt-in: one declaration for merge and extract (config: a merge recipe key)."""
    return option(
        False,
        help="experts with added tokens: keep the base's tokenizer and vocabulary, drop their extra embedding rows",
        config=config,
    )


def device_option(config: bool = False) -> Any:
    return option(
        "auto", help="auto (CUDA when present), cpu, cuda, cuda:N", pattern=r"auto|cpu|cuda(:[0-9]+)?", config=config
    )


def config_flags(cls: type, section: dict[str, Any], **values: Any) -> str:
    """The flags for a workflow config section: its keys that are options of `cls`, then `values`."""
    settable = {f.name for f, _, meta in declared(cls) if meta["config"]}
    return to_flags(cls, {**{k: v for k, v in section.items() if k in settable}, **values})
