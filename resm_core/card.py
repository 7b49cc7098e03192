"""Model cards: every model resm writes (a merge, a trained expert or mixture) says what it is in a `README.md`
with Hugging Face front-matter, so it can be published with `hf upload` as it stands; a merge also gets a
`resm_recipe.yaml` that `resm merge resm_recipe.yaml` reproduces it from.

Inputs are named as the manifest records them: by hub repo and commit where they came from the hub, else
by their path relative to the model (never a machine's absolute path) and the SHA-256 of their weight files.
Metadata is `huggingface_hub`'s validated `ModelCardData`: `base_model` lists every parent with a hub id (a
merge's base and experts, as mergekit's cards do), so the hub's model tree shows them.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import yaml

RECIPE_NAME = "resm_recipe.yaml"
CARD_NAME = "README.md"


def md_text(value: Any) -> str:
    """Free text (a path, a repo or file name) as one line of markdown that renders as that text: no newline
    to start a new block, no `|` to break a table, no HTML, no link or emphasis syntax (`_` inside a word, as
    in tensor names, is no emphasis and stays as it is)."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    text = re.sub(r"([\\`*{}\[\]()#+!|~])", r"\\\1", text)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def input_name(entry: dict[str, Any]) -> str:
    """How a card or recipe names one input: `repo@commit` from the hub, else its path."""
    hub = entry.get("hub")
    if hub:
        return f"{hub['repo']}@{hub['commit']}" if hub.get("commit") else hub["repo"]
    return str(entry["path"])


def _weights_digest(entry: dict[str, Any]) -> str:
    digests = [f"{md_text(name)} {digest[:16]}" for name, digest in sorted(entry.get("files", {}).items())]
    weights = [d for d in digests if ".safetensors" in d or ".bin" in d]
    return ", ".join(weights or digests[:3])


def _inputs_table(manifest: dict[str, Any]) -> str:
    rows = ["| role | model | weights (SHA-256, first 16 hex) |", "|---|---|---|"]
    for role, entries in manifest.get("inputs", {}).items():
        for entry in entries:
            rows.append(f"| {md_text(role)} | {md_text(input_name(entry))} | {_weights_digest(entry)} |")
    return "\n".join(rows)


def _parents(manifest: dict[str, Any], roles: tuple[str, ...]) -> list[dict[str, Any]]:
    inputs = manifest.get("inputs", {})
    return [entry for role in roles for entry in inputs.get(role, [])]


def _base_model(manifest: dict[str, Any], roles: tuple[str, ...]) -> list[str]:
    """Hub ids of the parents, once each (front-matter `base_model` names hub models only; local inputs are in
    the body's table)."""
    names = [e["hub"]["repo"] for e in _parents(manifest, roles) if e.get("hub")]
    return list(dict.fromkeys(names))


def _license(manifest: dict[str, Any], roles: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """(the license every parent that states one states, or None; a line for the body when they differ)."""
    stated = {input_name(e): e["license"] for e in _parents(manifest, roles) if e.get("license")}
    if len(set(stated.values())) == 1:
        return next(iter(stated.values())), []
    if not stated:
        return None, []
    each = "; ".join(f"{md_text(name)}: {md_text(lic)}" for name, lic in stated.items())
    return None, [
        "",
        f"The inputs state different licenses ({each}): which applies to this model is for you to decide.",
    ]


def merge_recipe(manifest: dict[str, Any], out: Path) -> dict[str, Any]:
    """A `resm merge` recipe that reproduces the merge a manifest describes."""
    inputs = manifest["inputs"]
    weights = manifest.get("params", {}).get("weights")
    experts = [input_name(e) for e in inputs["experts"]]
    recipe: dict[str, Any] = {
        "base": input_name(inputs["base"][0]),
        "experts": [{"path": p, "weight": w} for p, w in zip(experts, weights)] if weights else experts,
        "method": manifest["method"],
        "params": {k: v for k, v in manifest.get("params", {}).items() if k != "weights"},
        "seed": manifest.get("seed", 0),
        "out": Path(out).name,  # where `resm merge RECIPE` writes, from where it runs (--out overrides)
    }
    if manifest.get("vocab_rule"):
        recipe["vocab_rule"] = manifest["vocab_rule"]
    if manifest.get("dropped_vocabulary_rows"):
        recipe["base_vocabulary"] = True
    if manifest.get("out_dtype") not in (None, "auto"):
        recipe["out_dtype"] = manifest["out_dtype"].removeprefix("torch.")
    return recipe


def merge_card(manifest: dict[str, Any], out: Path, summary: dict[str, Any] | None = None) -> str:
    params = dict(manifest.get("params", {}))
    lines = [
        f"# {md_text(Path(out).name)}",
        "",
        f"A merge of {len(manifest['inputs']['experts'])} models into their base with **{manifest['method']}**, "
        f"made by [resm-3h](https://github.com/resm-3h/resm-3h). `resm merge {RECIPE_NAME}` reproduces it.",
        "",
        "## Parameters",
        "",
        "```yaml",
        yaml.safe_dump(
            {
                "method": manifest["method"],
                "params": params,
                "seed": manifest.get("seed"),
                "vocab_rule": manifest.get("vocab_rule"),
            },
            sort_keys=False,
        ).strip(),
        "```",
        "",
        "## Inputs",
        "",
        _inputs_table(manifest),
    ]
    for expert, rows in (manifest.get("dropped_vocabulary_rows") or {}).items():
        dropped = ", ".join(f"{n} rows of {t}" for t, n in rows.items())
        kept = "The base's tokenizer and vocabulary are kept (--base-vocabulary)"
        lines += ["", f"{kept}: {md_text(expert)} lost {md_text(dropped)}."]
    return _card(
        manifest,
        ["merge", "resm", manifest["method"]],
        "merge",
        lines + _evaluation(summary) + _provenance(manifest),
        parents=("base", "experts"),
    )


def trained_card(manifest: dict[str, Any], out: Path, summary: dict[str, Any] | None = None) -> str:
    data = manifest.get("data", {})
    lines = [
        f"# {md_text(Path(out).name)}",
        "",
        f"Fine-tuned from its base by [resm-3h](https://github.com/resm-3h/resm-3h): {manifest.get('objective')} "
        f"with a {manifest.get('adapter')} adapter, {manifest.get('steps')} steps, seed {manifest.get('seed')}.",
        "",
        "## Data",
        "",
        "```yaml",
        yaml.safe_dump(data, sort_keys=False).strip() if data else "{}",
        "```",
        "",
        "## Inputs",
        "",
        _inputs_table(manifest),
    ]
    return _card(manifest, ["resm", "3h", str(manifest.get("objective"))], "finetune", lines + _evaluation(summary))


def _evaluation(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    rows = ["", "## Evaluation (resm evaluate, test items)", "", "| dimension | score | 95% interval |"]
    rows.append("|---|---|---|")
    for dim, d in summary.get("dims", {}).items():
        rows.append(f"| {dim} | {d['score']:.3f} | [{d['ci_low']:.3f}, {d['ci_high']:.3f}] |")
    return rows


def _provenance(manifest: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    return ["", "## Provenance", "", f"Made on {manifest.get('device')} at {manifest.get('started_at')}; {versions}."]


def _card(
    manifest: dict[str, Any], tags: list[str], relation: str, body: list[str], parents: tuple[str, ...] = ("base",)
) -> str:
    from huggingface_hub import ModelCardData

    base = _base_model(manifest, parents)
    license_, license_note = _license(manifest, parents)
    body = body + license_note
    data = ModelCardData(
        library_name="transformers",
        license=license_,
        tags=tags,
        base_model=(base[0] if len(base) == 1 else base) or None,
        base_model_relation=relation if base else None,
    )
    if not base:  # a local base: the relation still says what this model is
        data.base_model_relation = relation
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"


def write_merge_files(staging: Path, manifest: dict[str, Any], out: Path) -> None:
    (staging / CARD_NAME).write_text(merge_card(manifest, out))
    (staging / RECIPE_NAME).write_text(yaml.safe_dump(merge_recipe(manifest, out), sort_keys=False))
