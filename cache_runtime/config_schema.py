"""The JSON schema of the engine's ``overrides``, generated from :class:`cache_runtime.config.CacheConfig`:
the CRD's ``spec.overrides`` (cache_operator) and plain JSON Schema validators use it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from cache_runtime.config import RANGES, CacheConfig, group_model

__all__ = ["SCHEMA_EXCLUDED", "overrides_json_schema", "value_schema"]


# Connection and credentials come from the CRD's spec.redis (URL or Secret reference), not overrides.
SCHEMA_EXCLUDED = {
    "preset",
    "redis.url",
    "redis.username",
    "redis.password",
    "redis.tls_ca_file",
    "redis.tls_cert_file",
    "redis.tls_key_file",
}


def overrides_json_schema(
    *, strict: bool = False, exclude: set[str] | frozenset[str] | None = None
) -> dict[str, Any]:
    """The JSON schema of ``overrides`` (every key optional), self-contained (no ``$ref``).

    Nullable values carry ``nullable: true`` (OpenAPI v3 / Kubernetes structural schema style)
    instead of ``anyOf`` with null. ``strict=True`` adds ``additionalProperties: false`` for plain
    JSON Schema validators (Kubernetes rejects it next to ``properties``).
    """
    excluded = SCHEMA_EXCLUDED if exclude is None else set(exclude)
    return _model_schema(CacheConfig, "", excluded, strict)


def _model_schema(
    model: type[BaseModel], prefix: str, excluded: set[str] | frozenset[str], strict: bool
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if path in excluded:
            continue
        sub = group_model(info)
        if sub is not None:
            schema = _model_schema(sub, f"{path}.", excluded, strict)
        else:
            schema = value_schema(info, path)
        schema["description"] = (info.description or "").strip()
        properties[name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if model.__doc__:
        result["description"] = model.__doc__.strip().splitlines()[0]
    if strict:
        result["additionalProperties"] = False
    return result


def value_schema(info: FieldInfo, path: str) -> dict[str, Any]:
    """The JSON schema of one single-value parameter at ``path`` (type, enum, bounds, pattern)."""
    annotation = info.annotation
    args = getattr(annotation, "__args__", None)
    nullable = False
    if args is not None and type(None) in args:
        nullable = True
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0]
    schema: dict[str, Any]
    if getattr(annotation, "__origin__", None) is Literal:
        schema = {"type": "string", "enum": list(annotation.__args__)}  # type: ignore[union-attr]
    elif annotation is bool:
        schema = {"type": "boolean"}
    elif annotation is int:
        schema = {"type": "integer"}
    elif annotation is float:
        schema = {"type": "number"}
    elif annotation is SecretStr:
        schema = {"type": "string", "format": "password"}
    else:
        schema = {"type": "string"}
    if path in RANGES:
        bounds = RANGES[path]
        cast = int if schema["type"] == "integer" else float
        schema["minimum"] = cast(bounds.low)
        schema["maximum"] = cast(bounds.high)
    for meta in info.metadata:
        pattern = getattr(meta, "pattern", None)
        if pattern:
            schema["pattern"] = pattern
        for attr, key in (("min_length", "minLength"), ("max_length", "maxLength")):
            if getattr(meta, attr, None) is not None:
                schema[key] = getattr(meta, attr)
    if nullable:
        schema["nullable"] = True
    return schema
