"""Evaluate one arm on a set of benchmarks: one JSON per benchmark, the raw answers with their judgements
as JSONL (so a person can read what the model said), and `summary.json` with the dimension scores, the
3H mean and the balance, each with a bootstrap interval. All appear at once, atomically.

Answers are generated once per prompt and reused across benchmarks that share prompts (the harmful
prompts serve both `harmful_refusal` and `non_offensive`); the time spent generating and the time spent
scoring (log-probs, judges) are reported separately.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.data.schema import text_key
from resm_core.data.splits import take, unit_hash
from resm_core.errors import ConfigError, EvaluationError
from resm_core.evaluate.backends import make_backend
from resm_core.evaluate.benchmarks import BENCHMARKS, ItemsContext, get_benchmark
from resm_core.evaluate.request import EvalRequest
from resm_core.evaluate.scores import CI_LEVEL, bootstrap, interval, summarise
from resm_core.hub import hub_origin, local_model
from resm_core.validation import validate

log = logging.getLogger(__name__)


class EvalContext:
    """What benchmarks share: the backend, a memo of answers and log-probs, the judges, the clocks."""

    def __init__(self, req: EvalRequest, backend=None, make_backend=None):
        """`backend` given, or made by `make_backend` when a benchmark first needs the model."""
        self.req, self._make_backend, self._backend = req, make_backend, backend
        self.data_root, self.asset_root = req.data_root, req.asset_root
        self.load_s = 0.0
        self.result_extras: dict[str, dict] = {}  # benchmark -> fields its result JSON adds (lm-eval's aggregates)
        self.generation_s = 0.0
        self.scoring_s = 0.0
        self._answers: dict[tuple[str, int], dict] = {}
        self.max_new_tokens = req.max_new_tokens
        self._logprobs: dict[tuple[str, str], tuple[float, int]] = {}
        self._judges: dict[str, object] = {}
        self.new_generations: list[tuple[str, int]] = []

    @property
    def backend(self):
        """The arm's model, loaded when a benchmark first needs it (after every benchmark's items are chosen)."""
        if self._backend is None:
            start = time.perf_counter()
            self._backend = self._make_backend()
            self.load_s += time.perf_counter() - start
        return self._backend

    def harness_lm(self):
        """lm-eval's model over the arm (evaluate/harness.py), made once. The embedded benchmarks run first, so a
        vLLM engine of the evaluation's own is released before lm-eval's starts: two do not fit one GPU."""
        if "lm_eval" not in self._judges:
            from resm_core.evaluate.harness import language_model

            if self.req.backend == "vllm" and self._backend is not None:
                self._backend = None
                gc.collect()
            loaded = self.backend if self.req.backend == "transformers" else None
            self._judges["lm_eval"] = language_model(self.req, loaded)
        return self._judges["lm_eval"]

    def generate(self, prompts: list[str]) -> list[dict]:
        """Answers of `max_new_tokens` tokens (the evaluation's, or the benchmark's own), each generated once."""
        n = self.max_new_tokens
        # similar lengths batch together: less left padding to run through every decoding step
        todo = sorted(dict.fromkeys(p for p in prompts if (p, n) not in self._answers), key=lambda p: (len(p), p))
        if todo:
            start = time.perf_counter()
            for p, ans in zip(todo, self.backend.generate(todo, n)):
                self._answers[(p, n)] = ans
            self.generation_s += time.perf_counter() - start
            self.new_generations += [(p, n) for p in todo]
        return [dict(self._answers[(p, n)]) for p in prompts]

    def truncated_generations(self) -> int:
        """Distinct prompts whose answer hit the token limit."""
        return sum(bool(self._answers[k]["truncated"]) for k in set(self.new_generations))

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        keys = list(zip(prompts, continuations))
        todo = list(dict.fromkeys(k for k in keys if k not in self._logprobs))
        if todo:
            start = time.perf_counter()
            for k, v in zip(todo, self.backend.logprobs([p for p, _ in todo], [c for _, c in todo])):
                self._logprobs[k] = v
            self.scoring_s += time.perf_counter() - start
        return [self._logprobs[k] for k in keys]

    def judge(self, spec: str):
        if spec not in self._judges:
            from resm_core.judges import make_judge

            self._judges[spec] = make_judge(spec, self.req.allow_pickle)
        return self._judges[spec]

    def fitted(self, kind: str):
        """The refusal, harmful-compliance or similarity judge fitted by `resm judge fit`, loaded once."""
        if self.req.judges is None:
            raise ConfigError(f"the {kind} judge is needed: pass --judges DIR (fitted by `resm judge fit --out DIR`)")
        key = f"{kind}:{self.req.judges}"
        if key not in self._judges:
            if kind == "served":
                from resm_core.judges.served import ServedJudge

                self._judges[key] = ServedJudge(self.req.judges, self.asset_root)
            elif kind in ("refusal", "harmful_compliance"):
                from resm_core.judges.refusal import RefusalJudge

                self._judges[key] = RefusalJudge(self.req.judges, self.asset_root, kind)
            else:
                from resm_core.judges.similarity import SimilarityJudge

                self._judges[key] = SimilarityJudge(self.req.judges, self.asset_root)
        return self._judges[key]

    def refusal_probability(self, prompts, responses, kind: str = "refusal") -> np.ndarray:
        """P(refused); kind `harmful_compliance` for answers to harmful requests (refused = did not comply)."""
        start = time.perf_counter()
        p = self.fitted(kind).refusal_probability(prompts, responses)
        self.scoring_s += time.perf_counter() - start
        return p

    def served_probability(self, prompts, responses) -> np.ndarray:
        """P(the answer addresses the benign request): the over-refusal judge (judges/served.py)."""
        start = time.perf_counter()
        p = self.fitted("served").served_probability(prompts, responses)
        self.scoring_s += time.perf_counter() - start
        return p

    @property
    def similarity(self):
        return _Timed(self, self.fitted("similarity"))


class _Timed:
    def __init__(self, ctx: EvalContext, judge):
        self.ctx, self.judge = ctx, judge

    def truthful(self, *args):
        start = time.perf_counter()
        out = self.judge.truthful(*args)
        self.ctx.scoring_s += time.perf_counter() - start
        return out


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=float) + "\n")


class AnswersBackend:
    """Answers produced elsewhere (an API model, a serving stack, a stand-in policy), looked up by prompt:
    `resm evaluate --answers` scores them as an arm without loading a model."""

    name = "answers"

    def __init__(self, responses: dict[str, str]):
        self.responses = responses

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[dict]:
        return [{"response": self.responses[p], "truncated": False} for p in prompts]

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        raise EvaluationError("--answers: a benchmark scored by log-probabilities needs the model itself")


def read_answers(path: Path) -> dict[tuple[str, str], str]:
    """(benchmark, id) -> response, from the JSONL `--answers` names; the keys of an evaluation's records."""
    if not Path(path).is_file():
        raise ConfigError(f"--answers {path}: no such file")
    out: dict[tuple[str, str], str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not all(
                isinstance(rec.get(k), str) for k in ("benchmark", "id", "response")
            ):
                raise ConfigError(f"{path}:{n}: needs string fields benchmark, id and response")
            key = (rec["benchmark"], rec["id"])
            if key in out and out[key] != rec["response"]:
                raise ConfigError(f"{path}:{n}: a second, different answer to {rec['benchmark']} item {rec['id']}")
            out[key] = rec["response"]
    return out


def _answers_backend(path: Path, benches: dict, chosen: dict[str, list[dict]]) -> AnswersBackend:
    """Every chosen item of every benchmark answered, and every benchmark one that is scored from text."""
    answers = read_answers(path)
    by_prompt: dict[str, str] = {}
    for name, (bench, _) in benches.items():
        if not bench.embedded:
            raise ConfigError(
                f"--answers: {name} runs the model through lm-eval; drop it, or evaluate the model itself"
            )
        if not bench.generated:
            raise ConfigError(
                f"--answers: {name} is scored from the model's log-probabilities, not from text; "
                f"drop it (generated benchmarks: {', '.join(n for n, b in BENCHMARKS.items() if b.generated)})"
            )
        missing = [r["id"] for r in chosen[name] if (name, r["id"]) not in answers]
        if missing:
            raise ConfigError(f"--answers {path}: no answer to {len(missing)} {name} item(s), e.g. {missing[0]}")
        for r in chosen[name]:
            response = answers[(name, r["id"])]
            if by_prompt.setdefault(r["prompt"], response) != response:
                raise ConfigError(f"--answers {path}: two different answers to one prompt ({name} item {r['id']})")
    return AnswersBackend(by_prompt)


def benchmarks_of(req: EvalRequest) -> dict:
    """name -> (Benchmark, its options), each checked for unknown options."""
    if not req.benchmarks:
        raise ConfigError("evaluation.benchmarks: no benchmarks given")
    benches = {name: (get_benchmark(name, opts), dict(opts or {})) for name, opts in req.benchmarks.items()}
    for bench, opts in benches.values():
        bench.check_options(opts)
    return benches


def choose_items(req: EvalRequest, benches: dict) -> dict[str, list[dict]]:
    """Each benchmark's validation and test items (whole rows, tagged with their split); `n` and `n_val`
    are taken out of the options."""
    chosen = {}
    for name, (bench, opts) in benches.items():
        pool = bench.items(ItemsContext(req.data_root, req.asset_root), opts)
        whole = bench.default_n is None  # unless n says otherwise, every item: validation and test
        n = _count(opts.pop("n", len(pool) if whole else bench.default_n), f"evaluation.benchmarks.{name}.n", 1)
        n_val = _count(
            opts.pop("n_val", len(pool) if whole else (n + 1) // 2), f"evaluation.benchmarks.{name}.n_val", 0
        )
        items = eval_items(pool, n, n_val, bench.item_salt, bench.strata, name)
        if not any(r["split"] == "test" for r in items):
            raise EvaluationError(f"benchmark {name}: no test items (is the {bench.dim} test split empty?)")
        chosen[name] = items
    return chosen


def evaluate(req: EvalRequest) -> dict:
    if req.model is not None:
        req = replace(req, model=local_model(req.model, req.allow_pickle))
    benches = benchmarks_of(req)
    # options of the run, not of the items: whether a benchmark counts in its dimension, its answer length
    counted = {name: bool(opts.pop("in_balance", bench.in_balance)) for name, (bench, opts) in benches.items()}
    lengths = {name: int(opts.pop("max_new_tokens", req.max_new_tokens)) for name, (_, opts) in benches.items()}
    started = time.perf_counter()
    inputs = [p for p in (req.model, req.answers, req.data_root, req.judges) if p is not None]
    with AtomicDirectory(req.out, force=req.force, inputs=inputs) as staging:
        # items first: a missing split, an empty benchmark or an lm-eval task not fetched fails before the model loads
        chosen = choose_items(req, benches)
        if req.answers is not None:
            ctx = EvalContext(req, _answers_backend(req.answers, benches, chosen))
        else:
            assert req.model is not None  # EvalRequest holds exactly one of model and answers
            model = req.model
            ctx = EvalContext(
                req,
                make_backend=lambda: make_backend(
                    req.backend,
                    model,
                    device=req.device,
                    batch_size=req.batch_size,
                    temperature=req.temperature,
                    seed=req.seed,
                    progress=req.progress,
                    allow_pickle=req.allow_pickle,
                ),
            )
        point: dict[str, dict[str, float]] = {}
        reps: dict[str, dict[str, np.ndarray]] = {}
        val_point: dict[str, dict[str, float]] = {}
        val_reps: dict[str, dict[str, np.ndarray]] = {}
        results = {}
        chance: dict[str, float] = {}
        seed_of = {name: k for k, name in enumerate(benches)}  # a benchmark's bootstrap seed: its place in the config
        # embedded benchmarks first, then lm-eval's (which may need the GPU to itself); outputs in config order
        order = sorted(benches, key=lambda name: not benches[name][0].embedded)
        for name in order:
            bench, opts = benches[name]
            k = seed_of[name]
            t0, loading = time.perf_counter(), ctx.load_s
            before = len(ctx.new_generations)
            ctx.max_new_tokens = lengths[name]
            log.info("%s: %s on %d items", req.arm, name, len(chosen[name]))
            records = [
                {**rec, "split": item["split"]}
                for item, rec in zip(chosen[name], bench.score(ctx, [_plain(r) for r in chosen[name]], opts))
            ]
            test = np.array([r["score"] for r in records if r["split"] == "test"], dtype=float)
            val = np.array([r["score"] for r in records if r["split"] == "val"], dtype=float)
            boot = bootstrap(test, req.n_bootstrap, seed=req.seed + k)
            lo, hi = interval(boot)
            generated = [r for r in records if "response" in r]
            wall = time.perf_counter() - t0 - (ctx.load_s - loading)  # the model's loading is timed apart
            result = {
                "schema_version": 1,
                "arm": req.arm,
                "benchmark": name,
                "dim": bench.dim,
                "metric": bench.metric,
                "n": int(test.size),
                "score": float(test.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "ci_level": CI_LEVEL,
                "n_bootstrap": req.n_bootstrap,
                "val": {"n": int(val.size), "score": float(val.mean()) if val.size else None},
                "generations": len(ctx.new_generations) - before,
                "truncated": sum(bool(r.get("truncated")) for r in generated),
                "chance": float(np.mean([r.get("chance", bench.chance) for r in records])),
                "model": str(req.model if req.model is not None else req.answers),
                "backend": req.backend if req.answers is None else "answers",
                "seed": req.seed,
                "wall_time_s": round(wall, 3),
                "items_per_s": round(len(records) / max(wall, 1e-9), 3),
                "options": {k2: str(v) for k2, v in opts.items()},
            }
            result["in_balance"] = counted[name]
            result.update(ctx.result_extras.pop(name, {}))
            if val.size and counted[name]:
                val_point.setdefault(bench.dim, {})[name] = float(val.mean())
                val_reps.setdefault(bench.dim, {})[name] = bootstrap(val, req.n_bootstrap, seed=req.seed + k)
            if name in ("abstention", "known_unknowns"):
                from resm_core.judges.abstention import accuracy

                result["judge"] = accuracy()
            if name in ("benign_compliance", "instruction_following"):
                result["judge"] = ctx.fitted("served").summary()
            if name == "instruction_following":
                rates = [r["instruction_rate"] for r in records if r.get("split", "test") == "test"]
                result["instruction_rate"] = float(np.mean(rates)) if rates else 0.0
            if name == "harmful_refusal":
                result["judge"] = ctx.fitted("harmful_compliance").summary()
            if name == "truthfulqa_sim":
                result["judge"] = ctx.fitted("similarity").report
            validate(result, "eval_result.schema.yaml", f"{name}.json")
            (staging / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            _write_jsonl(staging / f"{name}.jsonl", records)
            chance[name] = result["chance"]
            results[name] = result
            if counted[name]:
                point.setdefault(bench.dim, {})[name] = result["score"]
                reps.setdefault(bench.dim, {})[name] = boot
        results = {name: results[name] for name in benches}
        total = time.perf_counter() - started
        summary = {
            "schema_version": 1,
            "arm": req.arm,
            "model": str(req.model if req.model is not None else req.answers),
            **({"model_hub": origin} if req.model is not None and (origin := hub_origin(req.model)) else {}),
            "benchmarks": {
                n: {"score": r["score"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "in_balance": r["in_balance"]}
                for n, r in results.items()
            },
            **summarise(point, reps, chance),
            "val": summarise(val_point, val_reps, chance) if val_point else {},
            "truncated": ctx.truncated_generations(),
            "generations": len(ctx.new_generations),
            "timing": {
                "total_s": round(total, 2),
                "load_s": round(ctx.load_s, 2),
                "generation_s": round(ctx.generation_s, 2),
                "scoring_s": round(ctx.scoring_s, 2),
            },
        }
        validate(summary, "eval_summary.schema.yaml", "summary.json")
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["truncated"]:
        log.warning(
            "%s: %d of %d answers hit the %d-token limit",
            req.arm,
            summary["truncated"],
            summary["generations"],
            req.max_new_tokens,
        )
    return summary


EVAL_SALT = "resm-3h-eval-split-v1"
VAL_FRACTION = 0.3  # of each benchmark's pool: validation items, never test items, whatever n and n_val are


def _count(value, key: str, minimum: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if n < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {n}")
    return n


def eval_split(prompt: str) -> str:
    """Validation or test, from the prompt's text alone: an item keeps its split whatever the sample sizes."""
    return "val" if unit_hash(text_key(prompt), EVAL_SALT) < VAL_FRACTION else "test"


def eval_items(
    pool: list[dict], n: int, n_val: int, salt: str, strata: tuple[tuple[str, float], ...] = (), name: str = ""
) -> list[dict]:
    """n test items and n_val validation items of the pool in hash order (the same sample for every arm,
    growing by adding items), each tagged with its split. Where the benchmark has strata, each split's
    count is shared out in the strata's fixed proportions (largest remainder), so the benchmark's mean
    estimates the same weighted mixture at every n; a stratum that cannot fill its share is an error."""
    ordered = take(pool, None, salt)
    out: dict[str, list[dict]] = {"test": [], "val": []}
    for split, total in (("test", n), ("val", n_val)):
        rows = [r for r in ordered if eval_split(r["prompt"]) == split]
        if not strata:
            out[split] = [{**r, "split": split} for r in rows[:total]]
            continue
        for stratum, quota in allocate(total, strata).items():
            have = [r for r in rows if r.get("stratum") == stratum]
            if len(have) < quota:
                raise ConfigError(
                    f"evaluation.benchmarks.{name}.{'n' if split == 'test' else 'n_val'}: {total} {split} items "
                    f"need {quota} in stratum {stratum!r} (weight {dict(strata)[stratum]:.3f}), which has "
                    f"{len(have)}; lower it"
                )
            out[split] += [{**r, "split": split} for r in have[:quota]]
    return out["val"] + out["test"]


def allocate(total: int, strata: tuple[tuple[str, float], ...]) -> dict[str, int]:
    """`total` shared out in proportion to the weights, by largest remainder (ties: the order given)."""
    weights = np.array([w for _, w in strata], dtype=float)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for i in sorted(range(len(strata)), key=lambda i: -(exact[i] - counts[i]))[: total - counts.sum()]:
        counts[i] += 1
    return {s: int(c) for (s, _), c in zip(strata, counts)}


def _plain(item: dict) -> dict:
    return {k: v for k, v in item.items() if k not in ("split", "stratum")}
