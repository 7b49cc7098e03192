"""The workflow config, checked whole before any job runs: the schema first, then every name resolved against
its registry (merge methods and their parameters, benchmarks and their options, the mixtures' judge, data
sources), so `snakemake -n` names a bad key instead of a job failing after hours of training.

Only the Snakefile and `resm report --config` import this module; no stage does, so its imports of every
registry do not put their code into any stage's fingerprint.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError, ResmError
from resm_core.grid import combo_dims, hp_name, hub_datasets
from resm_core.validation import load_schema, validate
from resm_core.yamlfile import check_bounded, load_yaml

_PATH_SAFE = re.compile(r"[A-Za-z0-9_.+-]+")  # a hyperparameter set's name is a directory of the grid
NAME_BYTES = 200  # a name that becomes a directory: under the 255 bytes of a path component, with room for staging
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    config = load_yaml(path.read_text(), str(path)) or {}
    check_config(config, str(path))
    return config


def check_config(config: dict, source: str = "config") -> None:
    """Schema first (names the key), then what a schema cannot say. Numbers written as YAML 1.1 reads them
    as strings (`1e-3`) become numbers, in place, so every rule sees what the user meant."""
    check_bounded(config, source)  # Snakemake loads the config file itself: aliases are already shared
    _check_finite(config, source)
    schema = load_schema("config.schema.yaml")
    read_numbers(config, schema)
    missing = [key for key in schema.get("required", []) if key not in config]
    if missing and config:
        raise ConfigError(
            f"{source}: {', '.join(missing)} missing: a full config needs them, and a preset that sets only some keys "
            f"(configs/decisive.yaml) layers on one, later files winning: "
            f"snakemake --configfile config.yaml configs/decisive.yaml"
        )
    validate(config, "config.schema.yaml", source)
    checks = (
        _check_combos,
        _check_models,
        _check_mixtures,
        _check_merges,
        _check_frontier,
        _check_benchmarks,
        _check_sources,
        _check_outside_models,
        _check_training_gpus,
        _check_seeds,
    )
    for check in checks:
        check(config, source)


def read_numbers(value: Any, schema: dict) -> Any:
    """`value` with each string where the schema wants a number read as that number ("1e-3" -> 0.001)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = read_numbers(item, sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [read_numbers(item, schema["items"]) for item in value]
    wanted = schema.get("type")
    if isinstance(value, str) and wanted in ("number", "integer") and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        if wanted == "number":
            return number
        return int(number) if number.is_integer() else value
    return value


def _check_finite(value: Any, source: str, where: str = "") -> None:
    """No NaN or infinity anywhere, numbers written as text included: a schema's bounds let NaN through (every
    comparison with it is false), and `1e999` reads as infinity."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, source, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, source, f"{where}[{i}]")
    elif (isinstance(value, float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip()))) and not (
        math.isfinite(float(value))
    ):
        raise ConfigError(f"{source}: {where}: {value!r} is not a finite number")


def path_component(name: str, where: str) -> None:
    """A name the grid turns into a directory: safe characters, short enough for every file system."""
    if not _PATH_SAFE.fullmatch(name):
        raise ConfigError(f"{where}: {name[:60]!r} names a directory: use letters, digits and . _ + -")
    if len(name.encode()) > NAME_BYTES:
        raise ConfigError(
            f"{where}: {name[:60]!r}... is {len(name.encode())} bytes; a directory name holds {NAME_BYTES}"
        )


def _check_seeds(config: dict, source: str) -> None:
    training = config["training"]
    seeds = training.get("seeds")
    if seeds and "seed" in training and training["seed"] != seeds[0]:
        raise ConfigError(
            f"{source}: training.seed is {training['seed']} but training.seeds starts with {seeds[0]}; the first "
            f"of the seeds is the run at the plain paths: drop training.seed or make it {seeds[0]}"
        )


def _check_training_gpus(config: dict, source: str) -> None:
    """A data-parallel run on GPUs takes one GPU per process: the job must ask for as many."""
    processes = config["training"].get("processes", 1)
    gpus = config.get("resources", {}).get("train", {}).get("gpu", 0)
    if gpus and processes != gpus:
        raise ConfigError(
            f"{source}: training.processes is {processes}, but resources.train.gpu asks for {gpus} GPU(s); "
            f"a training job runs one process per GPU, so set them equal"
        )


def _check_combos(config: dict, source: str) -> None:
    for combo in config["combos"]:
        dims = combo_dims(combo)
        if sorted(dims) != dims or len(set(dims)) != len(dims) or set(dims) - set(DIMS):
            raise ConfigError(
                f"{source}: combos: {combo!r} must be 2 or 3 distinct dims, sorted, joined by '+' "
                f"(e.g. {'+'.join(sorted(dims)) if not set(dims) - set(DIMS) else 'harmlessness+helpfulness'})"
            )


def _check_models(config: dict, source: str) -> None:
    models = config["evaluation"].get("models", {})
    for name, opts in (config["evaluation"].get("benchmarks") or {}).items():
        for key in ("reward_model", "guard_model"):
            if opts and key in opts and opts[key] not in models:
                raise ConfigError(
                    f"{source}: evaluation.benchmarks.{name}.{key}: {opts[key]!r} is not a name in "
                    f"evaluation.models ({', '.join(models) or 'none defined'})"
                )


def _check_mixtures(config: dict, source: str) -> None:
    from resm_core.judges import check_spec

    mixtures = config.get("mixtures") or {}
    ratios = mixtures.get("ratios") or {}
    for dim in ratios:
        if dim not in DIMS:
            raise ConfigError(f"{source}: mixtures.ratios.{dim}: not a dimension ({', '.join(DIMS)})")
    if "ratio" in mixtures.get("strategies", []):
        missing = sorted({d for combo in config["combos"] for d in combo_dims(combo)} - set(ratios))
        if missing:
            raise ConfigError(
                f"{source}: mixtures.ratios: the ratio strategy needs a ratio for {', '.join(missing)} "
                f"(e.g. ratios: {{{', '.join(f'{d}: 1' for d in missing)}}})"
            )
    judge = mixtures.get("judge") or ""
    if judge and judge != "refusal":  # the workflow's own refusal judge; every other spec as `resm data mix` reads it
        try:
            check_spec(judge)
        except ConfigError as exc:
            raise ConfigError(f"{source}: mixtures.judge: {exc}") from None
    if judge.startswith("reward:"):
        _check_judge_is_not_the_evaluator(config, judge, source)


def _check_judge_is_not_the_evaluator(config: dict, judge: str, source: str) -> None:
    models = config["evaluation"].get("models", {})
    scorers = {
        name: opts["reward_model"]
        for name, opts in (config["evaluation"].get("benchmarks") or {}).items()
        if opts and "reward_model" in opts
    }
    named = judge.removeprefix("reward:")
    clash = [name for name, model in scorers.items() if models.get(model, model) == models.get(named, named)]
    if clash:
        raise ConfigError(
            f"{source}: mixtures.judge: {judge!r} is the model that scores "
            f"evaluation.benchmarks.{clash[0]}; a mixture weighted by the evaluator's own reward "
            f"model would be judged by it too: name a different model in evaluation.models"
        )


def _check_merges(config: dict, source: str) -> None:
    """Each method by name, each hyperparameter set resolved for every combo size it merges."""
    from resm_core.merge.catalogue import get_method

    sizes = sorted({len(combo_dims(c)) for c in config["combos"]})
    for name, sets in config["merges"].items():
        try:
            method = get_method(name)
            for params in sets or [{}]:
                for key, value in (params or {}).items():
                    if not _PATH_SAFE.fullmatch(f"{key}-{value}"):
                        raise ConfigError(f"{key}: {value!r} names a directory: use letters, digits and . _ + -")
                path_component(hp_name(params), "the hyperparameter set's directory")
                for n_tasks in sizes:
                    method.resolve(params, n_tasks)
        except ConfigError as exc:
            raise ConfigError(f"{source}: merges.{name}: {exc}") from None


def _check_frontier(config: dict, source: str) -> None:
    """Each traced combo in `combos`, each tracing method in `merges` and one that takes per-expert weights;
    something traces it; the headline's merges cannot be mistaken for front points."""
    from resm_core.grid import FRONT_VARIANT
    from resm_core.merge.catalogue import get_method

    front = config.get("frontier")
    if front is None:
        return
    for combo in front.get("combos") or []:
        if combo not in config["combos"]:
            raise ConfigError(
                f"{source}: frontier.combos: {combo!r} is not one of combos ({', '.join(config['combos'])})"
            )
    for method in front.get("merges") or []:
        if method not in config["merges"]:
            raise ConfigError(
                f"{source}: frontier.merges: {method!r} is not in merges ({', '.join(config['merges'])}); the front "
                f"takes its other hyperparameters from the sets there, as chosen on validation"
            )
        if not get_method(method).uses_weights:
            raise ConfigError(
                f"{source}: frontier.merges: {method} takes no per-expert weights, so it cannot trace a front"
            )
    if not front.get("merges") and not front.get("mixtures", True):
        raise ConfigError(f"{source}: frontier: neither merges nor mixtures trace it")
    for method, sets in config["merges"].items():
        for params in sets or [{}]:
            if hp_name(params).startswith(FRONT_VARIANT):
                raise ConfigError(f"{source}: merges.{method}: {hp_name(params)!r} is a frontier point's name")


def _check_benchmarks(config: dict, source: str) -> None:
    from resm_core.evaluate import harness
    from resm_core.evaluate.benchmarks import get_benchmark

    for name, opts in (config["evaluation"].get("benchmarks") or {}).items():
        try:
            get_benchmark(name, opts).check_options(opts or {})
            if harness.is_harness(opts):
                harness.check_task(harness.Spec.of(name, opts))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


_NEEDS = {"trained": set(), "hub": {"repo"}, "local": {"path"}}


def _check_model_source(spec: dict, where: str) -> None:
    kind, given = spec["kind"], set(spec) - {"kind"}
    if kind == "lora":
        if len(given & {"repo", "path"}) != 1:
            raise ConfigError(f"{where}: a lora adapter needs repo (hub, with revision) or path, one of them")
        if "revision" in given and "repo" not in given:
            raise ConfigError(f"{where}: revision is for a hub adapter (repo)")
        return
    allowed = _NEEDS[kind] | ({"revision"} if kind == "hub" else set())
    if not _NEEDS[kind] <= given or given - allowed:
        wanted = ", ".join(sorted(_NEEDS[kind])) or "no other key"
        raise ConfigError(f"{where}: kind {kind} takes {wanted} (got {', '.join(sorted(given)) or 'none'})")


def _check_outside_models(config: dict, source: str) -> None:
    """Experts and mixture models made elsewhere: each spec well-formed, each named mixture a new arm."""
    from resm_core.data.request import STRATEGIES

    for dim, spec in (config.get("experts") or {}).items():
        _check_model_source(spec, f"{source}: experts.{dim}")
    for combo, named in ((config.get("mixtures") or {}).get("models") or {}).items():
        if combo not in config["combos"]:
            raise ConfigError(f"{source}: mixtures.models.{combo}: not one of combos ({', '.join(config['combos'])})")
        for name, spec in named.items():
            where = f"{source}: mixtures.models.{combo}.{name}"
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in STRATEGIES:
                raise ConfigError(f"{where}: a name of lowercase letters, digits and _, not a strategy name")
            path_component(name, where)
            if spec["kind"] == "trained":
                raise ConfigError(f"{where}: kind trained is what mixtures.strategies are; name hub, local or lora")
            _check_model_source(spec, where)


def _check_sources(config: dict, source: str) -> None:
    from resm_core.data.sources import resolve

    for dim, section in (config.get("dims") or {}).items():
        for i, spec in enumerate((section or {}).get("sources") or []):
            try:
                resolve(spec, dim)
            except ResmError as exc:
                raise ConfigError(f"{source}: dims.{dim}.sources.{i}: {exc}") from None
    try:
        hub_datasets(config)  # each fetched hub source has a directory of its own
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
