"""The real-node lane's images, built on this machine without a container registry.

Three images, each tagged with a hash of its inputs and built only when no image with that tag exists:

- ``cachewarden/python-base:<suite>-<hash>``: Debian ``<suite>`` made by ``mmdebstrap --variant=minbase``
  with python3, python3-venv and ca-certificates, ``docker import``-ed. The suite and every installed
  package's version are recorded in ``/usr/share/cachewarden/manifest.txt`` inside the image, in its
  labels, and in a second tag ``<suite>-m<hash of the manifest>``.
- ``cachewarden/redis:<suite>-<hash>``: the same recipe with Debian's redis-server (user ``redis``, uid
  999 like the official image), foreground, no persistence, config ``recipes/redis.conf``.
- ``cachewarden/cachewarden:local-<hash>``: the repository's ``Dockerfile`` built by the classic builder on
  the base (``PYTHON_IMAGE``), its Python dependencies installed from a wheelhouse that ``pip download``
  fills on the host (for the base's Python, glibc and architecture) and that a loopback HTTP server
  serves to the build (``--network host``, ``PIP_NO_INDEX``, ``PIP_FIND_LINKS``): no registry, no index.

:func:`ensure_rootfs_image` is the reusable mmdebstrap → docker import step (suite, packages, optional
setup hook → tag); :func:`ensure_images` builds all three and is what the real-node lane calls.
``python -m devcluster.realnode.images`` builds them and prints tags, sizes and times.

The pure parts (recipes, input hashes, tags, the mmdebstrap and pip command lines, the manifest format,
``.dockerignore`` matching) take data and return data; the functions that run mmdebstrap, pip and docker
are kept apart below them. Everything built lives under ``<cache root>/realnode`` or in the engine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import http.server
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devcluster.realnode import docker
from devcluster.realnode.docker import DockerError

REPO = Path(__file__).resolve().parents[2]
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

# Bump when the build procedure changes in a way the recipe fields do not show (tar flags, manifest
# format): every tag changes and the images are rebuilt.
RECIPE_FORMAT = "1"

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
PYTHON_BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
REDIS_PACKAGES = ("redis-server",)
REDIS_UID = 999  # the official redis image's user; examples/quickstart.yaml runs Redis as 999:999
MANIFEST_PATH = "/usr/share/cachewarden/manifest.txt"
LABEL_PREFIX = "io.cachewarden"
APP_REPOSITORY = "cachewarden/cachewarden"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Documentation, man pages and translations are not installed (the copyright files are): the images
# run services, nobody reads manuals in them.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)

_SUITE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_PACKAGE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]+)(?:=(?P<version>[A-Za-z0-9.+~:-]+))?$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_IMAGE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")


class ImageError(ValueError):
    """A recipe, a manifest or another input of an image build is invalid (names the field and value)."""


# --------------------------------------------------------------------------------------------------
# Recipes of root file system images (pure)


@dataclass(frozen=True)
class RootfsRecipe:
    """What ``mmdebstrap`` installs and how ``docker import`` turns it into an image.

    ``customize_hooks`` are mmdebstrap ``--customize-hook`` shell commands (``$1`` is the root
    directory) and ``essential_hooks`` run after the Essential packages, before the rest (to create a
    user with a fixed uid before a package's maintainer script makes one). ``files`` are written into
    the root (absolute path, content, mode). ``changes`` are the Dockerfile instructions ``docker
    import --change`` applies (ENV, USER, ENTRYPOINT...). ``extra_inputs`` name whatever a Python setup
    hook passed to :func:`ensure_rootfs_image` adds (versions, checksums): they are part of the tag, so a
    different hook result gets a different image.
    """

    repository: str
    suite: str
    packages: tuple[str, ...]
    variant: str = "minbase"
    architecture: str = "amd64"
    mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR
    components: tuple[str, ...] = ("main",)
    dpkg_options: tuple[str, ...] = DPKG_OPTIONS
    essential_hooks: tuple[str, ...] = ()
    customize_hooks: tuple[str, ...] = ()
    files: tuple[tuple[str, bytes, int], ...] = ()
    changes: tuple[str, ...] = ()
    extra_inputs: tuple[str, ...] = ()


def validate_recipe(recipe: RootfsRecipe) -> None:
    """Raise :class:`ImageError` naming the field, the value and what is accepted."""
    if not _REPOSITORY.match(recipe.repository):
        raise ImageError(f"repository: {recipe.repository!r} is not a docker repository name; accepted: "
                         "lower-case letters, digits, '.', '_', '-' and '/' separated parts")
    if not _SUITE.match(recipe.suite):
        raise ImageError(f"suite: {recipe.suite!r} is not a Debian suite name; accepted: a code name "
                         "such as 'bookworm' or 'trixie'")
    if recipe.variant not in {"minbase", "buildd", "required", "important", "standard", "apt"}:
        raise ImageError(f"variant: {recipe.variant!r}; accepted: minbase, buildd, required, important, "
                         "standard, apt")
    if not recipe.packages:
        raise ImageError("packages: empty; name at least one Debian package")
    for package in recipe.packages:
        if not _PACKAGE.match(package):
            raise ImageError(f"packages: {package!r} is not a Debian package name; accepted: 'name' or "
                             "'name=version' (lower-case letters, digits, '+', '-', '.')")
    for path, _content, mode in recipe.files:
        if not _IMAGE_PATH.match(path) or ".." in path.split("/"):
            raise ImageError(f"files: {path!r} is not an absolute path inside the image")
        if not 0 <= mode <= 0o7777:
            raise ImageError(f"files: mode {mode:o} of {path} is not a file mode")
    for change in recipe.changes:
        keyword = change.split(" ", 1)[0]
        if keyword not in {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
                           "VOLUME", "WORKDIR"}:
            raise ImageError(f"changes: {change!r}: docker import accepts only CMD, ENTRYPOINT, ENV, "
                             "EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR")


def apt_sources(recipe: RootfsRecipe) -> tuple[str, ...]:
    """The one-line apt sources mmdebstrap uses: the suite, its updates and its security updates."""
    components = " ".join(recipe.components)
    return (
        f"deb {recipe.mirror} {recipe.suite} {components}",
        f"deb {recipe.mirror} {recipe.suite}-updates {components}",
        f"deb {recipe.security_mirror} {recipe.suite}-security {components}",
    )


def recipe_digest(recipe: RootfsRecipe) -> str:
    """sha256 (hex) of everything that decides the image: the recipe's fields and the format version."""
    validate_recipe(recipe)
    digest = hashlib.sha256()

    def add(label: str, *values: str | bytes) -> None:
        for value in values:
            data = value.encode() if isinstance(value, str) else value
            digest.update(f"{label}:{len(data)}:".encode())
            digest.update(data)

    add("format", RECIPE_FORMAT)
    add("repository", recipe.repository)
    add("suite", recipe.suite)
    add("variant", recipe.variant)
    add("architecture", recipe.architecture)
    add("sources", *apt_sources(recipe))
    add("packages", *sorted(recipe.packages))
    add("dpkg", *recipe.dpkg_options)
    add("essential-hooks", *recipe.essential_hooks)
    add("customize-hooks", *recipe.customize_hooks)
    for path, content, mode in sorted(recipe.files):
        add("file", path, content, f"{mode:o}")
    add("changes", *recipe.changes)
    add("extra", *recipe.extra_inputs)
    return digest.hexdigest()


def rootfs_tag(recipe: RootfsRecipe) -> str:
    """``<repository>:<suite>-<12 hex digits of the recipe digest>``."""
    return f"{recipe.repository}:{recipe.suite}-{recipe_digest(recipe)[:12]}"


def mmdebstrap_command(recipe: RootfsRecipe, target: Path) -> list[str]:
    """The mmdebstrap command line that builds ``recipe``'s root file system into directory ``target``."""
    validate_recipe(recipe)
    command = ["mmdebstrap", f"--variant={recipe.variant}", f"--architectures={recipe.architecture}",
               f"--include={','.join(recipe.packages)}"]
    command += [f"--dpkgopt={option}" for option in recipe.dpkg_options]
    command += [f"--essential-hook={hook}" for hook in recipe.essential_hooks]
    command += [f"--customize-hook={hook}" for hook in recipe.customize_hooks]
    command += [recipe.suite, str(target), *apt_sources(recipe)]
    return command


def import_changes(recipe: RootfsRecipe, labels: Mapping[str, str]) -> list[str]:
    """The ``docker import --change`` arguments: the recipe's changes and one LABEL per label."""
    args: list[str] = []
    for change in recipe.changes:
        args += ["--change", change]
    for key, value in sorted(labels.items()):
        args += ["--change", f"LABEL {key}={_quote_label(value)}"]
    return args


def _quote_label(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------------
# The manifest: suite and installed packages (pure)


@dataclass(frozen=True)
class Manifest:
    """The record of a root file system: its recipe, suite and every installed package's version."""

    repository: str
    suite: str
    variant: str
    architecture: str
    sources: tuple[str, ...]
    requested: tuple[str, ...]
    packages: Mapping[str, str] = field(default_factory=dict)
    recipe_sha256: str = ""
    """The recipe's digest: two recipes that install the same packages (a different setup hook or
    files) still get different manifests and manifest tags. Empty in manifests written before it."""

    def version(self, package: str) -> str:
        """The installed version of ``package``; :class:`ImageError` if it is not installed."""
        try:
            return self.packages[package]
        except KeyError:
            raise ImageError(f"manifest of {self.repository}: package {package!r} is not installed") from None


def parse_dpkg_status(text: str) -> dict[str, str]:
    """``{package: version}`` of the installed packages in a ``/var/lib/dpkg/status`` file."""
    installed: dict[str, str] = {}
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            installed[fields["Package"]] = fields.get("Version", "")
    return installed


def render_manifest(recipe: RootfsRecipe, packages: Mapping[str, str]) -> str:
    """The manifest text written into the image (no timestamps: same packages, same text)."""
    lines = ["# cachewarden image manifest: the Debian suite and every installed package (dpkg)",
             f"repository\t{recipe.repository}", f"recipe-sha256\t{recipe_digest(recipe)}",
             f"suite\t{recipe.suite}", f"variant\t{recipe.variant}",
             f"architecture\t{recipe.architecture}"]
    lines += [f"source\t{source}" for source in apt_sources(recipe)]
    lines += [f"requested\t{package}" for package in recipe.packages]
    lines += [f"package\t{name}\t{version}" for name, version in sorted(packages.items())]
    return "\n".join(lines) + "\n"


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse :func:`render_manifest`'s text; :class:`ImageError` names the line and field if it is bad."""
    single: dict[str, str] = {}
    sources: list[str] = []
    requested: list[str] = []
    packages: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        parts = raw.split("\t")
        key = parts[0]
        if key == "package":
            if len(parts) != 3 or not _PACKAGE.match(parts[1]) or not parts[2]:
                raise ImageError(f"{source}:{number}: package line {raw!r}; accepted: "
                                 "'package<TAB>name<TAB>version'")
            packages[parts[1]] = parts[2]
        elif key in {"source", "requested"}:
            if len(parts) != 2 or not parts[1]:
                raise ImageError(f"{source}:{number}: {key} line {raw!r}; accepted: '{key}<TAB>value'")
            (sources if key == "source" else requested).append(parts[1])
        elif key in {"repository", "recipe-sha256", "suite", "variant", "architecture"}:
            if len(parts) != 2 or not parts[1]:
                raise ImageError(f"{source}:{number}: {key} line {raw!r}; accepted: '{key}<TAB>value'")
            single[key] = parts[1]
        else:
            raise ImageError(f"{source}:{number}: unknown field {key!r}; accepted: repository, "
                             "recipe-sha256, suite, variant, architecture, source, requested, package")
    for key in ("repository", "suite", "variant", "architecture"):
        if key not in single:
            raise ImageError(f"{source}: no {key!r} line")
    if not packages:
        raise ImageError(f"{source}: no package lines")
    for package in requested:
        name = package.split("=", 1)[0]
        if name not in packages:
            raise ImageError(f"{source}: requested package {name!r} is not among the installed packages")
    return Manifest(repository=single["repository"], suite=single["suite"], variant=single["variant"],
                    architecture=single["architecture"], sources=tuple(sources), requested=tuple(requested),
                    packages=packages, recipe_sha256=single.get("recipe-sha256", ""))


def manifest_digest(text: str) -> str:
    """sha256 (hex) of a manifest's text."""
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_tag(manifest: Manifest, text: str) -> str:
    """The second tag of a root file system image, derived from what was actually installed:
    ``<repository>:<suite>-m<12 hex digits of the manifest's sha256>``."""
    return f"{manifest.repository}:{manifest.suite}-m{manifest_digest(text)[:12]}"


def manifest_labels(manifest: Manifest, text: str, recipe_sha: str) -> dict[str, str]:
    """The image labels derived from the manifest: suite, digests, package count and the version of
    every requested package."""
    labels = {
        f"{LABEL_PREFIX}.suite": manifest.suite,
        f"{LABEL_PREFIX}.recipe-sha256": recipe_sha,
        f"{LABEL_PREFIX}.manifest": MANIFEST_PATH,
        f"{LABEL_PREFIX}.manifest-sha256": manifest_digest(text),
        f"{LABEL_PREFIX}.package-count": str(len(manifest.packages)),
    }
    for package in manifest.requested:
        name = package.split("=", 1)[0]
        labels[f"{LABEL_PREFIX}.package.{name}"] = manifest.version(name)
    return labels


# --------------------------------------------------------------------------------------------------
# The two root file system recipes of this project (pure)


def python_base_recipe(suite: str = DEFAULT_SUITE, architecture: str = "amd64") -> RootfsRecipe:
    """Debian minbase with python3, python3-venv (the Dockerfile's builder makes a venv) and
    ca-certificates (rediss:// and the Kubernetes API over TLS); no compiler."""
    return RootfsRecipe(
        repository="cachewarden/python-base", suite=suite, architecture=architecture,
        packages=PYTHON_BASE_PACKAGES,
        changes=(f"ENV PATH={DEFAULT_PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'),
    )


def redis_recipe(suite: str = DEFAULT_SUITE, architecture: str = "amd64",
                 recipes_dir: Path = RECIPES_DIR) -> RootfsRecipe:
    """Debian minbase with redis-server running as ``redis`` (uid/gid 999, made before the package's
    maintainer script so it keeps that id), config ``recipes/redis.conf``, entry point
    ``recipes/redis-entrypoint``."""
    uid = REDIS_UID
    make_user = (
        f"echo 'redis:x:{uid}:{uid}:Redis:/var/lib/redis:/usr/sbin/nologin' >> \"$1/etc/passwd\" && "
        f"echo 'redis:x:{uid}:' >> \"$1/etc/group\" && "
        f"if [ -e \"$1/etc/shadow\" ]; then echo 'redis:*:19000:0:99999:7:::' >> \"$1/etc/shadow\"; fi && "
        f"if [ -e \"$1/etc/gshadow\" ]; then echo 'redis:!::' >> \"$1/etc/gshadow\"; fi"
    )
    return RootfsRecipe(
        repository="cachewarden/redis", suite=suite, architecture=architecture, packages=REDIS_PACKAGES,
        essential_hooks=(make_user,),
        files=(("/etc/redis/cachewarden.conf", (recipes_dir / "redis.conf").read_bytes(), 0o644),
               ("/usr/local/bin/redis-entrypoint", (recipes_dir / "redis-entrypoint").read_bytes(), 0o755)),
        changes=(f"ENV PATH={DEFAULT_PATH}", "ENV LANG=C.UTF-8", f"USER {uid}:{uid}",
                 "WORKDIR /var/lib/redis", "EXPOSE 6379",
                 'ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]', 'CMD ["redis-server"]'),
    )


# --------------------------------------------------------------------------------------------------
# The application image's inputs (pure, apart from reading the files it is given)


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """``(is_exception, regex)`` per ``.dockerignore`` pattern, in order (Docker's rules: Go
    ``filepath.Match`` per segment, ``**`` any number of segments, ``!`` re-includes, last match wins)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:].strip() if exception else line
        pattern = posixpath.normpath("/" + pattern).lstrip("/")
        rules.append((exception, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        char = pattern[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out


def is_excluded(path: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``path`` (relative, '/'-separated) stays out of the build context: a pattern matches the
    path or one of its parent directories; the last matching pattern decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not exception
    return result


def _may_reinclude(directory: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether an exception pattern could let in something below an excluded ``directory`` (as Docker
    does, an excluded directory is only walked when one could)."""
    for exception, regex in rules:
        if not exception:
            continue
        literal = re.match(r"^(?:[^\\\[\](){}.*+?^$|]|\\.)*", regex.pattern)
        prefix = re.sub(r"\\(.)", r"\1", literal.group(0)) if literal else ""
        if prefix.startswith(directory + "/") or (directory + "/").startswith(prefix) or not prefix:
            return True
    return False


def context_files(root: Path, dockerignore_text: str) -> list[str]:
    """The files of the build context: every file under ``root`` that ``.dockerignore`` lets in,
    relative and sorted (``.git`` is never walked)."""
    rules = parse_dockerignore(dockerignore_text)
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        relative_dir = Path(directory).relative_to(root).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        keep = []
        for name in sorted(dirnames):
            path = prefix + name
            if name == ".git" and not prefix:
                continue
            if is_excluded(path, rules) and not _may_reinclude(path, rules):
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = prefix + name
            if not is_excluded(path, rules) and not os.path.islink(os.path.join(directory, name)):
                found.append(path)
    return sorted(found)


def app_inputs_digest(files: Mapping[str, bytes], build_args: Mapping[str, str],
                      wheels: Sequence[str]) -> str:
    """sha256 (hex) of the app image's inputs: the build context's files (Dockerfile and
    .dockerignore included), the build arguments that shape the image (the base's tag among them)
    and the names of the wheels the build installs (name and version are in each wheel's name)."""
    digest = hashlib.sha256()
    digest.update(f"format:{RECIPE_FORMAT}\n".encode())
    for path in sorted(files):
        digest.update(f"file:{path}:{hashlib.sha256(files[path]).hexdigest()}\n".encode())
    for key in sorted(build_args):
        digest.update(f"arg:{key}={build_args[key]}\n".encode())
    for wheel in sorted(wheels):
        digest.update(f"wheel:{wheel}\n".encode())
    return digest.hexdigest()


def app_tag(inputs_digest: str) -> str:
    """``cachewarden/cachewarden:local-<12 hex digits of the inputs digest>``."""
    if not re.fullmatch(r"[0-9a-f]{12,64}", inputs_digest):
        raise ImageError(f"inputs digest: {inputs_digest!r} is not a hex sha256")
    return f"{APP_REPOSITORY}:local-{inputs_digest[:12]}"


# --------------------------------------------------------------------------------------------------
# The wheelhouse: what the Dockerfile's pip installs, downloaded once by the base's own pip (pure)


@dataclass(frozen=True)
class WheelTarget:
    """The interpreter and machine the wheels are for, read from the base image's manifest (names the
    wheelhouse; the download itself runs on the base, so pip sees the real interpreter)."""

    python_version: str   # "3.11"
    machine: str          # "x86_64"

    @property
    def abi(self) -> str:
        """The CPython ABI tag (``cp311``)."""
        return "cp" + self.python_version.replace(".", "")


_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def wheel_target(manifest: Manifest) -> WheelTarget:
    """The wheel target of a base: Python from the ``python3`` package (``3.11.2-1+b1`` → 3.11), the
    machine from the architecture."""
    python = re.match(r"^(?:\d+:)?(\d+)\.(\d+)", manifest.version("python3"))
    if python is None:
        raise ImageError(f"manifest: python3 version {manifest.version('python3')!r} has no X.Y")
    if manifest.architecture not in _MACHINES:
        raise ImageError(f"manifest: architecture {manifest.architecture!r}; accepted: "
                         f"{', '.join(sorted(_MACHINES))}")
    return WheelTarget(python_version=f"{python.group(1)}.{python.group(2)}",
                       machine=_MACHINES[manifest.architecture])


def wheelhouse_requirements(pyproject_text: str) -> tuple[str, ...]:
    """What the Dockerfile's pip needs: the build system's requirements (``pip wheel .`` builds the
    cachewarden wheel in an isolated environment) and the project's dependencies."""
    data = tomllib.loads(pyproject_text)
    try:
        build = data["build-system"]["requires"]
        dependencies = data["project"]["dependencies"]
    except KeyError as exc:
        raise ImageError(f"pyproject.toml: no {exc.args[0]!r} table or key") from None
    return tuple(build) + tuple(dependencies)


def wheelhouse_digest(requirements: Sequence[str], base_manifest_sha: str) -> str:
    """sha256 (hex) naming one wheelhouse: the requirements and the exact base (its manifest's digest,
    which covers the interpreter's version)."""
    text = "\n".join([f"format:{RECIPE_FORMAT}", base_manifest_sha, *requirements])
    return hashlib.sha256(text.encode()).hexdigest()


CONTAINER_CA_BUNDLE = "/etc/ssl/certs/host-ca-certificates.crt"
_PASSED_PIP_SETTINGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "PIP_TRUSTED_HOST")


def pip_download_command(base: str, requirements: Sequence[str], destination: Path,
                         ca_bundle: Path | None, environ: Mapping[str, str]) -> list[str]:
    """``docker run`` of the base's own pip (in a throw-away venv) downloading binary wheels only into
    ``destination``.

    The base's interpreter, not the host's, decides: markers such as ``python_full_version <
    "3.11.3"`` (redis needs async-timeout on Debian's 3.11.2) and the platform tags it accepts. The
    container uses the host's network and the host's CA bundle (``ca_bundle``; this machine's package
    registries are only trusted with it) and the host's pip index settings from ``environ``.
    """
    command = ["docker", "run", "--rm", "--network", "host", "--volume", f"{destination}:/wheelhouse",
               "--env", "HOME=/tmp", "--env", "PIP_DISABLE_PIP_VERSION_CHECK=1"]
    if ca_bundle is not None:
        command += ["--volume", f"{ca_bundle}:{CONTAINER_CA_BUNDLE}:ro",
                    "--env", f"PIP_CERT={CONTAINER_CA_BUNDLE}"]
    for name in _PASSED_PIP_SETTINGS:
        if environ.get(name):
            command += ["--env", f"{name}={environ[name]}"]
    script = ('python3 -m venv /tmp/pip && /tmp/pip/bin/pip download --only-binary=:all: '
              '--dest /wheelhouse "$@"')
    return [*command, "--entrypoint", "sh", base, "-c", script, "pip-download", *requirements]


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BuiltImage:
    """One image of the lane: its tag, whether this call built it, how long that took, its size."""

    name: str
    tag: str
    built: bool
    seconds: float
    size_bytes: int
    extra_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageSet:
    """The tags the real-node lane uses (``app`` for the operator, runtime, sample app and hook)."""

    app: str
    redis: str
    base: str
    details: tuple[BuiltImage, ...] = ()


Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(f"[realnode images] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# I/O: mmdebstrap, docker import, pip download, docker build


@contextlib.contextmanager
def build_lock(name: str, environ: Mapping[str, str] | None = None,
               progress: Progress = _stderr_progress) -> Iterator[None]:
    """One build of ``name`` at a time on this machine: a second process (the kind lane and a test run
    side by side) waits here, then finds the image the first one built."""
    path = docker.realnode_dir(environ) / "locks" / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process building {name} (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_rootfs_image(recipe: RootfsRecipe, *, setup: Callable[[Path], None] | None = None,
                        environ: Mapping[str, str] | None = None,
                        progress: Progress = _stderr_progress) -> BuiltImage:
    """The image of ``recipe``: skipped if an image with :func:`rootfs_tag` exists, else mmdebstrap
    into ``<cache>/realnode/rootfs/<tag>``, ``setup(root)`` (optional; name what it adds in the recipe's
    ``extra_inputs``), the manifest written to :data:`MANIFEST_PATH`, ``docker import`` with the
    recipe's changes and the manifest's labels, and the manifest tag added.

    Needs root (mmdebstrap's root mode, dockerd) and the ``mmdebstrap`` package; raises
    :class:`DockerError` naming the missing command or the failed step and its log.
    """
    with build_lock(rootfs_tag(recipe), environ, progress):
        return _build_rootfs_image(recipe, setup=setup, environ=environ, progress=progress)


def _build_rootfs_image(recipe: RootfsRecipe, *, setup: Callable[[Path], None] | None,
                        environ: Mapping[str, str] | None, progress: Progress) -> BuiltImage:
    tag = rootfs_tag(recipe)
    name = recipe.repository.rsplit("/", 1)[-1]
    docker.ensure_engine(environ)
    if docker.image_exists(tag):
        progress(f"{name}: {tag} exists, not rebuilt")
        return BuiltImage(name=name, tag=tag, built=False, seconds=0.0, size_bytes=docker.image_size(tag))
    if shutil.which("mmdebstrap") is None:
        raise DockerError("no `mmdebstrap` command: install it with `apt-get install mmdebstrap` (as root)")
    if os.geteuid() != 0:
        raise DockerError("building a root file system image needs root (mmdebstrap's root mode keeps "
                          "file ownership); run as root, e.g. `sudo python -m devcluster.realnode.images`")
    work = docker.realnode_dir(environ)
    root = work / "rootfs" / tag.replace("/", "_").replace(":", "_")
    log = work / "logs" / f"{tag.replace('/', '_').replace(':', '_')}.log"
    if root.exists():
        shutil.rmtree(root)  # a build that died half-way
    root.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(f"{name}: mmdebstrap {recipe.suite} {' '.join(recipe.packages)} (log {log})")
    try:
        docker.run_logged(mmdebstrap_command(recipe, root), log, what=f"mmdebstrap of {tag}")
        for path, content, mode in recipe.files:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        if setup is not None:
            setup(root)
        packages = parse_dpkg_status((root / "var/lib/dpkg/status").read_text())
        text = render_manifest(recipe, packages)
        manifest = parse_manifest(text, source=f"{tag} manifest")
        manifest_file = root / MANIFEST_PATH.lstrip("/")
        manifest_file.parent.mkdir(parents=True, exist_ok=True)
        manifest_file.write_text(text)
        (log.parent / f"{tag.replace('/', '_').replace(':', '_')}.manifest.txt").write_text(text)
        labels = manifest_labels(manifest, text, recipe_digest(recipe))
        progress(f"{name}: docker import ({len(packages)} packages)")
        tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
                                "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE)
        try:
            assert tar.stdout is not None
            docker.run_logged(["docker", "import", *import_changes(recipe, labels), "-", tag], log,
                              what=f"docker import of {tag}", stdin=tar.stdout)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0:
                raise DockerError(f"tar of {root} failed (exit status {tar.returncode})")
        second = manifest_tag(manifest, text)
        docker.tag_image(tag, second)
    finally:
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - started
    size = docker.image_size(tag)
    progress(f"{name}: built {tag} (also {second}) in {seconds:.0f} s, {size / 1e6:.0f} MB")
    return BuiltImage(name=name, tag=tag, built=True, seconds=seconds, size_bytes=size, extra_tags=(second,))


def read_image_manifest(tag: str) -> tuple[Manifest, str]:
    """The manifest inside an image built by :func:`ensure_rootfs_image` (read with ``docker run``)."""
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat", tag,
                             MANIFEST_PATH], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise DockerError(f"reading {MANIFEST_PATH} from {tag}: {result.stderr.strip()}")
    return parse_manifest(result.stdout, source=f"{tag}:{MANIFEST_PATH}"), result.stdout


def ensure_wheelhouse(base: str, manifest: Manifest, manifest_text: str, *, repo: Path = REPO,
                      environ: Mapping[str, str] | None = None,
                      progress: Progress = _stderr_progress) -> Path:
    """The directory of wheels the Dockerfile's pip installs on ``base``, downloaded once by the base's
    own pip (a ``.complete`` stamp marks a finished download; the requirements and the base's manifest
    are part of its name)."""
    with build_lock("wheelhouse", environ, progress):
        return _download_wheelhouse(base, manifest, manifest_text, repo=repo, environ=environ,
                                    progress=progress)


def _download_wheelhouse(base: str, manifest: Manifest, manifest_text: str, *, repo: Path,
                         environ: Mapping[str, str] | None, progress: Progress) -> Path:
    env = os.environ if environ is None else environ
    requirements = wheelhouse_requirements((repo / "pyproject.toml").read_text())
    target = wheel_target(manifest)
    key = wheelhouse_digest(requirements, manifest_digest(manifest_text))[:16]
    directory = docker.realnode_dir(environ) / "wheelhouse" / f"{target.abi}-{target.machine}-{key}"
    stamp = directory / ".complete"
    if stamp.exists():
        return directory
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    log = docker.realnode_dir(environ) / "logs" / f"wheelhouse-{key}.log"
    ca_bundle = Path(env.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    progress(f"wheelhouse: pip download on {base} (Python {target.python_version}; log {log})")
    docker.run_logged(pip_download_command(base, requirements, directory,
                                           ca_bundle if ca_bundle.is_file() else None, env), log,
                      what="pip download of the wheelhouse (needs PyPI or the index in PIP_INDEX_URL)")
    stamp.write_text("\n".join(sorted(p.name for p in directory.glob("*.whl"))) + "\n")
    return directory


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` read-only over HTTP on 127.0.0.1 (a free port) while the block runs; yields
    the URL (pip's ``--find-links`` reads its index page)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """No access log on stderr."""

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def ensure_app_image(base: str, wheelhouse: Path, *, repo: Path = REPO,
                     environ: Mapping[str, str] | None = None,
                     progress: Progress = _stderr_progress) -> BuiltImage:
    """The project's image from its ``Dockerfile`` on ``base``, with pip offline: skipped if the tag
    of its inputs exists, else ``docker build`` (classic builder, ``--network host``) with the
    wheelhouse served on loopback."""
    with build_lock("app", environ, progress):
        return _build_app_image(base, wheelhouse, repo=repo, environ=environ, progress=progress)


def _build_app_image(base: str, wheelhouse: Path, *, repo: Path, environ: Mapping[str, str] | None,
                     progress: Progress) -> BuiltImage:
    dockerignore = (repo / ".dockerignore").read_text()
    paths = context_files(repo, dockerignore)
    files = {path: (repo / path).read_bytes() for path in paths}
    files["Dockerfile"] = (repo / "Dockerfile").read_bytes()
    files[".dockerignore"] = dockerignore.encode()
    build_args = {"PYTHON_IMAGE": base, "PIP_NO_INDEX": "1"}
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    digest = app_inputs_digest(files, build_args, wheels)
    tag = app_tag(digest)
    if docker.image_exists(tag):
        progress(f"app: {tag} exists, not rebuilt")
        return BuiltImage(name="app", tag=tag, built=False, seconds=0.0, size_bytes=docker.image_size(tag))
    log = docker.realnode_dir(environ) / "logs" / f"app-{digest[:12]}.log"
    progress(f"app: docker build on {base} (log {log})")
    started = time.monotonic()
    # The classic builder: BuildKit would fetch the `# syntax=` frontend image from a registry, and
    # Docker 20.10's BuildKit needs an entitlement for --network host. The Dockerfile uses nothing
    # BuildKit-only, so both builders give the same image.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    with serve_directory(wheelhouse) as url:
        args = {**build_args, "PIP_FIND_LINKS": url}
        command = ["docker", "build", "--force-rm", "--network", "host", "--tag", tag,
                   "--label", f"org.opencontainers.image.base.name={base}",
                   "--label", f"{LABEL_PREFIX}.inputs-sha256={digest}"]
        for key, value in sorted(args.items()):
            command += ["--build-arg", f"{key}={value}"]
        docker.run_logged([*command, str(repo)], log, what=f"docker build of {tag}", env=env)
    seconds = time.monotonic() - started
    size = docker.image_size(tag)
    progress(f"app: built {tag} in {seconds:.0f} s, {size / 1e6:.0f} MB")
    removed = docker.remove_other_tags(APP_REPOSITORY, keep=tag, prefix="local-")
    if removed:
        progress(f"app: removed older images (the newest ones stay): {', '.join(removed)}")
    return BuiltImage(name="app", tag=tag, built=True, seconds=seconds, size_bytes=size)


def ensure_images(*, environ: Mapping[str, str] | None = None, suite: str = DEFAULT_SUITE,
                  release_names: bool = False, progress: Progress = _stderr_progress) -> ImageSet:
    """Build (or find) the base, Redis and app images and return their tags.

    ``release_names`` also tags them with the names the shipped manifests use
    (``ghcr.io/cachewarden/cachewarden:<version>``, the CachePolicy default image, and ``redis:7``,
    examples/quickstart.yaml's Redis), so those manifests run unchanged on a node loaded with them.
    It is off by default: it replaces any image of those names in the engine.
    """
    engine = docker.ensure_engine(environ)
    if engine.started_pid is not None:
        progress(f"started dockerd (pid {engine.started_pid})")
    base = ensure_rootfs_image(python_base_recipe(suite), environ=environ, progress=progress)
    redis = ensure_rootfs_image(redis_recipe(suite), environ=environ, progress=progress)
    manifest, text = read_image_manifest(base.tag)
    started = time.monotonic()
    wheelhouse = ensure_wheelhouse(base.tag, manifest, text, environ=environ, progress=progress)
    wheelhouse_seconds = time.monotonic() - started
    app = ensure_app_image(base.tag, wheelhouse, environ=environ, progress=progress)
    if app.built:
        app = BuiltImage(name=app.name, tag=app.tag, built=True, seconds=app.seconds + wheelhouse_seconds,
                         size_bytes=app.size_bytes)
    if release_names:
        for source, target in release_tags(app.tag, redis.tag).items():
            docker.tag_image(source, target)
    return ImageSet(app=app.tag, redis=redis.tag, base=base.tag, details=(base, redis, app))


def release_tags(app: str, redis: str, repo: Path = REPO) -> dict[str, str]:
    """``{local tag: name the shipped manifests use}`` (the CachePolicy default image at pyproject's
    version, and ``redis:7``)."""
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    return {app: f"ghcr.io/cachewarden/cachewarden:{version}", redis: "redis:7"}


def load_release_images(app: str, redis: str, load: Callable[[str], None],
                        repo: Path = REPO) -> dict[str, str]:
    """Tag the built images under the names the shipped manifests use (:func:`release_tags`) and hand
    each shipped name to ``load`` (``kind load docker-image``, or pytest-kind's
    ``KindCluster.load_docker_image``). Returns ``{local tag: shipped name}``."""
    loaded: dict[str, str] = {}
    for local, shipped in release_tags(app, redis, repo).items():
        docker.tag_image(local, shipped)
        load(shipped)
        loaded[local] = shipped
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devcluster.realnode.images``: build what is missing, print tags, sizes and times."""
    parser = argparse.ArgumentParser(prog="python -m devcluster.realnode.images", description=main.__doc__)
    parser.add_argument("--suite", default=DEFAULT_SUITE,
                        help="Debian suite of the bases (default %(default)s)")
    parser.add_argument("--release-names", action="store_true",
                        help="also tag ghcr.io/cachewarden/cachewarden:<version> and redis:7")
    options = parser.parse_args(argv)
    started = time.monotonic()
    try:
        images = ensure_images(suite=options.suite, release_names=options.release_names)
    except (DockerError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for image in images.details:
        state = f"built in {image.seconds:.0f} s" if image.built else "cached"
        print(f"{image.name:11} {image.tag:48} {image.size_bytes / 1e6:6.0f} MB  {state}")
        for extra in image.extra_tags:
            print(f"{'':11} {extra}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
