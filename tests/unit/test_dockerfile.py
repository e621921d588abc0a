"""The Dockerfile, read as data: the properties that matter, checked statically against the
repository itself in a second and without a container engine (tests/realnode/test_images.py builds the
image offline on a Debian base and runs it, where a Docker engine is available).

- multi-stage: a builder that builds the wheel, a final stage that copies the venv from it;
- every base image pinned by tag AND sha256 digest;
- the final stage runs as a non-root numeric user, the same one the operator's pods run as;
- no build tools and no package installation in the final stage;
- ENTRYPOINT is the console script pyproject.toml declares;
- every COPY source exists and is let in by .dockerignore (so the build cannot miss a file the wheel
  needs, e.g. a module of a package or its package data);
- the OCI version label is pyproject's version;
- the builder takes pip's offline settings (PIP_NO_INDEX, PIP_FIND_LINKS) as build arguments with no
  default, and needs only ``python3`` from its base (a Debian base made from packages has no ``python``).

The .dockerignore matcher follows Docker's rules (Go filepath.Match per path segment, ``**`` for any
number of segments, a leading ``!`` re-includes, the last matching pattern wins, a pattern that
matches a directory matches everything below it) and is itself tested below on Docker's documented
examples.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from cache_operator import render
from devcluster.realnode import images

REPO = Path(__file__).resolve().parents[2]
DIGEST_PIN = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})"
                        r"@sha256:(?P<digest>[0-9a-f]{64})$")
BUILD_TOOLS = ("gcc", "g++", "clang", "make", "build-essential", "cmake", "cargo", "rustc", "python3-dev",
               "libc6-dev")


# --------------------------------------------------------------------------------------------------
# Dockerfile parsing


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its raw argument text."""

    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of ENTRYPOINT/CMD, or None for the shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    """A build stage: its base image (ARGs substituted), its name and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions of one kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with comments dropped and backslash continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue  # comment lines are removed, also inside a continuation (Docker does the same)
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def substitute(text: str, args: dict[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` replaced by a global ARG's default (what a plain build uses)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return stages


@cache
def stages() -> tuple[Stage, ...]:
    """The repository's Dockerfile, parsed once."""
    return tuple(parse_dockerfile((REPO / "Dockerfile").read_text()))


@cache
def pyproject() -> dict:
    """pyproject.toml."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def copy_sources(instruction: Instruction) -> tuple[list[str], str | None]:
    """The sources of a COPY/ADD and its ``--from`` stage (None for the build context)."""
    words = shlex.split(instruction.args)
    from_stage = None
    plain: list[str] = []
    for word in words:
        if word.startswith("--from="):
            from_stage = word.split("=", 1)[1]
        elif not word.startswith("--"):
            plain.append(word)
    if plain and plain[0].startswith("["):
        plain = json.loads(instruction.args[instruction.args.index("["):])
    return plain[:-1], from_stage


# --------------------------------------------------------------------------------------------------
# .dockerignore (Docker's moby/patternmatcher semantics)


# One matcher for the project: the image build's own (devcluster.realnode.images), which hashes exactly
# the files this matcher lets in.
parse_dockerignore = images.parse_dockerignore
excluded = images.is_excluded


@cache
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """The repository's .dockerignore."""
    return parse_dockerignore((REPO / ".dockerignore").read_text())


@cache
def tracked_files() -> tuple[str, ...]:
    """Files git tracks plus untracked, not ignored ones (what a fresh clone or a working tree has)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return tuple(sorted(line for line in out.splitlines() if (REPO / line).is_file()))


# --------------------------------------------------------------------------------------------------
# the matcher itself, on Docker's documented examples


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*/temp*"], "somedir/temporary.txt", True),
        (["*/temp*"], "temp", False),
        (["*/*/temp*"], "somedir/subdir/temporary.txt", True),
        (["temp?"], "tempa", True),
        (["temp?"], "tempab", False),
        (["**/*.go"], "a/b/c.go", True),
        (["**/*.go"], "c.go", True),
        (["*.md", "!README.md"], "README.md", False),
        (["*.md", "!README.md"], "CHANGES.md", True),
        (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
        (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
        (["tests"], "tests/unit/test_x.py", True),
        (["*", "!src/"], "src/a/b.py", False),
        (["*", "!src/", "**/__pycache__"], "src/a/__pycache__/b.pyc", True),
    ],
)
def test_dockerignore_matcher_follows_docker(patterns: list[str], path: str, expected: bool) -> None:
    """The matcher agrees with the examples of Docker's .dockerignore documentation."""
    assert excluded(path, parse_dockerignore("\n".join(patterns))) is expected


# --------------------------------------------------------------------------------------------------
# the Dockerfile's properties


def test_multi_stage_builder_builds_a_wheel_and_final_copies_the_venv() -> None:
    """Two stages at least; the builder builds a wheel of this repo into a venv; the final stage copies
    that venv from the builder (and nothing is built in it)."""
    all_stages = stages()
    assert len(all_stages) >= 2, "the Dockerfile must be multi-stage"
    builder = next((s for s in all_stages if s.name == "builder"), None)
    assert builder is not None, "a stage named 'builder' is expected"
    builder_runs = " ".join(i.args for i in builder.all("RUN"))
    assert "pip wheel" in builder_runs and "venv" in builder_runs, builder_runs
    final = all_stages[-1]
    venv_copies = [i for i in final.all("COPY") if copy_sources(i)[1] == "builder"]
    assert venv_copies, "the final stage must COPY --from=builder the virtual environment"
    venv = copy_sources(venv_copies[0])[0][0]
    # python3, not python: a Debian base made from packages (the offline build) has no `python`.
    assert re.search(rf"python3 -m venv {re.escape(venv)}\b", builder_runs), (venv, builder_runs)
    env = " ".join(i.args for i in final.all("ENV"))
    assert f"PATH={venv}/bin:" in env, "the venv's bin must lead PATH in the final stage"
    # The service binds 127.0.0.1 unless told otherwise: unreachable through a container's port.
    assert "CACHEWARDEN_BIND_HOST=0.0.0.0" in env, "the final stage must make the runtime listen on 0.0.0.0"


def test_every_base_image_is_pinned_by_tag_and_digest() -> None:
    """Each FROM (after ARG defaults) names an image with a tag and a sha256 digest, not :latest."""
    for stage in stages():
        if stage.base in {s.name for s in stages() if s.name}:
            continue  # FROM an earlier stage
        match = DIGEST_PIN.fullmatch(stage.base)
        assert match, f"FROM {stage.base}: pin it as name:tag@sha256:<64 hex>"
        assert match["tag"] != "latest", stage.base
        assert "python" in match["name"] and "slim" in match["tag"], stage.base
    bases = {s.base for s in stages()}
    assert len(bases) == 1, f"builder and final must share one base (the venv links its python): {bases}"


def test_final_stage_runs_as_non_root_numeric_user_of_the_runtime_pods() -> None:
    """The last USER of the final stage is numeric uid:gid, not 0, and the uid the operator's runtime
    pods run as (runAsNonRoot needs a numeric USER to verify it without reading /etc/passwd)."""
    users = stages()[-1].all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and (not gid or gid.isdigit()), f"USER {users[-1].args}: numeric uid[:gid] required"
    assert int(uid) != 0 and (not gid or int(gid) != 0)
    assert int(uid) == render.RUNTIME_USER_ID


def test_no_build_tools_or_installs_in_the_final_stage() -> None:
    """The final stage installs nothing: no apt/pip/compilers; the whole context is never copied."""
    final = stages()[-1]
    for run in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", run.args))
        assert not words & {"apt-get", "apt", "apk", "pip", "pip3", "dnf", "yum"}, run.args
        assert not words & set(BUILD_TOOLS), run.args
    for instruction in final.all("COPY") + final.all("ADD"):
        sources, from_stage = copy_sources(instruction)
        if from_stage is None:
            assert "." not in sources and "./" not in sources, f"COPY {instruction.args}: copies the context"
    builder_runs = " ".join(i.args for i in stages()[0].all("RUN"))
    assert re.search(r"/opt/cachewarden/bin/pip uninstall --yes pip\b", builder_runs), (
        "pip should not ship in the venv the final stage copies")


def test_builder_smoke_test_imports_real_modules() -> None:
    """The modules the builder imports to prove the venv works exist in this repository (a renamed
    module would otherwise only fail the image build)."""
    builder_runs = " ".join(i.args for i in stages()[0].all("RUN"))
    imported = re.search(r'python -c "import ([^"]+)"', builder_runs)
    assert imported, builder_runs
    for module in (m.strip() for m in imported.group(1).split(",")):
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"{module}: no such module"


def test_entrypoint_is_the_console_script() -> None:
    """ENTRYPOINT (exec form) runs the console script pyproject.toml declares; CMD is a subcommand the
    script knows."""
    scripts = pyproject()["project"]["scripts"]
    final = stages()[-1]
    entrypoint = final.all("ENTRYPOINT")[-1].exec_form()
    assert entrypoint is not None, "ENTRYPOINT must use the exec (JSON) form so signals reach the process"
    assert entrypoint == ["cachewarden"] and entrypoint[0] in scripts, (entrypoint, scripts)
    from cachewarden.cli import COMMANDS

    cmd = final.all("CMD")[-1].exec_form()
    assert cmd and cmd[0] in COMMANDS, cmd


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    """Every COPY from the context names an existing path that .dockerignore lets in, and every file
    the wheel is built from (each package's modules, package data, pyproject's readme) reaches it."""
    rules = ignore_rules()
    files = tracked_files()
    copied: list[str] = []
    for stage in stages():
        for instruction in stage.all("COPY") + stage.all("ADD"):
            sources, from_stage = copy_sources(instruction)
            if from_stage is not None:
                continue
            for source in sources:
                source = source.rstrip("/")
                assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
                assert not excluded(source, rules), f"COPY {source}: excluded by .dockerignore"
                under = [f for f in files if f == source or f.startswith(source + "/")]
                assert under, f"COPY {source}: nothing tracked there"
                for path in under:
                    if path.endswith(".py") or "/" not in path:
                        assert not excluded(path, rules), f"{path}: under COPY {source} but excluded"
                copied.append(source)
    project = pyproject()
    needed = ["pyproject.toml", project["project"]["readme"]]
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed += [p.rstrip("*") for p in packages]
    for package, data in project["tool"]["setuptools"].get("package-data", {}).items():
        needed += [f"{package}/{name}" for name in data]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path}: the wheel needs it"
        assert not excluded(path, rules), f"{path}: the wheel needs it; excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    """Virtual environments, git metadata, tests, caches and bytecode never reach the builder."""
    rules = ignore_rules()
    for path in (".venv/bin/python", ".git/config", "tests/unit/test_dockerfile.py", ".env",
                 "cache_runtime/__pycache__/cache.cpython-311.pyc", "cachewarden.egg-info/PKG-INFO",
                 "examples/quickstart.yaml", ".devcluster/kubeconfig",
                 "examples/sample_app/k8s/deployment.yaml"):
        assert excluded(path, rules), f"{path}: should be excluded from the build context"


def test_labels_carry_pyproject_version_and_license() -> None:
    """OCI labels: the version equals pyproject's, the license its license; source and title set."""
    text = " ".join(i.args for i in stages()[-1].all("LABEL"))
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', text))
    project = pyproject()["project"]
    assert labels.get("org.opencontainers.image.version") == project["version"], labels
    assert labels.get("org.opencontainers.image.licenses") == project["license"], labels
    assert labels.get("org.opencontainers.image.title") == project["name"]
    assert labels.get("org.opencontainers.image.source", "").startswith("https://")
    base = labels.get("org.opencontainers.image.base.name", "")
    assert base and stages()[-1].base.startswith(base + "@sha256:"), (base, stages()[-1].base)


def test_default_runtime_image_is_this_image() -> None:
    """The CachePolicy default runtime image is this image at pyproject's version (the tag a release
    pushes, docs/image.md)."""
    from cache_operator.api.cachepolicy import DEFAULT_IMAGE

    repository, _, tag = DEFAULT_IMAGE.rpartition(":")
    assert repository == "ghcr.io/cachewarden/cachewarden"
    assert tag == pyproject()["project"]["version"]


def test_builder_context_builds_a_complete_wheel(tmp_path: Path) -> None:
    """What the builder stage sees (its COPY sources, filtered by .dockerignore) builds a wheel with
    every package, the package data and the console script: the builder's `pip wheel` step, run
    here without the image (setuptools from this venv instead of an isolated build env)."""
    rules = ignore_rules()
    builder = next(s for s in stages() if s.name == "builder")
    context = tmp_path / "context"
    for instruction in builder.all("COPY"):
        sources, from_stage = copy_sources(instruction)
        assert from_stage is None
        for source in sources:
            prefix = source.rstrip("/") + "/"
            for path in tracked_files():
                if (path == source or path.startswith(prefix)) and not excluded(path, rules):
                    target = context / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / path, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                   check=True, capture_output=True, text=True, timeout=240)
    wheel = next((tmp_path / "wheels").glob("cachewarden-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("cache_runtime", "cache_operator", "devcluster", "cachewarden"):
        modules = {p for p in tracked_files() if p.startswith(package + "/") and p.endswith(".py")}
        missing = sorted(modules - names)
        assert modules and not missing, f"{package}: missing from the wheel: {missing[:5]}"
    for package, data in pyproject()["tool"]["setuptools"].get("package-data", {}).items():
        for name in data:
            if "*" not in name:
                assert f"{package}/{name}" in names
                continue
            # A glob (setuptools' `**` spans directories, as fnmatch's `*` does): every file it matches
            # ships, and it matches something.
            pattern = f"{package}/{name}".replace("**/", "")
            matched = [f for f in tracked_files()
                       if fnmatch.fnmatchcase(f, pattern) and "__pycache__" not in f]
            assert matched, f"package-data {name!r} of {package} matches no file"
            missing = sorted(set(matched) - names)
            assert not missing, f"package-data {name!r}: missing from the wheel: {missing[:5]}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "cachewarden = cachewarden.cli:main" in text, text


def test_builder_takes_offline_pip_arguments_unset_by_default() -> None:
    """The offline build (devcluster/realnode/images.py, docs/image.md) hands pip a wheelhouse through
    build arguments of the builder stage. They are declared without a default: a build with internet
    uses PyPI unchanged (an empty PIP_NO_INDEX would even make pip fail). Every pip call goes through the
    venv's pip, because a Debian base made from packages has python3 without a pip module."""
    builder = next(s for s in stages() if s.name == "builder")
    declared = {i.args.split("=", 1)[0].strip(): "=" in i.args for i in builder.all("ARG")}
    for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_INDEX_URL"):
        assert name in declared, f"ARG {name} missing from the builder stage"
        assert not declared[name], f"ARG {name} must have no default"
    assert not any(i.args.startswith("PIP_") for i in stages()[-1].all("ARG")), "pip runs only in the builder"
    builder_runs = " ".join(i.args for i in builder.all("RUN"))
    assert "python -m pip" not in builder_runs and "python3 -m pip" not in builder_runs, builder_runs
    assert "/opt/cachewarden/bin/pip wheel" in builder_runs, builder_runs

    # The offline build (images.ensure_app_image) sets PYTHON_IMAGE, a global ARG, to its Debian base.
    lines = logical_lines((REPO / "Dockerfile").read_text())
    assert "FROM ${PYTHON_IMAGE} AS builder" in lines and "FROM ${PYTHON_IMAGE} AS final" in lines
    name = pyproject()["project"]["name"]
    assert f"{name}/{name}" == images.APP_REPOSITORY
