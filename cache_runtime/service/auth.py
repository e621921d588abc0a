"""Bearer-token authentication for the runtime service.

Tokens live in files (mounted Kubernetes Secrets). Three roles, each a superset of the one below:
``read`` (status, metrics, health, data lookups), ``write`` (data API stores and deletes) and
``admin`` (every action). Comparison is constant-time (``hmac.compare_digest``) against every
configured token, so response time does not reveal which file matched or how much of a token was
right. A file holds one token per line: during a rotation the Secret may carry the old and the new
token at once. Files are re-read when they change (checked at most once a second), so a rotated Secret
takes effect without a restart. With no token configured for a role, that role is unreachable:
authentication fails closed unless it is disabled explicitly for local development.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

log = logging.getLogger("cachewarden.runtime.auth")

# A Secret's token file is tiny; anything larger is a mistake, not a token list.
MAX_TOKEN_FILE_BYTES = 64 * 1024
MIN_TOKEN_LENGTH = 16


class Role(enum.IntEnum):
    """What a caller may do; a higher role includes every lower one."""

    READ = 1
    WRITE = 2
    ADMIN = 3


class AuthOutcome(enum.Enum):
    """The result of checking one request's credentials against a required role."""

    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"  # no token, or a token that matches nothing -> 401
    FORBIDDEN = "forbidden"  # a valid token of a lower role -> 403


class TokenFile:
    """The tokens in one file, re-read when the file changes.

    The file's identity (inode, size, mtime) is checked at most every ``recheck_interval_s`` so the
    per-request cost is a clock read; Kubernetes swaps a Secret volume's ``..data`` symlink
    atomically, which changes the inode that ``os.stat`` sees through the link.
    """

    __slots__ = ("_checked_at", "_clock", "_identity", "_tokens", "path", "recheck_interval_s")

    def __init__(
        self, path: Path, *, recheck_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.recheck_interval_s = recheck_interval_s
        self._clock = clock
        self._checked_at: float | None = None
        self._identity: tuple[int, int, int] | None = None
        self._tokens: tuple[bytes, ...] = ()

    def tokens(self) -> tuple[bytes, ...]:
        """The tokens currently in the file (empty when it is missing, empty or unreadable)."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self.recheck_interval_s:
            return self._tokens
        # The new state is built completely before it is published (tokens, then the check time),
        # so a caller on another thread never sees "checked just now" with tokens not read yet.
        try:
            stat = os.stat(self.path)
        except OSError:
            if self._tokens:
                log.warning(
                    "token file disappeared; its role is now unreachable",
                    extra={"fields": {"path": str(self.path)}},
                )
            self._identity, self._tokens = None, ()
            self._checked_at = now
            return ()
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        tokens = self._tokens
        if identity != self._identity:
            tokens = self._read()
            self._tokens = tokens
            self._identity = identity
        self._checked_at = now
        return tokens

    def _read(self) -> tuple[bytes, ...]:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError:
            return ()
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            log.error(
                "token file larger than %d bytes ignored",
                MAX_TOKEN_FILE_BYTES,
                extra={"fields": {"path": str(self.path)}},
            )
            return ()
        tokens = tuple(line.strip() for line in raw.splitlines() if line.strip())
        short = [token for token in tokens if len(token) < MIN_TOKEN_LENGTH]
        if short:
            # Never log the token itself, only that the file holds a weak one.
            log.error(
                "token file holds a token shorter than %d bytes; ignored",
                MIN_TOKEN_LENGTH,
                extra={"fields": {"path": str(self.path)}},
            )
        return tuple(token for token in tokens if len(token) >= MIN_TOKEN_LENGTH)


@dataclass(slots=True)
class Authenticator:
    """Maps an ``Authorization`` header to a role and decides whether a route may be called."""

    admin: TokenFile | None = None
    read: TokenFile | None = None
    write: TokenFile | None = None
    disabled: bool = False

    @classmethod
    def from_paths(
        cls,
        *,
        admin: Path | None,
        read: Path | None = None,
        write: Path | None = None,
        disabled: bool = False,
    ) -> Authenticator:
        """Build an authenticator over token files (any of them may be absent)."""
        return cls(
            admin=TokenFile(admin) if admin else None,
            read=TokenFile(read) if read else None,
            write=TokenFile(write) if write else None,
            disabled=disabled,
        )

    def role_for(self, authorization: str | None) -> Role | None:
        """The highest role whose token matches the header's bearer token, or None."""
        presented = bearer_token(authorization)
        if presented is None:
            return None
        granted: Role | None = None
        # Compare against every token of every role (no early exit), so timing reveals nothing.
        for role, source in ((Role.ADMIN, self.admin), (Role.WRITE, self.write), (Role.READ, self.read)):
            if source is None:
                continue
            for token in source.tokens():
                if hmac.compare_digest(presented, token) and (granted is None or role > granted):
                    granted = role
        return granted

    def check(self, authorization: str | None, required: Role) -> AuthOutcome:
        """Decide one request: allowed, 401 (no valid credentials) or 403 (role too low)."""
        if self.disabled:
            return AuthOutcome.ALLOWED
        role = self.role_for(authorization)
        if role is None:
            return AuthOutcome.UNAUTHENTICATED
        return AuthOutcome.ALLOWED if role >= required else AuthOutcome.FORBIDDEN

    def require(self, required: Role) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency that lets the request through only with a token of ``required`` role.

        The error bodies say only what is missing, never which tokens exist or how close a guess was.
        """

        # async: FastAPI runs sync dependencies in a thread pool; the check is a clock read and
        # a few compare_digest calls, cheaper than a thread hop.
        async def dependency(request: Request) -> None:
            outcome = self.check(request.headers.get("authorization"), required)
            if outcome is AuthOutcome.UNAUTHENTICATED:
                raise HTTPException(
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                    detail={"error": "unauthorized", "message": "a valid bearer token is required"},
                )
            if outcome is AuthOutcome.FORBIDDEN:
                raise HTTPException(
                    status_code=403,
                    detail={
                        "error": "forbidden",
                        "message": f"this route needs the {required.name.lower()} role",
                    },
                )

        dependency.__name__ = f"require_{required.name.lower()}"
        return dependency


def bearer_token(authorization: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None for anything else."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        return None
