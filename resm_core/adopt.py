"""A model made elsewhere (a released expert, a lab's own checkpoint, a LoRA adapter) becomes an arm of the
grid: a full model directory under models/, checked against the base, with a manifest and a card, exactly
where a trained expert or mixture would be. Task vectors, merges, evaluation and the report follow as for
trained ones.

- only weights, config, tokenizer and generation files are carried (never code such as an `auto_map`
  module), each cloned copy-on-write where the file system can, else copied (resm_core.input_dirs: the
  output owns its bytes; a link inside the source is refused);
- pickle weights (`pytorch_model.bin`, allowed explicitly) are rewritten once as safetensors, read with
  `torch.load(weights_only=True)`, so nothing downstream unpickles;
- a LoRA adapter is merged into the base with PEFT (`merge_and_unload`, in fp32) and stored in fp32 (a LoRA
  delta does not survive bf16 rounding, see the README), its adapter kept in `adapter/`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from resm_core.card import CARD_NAME, md_text
from resm_core.checkpoint.atomic import AtomicDirectory, prepare_output
from resm_core.checkpoint.manifest import MANIFEST_NAME, ManifestRecorder
from resm_core.checkpoint.reader import PICKLE_INDEX, PICKLE_SINGLE, SAFETENSORS_INDEX, CheckpointReader
from resm_core.checkpoint.writer import AUX_FILES, ShardedWriter, parse_size
from resm_core.errors import CheckpointError
from resm_core.hub import local_model
from resm_core.input_dirs import check_no_links, copy_files, own_copy
from resm_core.taskvec.sources import ADAPTER_CONFIG, DeltaSource, LoraSource, refuse_other_base

log = logging.getLogger(__name__)

SOURCE_CARD = "SOURCE_README.md"

# what an adapter directory may carry into `adapter/` (PEFT's own files and the authors' card)
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", CARD_NAME]

TOKENIZER_FILES = tuple(
    n for n in AUX_FILES if "token" in n or n in ("vocab.json", "merges.txt", "chat_template.jinja")
)


def adopt(
    source: str | Path,
    base: str | Path,
    out: str | Path,
    allow_pickle: bool = False,
    force: bool = False,
    allow_other_base: bool = False,
) -> dict[str, Any]:
    """`source` (a directory or hub id; a full model or a PEFT LoRA adapter) as the model directory `out`."""
    out, base = Path(out), local_model(base, allow_pickle)
    src = local_model(source, allow_pickle)
    prepare_output(out, force, [src, base])
    if not src.is_dir():
        raise CheckpointError(f"{src}: no such model directory")
    check_no_links(src, "source")
    check_no_links(base, "base")
    recorder = ManifestRecorder({"source": src, "base": base})
    lora = (src / ADAPTER_CONFIG).is_file()
    if lora:
        adapter = LoraSource(src)  # its config checked (patterns too) before PEFT reads it
        refuse_other_base(src, adapter.base_dir, base, allow_other_base)
        adapter.reader.close()
    try:
        with AtomicDirectory(out, force=force, inputs=[src, base]) as staging:
            notes = _merge_adapter(src, base, staging) if lora else _take_full_model(src, base, staging, allow_pickle)
            kind = "lora" if lora else "full"
            manifest = recorder.build(
                action="adopt", device="cpu", relative_to=out, kind=kind, source=str(source), **notes
            )
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            (staging / CARD_NAME).write_text(adopted_card(manifest, source, kind, (staging / SOURCE_CARD).is_file()))
    except BaseException:
        recorder.cancel()
        raise
    log.info("%s: %s model %s taken as %s", out, kind, source, out)
    return manifest


def _take_full_model(src: Path, base: Path, staging: Path, allow_pickle: bool) -> dict[str, Any]:
    expert = DeltaSource(src, allow_pickle)  # its reader refuses pickle weights unless allowed
    expert.check_against(CheckpointReader(base, allow_pickle=allow_pickle))
    pickled = any(f.suffix == ".bin" for f in expert.reader.files)
    notes: dict[str, Any] = {"converted_from_pickle": pickled, "tokenizer_from_base": []}
    if pickled:  # rewritten once as safetensors: nothing downstream unpickles
        with ShardedWriter(staging / "weights", parse_size("5GB")) as writer:
            for name in expert.reader.keys:
                writer.add(name, expert.reader.get(name))
        for f in (staging / "weights").iterdir():
            f.rename(staging / f.name)
        (staging / "weights").rmdir()
    carried = [*AUX_FILES, *([] if pickled else [SAFETENSORS_INDEX, *(f.name for f in expert.reader.files)])]
    taken = copy_files(src, staging, carried)
    left = sorted(
        f.name for f in src.iterdir() if f.name not in {*taken, PICKLE_SINGLE, PICKLE_INDEX, CARD_NAME, MANIFEST_NAME}
    )
    if left:
        notes["not_carried"] = left
        log.info("%s: not carried into the output (neither weights, config nor tokenizer): %s", src, ", ".join(left))
    if (src / CARD_NAME).is_file():
        own_copy(src / CARD_NAME, staging / SOURCE_CARD)  # the authors' own card, kept beside ours
    for name in TOKENIZER_FILES:  # an expert that ships weights only still needs the base's tokenizer
        if not (staging / name).exists() and (base / name).is_file():
            own_copy(base / name, staging / name)
            notes["tokenizer_from_base"].append(name)
    expert.reader.close()
    return notes


def _merge_adapter(src: Path, base: Path, staging: Path) -> dict[str, Any]:
    """PEFT's own merge (fp32), stored in fp32: a LoRA delta is far below bf16's spacing (see the README)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(base_model, src).merge_and_unload()
    except Exception as exc:  # peft raises many kinds for an adapter of another model
        raise CheckpointError(f"{src}: cannot apply this adapter to {base}: {type(exc).__name__}: {exc}") from None
    merged.save_pretrained(staging)
    AutoTokenizer.from_pretrained(base).save_pretrained(staging)
    copy_files(src, staging / "adapter", ADAPTER_FILES)
    return {"stored_dtype": "float32"}


def adopted_card(manifest: dict[str, Any], source: str | Path, kind: str, has_source_card: bool) -> str:
    from huggingface_hub import ModelCardData

    origin = manifest["inputs"]["source"][0].get("hub")
    base_origin = manifest["inputs"]["base"][0].get("hub")
    data = ModelCardData(
        library_name="transformers",
        tags=["resm", "3h", "lora" if kind == "lora" else "adopted"],
        base_model=base_origin["repo"] if base_origin else None,
        base_model_relation=("adapter" if kind == "lora" else "finetune") if base_origin else None,
    )
    where = f"{origin['repo']}@{origin.get('commit', '')}" if origin else str(source)
    what = "a LoRA adapter merged into the base" if kind == "lora" else "a full model"
    body = [
        f"# {md_text(Path(str(source)).name)}",
        "",
        f"{md_text(where)}, made elsewhere and taken into a resm-3h grid ({what}).",
        "Its manifest (`resm_manifest.json`) lists the SHA-256 of every file.",
    ]
    if manifest.get("converted_from_pickle"):
        body.append("Its pickle weights were rewritten as safetensors (read with `weights_only=True`).")
    if manifest.get("tokenizer_from_base"):
        body.append(f"Tokenizer files taken from the base: {md_text(', '.join(manifest['tokenizer_from_base']))}.")
    if has_source_card:
        body.append(f"The authors' own card is `{SOURCE_CARD}`.")
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"
