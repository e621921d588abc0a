"""The generated CRDs: checked-in files match the generator, the schema is structural and described,
and every CEL rule is well-formed and names fields that exist (the API server compiles them for real
in tests/e2e/test_crds.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cache_operator import crdgen
from cache_runtime.config_schema import overrides_json_schema
from cachewarden.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = ("cachepolicies.cachewarden.io.yaml", "cacheincidents.cachewarden.io.yaml")


def test_checked_in_crds_match_the_generator() -> None:
    generated = {name: crdgen.to_yaml(crd) for name, crd in crdgen.all_crds().items()}
    assert sorted(generated) == sorted(CRD_FILES)
    for name, text in generated.items():
        checked_in = (REPO / "crds" / name).read_text(encoding="utf-8")
        assert checked_in == text, (
            f"crds/{name} drifted from the models: run `cachewarden crds --write crds/`")


def test_cli_prints_and_writes_the_crds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["crds"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [doc["metadata"]["name"] for doc in documents] == [
        "cachepolicies.cachewarden.io", "cacheincidents.cachewarden.io"]
    assert cli_main(["crds", "--write", str(tmp_path / "out")]) == 0
    for name in CRD_FILES:
        assert (tmp_path / "out" / name).read_text() == (REPO / "crds" / name).read_text()


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("crd", crdgen.all_crds().values(), ids=lambda crd: crd["spec"]["names"]["kind"])
def test_schema_is_structural_and_described(crd: dict[str, Any]) -> None:
    root = _version(crd)["schema"]["openAPIV3Schema"]
    for path, schema in _walk(root, ""):
        if path in ("", ".metadata"):
            continue
        int_or_string = schema.get("x-kubernetes-int-or-string")
        assert "type" in schema or int_or_string, f"{path}: structural schemas need a type"
        assert "$ref" not in schema and "oneOf" not in schema, f"{path}: not structural"
        if "anyOf" in schema:
            assert int_or_string, f"{path}: anyOf only for int-or-string"
        if not path.endswith(".*") and not path.endswith("[]"):
            assert schema.get("description"), f"{path}: no description (kubectl explain shows nothing)"
        if schema.get("type") == "object" and "properties" in schema:
            assert "additionalProperties" not in schema, f"{path}: properties and additionalProperties"


def test_policy_crd_names_columns_and_subresource() -> None:
    crd = crdgen.cachepolicy_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["cpol"] and names["categories"] == ["cachewarden"]
    version = _version(crd)
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"] if not column.get("priority")]
    assert columns == ["Preset", "Ready", "Pods", "Configured", "Hit Rate", "Redis", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["preset"]["default"] == "production"
    assert spec["runtime"]["properties"]["replicas"] == {
        "type": "integer", "minimum": 0, "maximum": 100, "description": "Number of runtime pods (0..100).",
        "default": 2}
    assert spec["health"]["default"] == {} and spec["remediation"]["default"] == {}
    assert spec["health"]["properties"]["probeIntervalSeconds"]["minimum"] == 5
    assert spec["remediation"]["properties"]["mode"]["enum"] == ["Off", "Recommend", "Auto"]


def test_policy_overrides_schema_comes_from_the_engine() -> None:
    spec = _version(crdgen.cachepolicy_crd())["schema"]["openAPIV3Schema"]["properties"]["spec"]
    overrides = spec["properties"]["overrides"]
    engine = overrides_json_schema()
    assert overrides["properties"] == engine["properties"]
    assert "url" not in overrides["properties"]["redis"]["properties"]
    assert "x-kubernetes-preserve-unknown-fields" not in overrides  # unknown keys are not kept


def test_incident_crd_names_columns_and_immutability() -> None:
    crd = crdgen.cacheincident_crd()
    assert crd["spec"]["names"]["shortNames"] == ["cinc"]
    version = _version(crd)
    columns = [column["name"] for column in version["additionalPrinterColumns"] if not column.get("priority")]
    assert columns == ["Policy", "Action", "Severity", "Phase", "Cause", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"rule": "self == oldSelf", "message": crdgen.INCIDENT_IMMUTABLE_RULE.message} in spec[
        "x-kubernetes-validations"]
    assert spec["required"] == ["policyRef", "action"]


# --- CEL rules: a static check of what the API server would compile ---------------------------------

_SELF_PATH = re.compile(r"\b(self|oldSelf)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_ROOT_METADATA = {"name", "generateName"}


def _rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, schema, rule
    for name, child in (schema.get("properties") or {}).items():
        yield from _rules(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _rules(schema["items"], f"{path}[]")


def _resolve(schema: dict[str, Any], parts: list[str], at: str) -> None:
    node = schema
    for index, part in enumerate(parts):
        if at == "" and index == 1 and parts[0] == "metadata":
            assert part in _ROOT_METADATA, f"root rule may use metadata.name/generateName only, not {part}"
            return
        properties = node.get("properties") or {}
        assert part in properties, f"rule at {at or '<root>'} names {'.'.join(parts)}: no field {part!r}"
        node = properties[part]


def _balanced(rule: str) -> bool:
    depth = 0
    in_string = False
    for char in rule:
        if char == "'":
            in_string = not in_string
        elif not in_string and char in "([":
            depth += 1
        elif not in_string and char in ")]":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not in_string


@pytest.mark.parametrize("crd", crdgen.all_crds().values(), ids=lambda crd: crd["spec"]["names"]["kind"])
def test_every_cel_rule_is_well_formed_and_names_existing_fields(crd: dict[str, Any]) -> None:
    root = _version(crd)["schema"]["openAPIV3Schema"]
    rules = list(_rules(root))
    assert rules, "the CRD should carry CEL rules"
    for at, schema, rule in rules:
        text = rule["rule"]
        assert _balanced(text), f"{at}: unbalanced parentheses or quotes in {text!r}"
        assert rule["message"], f"{at}: a rule needs a message naming the field"
        for match in _SELF_PATH.finditer(text):
            parts = [part for part in match.group(2).split(".") if part]
            # `self.x.matches(...)`, `.startsWith(...)`, `.size()` are functions, not fields.
            while parts and parts[-1] in {"matches", "startsWith", "size", "all", "exists"}:
                parts.pop()
            _resolve(schema, parts, at)
        if "fieldPath" in rule:
            _resolve(schema, [p for p in rule["fieldPath"].split(".") if p], at)


def test_the_cel_checker_catches_a_misspelt_field() -> None:
    schema = {"type": "object", "properties": {"url": {"type": "string"}}}
    with pytest.raises(AssertionError, match="no field 'ulr'"):
        _resolve(schema, ["ulr"], ".spec.redis")
    assert not _balanced("has(self.url")
