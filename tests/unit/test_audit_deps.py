"""The dependency audit's decisions (.ci/audit_deps.py): what counts as audited, what is a finding."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "audit_deps.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_deps"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


audit_deps = load()


def project(latest: str, *vulns: dict[str, object]) -> dict[str, object]:
    return {"info": {"version": latest}, "vulnerabilities": list(vulns)}


def test_latest_release_without_vulnerabilities_is_audited_clean() -> None:
    assert audit_deps.check_against_project_json("lz4", "4.4.0", project("4.4.0")) == (True, [])


def test_latest_release_with_a_vulnerability_is_a_finding() -> None:
    data = project("2.0.0", {"id": "PYSEC-1", "fixed_in": [], "withdrawn": None})
    audited, findings = audit_deps.check_against_project_json("pkg", "2.0.0", data)
    assert audited
    assert [(f.package, f.version, f.vuln_id) for f in findings] == [("pkg", "2.0.0", "PYSEC-1")]


def test_an_older_release_is_a_finding_only_when_a_fix_above_it_is_listed() -> None:
    data = project("3.0.0", {"id": "GHSA-x", "fixed_in": ["2.5.1"]}, {"id": "GHSA-y", "fixed_in": ["1.0"]})
    audited, findings = audit_deps.check_against_project_json("pkg", "2.5.0", data)
    assert not audited  # older than the latest: the project JSON cannot clear it
    assert [f.vuln_id for f in findings] == ["GHSA-x"]
    assert "fixed in: 2.5.1" in findings[0].line()


def test_withdrawn_vulnerabilities_are_ignored() -> None:
    data = project("1.0", {"id": "PYSEC-2", "fixed_in": [], "withdrawn": "2024-01-01T00:00:00"})
    assert audit_deps.check_against_project_json("pkg", "1.0", data) == (True, [])


def test_names_are_compared_in_normal_form() -> None:
    assert audit_deps.normalize("boolean.py") == "boolean-py"
    assert audit_deps.normalize("Typing_Extensions") == "typing-extensions"


def test_a_non_https_index_is_refused_without_a_request() -> None:
    assert "non-https" in audit_deps.project_json("file:///etc", "x", 1.0)
