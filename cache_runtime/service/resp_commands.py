"""The commands the Redis-protocol front end serves: their arity, role and argument checks (pure).

Each check raises :class:`CommandError` with the reply to send (``ERR ...`` naming the command, the
argument, its value cut short and what is accepted). The server module runs the commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache_runtime.service.auth import Role
from cache_runtime.service.resp_protocol import show

__all__ = ["COMMANDS", "CommandError", "CommandSpec", "check_arity", "parse_set_ttl", "parse_user_key"]

# The HTTP data API's bounds (cache_runtime.service.data), so both front ends accept the same keys/TTLs.
MAX_KEY_CHARS = 1024
MAX_MGET_KEYS = 1000
TTL_MAX_S = 7 * 86400


class CommandError(Exception):
    """A command the server refuses; ``reply`` is the error text (its first word the error class)."""

    def __init__(self, reply: str, kind: str = "syntax") -> None:
        self.reply = reply
        self.kind = kind
        super().__init__(reply)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its name, argument count bounds (with the name), role and usage line."""

    name: str
    min_args: int
    max_args: int | None  # None: any number
    role: Role | None  # None: allowed before AUTH
    usage: str


def _spec(name: str, min_args: int, max_args: int | None, role: Role | None, usage: str) -> CommandSpec:
    return CommandSpec(name, min_args, max_args, role, usage)


COMMANDS: dict[bytes, CommandSpec] = {
    spec.name.encode(): spec
    for spec in (
        _spec("GET", 2, 2, Role.READ, "GET key"),
        _spec("MGET", 2, 1 + MAX_MGET_KEYS, Role.READ, f"MGET key [key ...] (1 to {MAX_MGET_KEYS} keys)"),
        _spec("EXISTS", 2, 1 + MAX_MGET_KEYS, Role.READ, f"EXISTS key [key ...] (1 to {MAX_MGET_KEYS} keys)"),
        _spec(
            "SET", 3, None, Role.WRITE, f"SET key value [EX seconds | PX milliseconds] (up to {TTL_MAX_S} s)"
        ),
        _spec("DEL", 2, 1 + MAX_MGET_KEYS, Role.WRITE, f"DEL key [key ...] (1 to {MAX_MGET_KEYS} keys)"),
        _spec(
            "UNLINK", 2, 1 + MAX_MGET_KEYS, Role.WRITE, f"UNLINK key [key ...] (1 to {MAX_MGET_KEYS} keys)"
        ),
        # PING needs AUTH, as on a Redis with a password: a client's health check runs after AUTH.
        _spec("PING", 1, 2, Role.READ, "PING [message]"),
        _spec("ECHO", 2, 2, Role.READ, "ECHO message"),
        _spec("AUTH", 2, 3, None, "AUTH token | AUTH username token"),
        _spec("HELLO", 1, 7, None, "HELLO [2|3 [AUTH username token] [SETNAME name]]"),
        _spec("QUIT", 1, 1, None, "QUIT"),
        _spec("SELECT", 2, 2, Role.READ, "SELECT 0"),
        _spec("CLIENT", 2, None, Role.READ, "CLIENT SETINFO|SETNAME|GETNAME|ID ..."),
        _spec("COMMAND", 1, None, Role.READ, "COMMAND [COUNT|DOCS|INFO ...]"),
    )
}

SUPPORTED = ", ".join(sorted(spec.name for spec in COMMANDS.values()))


def check_arity(spec: CommandSpec, argc: int) -> None:
    """Raise the Redis-style arity error (with the usage line) when ``argc`` is outside the spec."""
    if argc < spec.min_args or (spec.max_args is not None and argc > spec.max_args):
        raise CommandError(
            f"ERR wrong number of arguments for '{spec.name.lower()}' command: {argc - 1} given; "
            f"accepted: {spec.usage}",
            "arity",
        )


def unknown_command(args: list[bytes]) -> CommandError:
    """The error for a command this front end does not serve."""
    rest = " ".join(show(arg, 20) for arg in args[1:4])
    return CommandError(
        f"ERR unknown command {show(args[0], 40)}, with args beginning with: {rest}; accepted: {SUPPORTED}",
        "unknown_command",
    )


def parse_user_key(command: str, raw: bytes) -> str:
    """A key argument as the engine's data key text: UTF-8, 1 to MAX_KEY_CHARS characters."""
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(
            f"ERR {command} key: {show(raw)} is not accepted; accepted: UTF-8 text of 1 to {MAX_KEY_CHARS} "
            "characters"
        ) from None
    if not key or len(key) > MAX_KEY_CHARS:
        raise CommandError(
            f"ERR {command} key: {show(raw)} is not accepted; accepted: 1 to {MAX_KEY_CHARS} characters"
        )
    return key


def _positive_int(command: str, option: str, raw: bytes, high: int, unit: str) -> int:
    try:
        text = raw.decode("ascii")
        value = int(text) if text.lstrip("-").isdigit() else None
    except UnicodeDecodeError:
        value = None
    if value is None or not 1 <= value <= high:
        raise CommandError(
            f"ERR {command} {option}: {show(raw)} is not accepted; "
            f"accepted: an integer from 1 to {high} ({unit})"
        )
    return value


def parse_set_ttl(options: list[bytes]) -> float | None:
    """The TTL in seconds of ``SET key value [EX s | PX ms]`` (None: the policy's TTL for data keys).

    NX, XX, GET, KEEPTTL, EXAT and PXAT are refused with an error saying so: the engine has no atomic
    conditional write across L1 and Redis, and emulating one with a read first would race.
    """
    if not options:
        return None
    for option in options:
        if option.upper() in {b"NX", b"XX", b"GET", b"KEEPTTL", b"EXAT", b"PXAT"}:
            raise CommandError(
                f"ERR SET option {show(option)} is not supported by the cachewarden front end (the engine "
                "has no atomic conditional write across L1 and Redis); accepted: EX seconds | PX milliseconds"
            )
    name = options[0].upper()
    if name not in {b"EX", b"PX"} or len(options) != 2:
        shown = " ".join(show(option, 20) for option in options)
        raise CommandError(
            f"ERR SET options: {shown} are not accepted; accepted: EX seconds | PX milliseconds"
        )
    if name == b"EX":
        return float(_positive_int("SET", "EX", options[1], TTL_MAX_S, "seconds"))
    return _positive_int("SET", "PX", options[1], TTL_MAX_S * 1000, "milliseconds") / 1000.0
