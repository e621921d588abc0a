"""How one stored value looks through each data protocol (pure; docs/runtime-api.md, "Values").

The engine stores any JSON value, or raw bytes (codec 3). The two front ends share one key namespace
(``engine.data_key``), so a key written through one is read through the other:

* **Redis protocol** (``SET``/``GET``): a value is bytes in, bytes out. ``SET`` stores the argument
  as raw bytes; ``GET`` of a bytes value answers those bytes. A value written as JSON (HTTP ``PUT``,
  or a Python client storing a str/dict/...) is answered as its compact JSON text (orjson): the
  string ``hello`` comes back as ``"hello"`` with the quotes, ``{"a": 1}`` as ``{"a":1}``.
* **HTTP** (``GET /data/v1/keys/{key}``, ``POST /data/v1/mget``): JSON values as they are. A bytes
  value (written through the Redis protocol) is answered as text: the UTF-8 string when the bytes are
  valid UTF-8, with ``"encoding": "utf-8"``; otherwise base64 with ``"encoding": "base64"``. JSON
  values carry no ``encoding`` field, so a client can always tell the two apart.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

__all__ = ["as_json_value", "as_resp_bytes"]


def as_resp_bytes(value: Any) -> bytes:
    """The bytes a Redis-protocol ``GET`` answers for a stored value (bytes as is, else JSON text)."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def as_json_value(value: Any) -> tuple[Any, str | None]:
    """The value an HTTP answer carries and its ``encoding`` (None for a JSON value).

    Bytes become the UTF-8 text (``"utf-8"``) or, if they are not valid UTF-8, base64 (``"base64"``).
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        return value, None
    raw = bytes(value)
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
