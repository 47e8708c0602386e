"""PostgreSQL binary COPY payloads for rows of (id, vector, count), built by numpy. No Django.

Why: a refit writes one behavior vector (64 floats) and one meaning vector (512) per person. pgvector's
text form costs a Python float format per number (576M of them at 1M people, minutes); the binary form
is the float32 bytes themselves, laid out for every row at once by a structured dtype.

The layout is PostgreSQL's COPY BINARY format (a signature, flags, header extension length, then per
row a field count and each field as length + bytes, then -1) with pgvector's binary vector (int16
dimensions, int16 unused, float32 values), everything big-endian.
"""

import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"


def vector_rows(ids: np.ndarray, vectors: np.ndarray, counts: np.ndarray) -> bytes:
    """COPY BINARY bytes of rows (bigint id, vector, integer count), in the order given."""
    n, dims = vectors.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("vector_len", ">i4"),
            ("dims", ">i2"),
            ("unused", ">i2"),
            ("vector", ">f4", (dims,)),
            ("count_len", ">i4"),
            ("count", ">i4"),
        ]
    )
    rows = np.empty(n, dtype=row)
    rows["fields"] = 3
    rows["id_len"] = 8
    rows["id"] = ids
    rows["vector_len"] = 4 + 4 * dims
    rows["dims"] = dims
    rows["unused"] = 0
    rows["vector"] = vectors
    rows["count_len"] = 4
    rows["count"] = counts
    return _SIGNATURE + rows.tobytes() + _TRAILER


def vectors_from_binary(blobs: list[bytes], dims: int) -> np.ndarray:
    """pgvector values read in binary (int16 dimensions, int16 unused, float32 values each) → float32 rows."""
    if not blobs:
        return np.zeros((0, dims), dtype=np.float32)
    # The 4-byte header of each value takes the place of one float32: drop that column.
    return np.frombuffer(b"".join(blobs), dtype=">f4").reshape(len(blobs), dims + 1)[:, 1:].astype(np.float32)
