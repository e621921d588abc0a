"""cache_runtime.codec: header, round trips, compression only where it pays, hostile bytes, no pickle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import threading
from pathlib import Path
from typing import Any

import lz4.block
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_runtime.codec import (
    CODEC_JSON,
    CODEC_JSON_STD,
    CODEC_MSGPACK,
    CODEC_RAW,
    FLAG_LZ4,
    HEADER,
    MAGIC,
    VERSION,
    Codec,
    DecodeError,
    EncodeError,
    decode,
    decode_async,
    encode,
    encode_async,
)
from cache_runtime.config import resolve_config
from cache_runtime.l1 import DeferredValue, PackedValue

VALUES: list[Any] = [
    "", "plain", "unicode ✓ 日本語 \U0001f600 \u0000 \ud7ff", 0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1,
    2**200, -(2**200), 0.0, -1.5, 1e308, 5e-324, True, False, None, [], {}, [1, "a", None, [2.5, {"k": []}]],
    {"nested": {"deep": [{"x": 1}, {"y": [True, False]}]}, "": "empty key"}, "x" * 100_000,
    {"items": [{"id": i, "text": f"lorem ipsum dolor {i}"} for i in range(500)]},
]


def header_of(data: bytes) -> tuple[Any, ...]:
    return HEADER.unpack_from(data)


def reader_value(result: Any) -> Any:
    """What an L1 reader of ``result`` gets: a compressed value is kept packed and opened per read."""
    held = result.value
    return held.open() if isinstance(held, PackedValue) else held


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + ":" + repr(v)[:20])
def test_every_json_type_round_trips(fmt: str, value: Any) -> None:
    codec = Codec(format=fmt, threshold_bytes=0)
    result = codec.encode_entry(value, 60_000)
    envelope = decode(result.data)
    assert envelope.value == value
    assert type(envelope.value) is type(value)
    assert reader_value(result) == value  # what L1 keeps equals what an L2 reader gets
    assert isinstance(result.value, PackedValue) is envelope.compressed  # L1 keeps what Redis keeps
    assert envelope.ttl_ms == 60_000


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("value", [b"", b"\x00\xff" * 1000, bytearray(b"abc"), memoryview(b"view")])
def test_bytes_values_are_stored_raw_and_come_back_as_bytes(fmt: str, value: Any) -> None:
    data = Codec(format=fmt).encode(value, 1000)
    assert header_of(data)[2] == CODEC_RAW
    envelope = decode(data)
    assert envelope.value == bytes(value) and type(envelope.value) is bytes


def test_big_integers_fall_back_to_the_standard_library_json() -> None:
    data = Codec().encode({"n": 2**100}, 1000)
    assert header_of(data)[2] == CODEC_JSON_STD
    assert decode(data).value == {"n": 2**100}
    assert header_of(Codec(format="msgpack").encode([2**70], 1000))[2] == CODEC_JSON_STD


def test_tuples_become_lists_and_l1_sees_the_same() -> None:
    result = Codec().encode_entry({"t": (1, 2)}, 1000)
    assert result.value == {"t": [1, 2]} == decode(result.data).value


def test_l1_copy_is_independent_of_the_callers_object() -> None:
    value = {"list": [1]}
    result = Codec().encode_entry(value, 1000)
    value["list"].append(2)
    assert result.value == {"list": [1]}


def test_msgpack_keeps_nested_bytes_and_int_keys() -> None:
    value = {"blob": b"\x01\x02", 1: "one"}
    data = Codec(format="msgpack").encode(value, 1000)
    assert header_of(data)[2] == CODEC_MSGPACK
    assert decode(data).value == value


@pytest.mark.parametrize(("fmt", "value"), [
    ("json", {1: "a"}), ("json", {"b": b"nested"}), ("json", object()), ("msgpack", object()),
    ("json", {"s": {1, 2}}),
])
def test_unserializable_values_raise_encode_error_naming_the_type(fmt: str, value: Any) -> None:
    with pytest.raises(EncodeError, match=type(value).__name__):
        Codec(format=fmt).encode(value, 1000)


def test_header_layout() -> None:
    data = Codec().encode({"a": 1}, 1234, created_at_ms=1_700_000_000_000)
    magic, version, codec_id, flags, created, ttl, payload_len = header_of(data)
    assert (magic, version, codec_id, flags, created, ttl) == (MAGIC, VERSION, CODEC_JSON, 0,
                                                               1_700_000_000_000, 1234)
    assert payload_len == len(data) - HEADER.size == len(b'{"a":1}')
    assert HEADER.size == 21


def test_envelope_remaining_ttl_comes_from_the_header() -> None:
    envelope = decode(Codec().encode("v", 10_000, created_at_ms=1_000_000))
    assert envelope.remaining_ms(now_ms=1_004_000) == 6_000
    assert envelope.remaining_ms(now_ms=1_020_000) == 0
    assert envelope.remaining_ms(now_ms=900_000) == 10_000  # clock skew never lengthens the TTL


def test_values_above_the_threshold_are_compressed_when_it_pays() -> None:
    value = {"text": "the same sentence again. " * 400}
    codec = Codec(threshold_bytes=500)
    result = codec.encode_entry(value, 1000)
    assert result.compressed and header_of(result.data)[3] == FLAG_LZ4
    assert len(result.data) < result.payload_size / 2
    assert decode(result.data).value == value and decode(result.data).compressed


def test_compression_is_skipped_when_it_does_not_save_enough() -> None:
    incompressible = os.urandom(4000).hex()  # hex digits: lz4 finds almost nothing
    result = Codec(threshold_bytes=100, min_saving_ratio=0.5).encode_entry(incompressible, 1000)
    assert not result.compressed
    assert decode(result.data).value == incompressible
    below = Codec(threshold_bytes=10_000).encode_entry("a" * 5000, 1000)
    assert not below.compressed  # under the threshold: not even tried
    assert below.compress_seconds == 0.0


@pytest.mark.parametrize("level", range(1, 10))
def test_every_level_round_trips(level: int) -> None:
    value = "compressible text " * 200
    result = Codec(threshold_bytes=0, level=level).encode_entry(value, 1000)
    assert result.compressed and decode(result.data).value == value


def test_codec_follows_the_config() -> None:
    config = resolve_config("production", {"codec.format": "msgpack", "compression.threshold_bytes": 0,
                                           "compression.min_saving_ratio": 0.0})
    data = encode({"a": "b" * 100}, 1000, config)
    assert header_of(data)[2] == CODEC_MSGPACK and header_of(data)[3] == FLAG_LZ4


def test_bad_codec_arguments() -> None:
    with pytest.raises(ValueError, match=r"codec\.format"):
        Codec(format="pickle")
    with pytest.raises(ValueError, match=r"compression\.level"):
        Codec(level=12)
    with pytest.raises(ValueError, match="ttl_ms"):
        Codec().encode("v", -1)


# ---- hostile input ------------------------------------------------------------------------------

def _entry(codec_id: int = CODEC_JSON, flags: int = 0, payload: bytes = b'"v"',
           payload_len: int | None = None, magic: bytes = MAGIC, version: int = VERSION) -> bytes:
    size = len(payload) if payload_len is None else payload_len
    return HEADER.pack(magic, version, codec_id, flags, 0, 1000, size) + payload


GOOD = Codec(threshold_bytes=0).encode({"text": "abc" * 300}, 1000)

MALFORMED: dict[str, Any] = {
    "empty": b"",
    "short header": MAGIC + b"\x01",
    "bad magic": _entry(magic=b"XX"),
    "unknown version": _entry(version=2),
    "unknown codec": _entry(codec_id=99),
    "pickle codec id": _entry(codec_id=0),
    "unknown flag": _entry(flags=0x02),
    "truncated payload": GOOD[:-5] if not header_of(GOOD)[3] else _entry(payload=b'"abc', payload_len=6),
    "truncated lz4": GOOD[:-5],
    "extra bytes": _entry(payload=b'"v"xyz', payload_len=3),
    "corrupt lz4": GOOD[:HEADER.size] + bytes(b ^ 0x5A for b in GOOD[HEADER.size:]),
    "lz4 size lie": _entry(flags=FLAG_LZ4, payload=lz4.block.compress(b'"v"', store_size=False),
                           payload_len=0xFFFFFFFF),
    "lz4 size short": _entry(flags=FLAG_LZ4, payload=lz4.block.compress(b'"vvvvvvvv"', store_size=False),
                             payload_len=4),
    "bad json": _entry(payload=b"{not json"),
    "json trailing": _entry(payload=b'{"a":1} x'),
    "bad msgpack": _entry(codec_id=CODEC_MSGPACK, payload=b"\xc1"),
    "msgpack ext type": _entry(codec_id=CODEC_MSGPACK, payload=msgpack.packb(msgpack.ExtType(5, b"x"))),
    "bad utf8": _entry(payload=b'"\xff\xfe"'),
    "bad std json": _entry(codec_id=CODEC_JSON_STD, payload=b"[1,"),
    "not bytes": "a string",
    "raw pickle": pickle.dumps({"a": 1}),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_bytes_raise_decode_error(name: str) -> None:
    with pytest.raises(DecodeError):
        decode(MALFORMED[name])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_flipped_bytes_in_a_valid_entry_never_escape_as_other_errors(position: int, xor: int) -> None:
    data = bytearray(GOOD)
    data[position % len(data)] ^= xor
    with contextlib.suppress(DecodeError):
        decode(bytes(data))


class _WritesAFile:
    """An object whose unpickling would create a file: the classic pickle RCE probe."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.write_text, (Path(self.path), "pwned"))


def test_a_planted_pickle_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_WritesAFile(str(marker)))
    # Bare pickle, and pickle wrapped in every header this codec knows (as an attacker with write
    # access to Redis would try), compressed or not.
    attempts = [payload, _entry(payload=payload)]
    for codec_id in (0, CODEC_JSON, CODEC_MSGPACK, CODEC_JSON_STD, 5, 128):
        attempts.append(_entry(codec_id=codec_id, payload=payload))
        packed = lz4.block.compress(payload, store_size=False)
        attempts.append(_entry(codec_id=codec_id, flags=FLAG_LZ4, payload=packed, payload_len=len(payload)))
    for data in attempts:
        with pytest.raises(DecodeError):
            decode(data)
    assert not marker.exists()
    # The raw-bytes codec hands the pickle back as inert bytes; it is never unpickled.
    raw = decode(_entry(codec_id=CODEC_RAW, payload=payload))
    assert raw.value == payload and not marker.exists()


# ---- async: large values off the event loop -------------------------------------------------------

LARGE = {"items": [{"id": i, "text": f"lorem ipsum dolor sit amet {i}"} for i in range(20_000)]}


async def test_large_values_are_compressed_and_decoded_in_a_worker_thread() -> None:
    codec = Codec(threshold_bytes=500, offload_threshold_bytes=64 * 1024)
    threads: list[str] = []
    original = lz4.block.compress

    def spy(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    lz4.block.compress = spy
    try:
        result = await codec.encode_entry_async(LARGE, 1000)
        await codec.encode_entry_async({"small": "x" * 600}, 1000)
    finally:
        lz4.block.compress = original
    main = threading.main_thread().name
    assert threads[0] != main and threads[1] == main
    assert result.compressed and result.offloaded
    # From the offload threshold up, the reader's copy is a snapshot parsed once on demand (opening a
    # block that large on every hit would stall the loop), not parsed at write time.
    assert isinstance(result.value, DeferredValue)
    assert result.value.load(result.value.payload) == LARGE
    envelope = await codec.decode_async(result.data)
    assert envelope.value == LARGE


async def test_large_value_snapshot_ignores_later_mutation_of_the_callers_object() -> None:
    codec = Codec(offload_threshold_bytes=1024)
    value = {"items": list(range(1000))}
    result = await codec.encode_entry_async(value, 1000)
    value["items"].append("changed after set")
    assert isinstance(result.value, DeferredValue)
    assert result.value.load(result.value.payload) == {"items": list(range(1000))}


async def test_large_immutable_values_are_kept_as_they_are() -> None:
    codec = Codec(offload_threshold_bytes=1024, threshold_bytes=100_000)
    text = "y" * 5000
    assert (await codec.encode_entry_async(text, 1000)).value is text


async def test_large_compressed_values_below_the_offload_threshold_are_kept_packed_for_l1() -> None:
    codec = Codec(offload_threshold_bytes=256 * 1024, threshold_bytes=1024)
    text = "y" * 50_000
    held = (await codec.encode_entry_async(text, 1000)).value
    assert isinstance(held, PackedValue) and len(held.packed) < 1000 and held.open() == text
    small = "y" * 5000  # compressed too, but below 16 KiB: kept decoded, so a hit costs no decoding
    result = codec.encode_entry(small, 1000)
    assert result.compressed and result.value is small
    value = {"items": [{"id": i, "text": "lorem ipsum"} for i in range(1000)]}
    held = codec.encode_entry(value, 1000).value
    assert isinstance(held, PackedValue) and held.open() == value
    assert held.open() is not held.open()  # a fresh object per read: a caller's mutation stays its own


async def test_value_found_large_only_after_serializing_is_compressed_in_a_thread() -> None:
    codec = Codec(threshold_bytes=0, offload_threshold_bytes=1000)
    seen: list[str] = []
    original = lz4.block.compress

    def spy(*args: Any, **kwargs: Any) -> bytes:
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)

    lz4.block.compress = spy
    try:
        # ~1,900 bytes once serialized (about 18 characters per float).
        await codec.encode_entry_async([i / 7 for i in range(100)], 1000)
    finally:
        lz4.block.compress = original
    assert seen and seen[0] != threading.main_thread().name


async def test_module_level_helpers() -> None:
    config = resolve_config("production")
    data = await encode_async({"a": [1, 2]}, 5000, config)
    assert (await decode_async(data)).value == {"a": [1, 2]}
    assert decode(encode("x", 5000, config)).value == "x"


def test_async_helpers_keep_decode_errors() -> None:
    with pytest.raises(DecodeError):
        asyncio.run(decode_async(b"\x00" * 10))
    with pytest.raises(DecodeError):
        asyncio.run(decode_async(_entry(payload=b"{", payload_len=1), offload_threshold=1))


def test_header_struct_is_big_endian_and_fixed() -> None:
    assert HEADER.format == ">2sBBBQII"
    assert struct.calcsize(HEADER.format) == HEADER.size
