"""The merge-method API that method modules import: `Param`, `register`, the per-tensor context and the
parameters many methods share. The catalogue of methods (resm_core.merge.catalogue) imports the method
modules, so nothing here imports a method and no import runs in a circle.

A method is a pure function on one tensor, `fn(base, deltas, params, ctx) -> merged_delta`, where
`deltas` stacks the T task deltas of that tensor (fp32, shape [T, *base.shape]). Methods that need
model-wide information (a global top-k threshold, per-layer ranks) also declare `prepare`, run by
the engine as a streaming statistics pass before the merge; its result reaches `fn` as `ctx.stats`.
Parameters are declared with their defaults and ranges so that a bad recipe fails before any I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from resm_core.errors import ConfigError
from resm_core.merge.draws import uniform

TensorStream = Callable[[], Iterator[tuple[str, torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, default, accepted range and a one-line meaning."""

    name: str
    default: Any
    doc: str
    kind: str = "float"  # float | int | bool | choice | float_list
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def coerce(self, value: Any, method: str) -> Any:
        where = f"{method}: parameter {self.name}"
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{where}: may not be null")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if self.kind == "choice":
            if str(value) not in self.choices:
                raise ConfigError(f"{where}: {value!r} is not one of {', '.join(self.choices)}")
            return str(value)
        if self.kind == "float_list":
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}: expected a list of numbers, got {value!r}")
            return [self._number(v, where, float) for v in value]
        number = self._number(value, where, int if self.kind == "int" else float)
        self._check_range(number, where)
        return number

    def _number(self, value: Any, where: str, kind: type) -> float | int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, str) and value.strip().lower() in (".inf", "+.inf", "-.inf"):
            value = value.strip().replace(".", "")  # YAML's spelling of infinity
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if math.isnan(number):
            raise ConfigError(f"{where}: may not be NaN")
        if kind is int:
            if number != int(number):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number

    def _check_range(self, x: float, where: str) -> None:
        lo_ok = self.low is None or (x > self.low if self.low_open else x >= self.low)
        hi_ok = self.high is None or (x < self.high if self.high_open else x <= self.high)
        if not (lo_ok and hi_ok):
            raise ConfigError(f"{where}: {x} is outside {self.range_text()}")

    def range_text(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(self.choices) + "}"
        if self.kind in ("bool", "float_list"):
            return self.kind
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{lo}, {hi}{right}"


@dataclass
class TensorContext:
    """Per-tensor context handed to a method: the tensor's name, the run's seed, the statistics
    pass result, and a place to record per-tensor diagnostics (ranks kept, outlier ratios...).

    When the engine merges a tensor in row blocks, each block gets its own context sharing the
    tensor's `diagnostics`: `item` names the block (the key of its entries in `stats` and
    `tensor_stats`), `tensor_stats` holds the method's statistics over the whole tensor, and `draws`
    the block's share of the tensor's random draws."""

    name: str
    seed: int = 0
    stats: Mapping[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    item: str = ""
    tensor_stats: Mapping[str, Any] | None = None
    draws: torch.Tensor | None = None

    @property
    def key(self) -> str:
        """The name statistics are keyed by: the block's when merged in blocks, else the tensor's."""
        return self.item or self.name

    def tensor_seed(self) -> int:
        """A seed derived from (run seed, tensor name): random steps give the same result whatever
        the tensor order, the device, or whether the merge streams or runs in memory."""
        digest = hashlib.sha256(f"{self.seed}:{self.name}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & (2**63 - 1)

    def uniform(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """U[0, 1) draws of `shape` = [T, *tensor shape]: task t's are its counter-based stream for this
        tensor (see draws.py), in row-major order. The engine draws them ahead, on its reading thread (a row
        block's rows directly); otherwise they are drawn here, on the CPU. They are drawn for one use: the
        method may overwrite them."""
        if self.draws is None:
            self.draws = uniform(self.seed, self.name, shape[0], tuple(shape[1:]))
        if tuple(self.draws.shape) != tuple(shape):
            raise RuntimeError(f"tensor {self.key}: draws of shape {tuple(self.draws.shape)}, needed {tuple(shape)}")
        return self.draws

    def record(self, key: str, value: Any) -> None:
        self.diagnostics[key] = value


MergeFn = Callable[[torch.Tensor, torch.Tensor, Mapping[str, Any], TensorContext], torch.Tensor]
PrepareFn = Callable[[TensorStream, Mapping[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: MergeFn
    params: tuple[Param, ...]
    summary: str
    reference: str
    family: str = "task_arithmetic"  # "svd" methods default to task arithmetic on vocabulary tensors
    random: bool = False  # draws its randomness from ctx.uniform (the engine draws it ahead, and in blocks)
    uses_weights: bool = True
    prepare: PrepareFn | None = None
    needs_prepare: Callable[[Mapping[str, Any]], bool] = lambda params: False
    validate: Callable[[Mapping[str, Any], int], None] | None = None
    blockwise: Callable[[Mapping[str, Any]], bool] = lambda params: False
    elementwise: Callable[[Mapping[str, Any]], bool] = lambda params: False
    tensor_prepare: PrepareFn | None = None
    needs_tensor_prepare: Callable[[Mapping[str, Any]], bool] = lambda params: False
    affine: bool = False  # each merged entry is sum_t c_t tau_t, c free of the values (task arithmetic, linear, DARE)

    @property
    def default_vocab_rule(self) -> str:
        return "task_arithmetic" if self.family == "svd" else "method"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(
        self, user: Mapping[str, Any] | None, n_tasks: int, weights: list[float] | None = None
    ) -> dict[str, Any]:
        """Defaults filled in, types coerced, ranges and cross-parameter constraints checked."""
        user = dict(user or {})
        known = {p.name for p in self.params}
        unknown = sorted(set(user) - known)
        if unknown:
            accepted = f"known: {', '.join(sorted(known))}" if known else f"{self.name} takes no parameters"
            raise ConfigError(f"{self.name}: unknown parameter {unknown[0]!r}; {accepted}")
        resolved = {p.name: p.coerce(user.get(p.name, p.default), self.name) for p in self.params}
        if weights is not None:
            if not self.uses_weights and any(w != 1.0 for w in weights):
                raise ConfigError(f"{self.name}: takes no per-model weights (got {weights})")
            if len(weights) != n_tasks:
                raise ConfigError(f"{self.name}: weights has {len(weights)} entries for {n_tasks} experts")
            if any(not math.isfinite(w) for w in weights):
                raise ConfigError(f"{self.name}: weights must be finite, got {weights}")
        resolved["weights"] = list(weights) if weights is not None else [1.0] * n_tasks
        if self.validate is not None:
            self.validate(resolved, n_tasks)
        return resolved


def _always(answer: bool) -> Callable[[Mapping[str, Any]], bool]:
    return lambda params: answer


def _either(
    a: bool | Callable[[Mapping[str, Any]], bool], b: bool | Callable[[Mapping[str, Any]], bool]
) -> Callable[[Mapping[str, Any]], bool]:
    first, second = (f if callable(f) else _always(f) for f in (a, b))
    return lambda params: first(params) or second(params)


METHODS: dict[str, MergeMethod] = {}  # filled by @register as the catalogue imports the method modules


def register(
    name: str,
    *,
    params: tuple[Param, ...] = (),
    summary: str,
    reference: str,
    family: str = "task_arithmetic",
    random: bool = False,
    uses_weights: bool = True,
    prepare: PrepareFn | None = None,
    needs_prepare: Callable[[Mapping[str, Any]], bool] | None = None,
    validate: Callable[[Mapping[str, Any], int], None] | None = None,
    blockwise: bool | Callable[[Mapping[str, Any]], bool] = False,
    elementwise: bool | Callable[[Mapping[str, Any]], bool] = False,
    tensor_prepare: PrepareFn | None = None,
    needs_tensor_prepare: Callable[[Mapping[str, Any]], bool] | None = None,
    affine: bool = False,
) -> Callable[[MergeFn], MergeFn]:
    """`blockwise` (or a test of the parameters): each output entry depends on the same entries of the
    inputs, given statistics of the whole tensor, so the engine may hand the method row blocks of a
    large tensor (memory that does not grow with the vocabulary); the result must equal the whole
    tensor's, bit for bit. `tensor_prepare` computes those statistics from a stream of the tensor's
    blocks (keyed by `ctx.item`), as `prepare` does over the whole model; it reaches the method as
    `ctx.tensor_stats` when `needs_tensor_prepare(params)`. Random methods take their draws from
    `ctx.uniform`, which the engine can split into blocks. `elementwise` (implies `blockwise`): each output
    entry depends on the same entries of the base, the deltas and the draws alone, given the tensor's
    statistics from `tensor_prepare` if it has any (the engine then gathers them first, from the same pieces
    or blocks), so the engine may hand the method any flat slice of a tensor ([T, n] deltas), in pieces that
    stay in the CPU's cache; the result must be the same, bit for bit. `affine`: each merged entry is a
    weighted sum of every task's same entry (weights that do not depend on the values), so a NaN or Inf in a
    delta always reaches the output and the engine checks the deltas only when the output is not finite."""

    def decorator(fn: MergeFn) -> MergeFn:
        if name in METHODS:
            raise RuntimeError(f"merge method {name} registered twice")
        METHODS[name] = MergeMethod(
            name=name,
            fn=fn,
            params=params,
            summary=summary,
            reference=reference,
            family=family,
            random=random,
            uses_weights=uses_weights,
            prepare=prepare,
            needs_prepare=needs_prepare or (lambda p: prepare is not None),
            validate=validate,
            blockwise=_either(blockwise, elementwise),
            elementwise=elementwise if callable(elementwise) else _always(elementwise),
            tensor_prepare=tensor_prepare,
            needs_tensor_prepare=needs_tensor_prepare or (lambda p: tensor_prepare is not None),
            affine=affine,
        )
        return fn

    return decorator


# -- parameters shared by many methods ---------------------------------------------------------


def scale_param(default: float) -> Param:
    return Param(
        "scale", default, "scaling coefficient lambda applied to the merged task vector", low=0.0, low_open=True
    )


def density_param(default: float, doc: str = "fraction of entries kept per task") -> Param:
    return Param("density", default, doc, low=0.0, high=1.0, low_open=True)


GRANULARITY = Param(
    "granularity",
    "tensor",
    "where top-k magnitudes are ranked: per tensor (mergekit, PEFT) or over the "
    "whole model (original TIES code; costs two extra streaming passes)",
    kind="choice",
    choices=("tensor", "model"),
)


def weights_column(params: Mapping[str, Any], deltas: torch.Tensor) -> torch.Tensor:
    """Per-task weights shaped to broadcast against the stacked deltas."""
    w = torch.tensor(params["weights"], dtype=deltas.dtype, device=deltas.device)
    return w.view(-1, *([1] * (deltas.dim() - 1)))


def task_sum(deltas: torch.Tensor, weights: list[float], scale: float) -> torch.Tensor:
    """lambda * sum_t w_t tau_t, contracted without a [T, ...] weighted temporary."""
    w = torch.tensor(weights, dtype=deltas.dtype, device=deltas.device)
    summed: torch.Tensor = torch.tensordot(w * scale, deltas, dims=1)
    return summed
