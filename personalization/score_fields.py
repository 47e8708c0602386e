"""The predictive scores decide reads, in one place: their names as targeting facts and the compact
unit-hash field that carries them. Pure Python: no Django, no I/O.

Segments trains the models and writes the field ("ps" in the unit hash decide reads in its one
round trip); decide and the targeting conditions read it through these functions, so the format can
change here only. The field is space-separated, one pair of numbers per score in SCORES order:
the score, then the person's top percent among the project's scored people (1 = in the top 1 %),
"-" for a score with no promoted model yet:

    "0.8312 4.2 35.1 12 0.12 80"   likely_to_buy, its top %, expected_revenue, its top %, lapse_risk, its top %
"""

UNIT_SCORES_FIELD = "ps"

# score -> what it means (shown under the conditions box and in errors); order is the field's order.
SCORES: dict[str, str] = {
    "likely_to_buy": "chance (0 to 1) of converting on the project's goal in the next days (Scores page)",
    "expected_revenue": "expected revenue in the next 90 days, in the currency of event values",
    "lapse_risk": "chance (0 to 1) of not coming back in the next days (Scores page)",
}
PROBABILITIES = ("likely_to_buy", "lapse_risk")
TOP_SUFFIX = ".top_percent"


def top_fact(score: str) -> str:
    """The fact of a score's top percent: "likely_to_buy.top_percent"."""
    return score + TOP_SUFFIX


def scores_pack(values: dict[str, tuple[float, float] | None]) -> str:
    """The field for one person: {score: (value, top percent) or None}."""
    parts = []
    for name in SCORES:
        pair = values.get(name)
        if pair is None:
            parts += ["-", "-"]
        else:
            parts += [f"{pair[0]:.4g}", f"{pair[1]:.3g}"]
    return " ".join(parts)


def scores_parse(text: str | None) -> dict[str, float]:
    """The facts a field gives: {score: value, score.top_percent: percent}, only the known ones. An
    unreadable field gives none (a hand-written or older value must not stop decide)."""
    if not text:
        return {}
    parts = text.split()
    if len(parts) != 2 * len(SCORES):
        return {}
    facts: dict[str, float] = {}
    for i, name in enumerate(SCORES):
        value, top = parts[2 * i], parts[2 * i + 1]
        if value == "-":
            continue
        try:
            facts[name], facts[top_fact(name)] = float(value), float(top)
        except ValueError:
            return {}
    return facts
