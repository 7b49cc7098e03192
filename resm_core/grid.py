"""The merge-vs-mix grid as data: which arms a config asks for and how their cells are named on disk.

Names that become paths are strings built one way only, so one cell has one name: a combo is its sorted
dims joined by `+`; a hyperparameter set is its sorted `key-value` pairs joined by `_` ("default" when empty).

Training runs (`training.seeds`): an arm trained here is trained once per seed. The first seed's run keeps
the arm's plain path, so adding seeds to a finished grid reuses it; each other seed's run lives under
`seedN/` (`seed1/expert/honesty`, `seed1/merge/ties/...`: a merge of that seed's experts). The base and
models made elsewhere have one run.
"""

from __future__ import annotations

import re
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


def expert_dims(config: dict) -> list[str]:
    """The dims with an expert: those some combo merges (an expert of no combo would be trained for nothing)
    and those whose expert the config names (`experts:`, evaluated beside the grid)."""
    used = {d for combo in config["combos"] for d in combo_dims(combo)} | set(config.get("experts") or {})
    return [d for d in DIMS if d in used]


def grid_arms(config: dict) -> list[Arm]:
    """Every model the config asks to evaluate."""
    out = [Arm("base")] + [Arm.expert(d) for d in expert_dims(config)]
    out += [Arm("mixture", family=s, combo=c) for s in config["mixtures"]["strategies"] for c in config["combos"]]
    named = config["mixtures"].get("models") or {}
    out += [Arm("mixture", family=name, combo=c) for c in config["combos"] for name in named.get(c, {})]
    out += [Arm("merge", family=m, combo=c, variant=h) for m, c, h, _ in merge_cells(config)]
    out += [p.arm for p in frontier_points(config) if p.arm not in out]
    return out


# The trade-off frontier (`frontier:`): a lattice on each combo's simplex of dimension weights. A point's name is
# its weights in the combo's (sorted) dim order, `0.25-0.75`; a merge traces it as the variant `front-0.25-0.75`
# (per-expert weights k * w over k experts, so the centre is the grid's own unit-weight merge), a mixture as the
# strategy `ratio-0.25-0.75` (the ratio mixture with those shares; a zero share leaves that dim out).
FRONT_VARIANT = "front-"
FRONT_MIXTURE = "ratio-"


def lattice(n_dims: int, points: int) -> list[tuple[float, ...]]:
    """Every weight vector on the simplex whose entries are multiples of 1/(points-1), vertices first."""
    steps = points - 1

    def compositions(total: int, parts: int) -> list[tuple[int, ...]]:
        if parts == 1:
            return [(total,)]
        return [(i, *rest) for i in range(total, -1, -1) for rest in compositions(total - i, parts - 1)]

    grid = [tuple(c / steps for c in comp) for comp in compositions(steps, n_dims)]
    return sorted(grid, key=lambda w: -max(w))


def point_name(weights: tuple[float, ...]) -> str:
    return "-".join(f"{round(w, 4):g}" for w in weights)


def point_weights(name: str) -> tuple[float, ...]:
    """The weights a point's name carries, summing to 1 again (names are rounded: 0.3333-0.6667)."""
    weights = [float(w) for w in name.split("-")]
    return tuple(w / sum(weights) for w in weights)


@dataclass(frozen=True)
class FrontPoint:
    """One arm of a frontier: the family that traces it (a merge method, or `mixture`) and its weights."""

    arm: Arm
    tracer: str  # the merge method, or "mixture"
    weights: tuple[float, ...]  # per dim of the combo, in its sorted order; they sum to 1

    @property
    def merge_weights(self) -> list[float]:
        return [len(self.weights) * w for w in self.weights]


def frontier_points(config: dict) -> list[FrontPoint]:
    """Every point of every combo's frontier, for each merge method that traces it and for the mixtures."""
    front = config.get("frontier")
    if not front:
        return []
    out = []
    for combo in front.get("combos") or config["combos"]:
        for weights in lattice(len(combo_dims(combo)), int(front.get("points", 5))):
            name = point_name(weights)
            for method in front.get("merges", []):
                arm = Arm("merge", family=method, combo=combo, variant=FRONT_VARIANT + name)
                out.append(FrontPoint(arm, method, weights))
            if front.get("mixtures", True):
                out.append(FrontPoint(Arm("mixture", family=FRONT_MIXTURE + name, combo=combo), "mixture", weights))
    return out


def front_point_of(path: str) -> FrontPoint | None:
    """The frontier point an arm path names (merge/METHOD/COMBO/front-W, mix/ratio-W/COMBO), else None."""
    arm = Arm.parse(path)
    if arm.kind == "merge" and arm.variant.startswith(FRONT_VARIANT):
        return FrontPoint(arm, arm.family, point_weights(arm.variant[len(FRONT_VARIANT) :]))
    if arm.kind == "mixture" and arm.family.startswith(FRONT_MIXTURE):
        return FrontPoint(arm, "mixture", point_weights(arm.family[len(FRONT_MIXTURE) :]))
    return None


def mixture_ratios(strategy: str, combo: str) -> dict[str, float] | None:
    """The ratios a mixture strategy name carries: a frontier point's shares, else None."""
    point = front_point_of(Arm("mixture", family=strategy, combo=combo).path)
    return dict(zip(combo_dims(combo), point.weights)) if point else None


def training_seeds(config: dict) -> list[int]:
    """The seeds each trained arm is trained with: `training.seeds`, else the one `training.seed`."""
    training = config["training"]
    return list(training.get("seeds") or [training.get("seed", 0)])


def run_prefix(seed: int, seeds: list[int]) -> str:
    """The directory prefix of one training run: none for the first seed, `seedN/` for the others."""
    return "" if seed == seeds[0] else f"seed{seed}/"


_RUN = re.compile(r"seed([0-9]+)/")


def run_of(path: str) -> tuple[str, int | None]:
    """(the arm a run path belongs to, its seed prefix's seed or None for the plain path)."""
    match = _RUN.match(path)
    return (path[match.end() :], int(match.group(1))) if match else (path, None)


def runs_by_arm(paths: list[str]) -> dict[str, list[str]]:
    """Run paths grouped by their arm, in the order given (the plain path first where present)."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(run_of(path)[0], []).append(path)
    return {arm: sorted(runs, key=lambda r: run_of(r)[1] is not None) for arm, runs in groups.items()}


def replicated(config: dict, arm: Arm) -> bool:
    """Is this arm trained here (so it has one run per seed)? Experts and mixtures unless made elsewhere;
    merges when at least one of their experts is trained."""
    outside = outside_models(config)
    if arm.kind == "expert" or arm.kind == "mixture":
        return arm.path not in outside
    if arm.kind == "merge":
        return any(Arm.expert(d).path not in outside for d in combo_dims(arm.combo))
    return False


def arms(config: dict) -> list[str]:
    """Every model to evaluate, as its path under models/ and eval/: each arm's first run, then the runs of
    the other seeds."""
    first = grid_arms(config)
    seeds = training_seeds(config)
    extra = [run_prefix(s, seeds) + arm.path for s in seeds[1:] for arm in first if replicated(config, arm)]
    return [arm.path for arm in first] + extra


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
