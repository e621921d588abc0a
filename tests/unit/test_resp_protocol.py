"""The Redis-protocol parsing, argument checks and value mapping (pure; the server is tested in
tests/integration/test_resp_server.py)."""

from __future__ import annotations

import pytest

from cache_runtime.service.resp_commands import CommandError, parse_set_ttl, parse_user_key
from cache_runtime.service.resp_protocol import (
    ProtocolError,
    RequestParser,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_map,
    show,
)
from cache_runtime.service.value_mapping import as_json_value, as_resp_bytes


def commands(parser: RequestParser) -> list[list[bytes]]:
    out = []
    while (command := parser.next_command()) is not None:
        out.append(command)
    return out


def test_a_pipeline_fed_one_byte_at_a_time_comes_out_whole_and_in_order() -> None:
    stream = (
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n\r\n*0\r\nECHO a b\n"
    )
    parser = RequestParser(max_bulk_bytes=1024)
    seen: list[list[bytes]] = []
    assert parser.empty
    for index in range(len(stream)):
        parser.feed(stream[index : index + 1])
        assert not parser.empty
        seen += commands(parser)
        # The server's fast path reads `empty`, a plain attribute: it must agree with `buffered`.
        assert parser.empty is (parser.buffered == 0)
    assert seen == [[b"GET", b"k"], [b"SET", b"k", b""], [b"PING"], [b"ECHO", b"a", b"b"]]
    assert parser.buffered == 0
    assert parser.empty


def test_binary_values_with_crlf_inside_survive() -> None:
    value = b"a\r\nb\x00\xff"
    parser = RequestParser(max_bulk_bytes=1024)
    parser.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%b\r\n" % (len(value), value))
    assert parser.next_command() == [b"SET", b"k", value]


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (b"*x\r\n", "invalid multibulk length 'x'"),
        (b"*2\r\n+OK\r\n", "expected '$'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length -1"),
        (b"*1\r\n$2000\r\n", "invalid bulk length 2000; accepted: 0 to 1024 bytes"),
        (b"*3\r\n$600\r\n" + b"a" * 600 + b"\r\n$600\r\n", "command of more than 1000 bytes"),
        (b"*1\r\n$1\r\nabc", "not followed by CRLF"),
        (b"*" + b"9" * 40, "accepted: a decimal integer followed by CRLF"),
        (b"*2000000\r\n", "invalid multibulk length 2000000; accepted: at most"),
        (b"GET 'k'\r\n", "quoted inline arguments"),
        (b"G" * (64 * 1024 + 2), "inline command longer than"),
    ],
)
def test_malformed_or_oversized_input_raises_a_protocol_error(stream: bytes, fragment: str) -> None:
    parser = RequestParser(max_bulk_bytes=1024, max_command_bytes=1000)
    parser.feed(stream)
    with pytest.raises(ProtocolError) as caught:
        commands(parser)
    assert fragment in str(caught.value)


def test_an_incomplete_command_waits_for_more_bytes() -> None:
    parser = RequestParser(max_bulk_bytes=1024)
    parser.feed(b"*2\r\n$3\r\nGET\r\n$5\r\nab")
    assert parser.next_command() is None
    parser.feed(b"cde\r\n")
    assert parser.next_command() == [b"GET", b"abcde"]


def test_reply_encoding() -> None:
    assert encode_bulk(b"x\r\ny") == b"$4\r\nx\r\ny\r\n"
    assert encode_integer(-3) == b":-3\r\n"
    assert encode_error("ERR a\r\nb") == b"-ERR a  b\r\n"
    assert encode_array([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert encode_array([None], null=b"_\r\n") == b"*1\r\n_\r\n"
    assert encode_map([("p", b":3\r\n")], resp3=True) == b"%1\r\n$1\r\np\r\n:3\r\n"
    assert encode_map([("p", b":3\r\n")], resp3=False) == b"*2\r\n$1\r\np\r\n:3\r\n"
    assert show(b"x" * 50, 5) == "'xxxxx' (first 5 of 50 characters)"


def test_set_ttl_options() -> None:
    assert parse_set_ttl([]) is None
    assert parse_set_ttl([b"ex", b"10"]) == 10.0
    assert parse_set_ttl([b"PX", b"1500"]) == 1.5
    for options, fragment in [
        ([b"EX", b"1.5"], "SET EX: '1.5' is not accepted; accepted: an integer from 1 to 604800 (seconds)"),
        ([b"EX", b"604801"], "SET EX: '604801'"),
        ([b"PX", b"0"], "SET PX: '0'"),
        ([b"NX"], "SET option 'NX' is not supported"),
        ([b"EX", b"5", b"KEEPTTL"], "SET option 'KEEPTTL' is not supported"),
        ([b"EX"], "SET options: 'EX' are not accepted"),
        ([b"TTL", b"5"], "SET options: 'TTL' '5' are not accepted"),
    ]:
        with pytest.raises(CommandError) as caught:
            parse_set_ttl(options)
        assert fragment in caught.value.reply


def test_user_keys() -> None:
    assert parse_user_key("GET", "clé".encode()) == "clé"
    for raw, fragment in [(b"", "1 to 1024"), (b"k" * 1025, "1 to 1024"), (b"\xff", "UTF-8")]:
        with pytest.raises(CommandError) as caught:
            parse_user_key("GET", raw)
        assert caught.value.reply.startswith("ERR GET key:") and fragment in caught.value.reply


def test_value_mapping_between_the_protocols() -> None:
    assert as_resp_bytes(b"\x00raw") == b"\x00raw"
    assert as_resp_bytes({"a": [1, None]}) == b'{"a":[1,null]}'
    assert as_resp_bytes("text") == b'"text"'
    assert as_json_value({"a": 1}) == ({"a": 1}, None)
    assert as_json_value("b") == ("b", None)
    assert as_json_value(b"caf\xc3\xa9") == ("café", "utf-8")
    assert as_json_value(b"\xff") == ("/w==", "base64")


def test_a_large_argument_in_many_reads_is_collected_then_parsed_once() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    stream = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%b\r\n*1\r\n$4\r\nPING\r\n" % (len(value), value)
    parser = RequestParser(max_bulk_bytes=2 << 20)
    seen: list[list[bytes]] = []
    for index in range(0, len(stream), 1000):
        parser.feed(stream[index : index + 1000])
        assert not parser.empty
        seen += commands(parser)
        assert parser.buffered <= len(stream)
        assert parser.empty is (parser.buffered == 0)
    assert seen == [[b"SET", b"k", value], [b"PING"]]
    assert parser.buffered == 0
    assert parser.empty
