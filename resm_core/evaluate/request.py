"""What `resm evaluate` is asked to do: the single declaration of each evaluation option (flag, key in the
workflow config's `evaluation` section and in an `--config` file, default, help, range), and the one
function that layers a config file, benchmark options and flags into a request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from resm_core.errors import ConfigError
from resm_core.options import build, declared, device_option, option, pickle_option
from resm_core.yamlfile import load_yaml, short

BACKENDS = ("transformers", "vllm")


@dataclass
class EvalRequest:
    SECTION: ClassVar[str] = "evaluation"  # where its options sit in a config; errors name it

    out: Path = option(help="output directory", config=False)
    data_root: Path = option(help="root of the built datasets ({dim}/test.jsonl)", flag="--data", config=False)
    model: Path | None = option(None, help="model directory (or --answers)", config=False)
    answers: Path | None = option(
        None,
        help="JSONL of answers made elsewhere (benchmark, id, response per line): scored as an arm, no model "
        "loaded; generated benchmarks only",
        config=False,
    )
    arm: str | None = option(
        None, help="name of the arm in the outputs (default: the model directory's name)", config=False
    )
    judges: Path | None = option(None, help="directory written by `resm judge fit`", config=False)
    benchmarks: dict = option(
        help="benchmark name -> options (n, n_val, sources, models)",
        cli=False,
        config=False,
        default_factory=lambda: _default_benchmarks(),
    )
    backend: str = option("transformers", help="generation backend", choices=BACKENDS)
    max_new_tokens: int = option(48, help="tokens per generated answer", minimum=1)
    batch_size: int = option(8, help="prompts per generation batch", minimum=1)
    temperature: float = option(0.0, help="sampling temperature (0: greedy)", minimum=0)
    n_bootstrap: int = option(1000, help="bootstrap replicates of each interval", minimum=10, flags=("--bootstrap",))
    seed: int = option(0, help="seed of sampling and the bootstrap", config=False)
    device: str = device_option()
    allow_pickle: bool = pickle_option()
    asset_root: Path | None = option(
        None, help="asset cache (default: $RESM_CACHE or resources/)", flag="--cache", config=False
    )
    force: bool = option(False, help="replace the output if it exists", config=False)
    progress: bool = option(True, config=False, cli=False)

    def __post_init__(self) -> None:
        if (self.model is None) == (self.answers is None):
            raise ConfigError("evaluate: give exactly one of --model (a model to run) and --answers (answers to score)")
        if self.arm is None:
            self.arm = Path(self.model).name if self.model is not None else Path(str(self.answers)).stem


def _default_benchmarks() -> dict[str, dict]:
    """Every default benchmark, with its own options."""
    from resm_core.evaluate.benchmarks import DEFAULT

    return {name: {} for name in DEFAULT}


FILE_KEYS = {"benchmarks", "seed", *(f.name for f, _, meta in declared(EvalRequest) if meta["config"])}


def read_config(path: Path) -> dict:
    """An `--config` file: the keys of the workflow config's `evaluation` section that evaluation reads."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    config = load_yaml(path.read_text(), str(path)) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of evaluation keys, got {type(config).__name__}")
    unknown = set(config) - FILE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(FILE_KEYS))}")
    return config


def _benchmark_map(value: Any, where: str) -> dict[str, dict]:
    """benchmark -> options (a list of names means default options), each options a mapping."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = {name: {} for name in value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of benchmark -> options, got {short(value)}")
    out = {}
    for name, opts in value.items():
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping of options, got {short(opts)}")
        out[str(name)] = dict(opts or {})
    return out


def _check_options(benchmarks: dict[str, dict]) -> None:
    """Each known benchmark's options, as the workflow's config check reads them (unknown names are named
    by the request's own check)."""
    from resm_core.evaluate.benchmarks import BENCHMARKS, get_benchmark

    for name, opts in benchmarks.items():
        if name in BENCHMARKS or opts.get("kind") is not None:
            get_benchmark(name, opts).check_options(opts)


def request_from(
    flags: dict[str, Any],
    config: dict | None = None,
    options: Any = None,
    names: list[str] | None = None,
    counts: list[tuple[str, Any]] | None = None,
) -> EvalRequest:
    """Flags over the config file; the benchmarks from the config, replaced by `options` (benchmark ->
    options), narrowed to `names`, with `counts` (BENCH=N) setting each one's n."""
    config = dict(config or {})
    benchmarks = _benchmark_map(config.pop("benchmarks", None) or _default_benchmarks(), "evaluation.benchmarks")
    if options is not None:
        benchmarks = _benchmark_map(options, "--options")
    if names:
        benchmarks = {name: benchmarks.get(name, {}) for name in names}
    for name, n in counts or []:
        if name not in benchmarks:
            raise ConfigError(f"--n {name}={n}: {name} is not among the benchmarks being run")
        benchmarks[name] = {**(benchmarks[name] or {}), "n": n}
    _check_options(benchmarks)
    return build(EvalRequest, {**config, **flags, "benchmarks": benchmarks}, "evaluation")
