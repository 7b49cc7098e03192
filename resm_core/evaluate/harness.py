"""Benchmarks of kind `lm_eval`: a task (or group) of lm-evaluation-harness, run by lm-eval's own Python API
(`simple_evaluate`, `log_samples=True`) on the arm, its logged samples turned into resm's item records.

So a task the field publishes numbers on (model cards, leaderboards) is scored exactly as lm-eval scores it,
and then paired item by item like every embedded benchmark: the same documents for every arm, split into
validation and test by the embedded items' hashed rule, intervals, Holm, `mdd_80`. An item is one document
of a leaf task; its score is the chosen metric of its logged sample (a list of per-instruction values, as
IFEval's `inst_level_*` metrics log, counts as its mean). lm-eval's own aggregate over the documents run is
stored beside the item mean (`lm_eval.aggregate`); for a metric aggregated by its mean the two are equal.

Datasets come from the Hugging Face caches: `resm lm-eval fetch` fills them on a machine with network (the
workflow's local rule `fetch_lm_eval_task`, on the login node) and evaluation jobs read them offline
(`cache_env`). lm-eval is the optional extra `resm-3h[lmeval]`, imported only when such a benchmark runs.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError, DataError, EvaluationError

log = logging.getLogger(__name__)

KIND = "lm_eval"
# the options a benchmark of this kind reads (besides the run options n, n_val, in_balance)
OPTIONS = (
    "kind",
    "task",
    "dim",
    "metric",
    "filter",
    "num_fewshot",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "gen_kwargs",
    "include_path",
    "chance",
)
# the ones that choose documents: what the decontamination pool depends on (the rest change scoring only)
ITEM_OPTIONS = ("kind", "task", "include_path", "dim")


def is_harness(opts: dict | None) -> bool:
    return opts is not None and opts.get("kind") == KIND


@dataclass(frozen=True)
class Spec:
    """One benchmark's lm-eval settings, checked."""

    name: str
    task: str
    dim: str
    metric: str | None = None  # default: the task's first metric
    filter: str | None = None  # default: the task's first filter ("none" when it has no filters)
    num_fewshot: int | None = None  # default: the task's own
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False
    gen_kwargs: dict | None = None
    include_path: str | None = None

    @classmethod
    def of(cls, name: str, opts: dict) -> Spec:
        where = f"evaluation.benchmarks.{name}"
        task, dim = opts.get("task"), opts.get("dim")
        if not isinstance(task, str) or not task:
            raise ConfigError(f"{where}.task: a benchmark of kind lm_eval names the lm-eval task or group it runs")
        if dim not in DIMS:
            raise ConfigError(f"{where}.dim: {dim!r} must be one of {', '.join(DIMS)} (the dimension it counts for)")
        shot = opts.get("num_fewshot")
        if shot is not None and (isinstance(shot, bool) or not isinstance(shot, int) or shot < 0):
            raise ConfigError(f"{where}.num_fewshot: expected a count of examples (0 or more), got {shot!r}")
        for key in ("apply_chat_template", "fewshot_as_multiturn"):
            if not isinstance(opts.get(key, False), bool):
                raise ConfigError(f"{where}.{key}: expected true or false, got {opts[key]!r}")
        if not isinstance(opts.get("gen_kwargs") or {}, dict):
            raise ConfigError(f"{where}.gen_kwargs: expected a mapping (e.g. {{max_gen_toks: 256}})")
        for key in ("metric", "filter", "include_path"):
            if opts.get(key) is not None and not isinstance(opts[key], str):
                raise ConfigError(f"{where}.{key}: expected a string, got {opts[key]!r}")
        return cls(
            name,
            task,
            dim,
            opts.get("metric"),
            opts.get("filter"),
            shot,
            bool(opts.get("apply_chat_template", False)),
            bool(opts.get("fewshot_as_multiturn", False)),
            dict(opts.get("gen_kwargs") or {}) or None,
            opts.get("include_path"),
        )


# ---------------------------------------------------------------- caches


def cache_env(root: str | Path, offline: bool) -> dict[str, str]:
    """Environment that points datasets, the hub and nltk (IFEval's sentence splitter) at one cache under
    `root`: filled with network by `resm lm-eval fetch`, read offline (`offline=True`) by evaluation jobs."""
    root = Path(root)
    env = {
        "HF_DATASETS_CACHE": str(root / "datasets"),
        "HF_HUB_CACHE": str(root / "hub"),
        "NLTK_DATA": str(root / "nltk"),
    }
    if offline:
        env |= {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return env


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


# ---------------------------------------------------------------- tasks


def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"benchmarks of kind lm_eval need lm-evaluation-harness ({exc}); install it: pip install 'resm-3h[lmeval]'"
        ) from None


@cache
def task_manager(include_path: str | None, defaults: bool = True):
    """lm-eval's task index (its own YAML tasks, then `include_path`'s, which win); indexing every built-in
    task takes seconds, so a task found in `include_path` alone is loaded from that index."""
    _import_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"include_path {include_path}: no such directory of lm-eval task YAML files")
    return TaskManager(include_path=include_path, include_defaults=defaults)


def _manager_for(spec: Spec):
    if spec.include_path is not None:
        own = task_manager(spec.include_path, defaults=False)
        if spec.task in own.all_tasks:
            return own
    return task_manager(spec.include_path)


def _declared(spec: Spec) -> bool:
    """Whether a task YAML (include_path's, then lm-eval's own) declares the name as its task or group: a file
    scan in a fraction of a second, where lm-eval's full index takes seconds on every config check."""
    _import_lm_eval()
    import lm_eval.tasks

    line = re.compile(rf"^(?:task|group):\s*['\"]?{re.escape(spec.task)}['\"]?\s*$", re.MULTILINE)
    roots = [*([Path(spec.include_path)] if spec.include_path else []), Path(lm_eval.tasks.__file__).parent]
    return any(
        line.search(path.read_text(encoding="utf-8", errors="replace"))
        for root in roots
        if root.is_dir()
        for path in root.rglob("*.yaml")
    )


def check_task(spec: Spec) -> None:
    """The task is one lm-eval knows; else an error with its closest names in lm-eval's index (tags and Python
    tasks, which no YAML line declares, are looked up in that index too)."""
    if _declared(spec):
        return
    manager = _manager_for(spec)
    if spec.task not in manager.all_tasks:
        close = difflib.get_close_matches(spec.task, manager.all_tasks, n=5, cutoff=0.6)
        hint = f"; close matches in lm-eval's task list: {', '.join(close)}" if close else ""
        raise ConfigError(
            f"evaluation.benchmarks.{spec.name}.task: {spec.task!r} is not an lm-eval task, group or tag{hint} "
            f"(all of them: `lm-eval ls tasks`; your own YAML tasks: include_path)"
        )


def fetch_command(spec: Spec) -> str:
    include = ["--include-path", spec.include_path] if spec.include_path else []
    return shlex.join(["resm", "lm-eval", "fetch", "--task", spec.task, *include])


@cache
def _loaded(task: str, include_path: str | None) -> dict:
    """leaf task name -> lm-eval Task with its documents, loaded once per process (what chooses them: the task
    and where its YAML is, never the scoring options)."""
    spec = Spec(name=task, task=task, dim=DIMS[0], include_path=include_path)
    tasks = _manager_for(spec).load([task])["tasks"]
    for leaf in tasks.values():
        _ = leaf.eval_docs  # datasets are loaded lazily in some versions: touch them now
    return tasks


def _leaf_tasks(spec: Spec) -> dict:
    """The benchmark's leaf tasks; a missing dataset fails here, before any model loads, naming the benchmark,
    the task and the command that fetches it."""
    check_task(spec)
    try:
        tasks = _loaded(spec.task, spec.include_path)
    except Exception as exc:  # lm-eval and datasets raise many kinds here (ConnectionError, FileNotFoundError, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        where = (
            "it is not in the datasets cache and this job is offline; fetch it on a machine with network into "
            "the cache the jobs read (the workflow's local rule fetch_lm_eval_task does): "
            if _offline()
            else "fetch it with "
        )
        raise DataError(
            f"evaluation.benchmarks.{spec.name}: lm-eval task {spec.task!r}: its data could not be loaded "
            f"({type(exc).__name__}: {first}); {where}`{fetch_command(spec)}`"
        ) from None
    if not tasks:
        raise ConfigError(f"evaluation.benchmarks.{spec.name}.task: {spec.task!r} names no task to run")
    return tasks


def _doc_text(task, doc) -> str:
    """What the split is hashed on: the document's question as the task words it (`doc_to_text`), or the whole
    document where that is not text (a task whose text is an index into its choices)."""
    try:
        text = task.doc_to_text(doc)
    except Exception:
        text = None
    if isinstance(text, str) and text.strip():
        return text
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


def items(spec: Spec) -> list[dict]:
    """Every document of every leaf task, keyed by its document id (`TASK/ID` when the benchmark has several
    leaf tasks)."""
    tasks = _leaf_tasks(spec)
    several = len(tasks) > 1
    out = []
    for name, task in tasks.items():
        for doc_id, doc in enumerate(task.eval_docs):
            key = f"{name}/{doc_id}" if several else str(doc_id)
            out.append({"id": key, "prompt": _doc_text(task, doc), "task": name, "doc_id": doc_id})
    return out


def fetch(spec: Spec) -> dict:
    """Load the task's datasets (eval and few-shot documents) and any data its code downloads, into the caches
    the environment names; what was fetched, for the workflow's marker."""
    root = os.environ.get("NLTK_DATA")
    if root:
        Path(root.split(os.pathsep)[0]).mkdir(parents=True, exist_ok=True)  # nltk downloads into an existing dir
    tasks = _leaf_tasks(spec)
    counts = {}
    for name, task in tasks.items():
        fewshot = task.fewshot_docs() if task.has_training_docs() or task.has_validation_docs() else None
        counts[name] = {"docs": len(task.eval_docs), "fewshot_docs": len(fewshot) if fewshot is not None else 0}
    from importlib.metadata import version

    return {"task": spec.task, "tasks": counts, "lm_eval_version": version("lm_eval")}


# ---------------------------------------------------------------- scoring


def language_model(req, loaded=None):
    """lm-eval's model over the arm: with the transformers backend, lm-eval's HF wrapper around the model the
    evaluation already loaded (`loaded`: same weights, dtype and device, loaded once); with vLLM, lm-eval's
    vLLM wrapper on the model directory."""
    _import_lm_eval()
    if req.backend == "transformers":
        from lm_eval.models.huggingface import HFLM

        # lm-eval warns that a model passed in is not one it loads itself: that is the point here
        quiet = logging.getLogger("lm_eval.models.huggingface")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=req.batch_size)
        finally:
            quiet.setLevel(level)
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(pretrained=str(req.model), batch_size="auto", seed=req.seed)


def _item_score(value, where: str) -> float:
    if isinstance(value, (list, tuple)):  # one value per instruction (IFEval's inst_level_*): their share
        if not value:
            raise EvaluationError(f"{where}: an empty list of values")
        value = float(np.mean([float(v) for v in value]))
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise EvaluationError(f"{where}: {value!r} is not a number") from None
    if not 0.0 <= score <= 1.0:
        raise EvaluationError(
            f"{where}: {score} is outside [0, 1]; an item score must be a per-document rate (acc, exact_match, "
            f"a 0/1 check): choose another metric"
        )
    return score


def _aggregation(config: dict, metric: str) -> str:
    for entry in config.get("metric_list") or []:
        if entry.get("metric") == metric:
            agg = entry.get("aggregation", "mean")
            return agg if isinstance(agg, str) else getattr(agg, "__name__", str(agg))
    return "mean"


def score(ctx, spec: Spec, chosen: list[dict]) -> tuple[list[dict], dict]:
    """(one record per chosen item, in their order; lm-eval's aggregates) from one `simple_evaluate` call on
    exactly the chosen documents."""
    from lm_eval import simple_evaluate

    tasks = _leaf_tasks(spec)
    wanted: dict[str, list[int]] = {}
    for item in chosen:
        wanted.setdefault(item["task"], []).append(int(item["doc_id"]))
    lm = ctx.harness_lm()
    out = simple_evaluate(
        model=lm,
        tasks=sorted(wanted),  # leaf tasks with documents chosen: lm-eval runs every document of any other
        task_manager=_manager_for(spec),
        samples={name: sorted(ids) for name, ids in wanted.items()},
        log_samples=True,
        bootstrap_iters=0,  # resm computes its own intervals, paired
        num_fewshot=spec.num_fewshot,
        apply_chat_template=spec.apply_chat_template,
        fewshot_as_multiturn=spec.fewshot_as_multiturn,
        gen_kwargs=spec.gen_kwargs,
    )
    if out is None:
        raise EvaluationError(f"{spec.name}: lm-eval returned no results")
    metric = spec.metric or tasks[sorted(wanted)[0]].config.metric_list[0]["metric"]
    by_key: dict[tuple[str, int], dict] = {}
    per_task: dict[str, dict[str, Any]] = {}
    for name in wanted:
        samples = out["samples"][name]
        filters = list(dict.fromkeys(s["filter"] for s in samples))
        chosen_filter = spec.filter or filters[0]
        if chosen_filter not in filters:
            raise ConfigError(
                f"evaluation.benchmarks.{spec.name}.filter: {chosen_filter!r} is not one of task {name}'s filters "
                f"({', '.join(filters)})"
            )
        for s in samples:
            if s["filter"] != chosen_filter:
                continue
            if metric not in s:
                have = [m for m in s.get("metrics", []) if m in s]
                raise ConfigError(
                    f"evaluation.benchmarks.{spec.name}.metric: task {name} logs no {metric!r} per document "
                    f"(it logs {', '.join(have)})"
                )
            by_key[(name, int(s["doc_id"]))] = s
        key = f"{metric},{chosen_filter}"
        per_task[name] = {
            "aggregate": float(out["results"][name][key]),
            "aggregation": _aggregation(out["configs"][name], metric),
            "n": len(wanted[name]),
            "filter": chosen_filter,
        }
    records = []
    for item in chosen:
        s = by_key.get((item["task"], int(item["doc_id"])))
        if s is None:
            raise EvaluationError(f"{spec.name}: lm-eval logged no sample for {item['task']} document {item['doc_id']}")
        where = f"{spec.name}: task {item['task']} document {item['doc_id']}, metric {metric}"
        rec = {
            "id": item["id"],
            "task": item["task"],
            "doc_id": int(item["doc_id"]),
            "prompt": _context(s),
            "target": str(s.get("target")),
            "score": _item_score(s[metric], where),
            "metrics": {m: _plain(s[m]) for m in s.get("metrics", []) if m in s and m != metric},
            "doc_hash": s.get("doc_hash"),
        }
        if out["configs"][item["task"]].get("output_type") == "generate_until":
            resp = s.get("filtered_resps") or [""]
            rec["response"] = str(resp[0])
        records.append(rec)
    n_all = sum(t["n"] for t in per_task.values())
    aggregate = sum(t["aggregate"] * t["n"] for t in per_task.values()) / n_all
    item_mean = float(np.mean([r["score"] for r in records]))
    report = {
        "task": spec.task,
        "metric": metric,
        "aggregate": aggregate,  # over every document run (validation and test), as lm-eval reports it
        "item_mean": item_mean,
        "aggregation": sorted({t["aggregation"] for t in per_task.values()}),
        "tasks": per_task,
        "num_fewshot": spec.num_fewshot,
        "apply_chat_template": spec.apply_chat_template,
        "lm_eval_version": out.get("lm_eval_version"),
    }
    if not np.isclose(aggregate, item_mean, rtol=0, atol=1e-9):
        log.warning(
            "%s: lm-eval aggregates %s by %s, not by the item mean: its aggregate %.4f is stored beside resm's "
            "item mean %.4f (the paired comparisons use the item scores)",
            spec.name,
            metric,
            "/".join(report["aggregation"]),
            aggregate,
            item_mean,
        )
    return records, report


def _context(sample: dict) -> str:
    """The text the model was given (few-shot examples included): the first request's context."""
    args = sample.get("arguments") or []
    first = args[0] if args else ""
    if isinstance(first, dict):  # some versions log requests as {"arg_0": ..., "arg_1": ...}
        first = first.get("arg_0", "")
    elif isinstance(first, (list, tuple)):
        first = first[0] if first else ""
    return str(first)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    return str(value)
