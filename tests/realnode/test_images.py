"""The images built here, run the way Kubernetes' restricted profile runs them: read-only root file
system (a tmpfs on /tmp only), non-root, every capability dropped, no privilege escalation.

The images come from :func:`devcluster.realnode.images.ensure_images` (built once, cached by the hash of
their inputs). Without a Docker engine the module is skipped, naming what is missing and how to get it;
under CI (``CI=true``) or ``CACHEWARDEN_REQUIRE_E2E=1`` it fails instead. A failed build always fails.

Traffic goes only to the docker network each test creates (and removes) and to ``docker exec``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.realnode import docker, images
from devcluster.testing import REQUIRE_E2E_ENV, e2e_required

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
RUNTIME_UID = 10001
RESTRICTED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


@pytest.fixture(scope="module")
def image_set() -> images.ImageSet:
    """The three images (built on first use; a warm run finds them by tag)."""
    try:
        docker.ensure_engine()
    except docker.DockerError as exc:
        message = f"no usable Docker engine: {exc}"
        if e2e_required():
            pytest.fail(f"real-node tests are required here (CI or {REQUIRE_E2E_ENV}) but {message}",
                        pytrace=False)
        pytest.skip(message)
    return images.ensure_images()


def docker_cmd(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``docker args...``; on failure the assertion shows its output."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}\n{result.stdout}"
    return result


@pytest.fixture
def network() -> Iterator[str]:
    """A user-defined docker network (containers find each other by name), removed at teardown with
    every container on it."""
    name = f"cw-realnode-{uuid.uuid4().hex[:8]}"
    docker_cmd("network", "create", "--label", "io.cachewarden.test=realnode", name)
    try:
        yield name
    finally:
        ids = docker_cmd("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
        if ids:
            docker_cmd("rm", "-f", *ids, check=False)
        docker_cmd("network", "rm", name, check=False)


def run_detached(network: str, name: str, image: str, *args: str, user: str | None = None,
                 options: tuple[str, ...] = ()) -> str:
    """Start a restricted container on ``network`` (``options``: more ``docker run`` options) and return
    its address there."""
    command = ["run", "-d", "--name", name, "--network", network, *RESTRICTED, *options]
    if user is not None:
        command += ["--user", user]
    docker_cmd(*command, image, *args)
    address = docker_cmd("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                         name).stdout.strip()
    assert address, f"{name} has no address on {network}"
    return address


def wait_http(url: str, timeout: float = 60.0, container: str | None = None) -> tuple[int, str]:
    """GET ``url`` until it answers; (status, body). Shows the container's log if it never does."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    logs = ""
    if container:
        result = docker_cmd("logs", container, check=False)
        logs = result.stdout + result.stderr
    raise AssertionError(f"{url} did not answer within {timeout:g}s ({last}); container log:\n{logs}")


def wait_exec(container: str, *command: str, expect: str, timeout: float = 30.0) -> str:
    """``docker exec`` until its output contains ``expect``."""
    deadline = time.monotonic() + timeout
    output = ""
    while time.monotonic() < deadline:
        result = docker_cmd("exec", container, *command, check=False)
        output = result.stdout + result.stderr
        if expect in output:
            return output
        time.sleep(0.5)
    logs = docker_cmd("logs", container, check=False)
    raise AssertionError(f"`{' '.join(command)}` in {container} never printed {expect!r}: {output}\n"
                         f"log:\n{logs.stdout}{logs.stderr}")


def test_images_are_non_root_and_record_their_inputs(image_set: images.ImageSet) -> None:
    """Default users are numeric and non-zero (runAsNonRoot can check them); the bases carry their
    manifest (suite and package versions) as labels and as a file; the app records its inputs' hash."""
    config = json.loads(docker_cmd("image", "inspect", image_set.app, image_set.redis, image_set.base).stdout)
    app, redis, base = (c["Config"] for c in config)
    assert app["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert redis["User"] == "999:999"
    assert app["Labels"]["org.opencontainers.image.base.name"] == image_set.base
    assert app["Labels"]["io.cachewarden.inputs-sha256"].startswith(image_set.app.rsplit("-", 1)[1])
    for labels in (base["Labels"], redis["Labels"]):
        assert labels["io.cachewarden.suite"] == images.DEFAULT_SUITE
    assert base["Labels"]["io.cachewarden.package.python3"].startswith("3.")
    assert redis["Labels"]["io.cachewarden.package.redis-server"]
    manifest, text = images.read_image_manifest(image_set.base)
    assert manifest.suite == images.DEFAULT_SUITE and "python3-venv" in manifest.packages
    assert not {"gcc", "cpp", "make", "libc6-dev", "python3-dev"} & set(manifest.packages), "no compiler"
    assert images.manifest_digest(text) == base["Labels"]["io.cachewarden.manifest-sha256"]


def test_a_second_call_finds_every_image_by_tag(image_set: images.ImageSet) -> None:
    """Built once: with unchanged inputs nothing is rebuilt and the tags are the same. (The app is
    rebuilt only under a new tag, when its sources changed in between: others may be editing the tree.)"""
    again = images.ensure_images(progress=lambda _message: None)
    assert (again.redis, again.base) == (image_set.redis, image_set.base)
    built = {image.name: image.built for image in again.details}
    assert not built["python-base"] and not built["redis"]
    assert built["app"] == (again.app != image_set.app)


def test_console_script_and_operator_command_run_read_only(image_set: images.ImageSet) -> None:
    """`cachewarden --help` and `cachewarden operator --help` under the restricted settings."""
    for args in (["--help"], ["operator", "--help"]):
        result = docker_cmd("run", "--rm", "--network", "none", "--user", str(RUNTIME_UID), *RESTRICTED,
                            image_set.app, *args)
        assert "usage:" in result.stdout, result.stdout
    result = docker_cmd("run", "--rm", "--network", "none", *RESTRICTED, "--entrypoint", "sh", image_set.app,
                        "-c", "id -u; touch /opt/cachewarden/x 2>&1; touch /tmp/ok && echo tmp-writable",
                        check=False)
    assert result.stdout.splitlines()[0] == str(RUNTIME_UID), result.stdout
    assert "Read-only file system" in result.stdout and "tmp-writable" in result.stdout, result.stdout


def test_sample_app_and_pre_delete_hook_interpreter(image_set: images.ImageSet) -> None:
    """`python -m examples.sample_app` resolves from the image's working directory, and the chart's
    pre-delete hook command (`python3 -c <files/pre-delete.py>`) gets the venv's interpreter with the
    Kubernetes client (the script itself runs against a cluster in the kind lane)."""
    script = (REPO / "charts/cachewarden/files/pre-delete.py").read_text()
    check = ("import importlib.util, sys; "
             "assert importlib.util.find_spec('examples.sample_app'), 'no sample app'; "
             "import examples.sample_app.__main__; "
             "compile(sys.argv[1], 'pre-delete.py', 'exec'); "
             "import kubernetes.client, kubernetes.config; print(sys.executable)")
    result = docker_cmd("run", "--rm", "--network", "none", *RESTRICTED, "--entrypoint", "python3",
                        image_set.app, "-c", check, script)
    assert result.stdout.strip().startswith("/opt/cachewarden/bin/python"), result.stdout


def test_redis_answers_ping_read_only_with_the_quickstart_arguments(
        image_set: images.ImageSet, network: str) -> None:
    """Redis as examples/quickstart.yaml runs it (its `args:`, uid 999, read-only, no capabilities)."""
    name = f"{network}-redis"
    run_detached(network, name, image_set.redis, "--save", "", "--appendonly", "no", "--maxmemory", "64mb",
                 "--maxmemory-policy", "allkeys-lru", user="999:999")
    wait_exec(name, "redis-cli", "ping", expect="PONG")
    assert "allkeys-lru" in wait_exec(name, "redis-cli", "config", "get", "maxmemory-policy",
                                      expect="maxmemory-policy")
    assert "0.0.0.0" in wait_exec(name, "redis-cli", "config", "get", "bind", expect="bind")


def test_runtime_and_app_reach_redis_over_a_docker_network(image_set: images.ImageSet, network: str) -> None:
    """The runtime (the image's default command) answers /healthz and /readyz on its network address,
    with Redis behind it by name; the engine in an app container SETs and GETs through that Redis."""
    redis_name = f"{network}-redis"
    run_detached(network, redis_name, image_set.redis)
    wait_exec(redis_name, "redis-cli", "ping", expect="PONG")
    redis_url = f"redis://{redis_name}:6379/0"

    runtime = f"{network}-runtime"
    address = run_detached(network, runtime, image_set.app, "runtime", "--redis-url", redis_url,
                           "--auth-disabled", user=str(RUNTIME_UID))
    status, body = wait_http(f"http://{address}:8080/healthz", container=runtime)
    assert status == 200, body
    status, body = wait_http(f"http://{address}:8080/readyz", container=runtime)
    assert status == 200, body

    script = f"""
import asyncio, redis
from cache_runtime import TieredCache, resolve_config

async def main():
    direct = redis.Redis.from_url({redis_url!r})
    direct.set("realnode:direct", b"v1")
    assert direct.get("realnode:direct") == b"v1"
    async with TieredCache(resolve_config(preset="production", redis_url={redis_url!r})) as cache:
        key = cache.key_for("summarize", "a text long enough to be a key of the engine")
        await cache.set(key, {{"summary": "short"}})
        assert await cache.get(key) == {{"summary": "short"}}
    print("ok", direct.dbsize())

asyncio.run(main())
"""
    result = docker_cmd("run", "--rm", "--network", network, "--user", str(RUNTIME_UID), *RESTRICTED,
                        "--entrypoint", "python3", image_set.app, "-c", script)
    assert result.stdout.startswith("ok"), result.stdout + result.stderr
    keys = int(wait_exec(redis_name, "redis-cli", "dbsize", expect="").strip())
    assert keys >= 2, "the direct key and the engine's entry are in the Redis container"


def test_sample_app_serves_read_only_with_redis(image_set: images.ImageSet, network: str) -> None:
    """`python -m examples.sample_app` (examples/sample_app/k8s runs it this way) serves from the image
    under the restricted settings; its answer is stored in the Redis container."""
    redis_name = f"{network}-redis"
    run_detached(network, redis_name, image_set.redis)
    wait_exec(redis_name, "redis-cli", "ping", expect="PONG")
    name = f"{network}-sample"
    options = ("--env", f"CACHEWARDEN_REDIS_URL=redis://{redis_name}:6379/0",
               "--env", "CACHEWARDEN_AUTH_DISABLED=true", "--entrypoint", "python3")
    address = run_detached(network, name, image_set.app, "-m", "examples.sample_app", user=str(RUNTIME_UID),
                           options=options)
    wait_http(f"http://{address}:8080/healthz", container=name)
    answers = []
    for _ in range(2):
        body = json.dumps({"text": "The cache keeps answers. It is fast. It is tested."}).encode()
        request = urllib.request.Request(f"http://{address}:8080/v1/summarize", method="POST", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append(json.loads(response.read()))
    assert answers[0] == answers[1] and answers[0]["summary"], answers
    assert int(wait_exec(redis_name, "redis-cli", "dbsize", expect="").strip()) == 1
