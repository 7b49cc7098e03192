"""No training row may repeat or paraphrase an evaluation item of the run, whatever dimension or source either
comes from.

A dimension's build already keeps its own test split apart (hashed splits, eval-only sources held out, near
duplicates of its test prompts dropped). What it cannot see is the rest of the run: another dimension's
benchmarks, and benchmarks read from the hub (TruthfulQA's 817 questions, say, against a packaged `truthfulqa`
training source). So after every dimension is built, each one's training and validation rows are checked
against the whole pool of every configured benchmark (every item it may draw, validation and test, whatever
`n` is, so a larger evaluation retrains nothing): an exact repeat (normalised prompt) or a MiniLM cosine at or
above the build's near-duplicate threshold drops the row, and `decontamination.json` counts what was dropped
per source, with the closest pairs to read.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.checkpoint.manifest import ManifestRecorder
from resm_core.data.near_duplicates import EMBED_TOKENS, nearest
from resm_core.data.request import DecontaminateRequest
from resm_core.data.schema import read_rows, text_key, write_jsonl
from resm_core.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")  # what training reads; the test split is the evaluation's own
EXAMPLES = 5


def evaluation_pool(benchmarks: dict, data_root: Path, asset_root=None) -> list[dict]:
    """Every item every benchmark may draw (benchmark, id, prompt), once per prompt."""
    from resm_core.evaluate.benchmarks import ItemsContext, get_benchmark, item_options

    pool: dict[str, dict] = {}
    for name, opts in benchmarks.items():
        bench = get_benchmark(name, opts)
        bench.check_options(dict(opts or {}))
        opts = item_options(name, opts)
        for item in bench.items(ItemsContext(Path(data_root), asset_root), opts):
            entry = {"benchmark": name, "id": str(item["id"]), "prompt": item["prompt"]}
            pool.setdefault(text_key(item["prompt"]), entry)
    return list(pool.values())


def overlaps(rows: list[dict], pool: list[dict], cosine: float | None, root=None) -> list[dict | None]:
    """Per row, None or what it overlaps: the evaluation item, `exact` or `near`, and the cosine."""
    if not rows or not pool:
        return [None] * len(rows)
    by_key = {text_key(item["prompt"]): item for item in pool}
    found: list[dict | None] = [
        {"kind": "exact", "item": by_key[key], "cosine": 1.0} if (key := text_key(r["prompt"])) in by_key else None
        for r in rows
    ]
    if cosine is None or cosine >= 1:
        return found
    best, index = nearest([r["prompt"] for r in rows], [item["prompt"] for item in pool], root)
    for i, (sim, j) in enumerate(zip(best, index)):
        if found[i] is None and sim >= cosine:
            found[i] = {"kind": "near", "item": pool[j], "cosine": float(sim)}
    return found


def decontaminate(req: DecontaminateRequest) -> dict:
    data = Path(req.data)
    splits = {}
    for split in SPLITS:
        path = data / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: missing; build the dimension first (`resm data build`)")
        splits[split] = read_rows(path)
    if not req.benchmarks:
        raise DataError("data decontaminate: --benchmarks names no benchmark to check against")
    pool = evaluation_pool(req.benchmarks, req.eval_data, req.cache)
    per_source: dict[str, Counter] = {}
    closest: list[dict] = []
    kept: dict[str, list[dict]] = {split: [] for split in SPLITS}
    labelled = [(split, row) for split, rows in splits.items() for row in rows]  # one pass: one read of the pool
    found = overlaps([row for _, row in labelled], pool, req.near_duplicate_cosine, req.cache)
    for (split, row), hit in zip(labelled, found):
        tally = per_source.setdefault(row["source"], Counter())
        tally[f"{split}_rows"] += 1
        if hit is None:
            kept[split].append(row)
            continue
        tally[f"{split}_dropped_{hit['kind']}"] += 1
        closest.append(
            {
                "source": row["source"],
                "split": split,
                "prompt": row["prompt"][:200],
                "benchmark": hit["item"]["benchmark"],
                "item": hit["item"]["id"],
                "item_prompt": hit["item"]["prompt"][:200],
                "kind": hit["kind"],
                "cosine": round(hit["cosine"], 3),
            }
        )
    if not kept["train"]:
        raise DataError(
            f"{data}: every training row repeats or paraphrases an evaluation item "
            f"({len(splits['train'])} rows); add sources or check the benchmarks' sources"
        )
    report = {
        "data": str(data),
        "benchmarks": sorted(req.benchmarks),
        "pool_items": len(pool),
        "cosine": req.near_duplicate_cosine,
        "embedder": f"all-MiniLM-L6-v2 (first {EMBED_TOKENS} tokens)",
        "sources": {name: dict(t) for name, t in sorted(per_source.items())},
        "dropped": {s: len(splits[s]) - len(kept[s]) for s in SPLITS},
        "closest": sorted(closest, key=lambda d: -d["cosine"])[:EXAMPLES],
    }
    recorder = ManifestRecorder({})
    with AtomicDirectory(req.out, force=req.force, inputs=[data, Path(req.eval_data)]) as staging:
        for split in SPLITS:
            write_jsonl(staging / f"{split}.jsonl", kept[split])
        (staging / "decontamination.json").write_text(json.dumps(report, indent=2) + "\n")
        manifest = recorder.build(action="data decontaminate", device="cpu", decontamination=report)
        (staging / "resm_manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("%s: dropped %s of %s against %d evaluation items", data, report["dropped"], SPLITS, len(pool))
    return report


DROPPED_COLUMNS = ["dim", "source", "pool_items"] + [
    f"{split}_{what}" for split in SPLITS for what in ("rows", "dropped_exact", "dropped_near")
]


def dropped_table(results: Path) -> list[dict]:
    """The report's view: per dimension and source, the rows each split had and dropped (exact, near)."""
    rows = []
    for path in sorted(Path(results).glob("data/clean/*/decontamination.json")):
        report = json.loads(path.read_text())
        for source, tally in report["sources"].items():
            row = {"dim": path.parent.name, "source": source, "pool_items": report["pool_items"]}
            for split in SPLITS:
                row[f"{split}_rows"] = tally.get(f"{split}_rows", 0)
                row[f"{split}_dropped_exact"] = tally.get(f"{split}_dropped_exact", 0)
                row[f"{split}_dropped_near"] = tally.get(f"{split}_dropped_near", 0)
            rows.append(row)
    return rows
