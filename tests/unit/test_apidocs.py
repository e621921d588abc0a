"""docs/api-reference.md: generated from the CRDs, complete, and well-formed Markdown.

The checked-in file must equal the generator's output; every leaf field of both CRDs must appear in it
(or, under spec.overrides, in docs/configuration.md, which the reference links to); every CEL rule,
message and printer column must be there; its tables must keep their shape despite the `|` in
patterns and rules; and its links must point at files and headings that exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cache_operator import apidocs, crdgen

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "api-reference.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
OVERRIDES = "spec.overrides"


def _root(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def _leaves(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Dotted paths of the fields with no documented children (an independent walk of the schema)."""
    children = False
    for name, child in (schema.get("properties") or {}).items():
        children = True
        yield from _leaves(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        inner = schema.get(key)
        if isinstance(inner, dict) and inner.get("properties"):
            children = True
            yield from _leaves(inner, f"{path}{suffix}")
    if not children:
        yield path


def _all_leaves() -> list[str]:
    leaves = []
    for crd in crdgen.all_crds().values():
        root = _root(crd)
        for part in ("spec", "status"):
            leaves.extend(_leaves(root["properties"][part], part))
    return leaves


def _missing_leaves(doc: str, configuration: str) -> list[str]:
    missing = []
    for leaf in _all_leaves():
        if leaf.startswith(OVERRIDES + "."):
            # Engine parameters are documented once, in docs/configuration.md, by dotted name.
            if f"`{leaf.removeprefix(OVERRIDES + '.')}`" not in configuration:
                missing.append(leaf)
        elif f"| `{leaf}` |" not in doc:
            missing.append(leaf)
    return missing


def test_checked_in_reference_matches_the_generator() -> None:
    assert DOC.read_text(encoding="utf-8") == apidocs.render_api_reference(), (
        "docs/api-reference.md drifted from the CRDs: regenerate it with "
        "`.venv/bin/python -m cache_operator.apidocs docs/api-reference.md`")


def test_every_leaf_field_of_both_crds_is_documented() -> None:
    leaves = _all_leaves()
    # Both kinds, both halves, and the engine parameters under spec.overrides are all walked.
    for expected in ("spec.redis.tls.caSecretRef.key", "spec.selector.matchExpressions[].operator",
                     "status.health.hitRate", "spec.parameters.maxEntries", "status.results[].counts",
                     "spec.overrides.ttl.default_s", "spec.overrides.keys.tiers.small"):
        assert expected in leaves
    missing = _missing_leaves(DOC.read_text(encoding="utf-8"), CONFIGURATION.read_text(encoding="utf-8"))
    assert missing == [], f"fields missing from the docs: {missing}"


def test_the_leaf_check_notices_a_missing_field() -> None:
    doc = DOC.read_text(encoding="utf-8")
    configuration = CONFIGURATION.read_text(encoding="utf-8")
    without_row = "\n".join(line for line in doc.splitlines()
                            if not line.startswith("| `spec.remediation.stormLimit` |"))
    assert _missing_leaves(without_row, configuration) == ["spec.remediation.stormLimit"]
    without_param = configuration.replace("`stampede.lease_ttl_s`", "`stampede.lease_ttl`")
    assert _missing_leaves(doc, without_param) == ["spec.overrides.stampede.lease_ttl_s"]


def test_overrides_link_to_the_configuration_reference_instead_of_repeating_it() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert "| `spec.overrides` |" in doc
    assert "`spec.overrides.ttl" not in doc, "engine parameters belong to docs/configuration.md"
    assert "](configuration.md#what-each-parameter-does)" in doc


@pytest.mark.parametrize("crd", crdgen.all_crds().values(), ids=lambda crd: crd["spec"]["names"]["kind"])
def test_names_columns_and_rules_are_documented(crd: dict[str, Any]) -> None:
    doc = DOC.read_text(encoding="utf-8")
    names = crd["spec"]["names"]
    kind = names["kind"]
    section = doc.split(f"\n## {kind}\n", 1)[1].split("\n## ", 1)[0]
    for name in names["shortNames"]:
        assert f"| Short names | `{name}` |" in section
    assert f"| Scope | {crd['spec']['scope']} |" in section
    assert f"| Categories | `{names['categories'][0]}`" in section
    (version,) = crd["spec"]["versions"]
    for column in version["additionalPrinterColumns"]:
        assert f"| {column['name']} | {column['type']} | `{column['jsonPath']}` |" in section
    rules = list(apidocs.validation_rules(_root(crd), ""))
    assert rules
    for _at, rule in rules:
        assert f"  {rule['rule']}\n" in section, f"{kind}: CEL rule missing: {rule['rule']}"
        message = rule["message"].replace("<", "&lt;")
        assert message in section, f"{kind}: rule message missing: {rule['message']}"


def _cells(row: str) -> list[str]:
    # A `\|` is a pipe inside a cell; any other `|` separates cells.
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def test_every_table_row_has_as_many_cells_as_its_header() -> None:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    width = 0
    rows = 0
    for previous, line in zip(["", *lines], lines, strict=False):
        if not line.startswith("|"):
            width = 0
            continue
        if not previous.startswith("|"):
            width = len(_cells(line))
            continue
        rows += 1
        assert len(_cells(line)) == width, f"table row has the wrong number of cells: {line}"
    assert rows > 100
    assert len(_cells("| `a\\|b` | c |")) == 2 and len(_cells("| `a|b` | c |")) == 3


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_links_point_at_existing_files_and_headings() -> None:
    doc = DOC.read_text(encoding="utf-8")
    # Patterns and CEL rules contain `](`: drop code blocks and spans, only prose holds links.
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", doc, flags=re.DOTALL))
    links = re.findall(r"\]\(([^)]+)\)", prose)
    targets = {link.split("#", 1)[0] for link in links}
    assert {"runtime-api.md", "configuration.md"} <= targets and len(links) >= 10
    for link in links:
        file_part, _, anchor = link.partition("#")
        text = (DOC.parent / file_part).read_text(encoding="utf-8") if file_part else doc
        if anchor:
            assert anchor in _anchors(text), f"{link}: no such heading"


def test_main_writes_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "api-reference.md"
    assert apidocs.main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == apidocs.render_api_reference()
    assert apidocs.main([]) == 0
    assert capsys.readouterr().out == apidocs.render_api_reference()


def test_bounds_and_types_of_unusual_schemas() -> None:
    assert apidocs.type_name({"type": "object", "x-kubernetes-preserve-unknown-fields": True}) == (
        "object (free-form)")
    assert apidocs.type_name({"type": "array", "items": {"type": "string"}}) == "[]string"
    assert apidocs.type_name({"type": "object", "additionalProperties": {"type": "integer"}}) == (
        "map[string]integer")
    assert apidocs.bounds({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}) == [
        "> 0, ≤ 1"]
    assert apidocs.bounds({"type": "string", "maxLength": 8, "nullable": True}) == [
        "≤ 8 characters", "nullable"]
    assert apidocs.default_text({"default": ["a"]}) == '`["a"]`'
    assert apidocs.default_text({"type": "string"}) == ""
