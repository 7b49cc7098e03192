"""Where a task vector comes from: a fine-tuned model, a saved task vector, or a PEFT LoRA adapter.

All three give the same thing to the engine: `delta(name, base_tensor)`, the dense fp32 change of
one base tensor, computed only when asked for, so experts are streamed like the base.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from resm_core.checkpoint.compat import check_config, check_tensors, check_tokenizer
from resm_core.checkpoint.digests import sha256_file
from resm_core.checkpoint.manifest import MANIFEST_NAME
from resm_core.checkpoint.names import is_vocab_tensor
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.errors import CheckpointError, CompatibilityError
from resm_core.jsonfile import read_json
from resm_core.yamlfile import short

log = logging.getLogger(__name__)

TASKVEC_MARKER = "resm_taskvec.json"
LORA_CHUNK = 1024  # rows of a LoRA product computed at once (see LoraSource._dense)
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class DeltaRows:
    """Rows of one expert's delta as read, before any arithmetic: `values` (as stored, or fp32) minus the
    base's rows when `minus_base`; no values: a zero delta. The engine reads these on its reading thread and
    takes the fp32 delta of any flat slice of them where it merges, in cache-sized pieces."""

    values: torch.Tensor | None
    minus_base: bool

    def into(self, out: torch.Tensor, base: torch.Tensor, start: int, stop: int) -> None:
        """Entries start:stop of the flattened delta into `out`, `base` being the base's same entries (fp32):
        the same fp32 arithmetic whatever the slice."""
        if self.values is None:
            out.zero_()
            return
        values = self.values.reshape(-1)[start:stop]
        if self.minus_base and values.dtype.itemsize <= 4:
            torch.sub(values, base, out=out)  # exact in fp32, so the same bits as a copy, then a subtraction
            return
        out.copy_(values)
        if self.minus_base:
            out.sub_(base)


class DeltaSource:
    """A full fine-tuned model: delta = expert - base."""

    kind = "model"
    covers_all_keys = True

    def __init__(self, path: Path, allow_pickle: bool = False, base_vocabulary: bool = False):
        self.path = Path(path)
        self.reader = CheckpointReader(self.path, allow_pickle=allow_pickle)
        self.directory = self.reader.directory
        self.base_vocabulary = base_vocabulary  # keep the base's vocabulary: extra embedding rows are dropped
        self.extra_rows: dict[str, int] = {}  # tensor -> rows beyond the base's (filled by check_against)

    def stored(self, name: str, base: torch.Tensor) -> torch.Tensor:
        """The stored tensor, cut to the base's rows where the expert has added tokens."""
        tensor = self.reader.get(name)
        return tensor[: base.shape[0]] if name in self.extra_rows else tensor

    @property
    def config(self) -> dict | None:
        return self.reader.config

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self.reader.shape(k) for k in self.reader.keys}

    def provides(self, name: str) -> bool:
        return name in self.reader

    def weights_dtype(self) -> torch.dtype | None:
        """The precision the expert's own weights were stored in (the engine never stores a merge at
        a lower precision than its experts): the widest floating dtype among the first tensors of its
        files. Asking every tensor would touch every tensor's slice of the long-lived memory maps,
        which slowed the SVDs of the merge that followed by 20%."""
        first: dict[Path, str] = {}
        for key in self.reader.keys:
            first.setdefault(self.reader.file_of(key), key)
        return widest_dtype(self.reader.dtype(k) for k in first.values())

    def delta(self, name: str, base: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(base, dtype=torch.float32)
        self.delta_into(name, base, out)
        return out

    def delta_into(self, name: str, base: torch.Tensor, out: torch.Tensor) -> None:
        """Write the delta into a preallocated fp32 buffer (no temporaries: copy_ converts dtype)."""
        out.copy_(self.stored(name, base))
        out.sub_(base)

    def delta_rows(self, name: str, start: int, stop: int, device: torch.device) -> DeltaRows:
        """Rows start:stop of the delta, as read (see DeltaRows); what is computed (a LoRA product) is
        computed on `device`."""
        return DeltaRows(self.reader.get_rows(name, start, stop), minus_base=True)

    def delta_rows_into(self, name: str, base_rows: torch.Tensor, start: int, out: torch.Tensor) -> None:
        """The delta of rows start:start+len(base_rows) only: what a merge in row blocks reads."""
        rows = self.delta_rows(name, start, start + base_rows.shape[0], out.device)
        rows.into(out.view(-1), base_rows.reshape(-1), 0, out.numel())

    def check_base(self, base: CheckpointReader, allow_other: bool = False) -> None:
        """A full model or an adapter carries no record of the base it was extracted against."""

    def check_against(self, base: CheckpointReader, required: set[str] | None = None) -> None:
        """Config, tokenizer, keys and shapes agree with the base; `required` names the base
        tensors this source must provide (default: all of them)."""
        if self.kind == "model" and self.path.is_dir() and self.config is None:
            raise CompatibilityError(
                f"{self.directory}: no config.json; a full-model expert is a Hugging Face model directory "
                f"(its architecture is checked against the base's)"
            )
        check_config(base.directory, base.config, self.directory, self.config, self.base_vocabulary)
        check_tokenizer(base.directory, self.directory, self.base_vocabulary)
        vocab_size = (base.config or {}).get("vocab_size")
        shapes = {k: base.shape(k) for k in base.keys}
        vocab = {k for k, s in shapes.items() if is_vocab_tensor(k, s, vocab_size)} if self.base_vocabulary else set()
        self.extra_rows = check_tensors(
            shapes, self.shapes(), self.path, require_all=self.covers_all_keys, required=required, extra_rows_of=vocab
        )


class TaskVectorSource(DeltaSource):
    """A directory written by `resm extract`: the stored tensors are the deltas."""

    kind = "task_vector"

    def check_base(self, base: CheckpointReader, allow_other: bool = False) -> None:
        """A task vector added to a base other than the one it was extracted from is a different model: its
        manifest's digests of the base's weight files must match (digests are cached, so this is cheap)."""
        manifest = self.directory / MANIFEST_NAME
        recorded = read_json(manifest, CheckpointError).get("inputs", {}).get("base") if manifest.is_file() else None
        if not recorded:
            return
        digests = recorded[0].get("files", {})
        for weights in base.files:
            if digests.get(weights.name) != sha256_file(weights):
                what = f"{self.directory}: extracted from the base {recorded[0].get('path')}, not {base.directory} "
                what += f"({weights.name} differs)"
                if not allow_other:
                    raise CompatibilityError(f"{what}; pass --allow-other-base to merge it onto this base anyway")
                log.warning("%s; merging anyway (--allow-other-base)", what)
                return

    def weights_dtype(self) -> torch.dtype | None:
        """The expert's own precision as `resm extract` recorded it (a task vector of a bf16 expert is
        stored in fp32 by default, but the expert was bf16); the stored dtype for older task vectors."""
        marker = read_json(self.directory / TASKVEC_MARKER, CheckpointError)
        recorded = marker.get("expert_dtype")
        return getattr(torch, recorded) if recorded else super().weights_dtype()

    def delta(self, name: str, base: torch.Tensor) -> torch.Tensor:
        """The stored delta; `base` only gives the device and the rows (a task vector needs no base)."""
        return self.stored(name, base).to(device=base.device, dtype=torch.float32)

    def delta_into(self, name: str, base: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(self.stored(name, base))

    def delta_rows(self, name: str, start: int, stop: int, device: torch.device) -> DeltaRows:
        return DeltaRows(self.reader.get_rows(name, start, stop), minus_base=False)


class LoraSource(DeltaSource):
    """A PEFT LoRA adapter made dense: delta = scale * B @ A per target module (scale = alpha/r,
    or alpha/sqrt(r) with rsLoRA); tensors the adapter does not touch have a zero delta, and
    `modules_to_save` copies count as full replacements."""

    kind = "lora"
    covers_all_keys = False
    _KEY_RE = re.compile(
        r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$"
    )
    # PEFT saves the layer under a LoRA on an embedding (or a tied LM head) as `MODULE.base_layer.weight`: the
    # base's tensor as the adapter's model had it, resized where the vocabulary grew
    _BASE_LAYER_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.base_layer\.weight$")

    def __init__(self, path: Path, allow_pickle: bool = False, base_vocabulary: bool = False):
        super().__init__(path, allow_pickle, base_vocabulary)
        cfg_path = self.directory / ADAPTER_CONFIG
        self.adapter_config = read_json(cfg_path, CheckpointError)
        peft_type = self.adapter_config.get("peft_type", "LORA")
        if peft_type != "LORA":
            raise CheckpointError(f"{cfg_path}: peft_type {peft_type} is not supported (only LORA)")
        self.rslora = bool(self.adapter_config.get("use_rslora", False))
        self.fan_in_fan_out = bool(self.adapter_config.get("fan_in_fan_out", False))
        self.alpha_pattern = self.adapter_config.get("alpha_pattern") or {}
        self.rank_pattern = self.adapter_config.get("rank_pattern") or {}
        for key in ("alpha_pattern", "rank_pattern"):
            patterns = getattr(self, key)
            if not isinstance(patterns, dict) or not all(_finite_number(v) for v in patterns.values()):
                raise CheckpointError(f"{cfg_path}: {key} must map patterns to numbers, got {short(patterns)}")
            for pattern in patterns:
                why = unbounded_pattern(pattern)
                if why:
                    raise CheckpointError(f"{cfg_path}: {key}: the pattern {short(pattern)} {why}")
        alpha = self.adapter_config.get("lora_alpha", 8)
        if not _finite_number(alpha):
            raise CheckpointError(f"{cfg_path}: lora_alpha must be a number, got {short(alpha)}")
        self.lora_alpha = float(alpha)
        self.base_dir = self.adapter_config.get("base_model_name_or_path")
        self._pairs: dict[str, dict[str, str]] = {}
        self._full: dict[str, str] = {}
        self._base_layers: dict[str, str] = {}  # base tensor -> the adapter's copy of it (see check_against)
        for key in self.reader.keys:
            if "lora_magnitude_vector" in key:
                raise CheckpointError(f"{self.path}: tensor {key} belongs to DoRA, which is not supported")
            m = self._KEY_RE.match(key)
            layer = self._BASE_LAYER_RE.match(key)
            if m:
                self._pairs.setdefault(m.group("module") + ".weight", {})[m.group("part")] = key
            elif layer:
                self._base_layers[layer.group("module") + ".weight"] = key
            else:
                self._full[key.removeprefix("base_model.model.")] = key
        for target, parts in self._pairs.items():
            if not ({"lora_A", "lora_B"} <= parts.keys() or {"lora_embedding_A", "lora_embedding_B"} <= parts.keys()):
                raise CheckpointError(f"{self.path}: module {target} lacks its A or B matrix ({sorted(parts)})")

    @property
    def config(self) -> dict | None:
        return None  # an adapter carries no model config; shapes are checked per tensor

    def _alpha(self, target: str) -> float:
        module = target.removesuffix(".weight")
        for pattern, alpha in self.alpha_pattern.items():
            if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):  # PEFT's rule: `(.*\.)?(PATTERN)$`
                return float(alpha)
        return self.lora_alpha

    def _dense(self, target: str, device: torch.device, rows: slice = slice(None)) -> torch.Tensor:
        """scale * B @ A as the base tensor is laid out, or only its `rows`. The product is taken in aligned
        chunks of LORA_CHUNK rows, so any rows come out bit-identical whether the tensor is merged whole or
        in row blocks of any size (a GEMM over fewer rows may round differently)."""
        parts = self._pairs[target]
        embedding = "lora_A" not in parts
        a = self.reader.get(parts["lora_embedding_A" if embedding else "lora_A"]).to(device, torch.float32)
        b = self.reader.get(parts["lora_embedding_B" if embedding else "lora_B"]).to(device, torch.float32)
        rank = a.shape[0]
        by_columns = embedding or self.fan_in_fan_out  # rows of the base tensor are columns of A
        n_rows = a.shape[1] if by_columns else b.shape[0]
        start, stop, _ = rows.indices(n_rows)
        pieces = []
        for c0 in range(start - start % LORA_CHUNK, stop, LORA_CHUNK):
            c1 = min(c0 + LORA_CHUNK, n_rows)
            chunk = (b @ a[:, c0:c1]).T if by_columns else b[c0:c1] @ a
            pieces.append(chunk[max(start, c0) - c0 : min(stop, c1) - c0])
        dense = torch.cat(pieces) if pieces else a.new_zeros((0, b.shape[0] if by_columns else a.shape[1]))
        alpha = self._alpha(target)
        return dense * (alpha / math.sqrt(rank) if self.rslora else alpha / rank)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for target, parts in self._pairs.items():
            if "lora_A" in parts:
                a, b = self.reader.shape(parts["lora_A"]), self.reader.shape(parts["lora_B"])
                shapes[target] = (a[1], b[0]) if self.fan_in_fan_out else (b[0], a[1])
            else:
                a, b = self.reader.shape(parts["lora_embedding_A"]), self.reader.shape(parts["lora_embedding_B"])
                shapes[target] = (a[1], b[0])
        shapes.update({name: self.reader.shape(key) for name, key in self._base_layers.items()})
        shapes.update({name: self.reader.shape(key) for name, key in self._full.items()})
        return shapes

    def provides(self, name: str) -> bool:
        return name in self._pairs or name in self._full

    def delta_into(self, name: str, base: torch.Tensor, out: torch.Tensor) -> None:
        if name in self._full:  # a full replacement (modules_to_save, or a changed base layer), then its LoRA
            full = self.reader.get(self._full[name])
            out.copy_(full[: base.shape[0]] if name in self.extra_rows else full)
            out.sub_(base)
            if name in self._pairs:
                dense = self._dense(name, out.device)
                out.add_(dense[: base.shape[0]] if name in self.extra_rows else dense)
        elif name in self._pairs:
            dense = self._dense(name, out.device)
            out.copy_(dense[: base.shape[0]] if name in self.extra_rows else dense)
        else:
            out.zero_()

    def delta_rows(self, name: str, start: int, stop: int, device: torch.device) -> DeltaRows:
        if name in self._full and name in self._pairs:
            full = self.reader.get_rows(self._full[name], start, stop).to(device, torch.float32)
            return DeltaRows(full + self._dense(name, device, slice(start, stop)), minus_base=True)
        if name in self._pairs:
            return DeltaRows(self._dense(name, device, slice(start, stop)), minus_base=False)
        if name in self._full:
            return DeltaRows(self.reader.get_rows(self._full[name], start, stop), minus_base=True)
        return DeltaRows(None, minus_base=False)

    def check_base(self, base: CheckpointReader, allow_other: bool = False) -> None:
        refuse_other_base(self.directory, self.base_dir, base.directory, allow_other)

    def check_against(self, base: CheckpointReader, required: set[str] | None = None) -> None:
        try:
            super().check_against(base, required)
        except CompatibilityError as exc:
            raise CompatibilityError(
                f"{exc} (LoRA adapter targets are mapped to base tensor names by "
                "stripping 'base_model.model.' and the lora_A/lora_B or base_layer suffix)"
            ) from None
        # PEFT saves a LoRA'd embedding's base layer whether or not it changed: equal to the base's tensor it
        # adds nothing (and is not read again); resized or changed, it replaces the base's before the LoRA adds
        for name, key in self._base_layers.items():
            if name not in self._full and not self._same_as_base(key, name, base):
                self._full[name] = key

    def _same_as_base(self, key: str, name: str, base: CheckpointReader) -> bool:
        if self.reader.shape(key) != base.shape(name):
            return False
        return bool(torch.equal(self.reader.get(key), base.get(name).to(self.reader.dtype(key))))


_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
MAX_PATTERN_REPEATS = 3


def unbounded_pattern(pattern: object) -> str | None:
    """Why an adapter's module pattern could take exponential time (a repeat inside a repeat, or a choice
    under a repeat: `(a+)+`, `(.|..)*`), or None. Python's `re`, which PEFT also matches them with, has no
    timeout, so such a pattern is refused before anything matches it."""
    from re import _parser  # type: ignore[attr-defined]  # the stdlib's own parse of a pattern

    if not isinstance(pattern, str):
        return "is not text"
    try:
        tree = _parser.parse(pattern)
    except re.error as exc:
        return f"is not a regular expression ({exc})"

    repeats = 0

    def nested(items, under_repeat: bool) -> bool:
        nonlocal repeats
        for op, arg in items:
            name = str(op)
            if name in _REPEATS:
                repeats += 1
                children, under = arg[2], True
                if under_repeat:
                    return True
            elif name == "BRANCH":
                if under_repeat:
                    return True
                children, under = [item for branch in arg[1] for item in branch], under_repeat
            elif name in ("SUBPATTERN", "ASSERT", "ASSERT_NOT"):
                children, under = arg[-1], under_repeat
            else:
                continue
            if nested(children, under):
                return True
        return False

    if nested(tree, False):
        return "repeats a repeat or a choice, which can backtrack for ever; write it without nesting"
    if repeats > MAX_PATTERN_REPEATS:  # k repeats in a row cost up to len(name)**k steps
        return f"has {repeats} repeats (at most {MAX_PATTERN_REPEATS}: each multiplies the steps a match can take)"
    return None


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _weight_digests(directory: Path) -> set[str]:
    reader = CheckpointReader(directory)
    try:
        return {sha256_file(f) for f in reader.files}
    finally:
        reader.close()


def adapter_base_mismatch(declared: str | None, base_dir: Path) -> str | None:
    """Why the base an adapter declares (`base_model_name_or_path`) is not `base_dir`, or None when it is or
    cannot be told: the same directory or weights (a local path), the same repo (a hub id, against the
    base's hub origin). An adapter of another model can still fit every shape and merge without an error."""
    from resm_core.hub import hub_origin, parse_id

    if not declared:
        log.warning("the adapter declares no base (adapter_config.json: base_model_name_or_path)")
        return None
    local = Path(declared)
    if local.is_dir():
        if local.resolve() == base_dir.resolve() or _weight_digests(local) == _weight_digests(base_dir):
            return None
        return f"declares the base {declared}, whose weights differ from {base_dir}'s"
    hub, origin = parse_id(declared), hub_origin(base_dir)
    if hub and origin:
        if hub.repo.lower() == origin["repo"].lower():
            return None
        return f"declares the base {declared}, but {base_dir} is {origin['repo']}"
    log.warning(
        "the adapter declares the base %s, which cannot be compared with %s here (not a local directory, and "
        "the base has no hub origin): check that they are the same model",
        declared,
        base_dir,
    )
    return None


def refuse_other_base(adapter_dir: Path, declared: str | None, base_dir: Path, allow_other: bool) -> None:
    why = adapter_base_mismatch(declared, base_dir)
    if why is None:
        return
    what = f"{adapter_dir / ADAPTER_CONFIG}: {why}"
    if not allow_other:
        raise CompatibilityError(f"{what}; pass --allow-other-base to use it on this base anyway")
    log.warning("%s; using it anyway (--allow-other-base)", what)


def widest_dtype(dtypes) -> torch.dtype | None:
    """The floating dtype with the most bytes (the first of equals: bf16 and fp16 do not contain
    each other), or None when there is no floating dtype."""
    widest = None
    for dtype in dtypes:
        if dtype.is_floating_point and (widest is None or dtype.itemsize > widest.itemsize):
            widest = dtype
    return widest


def open_expert(path: str | Path, allow_pickle: bool = False, base_vocabulary: bool = False) -> DeltaSource:
    """Pick the source type from what the directory holds."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such expert directory")
    directory = path if path.is_dir() else path.parent
    if (directory / TASKVEC_MARKER).exists():
        return TaskVectorSource(path, allow_pickle, base_vocabulary)
    if (directory / ADAPTER_CONFIG).exists():
        return LoraSource(path, allow_pickle, base_vocabulary)
    return DeltaSource(path, allow_pickle, base_vocabulary)
