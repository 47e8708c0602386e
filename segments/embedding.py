"""Behavior embeddings: each profile's recent events → a dense unit vector. Pure numpy/scikit-learn, no Django.

A profile's events become a bag of behavior tokens, each weighted by recency measured back from the
person's own latest event (half-life HALF_LIFE_DAYS unless the fit was given another, e.g. a longer one
for history imported over years): event type, type × category, category, item, search words, dwell and scroll-depth
buckets. The population's bag-of-tokens matrix gets TF-IDF weighting (sublinear tf, smooth idf, L2
rows) and a truncated SVD fitted on it; a profile's vector is its TF-IDF row projected on the SVD
basis, L2-normalised, so cosine distance compares behavior and not activity level.

Fold-in (profiles with new events between refits) is the same projection on the stored basis, so a
vector made by fold-in equals the one a refit on the same basis would give.

`Embedder` is the interface callers use (fit / transform / to_bytes / from_bytes, `kind`, `dims`);
a text-meaning embedder can be added later as another class with the same methods, registered in
EMBEDDERS, without touching the callers.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from scipy import sparse

DIMS = 64
HALF_LIFE_DAYS = 14.0
MIN_DF = 2
MAX_FEATURES = 50_000


@dataclass(frozen=True, slots=True)
class BehaviorEvent:
    """The part of a stored event an embedder reads."""

    type: str
    ts: datetime
    properties: Mapping
    value: float | None = None


class Embedder(Protocol):
    """What callers of an embedder rely on; any implementation is interchangeable."""

    kind: str
    dims: int

    def fit(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime, seed: int = 0) -> np.ndarray: ...

    def transform(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime) -> np.ndarray: ...

    def to_bytes(self) -> bytes: ...

    def feature_names(self) -> list[str]: ...


def _bucket(value: float, edges: Sequence[float]) -> int:
    for i, edge in enumerate(edges):
        if value < edge:
            return i
    return len(edges)


_DWELL_EDGES_S = (5, 15, 30, 60, 120, 300)
_SCROLL_EDGES = (25, 50, 75, 90)
_PRICE_EDGES = (10, 30, 100, 300, 1000)

# Property names by role, compared lower-case without "_", "-" or spaces, so that "category_code",
# "categoryId" and "item-category" all name a category. Real event streams use many spellings.
_CATEGORY_KEYS = frozenset(
    {"category", "categories", "categorycode", "categoryid", "categoryname", "itemcategory", "productcategory",
     "cat", "section", "department", "genre", "genres", "collection", "collections", "topic", "topics",
     "tag", "tags", "interest", "interests"}
)  # fmt: skip
_ITEM_KEYS = frozenset(
    {"item", "items", "itemid", "product", "products", "productid", "sku", "contentid", "contentids", "articleid",
     "movieid", "trackid", "listingid", "offerid", "variantid"}
)  # fmt: skip
_QUERY_KEYS = frozenset({"query", "q", "search", "searchterm", "searchquery", "term", "keyword", "keywords"})
_PAGE_KEYS = frozenset({"url", "path", "page", "pagepath", "pagelocation", "pageurl", "location", "href"})
_DWELL_MS_KEYS = frozenset({"dwellms", "durationms", "timeonpagems", "engagementtimemsec", "engagementtimems"})
_DWELL_S_KEYS = frozenset({"dwell", "dwells", "dwellseconds", "timeonpage", "timeonpages", "durations"})
_SCROLL_KEYS = frozenset({"scrolldepth", "percentscrolled", "scrollpercent", "scrollpercentage"})
_PRICE_KEYS = frozenset({"value", "price", "amount", "revenue", "total", "unitprice"})
# Not behavior: identifiers of the event, session or person, times, and free text that is not a choice.
_SKIP_KEYS = frozenset(
    {"id", "eventid", "sessionid", "userid", "anonymousid", "visitorid", "deviceid", "clientid", "ts", "time",
     "timestamp", "date", "datetime", "referrer", "referer", "title", "pagetitle", "description", "message",
     "email", "ip", "useragent", "currency"}
)  # fmt: skip
_SKIP_PARTS = re.compile(r"session|uuid|token|password|secret")
_WORD = re.compile(r"[^\W_][\w\-]{1,30}")
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-f]{16,}|[0-9a-f-]{32,36})$")
_MAX_VALUE = 64
# A list-valued property counts each of its first _MAX_LIST_ITEMS short values as its own token.
_MAX_LIST_ITEMS = 20


@lru_cache(maxsize=8192)
def _norm_key(key: object) -> str:
    # Cached: a project's events use a few dozen property names, and this ran once per property of
    # every event (a sixth of a refit's and of the intent preview's time).
    return "".join(ch for ch in str(key).lower() if ch.isalnum())[:40]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _choice(value: object) -> str | None:
    """A property value as a short label: strings (not URLs, not empty), integers (ids) and booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text and len(text) <= _MAX_VALUE and "://" not in text:
            return text
    return None


def _page(value: object) -> str | None:
    """A URL or path → its first two path segments, ids replaced by "#": "/p/123?x=1" → "/p/#"."""
    if not isinstance(value, str) or not value:
        return None
    path = value.split("://", 1)[-1] if "://" in value else value
    if "://" in value:
        path = "/" + path.partition("/")[2]
    path = path.split("?", 1)[0].split("#", 1)[0].lower()
    parts = [("#" if _ID_SEGMENT.match(part) else part[:40]) for part in path.split("/") if part][:2]
    return "/" + "/".join(parts)


@lru_cache(maxsize=16384)
def _category_levels(value: str) -> tuple[str, ...]:
    """ "electronics.smartphone" → ("electronics", "electronics.smartphone") (also "/", ">" and "|").
    Cached, as _norm_key: a project has a few hundred categories, seen again in every event."""
    parts = [p.strip() for p in re.split(r"\s*[./>|]\s*", value) if p.strip()]
    return (value,) if len(parts) < 2 else tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


def behavior_tokens(
    events: Iterable[BehaviorEvent], *, now: datetime, half_life_days: float = HALF_LIFE_DAYS
) -> dict[str, float]:
    """Recency-weighted counts of the behavior tokens of one profile's events.

    Age is counted back from the person's latest event (never after `now`), not from `now`: a
    vector is a direction, so only the events' weights relative to each other matter, and someone
    whose history ended years ago (an imported dataset) keeps weights that float32 can hold.

    Roles are found by property name (see the *_KEYS sets): categories (with their levels; a list
    such as genres ["Action", "Western"] or tags counts each value), items (also inside lists of item
    objects), search words (any event type), pages (path prefix), dwell, scroll depth and price
    buckets; every other short string, integer or boolean property, or list of them, becomes
    "name=value" tokens, so behavior in a stream with its own vocabulary is still seen."""
    bag: dict[str, float] = {}

    def add(token: str, weight: float) -> None:
        bag[token] = bag.get(token, 0.0) + weight

    events = list(events)
    anchor = min(now, max(e.ts for e in events)) if events else now
    for event in events:
        age_days = max((anchor - event.ts).total_seconds(), 0.0) / 86400.0
        w = 0.5 ** (age_days / half_life_days)
        props = event.properties if isinstance(event.properties, Mapping) else {}
        etype = str(event.type)[:64]
        add(f"type:{etype}", w)
        scroll_event = "scroll" in etype.lower()
        for key, value in list(props.items())[:50]:
            _property_tokens(add, etype, _norm_key(key), str(key)[:40], value, w, scroll_event)
    return bag


def _property_tokens(add, etype: str, key: str, raw_key: str, value: object, w: float, scroll_event: bool) -> None:
    if key in _CATEGORY_KEYS:
        _category_tokens(add, etype, value, w)
    elif key in _ITEM_KEYS:
        for item in value[:50] if isinstance(value, list) else [value]:
            if isinstance(item, Mapping):
                _item_object_tokens(add, etype, item, w)
            elif (label := _choice(item)) is not None:
                add(f"item:{label}", w)
    elif key in _QUERY_KEYS:
        if isinstance(value, str):
            for word in _WORD.findall(value.casefold()[:500])[:20]:
                add(f"search:{word}", w)
    elif key in _PAGE_KEYS:
        if (page := _page(value)) is not None:
            add(f"page:{page}", w)
    elif key in _DWELL_MS_KEYS or key in _DWELL_S_KEYS:
        number = _number(value)
        if number is not None and number >= 0:
            seconds = number / 1000.0 if key in _DWELL_MS_KEYS else number
            add(f"dwell:{_bucket(seconds, _DWELL_EDGES_S)}", w)
    elif key in _SCROLL_KEYS or (key == "depth" and scroll_event):
        number = _number(value)
        if number is not None:
            add(f"scroll:{_bucket(number, _SCROLL_EDGES)}", w)
    elif key in _PRICE_KEYS:
        number = _number(value)
        if number is not None and number >= 0:
            add(f"price:{_bucket(number, _PRICE_EDGES)}", w)
    elif key and key not in _SKIP_KEYS and not _SKIP_PARTS.search(key):
        for label in _values(value):
            add(f"prop:{raw_key}={label}", w)


def _category_tokens(add, etype: str, value: object, w: float) -> None:
    for category in _values(value):
        for level in _category_levels(category):
            add(f"category:{level}", w)
        add(f"{etype}|category:{category}", w)


def _values(value: object) -> list[str]:
    """A single value or a list's first _MAX_LIST_ITEMS distinct values, as short labels."""
    values = value[:_MAX_LIST_ITEMS] if isinstance(value, list) else [value]
    labels = [label for v in values if isinstance(v, str | int | bool) and (label := _choice(v)) is not None]
    return list(dict.fromkeys(labels))


def _item_object_tokens(add, etype: str, item: Mapping, w: float) -> None:
    """One object of an items list (e.g. GA4's {"item_id", "item_category", "price"})."""
    for key, value in list(item.items())[:20]:
        norm = _norm_key(key)
        if norm in ("id", "name", "itemname", "productname") or norm in _ITEM_KEYS:
            if (label := _choice(value)) is not None:
                add(f"item:{label}", w)
        elif norm in _CATEGORY_KEYS:
            _category_tokens(add, etype, value, w)


def _describe(token: str) -> str:
    """A token as a marketer reads it: "search: trail", "category: trail-shoes", "3× dwell"."""
    if token.startswith("prop:"):
        name, _, value = token[5:].partition("=")
        return f"{name}: {value}"
    if token.startswith("page:"):
        return f"page: {token[5:]}"
    name, _, value = token.rpartition(":")
    if name == "dwell":
        edges = ("<5 s", "5–15 s", "15–30 s", "30–60 s", "1–2 min", "2–5 min", "5+ min")
        return f"dwell {edges[int(value)]} per page"
    if name == "scroll":
        edges = ("<25 %", "25–50 %", "50–75 %", "75–90 %", "90+ %")
        return f"scrolls {edges[int(value)]} deep"
    if name == "price":
        edges = ("under 10", "10–30", "30–100", "100–300", "300–1,000", "1,000+")
        return f"price or value {edges[int(value)]}"
    if name == "type":
        return f"event: {value}"
    return token.replace("|", " · ").replace(":", ": ", 1)


def token_label(token: str) -> str:
    return _describe(token)


class TfidfSvdEmbedder:
    """Behavior tokens → TF-IDF → truncated SVD (fitted on the population) → unit vector of DIMS."""

    kind = "behavior-tfidf-svd"

    def __init__(self, dims: int = DIMS, half_life_days: float = HALF_LIFE_DAYS):
        self.dims = dims
        self.half_life_days = half_life_days
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0, dtype=np.float32)
        self.components = np.zeros((0, 0), dtype=np.float32)  # (rank, n_features); rank ≤ dims

    def feature_names(self) -> list[str]:
        names = [""] * len(self.vocabulary)
        for token, col in self.vocabulary.items():
            names[col] = token
        return names

    def _counts(self, bags: Sequence[Mapping[str, float]]) -> sparse.csr_matrix:
        # Imported here: scipy.sparse adds ~0.2 s to the start of every process that loads segments' models.
        from scipy import sparse

        rows, cols, vals = [], [], []
        for r, bag in enumerate(bags):
            for token, weight in bag.items():
                col = self.vocabulary.get(token)
                if col is not None:
                    rows.append(r)
                    cols.append(col)
                    vals.append(weight)
        shape = (len(bags), len(self.vocabulary))
        return sparse.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=shape)

    def _tfidf(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        tf = counts.copy()
        tf.data = np.log1p(tf.data)
        tf = tf.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(tf.multiply(tf).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        from scipy import sparse  # see _counts

        return sparse.diags(1.0 / norms).dot(tf).tocsr().astype(np.float32)

    def tfidf(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime) -> sparse.csr_matrix:
        return self._tfidf(self._counts([self._tokens(d, now) for d in docs]))

    def _tokens(self, doc: Sequence[BehaviorEvent], now: datetime) -> dict[str, float]:
        return behavior_tokens(doc, now=now, half_life_days=self.half_life_days)

    def fit(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime, seed: int = 0) -> np.ndarray:
        """Learn vocabulary, idf and basis from the population; returns the population's vectors."""
        # scikit-learn takes about a second to import: only the code that fits pays for it
        from sklearn.decomposition import TruncatedSVD

        bags = [self._tokens(d, now) for d in docs]
        df: dict[str, int] = {}
        for bag in bags:
            for token in bag:
                df[token] = df.get(token, 0) + 1
        kept = sorted((t for t, n in df.items() if n >= MIN_DF), key=lambda t: (-df[t], t))[:MAX_FEATURES]
        self.vocabulary = {t: i for i, t in enumerate(sorted(kept))}
        n = len(bags)
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in sorted(kept)], dtype=np.float32).reshape(
            1, -1
        )
        matrix = self._tfidf(self._counts(bags))
        rank = max(1, min(self.dims, matrix.shape[1] - 1, n - 1))
        if matrix.shape[1] < 2 or n < 2:
            self.components = np.eye(rank, matrix.shape[1], dtype=np.float32)
        else:
            svd = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=7, random_state=seed)
            svd.fit(matrix)
            self.components = svd.components_.astype(np.float32)
        return self._project(matrix)

    def _project(self, matrix: sparse.csr_matrix) -> np.ndarray:
        out = np.zeros((matrix.shape[0], self.dims), dtype=np.float32)
        if self.components.size:
            reduced = np.asarray(matrix @ self.components.T, dtype=np.float32)
            out[:, : reduced.shape[1]] = reduced
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def transform(self, docs: Sequence[Sequence[BehaviorEvent]], *, now: datetime) -> np.ndarray:
        """Fold-in: project profiles onto the fitted basis."""
        return self._project(self.tfidf(docs, now=now))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            dims=np.array([self.dims]),
            half_life_days=np.array([self.half_life_days]),
            tokens=np.array(self.feature_names(), dtype=np.str_),
            idf=self.idf,
            components=self.components,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TfidfSvdEmbedder:
        # allow_pickle=False: a stored basis is data, never code.
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            # Bases stored before the half-life was a setting used the default.
            half_life = float(saved["half_life_days"][0]) if "half_life_days" in saved.files else HALF_LIFE_DAYS
            embedder = cls(int(saved["dims"][0]), half_life)
            embedder.vocabulary = {str(t): i for i, t in enumerate(saved["tokens"].tolist())}
            embedder.idf = saved["idf"].astype(np.float32)
            embedder.components = saved["components"].astype(np.float32)
        return embedder


EMBEDDERS: dict[str, type] = {TfidfSvdEmbedder.kind: TfidfSvdEmbedder}


def embedder_load(kind: str, data: bytes) -> Embedder:
    return EMBEDDERS[kind].from_bytes(data)
