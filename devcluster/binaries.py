"""Where the local cluster's binaries live, which versions they must report, and how to build them.

The versions are named once, in ``devcluster/versions.env`` (sourced by ``build.sh``, parsed here).
The binaries are built by ``devcluster/build.sh`` into ``$CACHEWARDEN_BIN_DIR`` or
``~/.cache/cachewarden/bin`` (the same rules as the script, so both always agree).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
VERSIONS_FILE = PACKAGE_DIR / "versions.env"
BUILD_SCRIPT = PACKAGE_DIR / "build.sh"
BUILD_COMMAND = "cachewarden dev build  (or: devcluster/build.sh)"

_REQUIRED_VERSION_KEYS = ("KUBERNETES_VERSION", "ETCD_VERSION", "HELM_VERSION")
_VERSION_PATTERN = re.compile(r"^v\d+\.\d+\.\d+$")
_LINE_PATTERN = re.compile(r"^([A-Z][A-Z0-9_]*)=(\S*)$")


class BinariesError(RuntimeError):
    """A binary is missing, reports the wrong version, or could not be built."""


@dataclass(frozen=True)
class PinnedVersions:
    """The versions of ``versions.env``."""

    kubernetes: str
    etcd: str
    helm: str


@dataclass(frozen=True)
class Component:
    """One binary of the local cluster and how to ask it for its version."""

    name: str
    version_args: tuple[str, ...]

    def expected_version_text(self, versions: PinnedVersions) -> str:
        """The text the binary's version output must contain (the same check as build.sh)."""
        if self.name == "etcd":
            return f"etcd Version: {versions.etcd.removeprefix('v')}"
        if self.name == "helm":
            return versions.helm
        return versions.kubernetes


COMPONENTS: tuple[Component, ...] = (
    Component("etcd", ("--version",)),
    Component("kube-apiserver", ("--version",)),
    Component("kube-controller-manager", ("--version",)),
    Component("kubectl", ("version", "--client")),
    Component("helm", ("version", "--short")),
)
COMPONENT_NAMES = tuple(c.name for c in COMPONENTS)


def parse_version_table(text: str, source: str = "versions.env") -> dict[str, str]:
    """Every ``KEY=VALUE`` line (comments and blank lines allowed), each value a version
    ``vMAJOR.MINOR.PATCH``; the fast lane's keys must be there."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_PATTERN.match(line)
        if match is None:
            raise BinariesError(
                f"{source}:{number}: cannot parse {raw!r}; accepted: KEY=VALUE with no spaces or quotes"
            )
        values[match.group(1)] = match.group(2)
    for key in _REQUIRED_VERSION_KEYS:
        if key not in values:
            raise BinariesError(f"{source}: {key} is missing; accepted: {key}=vMAJOR.MINOR.PATCH")
        if not _VERSION_PATTERN.match(values[key]):
            raise BinariesError(
                f"{source}: {key}={values[key]!r} is not a version; accepted: vMAJOR.MINOR.PATCH"
            )
    for key, value in values.items():
        if not _VERSION_PATTERN.match(value):
            raise BinariesError(f"{source}: {key}={value!r} is not a version; accepted: vMAJOR.MINOR.PATCH")
    return values


def parse_versions(text: str, source: str = "versions.env") -> PinnedVersions:
    """Parse ``KEY=VALUE`` lines (comments and blank lines allowed) into the fast lane's pinned versions."""
    values = parse_version_table(text, source)
    return PinnedVersions(
        kubernetes=values["KUBERNETES_VERSION"], etcd=values["ETCD_VERSION"], helm=values["HELM_VERSION"]
    )


def pinned_versions(path: Path = VERSIONS_FILE) -> PinnedVersions:
    """The versions pinned in ``devcluster/versions.env``."""
    return parse_versions(path.read_text(), source=str(path))


def read_version_table(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Every version pinned in ``devcluster/versions.env`` (the real-node lane's too), by key."""
    return parse_version_table(path.read_text(), source=str(path))


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$CACHEWARDEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cachewarden``, else ``~/.cache/cachewarden``."""
    env = os.environ if environ is None else environ
    if env.get("CACHEWARDEN_CACHE_DIR"):
        return Path(env["CACHEWARDEN_CACHE_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cachewarden"


def bin_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The binary directory: ``$CACHEWARDEN_BIN_DIR``, else ``<cache root>/bin`` (as in build.sh)."""
    env = os.environ if environ is None else environ
    if env.get("CACHEWARDEN_BIN_DIR"):
        return Path(env["CACHEWARDEN_BIN_DIR"]).expanduser()
    return cache_root(env) / "bin"


@dataclass(frozen=True)
class BinaryProblem:
    """Why one binary is not usable."""

    component: str
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.component}: {self.reason} ({self.path})"


# (path, size, mtime_ns) -> version output: asking a binary for its version costs ~50-200 ms, and a
# process asks several times (status, fixture, start) for binaries that have not changed.
_version_cache: dict[tuple[str, int, int], str] = {}


def version_output(path: Path, args: tuple[str, ...]) -> str:
    """What ``path args...`` prints (stdout + stderr), cached while the file is unchanged."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _version_cache:
        result = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=30, check=False
        )
        _version_cache[key] = result.stdout + result.stderr
    return _version_cache[key]


def check_binaries(
    directory: Path | None = None, versions: PinnedVersions | None = None
) -> list[BinaryProblem]:
    """Every binary that is missing, not executable or reports another version than pinned."""
    directory = bin_dir() if directory is None else directory
    versions = pinned_versions() if versions is None else versions
    problems: list[BinaryProblem] = []
    for component in COMPONENTS:
        path = directory / component.name
        if not path.is_file():
            problems.append(BinaryProblem(component.name, path, "missing"))
            continue
        if not os.access(path, os.X_OK):
            problems.append(BinaryProblem(component.name, path, "not executable"))
            continue
        want = component.expected_version_text(versions)
        try:
            output = version_output(path, component.version_args)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(BinaryProblem(component.name, path, f"cannot run it: {exc}"))
            continue
        if want not in output:
            first_line = output.strip().splitlines()[0] if output.strip() else "(no output)"
            problems.append(
                BinaryProblem(component.name, path, f"reports {first_line!r}, expected {want!r}")
            )
    return problems


def describe_problems(problems: list[BinaryProblem]) -> str:
    """One message for the user: what is wrong with which binary, and the command that fixes it."""
    lines = [f"devcluster binaries not usable ({len(problems)} of {len(COMPONENTS)}):"]
    lines += [f"  - {problem}" for problem in problems]
    lines.append(f"build them with: {BUILD_COMMAND}")
    return "\n".join(lines)


def binary_path(component: str, directory: Path | None = None) -> Path:
    """The path of one component's binary; an error names the component and the build command."""
    if component not in COMPONENT_NAMES:
        raise BinariesError(f"unknown component {component!r}; accepted: {', '.join(COMPONENT_NAMES)}")
    path = (bin_dir() if directory is None else directory) / component
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BinariesError(
            f"{component} binary not found at {path}; build it with: {BUILD_COMMAND}"
        )
    return path


def run_build_script(
    directory: Path | None = None, progress: Callable[[str], None] | None = None,
    extra_args: tuple[str, ...] = (),
) -> None:
    """Run ``build.sh`` (a cold build takes many minutes), passing each line of its output to
    ``progress`` (default: stderr). It skips binaries that already report the pinned version.
    ``extra_args``: ``("--real-node",)`` also builds the real-node lane's binaries."""
    emit = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    env = dict(os.environ)
    if directory is not None:
        env["CACHEWARDEN_BIN_DIR"] = str(directory)
    process = subprocess.Popen(
        ["bash", str(BUILD_SCRIPT), *extra_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        line = line.rstrip("\n")
        emit(line)
        tail = [*tail[-39:], line]
    code = process.wait()
    if code != 0:
        raise BinariesError(
            f"devcluster/build.sh failed (exit {code}); last lines of its output:\n" + "\n".join(tail)
        )


def ensure_binaries(
    directory: Path | None = None,
    progress: Callable[[str], None] | None = None,
    build: bool = True,
) -> Path:
    """Return the binary directory once every binary reports its pinned version, building the
    missing or outdated ones first (``build=False``: raise instead, naming each problem)."""
    directory = bin_dir() if directory is None else directory
    versions = pinned_versions()
    problems = check_binaries(directory, versions)
    if not problems:
        return directory
    if not build:
        raise BinariesError(describe_problems(problems))
    emit = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    emit(f"devcluster: building {', '.join(p.component for p in problems)} (a cold build takes minutes)")
    run_build_script(directory, emit)
    problems = check_binaries(directory, versions)
    if problems:
        raise BinariesError(describe_problems(problems))
    return directory
