"""Dependency audit of the installed virtual environment: ``pip-audit``, plus a fallback where its
vulnerability service cannot be reached.

``pip-audit`` (PyPI's vulnerability data, its default ``pypi`` service) asks
``/pypi/<name>/<version>/json`` for every installed distribution. Where that endpoint is not served
(a PyPI mirror or proxy that carries only the project-level JSON, as on our CI machines, which reach
nothing but the package registries) pip-audit *skips* the package and still says "No known
vulnerabilities found": green while auditing nothing. So this script:

1. runs ``pip-audit --format json`` on the venv (editable installs, i.e. cachewarden itself, skipped);
2. for every package pip-audit skipped, reads the project-level ``/pypi/<name>/json``: its
   ``vulnerabilities`` list describes the *latest* release, so it is a real audit for a package whose
   installed version is the latest one, and for any other package only when a listed vulnerability
   names a ``fixed_in`` version above the installed one (a finding all the same);
3. fails (exit 1) on any finding, from either source, printing package, version, id and fix;
4. otherwise exits 0, saying exactly how many packages were audited by which source and naming the
   ones that could not be audited (older than their latest release, or PyPI unreachable): a degraded
   audit is reported as such, never as a clean one, and never fails CI for network reasons. Exit 2
   only when pip-audit is not installed (a setup error).

Usage: ``python .ci/audit_deps.py [--pip-audit PATH] [--index https://pypi.org/pypi] [--timeout 15]``
"""

from __future__ import annotations

import argparse
import json
import re

# bandit B404/B603: subprocess runs pip-audit with a fixed argv, never a shell.
import subprocess  # nosec B404
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

DEFAULT_INDEX = "https://pypi.org/pypi"


@dataclass
class Finding:
    """One known vulnerability of one installed package."""

    package: str
    version: str
    vuln_id: str
    fixed_in: list[str]
    source: str

    def line(self) -> str:
        """A one-line description for the report."""
        fix = ", ".join(self.fixed_in) or "no fixed release listed"
        return f"{self.package} {self.version}: {self.vuln_id} (fixed in: {fix}) [{self.source}]"


@dataclass
class Report:
    """What the audit found and how much of the environment it covered."""

    total: int = 0
    by_pip_audit: list[str] = field(default_factory=list)
    by_project_json: list[str] = field(default_factory=list)
    not_audited: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def _version_key(version: str) -> tuple[Any, ...]:
    """A sort key for release versions (packaging's Version when available, else numeric parts)."""
    try:
        from packaging.version import Version

        return (0, Version(version))
    except Exception:
        parts = []
        for piece in version.replace("-", ".").split("."):
            parts.append(int(piece) if piece.isdigit() else 0)
        return (1, tuple(parts))


def normalize(name: str) -> str:
    """A distribution name in PEP 503 normal form (``boolean.py`` -> ``boolean-py``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """Installed distribution name (lower-case, ``_`` as ``-``) -> version, for this interpreter."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"] or "")
        if name:
            versions[name] = dist.version
    return versions


def run_pip_audit(pip_audit: str) -> dict[str, Any]:
    """pip-audit's JSON report of the current environment (exit 1 = findings, still a report)."""
    argv = [pip_audit, "--format", "json", "--progress-spinner", "off", "--skip-editable"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)  # nosec B603
    if result.returncode not in (0, 1):
        raise RuntimeError(f"pip-audit exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        detail = result.stderr.strip()[-2000:]
        raise RuntimeError(f"pip-audit printed no JSON report ({exc}): {detail}") from exc


def project_json(index: str, name: str, timeout: float) -> dict[str, Any] | str:
    """PyPI's project-level JSON for ``name``, or a string saying why it could not be read."""
    url = f"{index.rstrip('/')}/{name}/json"
    if not url.startswith("https://"):
        return f"refusing a non-https index URL {url!r}"
    try:
        # bandit B310: the URL is checked to be https above (no file: or custom schemes).
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310
            return json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
        return f"{url}: {exc}"


def check_against_project_json(name: str, version: str, data: dict[str, Any]) -> tuple[bool, list[Finding]]:
    """(audited, findings) for one package from its project JSON (see the module docstring)."""
    latest = str((data.get("info") or {}).get("version") or "")
    findings = []
    for vuln in data.get("vulnerabilities") or []:
        if vuln.get("withdrawn"):
            continue
        fixed = [str(v) for v in vuln.get("fixed_in") or []]
        applies_to_latest = version == latest
        fixed_above_ours = any(_version_key(v) > _version_key(version) for v in fixed)
        if applies_to_latest or fixed_above_ours:
            findings.append(Finding(name, version, str(vuln.get("id") or vuln.get("aliases") or "?"), fixed,
                                    "PyPI project JSON"))
    return version == latest, findings


def audit(pip_audit: str, index: str, timeout: float) -> Report:
    """Run pip-audit, then the project-JSON fallback for what it skipped."""
    report = Report()
    versions = installed_versions()
    try:
        raw = run_pip_audit(pip_audit)
    except RuntimeError as exc:
        # No report at all (e.g. no network): every package goes to the fallback, which says what it
        # could not reach. A missing pip-audit executable (OSError) is a setup error and propagates.
        last = str(exc).strip().splitlines()[-1:] or [""]
        print(f"audit: pip-audit gave no report ({last[0][:300]}); falling back to PyPI's project JSON")
        raw = {"dependencies": [{"name": name, "skip_reason": "pip-audit gave no report"}
                                for name in sorted(versions) if name != "cachewarden"]}
    skipped: list[tuple[str, str]] = []
    for dep in raw.get("dependencies") or []:
        name = normalize(str(dep.get("name", "")))
        report.total += 1
        if "skip_reason" in dep:
            skipped.append((name, str(dep["skip_reason"])))
            continue
        report.by_pip_audit.append(name)
        for vuln in dep.get("vulns") or []:
            report.findings.append(Finding(name, str(dep.get("version")), str(vuln.get("id")),
                                           [str(v) for v in vuln.get("fix_versions") or []], "pip-audit"))
    editable = [(name, reason) for name, reason in skipped if "editable" in reason.lower()]
    candidates = [(name, reason) for name, reason in skipped if (name, reason) not in editable]
    report.total -= len(editable)

    def fetch(item: tuple[str, str]) -> tuple[str, str, dict[str, Any] | str]:
        name, reason = item
        return name, reason, project_json(index, name, timeout)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for name, reason, data in pool.map(fetch, candidates):
            version = versions.get(name)
            if version is None:
                report.not_audited[name] = f"{reason}; not found in this environment's metadata"
                continue
            if isinstance(data, str):
                report.not_audited[name] = f"{version}: pip-audit: {reason}; fallback: {data}"
                continue
            audited, findings = check_against_project_json(name, version, data)
            report.findings.extend(findings)
            if audited:
                report.by_project_json.append(name)
            elif not findings:
                latest = (data.get("info") or {}).get("version")
                report.not_audited[name] = (f"{version} is older than the latest release {latest}; PyPI's "
                                            "per-version vulnerability data was not reachable")
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the audit and print the report; exit 1 on findings, 0 otherwise (degraded runs say so)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pip-audit", default=str(Path(sys.executable).parent / "pip-audit"),
                        help="the pip-audit executable (default: next to this interpreter)")
    parser.add_argument("--index", default=DEFAULT_INDEX, help="PyPI JSON API base URL (https)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per PyPI request")
    args = parser.parse_args(argv)
    try:
        report = audit(args.pip_audit, args.index, args.timeout)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"audit: pip-audit could not run: {exc}", file=sys.stderr)
        return 2
    for finding in report.findings:
        print(f"audit: VULNERABLE {finding.line()}")
    covered = len(report.by_pip_audit) + len(report.by_project_json)
    print(f"audit: {report.total} installed packages (editable cachewarden itself excluded): "
          f"{len(report.by_pip_audit)} audited by pip-audit, {len(report.by_project_json)} by PyPI's "
          f"project JSON (installed = latest release), {len(report.not_audited)} not audited")
    if report.not_audited:
        print("audit: DEGRADED: the vulnerability data for these packages could not be read, so they are "
              "NOT known to be clean:")
        for name, why in sorted(report.not_audited.items()):
            print(f"audit:   {name}: {why}")
    if report.findings:
        print(f"audit: FAILED: {len(report.findings)} known vulnerabilities")
        return 1
    print(f"audit: no known vulnerabilities in the {covered} audited packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
