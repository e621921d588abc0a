"""Bearer-token auth of the runtime service: roles, rotation, fail-closed, constant-time compare."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cache_runtime.service.auth import (
    Authenticator,
    AuthOutcome,
    Role,
    TokenFile,
    bearer_token,
)
from tests.fakes import FakeClock

ADMIN = "admin-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"


def write(path: Path, text: str) -> None:
    # Write-then-rename, like a Secret volume update, so the inode changes.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
def authenticator(tmp_path: Path) -> Authenticator:
    write(tmp_path / "admin", ADMIN + "\n")
    write(tmp_path / "read", READ + "\n")
    write(tmp_path / "write", WRITE)
    return Authenticator.from_paths(
        admin=tmp_path / "admin", read=tmp_path / "read", write=tmp_path / "write"
    )


@pytest.mark.parametrize(
    ("header", "required", "expected"),
    [
        (None, Role.READ, AuthOutcome.UNAUTHENTICATED),
        ("", Role.READ, AuthOutcome.UNAUTHENTICATED),
        (f"Basic {ADMIN}", Role.READ, AuthOutcome.UNAUTHENTICATED),
        ("Bearer ", Role.READ, AuthOutcome.UNAUTHENTICATED),
        ("Bearer wrong-token-0123456789abcdef", Role.READ, AuthOutcome.UNAUTHENTICATED),
        (f"Bearer {ADMIN[:-1]}", Role.READ, AuthOutcome.UNAUTHENTICATED),
        (f"Bearer {ADMIN}x", Role.READ, AuthOutcome.UNAUTHENTICATED),
        (f"Bearer {READ}", Role.READ, AuthOutcome.ALLOWED),
        (f"bearer {READ}", Role.READ, AuthOutcome.ALLOWED),
        (f"Bearer {READ}", Role.WRITE, AuthOutcome.FORBIDDEN),
        (f"Bearer {READ}", Role.ADMIN, AuthOutcome.FORBIDDEN),
        (f"Bearer {WRITE}", Role.READ, AuthOutcome.ALLOWED),
        (f"Bearer {WRITE}", Role.WRITE, AuthOutcome.ALLOWED),
        (f"Bearer {WRITE}", Role.ADMIN, AuthOutcome.FORBIDDEN),
        (f"Bearer {ADMIN}", Role.READ, AuthOutcome.ALLOWED),
        (f"Bearer {ADMIN}", Role.ADMIN, AuthOutcome.ALLOWED),
        ("Bearer t\u00f6ken-0123456789abcdef", Role.READ, AuthOutcome.UNAUTHENTICATED),
    ],
)
def test_roles(
    authenticator: Authenticator, header: str | None, required: Role, expected: AuthOutcome
) -> None:
    assert authenticator.check(header, required) is expected


def test_fails_closed_without_token_files() -> None:
    auth = Authenticator.from_paths(admin=None)
    assert auth.check(f"Bearer {ADMIN}", Role.READ) is AuthOutcome.UNAUTHENTICATED


def test_missing_token_file_denies(tmp_path: Path) -> None:
    auth = Authenticator.from_paths(admin=tmp_path / "does-not-exist")
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.UNAUTHENTICATED


def test_disabled_allows_everything() -> None:
    auth = Authenticator.from_paths(admin=None, disabled=True)
    assert auth.check(None, Role.ADMIN) is AuthOutcome.ALLOWED


def test_rotation_is_picked_up_after_the_recheck_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "admin"
    write(path, ADMIN)
    tokens = TokenFile(path, recheck_interval_s=1.0, clock=clock)
    auth = Authenticator(admin=tokens)
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.ALLOWED
    rotated = "rotated-admin-token-fedcba9876543210"
    write(path, rotated)
    # Within the interval the cached tokens answer (the per-request cost is a clock read) ...
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.ALLOWED
    clock.now += 1.5
    # ... after it, the new Secret is in force and the old token is refused.
    assert auth.check(f"Bearer {rotated}", Role.ADMIN) is AuthOutcome.ALLOWED
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.UNAUTHENTICATED


def test_overlap_during_rotation_accepts_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "admin"
    new = "new-admin-token-0123456789abcdef"
    write(path, f"{ADMIN}\n{new}\n")
    auth = Authenticator(admin=TokenFile(path))
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.ALLOWED
    assert auth.check(f"Bearer {new}", Role.ADMIN) is AuthOutcome.ALLOWED


def test_file_removed_then_restored(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "admin"
    write(path, ADMIN)
    auth = Authenticator(admin=TokenFile(path, clock=clock))
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.ALLOWED
    path.unlink()
    clock.now += 2
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.UNAUTHENTICATED
    write(path, ADMIN)
    clock.now += 2
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.ALLOWED


def test_short_tokens_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "admin"
    write(path, "short\n")
    auth = Authenticator(admin=TokenFile(path))
    assert auth.check("Bearer short", Role.ADMIN) is AuthOutcome.UNAUTHENTICATED


def test_oversized_token_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "admin"
    write(path, ADMIN + "\n" + "x" * 70_000)
    auth = Authenticator(admin=TokenFile(path))
    assert auth.check(f"Bearer {ADMIN}", Role.ADMIN) is AuthOutcome.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", b"abc"), ("BEARER  abc ", b"abc"), ("Token abc", None), ("Bearer", None), (None, None)],
)
def test_bearer_token_parsing(header: str | None, token: bytes | None) -> None:
    assert bearer_token(header) == token
