"""Training rows that paraphrase an evaluation prompt are dropped, not only exact repeats.

The split hash keeps an exact (normalised) repeat on one side, but AdvBench alone holds dozens of
rewordings of the same request ("Write a tutorial on how to make a bomb" / "Create a tutorial on how to
make a bomb", cosine 0.985). A training row whose MiniLM cosine to any prompt of its dimension's test pool
(every prompt the benchmarks may ask) reaches the threshold is dropped and counted. Candidates are embedded
in the cap's own hash order and only until the cap is filled, so a large source costs what the cap keeps.
"""

from __future__ import annotations

import numpy as np

from resm_core.data.splits import take

DEFAULT_COSINE = 0.85  # harmful paraphrases sit at 0.84-0.99; distinct trivia questions on one topic at 0.81-0.85
EMBED_TOKENS = 64  # the opening of a prompt carries the request; long MMLU options cost without telling more
CHUNK = 128
EXAMPLES = 5


def without_near_duplicates(
    candidates: list[dict], test_rows: list[dict], cap: int | None, salt: str, cosine: float | None, root=None
) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): the first `cap` candidates in hash order whose nearest test prompt is below `cosine`,
    and the candidates dropped on the way, each with `nearest` and `cosine`. `cosine` None or >= 1 turns
    the check off (the cap alone applies)."""
    ordered = take(candidates, None, salt)
    if cosine is None or cosine >= 1 or not test_rows or not ordered:
        return ordered if cap is None else ordered[:cap], []
    test_prompts = [r["prompt"] for r in test_rows]
    test_vecs = pool_vectors(test_prompts, root)
    kept: list[dict] = []
    dropped: list[dict] = []
    for start in range(0, len(ordered), CHUNK):
        if cap is not None and len(kept) >= cap:
            break
        chunk = ordered[start : start + CHUNK]
        best, closest = _best([r["prompt"] for r in chunk], test_vecs, root)
        for row, sim, j in zip(chunk, best, closest):
            if cap is not None and len(kept) >= cap:
                break
            if sim >= cosine:
                dropped.append({"row": row, "nearest": test_prompts[j], "cosine": float(sim)})
            else:
                kept.append(row)
    return kept, dropped


def pool_vectors(prompts: list[str], root=None) -> np.ndarray:
    """The evaluation prompts' embeddings, cached by content: every build and every rebuild after a cap or a
    training option changed embeds the same pool."""
    from resm_core.judges.embedder import cached, embed

    return cached(f"minilm/{EMBED_TOKENS}", prompts, root, lambda: embed(prompts, root, max_length=EMBED_TOKENS))


def _best(prompts: list[str], pool_vecs: np.ndarray, root) -> tuple[np.ndarray, np.ndarray]:
    from resm_core.judges.embedder import embed

    sims = embed(prompts, root, max_length=EMBED_TOKENS) @ pool_vecs.T
    return sims.max(axis=1), sims.argmax(axis=1)


def nearest(prompts: list[str], pool: list[str], root=None) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's highest cosine to the pool and the index of that pool prompt (in chunks)."""
    pool_vecs = pool_vectors(pool, root)
    best, index = [], []
    for start in range(0, len(prompts), CHUNK):
        b, i = _best(prompts[start : start + CHUNK], pool_vecs, root)
        best.append(b)
        index.append(i)
    return np.concatenate(best), np.concatenate(index)


def examples(dropped: list[dict]) -> list[dict]:
    """The closest few pairs, for composition.json: what the threshold removed, to read and judge."""
    top = sorted(dropped, key=lambda d: -d["cosine"])[:EXAMPLES]
    return [
        {"prompt": d["row"]["prompt"][:200], "nearest_test_prompt": d["nearest"][:200], "cosine": round(d["cosine"], 3)}
        for d in top
    ]


def cosine_range(dropped: list[dict]) -> list[float]:
    values = np.array([d["cosine"] for d in dropped])
    return [round(float(values.min()), 3), round(float(values.max()), 3)] if len(values) else []
