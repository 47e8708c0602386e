"""Is an intent about a special category of personal data (GDPR Art. 9)? Pure Python + numpy, no Django.

Kairos refuses intents on health, religion, politics, sexuality and ethnicity: scoring people by them
would infer special-category data from their searches. Two checks, either refuses:

1. Words: a keyword list per category in English, German, French, Spanish, Italian, Dutch and
   Portuguese, matched as whole words (or word starts for the stems ending in "*") in the name and
   every example. Cheap, exact, and explainable ("mentions 'diabetes'").
2. Meaning: the nearest seed phrase of each category (a few clear phrases per category, encoded with
   the same encoder as the intent). Catches paraphrases with none of the words ("pills for low mood",
   "mosque near me" in another wording). A text counts as sensitive when its cosine to a seed is at
   least NEAR_COSINE.

Neither is perfect: a determined marketer can word around both, and an everyday intent can sit near a
seed ("expecting a baby" is close to health; it is allowed, the seeds are about illness and treatment).
The check stops the ordinary mistake, it is not a guarantee; the user guide says so.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Measured with the seeds below: the twelve labelled everyday intents' names and examples reach at most
# 0.51 ("expecting a baby"), paraphrases of sensitive needs without a keyword 0.60 to 0.90 ("quitting
# drinking", "where to pray on friday", "pills for low mood"). Words that are sensitive only sometimes
# ("race": a trail race; "aids": hearing aids; "roma": tomatoes) are left to this check.
NEAR_COSINE = 0.6

KEYWORDS: dict[str, tuple[str, ...]] = {
    "health": (
        # en
        "diabetes", "cancer", "tumour", "tumor", "chemotherapy", "hiv", "depression", "antidepressant*",
        "anxiety disorder", "schizophrenia", "bipolar", "dementia", "alzheimer*", "diagnos*", "illness", "disease*",
        "medication", "prescription", "therapy", "psychiatr*", "rehab", "addiction", "pregnancy test", "abortion",
        "std", "sti", "infertility", "ivf", "disabilit*", "chronic pain", "mental health", "symptom*", "cure for",
        # de
        "krankheit", "krebs", "diabetes", "depression*", "medikament*", "therapie", "psychiat*", "schwangerschaftstest",
        # fr
        "maladie", "cancer", "dépression", "médicament*", "thérapie", "ordonnance", "avortement",
        # es
        "enfermedad", "cáncer", "depresión", "medicamento*", "terapia", "receta médica", "aborto",
        # it / nl / pt
        "malattia", "farmaci", "ziekte", "kanker", "medicijn*", "doença", "remédio*",
    ),
    "religion": (
        "religion", "religious", "church", "mosque", "synagogue", "temple", "prayer*", "bible", "quran", "koran",
        "torah", "christian*", "muslim*", "islam*", "jewish", "judaism", "hindu*", "buddhis*", "sikh*", "atheis*",
        "halal", "kosher", "ramadan", "baptism", "pilgrimage", "sermon",
        "kirche", "moschee", "gebet*", "religiös*", "église", "mosquée", "prière*", "iglesia", "mezquita",
        "oración", "chiesa", "moskee", "kerk", "igreja", "mesquita",
    ),
    "politics": (
        "politic*", "election*", "vote for", "voting", "democrat*", "republican*", "conservative party",
        "labour party", "socialis*", "communis*", "liberal party", "left wing", "right wing", "campaign donation",
        "political party", "trade union", "protest march",
        "wahl", "partei", "politik*", "élection*", "parti politique", "elecciones", "partido político", "política",
        "politica", "elezioni", "verkiezing*", "eleições",
    ),
    "sexuality": (
        "gay", "lesbian", "bisexual", "transgender", "queer", "lgbt*", "homosexual*", "sexual orientation",
        "dating men", "dating women", "sex toy*", "erotic*", "porn*", "fetish*",
        "schwul", "lesbisch", "homosexuel*", "homosexual", "omosessual*", "homoseksu*",
    ),
    "ethnicity": (
        "ethnic*", "racial", "black people", "white people", "asian people", "hispanic", "latino",
        "ancestry dna", "immigrant*", "refugee*", "indigenous", "afro",
        "ethnie", "herkunft", "migrant*", "ethnique", "étnico", "etnia", "raza", "etnisch",
    ),
}  # fmt: skip

SEEDS: dict[str, tuple[str, ...]] = {
    "health": (
        "treatment for a serious illness",
        "medicine for my chronic condition",
        "pills to help with low mood",
        "coping after a cancer diagnosis",
        "managing blood sugar with insulin",
        "help for alcohol addiction",
    ),
    "religion": (
        "place of worship near me",
        "books about faith and god",
        "celebrating a religious holiday",
        "praying every day",
    ),
    "politics": (
        "which party to vote for",
        "joining a political campaign",
        "donating to a candidate",
        "left or right wing news",
    ),
    "sexuality": (
        "meeting same sex partners",
        "telling family about my sexual orientation",
        "gender transition support",
        "adult toys for the bedroom",
    ),
    "ethnicity": (
        "products for people of my race",
        "dna test for my ethnic origin",
        "community of my ethnic group",
        "hair care for black women",
    ),
}

CATEGORY_WORDS = {
    "health": "health",
    "religion": "religion",
    "politics": "politics",
    "sexuality": "sexuality",
    "ethnicity": "ethnic origin",
}


@dataclass(frozen=True)
class Finding:
    """Why a text was found sensitive."""

    category: str
    text: str
    because: str  # "mentions 'diabetes'" or "means much the same as 'treatment for a serious illness'"

    def message(self) -> str:
        return (
            f"“{self.text}” is about {CATEGORY_WORDS[self.category]} ({self.because}); intents on health, religion,"
            " politics, sexuality or ethnic origin would profile people by special-category data and are refused:"
            " describe the need without them"
        )


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text.casefold())


def _pattern(words: Sequence[str]) -> re.Pattern:
    parts = [re.escape(w[:-1]) + r"\w*" if w.endswith("*") else re.escape(w) for w in words]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")


_PATTERNS = {category: _pattern([_fold(w) for w in words]) for category, words in KEYWORDS.items()}


def keyword_finding(text: str) -> Finding | None:
    """The first category whose keywords the text mentions, or None."""
    folded = _fold(text)
    for category, pattern in _PATTERNS.items():
        match = pattern.search(folded)
        if match:
            return Finding(category, text, f"mentions “{match.group(0)}”")
    return None


def sensitive_finding(texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> Finding | None:
    """Why these texts (an intent's name and examples) are on a special category, or None when they
    are not: keywords first, then the nearest seed phrase by meaning."""
    for text in texts:
        finding = keyword_finding(text)
        if finding is not None:
            return finding
    if not texts:
        return None
    seeds = [(category, seed) for category, phrases in SEEDS.items() for seed in phrases]
    vectors = encode([*texts, *(seed for _, seed in seeds)])
    similarity = vectors[: len(texts)] @ vectors[len(texts) :].T
    row, column = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
    if similarity[row, column] >= NEAR_COSINE:
        category, seed = seeds[column]
        return Finding(category, texts[row], f"means much the same as “{seed}”")
    return None
