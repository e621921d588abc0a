"""Bytes stored in Redis: a fixed binary header, a JSON or msgpack payload, lz4 where it pays. Never pickle.

Header (big-endian, 21 bytes, ``HEADER``)::

    magic        2s   b"CW"
    version      B    1
    codec        B    1 = JSON (orjson), 2 = msgpack, 3 = raw bytes, 4 = JSON via the standard library
    flags        B    bit 0 = payload is an lz4 block; other bits must be 0
    created_at   Q    milliseconds since the epoch (wall clock) when the value was written
    ttl          I    milliseconds the value lives (so a reader knows the remaining TTL without a PTTL)
    payload_len  I    length of the *uncompressed* payload (detects truncation; bounds decompression)

Value types: everything JSON has (str, int, float, bool, None, list, dict with str keys; tuples come
back as lists). ``bytes``/``bytearray``/``memoryview`` at the top level are stored raw (codec 3)
under either format and come back as ``bytes``. With msgpack, bytes may also be nested and dict keys
may be ints. Integers beyond 64 bits, which orjson and msgpack refuse, fall back to the standard
library's JSON (codec 4), which round-trips them exactly. orjson writes NaN and infinities as null.

Decoding treats its input as hostile: anything malformed (bad magic, unknown version, codec or flag,
truncated, corrupt lz4, a size that lz4 could not produce, invalid JSON or msgpack) raises
:class:`DecodeError`, which the facade counts as a miss. Nothing is ever executed: there is no pickle
codec, and msgpack extension types are rejected.

Large values are compressed and decoded in a worker thread (``encode_async`` / ``decode_async``);
serialization stays on the loop (it holds the GIL anyway), and the copy L1 keeps of a large value
is parsed on its first read rather than at write time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import lz4.block
import msgpack
import orjson

from cache_runtime.config import LZ4_LEVEL_MAP, CacheConfig
from cache_runtime.l1 import DeferredValue, PackedValue
from cache_runtime.stats import LARGE_VALUE_BYTES

__all__ = [
    "CODEC_JSON",
    "CODEC_JSON_STD",
    "CODEC_MSGPACK",
    "CODEC_RAW",
    "FLAG_LZ4",
    "HEADER",
    "MAGIC",
    "VERSION",
    "Codec",
    "DecodeError",
    "EncodeError",
    "EncodeResult",
    "Envelope",
    "decode",
    "decode_async",
    "encode",
    "encode_async",
    "packed_value",
]

MAGIC = b"CW"
VERSION = 1
CODEC_JSON = 1
CODEC_MSGPACK = 2
CODEC_RAW = 3
CODEC_JSON_STD = 4
FLAG_LZ4 = 0x01
HEADER = struct.Struct(">2sBBBQII")

_MAX_U32 = 0xFFFFFFFF
# lz4's block format cannot expand data by more than ~255x, so a header claiming more is a lie we
# must not allocate for.
_LZ4_MAX_RATIO = 255
_LZ4_MAX_INPUT = 0x7E000000
_T = TypeVar("_T")


class EncodeError(TypeError):
    """A value cannot be stored: its type is not serializable under the configured format."""


class DecodeError(ValueError):
    """Bytes from Redis are not a valid entry. The facade counts this as a miss."""


class Envelope:
    """A decoded entry: the value and the metadata from its header."""

    __slots__ = ("compressed", "created_at_ms", "size", "ttl_ms", "value")

    def __init__(self, value: Any, created_at_ms: int, ttl_ms: int, size: int, compressed: bool) -> None:
        self.value = value
        self.created_at_ms = created_at_ms
        self.ttl_ms = ttl_ms
        self.size = size
        self.compressed = compressed

    def remaining_ms(self, now_ms: int | None = None) -> int:
        """Milliseconds this entry has left (never negative, never more than its TTL)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0, min(self.ttl_ms, self.created_at_ms + self.ttl_ms - now))

    def __repr__(self) -> str:
        return (
            f"Envelope(type={type(self.value).__name__}, created_at_ms={self.created_at_ms}, "
            f"ttl_ms={self.ttl_ms}, size={self.size}, compressed={self.compressed})"
        )


class EncodeResult:
    """What ``encode_entry`` produced: the stored bytes, the value as a reader will see it, and sizes.

    ``value`` is what decoding ``data`` yields, so L1 can hold exactly what an L2 hit would return
    (tuples become lists, the caller's later mutations do not leak into the cache). For a large
    value from :meth:`Codec.encode_entry_async` it is a :class:`~cache_runtime.l1.DeferredValue`
    that yields it when parsed.
    """

    __slots__ = ("compress_seconds", "compressed", "compression_tried", "data", "offloaded", "payload_size",
                 "value")

    def __init__(
        self, data: bytes, value: Any, payload_size: int, compressed: bool, compress_seconds: float,
        compression_tried: bool = False,
    ) -> None:
        self.data = data
        self.value = value
        self.payload_size = payload_size
        self.compressed = compressed
        self.compress_seconds = compress_seconds
        self.compression_tried = compression_tried
        #: True when the work ran in a worker thread (encode_entry_async with a large value).
        self.offloaded = False


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


_LOADERS = {
    CODEC_JSON: orjson.loads,
    CODEC_MSGPACK: lambda payload: msgpack.unpackb(
        payload, raw=False, strict_map_key=False, ext_hook=_reject_ext
    ),
    CODEC_RAW: bytes,
    CODEC_JSON_STD: lambda payload: json.loads(bytes(payload)),
}

_IMMUTABLE = (str, int, bool, type(None))
_BYTES_LIKE = (bytes, bytearray, memoryview)


class Codec:
    """Encoder/decoder bound to one config's codec and compression settings."""

    __slots__ = ("_fast", "_level_param", "_max_ratio", "format_id", "offload_threshold", "threshold")

    def __init__(
        self,
        *,
        format: str = "json",
        threshold_bytes: int = 500,
        level: int = 9,
        min_saving_ratio: float = 0.1,
        offload_threshold_bytes: int = 256 * 1024,
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError(f"codec.format: {format!r} is not accepted; accepted: json, msgpack")
        if level not in LZ4_LEVEL_MAP:
            raise ValueError(f"compression.level: {level!r} is not accepted; accepted: 1..9")
        self.format_id = CODEC_JSON if format == "json" else CODEC_MSGPACK
        self.threshold = threshold_bytes
        mode, parameter = LZ4_LEVEL_MAP[level]
        self._fast = mode == "fast"
        self._level_param = parameter
        self._max_ratio = 1.0 - min_saving_ratio
        self.offload_threshold = offload_threshold_bytes

    @classmethod
    def from_config(cls, config: CacheConfig) -> Codec:
        """The codec a config asks for."""
        compression = config.compression
        return cls(
            format=config.codec.format,
            threshold_bytes=compression.threshold_bytes,
            level=compression.level,
            min_saving_ratio=compression.min_saving_ratio,
            offload_threshold_bytes=compression.offload_threshold_bytes,
        )

    # encoding -----------------------------------------------------------------------------------

    def _serialize(self, value: Any) -> tuple[int, bytes]:
        if isinstance(value, bytes | bytearray | memoryview):
            return CODEC_RAW, bytes(value)
        try:
            if self.format_id == CODEC_JSON:
                return CODEC_JSON, orjson.dumps(value)
            return CODEC_MSGPACK, msgpack.packb(value, use_bin_type=True)
        except (TypeError, OverflowError, ValueError) as exc:
            if _is_int_overflow(exc):
                try:
                    return CODEC_JSON_STD, json.dumps(
                        value, ensure_ascii=False, separators=(",", ":")
                    ).encode()
                except (TypeError, ValueError) as inner:
                    exc = inner
            raise EncodeError(
                f"value of type {type(value).__name__} cannot be stored as "
                f"{'json' if self.format_id == CODEC_JSON else 'msgpack'}: {exc}; accepted: "
                f"str, int, float, bool, None, list, dict with str keys, or bytes"
            ) from None

    def _finish(
        self, codec_id: int, payload: bytes, value: Any, ttl_ms: int, created_at_ms: int | None,
        defer_copy: bool = False,
    ) -> EncodeResult:
        if not 0 <= ttl_ms <= _MAX_U32:
            raise ValueError(f"ttl_ms: {ttl_ms!r} is not accepted; accepted: 0..{_MAX_U32}")
        size = len(payload)
        if size > _MAX_U32:
            raise EncodeError(f"value: {size} bytes is too large; accepted: at most {_MAX_U32} bytes")
        flags = 0
        body = payload
        seconds = 0.0
        tried = size >= self.threshold and 0 < size <= _LZ4_MAX_INPUT
        if tried:
            started = time.perf_counter()
            if self._fast:
                packed = lz4.block.compress(
                    payload, mode="fast", acceleration=self._level_param, store_size=False
                )
            else:
                packed = lz4.block.compress(
                    payload, mode="high_compression", compression=self._level_param, store_size=False
                )
            seconds = time.perf_counter() - started
            # lz4 rarely pays on small inputs, whatever the threshold says: keep the smaller form only
            # if it saves a useful share.
            if len(packed) <= size * self._max_ratio:
                body = packed
                flags = FLAG_LZ4
        created = int(time.time() * 1000) if created_at_ms is None else created_at_ms
        data = HEADER.pack(MAGIC, VERSION, codec_id, flags, created, ttl_ms, size) + body
        if flags and self._kept_packed(size):
            # L1 keeps what Redis keeps: the block, opened per read (see packed_value).
            reader: Any = PackedValue(_LOADERS[codec_id], body, size)
        else:
            copy = _deferred_copy if defer_copy else _reader_copy
            reader = copy(codec_id, payload, value)
        return EncodeResult(data, reader, size, bool(flags), seconds, tried)

    def _kept_packed(self, payload_size: int) -> bool:
        """Whether L1 keeps a compressed value of ``payload_size`` serialized bytes as its block."""
        limit = self.offload_threshold
        return payload_size >= LARGE_VALUE_BYTES and (not limit or payload_size < limit)

    def encode_entry(self, value: Any, ttl_ms: int, created_at_ms: int | None = None) -> EncodeResult:
        """Encode ``value`` (synchronously) and return bytes, the reader's view of the value and sizes."""
        codec_id, payload = self._serialize(value)
        return self._finish(codec_id, payload, value, ttl_ms, created_at_ms)

    def encode(self, value: Any, ttl_ms: int, created_at_ms: int | None = None) -> bytes:
        """Encode ``value`` to the bytes stored in Redis."""
        return self.encode_entry(value, ttl_ms, created_at_ms).data

    async def encode_entry_async(
        self, value: Any, ttl_ms: int, created_at_ms: int | None = None
    ) -> EncodeResult:
        """Like :meth:`encode_entry`, but compression of a large payload runs in a worker thread.

        Serialization stays on the event loop: orjson and msgpack hold the GIL for their whole call,
        so a worker thread would stall the loop just as long (plus a thread switch), and deciding
        "large" before serializing would need a walk of the value on the loop. lz4 releases the GIL,
        so it is the part worth moving. For a large payload the reader's copy is not parsed back now
        (that would hold the GIL about a millisecond per MiB): ``value`` is a
        :class:`~cache_runtime.l1.DeferredValue` over the immutable payload, parsed by L1 on first read.
        """
        codec_id, payload = self._serialize(value)
        limit = self.offload_threshold
        if limit and len(payload) >= limit:
            result = await _in_background(
                self._finish, codec_id, payload, value, ttl_ms, created_at_ms, True
            )
            result.offloaded = True
            return result
        return self._finish(codec_id, payload, value, ttl_ms, created_at_ms)

    async def encode_async(self, value: Any, ttl_ms: int, created_at_ms: int | None = None) -> bytes:
        """Async :meth:`encode` (large values off the event loop)."""
        return (await self.encode_entry_async(value, ttl_ms, created_at_ms)).data

    # decoding -----------------------------------------------------------------------------------

    def decode(self, data: bytes) -> Envelope:
        """Decode stored bytes; raises :class:`DecodeError` for anything malformed."""
        return decode(data)

    async def decode_async(self, data: bytes) -> Envelope:
        """Decode, in a worker thread when the (uncompressed) payload is large."""
        return await decode_async(data, self.offload_threshold)


_BACKGROUND_WORKERS = 2
_background: ThreadPoolExecutor | None = None
_background_lock = threading.Lock()


def _lower_thread_priority() -> None:
    # The event loop's thread and these workers often share one core (a pinned process, a pod with
    # a CPU limit of 1): at the default priority a 40 ms lz4 run delays the loop's wakeups by up to
    # a scheduler slice (bench B5). Niceness is per thread on Linux, so only the workers yield.
    # Not Linux, or not allowed: the workers run at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _background_executor() -> ThreadPoolExecutor:
    """The low-priority worker threads large values are compressed and decoded in (created once)."""
    global _background
    if _background is None:
        with _background_lock:
            if _background is None:
                _background = ThreadPoolExecutor(
                    _BACKGROUND_WORKERS, thread_name_prefix="cachewarden-codec",
                    initializer=_lower_thread_priority,
                )
    return _background


async def _in_background(function: Callable[..., _T], *args: Any) -> _T:
    """Run ``function(*args)`` in a codec worker thread and wait for it without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(_background_executor(), function, *args)


def _is_int_overflow(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, OverflowError) or "64-bit" in text or "out of range" in text


def _deferred_copy(codec_id: int, payload: bytes, value: Any) -> Any:
    """The reader's value as a snapshot L1 parses on first read (immutable scalars as they are)."""
    kind = type(value)
    if kind in _IMMUTABLE or kind is bytes or (kind is float and math.isfinite(value)):
        return value
    return DeferredValue(_LOADERS[codec_id], payload)


def _reader_copy(codec_id: int, payload: bytes, value: Any) -> Any:
    """The value a reader of ``payload`` gets; immutable scalars are returned as they are."""
    kind = type(value)
    if kind in _IMMUTABLE or kind is bytes:
        return value
    if kind is float and math.isfinite(value):
        return value
    return _LOADERS[codec_id](payload)


def decode(data: bytes | bytearray | memoryview) -> Envelope:
    """Decode stored bytes into an :class:`Envelope`; raises :class:`DecodeError` if malformed."""
    # type() first: Redis hands bytes, and a union isinstance costs more on this per-hit path (B2).
    if type(data) is not bytes and not isinstance(data, _BYTES_LIKE):
        raise DecodeError(f"entry: {type(data).__name__} is not accepted; accepted: bytes")
    size = len(data)
    if size < HEADER.size:
        raise DecodeError(f"entry: {size} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, codec_id, flags, created_at_ms, ttl_ms, payload_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"entry: magic {bytes(magic)!r} is not accepted; accepted: {MAGIC!r}")
    if version != VERSION:
        raise DecodeError(f"entry: version {version} is not accepted; accepted: {VERSION}")
    loader = _LOADERS.get(codec_id)
    if loader is None:
        raise DecodeError(f"entry: codec {codec_id} is not accepted; accepted: {sorted(_LOADERS)}")
    if flags & ~FLAG_LZ4:
        raise DecodeError(f"entry: flags {flags:#04x} are not accepted; accepted: 0x00 or 0x01")
    body = memoryview(data)[HEADER.size :]
    payload: bytes | memoryview
    if flags & FLAG_LZ4:
        if payload_len > len(body) * _LZ4_MAX_RATIO + 16:
            raise DecodeError(
                f"entry: payload length {payload_len} is impossible for a {len(body)}-byte lz4 block"
            )
        try:
            payload = lz4.block.decompress(body, uncompressed_size=payload_len)
        except (lz4.block.LZ4BlockError, ValueError, MemoryError) as exc:
            raise DecodeError(f"entry: corrupt lz4 block ({exc})") from None
        if len(payload) != payload_len:
            raise DecodeError(f"entry: lz4 block holds {len(payload)} bytes, header says {payload_len}")
    else:
        if len(body) != payload_len:
            raise DecodeError(f"entry: payload is {len(body)} bytes, header says {payload_len} (truncated?)")
        payload = body
    try:
        value = loader(payload)
    except Exception as exc:  # hostile input: any failure of the parser is a malformed entry
        raise DecodeError(
            f"entry: payload is not valid for codec {codec_id} ({type(exc).__name__})"
        ) from None
    return Envelope(value, created_at_ms, ttl_ms, size, bool(flags & FLAG_LZ4))


def packed_value(data: bytes | bytearray | memoryview, max_payload: int = 0) -> PackedValue | None:
    """For an entry :func:`decode` accepted: the lz4 block as L1 keeps it (a copy of the compressed
    bytes, not of ``data``), or None when L1 keeps the value decoded.

    L1 keeps a value packed when it is compressed and large: its serialized payload is at least
    ``stats.LARGE_VALUE_BYTES`` (16 KiB, where the diagnosis calls values large) and, when
    ``max_payload`` (the offload threshold) is positive, below it. Opening the block costs every
    hit a decode (tens of microseconds at 64 KiB, still below a Redis round trip), paid for by
    memory: what L1 holds is what Redis holds. Smaller values stay decoded so an L1 hit costs no
    decoding (bench B1's 600-character response); values from the offload threshold up are parsed
    once, since opening them on every hit would hold the event loop for milliseconds.
    """
    _, _, codec_id, flags, _, _, payload_len = HEADER.unpack_from(data)
    too_small = payload_len < LARGE_VALUE_BYTES
    if not flags & FLAG_LZ4 or too_small or (max_payload and payload_len >= max_payload):
        return None
    return PackedValue(_LOADERS[codec_id], bytes(memoryview(data)[HEADER.size :]), payload_len)


async def decode_async(data: bytes, offload_threshold: int = 256 * 1024) -> Envelope:
    """Decode in a worker thread when the uncompressed payload is at least ``offload_threshold``
    bytes (parsing 1 MiB of JSON takes milliseconds); smaller entries decode inline."""
    if offload_threshold and len(data) >= HEADER.size:
        payload_len = HEADER.unpack_from(data)[6]
        if payload_len >= offload_threshold or len(data) >= offload_threshold:
            return await _in_background(decode, data)
    return decode(data)


def encode(value: Any, ttl_ms: int, config: CacheConfig) -> bytes:
    """Encode ``value`` with ``config``'s codec settings (convenience; the facade keeps a Codec)."""
    return Codec.from_config(config).encode(value, ttl_ms)


async def encode_async(value: Any, ttl_ms: int, config: CacheConfig) -> bytes:
    """Async :func:`encode`: large values are serialized and compressed in a worker thread."""
    return await Codec.from_config(config).encode_async(value, ttl_ms)
