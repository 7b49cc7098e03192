"""The configuration and command-line references, generated from their one declaration each (the config's JSON
schema with its `x-options` request dataclasses; the `resm` parser), so the docs site never restates them by hand
(docs/hooks.py puts them into their pages at build time)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from typing import Any


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**root["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " / ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(_type(n) for n in node["anyOf"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_type(node.get('items', {})) or 'values'}"
    return str(kind) if kind else ("object" if "properties" in node else "")


def _limits(node: dict[str, Any]) -> str:
    parts = [
        f"{label} {node[key]}"
        for key, label in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
        if key in node
    ]
    return ", ".join(parts)


def _rows(node: dict[str, Any], root: dict[str, Any], path: str, depth: int) -> Iterator[tuple[str, dict[str, Any]]]:
    node = _resolve(node, root)
    yield path, node
    if depth == 0:
        return
    for key, child in (node.get("properties") or {}).items():
        yield from _rows(child, root, f"{path}.{key}", depth - 1)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _rows(extra, root, f"{path}.NAME", depth - 1)
    items = node.get("items")
    if isinstance(items, dict) and ("properties" in _resolve(items, root) or "additionalProperties" in items):
        yield from _rows(items, root, f"{path}[]", depth - 1)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def config_reference() -> str:
    """Every key of the workflow config: its type, default, range and meaning, section by section."""
    from resm_core.validation import load_schema

    root = load_schema("config.schema.yaml")
    required = set(root.get("required", []))
    out: list[str] = []
    for key, node in root["properties"].items():
        rows = list(_rows(node, root, key, depth=3))
        top = rows[0][1]
        out += [f"## `{key}`", ""]
        said = _cell(top.get("description", ""))
        said = f"{said}{'.' if said and not said.endswith('.') else ''}" + (" Required." if key in required else "")
        out += [said, ""] if said else []
        if len(rows) == 1:
            default = f" Default: `{json.dumps(top['default'])}`." if "default" in top else ""
            out += [f"Type: {_type(top)}.{default}", ""]
            continue
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for path, sub in rows[1:]:
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
            meaning = " ".join(x for x in (_cell(sub.get("description", "")), _limits(sub)) if x)
            out.append(f"| `{path}` | {_cell(_type(sub))} | {_cell(default)} | {meaning} |")
        out.append("")
    return "\n".join(out)


def cli_reference() -> str:
    """`--help` of `resm` and of every command, as the installed parser prints it (100 columns)."""
    from resm_core.cli import _commands, build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        commands: list[tuple[str, argparse.ArgumentParser]] = [("resm", parser)]
        commands += [(command.prog, command) for _, command in _commands(parser)]
        out: list[str] = []
        for prog, command in commands:
            out += [f"## `{prog}`", "", "```text", command.format_help().rstrip(), "```", ""]
        return "\n".join(out)
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before
