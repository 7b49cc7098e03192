"""The merge-vs-mix grid as data: which arms a config asks for and how their cells are named on disk.

Names that become paths are strings built one way only, so one cell has one name: a combo is its sorted
dims joined by `+`; a hyperparameter set is its sorted `key-value` pairs joined by `_` ("default" when empty).
"""

from __future__ import annotations

from dataclasses import dataclass

from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError


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


@dataclass(frozen=True)
class Arm:
    """One model of the grid. Its path (the directory under models/ and eval/, and the name reports print)
    is built by `path` and read by `parse`, nowhere else."""

    kind: str  # base | expert | mixture | merge
    dim: str = ""  # expert: its dimension
    family: str = ""  # mixture: the strategy; merge: the method
    combo: str = ""  # mixture, merge
    variant: str = ""  # merge: the hyperparameter set's name (hp_name)

    @classmethod
    def expert(cls, dim: str) -> Arm:
        return cls("expert", dim=dim)

    @property
    def path(self) -> str:
        if self.kind == "base":
            return "base"
        if self.kind == "expert":
            return f"expert/{self.dim}"
        if self.kind == "mixture":
            return f"mix/{self.family}/{self.combo}"
        return f"merge/{self.family}/{self.combo}/{self.variant}"

    @classmethod
    def parse(cls, path: str) -> Arm:
        parts = path.split("/")
        shapes = {
            ("base", 1): lambda: cls("base"),
            ("expert", 2): lambda: cls("expert", dim=parts[1]),
            ("mix", 3): lambda: cls("mixture", family=parts[1], combo=parts[2]),
            ("merge", 4): lambda: cls("merge", family=parts[1], combo=parts[2], variant=parts[3]),
        }
        make = shapes.get((parts[0], len(parts)))
        if make is None:
            raise ConfigError(f"arm {path!r}: expected base, expert/DIM, mix/STRATEGY/COMBO or merge/METHOD/COMBO/HP")
        return make()

    def describe(self) -> dict[str, str]:
        """The grid table's columns: an expert's combo is its dimension, its family `expert`."""
        if self.kind in ("base", "expert"):
            return {"kind": self.kind, "combo": self.dim, "family": self.kind, "variant": ""}
        return {"kind": self.kind, "combo": self.combo, "family": self.family, "variant": self.variant}


def outside_models(config: dict) -> dict[str, dict]:
    """Arm path -> model source, for every arm the config names instead of training (experts of kind hub,
    local or lora; ready-made mixture models)."""
    out = {Arm.expert(d).path: s for d, s in (config.get("experts") or {}).items() if s["kind"] != "trained"}
    for combo, named in (config["mixtures"].get("models") or {}).items():
        out.update({Arm("mixture", family=name, combo=combo).path: spec for name, spec in named.items()})
    return out


def grid_arms(config: dict) -> list[Arm]:
    """Every model the config asks to evaluate."""
    out = [Arm("base")] + [Arm.expert(d) for d in DIMS]
    out += [Arm("mixture", family=s, combo=c) for s in config["mixtures"]["strategies"] for c in config["combos"]]
    named = config["mixtures"].get("models") or {}
    out += [Arm("mixture", family=name, combo=c) for c in config["combos"] for name in named.get(c, {})]
    out += [Arm("merge", family=m, combo=c, variant=h) for m, c, h, _ in merge_cells(config)]
    return out


def arms(config: dict) -> list[str]:
    """Every model to evaluate, as its path under models/ and eval/."""
    return [arm.path for arm in grid_arms(config)]


def hub_datasets(config: dict) -> dict[str, dict]:
    """name -> what `resm data fetch` downloads, for every hub source the dims name (once each)."""
    from resm_core.data.sources import hub_download

    found: dict[str, dict] = {}
    for dim, section in (config.get("dims") or {}).items():
        for spec in section.get("sources") or []:
            download = hub_download(spec)
            if download is None:
                continue
            name = download["name"]
            if name in found and found[name]["download"] != download:
                raise ConfigError(
                    f"dims.{dim}.sources: two different hub sources are named {name!r}; give one a `name:`"
                )
            found[name] = {"spec": spec, "download": download}
    return found
