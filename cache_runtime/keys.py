"""Cache keys: one layout, no collisions, no raw text where the config does not allow it.

Callers deal in *logical* keys; the facade files every logical key under the namespace and its
current version, so invalidating a namespace is one INCR and nobody holds a key with a stale version::

    Redis key      {prefix}:{namespace}:v{namespace_version}:{logical key}
    AI response    ai{KEY_SCHEMA}:{operation}:{tier}:h{digest}                   (text hashed)
                   ai{KEY_SCHEMA}:{operation}:{tier}:r{escaped text}:{digest}    (small text readable)
    data API key   d:{escaped user key}

``KEY_SCHEMA`` versions the AI key format. Any other string is a valid logical key too (the Python
API takes keys as they are); :meth:`KeyBuilder.data_key` keeps the data API's clients out of the
``ai…`` keys. Bookkeeping lives under ``{prefix}#...`` (namespace versions, leases; the coherence
channel is ``{prefix}#coherence``): a pattern invalidation, always confined to ``{prefix}:``, can
never delete it.

Why it cannot collide: the digest is taken over a *framed* encoding of (operation, text, canonical
options, question) -- every field is length-prefixed and an absent question has its own marker --
so two different inputs give two different byte strings, and only a 128-bit (or 256-bit) hash
collision could map them to one key. Readable text is percent-escaped (an injective encoding without
``:``), so it cannot imitate a separator either. The original joined fields with ``|`` and replaced
characters, which made ``"a|b"`` and ``"a_b"`` the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import orjson
import xxhash

from cache_runtime.config import CacheConfig, NormalizeConfig

__all__ = [
    "AI_KEY_HEAD",
    "KEY_SCHEMA",
    "KeyBuilder",
    "TextTooLongError",
    "canonical_options",
    "normalize_text",
    "redis_glob_to_regex",
]

KEY_SCHEMA = 1

_OPERATION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_USER_KEY_CHARS = 4096


class TextTooLongError(ValueError):
    """A text longer than ``keys.max_text_length`` was offered for keying (ai_features on)."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"text: {length} characters is too long to cache; accepted: at most {limit} "
            f"(keys.max_text_length)"
        )
        self.length = length
        self.limit = limit


# --------------------------------------------------------------------------------------------------
# pure helpers

# Characters that make equal-looking texts differ: zero-width space/joiners, word joiner and the
# invisible operators, BOM, soft hyphen, Mongolian vowel separator, bidi marks and embeddings.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_WHITESPACE_RUN = re.compile(r"\s+")


def normalize_text(text: str, rules: NormalizeConfig) -> str:
    """Apply the enabled normalization rules, in a fixed order (line endings, invisible, whitespace, case)."""
    if rules.line_endings:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if rules.invisible_chars:
        text = _INVISIBLE.sub("", text)
    if rules.whitespace:
        text = _WHITESPACE_RUN.sub(" ", text).strip()
    if rules.case:
        text = text.casefold()
    return text


NORMALIZE_RULES: tuple[str, ...] = ("whitespace", "line_endings", "invisible_chars", "case")


def rules_that_change(text: str, current: NormalizeConfig, question: str | None = None) -> tuple[str, ...]:
    """The normalization rules off in ``current`` that, turned on alone, would change ``text`` (or
    ``question``): the evidence of which rule a key variant needs (the key-variant sampler)."""
    changing = []
    for rule in NORMALIZE_RULES:
        if getattr(current, rule):
            continue
        alone = NormalizeConfig(**{rule: True})
        if normalize_text(text, alone) != text or (
            question is not None and normalize_text(question, alone) != question
        ):
            changing.append(rule)
    return tuple(changing)


def canonical_options(options: Mapping[str, Any] | None) -> bytes:
    """Canonical JSON of the options: sorted keys at every depth, no whitespace.

    ``None`` and ``{}`` are the same (no options). Keys must be strings: ``{1: x}`` and ``{"1": x}``
    would otherwise serialize alike. Integers beyond 64 bits go through the standard library (orjson
    refuses them); no other value can take that path, so each value has one representation.
    """
    if options is None:
        return b"{}"
    if not isinstance(options, Mapping):
        raise TypeError(f"options: {type(options).__name__} is not accepted; accepted: a mapping or None")
    try:
        return orjson.dumps(options, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise TypeError(
                f"options: not JSON-serializable ({exc}); accepted: JSON values with string keys"
            ) from None
    _reject_non_str_keys(options)
    return json.dumps(options, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _reject_non_str_keys(value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"options: key {key!r} is not accepted; accepted: string keys")
            _reject_non_str_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_non_str_keys(item)


def _frame(parts: list[bytes | None]) -> bytes:
    """Length-prefix every field; ``None`` is ``~``, which no length prefix (digits) can start with."""
    out = bytearray()
    for part in parts:
        if part is None:
            out += b"~"
        else:
            out += str(len(part)).encode()
            out += b":"
            out += part
    return bytes(out)


def _utf8(text: str) -> bytes:
    # surrogatepass keeps the encoding injective for strings with lone surrogates
    return text.encode("utf-8", "surrogatepass")


def _escape(text: str) -> str:
    """Percent-escape everything but ``A-Za-z0-9_.-~``: injective, and free of ``:``, glob characters,
    whitespace and control characters."""
    return quote(text, safe="", errors="surrogatepass")


def _escape_user_key(text: str) -> str:
    """User keys stay readable: only ``%``, glob characters, whitespace and non-printables are escaped."""
    return quote(text, safe="!\"#$&'()+,/:;<=>@^_`{|}~-.", errors="surrogatepass")


def redis_glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis glob (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\x``) to an anchored regex,
    so L1 invalidation matches exactly what SCAN MATCH matches in Redis."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = i + 1
            if end < n and pattern[end] == "^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            if end >= n:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                if negate:
                    body = body[1:]
                cls = "".join(("\\" + c) if c in "\\[]^" else c for c in body.replace("\\", ""))
                out.append(f"[{'^' if negate else ''}{cls}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


# --------------------------------------------------------------------------------------------------
# the builder


class KeyBuilder:
    """Builds every key of one engine from its config and the namespace's current version.

    The facade updates :attr:`namespace_version` when the namespace is invalidated (here or, through
    coherence messages, on another pod). Keys never contain raw text unless the config allows
    readable small texts; :meth:`describe` follows the same rule.
    """

    __slots__ = ("_digest", "_normalize", "config", "namespace_version")

    def __init__(self, config: CacheConfig, namespace_version: int = 0) -> None:
        self.config = config
        self.namespace_version = namespace_version
        self._digest: Callable[[bytes], str] = (
            xxhash.xxh3_128_hexdigest
            if config.keys.hash_algorithm == "xxh3_128"
            else (lambda data: hashlib.sha256(data).hexdigest())
        )
        rules = config.keys.normalize
        self._normalize = rules.line_endings or rules.invisible_chars or rules.whitespace or rules.case

    # layout -------------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The first key segment."""
        return self.config.keys.prefix

    @property
    def namespace(self) -> str:
        """The namespace of this engine."""
        return self.config.keys.namespace

    def base(self, namespace: str | None = None, version: int | None = None) -> str:
        """``{prefix}:{namespace}:v{version}:`` for the current (or a given) namespace and version."""
        ns = self.namespace if namespace is None else namespace
        ver = self.namespace_version if version is None else version
        return f"{self.prefix}:{ns}:v{ver}:"

    def redis_key(self, key: str) -> str:
        """The Redis key of a logical key in the current namespace version."""
        return f"{self.prefix}:{self.namespace}:v{self.namespace_version}:{key}"

    def version_key(self, namespace: str | None = None) -> str:
        """The Redis counter holding a namespace's version (INCR invalidates the namespace)."""
        return f"{self.prefix}#nsver:{self.namespace if namespace is None else namespace}"

    def lease_key(self, key: str) -> str:
        """The Redis key of the stampede lease guarding the logical ``key`` (current version)."""
        return f"{self.prefix}#lease:{self._digest(_utf8(self.redis_key(key)))}"

    def namespace_prefix(self, namespace: str | None = None) -> str:
        """``{prefix}:{namespace}:``: every Redis key of the namespace, any version, starts with it."""
        return f"{self.prefix}:{self.namespace if namespace is None else namespace}:"

    def namespace_pattern(self, namespace: str | None = None) -> str:
        """Glob matching every Redis key of a namespace, all versions."""
        return f"{self.namespace_prefix(namespace)}v*"

    def pattern(self, user_pattern: str) -> str:
        """A user's glob over Redis keys, confined to ``{prefix}:`` (never another app's keys, never
        the ``{prefix}#`` bookkeeping keys).

        A pattern already starting with ``{prefix}:`` is taken as is; anything else is relative to
        the prefix: ``tenant-a:*`` is every key of namespace ``tenant-a``, ``*:ai1:qa:*`` every qa
        answer of every namespace.
        """
        if not isinstance(user_pattern, str) or not user_pattern:
            raise ValueError(f"pattern: {user_pattern!r} is not accepted; accepted: a non-empty Redis glob")
        head = f"{self.prefix}:"
        return user_pattern if user_pattern.startswith(head) else head + user_pattern

    def operation_pattern(self, operation: str, namespace: str | None = None) -> str:
        """Glob matching every AI key of one operation in a namespace (any version)."""
        _check_operation(operation)
        return f"{self.namespace_pattern(namespace)}:{_AI_HEAD}{operation}:*"

    # keys ---------------------------------------------------------------------------------------

    def data_key(self, user_key: str) -> str:
        """The logical key of a data API key (``d:`` + escaped): such keys can never meet AI keys."""
        if not isinstance(user_key, str) or not user_key or len(user_key) > _MAX_USER_KEY_CHARS:
            raise ValueError(
                f"key: {user_key!r:.80} is not accepted; accepted: a string of 1 to "
                f"{_MAX_USER_KEY_CHARS} characters"
            )
        return f"d:{_escape_user_key(user_key)}"

    def key_for(
        self, operation: str, text: str, options: Mapping[str, Any] | None = None, question: str | None = None
    ) -> str:
        """The logical key of the AI response to ``operation`` on ``text`` with ``options``/``question``."""
        return self._build(operation, text, options, question)[0]

    def _build(
        self, operation: str, text: str, options: Mapping[str, Any] | None, question: str | None
    ) -> tuple[str, str, str, bool]:
        _check_operation(operation)
        if not isinstance(text, str):
            raise TypeError(f"text: {type(text).__name__} is not accepted; accepted: str")
        if question is not None and not isinstance(question, str):
            raise TypeError(f"question: {type(question).__name__} is not accepted; accepted: str or None")
        keys = self.config.keys
        if self._normalize:
            text = normalize_text(text, keys.normalize)
            if question is not None:
                question = normalize_text(question, keys.normalize)
        length = len(text)
        if self.config.ai_features and length > keys.max_text_length:
            raise TextTooLongError(length, keys.max_text_length)
        tiers = keys.tiers
        if length <= tiers.small:
            tier = "s"
        elif length <= tiers.medium:
            tier = "m"
        elif length <= tiers.large:
            tier = "l"
        else:
            tier = "x"
        opts = canonical_options(options)
        q = None if question is None else _utf8(question)
        op = operation.encode()
        readable = keys.readable_small_text and length <= keys.text_hash_threshold
        if readable:
            tail = f"r{_escape(text)}:{self._digest(_frame([op, opts, q]))}"
        else:
            tail = f"h{self._digest(_frame([op, _utf8(text), opts, q]))}"
        return f"{_AI_HEAD}{operation}:{tier}:{tail}", tier, text, readable

    def operation_of(self, key: str) -> str | None:
        """The operation a logical AI key was built for (None for any other key).

        The facade uses it to pick the per-operation TTL when such a key is written.
        """
        if not key.startswith(_AI_HEAD):
            return None
        end = key.find(":", len(_AI_HEAD))
        return key[len(_AI_HEAD):end] if end > len(_AI_HEAD) else None

    def describe(
        self, operation: str, text: str, options: Mapping[str, Any] | None = None, question: str | None = None
    ) -> dict[str, Any]:
        """How a key is built, for the debug/key-generation endpoint.

        Raw text appears only when the config keeps this text readable in the key anyway; otherwise
        only lengths and a digest of the (normalized) text are shown.
        """
        key, tier, normalized, readable = self._build(operation, text, options, question)
        return {
            "key": key,
            "redis_key": self.redis_key(key),
            "operation": operation,
            "namespace": self.namespace,
            "namespace_version": self.namespace_version,
            "key_schema": KEY_SCHEMA,
            "tier": tier,
            "text_length": len(text),
            "normalized_length": len(normalized),
            "normalization_changed_text": normalized != text,
            "normalization": self.config.keys.normalize.model_dump(),
            "text_in_key": readable,
            "text": normalized if readable else None,
            "text_digest": self._digest(_utf8(normalized)),
            "hash_algorithm": self.config.keys.hash_algorithm,
            "options_canonical": canonical_options(options).decode(),
            "question_length": None if question is None else len(question),
        }


_AI_HEAD = f"ai{KEY_SCHEMA}:"
#: Every logical AI key starts with this, then ``{operation}:`` (the facade counts per operation).
AI_KEY_HEAD = _AI_HEAD


def _check_operation(operation: str) -> None:
    if not isinstance(operation, str) or not _OPERATION.match(operation):
        raise ValueError(
            f"operation: {operation!r:.80} is not accepted; accepted: 1 to 64 of A-Z a-z 0-9 _ . -"
        )
