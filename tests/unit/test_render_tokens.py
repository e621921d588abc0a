"""The policy's token Secret (issue 8): three keys, missing keys filled without touching the others,
whole multi-line values kept through drift repair, bad lines refused naming key and line.

The last tests hand the rendered Secret and runtime arguments to the real runtime pieces (its argument
parser, settings with the devcluster path mapping, ``Authenticator`` over the files), the way a pod
mounts them.
"""

from __future__ import annotations

import base64
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cache_operator import render
from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.render import ADMIN_TOKEN_KEY, READ_TOKEN_KEY, WRITE_TOKEN_KEY, TokenSecretError, TokenSet
from cache_runtime.service import auth
from cache_runtime.service.auth import Authenticator, Role
from cache_runtime.service.runtime_main import build_parser
from cache_runtime.service.settings import ServiceSettings


@dataclass(frozen=True)
class Policy:
    name: str = "web"
    namespace: str = "shop"
    uid: str = "1234-uid"


POLICY = Policy()
ADMIN = "admin-0123456789abcdef-A"
ADMIN_OLD = "admin-0123456789abcdef-old"
READ = "read-0123456789abcdef-R"
WRITE = "write-0123456789abcdef-W"


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def secret_of(**values: str | None) -> dict[str, Any]:
    """A token Secret as the API server returns it; keyword names use _ for -."""
    data = {key.replace("_", "-"): b64(value) for key, value in values.items() if value is not None}
    return {"metadata": {"name": "web-cachewarden-tokens", "namespace": "shop"}, "data": data}


def counter() -> Any:
    numbers = itertools.count(1)
    return lambda: f"generated-token-{next(numbers):08d}"


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


# --- reading an existing Secret -----------------------------------------------------------------------

READ_CASES = [
    # (id, Secret values, presented tokens, stored values, generated keys)
    ("complete", dict(admin_token=ADMIN, read_token=READ, write_token=WRITE),
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: WRITE},
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: WRITE}, set()),
    # A Secret from before the write token: admin and read kept exactly, only the write token is new.
    ("no write token yet", dict(admin_token=ADMIN, read_token=READ),
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: "generated-token-00000001"},
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: "generated-token-00000001"},
     {WRITE_TOKEN_KEY}),
    ("only admin left", dict(admin_token=ADMIN),
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: "generated-token-00000001",
      WRITE_TOKEN_KEY: "generated-token-00000002"},
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: "generated-token-00000001",
      WRITE_TOKEN_KEY: "generated-token-00000002"}, {READ_TOKEN_KEY, WRITE_TOKEN_KEY}),
    ("empty Secret", {},
     {key: f"generated-token-0000000{i}" for i, key in enumerate(render.TOKEN_KEYS, start=1)},
     {key: f"generated-token-0000000{i}" for i, key in enumerate(render.TOKEN_KEYS, start=1)},
     set(render.TOKEN_KEYS)),
    # An empty or blank value asks for a new token for that key only.
    ("blank write value", dict(admin_token=ADMIN, read_token=READ, write_token=" \n"),
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: "generated-token-00000001"},
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: "generated-token-00000001"},
     {WRITE_TOKEN_KEY}),
    # Rotation overlap: the operator presents the first line; the whole value is kept byte for byte.
    ("overlap", dict(admin_token=f"{ADMIN}\n{ADMIN_OLD}\n", read_token=READ, write_token=WRITE),
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: WRITE},
     {ADMIN_TOKEN_KEY: f"{ADMIN}\n{ADMIN_OLD}\n", READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: WRITE}, set()),
    ("overlap, CRLF, blank lines and padding",
     dict(admin_token=f"\r\n  {ADMIN}\t\r\n\r\n{ADMIN_OLD}", read_token=f"{READ}\n{READ}x",
          write_token=WRITE),
     {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: WRITE},
     {ADMIN_TOKEN_KEY: f"\r\n  {ADMIN}\t\r\n\r\n{ADMIN_OLD}", READ_TOKEN_KEY: f"{READ}\n{READ}x",
      WRITE_TOKEN_KEY: WRITE}, set()),
    ("exactly the minimum length", dict(admin_token="a" * 16, read_token="r" * 16, write_token="w" * 16),
     {ADMIN_TOKEN_KEY: "a" * 16, READ_TOKEN_KEY: "r" * 16, WRITE_TOKEN_KEY: "w" * 16},
     {ADMIN_TOKEN_KEY: "a" * 16, READ_TOKEN_KEY: "r" * 16, WRITE_TOKEN_KEY: "w" * 16}, set()),
]


@pytest.mark.parametrize(("values", "presented", "stored", "generated"),
                         [case[1:] for case in READ_CASES], ids=[case[0] for case in READ_CASES])
def test_tokens_from_secret(values: dict[str, str], presented: dict[str, str], stored: dict[str, str],
                            generated: set[str]) -> None:
    tokens = render.tokens_from_secret(secret_of(**values), generate=counter())
    assert isinstance(tokens, TokenSet)
    assert dict(tokens) == presented
    assert tokens.stored == stored
    assert tokens.generated == generated


def test_no_secret_means_no_tokens_yet() -> None:
    assert render.tokens_from_secret(None) is None


# Each bad value: the key, the line (None: the whole value) and the problem; the token text itself
# never appears in the message (it goes to logs and Events).
BAD_VALUES = [
    ("short second line", ADMIN_TOKEN_KEY, f"{ADMIN}\nshort", 2, "a token of 5 characters"),
    ("short after a blank line", READ_TOKEN_KEY, f"{READ}\n\nabc", 3, "a token of 3 characters"),
    ("short only line", WRITE_TOKEN_KEY, "tiny", 1, "a token of 4 characters"),
    ("space inside", ADMIN_TOKEN_KEY, f"{ADMIN} {ADMIN_OLD}", 1, "whitespace inside the line"),
    ("tab inside", WRITE_TOKEN_KEY, f"{WRITE}\n{WRITE}\t{WRITE}", 2, "whitespace inside the line"),
    ("form feed inside", READ_TOKEN_KEY, f"{READ}\x0c{READ}", 1, "whitespace inside the line"),
    ("non-ASCII", ADMIN_TOKEN_KEY, f"{ADMIN}\n{ADMIN_OLD}é", 2, "a character outside visible ASCII"),
    ("control character", READ_TOKEN_KEY, f"{READ}\x00x", 1, "a character outside visible ASCII"),
    ("larger than the runtime reads", ADMIN_TOKEN_KEY, (ADMIN + "\n") * 3000, None,
     f"{len(ADMIN + chr(10)) * 3000} bytes, over the runtime's limit of 65536"),
]


@pytest.mark.parametrize(("key", "value", "line", "problem"), [case[1:] for case in BAD_VALUES],
                         ids=[case[0] for case in BAD_VALUES])
def test_a_bad_value_is_an_error_naming_key_and_line(key: str, value: str, line: int | None,
                                                     problem: str) -> None:
    values = {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ, WRITE_TOKEN_KEY: WRITE, key: value}
    with pytest.raises(TokenSecretError) as raised:
        render.tokens_from_secret(secret_of(**{k.replace("-", "_"): v for k, v in values.items()}))
    where = f"data['{key}']" + (f" line {line}" if line is not None else "")
    message = str(raised.value)
    assert message.startswith(f"Secret shop/web-cachewarden-tokens {where}: {problem}; accepted: "), message
    assert "at least 16 visible ASCII characters without whitespace" in message
    assert (raised.value.key, raised.value.line) == (key, line)
    for text in value.split():
        assert text not in message or len(text) < 4  # no token text leaks into the message
    # The same check guards the renderer: such a value is never written either.
    with pytest.raises(TokenSecretError, match=re.escape(f"{where}: {problem}")):
        render.render_token_secret(POLICY, values)


@pytest.mark.parametrize(("raw", "problem"), [
    ("!!not-base64!!", "not base64"),
    (b64(b"\xff\xfe" + b"x" * 20), "not UTF-8 text"),
    (12345, "a int, not base64 text"),
])
def test_undecodable_data_is_an_error_naming_the_key(raw: Any, problem: str) -> None:
    secret = secret_of(admin_token=ADMIN, write_token=WRITE)
    secret["data"][READ_TOKEN_KEY] = raw
    with pytest.raises(TokenSecretError, match=re.escape(f"data['read-token']: {problem}; accepted")):
        render.tokens_from_secret(secret)


# --- rendering and drift repair -------------------------------------------------------------------------


def test_new_tokens_are_three_distinct_strong_tokens() -> None:
    tokens = render.new_tokens()
    assert set(tokens) == {"admin-token", "read-token", "write-token"} == set(render.TOKEN_KEYS)
    assert len(set(tokens.values())) == 3
    assert all(len(value) == 43 and render.token_lines("k", value) == (value,) for value in tokens.values())
    assert tokens.generated == set(render.TOKEN_KEYS) and tokens.stored == dict(tokens)
    secret = render.render_token_secret(POLICY, tokens)
    assert secret["type"] == "Opaque" and secret["metadata"]["name"] == "web-cachewarden-tokens"
    assert decoded(secret) == dict(tokens)
    assert render.tokens_from_secret(secret) == tokens


@pytest.mark.parametrize("values", [case[1] for case in READ_CASES], ids=[case[0] for case in READ_CASES])
def test_drift_repair_writes_back_what_it_read_and_fills_missing_keys_once(values: dict[str, str]) -> None:
    """What every 10th pass does (read the Secret, render it, apply it), 12 times over: a valid
    user-provided value is written back byte for byte, a missing key is generated on the first pass
    and kept from then on, and the token the operator presents never changes."""
    secret = secret_of(**values)
    generate = counter()
    history = []
    for _ in range(12):
        tokens = render.tokens_from_secret(secret, generate=generate)
        assert tokens is not None
        secret = render.render_token_secret(POLICY, tokens)
        history.append((decoded(secret), dict(tokens)))
    # Unchanged from the first apply on: the same Secret data, the same presented tokens.
    assert all(entry == history[0] for entry in history)
    applied, presented = history[0]
    for key, value in values.items():
        key = key.replace("_", "-")
        if value.strip():
            assert applied[key] == value  # the user's value, untouched (every line)
    assert set(applied) == set(render.TOKEN_KEYS)
    assert all(presented[key] == render.token_lines(key, applied[key])[0] for key in render.TOKEN_KEYS)


def test_render_requires_every_key() -> None:
    with pytest.raises(TokenSecretError, match=re.escape("data['write-token']: missing; accepted")):
        render.render_token_secret(POLICY, {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: READ})
    with pytest.raises(ValueError, match=re.escape("data['read-token'] line 1: a token of 4 characters")):
        render.render_token_secret(POLICY, {ADMIN_TOKEN_KEY: ADMIN, READ_TOKEN_KEY: "tiny",
                                            WRITE_TOKEN_KEY: WRITE})


def test_limits_are_the_runtimes() -> None:
    assert render.MIN_TOKEN_LENGTH == auth.MIN_TOKEN_LENGTH
    assert render.MAX_TOKEN_VALUE_BYTES == auth.MAX_TOKEN_FILE_BYTES


# --- what the runtime makes of it ---------------------------------------------------------------------


def mount(secret: dict[str, Any], root: Path) -> None:
    """Project the Secret's data as the kubelet does, below a devcluster-style root."""
    directory = root / render.TOKENS_DIR.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in secret["data"].items():
        (directory / key).write_bytes(base64.b64decode(value))


def test_the_runtime_reads_the_rendered_secret_with_three_roles(tmp_path: Path) -> None:
    """The rendered arguments through the runtime's own parser and settings (DEVCLUSTER_ROOT mapping),
    the rendered Secret as files: the write token writes but is no admin, both lines of an overlap are
    admin, and the runtime's tokens equal :func:`render.token_lines` of each value."""
    values = {ADMIN_TOKEN_KEY: f"\r\n{ADMIN}  \n\n{ADMIN_OLD}\n", READ_TOKEN_KEY: READ}
    tokens = render.tokens_from_secret(secret_of(**{k.replace("-", "_"): v for k, v in values.items()}),
                                       generate=counter())
    assert tokens is not None
    secret = render.render_token_secret(POLICY, tokens)
    mount(secret, tmp_path)
    spec = CachePolicySpec.model_validate({"runtime": {}})
    assert spec.runtime is not None
    args = render.runtime_args(spec, spec.runtime)
    assert args[args.index("--write-token-file") + 1] == "/etc/cachewarden/tokens/write-token"
    parsed = build_parser().parse_args(args[1:])
    flags = {name: value for name, value in vars(parsed).items() if value is not None}
    settings = ServiceSettings.from_env({"DEVCLUSTER_ROOT": str(tmp_path)}, **flags)
    authenticator = Authenticator.from_paths(admin=settings.admin_token_file, read=settings.read_token_file,
                                             write=settings.write_token_file)
    write = tokens[WRITE_TOKEN_KEY]
    assert write == "generated-token-00000001"
    assert authenticator.role_for(f"Bearer {ADMIN}") is Role.ADMIN
    assert authenticator.role_for(f"Bearer {ADMIN_OLD}") is Role.ADMIN
    assert authenticator.role_for(f"Bearer {write}") is Role.WRITE
    assert authenticator.role_for(f"Bearer {READ}") is Role.READ
    assert authenticator.role_for("Bearer generated-token-00000002") is None
    for key, source in ((ADMIN_TOKEN_KEY, authenticator.admin), (READ_TOKEN_KEY, authenticator.read),
                        (WRITE_TOKEN_KEY, authenticator.write)):
        assert source is not None
        assert source.tokens() == tuple(t.encode() for t in render.token_lines(key, tokens.stored[key]))


def test_the_deployment_mounts_the_whole_secret() -> None:
    """No ``items`` on the token volume: every key (the write token too) becomes a file."""
    spec = CachePolicySpec.model_validate({"runtime": {}})
    pod = render.render_deployment(POLICY, spec)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert volume["secret"] == {"secretName": "web-cachewarden-tokens", "defaultMode": 0o440}
