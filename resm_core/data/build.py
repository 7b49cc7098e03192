"""Build one dimension's dataset: load its sources, de-duplicate, split, hold out the benchmarks, cap,
fill the base model's answers where a source needs them, and write train/val/test JSONL.

Every row dropped on the way is counted by reason in `composition.json`, so nothing changes silently.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from resm_core.assets import cache_root
from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.checkpoint.manifest import ManifestRecorder
from resm_core.data import sources as src
from resm_core.data.near_duplicates import cosine_range, examples, without_near_duplicates
from resm_core.data.refusals import looks_like_refusal
from resm_core.data.request import BuildRequest
from resm_core.data.schema import DIMS, SPLITS, text_key, write_jsonl
from resm_core.data.splits import check_fractions, split_of, take
from resm_core.errors import DataError
from resm_core.options import build as build_request

log = logging.getLogger(__name__)


def holdout_keys(root, dims_sources: list, load=None) -> set[str]:
    """Normalised prompts of every eval-only source: the benchmarks no training row may repeat."""
    load = load or (lambda source: src.load(source, root))
    keys: set[str] = set()
    for spec in dims_sources:
        source = src.resolve(spec)
        if source.eval_only:
            keys |= {text_key(r["prompt"]) for r in load(source)}
    return keys


def build_dim(dim: str, source_specs: list, out: Path, **options) -> dict:
    """One dimension's dataset; `options` are BuildRequest fields (resm_core/data/request.py)."""
    return build(build_request(BuildRequest, {"dim": dim, "sources": list(source_specs), "out": Path(out), **options}))


def build(req: BuildRequest) -> dict:
    dim, out, root, base = req.dim, req.out, req.cache, req.base
    source_specs = req.sources or src.EMBEDDED.get(dim, [])
    val, test, salt, holdout = req.val, req.test, req.salt, req.holdout
    max_train, max_val, max_test = req.max_train, req.max_val, req.max_test
    progress, force, base_answers, near_duplicate_cosine = (
        req.progress,
        req.force,
        req.base_answers,
        req.near_duplicate_cosine,
    )
    max_new_tokens, batch_size, device = req.max_new_tokens, req.batch_size, req.device
    if dim not in DIMS:
        raise DataError(f"dim: {dim!r} is not one of {', '.join(DIMS)}")
    if not source_specs:
        raise DataError(f"dims.{dim}.sources: no sources given")
    check_fractions(val, test)
    recorder = ManifestRecorder({"base": base} if base else {})
    counts: Counter = Counter()
    per_source: dict[str, Counter] = {}
    # eval-only sources first: a benchmark's item claims its prompt before a training source that repeats
    # it (the repeat is then a duplicate), whatever order the sources are listed in
    sources = sorted((src.resolve(s, dim) for s in source_specs), key=lambda s: not s.eval_only)
    for s in sources:
        if s.dim != dim:
            raise DataError(f"source {s.name} holds {s.dim} data; it cannot build the {dim} dataset")

    loaded: dict[str, list[dict]] = {}

    def load(source):  # an eval-only source is read for the holdout and again as the test split: once
        if source.name not in loaded:
            loaded[source.name] = src.load(source, root)
        return loaded[source.name]

    held_out = holdout_keys(
        root,
        list(holdout if holdout is not None else [n for n, s in src.PACKAGED.items() if s.eval_only and s.dim == dim]),
        load,
    )
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for s in sources:
        tally = per_source.setdefault(s.name, Counter())
        for row in load(s):
            key = text_key(row["prompt"])
            # a benchmark may ask one prompt with several answer pairs (BIG-bench's HHH does): its items are
            # told apart by id; a training row that repeats a benchmark's prompt is caught below either way
            item = row["id"] if s.eval_only else key
            if item in seen:
                tally["dropped_duplicate"] += 1
                continue
            seen.update((item, key))
            # a derived row (an instructed copy of a question) splits with the prompt it was made from
            split_key = (row.get("meta") or {}).get("split_key", row["prompt"])
            split = "test" if s.eval_only else split_of(split_key, val, test, salt)
            if split != "test" and key in held_out:
                tally["dropped_in_benchmark"] += 1
                continue
            if split != "test" and not s.trains:  # a source that gives evaluation items only
                tally["not_trained"] += 1
                continue
            splits[split].append(row)
    near: dict[str, list[dict]] = {}
    for split, cap in (("train", max_train), ("val", max_val)):
        before = len(splits[split])
        splits[split], near[split] = without_near_duplicates(
            splits[split], splits["test"], cap, salt, near_duplicate_cosine, root
        )
        counts[f"{split}_dropped_near_test"] = len(near[split])
        counts[f"{split}_over_cap"] = before - len(splits[split]) - len(near[split])
    before = len(splits["test"])
    splits["test"] = take(splits["test"], max_test, salt)
    counts["test_over_cap"] = before - len(splits["test"])

    # without base answers, those rows stay SFT-only (`rejected` null): enough for SFT, skipped by DPO
    answer_sources = {s.name for s in sources if s.needs_base_responses and base_answers}
    needing = [
        r
        for split in ("train", "val")
        for r in splits[split]
        if r["rejected"] is None and r["source"] in answer_sources
    ]
    if needing:
        if base is None:
            raise DataError(
                f"{dim}: sources {sorted({r['source'] for r in needing})} take the base model's own "
                f"answers as `rejected`; pass --base MODEL_DIR"
            )
        from resm_core.generation import cached_generate

        answers = cached_generate(
            Path(base),
            [r["prompt"] for r in needing],
            cache_root(root) / "generations",
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            device=device,
            progress=progress,
            allow_pickle=req.allow_pickle,
        )
        refused = set()
        for row, ans in zip(needing, answers):
            if not ans["response"] or looks_like_refusal(ans["response"]):
                refused.add(row["id"])  # the base already refuses: no preference to learn
            else:
                row["rejected"] = ans["response"]
                row.setdefault("meta", {})["rejected_truncated"] = ans["truncated"]
        for split in ("train", "val"):
            kept = [r for r in splits[split] if r["id"] not in refused]
            counts[f"{split}_dropped_base_refused"] = len(splits[split]) - len(kept)
            splits[split] = kept

    for split in ("train", "val"):
        if not splits[split] and (split == "train" or val > 0):
            raise DataError(
                f"{dim}: the {split} split is empty after filtering ({dict(counts)}); "
                f"add sources or lower the test fraction"
            )
    for split in SPLITS:
        for name, n in Counter(r["source"] for r in splits[split]).items():
            per_source[name][split] = n
    composition = {
        "dim": dim,
        "salt": salt,
        "fractions": {"val": val, "test": test},
        "caps": {"train": max_train, "val": max_val, "test": max_test},
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "sft_only_rows": {s: sum(r["rejected"] is None for r in splits[s]) for s in SPLITS},
        "sources": {k: dict(v) for k, v in per_source.items()},
        "near_duplicates": {
            "cosine": near_duplicate_cosine,
            "embedder": "all-MiniLM-L6-v2",
            "dropped": {s: len(v) for s, v in near.items()},
            "cosine_range": cosine_range(near["train"] + near["val"]),
            "closest": examples(near["train"] + near["val"]),
        },
        "dropped": {k: v for k, v in counts.items() if v},
    }
    with AtomicDirectory(out, force=force, inputs=[base] if base else []) as staging:
        for split in SPLITS:
            write_jsonl(staging / f"{split}.jsonl", splits[split])
        (staging / "composition.json").write_text(json.dumps(composition, indent=2) + "\n")
        manifest = recorder.build(
            action="data build",
            device="cpu",
            dim=dim,
            sources=[s if isinstance(s, str) else dict(s) for s in source_specs],
            composition=composition,
        )
        (staging / "resm_manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("%s: %s written to %s", dim, composition["sizes"], out)
    return composition
