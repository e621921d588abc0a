"""The pure parts of the real-node lane's image builds (devcluster/realnode/images.py, docker.py):
recipes and their tags, the manifest format, the wheelhouse's target and command, the app image's
input hash and build context, and the errors a user sees. No Docker needed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.realnode import docker, images
from devcluster.realnode.images import ImageError, RootfsRecipe

REPO = Path(__file__).resolve().parents[2]

DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u10
Description: GNU C Library
 a continuation line: Version: 9.9

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1

Package: python3-venv
Status: install ok installed
Version: 3.11.2-1+b1

Package: ca-certificates
Status: install ok installed
Version: 20230311

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def base_recipe(**changes: object) -> RootfsRecipe:
    return dataclasses.replace(images.python_base_recipe(), **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# recipes and tags


def test_rootfs_tag_is_stable_and_names_suite_and_digest() -> None:
    tag = images.rootfs_tag(base_recipe())
    assert tag == images.rootfs_tag(images.python_base_recipe())
    repository, _, version = tag.partition(":")
    assert repository == "cachewarden/python-base"
    assert version.startswith("bookworm-") and len(version) == len("bookworm-") + 12


@pytest.mark.parametrize("change", [
    {"suite": "trixie"},
    {"packages": ("python3", "python3-venv")},
    {"packages": ("python3=3.11.2-1+b1", "python3-venv", "ca-certificates")},
    {"variant": "buildd"},
    {"architecture": "arm64"},
    {"mirror": "http://ftp.de.debian.org/debian"},
    {"customize_hooks": ('chroot "$1" true',)},
    {"essential_hooks": ('echo x > "$1/etc/x"',)},
    {"files": (("/etc/x", b"1", 0o644),)},
    {"changes": ('CMD ["sh"]',)},
    {"extra_inputs": ("containerd 1.6.20",)},
    {"dpkg_options": ()},
])
def test_rootfs_tag_changes_with_every_input(change: dict[str, object]) -> None:
    assert images.rootfs_tag(base_recipe(**change)) != images.rootfs_tag(base_recipe())


def test_rootfs_tag_ignores_package_order_but_not_file_content() -> None:
    recipe = base_recipe()
    reordered = base_recipe(packages=tuple(reversed(recipe.packages)))
    assert images.rootfs_tag(reordered) == images.rootfs_tag(recipe)
    one = base_recipe(files=(("/etc/x", b"1", 0o644),))
    two = base_recipe(files=(("/etc/x", b"2", 0o644),))
    mode = base_recipe(files=(("/etc/x", b"1", 0o755),))
    assert len({images.rootfs_tag(one), images.rootfs_tag(two), images.rootfs_tag(mode)}) == 3


@pytest.mark.parametrize(("change", "words"), [
    ({"suite": "Bookworm!"}, ["suite", "'Bookworm!'", "bookworm"]),
    ({"packages": ()}, ["packages", "empty"]),
    ({"packages": ("python3", "Python 3")}, ["packages", "'Python 3'", "name=version"]),
    ({"variant": "tiny"}, ["variant", "'tiny'", "minbase"]),
    ({"repository": "Cachewarden/Base"}, ["repository", "'Cachewarden/Base'"]),
    ({"files": (("etc/x", b"", 0o644),)}, ["files", "'etc/x'", "absolute"]),
    ({"files": (("/etc/../x", b"", 0o644),)}, ["files", "'/etc/../x'"]),
    ({"changes": ("RUN apt-get update",)}, ["changes", "RUN apt-get update", "ENTRYPOINT"]),
])
def test_bad_recipes_name_the_field_and_value(change: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ImageError) as error:
        images.rootfs_tag(base_recipe(**change))
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_mmdebstrap_command_builds_minbase_of_the_suite_with_updates_and_security() -> None:
    recipe = images.python_base_recipe()
    command = images.mmdebstrap_command(recipe, Path("/tmp/root"))
    assert command[0] == "mmdebstrap"
    assert "--variant=minbase" in command and "--architectures=amd64" in command
    assert "--include=python3,python3-venv,ca-certificates" in command
    position = command.index("bookworm")
    assert command[position + 1] == "/tmp/root"
    assert command[position + 2:] == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in command


def test_python_base_has_no_compiler_and_what_the_dockerfile_needs() -> None:
    recipe = images.python_base_recipe()
    assert {"python3", "python3-venv", "ca-certificates"} <= set(recipe.packages)
    assert not {"gcc", "build-essential", "python3-dev", "libc6-dev", "make"} & set(recipe.packages)
    assert 'CMD ["python3"]' in recipe.changes


def test_redis_recipe_runs_redis_as_999_without_persistence_or_protected_mode() -> None:
    recipe = images.redis_recipe()
    assert recipe.packages == ("redis-server",)
    assert "USER 999:999" in recipe.changes
    assert any("redis:x:999:999:" in hook for hook in recipe.essential_hooks)
    files = {path: content for path, content, _mode in recipe.files}
    conf = files["/etc/redis/cachewarden.conf"].decode()
    settings = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in conf.splitlines()
                if line and not line.startswith("#")}
    assert settings["bind"] == "0.0.0.0" and settings["protected-mode"] == "no"
    assert settings["save"] == '""' and settings["appendonly"] == "no" and settings["daemonize"] == "no"
    assert "NetworkPolicy" in conf  # says why protected mode is off


@pytest.mark.parametrize(("args", "expected"), [
    ([], "redis-server /etc/redis/cachewarden.conf"),
    (["--save", "", "--maxmemory", "64mb"],
     "redis-server /etc/redis/cachewarden.conf --save  --maxmemory 64mb"),
    (["redis-server", "--port", "7000"], "redis-server /etc/redis/cachewarden.conf --port 7000"),
    (["redis-cli", "ping"], "redis-cli ping"),
])
def test_redis_entrypoint_is_compatible_with_official_image_arguments(
        tmp_path: Path, args: list[str], expected: str) -> None:
    """Kubernetes `args:` written for the official image (options only) keep this image's config."""
    for program in ("redis-server", "redis-cli"):
        fake = tmp_path / program
        fake.write_text(f'#!/bin/sh\necho {program} "$@"\n')
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", str(images.RECIPES_DIR / "redis-entrypoint"), *args], capture_output=True,
                            text=True, env=env, check=True)
    assert result.stdout.strip() == expected


def test_recipe_files_ship_in_the_wheel() -> None:
    """The redis recipe reads its files from the package: they are package data of the wheel."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name in ("redis.conf", "redis-entrypoint"):
        assert f"realnode/recipes/{name}" in data["devcluster"]
        assert (images.RECIPES_DIR / name).is_file()


# --------------------------------------------------------------------------------------------------
# manifest


def test_dpkg_status_keeps_installed_packages_only() -> None:
    assert images.parse_dpkg_status(DPKG_STATUS) == {
        "libc6": "2.36-9+deb12u10", "python3": "3.11.2-1+b1", "python3-venv": "3.11.2-1+b1",
        "ca-certificates": "20230311"}


def test_manifest_round_trips_and_records_suite_sources_and_versions() -> None:
    recipe = images.python_base_recipe()
    text = images.render_manifest(recipe, images.parse_dpkg_status(DPKG_STATUS))
    manifest = images.parse_manifest(text)
    assert manifest.suite == "bookworm" and manifest.variant == "minbase" and manifest.architecture == "amd64"
    assert manifest.sources == images.apt_sources(recipe)
    assert manifest.requested == recipe.packages
    assert manifest.version("python3") == "3.11.2-1+b1"
    assert images.render_manifest(recipe, manifest.packages) == text  # no timestamps: deterministic
    assert manifest.recipe_sha256 == images.recipe_digest(recipe)


def test_recipes_installing_the_same_packages_get_different_manifest_tags() -> None:
    """A setup hook or a file changes the image but not dpkg's list: the manifest tag still differs."""
    packages = images.parse_dpkg_status(DPKG_STATUS)
    plain = images.render_manifest(base_recipe(), packages)
    hooked = images.render_manifest(base_recipe(extra_inputs=("containerd 1.6",)), packages)
    assert images.manifest_tag(images.parse_manifest(plain), plain) != images.manifest_tag(
        images.parse_manifest(hooked), hooked)
    older = "\n".join(line for line in plain.splitlines() if not line.startswith("recipe-sha256"))
    assert images.parse_manifest(older).recipe_sha256 == ""  # images built before the field still parse


def test_manifest_tag_and_labels_derive_from_what_was_installed() -> None:
    recipe = images.python_base_recipe()
    packages = images.parse_dpkg_status(DPKG_STATUS)
    text = images.render_manifest(recipe, packages)
    newer = images.render_manifest(recipe, {**packages, "libc6": "2.36-9+deb12u11"})
    manifest = images.parse_manifest(text)
    tag = images.manifest_tag(manifest, text)
    assert tag.startswith("cachewarden/python-base:bookworm-m")
    assert tag != images.manifest_tag(images.parse_manifest(newer), newer)
    labels = images.manifest_labels(manifest, text, "ab" * 32)
    assert labels["io.cachewarden.suite"] == "bookworm"
    assert labels["io.cachewarden.package.python3"] == "3.11.2-1+b1"
    assert labels["io.cachewarden.package-count"] == "4"
    assert labels["io.cachewarden.manifest-sha256"] == images.manifest_digest(text)
    changes = images.import_changes(recipe, labels)
    assert 'LABEL io.cachewarden.suite="bookworm"' in changes


@pytest.mark.parametrize(("text", "words"), [
    ("repository\tx\nsuite\tbookworm\nvariant\tminbase\narchitecture\tamd64\nbogus\t1\npackage\tlibc6\t1\n",
     ["manifest:5", "'bogus'", "accepted"]),
    ("repository\tx\nvariant\tminbase\narchitecture\tamd64\npackage\tlibc6\t1\n", ["'suite'"]),
    ("repository\tx\nsuite\tbookworm\nvariant\tminbase\narchitecture\tamd64\npackage\ta\n",
     ["manifest:5", "package line", "name<TAB>version"]),
    ("repository\tx\nsuite\tbookworm\nvariant\tminbase\narchitecture\tamd64\n", ["no package lines"]),
    ("repository\tx\nsuite\tbookworm\nvariant\tminbase\narchitecture\tamd64\nrequested\tpython3\n"
     "package\tlibc6\t2.36\n", ["requested package 'python3'"]),
])
def test_bad_manifests_name_the_line_and_field(text: str, words: list[str]) -> None:
    with pytest.raises(ImageError) as error:
        images.parse_manifest(text)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


# --------------------------------------------------------------------------------------------------
# wheelhouse


def test_wheel_target_comes_from_the_base_manifest() -> None:
    text = images.render_manifest(images.python_base_recipe(), images.parse_dpkg_status(DPKG_STATUS))
    target = images.wheel_target(images.parse_manifest(text))
    assert (target.python_version, target.machine, target.abi) == ("3.11", "x86_64", "cp311")
    arm = images.render_manifest(images.python_base_recipe(architecture="arm64"),
                                 images.parse_dpkg_status(DPKG_STATUS))
    assert images.wheel_target(images.parse_manifest(arm)).machine == "aarch64"


def test_wheel_target_errors_name_the_package() -> None:
    text = images.render_manifest(images.redis_recipe(), {"redis-server": "5:7.0.15-1", "libc6": "2.36-9"})
    with pytest.raises(ImageError, match="'python3' is not installed"):
        images.wheel_target(images.parse_manifest(text))
    mips = images.render_manifest(base_recipe(architecture="mips64el"), images.parse_dpkg_status(DPKG_STATUS))
    with pytest.raises(ImageError, match="architecture 'mips64el'; accepted: amd64, arm64"):
        images.wheel_target(images.parse_manifest(mips))


def test_wheelhouse_has_the_build_backend_and_every_dependency() -> None:
    requirements = images.wheelhouse_requirements((REPO / "pyproject.toml").read_text())
    assert any(r.startswith("setuptools") for r in requirements)  # pip wheel . builds in isolation
    for name in ("fastapi", "kopf", "redis[hiredis]", "uvloop"):
        assert any(r.startswith(name) for r in requirements), name
    with pytest.raises(ImageError, match="'build-system'"):
        images.wheelhouse_requirements('[project]\ndependencies = []\n')


def test_pip_download_runs_on_the_base_with_the_host_ca_and_index() -> None:
    """The base's interpreter resolves the markers (Debian's 3.11.2 needs what the host's 3.11.7 does
    not); binary wheels only (no compiler anywhere); this machine's CA bundle and pip index pass in."""
    command = images.pip_download_command(
        "cachewarden/python-base:bookworm-abc", ["kopf>=1.44", "redis[hiredis]>=5.0"], Path("/wh"),
        Path("/etc/ssl/certs/ca-certificates.crt"),
        {"PIP_INDEX_URL": "https://pypi.example/simple", "PIP_FIND_LINKS": "/opt/wheels", "HOME": "/root"})
    assert command[:3] == ["docker", "run", "--rm"]
    assert "/wh:/wheelhouse" in command
    assert f"/etc/ssl/certs/ca-certificates.crt:{images.CONTAINER_CA_BUNDLE}:ro" in command
    assert f"PIP_CERT={images.CONTAINER_CA_BUNDLE}" in command
    assert "PIP_INDEX_URL=https://pypi.example/simple" in command
    assert not any(word.startswith("PIP_FIND_LINKS") for word in command)  # a host path means nothing there
    base = command.index("cachewarden/python-base:bookworm-abc")
    assert command[base - 2:base] == ["--entrypoint", "sh"]
    assert "--only-binary=:all:" in command[base + 2] and "python3 -m venv" in command[base + 2]
    assert command[-2:] == ["kopf>=1.44", "redis[hiredis]>=5.0"]
    bare = images.pip_download_command("b", ["x"], Path("/wh"), None, {})
    assert not any(word.startswith(("PIP_CERT", "PIP_INDEX_URL")) for word in bare), bare
    assert images.wheelhouse_digest(["a"], "1" * 64) != images.wheelhouse_digest(["a"], "2" * 64)
    assert images.wheelhouse_digest(["a"], "1" * 64) != images.wheelhouse_digest(["a", "b"], "1" * 64)


# --------------------------------------------------------------------------------------------------
# the app image's inputs


def test_app_digest_changes_with_sources_args_and_wheels() -> None:
    files = {"Dockerfile": b"FROM x", "cache_runtime/a.py": b"1"}
    args = {"PYTHON_IMAGE": "cachewarden/python-base:bookworm-abc"}
    wheels = ["kopf-1.45.2-py3-none-any.whl"]
    digest = images.app_inputs_digest(files, args, wheels)
    assert digest == images.app_inputs_digest(dict(reversed(files.items())), args, wheels)
    assert digest != images.app_inputs_digest({**files, "cache_runtime/a.py": b"2"}, args, wheels)
    assert digest != images.app_inputs_digest({**files, "cachewarden/__init__.py": b""}, args, wheels)
    assert digest != images.app_inputs_digest(files, {"PYTHON_IMAGE": "other"}, wheels)
    assert digest != images.app_inputs_digest(files, args, ["kopf-1.46.0-py3-none-any.whl"])
    tag = images.app_tag(digest)
    assert tag == f"cachewarden/cachewarden:local-{digest[:12]}"
    with pytest.raises(ImageError, match="inputs digest: 'xyz'"):
        images.app_tag("xyz")


def test_context_files_follow_dockerignore(tmp_path: Path) -> None:
    for path in ("pyproject.toml", "pkg/a.py", "pkg/__pycache__/a.cpython-311.pyc", "pkg/sub/b.py",
                 ".venv/lib/x.py", "tests/test_a.py", "examples/app/c.py", "examples/app/k8s/d.yaml",
                 "examples/other.yaml", "new_top_level.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    ignore = "*\n!pyproject.toml\n!pkg/\n!examples/app/\nexamples/app/k8s\n**/__pycache__\n"
    assert images.context_files(tmp_path, ignore) == [
        "examples/app/c.py", "pkg/a.py", "pkg/sub/b.py", "pyproject.toml"]


def _test_dockerfile_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_dockerfile_tests", REPO / "tests/unit/test_dockerfile.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_context_of_this_repository_agrees_with_the_dockerfile_tests_matcher() -> None:
    """The files hashed for the app tag are the files Docker sends: the same verdict as the
    .dockerignore matcher of tests/unit/test_dockerfile.py on every tracked file, and every package
    the Dockerfile copies is in."""
    text = (REPO / ".dockerignore").read_text()
    files = images.context_files(REPO, text)
    assert "pyproject.toml" in files and "cache_runtime/__init__.py" in files
    assert not any(f.startswith(("tests/", ".venv/", ".git/", "docs/")) for f in files)
    reference = _test_dockerfile_module()
    rules = reference.parse_dockerignore(text)
    mine = images.parse_dockerignore(text)
    for path in reference.tracked_files():
        assert images.is_excluded(path, mine) == reference.excluded(path, rules), path


def test_release_tags_are_the_names_the_shipped_manifests_use() -> None:
    from cache_operator.api.cachepolicy import DEFAULT_IMAGE

    tags = images.release_tags("cachewarden/cachewarden:local-1", "cachewarden/redis:bookworm-2")
    assert tags == {"cachewarden/cachewarden:local-1": DEFAULT_IMAGE,
                    "cachewarden/redis:bookworm-2": "redis:7"}
    assert "image: redis:7" in (REPO / "examples/quickstart.yaml").read_text()


# --------------------------------------------------------------------------------------------------
# the engine


def test_missing_docker_names_the_install_and_start_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker.shutil, "which", lambda name: None)
    with pytest.raises(docker.DockerError) as error:
        docker.ensure_engine()
    assert "apt-get install docker.io" in str(error.value) and "dockerd" in str(error.value)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"docker_cli": "/usr/bin/docker", "info_error": "Cannot connect to the Docker daemon", "is_root": False,
      "dockerd": "/usr/sbin/dockerd"}, ["not running", "as root", "dockerd"]),
    ({"docker_cli": "/usr/bin/docker", "info_error": "Cannot connect", "is_root": True, "dockerd": None},
     ["apt-get install docker.io", "dockerd"]),
    ({"docker_cli": "/usr/bin/docker", "info_error": "dial unix /var/run/docker.sock: permission denied",
      "is_root": False, "dockerd": "/usr/sbin/dockerd"}, ["permission denied", "usermod -aG docker"]),
])
def test_engine_problems_say_what_to_run(kwargs: dict[str, object], words: list[str]) -> None:
    message = docker.missing_engine_message(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in message, (word, message)


def test_build_state_lives_in_the_cache_dir() -> None:
    assert docker.realnode_dir({"CACHEWARDEN_CACHE_DIR": "/x/cache"}) == Path("/x/cache/realnode")
    assert docker.realnode_dir({"HOME": "/h", "XDG_CACHE_HOME": "/h/c"}) == Path("/h/c/cachewarden/realnode")


def test_run_logged_failure_names_the_step_and_shows_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step.log"
    with pytest.raises(docker.DockerError) as error:
        docker.run_logged(["sh", "-c", "echo first; echo the reason >&2; exit 3"], log,
                          what="docker build of x")
    text = str(error.value)
    assert "docker build of x failed (exit status 3)" in text and "the reason" in text and str(log) in text
    with pytest.raises(docker.DockerError, match="`no-such-program-here` not found"):
        docker.run_logged(["no-such-program-here"], log, what="x")


def test_run_logged_feeds_bytes_and_returns_stdout_when_asked(tmp_path: Path) -> None:
    """The node image's steps pipe tarballs in and read container ids out through the same runner."""
    log = tmp_path / "step.log"
    out = docker.run_logged(["sh", "-c", "tr a-z A-Z; echo note >&2"], log, what="upper",
                            stdin=b"container-id\n", capture_stdout=True)
    assert out == "CONTAINER-ID\n"
    logged = log.read_text()
    assert "CONTAINER-ID" in logged and "note" in logged and "$ sh -c" in logged
    assert docker.run_logged(["sh", "-c", "echo streamed"], log, what="x") == ""
    assert "streamed" in log.read_text()


def test_build_lock_makes_a_second_builder_wait(tmp_path: Path) -> None:
    """Two processes building the same image (the kind lane and a test run): the second waits, says so,
    and continues when the first is done."""
    import threading

    environ = {"CACHEWARDEN_CACHE_DIR": str(tmp_path)}
    events: list[str] = []
    waiting = threading.Event()

    def second() -> None:
        def progress(message: str) -> None:
            events.append("second waits")
            waiting.set()

        with images.build_lock("cachewarden/redis:bookworm-abc", environ, progress):
            events.append("second builds")

    with images.build_lock("cachewarden/redis:bookworm-abc", environ, lambda _m: None):
        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(10)
        events.append("first done")
    thread.join(10)
    assert events == ["second waits", "first done", "second builds"]
    assert (tmp_path / "realnode/locks/cachewarden_redis_bookworm-abc.lock").exists()
