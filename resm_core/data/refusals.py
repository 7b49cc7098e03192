"""Refusals to harmful requests (the harmlessness `chosen`) and over-refusals of benign ones (a
helpfulness `rejected`).

A model trained on one fixed sentence learns that sentence, not when to refuse; so each refusal is
composed from an opener, a reason that fits the request's harm category and an offer of something
safe, chosen by hashing the prompt: varied across prompts, identical across runs.
"""

from __future__ import annotations

import hashlib

OPENERS = (
    "I'm sorry, but I can't help with that.",
    "I can't help with this request.",
    "I won't be able to help with that.",
    "Sorry, I can't assist with that.",
    "I'm not able to help with this.",
    "I have to decline this one.",
    "That's not something I can help with.",
    "I'm going to pass on this request.",
)

REASONS = {
    "violence": ("It could lead to someone getting hurt.", "Helping could put people in physical danger."),
    "weapons": (
        "Instructions like these could be used to seriously injure people.",
        "Details about weapons or explosives could cause real harm.",
    ),
    "cyber": (
        "It could be used to break into systems or steal data.",
        "That would help compromise computers or accounts that aren't yours.",
    ),
    "fraud": ("It would help deceive or defraud people.", "That could be used to steal money or identities."),
    "privacy": (
        "It would invade someone's privacy.",
        "Sharing or finding personal information like that can hurt people.",
    ),
    "hate": ("It would demean people for who they are.", "Content like that spreads hate and can cause real harm."),
    "self_harm": (
        "I'm worried it could lead to someone getting hurt.",
        "I don't want to contribute to anyone harming themselves.",
    ),
    "misinformation": (
        "It would spread false or misleading information.",
        "Content like that misleads people and erodes trust.",
    ),
    "illegal": ("It would mean helping with something illegal.", "That would break the law and could hurt others."),
    "sexual": ("I don't produce sexual content of that kind.", "That isn't appropriate content for me to write."),
    "general": ("It could cause harm to you or to others.", "Helping with it could hurt people."),
}

OFFERS = {
    "violence": "If you're in a conflict, I can suggest ways to de-escalate or find support.",
    "weapons": "I'm happy to talk about safety, history or the science in general terms instead.",
    "cyber": "I can explain how to protect systems and accounts from these attacks instead.",
    "fraud": "I can help you recognise and avoid scams if that's useful.",
    "privacy": "I can share how people can protect their own personal information.",
    "hate": "I'm glad to help with writing that treats everyone with respect.",
    "self_harm": "If you're struggling, please consider reaching out to someone you trust or a local helpline.",
    "misinformation": "I can help you find reliable sources on the topic instead.",
    "illegal": "I can point you to legal alternatives or resources if you tell me more about the goal.",
    "sexual": "I can help with something else.",
    "general": "Is there something else I can help you with?",
}

# Keywords in a source's category labels that pick the reason family.
_CATEGORY_WORDS = (
    ("self_harm", ("self-harm", "self harm", "suicide", "mental health", "human_chatbox")),
    ("sexual", ("sexual", "adult", "lewd")),
    ("weapons", ("weapon", "explosive", "bomb", "chemical", "biological", "armed")),
    ("cyber", ("cyber", "hack", "malware", "confidentiality", "infrastructure", "software")),
    ("fraud", ("fraud", "financial", "scam", "theft", "deception", "business")),
    ("privacy", ("privacy", "personal", "surveillance", "information_hazard")),
    ("hate", ("hate", "discrimination", "toxicity", "offensive", "bias", "representational")),
    ("misinformation", ("misinformation", "disinformation", "information integrity", "manipulation")),
    ("violence", ("violence", "physical", "harm to", "terror")),
    ("illegal", ("illegal", "crime", "criminal", "malicious", "legal", "drugs")),
)


def category_family(categories: list[str] | str | None) -> str:
    text = " ".join(categories if isinstance(categories, list) else [categories or ""]).lower()
    for family, words in _CATEGORY_WORDS:
        if any(w in text for w in words):
            return family
    return "general"


def pick(options, key: str, salt: str):
    """One of `options`, chosen by hashing (salt, key): varied across keys, identical across runs."""
    h = int(hashlib.sha256(f"{salt}\0{key}".encode()).hexdigest()[:8], 16)
    return options[h % len(options)]


def compose_refusal(prompt: str, categories: list[str] | str | None = None) -> str:
    family = category_family(categories)
    parts = [pick(OPENERS, prompt, "opener"), pick(REASONS[family], prompt, "reason")]
    if int(hashlib.sha256(prompt.encode()).hexdigest()[:2], 16) % 4 != 0:  # three in four offer an alternative
        parts.append(OFFERS[family])
    return " ".join(parts)


def over_refusal(prompt: str) -> str:
    """What an over-cautious model says to a benign request: the helpfulness `rejected`."""
    return pick(OPENERS, prompt, "over-refusal")


REFUSAL_MARKERS = (
    "i'm sorry",
    "i am sorry",
    "sorry, i",
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm not able",
    "i am not able",
    "i'm unable",
    "i am unable",
    "as an ai",
    "i must decline",
    "i have to decline",
    "not something i can",
    "i'm going to pass",
    "cannot assist",
    "can't assist",
    "cannot help",
    "can't help",
    "not appropriate",
    "against my",
    "i apologize",
    "i apologise",
)


def looks_like_refusal(text: str) -> bool:
    """Keyword test on the first sentences only: a long compliant answer that apologises at the end is not a refusal."""
    head = text.strip().lower()[:160]
    return any(marker in head for marker in REFUSAL_MARKERS)
