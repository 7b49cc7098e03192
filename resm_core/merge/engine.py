"""The merge engine: streams tensors through a registered method; owns devices, dtypes and I/O.

For each tensor the base and the T deltas are loaded (fp32, on the compute device), merged, cast, and
written straight into the output shard, whose header is written first (every output's name, shape and
dtype is known up front), so no shard is held in memory. A large tensor that an elementwise rule merges
(a `blockwise` method, or the vocabulary rules of any method) goes a block of rows at a time, within
`block_mb` of working memory: the vocabulary-sized matrices of an 8B model are never whole in fp32.
What a block needs from the whole tensor (a method's per-tensor top-k thresholds, Model Stock's Gram
matrix) is worked out from the tensor's blocks before the first is merged; a random method's draws of a
block are drawn for its rows alone (counter-based, see draws.py). Other methods hold (T + 2) x the largest
tensor. On the CPU, an `elementwise` rule (task arithmetic, linear, DARE, Consensus, Model Stock, the
vocabulary rules), and a row-block method that needs no statistics of the tensor (DELLA), reads its rows as
stored and does all of its fp32 arithmetic, from the deltas to the output dtype, a cache-sized piece at a
time (`PIECE` entries, or whole rows): the same operations on the same entries, so the same bits, without
fp32 copies of a whole block in memory. Checks that can fail run before any tensor
arithmetic; the output appears atomically, with a manifest, or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from resm_core.card import CARD_NAME, RECIPE_NAME, write_merge_files
from resm_core.checkpoint.atomic import AtomicDirectory, prepare_output
from resm_core.checkpoint.finite import all_finite, fits
from resm_core.checkpoint.manifest import MANIFEST_NAME, ManifestRecorder, rebased
from resm_core.checkpoint.names import is_vocab_tensor
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter, parse_size
from resm_core.devices import resolve_device, resolve_dtype
from resm_core.errors import ConfigError, NumericError
from resm_core.hub import local_model
from resm_core.input_dirs import check_no_links
from resm_core.merge.api import MergeMethod, TensorContext, task_sum
from resm_core.merge.catalogue import get_method
from resm_core.merge.draws import uniform
from resm_core.merge.request import VOCAB_RULES, MergeRequest
from resm_core.taskvec.sources import LORA_CHUNK, DeltaRows, DeltaSource, open_expert, widest_dtype

log = logging.getLogger(__name__)


def refuse_repeated(experts: list[Path]) -> None:
    """An expert listed twice would be merged twice (its vector counted double, its conflicts with itself
    counted as agreement): refused, naming it."""
    seen: dict[Path, Path] = {}
    for path in experts:
        key = Path(path).resolve()
        if key in seen:
            raise ConfigError(
                f"experts: {path} is listed twice (also as {seen[key]}); list each expert once "
                f"(a method's per-expert weights, where it has them, give one expert more say)"
            )
        seen[key] = Path(path)


@dataclass
class WorkItem:
    """One tensor, or one row block of it, ready to merge."""

    name: str
    base: torch.Tensor | None  # None: not floating point, copied as it is (in `deltas`)
    deltas: torch.Tensor
    item: str = ""  # the block's key (see block_key) when the tensor comes in row blocks
    last: bool = True  # whether it ends the tensor
    tensor_stats: Mapping[str, Any] | None = None
    draws: torch.Tensor | None = None
    parts: list[DeltaRows] | None = None  # set: `base` holds rows as stored, merged in pieces (see PIECE)


def block_key(name: str, start: int, stop: int) -> str:
    return f"{name}[{start}:{stop}]"


DIAGNOSTICS_NAME = "merge_diagnostics.csv"
# Entries an elementwise rule merges at once on the CPU: its fp32 temporaries (the base, T deltas, the result;
# 1 MB each) stay in the cache. At 1.1B, 2**17 to 2**20 ran within the noise of each other; 2**16 was slower
# (torch's overhead per call).
PIECE = 1 << 18


class MergeJob:
    """A validated merge, ready to run: inputs opened and checked, parameters resolved."""

    def __init__(self, request: MergeRequest):
        self.request = request
        if not request.experts:
            raise ConfigError("experts: at least one expert is required")
        self.method: MergeMethod = get_method(request.method)
        self.params = self.method.resolve(request.params, len(request.experts), request.weights)
        self.vocab_rule = request.vocab_rule or self.method.default_vocab_rule
        if self.vocab_rule not in VOCAB_RULES:
            raise ConfigError(f"vocab_rule: {self.vocab_rule!r} is not one of {', '.join(VOCAB_RULES)}")
        self.device = resolve_device(request.device)
        self.out_dtype = resolve_dtype(request.out_dtype, "out_dtype") if request.out_dtype else None
        self.shard_bytes = parse_size(request.shard_size)
        refuse_repeated(request.experts)
        prepare_output(Path(request.out), request.force, [request.base, *request.experts])
        check_no_links(request.base, "base")  # its config and tokenizer files are carried into the output
        self.base = CheckpointReader(request.base, allow_pickle=request.allow_pickle)
        self.experts: list[DeltaSource] = [
            open_expert(p, request.allow_pickle, request.base_vocabulary) for p in request.experts
        ]
        config = self.base.config or {}
        self.vocab_size = config.get("vocab_size")
        self.keys = self._output_keys(config)
        for expert in self.experts:
            expert.check_against(self.base, required=set(self.keys))
            expert.check_base(self.base, request.allow_other_base)
        self.experts_dtype = widest_dtype(d for d in (e.weights_dtype() for e in self.experts) if d is not None)
        self._buffers: dict[str, torch.Tensor] = {}
        self._piece_stats: dict[str, dict[str, Any]] = {}  # a tensor in row blocks: its statistics, kept for its blocks

    def _output_keys(self, config: dict[str, Any]) -> list[str]:
        keys = list(self.base.keys)
        if (
            config.get("tie_word_embeddings")
            and "lm_head.weight" in keys
            and any(k.endswith("embed_tokens.weight") for k in keys)
        ):
            log.info("tied embeddings: lm_head.weight is not written (transformers re-ties it on load)")
            keys.remove("lm_head.weight")
        return keys

    # -- streaming -------------------------------------------------------------------------------

    def _is_float(self, name: str) -> bool:
        return self.base.dtype(name).is_floating_point

    def output_dtype(self, name: str) -> torch.dtype:
        """`out_dtype`, else the base's dtype or the experts' when wider: a LoRA delta of 1e-4 on
        weights of 0.2 is below bf16's spacing there, so a bf16 merge of fp32 experts keeps almost
        none of it (93% of the merged entries of the default grid's task arithmetic were the base's)."""
        return self.out_dtype or output_dtype(self.base.dtype(name), self.experts_dtype)

    def _rule_for(self, name: str) -> str:
        return tensor_rule(name, self.base.shape(name), self.vocab_rule, self.vocab_size)

    def load(self, name: str, start: int | None = None, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The base tensor and the stacked task deltas (or only rows start:stop of them), fp32 on the
        compute device, checked finite. A NaN or Inf in the base makes every delta non-finite there, so
        the deltas are checked, and the base only to name the culprit."""
        stored = self.base.get(name) if start is None or stop is None else self.base.get_rows(name, start, stop)
        base = stored.to(device=self.device, dtype=torch.float32)
        deltas = torch.empty((len(self.experts), *base.shape), dtype=torch.float32, device=self.device)
        for expert, row in zip(self.experts, deltas):
            if start is None or stop is None:
                expert.delta_into(name, base, row)
            else:
                expert.delta_rows_into(name, base, start, row)
        if not all_finite(deltas):
            self._check_deltas(name, base, deltas)
        return base, deltas

    def _check_deltas(self, name: str, base: torch.Tensor, deltas: torch.Tensor) -> None:
        """A NumericError naming the expert whose delta holds NaN or Inf (the base, when it is the cause)."""
        for expert, delta in zip(self.experts, deltas):
            if not all_finite(delta):
                self._check_base(name, base)
                raise NumericError(f"{expert.path}: the delta of tensor {name} holds NaN or Inf")

    def _check_base(self, name: str, base: torch.Tensor) -> None:
        if not all_finite(base):
            raise NumericError(f"{self.base.file_of(name)}: tensor {name} of the base holds NaN or Inf")

    def _stored(self, name: str, base: torch.Tensor, merged: torch.Tensor, ctx: TensorContext) -> torch.Tensor:
        """The merged tensor in its output dtype, checked finite there (one pass over the smaller copy); a
        failure is told apart afterwards: a NaN or Inf the merge made, or a finite value that overflows."""
        what = f"{self.method.name}: the merged tensor {name}"
        try:
            return fits(merged, self.output_dtype(name), what)
        except NumericError:
            if all_finite(merged):
                raise  # finite, but too large for the output dtype
            self._check_base(name, base)  # rows no expert covers carry the base alone
            raise NumericError(
                f"{what} holds NaN or Inf although its inputs are finite; nothing was written "
                f"(diagnostics: {ctx.diagnostics})"
            ) from None

    def block_rows(self, name: str) -> int | None:
        """Rows per block when `name` is merged in row blocks (a rule that allows it, and a whole-tensor
        working set, `_copies` fp32 copies of it, over `block_mb`), else None."""
        shape = self.base.shape(name)
        rule = self._rule_for(name)
        if len(shape) < 2 or not (rule != "method" or self.method.blockwise(self.params)):
            return None
        row_bytes = 4 * self._copies(name) * math.prod(shape[1:])
        if row_bytes * shape[0] <= self._whole_limit(name):
            return None
        rows = max(1, int(self.request.block_mb * 2**20) // row_bytes)
        return rows - rows % LORA_CHUNK if rows > LORA_CHUNK else rows  # whole LoRA chunks: none computed twice

    def blocks(self, name: str) -> list[tuple[int, int]] | None:
        """The row ranges `name` is merged in, or None when it is merged whole."""
        rows = self.block_rows(name)
        if rows is None:
            return None
        n_rows = self.base.shape(name)[0]
        return [(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]

    def _draws(self, name: str) -> bool:
        """Whether the method takes random draws for this tensor (drawn here, ahead of the merge)."""
        return self.method.random and self._rule_for(name) == "method"

    def _whole_limit(self, name: str) -> int:
        """The largest working set, in bytes, of a tensor merged whole (and read while another is merged)."""
        return int(self.request.block_mb * 2**20)

    def _copies(self, name: str) -> int:
        """fp32 copies of a tensor in its working set: the base, T deltas, the result, T draws."""
        n_tasks = len(self.experts)
        return n_tasks + 2 + (n_tasks if self._draws(name) else 0)

    def _copied(self, name: str) -> WorkItem:
        return WorkItem(name, None, self.base.get(name))

    def piece_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of the cache-sized pieces `name` is merged in on the CPU (see PIECE), or None when it is
        merged in fp32 blocks: any PIECE entries for an elementwise rule; whole rows for a method that takes
        row blocks and needs no statistics of the tensor (DELLA ranks within rows), a 1-D tensor whole."""
        shape = self.base.shape(name)
        if self.device.type != "cpu" or not shape:
            return None
        if self._rule_for(name) != "method" or self.method.elementwise(self.params):
            return (PIECE,)
        if not self.method.blockwise(self.params) or self._needs_statistics():
            return None
        if len(shape) == 1:
            return tuple(shape)
        return (max(1, PIECE // math.prod(shape[1:])), *shape[1:])

    def _needs_statistics(self) -> bool:
        method, params = self.method, self.params
        model_wide = method.prepare is not None and method.needs_prepare(params)
        return model_wide or self._needs_tensor_statistics()

    def _needs_tensor_statistics(self) -> bool:
        return self.method.tensor_prepare is not None and self.method.needs_tensor_prepare(self.params)

    def _read(self, name: str, start: int, stop: int) -> tuple[torch.Tensor, list[DeltaRows]]:
        """Rows start:stop of the base and of each expert's delta, as stored: what a merge in pieces reads. No
        arithmetic here: torch's parallel ops on this thread while the merging thread runs its own (two OpenMP
        teams spinning on 2 cores) made a merge in pieces twice as slow."""
        whole = start == 0 and stop == self.base.shape(name)[0]
        base = self.base.get(name) if whole else self.base.get_rows(name, start, stop)
        return base, [expert.delta_rows(name, start, stop, self.device) for expert in self.experts]

    def _inputs(
        self, name: str, start: int | None = None, stop: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[DeltaRows] | None]:
        """(base, deltas, None) loaded in fp32 as `load` does, or (base rows as stored, an empty tensor, the
        experts' rows) for a merge in pieces; the whole tensor, or rows start:stop."""
        if self.piece_shape(name) is None:
            return *self.load(name, start, stop), None
        base, parts = self._read(name, start or 0, self.base.shape(name)[0] if stop is None else stop)
        return base, base.new_empty(0), parts

    def _draws_of(self, name: str, shape: tuple[int, ...], first_row: int = 0) -> torch.Tensor | None:
        """The method's draws for rows first_row:first_row + shape[0] of `name` (see draws.py), if it takes any."""
        return uniform(self.request.seed, name, len(self.experts), shape, first_row) if self._draws(name) else None

    def _whole(self, name: str) -> WorkItem:
        base, deltas, parts = self._inputs(name)
        return WorkItem(name, base, deltas, draws=self._draws_of(name, tuple(base.shape)), parts=parts)

    def _block(self, name: str, blocks: list[tuple[int, int]], index: int, plan: dict[str, Any]) -> WorkItem:
        """Block `index` of `name`; the first one also works out what every block needs from the whole
        tensor (`plan`: the method's tensor statistics)."""
        if index == 0:
            plan.update(self._tensor_plan(name, blocks))
        start, stop = blocks[index]
        base, deltas, parts = self._inputs(name, start, stop)
        return WorkItem(
            name,
            base,
            deltas,
            item=block_key(name, start, stop),
            last=index == len(blocks) - 1,
            tensor_stats=plan.get("stats"),
            draws=self._draws_of(name, tuple(base.shape), start),
            parts=parts,
        )

    def _tensor_plan(self, name: str, blocks: list[tuple[int, int]]) -> dict[str, Any]:
        plan: dict[str, Any] = {}
        if self._rule_for(name) != "method" or self.piece_shape(name) is not None:
            return plan  # a merge in pieces gathers its statistics itself (see _piece_statistics)
        prepare = self.method.tensor_prepare
        if prepare is not None and self._needs_tensor_statistics():
            plan["stats"] = prepare(partial(self._block_stream, name, blocks), self.params, len(self.experts))
        return plan

    def work(self) -> Iterator[WorkItem]:
        """Every float tensor, whole or a row block at a time, loaded with its deltas (and draws), and the
        other tensors as they are, read one item ahead of the merge on a background thread (reading
        overlaps the arithmetic and the writing). A whole tensor over `_whole_limit` (a method that cannot
        take blocks) is read only once the previous item is done, so it is never in memory twice."""

        def tasks() -> Iterator[tuple[int, Callable[[], WorkItem]]]:
            for name in self.keys:
                if not self._is_float(name):
                    yield 1, partial(self._copied, name)
                    continue
                blocks = self.blocks(name)
                if blocks is None:
                    size = 4 * (self._copies(name) - 1) * math.prod(self.base.shape(name))
                    yield (2 if size > self._whole_limit(name) else 1), partial(self._whole, name)
                    continue
                plan: dict[str, Any] = {}
                for index in range(len(blocks)):
                    yield 1, partial(self._block, name, blocks, index, plan)

        return prefetched(tasks())

    def layout(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """Every output tensor's name, shape and dtype, in writing order: the streaming writer's plan."""
        return [
            (n, self.base.shape(n), self.output_dtype(n) if self._is_float(n) else self.base.dtype(n))
            for n in self.keys
        ]

    def method_keys(self) -> list[str]:
        """The tensors the method itself merges (not those routed by the vocab rule)."""
        return [n for n in self.keys if self._is_float(n) and self._rule_for(n) == "method"]

    def method_stream(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(key, base, deltas) of every tensor the method merges, in the blocks the merge will use."""
        for name in self.method_keys():
            blocks = self.blocks(name)
            if blocks is None:
                yield name, *self.load(name)
            else:
                yield from self._block_stream(name, blocks)

    def _block_stream(
        self, name: str, blocks: list[tuple[int, int]]
    ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(block key, base rows, delta rows) of each block of `name`: what statistics passes read."""
        for start, stop in blocks:
            yield block_key(name, start, stop), *self.load(name, start, stop)

    def merge_tensor(self, name: str, base: torch.Tensor, deltas: torch.Tensor, ctx: TensorContext) -> torch.Tensor:
        delta = merged_delta(self.method, self.params, self._rule_for(name), base, deltas, ctx)
        return delta.add_(base) if _fresh(delta, base, deltas) else base + delta

    def merge_in_pieces(self, item: WorkItem, ctx: TensorContext) -> torch.Tensor:
        """The merged rows of `item` (read as stored) in the output dtype, computed a piece at a time (see
        `piece_shape`): each piece's base, deltas, merge, checks and cast, as `load`, `merge_tensor` and
        `_stored` do them for the whole tensor, in buffers that stay in the cache. A method that needs
        statistics of a tensor it is handed whole (Model Stock's angle) first gathers them from the same pieces."""
        name, stored, parts = item.name, item.base, item.parts
        assert stored is not None and parts is not None
        n_tasks = len(parts)
        flat_out = torch.empty(stored.numel(), dtype=self.output_dtype(name))  # the writer writes it behind
        if ctx.tensor_stats is None and self._rule_for(name) == "method" and self._needs_tensor_statistics():
            ctx = replace(ctx, tensor_stats=self._piece_statistics(item))
        draws = None if item.draws is None else item.draws.reshape(n_tasks, -1)
        deltas_first = self._checks_deltas_first(name)
        for _, (start, stop), base, deltas, here in self._pieces(item):
            if deltas_first and not all_finite(deltas):
                self._check_deltas(name, base, deltas)
            piece_draws = None if draws is None else draws[:, start:stop].reshape(n_tasks, *here)
            piece = replace(ctx, draws=piece_draws)
            merged = self.merge_tensor(name, base.view(here), deltas.view(n_tasks, *here), piece)
            if not all_finite(flat_out[start:stop].copy_(merged.reshape(-1))):
                if not deltas_first:  # a NaN or Inf an expert brought, named (the deltas are as read)
                    self._check_deltas(name, base, deltas)
                self._stored(name, base, merged, piece)  # else says why: an overflow, or a NaN the merge made
        return flat_out.view(stored.shape)

    def _piece_statistics(self, item: WorkItem) -> dict[str, Any]:
        """The method's statistics of `item`'s whole tensor, from its pieces, on the merging thread (torch's
        threads on the reading thread as well slow both down). A tensor in row blocks reads them block by
        block at its first block, and keeps them for the others."""
        name = item.name
        if item.item and name in self._piece_stats:
            return self._piece_stats.pop(name) if item.last else self._piece_stats[name]
        blocks = self.blocks(name) if item.item else None
        others = [] if blocks is None else blocks[1:]  # this item is the tensor's first block: read only the others

        def items() -> Iterator[WorkItem]:  # a new pass each call, as a statistics stream may be read twice
            yield item
            yield from (self._read_item(name, start, stop) for start, stop in others)

        prepare = self.method.tensor_prepare
        assert prepare is not None
        stats = prepare(lambda: self._piece_stream(items()), self.params, len(self.experts))
        if item.item and not item.last:
            self._piece_stats[name] = stats
        return stats

    def _read_item(self, name: str, start: int, stop: int) -> WorkItem:
        base, deltas, parts = self._inputs(name, start, stop)
        return WorkItem(name, base, deltas, parts=parts)

    def _piece_stream(self, items: Iterable[WorkItem]) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(key, base, deltas) of each piece of `items` in turn, for a statistics pass; valid until the next."""
        return ((key, base, deltas) for item in items for key, _, base, deltas, _ in self._pieces(item))

    def _pieces(
        self, item: WorkItem
    ) -> Iterator[tuple[str, tuple[int, int], torch.Tensor, torch.Tensor, tuple[int, ...]]]:
        """(key, (start, stop) in the item's flat entries, base, deltas [T, n], piece shape) of each piece of
        `item`: fp32, in buffers reused for the next piece."""
        name, stored, parts = item.name, item.base, item.parts
        assert stored is not None and parts is not None
        shape = self.piece_shape(name)
        assert shape is not None
        n, n_tasks, step, row = stored.numel(), len(parts), math.prod(shape), math.prod(shape[1:])
        flat_stored = stored.reshape(-1)
        base_buffer = self._scratch("base", min(step, n))
        deltas_buffer = self._scratch("deltas", n_tasks * min(step, n))
        for start in range(0, n, step):
            stop = min(start + step, n)
            here = (stop - start,) if len(shape) == 1 else ((stop - start) // row, *shape[1:])
            base = base_buffer[: stop - start].copy_(flat_stored[start:stop])
            deltas = deltas_buffer[: n_tasks * (stop - start)].view(n_tasks, stop - start)
            for part, delta in zip(parts, deltas):
                part.into(delta, base, start, stop)
            yield item.item or name, (start, stop), base, deltas, here

    def _checks_deltas_first(self, name: str) -> bool:
        """Whether the deltas are checked finite before the merge. A rule that sums every delta with a weight
        (`affine` methods, the vocabulary rules that sum) carries a NaN or Inf of any delta into the output,
        whose check then names the expert: one pass over T deltas saved. Other rules may drop entries."""
        rule = self._rule_for(name)
        return not (rule in ("task_arithmetic", "mean") or (rule == "method" and self.method.affine))

    def _scratch(self, key: str, numel: int) -> torch.Tensor:
        """`numel` fp32 entries of a buffer kept for the whole merge, for temporaries that do not outlive a
        piece: fresh memory for every block costs a page fault per 4 KB."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self._buffers[key] = torch.empty(numel)
        return buffer[:numel]

    def _record_dtype(self, config_path: Path) -> None:
        """config.json names the dtype the weights are stored in, so that loaders that honour it
        (transformers with dtype="auto", vLLM) do not round an fp32 merge back to the base's bf16."""
        stored = widest_dtype(self.output_dtype(n) for n in self.keys if self._is_float(n))
        if stored is None or not config_path.is_file():
            return
        config = json.loads(config_path.read_text())
        name = str(stored).removeprefix("torch.")
        keys = ["dtype"] + (["torch_dtype"] if "torch_dtype" in config else [])  # transformers 5 and 4 names
        if any(config.get(k) != name for k in keys):
            config.update(dict.fromkeys(keys, name))
            config_path.write_text(json.dumps(config, indent=2) + "\n")

    def run(self) -> dict[str, Any]:
        req = self.request
        recorder = ManifestRecorder({"base": Path(req.base), "experts": [Path(p) for p in req.experts]})
        try:
            stats: dict[str, Any] = {}
            if self.method.prepare is not None and self.method.needs_prepare(self.params):
                n_method = len(self.method_keys())
                log.info("%s: statistics pass over %d tensors", self.method.name, n_method)
                stats = self.method.prepare(
                    lambda: tqdm(
                        self.method_stream(),
                        total=n_method,
                        desc="statistics",
                        unit="tensor",
                        disable=not req.progress,
                        leave=False,
                    ),
                    self.params,
                    len(self.experts),
                )
            diagnostics: list[dict[str, Any]] = []
            with ShardedWriter(
                req.out,
                self.shard_bytes,
                force=req.force,
                metadata={"resm_method": self.method.name},
                inputs=[req.base, *req.experts],
                layout=self.layout(),
            ) as writer:
                progress = tqdm(total=len(self.keys), desc=f"merge {self.method.name}", unit="tensor",
                                disable=not req.progress)  # fmt: skip
                tensor_diagnostics: dict[str, Any] = {}
                for item in self.work():
                    name, base, deltas = item.name, item.base, item.deltas
                    if base is None:  # not floating point: copied as it is
                        writer.add(name, deltas)
                        progress.update()
                        continue
                    ctx = TensorContext(
                        name=name,
                        seed=req.seed,
                        stats=stats,
                        diagnostics=tensor_diagnostics,  # shared by the blocks of a tensor
                        item=item.item,
                        tensor_stats=item.tensor_stats,
                        draws=item.draws,
                    )
                    if item.parts is not None:
                        merged = self.merge_in_pieces(item, ctx)
                    else:
                        merged = self._stored(name, base, self.merge_tensor(name, base, deltas, ctx), ctx)
                    writer.add_rows(name, merged)
                    last = item.last
                    del base, deltas, merged, item, ctx  # a block's memory goes before the next is merged
                    if last:
                        diagnostics.append({"tensor": name, **tensor_diagnostics})
                        tensor_diagnostics = {}
                        progress.update()
                progress.close()
                writer.copy_aux_files(self.base.directory)
                self._record_dtype(writer.staging_dir / "config.json")
                writer.write_text(DIAGNOSTICS_NAME, _diagnostics_csv(diagnostics))
                if "layer_rank_fraction" in stats:
                    writer.write_json(
                        "resm_layer_stats.json", {k: stats[k] for k in ("layer_outlier_ratio", "layer_rank_fraction")}
                    )
                manifest = recorder.build(
                    relative_to=Path(req.out),
                    action="merge",
                    device=str(self.device),
                    method=self.method.name,
                    params=_jsonable(self.params),
                    seed=req.seed,
                    vocab_rule=self.vocab_rule,
                    out_dtype=str(self.out_dtype or "auto"),
                    experts_dtype=str(self.experts_dtype),
                    shard_size=self.shard_bytes,
                    n_tensors=len(self.keys),
                    dropped_vocabulary_rows={str(e.path): e.extra_rows for e in self.experts if e.extra_rows},
                )
                writer.write_json(MANIFEST_NAME, manifest)
                write_merge_files(writer.staging_dir, manifest, Path(req.out))
            if req.records:
                keep_records(Path(req.out), Path(req.records))
            return manifest
        except BaseException:
            recorder.cancel()
            raise
        finally:
            self.base.close()


RECORDS = (CARD_NAME, RECIPE_NAME, MANIFEST_NAME, DIAGNOSTICS_NAME, "resm_layer_stats.json", "config.json")


def prefetched(tasks: Iterator[tuple[int, Callable[[], Any]]]) -> Iterator[Any]:
    """The results of `tasks` (weight, thunk), each computed on one background thread ahead of its use:
    at most 2 weight units are in memory at once (an item of weight 2 waits until the previous is done).
    An exception in a thunk is raised here; leaving early stops the thread."""
    permits = threading.Semaphore(2)
    done: queue.Queue[tuple[int, Any, BaseException | None] | None] = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for weight, thunk in tasks:
                for _ in range(weight):
                    permits.acquire()
                if stop.is_set():
                    return
                done.put((weight, thunk(), None))
            done.put(None)
        except BaseException as error:  # handed to the consumer, which raises it
            done.put((0, None, error))

    thread = threading.Thread(target=produce, name="merge-read", daemon=True)
    thread.start()
    try:
        while (item := done.get()) is not None:
            weight, value, error = item
            if error is not None:
                raise error
            yield value
            del value, item
            for _ in range(weight):
                permits.release()
    finally:
        stop.set()
        for _ in range(2):
            permits.release()
        thread.join()


def keep_records(model: Path, records: Path) -> None:
    """The small files that describe a merge, beside it, so they outlive the weights. The manifest names local
    inputs relative to the model: it is rewritten relative to the records, and the card and recipe are made
    from it as the merge made them, so the recipe still rebuilds the merge from there."""
    with AtomicDirectory(records, force=True, inputs=[model]) as staging:
        for name in RECORDS:
            if (model / name).is_file() and name not in (MANIFEST_NAME, CARD_NAME, RECIPE_NAME):
                shutil.copy2(model / name, staging / name)
        manifest = rebased(json.loads((model / MANIFEST_NAME).read_text()), model, records)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        write_merge_files(staging, manifest, model)


def output_dtype(base: torch.dtype, experts: torch.dtype | None) -> torch.dtype:
    return widest_dtype([base] + ([experts] if experts is not None else [])) or base


def tensor_rule(name: str, shape: tuple[int, ...], vocab_rule: str, vocab_size: int | None) -> str:
    """'method' for tensors the method merges; the vocab rule for embedding/LM-head matrices."""
    if vocab_rule != "method" and is_vocab_tensor(name, tuple(shape), vocab_size):
        return vocab_rule
    return "method"


def merged_delta(
    method: MergeMethod, params: dict[str, Any], rule: str, base: torch.Tensor, deltas: torch.Tensor, ctx: TensorContext
) -> torch.Tensor:
    """The merged delta of one tensor under its routing rule."""
    if rule == "method":
        delta = method.fn(base, deltas, params, ctx)
    elif rule == "task_arithmetic":
        delta = task_sum(deltas, params["weights"], params.get("scale", 1.0))
    elif rule == "mean":
        delta = task_sum(deltas, params["weights"], 1.0 / deltas.shape[0])
    else:  # base
        delta = torch.zeros_like(base)
    if delta.shape != base.shape:
        raise RuntimeError(
            f"{method.name} returned shape {tuple(delta.shape)} for tensor {ctx.name} of shape {tuple(base.shape)}"
        )
    ctx.record("rule", rule)
    return delta


def _fresh(delta: torch.Tensor, base: torch.Tensor, deltas: torch.Tensor) -> bool:
    """Whether a method's result is a tensor of its own, so the base can be added into it in place (the
    same sum as base + delta, without a tensor-sized allocation)."""
    storage = delta.untyped_storage().data_ptr()
    return (
        delta.dtype == base.dtype
        and delta.is_contiguous()
        and storage not in (base.untyped_storage().data_ptr(), deltas.untyped_storage().data_ptr())
    )


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in params.items()}


def _diagnostics_csv(rows: list[dict[str, Any]]) -> str:
    columns = ["tensor", "rule"] + sorted({k for r in rows for k in r} - {"tensor", "rule"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()})
    return buf.getvalue()


def merge(request: MergeRequest) -> dict[str, Any]:
    """Resolve hub ids, validate, then run; returns the manifest."""
    request = replace(
        request,
        base=local_model(request.base, request.allow_pickle),
        experts=[local_model(e, request.allow_pickle) for e in request.experts],
    )
    return MergeJob(request).run()


def merge_state_dicts(
    base: dict[str, torch.Tensor],
    experts: list[dict[str, torch.Tensor]],
    method: str,
    params: dict[str, Any] | None = None,
    weights: list[float] | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
    vocab_rule: str | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """In-memory reference merge of whole state dicts (tests, notebooks). Same method functions and
    routing as the engine; model-wide statistics are computed from the given tensors."""
    m = get_method(method)
    resolved = m.resolve(params, len(experts), weights)
    rule = vocab_rule or m.default_vocab_rule
    names = [n for n, t in base.items() if t.is_floating_point()]

    def stream() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for n in names:
            if tensor_rule(n, tuple(base[n].shape), rule, vocab_size) == "method":
                b = base[n].float()
                yield n, b, torch.stack([e[n].float() - b for e in experts])

    if stats is None:
        stats = m.prepare(stream, resolved, len(experts)) if m.prepare and m.needs_prepare(resolved) else {}
    out = {}
    for n, t in base.items():
        if not t.is_floating_point():
            out[n] = t
            continue
        b = t.float()
        deltas = torch.stack([e[n].float() - b for e in experts])
        ctx = TensorContext(name=n, seed=seed, stats=stats)
        d = merged_delta(m, resolved, tensor_rule(n, tuple(t.shape), rule, vocab_size), b, deltas, ctx)
        out[n] = (b + d).to(output_dtype(t.dtype, widest_dtype(e[n].dtype for e in experts)))
    return out
