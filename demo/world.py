"""The demo shop's simulated visitors: planted intents, their behavior and how they answer to content.

Pure numpy with no Django import, so `demo_seed` (history written straight to PostgreSQL) and
`demo_traffic` (live requests to the HTTP endpoints) draw from one model, and tests check it fast.

Every profile has one planted intent (kept as the ordinary profile attribute PLANTED_ATTRIBUTE, to
measure how well behavior segments recover it). The intent sets what the visitor browses and
searches, how long they dwell,
how deep they scroll, their devices and channel, and how often and how much they buy. Each intent
also answers differently to the variants of the demo experiences: `conversion_probability` is the
intent's base rate times one multiplier per variant shown (1.0 for the control). Some variants help
one intent and hurt another, so a per-segment policy beats any single winner.

The profile attribute "intent" is a demo shortcut until behavior segments land: it plays the answer
to a "what are you shopping for?" question, which the per-segment bandit uses as its segment. Like a
real stated preference it is mostly right: STATED_INTENT_ACCURACY of visitors give their planted
intent, the rest another one.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from personalization.decide import hashing
from personalization.experiences import conditions
from personalization.people import journey, live_session

STATED_INTENT_ACCURACY = 0.9
# The profile attribute holding each demo visitor's planted intent (the truth segments are checked against).
PLANTED_ATTRIBUTE = "planted_intent"
MAX_VISIT_CONVERSION = 0.5
USER_ID_SHARE = 1 / 3
# Share of page views outside the visitor's own taste: keeps intents overlapping, as on a real site.
BROWSE_NOISE = 0.15

CATALOG: dict[str, tuple[str, ...]] = {
    "trail-shoes": ("ridgeline-trail-3", "scree-runner", "mudlark-gtx", "summit-glide", "talus-lite"),
    "road-shoes": ("tempo-carbon", "daily-cruiser-7", "pacer-lite", "cushion-max", "race-flat-2"),
    "running-apparel": ("split-shorts", "merino-tee", "thermal-tights", "wind-shell", "race-singlet"),
    "hydration": ("race-vest-5l", "soft-flask-500", "handheld-bottle", "hydration-pack-12l"),
    "gps-watches": ("pace-pro-gps", "trail-nav-watch", "heart-rate-strap", "fitness-band"),
    "nutrition": ("energy-gels-12", "electrolyte-tabs", "recovery-bars", "chews-variety"),
    "headlamps": ("night-trail-400", "compact-200", "rechargeable-900"),
    "hiking": ("day-pack-22l", "trekking-poles", "hiking-boot-mid", "rain-jacket"),
    "walking": ("city-walker", "comfort-sneaker", "walking-socks-3", "light-parka"),
    "yoga": ("cork-yoga-mat", "yoga-leggings", "yoga-blocks", "studio-hoodie"),
    "kids-baby": ("jogging-stroller", "baby-carrier", "kids-rain-suit", "toddler-hiker"),
    "gifts": ("gift-card-50", "gift-card-100", "runners-gift-box", "sock-gift-set"),
    "sale": ("last-season-trail", "outlet-tee", "clearance-jacket", "bundle-deal"),
    "camping": ("ultralight-tent", "sleeping-bag-3s", "camp-stove", "camp-chair"),
}
CATEGORIES = tuple(CATALOG)
GENERIC_QUERIES = ("shoes", "jacket", "socks", "water bottle", "returns", "store hours", "size guide")
# Share of sessions starting in each hour (UTC, as the shop's own time zone): evenings and lunch peak.
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 7, 6, 5, 5, 6, 7, 9, 10, 10, 8, 5, 2], dtype=float)


@dataclass(frozen=True)
class Intent:
    """One planted kind of visitor: what they look at, how they behave, how they buy."""

    key: str
    label: str
    share: float
    categories: Mapping[str, float]
    queries: tuple[str, ...]
    dwell_median_ms: float  # lognormal page dwell, sigma 0.8
    scroll_beta: tuple[float, float]  # scroll depth ~ 100 * Beta(a, b)
    pages: float  # mean pages per session
    sessions: float  # mean sessions per 14 days
    search_rate: float  # chance a page is a search
    cart_rate: float  # chance of add-to-cart on a product page
    conversion: float  # purchase chance per visit with no personalization
    order_median: float  # lognormal order value, sigma 0.45
    devices: Mapping[str, float]
    channels: Mapping[str, float]
    account_share: float  # has a user id (logged-in customer)
    plans: Mapping[str, float]  # of account holders
    # Session behavior the journey stage reads, as it would live:
    focus: float = 0.0  # chance a product view stays in the session's first category (comparing)
    refine: float = 0.0  # chance a search narrows the previous one ("gps watch" → "gps watch battery")
    product_share: float = 0.65  # share of pages after the first that are product pages (the rest categories)


INTENTS: dict[str, Intent] = {
    i.key: i
    for i in (
        Intent(
            "trail_runner", "Trail runner", 0.16,
            {"trail-shoes": 5, "hydration": 3, "headlamps": 2, "running-apparel": 2, "nutrition": 1.5, "hiking": 1},
            ("trail shoes", "grippy soles for muddy mountain paths", "waterproof off-road runners",
             "hydration vest for ultras", "headtorch for night races", "lugged outsole for scree",
             "fell racing kit", "50k mountain race gear", "rock plate for rocky descents",
             "gaiters to keep stones out", "sky running", "single track footwear"),
            35_000, (2.5, 2.0), 4.5, 3.0, 0.12, 0.12, 0.034, 125,
            {"mobile": 0.6, "desktop": 0.35, "tablet": 0.05},
            {"social": 0.3, "direct": 0.25, "organic_search": 0.25, "email": 0.15, "paid_search": 0.05},
            0.40, {"member": 0.7, "plus": 0.3},
        ),
        Intent(
            "marathon_trainer", "Marathon trainer", 0.13,
            {"road-shoes": 5, "gps-watches": 3, "nutrition": 3, "running-apparel": 3, "hydration": 1},
            ("carbon plate shoes", "racing flats for a personal best", "26.2 mile training plan", "energy gels",
             "gps watch", "tempo run pacing", "sub 3 hour pace", "long run fuelling", "road race taper",
             "cushioned daily trainers for high mileage", "half marathon splits", "running tights"),
            30_000, (2.5, 2.0), 4.5, 3.5, 0.10, 0.12, 0.036, 115,
            {"mobile": 0.55, "desktop": 0.4, "tablet": 0.05},
            {"email": 0.3, "direct": 0.3, "organic_search": 0.2, "social": 0.15, "paid_search": 0.05},
            0.50, {"member": 0.6, "plus": 0.4}, focus=0.5, refine=0.5,
        ),
        Intent(
            "bargain_hunter", "Bargain hunter", 0.17,
            {"sale": 6, "road-shoes": 1.5, "running-apparel": 2, "walking": 1.5, "trail-shoes": 1},
            ("sale", "discount running shoes", "clearance", "outlet", "cheap jacket", "promo code",
             "voucher", "last season prices", "bargains under 30", "money off coupon", "end of line deals",
             "reduced trainers"),
            15_000, (4.0, 1.5), 5.0, 2.5, 0.15, 0.16, 0.028, 42,
            {"mobile": 0.7, "desktop": 0.25, "tablet": 0.05},
            {"affiliate": 0.35, "paid_search": 0.3, "email": 0.15, "social": 0.1, "direct": 0.1},
            0.25, {"member": 0.95, "plus": 0.05},
        ),
        Intent(
            "gift_buyer", "Gift buyer", 0.10,
            {"gifts": 6, "running-apparel": 1.5, "headlamps": 1.5, "yoga": 1, "gps-watches": 1},
            ("gift for runner", "gift card", "christmas present", "stocking stuffer", "birthday surprise for my dad",
             "what to buy a jogger who has everything", "secret santa ideas", "presents for her", "voucher to give",
             "anniversary treat for my husband", "wrapped and delivered", "thank you hamper"),
            25_000, (2.5, 2.5), 4.0, 1.5, 0.15, 0.14, 0.045, 70,
            {"mobile": 0.5, "desktop": 0.45, "tablet": 0.05},
            {"paid_search": 0.35, "social": 0.3, "organic_search": 0.2, "direct": 0.15},
            0.15, {"member": 0.9, "plus": 0.1},
        ),
        Intent(
            "gear_researcher", "Gear researcher", 0.12,
            {"gps-watches": 4, "camping": 3, "trail-shoes": 2, "headlamps": 2, "hiking": 2},
            ("garmin vs coros", "tent weight comparison", "best headlamp lumens", "gps watch battery",
             "waterproof rating", "reviews", "hydrostatic head explained", "which is lighter", "spec sheet",
             "lab test results", "durability after 500 km", "pros and cons"),
            70_000, (6.0, 1.2), 7.0, 3.5, 0.20, 0.06, 0.018, 190,
            {"desktop": 0.65, "mobile": 0.3, "tablet": 0.05},
            {"organic_search": 0.45, "referral": 0.3, "direct": 0.15, "email": 0.1},
            0.35, {"member": 0.6, "plus": 0.4}, focus=0.6, refine=0.6,
        ),
        Intent(
            "casual_walker", "Casual walker", 0.14,
            {"walking": 6, "hiking": 1.5, "running-apparel": 1, "sale": 1.5},
            ("walking shoes", "comfortable sneakers", "rain jacket", "wide fit shoes", "shoes for standing all day",
             "sunday stroll around the park", "arch support for flat feet", "lightweight mac for drizzle",
             "everyday footwear for seniors", "slip-on loafers", "dog walking boots", "gentle strolls"),
            22_000, (2.0, 2.5), 3.0, 1.8, 0.08, 0.10, 0.024, 75,
            {"mobile": 0.55, "desktop": 0.3, "tablet": 0.15},
            {"direct": 0.35, "organic_search": 0.35, "paid_search": 0.15, "social": 0.15},
            0.25, {"member": 0.9, "plus": 0.1}, product_share=0.4,
        ),
        Intent(
            "yoga_fan", "Yoga fan", 0.09,
            {"yoga": 6, "running-apparel": 1.5, "nutrition": 1, "walking": 1},
            ("yoga mat", "cork mat", "leggings", "yoga blocks", "studio hoodie", "pilates",
             "non slip surface for asanas", "meditation cushion", "stretching strap",
             "hot vinyasa class outfit", "downward dog grip", "mindful breathing"),
            20_000, (3.0, 2.0), 3.5, 2.5, 0.10, 0.12, 0.032, 60,
            {"mobile": 0.75, "desktop": 0.15, "tablet": 0.1},
            {"social": 0.5, "direct": 0.2, "email": 0.15, "organic_search": 0.15},
            0.35, {"member": 0.75, "plus": 0.25},
        ),
        Intent(
            "new_parent", "New parent", 0.09,
            {"kids-baby": 6, "walking": 1.5, "hiking": 1.5, "sale": 1},
            ("jogging stroller", "baby carrier", "kids rain suit", "toddler shoes", "pram with big wheels for parks",
             "sling for a newborn", "puddle suit for a 2 year old", "first walkers", "buggy that folds small",
             "nappy bag backpack", "outdoor clothes for little ones", "pushchair for rough tracks"),
            40_000, (3.0, 1.8), 5.0, 2.5, 0.14, 0.10, 0.030, 140,
            {"mobile": 0.8, "desktop": 0.15, "tablet": 0.05},
            {"social": 0.35, "referral": 0.25, "organic_search": 0.25, "direct": 0.15},
            0.30, {"member": 0.8, "plus": 0.2},
        ),
    )
}  # fmt: skip
INTENT_KEYS = tuple(INTENTS)


@dataclass(frozen=True)
class DemoVariant:
    """One variant of a demo experience and how each intent answers to it (multiplier on conversion)."""

    key: str
    name: str
    payload: Mapping
    is_control: bool = False
    weight: float = 1.0
    response: Mapping[str, float] = field(default_factory=dict)
    # Journey stage at exposure -> multiplier on the visit's conversion (stage-targeted experiences).
    stage_response: Mapping[str, float] = field(default_factory=dict)
    # Share of the visits a week or more after the first exposure that still happen (1.0: all of them).
    return_response: float = 1.0


@dataclass(frozen=True)
class DemoExperience:
    """A demo experience as data; `service_fields` is what the experience services take."""

    key: str
    name: str
    touchpoint: str
    policy: str
    variants: tuple[DemoVariant, ...]
    started_days_ago: float
    segment_attribute: str = ""
    holdout_share: float = 0.0
    # Journey stages the experience targets: decide shows it only then, so in the history it is
    # exposed at the first product or category page of a visit that is in one of them.
    stages: tuple[str, ...] = ()

    def service_fields(self) -> dict:
        targeting = {"targeting": {"conditions": "stage in " + ", ".join(self.stages)}} if self.stages else {}
        return {
            **targeting,
            "key": self.key,
            "name": self.name,
            "touchpoint": self.touchpoint,
            "policy": self.policy,
            "segment_attribute": self.segment_attribute,
            "holdout_share": self.holdout_share,
            "variants": [
                {
                    "key": v.key,
                    "name": v.name,
                    "payload": dict(v.payload),
                    "is_control": v.is_control,
                    "weight": v.weight,
                }
                for v in self.variants
            ],
        }

    @property
    def control(self) -> DemoVariant:
        return next(v for v in self.variants if v.is_control)


def _hero(key: str, headline: str, cta: str, url: str) -> dict:
    return {"headline": headline, "image": f"/static/demo/hero-{key}.svg", "cta": cta, "cta_url": url}


EXPERIENCES: tuple[DemoExperience, ...] = (
    DemoExperience(
        "homepage-hero", "Homepage hero by intent", "homepage hero", "segment_bandit",
        (
            DemoVariant("classic", "New season",
                        _hero("classic", "Gear up for the new season", "Shop new arrivals", "/c/new"), is_control=True),
            DemoVariant("trail", "Trail", _hero("trail", "Built for the mountain", "Shop trail", "/c/trail-shoes"),
                        response={"trail_runner": 1.6, "marathon_trainer": 1.2, "gear_researcher": 1.1,
                                  "bargain_hunter": 0.7, "gift_buyer": 0.9, "casual_walker": 0.85,
                                  "yoga_fan": 0.8, "new_parent": 0.85}),
            DemoVariant("deals", "Deals", _hero("deals", "Up to 50 % off last season", "Shop the sale", "/c/sale"),
                        response={"bargain_hunter": 1.7, "casual_walker": 1.2, "new_parent": 1.15,
                                  "gift_buyer": 1.05, "gear_researcher": 0.7, "trail_runner": 0.9,
                                  "marathon_trainer": 0.85}),
            DemoVariant("gifts", "Gift guide", _hero("gifts", "Gifts for every runner", "Find a gift", "/c/gifts"),
                        response={"gift_buyer": 1.8, "new_parent": 1.1, "yoga_fan": 1.15, "trail_runner": 0.85,
                                  "marathon_trainer": 0.85, "gear_researcher": 0.8}),
        ),
        started_days_ago=12, segment_attribute="intent",
    ),
    DemoExperience(
        "shipping-banner", "Free shipping threshold banner", "site-wide banner", "fixed",
        (
            DemoVariant("none", "No banner", {"text": ""}, is_control=True),
            DemoVariant("free-over-50", "Free shipping over $50",
                        {"text": "Free shipping on orders over $50", "threshold": 50},
                        response={"bargain_hunter": 1.5, "gift_buyer": 1.3, "casual_walker": 1.2,
                                  "new_parent": 1.15, "yoga_fan": 1.1, "trail_runner": 1.05,
                                  "marathon_trainer": 1.05, "gear_researcher": 0.95}),
        ),
        started_days_ago=10, holdout_share=0.1,
    ),
    DemoExperience(
        "product-recs", "Product page recommendations", "product page recommendations", "bandit",
        (
            DemoVariant("bestsellers", "Bestsellers", {"strategy": "bestsellers", "title": "Bestsellers"},
                        is_control=True),
            DemoVariant("similar", "Similar items", {"strategy": "similar", "title": "You may also like"},
                        response={"gear_researcher": 1.4, "trail_runner": 1.25, "marathon_trainer": 1.25,
                                  "yoga_fan": 1.1, "casual_walker": 1.1, "gift_buyer": 1.05, "new_parent": 1.05}),
            DemoVariant("bundles", "Complete the kit", {"strategy": "bundles", "title": "Complete the kit"},
                        response={"new_parent": 1.4, "yoga_fan": 1.1, "gift_buyer": 1.1, "trail_runner": 1.05,
                                  "bargain_hunter": 0.8, "gear_researcher": 0.9}),
            DemoVariant("trending", "Trending now", {"strategy": "trending", "title": "Trending now"},
                        response={"gift_buyer": 1.1, "casual_walker": 1.05, "gear_researcher": 0.95}),
        ),
        started_days_ago=9,
    ),
    DemoExperience(
        "signup-popup", "Newsletter pop-up with 10 % off", "exit-intent pop-up", "fixed",
        (
            DemoVariant("off", "No pop-up", {"show": False}, is_control=True),
            DemoVariant("ten-off", "10 % off pop-up",
                        {"show": True, "headline": "Take 10 % off your first order", "cta": "Get my code"},
                        # The demo's planted heterogeneity, strong enough to show on the Lift page
                        # ("signup-popup" against its control, by planted intent): deal seekers love
                        # it, focused runners and researchers are put off.
                        response={"bargain_hunter": 2.2, "casual_walker": 1.6, "gift_buyer": 1.5,
                                  "new_parent": 1.4, "gear_researcher": 0.4, "marathon_trainer": 0.5,
                                  "trail_runner": 0.55}),
        ),
        started_days_ago=7,
    ),
    DemoExperience(
        "compare-guide", "Side-by-side comparison guide", "product page compare panel", "fixed",
        (
            DemoVariant("none", "No guide", {"show": False}, is_control=True),
            DemoVariant("guide", "Comparison guide", {"show": True, "title": "Compare the top picks"},
                        # The planted effect by journey stage (Lift by "Journey stage at exposure"):
                        # the guide helps a visitor still comparing and distracts one with a cart.
                        stage_response={"comparing": 1.5, "deciding": 0.5}),
        ),
        started_days_ago=8, stages=("comparing", "deciding"),
    ),
)  # fmt: skip
# The long-term story, planted only in a demo asked for it (demo_seed(long_term=True)): its effect
# shows a month after exposure, so it needs a history of more than 30 days, too long for the
# default demo. The discount lifts the first order and teaches people to wait for the next one:
# conversion up, return on days 8–30 down, which the Lift page's guardrail (return-30d) catches.
LONG_TERM_EXPERIENCES: tuple[DemoExperience, ...] = (
    DemoExperience(
        "first-order-discount",
        "Half price on the first order",
        "first-visit banner",
        "fixed",
        (
            DemoVariant("none", "No discount", {"show": False}, is_control=True),
            DemoVariant(
                "half-off",
                "50 % off the first order",
                {"show": True, "headline": "Half price on your first order"},
                response=dict.fromkeys(INTENTS, 2.5),
                return_response=0.3,
            ),
        ),
        started_days_ago=70,
    ),
)
# Days of history the long-term story needs: its start, plus a little pre-period before it.
LONG_TERM_MIN_DAYS = 75
EXPERIENCE_BY_KEY = {e.key: e for e in (*EXPERIENCES, *LONG_TERM_EXPERIENCES)}
_REASON = {"fixed": "fixed_split", "bandit": "bandit", "segment_bandit": "segment_bandit"}


def planted_direction(experience_key: str, variant_key: str, *, at_least: float = 1.4) -> dict[str, int]:
    """Intents a variant was built to help (+1) or hurt (-1) by at least the factor `at_least`."""
    response = _RESPONSES[(experience_key, variant_key)]
    return {
        intent: 1 if factor > 1 else -1
        for intent, factor in response.items()
        if factor >= at_least or factor <= 1 / at_least
    }


# (experience, variant) -> intent -> multiplier on the visit's conversion chance
_RESPONSES = {(e.key, v.key): v.response for e in EXPERIENCE_BY_KEY.values() for v in e.variants}
# (experience, variant) -> share of later visits kept, for the variants that change it
_RETURNS = {
    (e.key, v.key): v.return_response for e in EXPERIENCE_BY_KEY.values() for v in e.variants if v.return_response < 1
}
_RETURN_AFTER = timedelta(days=7)


def conversion_probability(intent: str, assignments: Mapping[str, object]) -> float:
    """Chance that one visit of this intent ends in a purchase, given the variants it was shown.

    `assignments` maps experience key to a variant key, or to a decide answer ({"variant": ...}).
    Unknown experiences and variants count as the control (multiplier 1).
    """
    probability = INTENTS[intent].conversion
    for experience_key, assigned in assignments.items():
        variant_key = assigned.get("variant") if isinstance(assigned, dict) else assigned
        response = _RESPONSES.get((experience_key, variant_key))
        if response:
            probability *= response.get(intent, 1.0)
    return min(probability, MAX_VISIT_CONVERSION)


def history_arm(
    *,
    unit: str,
    project_salt: str,
    global_holdout_share: float,
    experience_salt: str,
    holdout_share: float,
    weights: list[float],
) -> tuple[str, int | None]:
    """(arm, variant index) the decide engine gives this unit on a first visit; None means the control.

    The same hashing as decide: global holdout, then experience holdout, then the weighted split.
    """
    if hashing.unit_bucket(project_salt, unit) < global_holdout_share:
        return "holdout_global", None
    if hashing.unit_bucket(f"{experience_salt}:holdout", unit) < holdout_share:
        return "holdout_experience", None
    return "variant", hashing.pick_index(weights, hashing.unit_bucket(experience_salt, unit))


def reason_for(arm: str, policy: str) -> str:
    return arm if arm != "variant" else _REASON[policy]


@dataclass(slots=True)
class DemoProfile:
    """One simulated visitor."""

    n: int
    intent: str
    anonymous_id: str
    user_id: str | None
    attributes: dict
    tastes: list[float]  # cumulative category weights: the intent's, with personal variation
    habit: float = 1.0  # multiplier on every visit's purchase chance (see REPEAT_BUYER_SHARE)
    repeat_buyer: bool = False


class _Choice:
    """Weighted choice by inverse CDF: bisect on a cumulative list (far cheaper than rng.choice per draw)."""

    def __init__(self, weights: Mapping[str, float]):
        self.keys = tuple(weights)
        total = sum(weights.values())
        self.cumulative = list(itertools.accumulate(w / total for w in weights.values()))

    def __call__(self, u: float) -> str:
        return self.keys[min(bisect.bisect_right(self.cumulative, u), len(self.keys) - 1)]


_INTENT_CHOICE = _Choice({k: i.share for k, i in INTENTS.items()})
_TRAITS = {
    k: (
        _Choice(i.devices),
        _Choice(i.channels),
        _Choice(i.plans),
        np.array([i.categories.get(c, 0.0) for c in CATEGORIES]),
    )
    for k, i in INTENTS.items()
}
_MEAN_ACCOUNT_SHARE = sum(i.share * i.account_share for i in INTENTS.values()) / sum(i.share for i in INTENTS.values())
_HOUR_CUMULATIVE = list(itertools.accumulate(HOUR_WEIGHTS / HOUR_WEIGHTS.sum()))
_TASTE_CONCENTRATION = 20.0  # lower: visitors of one intent differ more from each other


# Repeat buyers: in intents whose shopping comes back (training fuel, growing children, deals, studio
# kit), this share of visitors come back REPEAT_BUYER_VISITS more times per 14 days and buy on
# REPEAT_BUYER_HABIT times as many visits; the rest of their intent buy on fewer, so that the intent's
# purchase chance per visit keeps its planted mean. Past purchases and visits then predict the next
# ones, as in real shops: what the likely_to_buy score learns from.
REPEAT_BUYER_SHARE = {"marathon_trainer": 0.25, "new_parent": 0.25, "yoga_fan": 0.25, "bargain_hunter": 0.25}
REPEAT_BUYER_HABIT = 3.0
REPEAT_BUYER_VISITS = 3.0


def intent_mix() -> dict[str, float]:
    """Planted share of each intent in the population."""
    total = sum(i.share for i in INTENTS.values())
    return {k: i.share / total for k, i in INTENTS.items()}


def profile_make(n: int, rng: np.random.Generator, *, anonymous_id: str | None = None) -> DemoProfile:
    """A visitor with a planted intent, numbered n (anonymous id "d{n}"; about a third get user id "u{n}")."""
    u = rng.random(8).tolist()
    intent_key = _INTENT_CHOICE(u[0])
    intent = INTENTS[intent_key]
    devices, channels, plans, categories = _TRAITS[intent_key]
    user_id = f"u{n}" if u[1] < intent.account_share * USER_ID_SHARE / _MEAN_ACCOUNT_SHARE else None
    stated = intent_key if u[2] < STATED_INTENT_ACCURACY else INTENT_KEYS[int(u[3] * len(INTENT_KEYS))]
    attributes = {
        "device": devices(u[4]),
        "channel": channels(u[5]),
        "plan": plans(u[6]) if user_id else "guest",
        "intent": stated,
    }
    base = categories + 0.05
    taste = rng.dirichlet(base / base.sum() * _TASTE_CONCENTRATION)
    taste = (1 - BROWSE_NOISE) * taste + BROWSE_NOISE / len(CATEGORIES)
    share = REPEAT_BUYER_SHARE.get(intent_key, 0.0)
    repeat = u[7] < share
    habit = REPEAT_BUYER_HABIT if repeat else (1 - share * REPEAT_BUYER_HABIT) / (1 - share)
    cumulative = np.cumsum(taste).tolist()
    return DemoProfile(n, intent_key, anonymous_id or f"d{n}", user_id, attributes, cumulative, habit, repeat)


def profiles_generate(count: int, *, seed: int) -> list[DemoProfile]:
    """The demo population, the same for the same (count, seed): demo_traffic rebuilds it to know intents."""
    rng = np.random.default_rng([seed, 1])
    return [profile_make(n, rng) for n in range(count)]


def session_starts(profile: DemoProfile, rng: np.random.Generator, *, end: datetime, days: float) -> list[datetime]:
    """Start times of a profile's visits over the `days` before `end` (up to its last half hour), with
    a daily rhythm: a calendar day, then an hour by HOUR_WEIGHTS, drawn again if outside the window."""
    intent = INTENTS[profile.intent]
    count = 1 + int(rng.poisson(max(intent.sessions - 1, 0.0) * days / 14.0))
    return _starts_draw(count, rng, end=end, days=days)


def repeat_visit_starts(profile: DemoProfile, *, seed: int, end: datetime, days: float) -> list[datetime]:
    """A repeat buyer's visits on top of their intent's (none for anyone else), drawn from the profile's
    own random stream so that everyone else's history stays what the same seed always gave."""
    if not profile.repeat_buyer:
        return []
    rng = np.random.default_rng([seed, 3, profile.n])
    return _starts_draw(int(rng.poisson(REPEAT_BUYER_VISITS * days / 14.0)), rng, end=end, days=days)


def _starts_draw(count: int, rng: np.random.Generator, *, end: datetime, days: float) -> list[datetime]:
    window_start = end - timedelta(days=days)
    latest = end - timedelta(minutes=30)
    first_day = window_start.replace(hour=0, minute=0, second=0, microsecond=0)
    calendar_days = (latest - first_day).days + 1
    starts: list[datetime] = []
    while len(starts) < count:
        for u_day, u_hour, u_second in rng.random((count - len(starts), 3)).tolist():
            hour = min(bisect.bisect_right(_HOUR_CUMULATIVE, u_hour), 23)
            start = first_day + timedelta(days=int(u_day * calendar_days), hours=hour, seconds=u_second * 3600)
            if window_start <= start <= latest:
                starts.append(start)
    return sorted(starts)


_REFINEMENTS = ("reviews", "comparison", "weight", "battery life", "waterproof", "best")


class VisitorState:
    """One visitor's live session state as the events script keeps it (the counters the journey
    stage and an exposure's facts read), folded from the demo's own events: the demo runs without
    Redis, and reads the state through the same SessionView, stage classifier and facts record as
    decide, so an exposure's stage in the history is the one decide would have recorded."""

    def __init__(self, idle_seconds: int = live_session.DEFAULT_IDLE_MINUTES * 60):
        self.idle = idle_seconds
        self.first_seen: float | None = None
        self.last: float | None = None
        self.previous_last: float | None = None
        self.days: dict[int, int] = {}
        self._open(None)

    def _open(self, ts: float | None) -> None:
        if ts is not None and self.last is not None:
            self.previous_last = self.last
        self.started = ts
        self.types: dict[str, int] = {}
        self.items: set[str] = set()
        self.category_views: dict[str, int] = {}
        self.category_items: dict[str, int] = {}
        self.searches = self.refinements = self.page_views = self.checkouts = self.long_dwell = 0
        self.cart_adds = self.purchases = 0
        self.cart: tuple[float, str] | None = None
        self.query = ""
        if ts is not None:
            day = int(ts // 86400)
            self.days[day] = self.days.get(day, 0) + 1

    def fold(self, event: dict) -> None:
        ts = event["ts"].timestamp()
        if self.last is None or ts - self.last > self.idle:
            self._open(ts)
        self.first_seen = ts if self.first_seen is None else self.first_seen
        self.last = ts
        etype, props = event["type"], event["properties"]
        self.types[etype] = self.types.get(etype, 0) + 1
        if etype == "page_view":
            self.page_views += 1
            self.checkouts += props["url"] == "/checkout"
            self.long_dwell += props.get("dwell_ms", 0) >= live_session.LONG_DWELL_MS
            category, item = props.get("category"), props.get("item")
            if item:
                self.items.add(item)
            if category:
                self.category_views[category] = self.category_views.get(category, 0) + 1
                self.category_items[category] = self.category_items.get(category, 0) + bool(item)
        elif etype == "search":
            query = live_session.query_normal(props["query"])
            words = f" {self.query} "
            if self.query and query != self.query and any(len(w) >= 3 and f" {w} " in words for w in query.split()):
                self.refinements += 1
            self.searches += 1
            self.query = query
        elif etype == "add_to_cart":
            self.cart_adds += 1
            self.cart = (ts, props["item"])
        elif etype == "purchase":
            self.purchases += 1
            self.cart = None

    def view(self, now: datetime) -> live_session.SessionView:
        at = now.timestamp()
        return live_session.SessionView(
            now=at,
            known=self.last is not None,
            ended=self.last is not None and at - self.last > self.idle,
            started=self.started,
            last=self.last,
            events=sum(self.types.values()),
            events_by_type=dict(self.types),
            page_views=self.page_views,
            items_viewed=len(self.items),
            category_views=dict(self.category_views),
            category_item_views=dict(self.category_items),
            searches=self.searches,
            search_refinements=self.refinements,
            queries=(self.query,) if self.query else (),
            cart_adds=self.cart_adds,
            cart_removes=0,
            purchases=self.purchases,
            checkout_views=self.checkouts,
            long_dwell_views=self.long_dwell,
            session_channel="",
            sessions_30d=sum(n for day, n in self.days.items() if day > at // 86400 - live_session.MAX_DAYS),
            previous_session_last=self.previous_last,
            cart_open=self.cart,
            first_touch="",
            first_seen=self.first_seen,
        )

    def record(self, now: datetime) -> dict:
        """What decide's exposure would keep of the state at `now` (Exposure.live)."""
        view = self.view(now)
        facts = conditions.facts_of(view, {}, journey.stage_name(view))
        facts["first_touch_class"] = "direct"  # the demo's page views carry no referrer or utm
        return conditions.facts_record(facts, ())


_CLICK_TARGET = {"home": "hero-cta", "search": "search-result", "category": "product-card", "product": "reviews-tab"}
_MAX_DWELL_MS = 600_000


def session_events(
    profile: DemoProfile,
    rng: np.random.Generator,
    *,
    start: datetime,
    shown: Mapping[str, object],
    session_id: str,
) -> list[dict]:
    """One visit's events, in order: page views, scrolls, clicks, searches, carts, maybe a purchase.

    Events are dicts with event_id, type, ts (datetime), session_id, value and properties; `api_event`
    turns one into the shape POST /api/v1/events takes. The purchase is drawn from
    conversion_probability(intent, shown) (live traffic: decide's answers carry no stage, so a
    stage-targeted experience's effect is left out).
    """
    return _session_play(profile, rng, start=start, shown=shown, session_id=session_id, state=VisitorState())[0]


def _session_play(
    profile: DemoProfile,
    rng: np.random.Generator,
    *,
    start: datetime,
    shown: Mapping[str, object],
    session_id: str,
    state: VisitorState,
) -> tuple[list[dict], dict[str, tuple[datetime, dict]]]:
    """The visit's events, folding each into `state`, and each stage-targeted experience of `shown`
    exposed in it: key -> (time, Exposure.live), at the first product or category page whose stage (the
    journey classifier on the state so far) is one it targets; its stage_response then scales the
    purchase chance."""
    intent = INTENTS[profile.intent]
    pages = 1 + int(rng.poisson(intent.pages - 1))
    draws = rng.random((pages, 8)).tolist()
    dwells = rng.lognormal(math.log(intent.dwell_median_ms), 0.8, pages).tolist()
    depths = (rng.beta(*intent.scroll_beta, pages) * 100).tolist()
    buy_draw, value_draw = rng.random(), rng.lognormal(math.log(intent.order_median), 0.45)
    tastes = profile.tastes
    events: list[dict] = []
    offset_ms = 0.0
    cart: list[tuple[str, str]] = []
    last_product: tuple[str, str] | None = None

    staged = [(spec, shown[spec.key]) for spec in EXPERIENCES if spec.stages and spec.key in shown]
    exposed: dict[str, tuple[datetime, dict]] = {}
    multiplier = 1.0
    first_category = ""
    base_query = ""

    def add(etype: str, properties: dict, value: float | None = None) -> None:
        event = {
            "event_id": f"{session_id}-{len(events)}",
            "type": etype,
            "ts": start + timedelta(0, 0, 0, offset_ms),
            "session_id": session_id,
            "value": value,
            "properties": properties,
        }
        events.append(event)
        state.fold(event)

    def expose() -> float:
        """The stage-targeted experiences this page shows (decide is asked once the page is viewed)."""
        factor = 1.0
        for spec, assigned in staged:
            if spec.key in exposed:
                continue
            stage = journey.stage_name(state.view(events[-1]["ts"]))
            if stage in spec.stages:
                exposed[spec.key] = (events[-1]["ts"], state.record(events[-1]["ts"]))
                variant_key = assigned.get("variant") if isinstance(assigned, dict) else assigned
                variant = next((v for v in spec.variants if v.key == variant_key), None)
                factor *= variant.stage_response.get(stage, 1.0) if variant else 1.0
        return factor

    for i, r in enumerate(draws):
        category = CATEGORIES[min(bisect.bisect_right(tastes, r[0]), len(CATEGORIES) - 1)]
        first_category = first_category or category
        # A focused visitor keeps looking at items of one category (r[5] is free on product pages).
        if intent.focus and r[2] < intent.product_share and r[5] < intent.focus:
            category = first_category
        item = CATALOG[category][int(r[1] * len(CATALOG[category]))]
        dwell_ms = int(dwells[i])
        if i == 0 and r[2] < 0.55:
            kind, url = "home", "/"
            add("page_view", {"url": url, "dwell_ms": dwell_ms})
        elif r[3] < intent.search_rate:
            if base_query and r[5] < intent.refine:
                # The last search narrowed by a word: the live state counts it as a refinement.
                query = f"{base_query} {_REFINEMENTS[int(r[4] * len(_REFINEMENTS))]}"
            else:
                queries = intent.queries if r[5] < 0.85 else GENERIC_QUERIES
                query = base_query = queries[int(r[4] * len(queries))]
            kind, url = "search", f"/search?q={query.replace(' ', '+')}"
            add("search", {"query": query})
            add("page_view", {"url": url, "query": query, "dwell_ms": dwell_ms})
        elif r[2] < intent.product_share:
            kind, url = "product", f"/p/{item}"
            add("page_view", {"url": url, "category": category, "item": item, "dwell_ms": dwell_ms})
            last_product = (category, item)
            multiplier *= expose() if staged else 1.0
        else:
            kind, url = "category", f"/c/{category}"
            add("page_view", {"url": url, "category": category, "dwell_ms": dwell_ms})
            multiplier *= expose() if staged else 1.0
        spent = min(dwell_ms, _MAX_DWELL_MS)
        offset_ms += spent * 0.3
        if r[6] < 0.4:
            add("scroll", {"depth": round(depths[i], 1), "url": url})
        offset_ms += spent * 0.5
        if r[7] < 0.25:
            add("click", {"target": _CLICK_TARGET[kind], "url": url})
        if kind == "product" and r[7] > 1 - intent.cart_rate:
            add("add_to_cart", {"item": item, "category": category})
            cart.append((category, item))
        offset_ms += spent * 0.2 + 500

    if buy_draw < min(conversion_probability(profile.intent, shown) * multiplier * profile.habit, MAX_VISIT_CONVERSION):
        if not cart:
            category = last_product[0] if last_product else intent_top_category(profile.intent)
            item = last_product[1] if last_product else CATALOG[category][0]
            add("add_to_cart", {"item": item, "category": category})
            cart.append((category, item))
            offset_ms += 5_000
        add("page_view", {"url": "/checkout", "dwell_ms": int(sum(dwells) / pages)})
        offset_ms += 60_000
        value = round(float(value_draw), 2)
        add("purchase", {"items": [i for _, i in cart], "category": cart[0][0], "value": value}, value)
    return events, exposed


def intent_top_category(intent: str) -> str:
    weights = INTENTS[intent].categories
    return max(weights, key=weights.__getitem__)


@dataclass(slots=True)
class Session:
    """One generated visit: who, when, which variants it saw, its events, and when each experience
    was exposed in it with the live state decide would have recorded: key -> (time, Exposure.live)."""

    profile: DemoProfile
    start: datetime
    shown: dict[str, str]
    events: list[dict]
    exposed: dict[str, tuple[datetime, dict]] = field(default_factory=dict)


def history_generate(
    profiles: list[DemoProfile],
    *,
    end: datetime,
    days: float,
    seed: int,
    arms: Callable[[DemoProfile], Mapping[str, str]],
    starts: Mapping[str, datetime],
) -> Iterator[Session]:
    """Every profile's visits over `days` before `end`.

    `arms(profile)` gives the variant key each experience shows that profile (the control for
    holdouts); a visit sees an experience only once it has started (`starts`), so earlier visits
    are the pre-period that CUPED-style adjustments use. A variant with a return_response keeps
    only that share of the visits a week or more after the profile first saw it.
    """
    rng = np.random.default_rng([seed, 2])
    # Its own stream, drawn only for variants that change returns: every other draw stays the same.
    returns = np.random.default_rng([seed, 3])
    staged = {spec.key for spec in EXPERIENCES if spec.stages}
    for profile in profiles:
        shows = arms(profile)
        state = VisitorState()
        visits = [(start, rng) for start in session_starts(profile, rng, end=end, days=days)]
        if profile.repeat_buyer:
            extra = np.random.default_rng([seed, 4, profile.n])  # plays the extra visits, apart from `rng`
            visits += [(s, extra) for s in repeat_visit_starts(profile, seed=seed, end=end, days=days)]
            visits.sort(key=lambda visit: visit[0])
        first_seen: dict[tuple[str, str], datetime] = {}
        for k, (start, draws) in enumerate(visits):
            shown = {key: variant for key, variant in shows.items() if starts[key] <= start}
            for pair in _RETURNS.keys() & shown.items():
                first_seen.setdefault(pair, start)
            kept = math.prod(_RETURNS[pair] for pair, seen in first_seen.items() if start - seen >= _RETURN_AFTER)
            if kept < 1 and returns.random() >= kept:
                continue  # a visit the variant put off
            # Untargeted experiences are decided as the visit opens, on the state of the visits before.
            at_start = state.record(start) if shown.keys() - staged else None
            events, in_visit = _session_play(
                profile, draws, start=start, shown=shown, session_id=f"s{profile.n}-{k}", state=state
            )
            exposed = {key: (start, at_start) for key in shown if key not in staged}
            exposed.update(in_visit)
            yield Session(profile, start, shown, events, exposed)


def api_event(event: dict, *, anonymous_id: str, user_id: str | None) -> dict:
    """A generated event in the shape POST /api/v1/events takes."""
    body = {
        "event_id": event["event_id"],
        "type": event["type"],
        "anonymous_id": anonymous_id,
        "timestamp": event["ts"].isoformat(),
        "session_id": event["session_id"],
        "properties": event["properties"],
    }
    if user_id:
        body["user_id"] = user_id
    if event["value"] is not None:
        body["value"] = event["value"]
    return body
