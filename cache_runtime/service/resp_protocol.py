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
# An incomplete command larger than this waits as a list of chunks instead of being re-copied per read.
_CHUNKED_FROM = 64 * 1024


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
    never holds more than about ``max_command_bytes`` in the buffer. A large argument arriving in
    many reads is collected as a list of chunks and joined once when its declared length is there
    (no quadratic re-copying of the buffer).
    """

    __slots__ = (
        "_buf",
        "_chunked",
        "_chunks",
        "_need",
        "_pos",
        "empty",
        "max_array_length",
        "max_bulk_bytes",
        "max_command_bytes",
    )

    def __init__(
        self,
        *,
        max_bulk_bytes: int,
        max_command_bytes: int | None = None,
        max_array_length: int = MAX_ARRAY_LENGTH,
    ) -> None:
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunked = 0
        self._need = 0  # > 0: bytes the chunk list must reach before parsing resumes
        # Nothing buffered (buffered == 0): a plain attribute, kept by feed and next_command, for the
        # server's per-read fast path.
        self.empty = True
        self.max_bulk_bytes = max_bulk_bytes
        self.max_command_bytes = max_command_bytes if max_command_bytes is not None else max_bulk_bytes
        self.max_array_length = max_array_length

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if data:
            self.empty = False
        if self._need:
            self._chunks.append(data)
            self._chunked += len(data)
            if self._chunked >= self._need:
                self._buf = b"".join(self._chunks)
                self._pos = 0
                self._chunks = []
                self._chunked = self._need = 0
            return
        pos = self._pos
        self._buf = data if pos >= len(self._buf) else self._buf[pos:] + data
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as commands."""
        return len(self._buf) - self._pos + self._chunked

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or None until more bytes arrive. Raises :class:`ProtocolError`.

        An empty inline line (a bare CRLF) and an empty array (``*0``) are skipped, as Redis does.
        """
        try:
            return self._next_command()
        finally:
            self.empty = len(self._buf) - self._pos + self._chunked == 0

    def _next_command(self) -> list[bytes] | None:
        if self._need:
            return None
        buf = self._buf
        pos = self._pos
        size = len(buf)
        while pos < size:
            # b"*": a multibulk array (what clients send); anything else: an inline command.
            result = self._multibulk(buf, pos, size) if buf[pos] == 0x2A else self._inline(buf, pos)
            if result is None:
                self._pos = 0 if self._need else pos
                return None
            command, pos = result
            if command:
                self._pos = pos
                return command
        self._pos = pos
        return None

    @staticmethod
    def _header(buf: bytes, pos: int, size: int, kind: str) -> None:
        """A length line without its CRLF yet: None while it may still come, else the error."""
        if size - pos > _MAX_LENGTH_LINE + 2:
            raise ProtocolError(
                f"invalid {kind} length {show(buf[pos + 1 : pos + 1 + _MAX_LENGTH_LINE])}; "
                "accepted: a decimal integer followed by CRLF"
            )
        return None

    def _multibulk(self, buf: bytes, pos: int, size: int) -> tuple[list[bytes], int] | None:
        start = pos
        newline = buf.find(CRLF, pos + 1, pos + 3 + _MAX_LENGTH_LINE)
        if newline < 0:
            return self._header(buf, pos, size, "multibulk")
        raw = buf[pos + 1 : newline]
        if not raw.isdigit():
            if raw[:1] == b"-" and raw[1:].isdigit():  # *-1: a null array, nothing to run (Redis too)
                return [], newline + 2
            raise ProtocolError(f"invalid multibulk length {show(raw)}; accepted: a decimal integer")
        count = int(raw)
        if count > self.max_array_length:
            raise ProtocolError(
                f"invalid multibulk length {count}; accepted: at most {self.max_array_length}"
            )
        pos = newline + 2
        args: list[bytes] = []
        total = 0
        max_bulk = self.max_bulk_bytes
        for _ in range(count):
            if pos >= size:
                return None
            if buf[pos] != 0x24:  # b"$"
                raise ProtocolError(
                    f"expected '$', got {show(buf[pos : pos + 1])}; accepted: an array of bulk strings"
                )
            newline = buf.find(CRLF, pos + 1, pos + 3 + _MAX_LENGTH_LINE)
            if newline < 0:
                return self._header(buf, pos, size, "bulk")
            raw = buf[pos + 1 : newline]
            length = int(raw) if raw.isdigit() else -1
            if length < 0 or length > max_bulk:
                shown = raw.decode("ascii") if raw.lstrip(b"-").isdigit() else show(raw)
                raise ProtocolError(f"invalid bulk length {shown}; accepted: 0 to {max_bulk} bytes")
            total += length
            if total > self.max_command_bytes:
                raise ProtocolError(
                    f"command of more than {self.max_command_bytes} bytes; accepted: at most "
                    f"{self.max_command_bytes} bytes of arguments"
                )
            pos = newline + 2
            end = pos + length
            if end + 2 > size:
                if end + 2 - start > _CHUNKED_FROM:
                    # Collect the rest of this argument as chunks; parse again once it is all here.
                    self._chunks = [buf[start:]]
                    self._chunked = size - start
                    self._need = end + 2 - start
                    self._buf = b""
                return None
            if buf[end : end + 2] != CRLF:
                raise ProtocolError(f"bulk string of declared length {length} is not followed by CRLF")
            args.append(buf[pos:end])
            pos = end + 2
        return args, pos

    def _inline(self, buf: bytes, pos: int) -> tuple[list[bytes], int] | None:
        end = buf.find(b"\n", pos, pos + MAX_INLINE_BYTES + 1)
        if end < 0:
            if len(buf) - pos > MAX_INLINE_BYTES:
                raise ProtocolError(
                    f"inline command longer than {MAX_INLINE_BYTES} bytes; accepted: at most "
                    f"{MAX_INLINE_BYTES} bytes, or a multibulk array"
                )
            return None
        line = buf[pos:end].rstrip(b"\r")
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
