"""The Redis-protocol front end's kept GET replies: their bounds (pure bookkeeping; that a kept reply
follows every change of its key is tested against a real runtime in
tests/integration/test_resp_server.py)."""

from __future__ import annotations

from cache_runtime.l1 import L1Entry
from cache_runtime.service import resp_server
from cache_runtime.service.resp_server import RespServer


class _Open:
    disabled = True


def server() -> RespServer:
    return RespServer(lambda: None, _Open(), max_bytes=1 << 20, max_connections=1)  # type: ignore[arg-type]


def entry(value: bytes) -> L1Entry:
    return L1Entry(value, len(value), deadline=1e12, ttl=60.0)


def test_replacing_and_forgetting_a_reply_keeps_the_byte_count_exact() -> None:
    front = server()
    front.remember_reply(b"GET a", entry(b"1"), "d:a", b"$1\r\n1\r\n")
    front.remember_reply(b"GET b", entry(b"22"), "d:b", b"$2\r\n22\r\n")
    front.remember_reply(b"GET a", entry(b"333"), "d:a", b"$3\r\n333\r\n")  # a new value for a
    assert front._reply_bytes == len(b"$2\r\n22\r\n") + len(b"$3\r\n333\r\n")
    assert front._replies[b"GET a"][2] == b"$3\r\n333\r\n"
    front.forget_reply(b"GET a")
    front.forget_reply(b"GET never")
    assert list(front._replies) == [b"GET b"]
    assert front._reply_bytes == len(b"$2\r\n22\r\n")


def test_past_its_entry_bound_the_kept_replies_are_cleared_whole() -> None:
    front = server()
    for index in range(resp_server._REPLY_CACHE_ENTRIES):
        front.remember_reply(b"GET %d" % index, entry(b"v"), f"d:{index}", b"$1\r\nv\r\n")
    assert len(front._replies) == resp_server._REPLY_CACHE_ENTRIES
    front.remember_reply(b"GET one more", entry(b"v"), "d:more", b"$1\r\nv\r\n")
    assert list(front._replies) == [b"GET one more"]
    assert front._reply_bytes == len(b"$1\r\nv\r\n")


def test_past_its_byte_bound_the_kept_replies_are_cleared_whole() -> None:
    front = server()
    reply = b"x" * resp_server._REPLY_MAX_BYTES
    fit = resp_server._REPLY_CACHE_BYTES // len(reply)
    for index in range(fit):
        front.remember_reply(b"GET %d" % index, entry(reply), f"d:{index}", reply)
    assert front._reply_bytes == fit * len(reply) <= resp_server._REPLY_CACHE_BYTES
    front.remember_reply(b"GET over", entry(reply), "d:over", reply)
    assert list(front._replies) == [b"GET over"]
    assert front._reply_bytes == len(reply)
