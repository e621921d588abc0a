"""The Redis wire protocol (RESP2, and the RESP3 replies ``HELLO 3`` asks for): pure parsing and encoding.

No I/O here: :class:`RequestParser` is fed bytes as they arrive and hands back complete commands
(each a list of ``bytes`` arguments); the ``encode_*`` functions build replies. The server module
(:mod:`cache_runtime.service.resp_server`) does the sockets.

Requests are what Redis clients send: a multibulk array of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n
$1\\r\\nk\\r\\n``), or an inline command (``PING\\r\\n``, as typed into telnet). Everything is bounded
before it is buffered: a bulk string's declared length, an array's declared length, the sum of one
command's bulk lengths, and an inline line. Anything malformed or past a bound raises
:class:`ProtocolError`; like Redis, the server answers ``-ERR Protocol error: ...`` and closes the
connection, because after a framing error the rest of the stream cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "CRLF",
    "NULL_RESP2",
    "NULL_RESP3",
    "OK",
    "PONG",
    "ProtocolError",
    "RequestParser",
    "encode_array",
    "encode_bulk",
    "encode_error",
    "encode_integer",
    "encode_map",
    "encode_simple",
    "show",
]

CRLF = b"\r\n"
OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL_RESP2 = b"$-1\r\n"
NULL_RESP3 = b"_\r\n"

# Redis' own bounds for what it has not parsed yet: an inline line, and a multibulk's element count.
MAX_INLINE_BYTES = 64 * 1024
MAX_ARRAY_LENGTH = 1024 * 1024
# A length line ("*123\r\n", "$456\r\n") longer than this is not a length.
_MAX_LENGTH_LINE = 32


class ProtocolError(ValueError):
    """The byte stream is not RESP, or a declared size is past a bound; the connection must close."""


def show(value: bytes | str, limit: int = 40) -> str:
    """``value`` for an error message: printable, quoted, cut to ``limit`` characters."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    cut = text[:limit]
    shown = repr(cut)
    return shown + f" (first {limit} of {len(text)} characters)" if len(text) > limit else shown


class RequestParser:
    """Incremental request parser; feed bytes, take commands, keep the partial rest buffered.

    ``max_bulk_bytes`` bounds one argument and ``max_command_bytes`` the sum of one command's
    arguments (the server passes the HTTP API's body limit for both), so an incomplete command
    never holds more than about ``max_command_bytes`` in the buffer.
    """

    __slots__ = ("_buffer", "_pos", "max_array_length", "max_bulk_bytes", "max_command_bytes")

    def __init__(
        self,
        *,
        max_bulk_bytes: int,
        max_command_bytes: int | None = None,
        max_array_length: int = MAX_ARRAY_LENGTH,
    ) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self.max_bulk_bytes = max_bulk_bytes
        self.max_command_bytes = max_command_bytes if max_command_bytes is not None else max_bulk_bytes
        self.max_array_length = max_array_length

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as commands."""
        return len(self._buffer) - self._pos

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or None until more bytes arrive. Raises :class:`ProtocolError`.

        An empty inline line (a bare CRLF) is skipped, as Redis does.
        """
        while True:
            buffer = self._buffer
            pos = self._pos
            if pos >= len(buffer):
                return None
            # b"*": a multibulk array (what clients send); anything else: an inline command.
            result = self._multibulk(buffer, pos) if buffer[pos] == 0x2A else self._inline(buffer, pos)
            if result is None:
                return None
            command, end = result
            self._pos = end
            if end >= len(buffer) or end > 65536:
                # Drop what was consumed (cheap when the buffer is empty; bounded copying otherwise).
                del buffer[:end]
                self._pos = 0
            if command:
                return command

    def _length(self, buffer: bytearray, pos: int, kind: str) -> tuple[int, int] | None:
        """The integer after the type byte at ``pos`` and the index after its CRLF (None: incomplete)."""
        end = buffer.find(CRLF, pos + 1, pos + 1 + _MAX_LENGTH_LINE)
        if end < 0:
            if len(buffer) - pos > _MAX_LENGTH_LINE:
                raise ProtocolError(
                    f"invalid {kind} length {show(bytes(buffer[pos : pos + _MAX_LENGTH_LINE]))}; "
                    "accepted: a decimal integer followed by CRLF"
                )
            return None
        raw = bytes(buffer[pos + 1 : end])
        if not raw or not (raw.isdigit() or (raw[:1] == b"-" and raw[1:].isdigit())):
            raise ProtocolError(f"invalid {kind} length {show(raw)}; accepted: a decimal integer")
        return int(raw), end + 2

    def _multibulk(self, buffer: bytearray, pos: int) -> tuple[list[bytes], int] | None:
        head = self._length(buffer, pos, "multibulk")
        if head is None:
            return None
        count, pos = head
        if count <= 0:  # *0 and *-1: nothing to run, like Redis
            return [], pos
        if count > self.max_array_length:
            raise ProtocolError(
                f"invalid multibulk length {count}; accepted: at most {self.max_array_length}"
            )
        args: list[bytes] = []
        total = 0
        size = len(buffer)
        for _ in range(count):
            if pos >= size:
                return None
            if buffer[pos] != 0x24:  # b"$"
                raise ProtocolError(
                    f"expected '$', got {show(bytes(buffer[pos : pos + 1]))}; accepted: "
                    "an array of bulk strings"
                )
            item = self._length(buffer, pos, "bulk")
            if item is None:
                return None
            length, pos = item
            if length < 0 or length > self.max_bulk_bytes:
                raise ProtocolError(
                    f"invalid bulk length {length}; accepted: 0 to {self.max_bulk_bytes} bytes"
                )
            total += length
            if total > self.max_command_bytes:
                raise ProtocolError(
                    f"command of more than {self.max_command_bytes} bytes; accepted: at most "
                    f"{self.max_command_bytes} bytes of arguments"
                )
            end = pos + length
            if end + 2 > size:
                return None
            if buffer[end : end + 2] != CRLF:
                raise ProtocolError(f"bulk string of declared length {length} is not followed by CRLF")
            args.append(bytes(buffer[pos:end]))
            pos = end + 2
        return args, pos

    def _inline(self, buffer: bytearray, pos: int) -> tuple[list[bytes], int] | None:
        end = buffer.find(b"\n", pos, pos + MAX_INLINE_BYTES + 1)
        if end < 0:
            if len(buffer) - pos > MAX_INLINE_BYTES:
                raise ProtocolError(
                    f"inline command longer than {MAX_INLINE_BYTES} bytes; accepted: at most "
                    f"{MAX_INLINE_BYTES} bytes, or a multibulk array"
                )
            return None
        line = bytes(buffer[pos:end]).rstrip(b"\r")
        if b'"' in line or b"'" in line:
            raise ProtocolError(
                "quoted inline arguments are not supported; accepted: unquoted words "
                "separated by spaces, or a multibulk array"
            )
        return line.split(), end + 1


# ---- replies ---------------------------------------------------------------------------------------


def encode_simple(text: str) -> bytes:
    """``+text`` (no CR or LF inside)."""
    return b"+" + text.replace("\r", " ").replace("\n", " ").encode() + CRLF


def encode_error(text: str) -> bytes:
    """``-PREFIX message``: the first word is the error class clients map (ERR, NOAUTH, WRONGPASS...)."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode("utf-8", "backslashreplace") + CRLF


def encode_integer(value: int) -> bytes:
    """``:value``."""
    return b":%d\r\n" % value


def encode_bulk(value: bytes) -> bytes:
    """``$len`` + the bytes."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def encode_array(items: Sequence[bytes | None], null: bytes = NULL_RESP2) -> bytes:
    """An array of bulk strings; None items are written as ``null`` (the RESP2 or RESP3 null)."""
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(null if item is None else b"$%d\r\n%b\r\n" % (len(item), item))
    return b"".join(parts)


def encode_map(pairs: Iterable[tuple[str, bytes]], resp3: bool) -> bytes:
    """A map of already-encoded values: ``%n`` in RESP3, a flat array of 2n items in RESP2."""
    items = list(pairs)
    parts = [b"%%%d\r\n" % len(items) if resp3 else b"*%d\r\n" % (2 * len(items))]
    for name, encoded in items:
        parts.append(encode_bulk(name.encode()))
        parts.append(encoded)
    return b"".join(parts)
