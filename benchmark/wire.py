"""The only format a job process may send to the harness: a kind, a JSON header, one array.

Nothing the harness reads from a job process is unpickled (unpickling runs code), and no object
the entry made reaches the harness: predictions arrive as ``.npy`` bytes (``allow_pickle=False``),
metadata as JSON. Anything else is a :class:`WireError`, and the job fails with it.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np

MAGIC = b"SBW1"
MAX_HEADER_BYTES = 1 << 22
ARRAY_DTYPES = ("int16", "int32", "int64", "float32", "float64", "bool")


class WireError(ValueError):
    """A message from a job process that is not one the harness accepts."""


def pack(kind: str, meta: dict[str, Any] | None = None, array: np.ndarray | None = None) -> bytes:
    head = json.dumps({"kind": kind, "meta": meta or {}}, allow_nan=True, default=_plain).encode()
    body = b""
    if array is not None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        body = buf.getvalue()
    return MAGIC + struct.pack("!I", len(head)) + head + body


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON: {type(o).__name__}")


def unpack(data: bytes) -> tuple[str, dict[str, Any], np.ndarray | None]:
    """(kind, meta, array or None) of a message, checked."""
    if not isinstance(data, bytes) or len(data) < 8 or data[:4] != MAGIC:
        raise WireError("not a message of the job protocol")
    (n,) = struct.unpack("!I", data[4:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise WireError("header length out of range")
    try:
        head = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"header is not JSON ({type(exc).__name__})") from None
    if not isinstance(head, dict) or not isinstance(head.get("kind"), str) or not isinstance(head.get("meta"), dict):
        raise WireError("header lacks kind/meta")
    array = None
    if len(data) > 8 + n:
        try:
            array = np.load(io.BytesIO(data[8 + n:]), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the sender's fault
            raise WireError(f"array is not .npy data ({type(exc).__name__}: {exc})") from None
        if not isinstance(array, np.ndarray) or array.dtype.name not in ARRAY_DTYPES:
            raise WireError(f"array dtype {getattr(array, 'dtype', '?')} is not one of {', '.join(ARRAY_DTYPES)}")
    return head["kind"], head["meta"], array
