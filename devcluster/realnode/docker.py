"""Find the Docker engine (or start Debian's ``dockerd``), and the few docker commands the builds use.

Importing this module needs no Docker: everything that runs ``docker`` happens inside a function.
Errors that reach a user say what is missing and the command that gets it (:class:`DockerError`).

A ``dockerd`` this module starts keeps running after the process that started it (the next test run
reuses it); its pid is recorded in ``<cache root>/realnode/dockerd.pid`` and its log is
``<cache root>/realnode/logs/dockerd.log``. Stop it with ``kill $(cat <that pid file>)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from devcluster import binaries

INSTALL_HINT = "apt-get install docker.io"
START_HINT = "dockerd > /tmp/dockerd.log 2>&1 &"
LOG_TAIL_LINES = 40


class DockerError(RuntimeError):
    """The Docker engine is missing or unusable, or a docker command (a build, an import) failed."""


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answers ``docker info``."""

    docker: str
    server_version: str
    started_pid: int | None = None
    """The pid of the ``dockerd`` this process started; None when the engine was already running."""


def realnode_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``<cache root>/realnode``: wheelhouses, build logs, root file systems being built, dockerd's pid."""
    return binaries.cache_root(environ) / "realnode"


def missing_engine_message(docker_cli: str | None, info_error: str, *, is_root: bool,
                           dockerd: str | None) -> str:
    """What is wrong with the engine and the command that fixes it (pure: the caller probes)."""
    if docker_cli is None:
        return (f"no `docker` command on PATH: install Debian's Docker engine with `{INSTALL_HINT}` "
                f"(as root), then start it with `{START_HINT}`")
    detail = info_error.strip().splitlines()[-1] if info_error.strip() else "no answer"
    if "permission denied" in info_error.lower():
        return (f"`docker info` failed: {detail}; run as root, or add your user to the docker group "
                "(`usermod -aG docker $USER`, then log in again)")
    if dockerd is None:
        return (f"`docker info` failed ({detail}) and there is no `dockerd` to start: "
                f"install the engine with `{INSTALL_HINT}`, then `{START_HINT}`")
    if not is_root:
        return (f"`docker info` failed ({detail}): the Docker engine is not running and only root can "
                f"start it; as root run `{START_HINT}`")
    return f"`docker info` failed ({detail}); start the engine as root with `{START_HINT}`"


COMPAT_RUNTIME = "cachewarden-compat"
COMPAT_SCRIPT = (Path(__file__).resolve().parent / "node" / "files" / "usr" / "local" / "sbin"
                 / "runc-host-compat")
_CAP_SYS_RESOURCE = 24


def lacks_cap_sys_resource(proc_status: str) -> bool:
    """True when the ``CapBnd`` line of a ``/proc/<pid>/status`` text lacks CAP_SYS_RESOURCE: runc then
    cannot start a privileged container (a kind node) nor lower an oom_score_adj below 0 (pure)."""
    for line in proc_status.splitlines():
        if line.startswith("CapBnd:"):
            return not (int(line.split()[1], 16) >> _CAP_SYS_RESOURCE) & 1
    return False


def dockerd_command(dockerd: str, compat_runtime: Path | None) -> list[str]:
    """How this module starts dockerd: with runc-host-compat as the default runtime where the host
    withholds CAP_SYS_RESOURCE (``compat_runtime`` is the installed script), plainly elsewhere (pure)."""
    if compat_runtime is None:
        return [dockerd]
    return [dockerd, "--add-runtime", f"{COMPAT_RUNTIME}={compat_runtime}",
            "--default-runtime", COMPAT_RUNTIME]


def _host_needs_compat() -> bool:
    try:
        return lacks_cap_sys_resource(Path("/proc/self/status").read_text())
    except OSError:
        return False


def install_compat_runtime(environ: Mapping[str, str] | None = None) -> Path:
    """Copy runc-host-compat into ``<cache>/realnode/bin`` (a path that outlives any one checkout, since
    the dockerd that uses it does) and return it."""
    target = realnode_dir(environ) / "bin" / "runc-host-compat"
    target.parent.mkdir(parents=True, exist_ok=True)
    content = COMPAT_SCRIPT.read_bytes()
    if not target.is_file() or target.read_bytes() != content:
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(content)
        temporary.chmod(0o755)
        temporary.replace(target)
    return target


def ensure_privileged_containers(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`DockerError` when privileged containers cannot start here: the host withholds
    CAP_SYS_RESOURCE and the running dockerd was not started with runc-host-compat as its default
    runtime (a dockerd this module starts always is)."""
    if not _host_needs_compat():
        return
    install_compat_runtime(environ)  # keep the script the running dockerd uses up to date
    result = subprocess.run(["docker", "info", "--format", "{{.DefaultRuntime}}"], capture_output=True,
                            text=True, timeout=30, check=False)
    runtime = result.stdout.strip()
    if runtime != COMPAT_RUNTIME:
        raise DockerError(
            "this machine's root lacks CAP_SYS_RESOURCE, so runc cannot start privileged containers "
            f"(kind's nodes); the running dockerd's default runtime is {runtime or 'unknown'!r}, not "
            f"{COMPAT_RUNTIME!r}. Stop that dockerd (kill its pid) and let cachewarden start it, or start "
            f"it yourself with `{' '.join(dockerd_command('dockerd', install_compat_runtime(environ)))}`")


def _docker_info(docker: str) -> tuple[bool, str]:
    """(answered, server version or error text) of ``docker info``."""
    try:
        result = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False, "docker info did not answer within 30 s"
    version = result.stdout.strip()
    if result.returncode == 0 and version and "<no value>" not in version:
        return True, version
    return False, (result.stderr or result.stdout).strip()


def ensure_engine(environ: Mapping[str, str] | None = None, *, start: bool = True,
                  timeout: float = 90.0) -> Engine:
    """The running Docker engine; if ``docker info`` fails and we are root, start ``dockerd`` in the
    background (log and pid in :func:`realnode_dir`) and wait up to ``timeout`` seconds for it.

    Raises :class:`DockerError` naming what is missing and the command that gets it.
    """
    docker = shutil.which("docker")
    if docker is None:
        raise DockerError(missing_engine_message(None, "", is_root=os.geteuid() == 0, dockerd=None))
    answered, detail = _docker_info(docker)
    if answered:
        return Engine(docker=docker, server_version=detail)
    dockerd = shutil.which("dockerd")
    is_root = os.geteuid() == 0
    if not start or dockerd is None or not is_root or "permission denied" in detail.lower():
        raise DockerError(missing_engine_message(docker, detail, is_root=is_root, dockerd=dockerd))
    directory = realnode_dir(environ)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    log_path = directory / "logs" / "dockerd.log"
    with log_path.open("ab") as log:
        # A new session: dockerd outlives this process and a Ctrl-C of the test run does not reach it.
        compat = install_compat_runtime(environ) if _host_needs_compat() else None
        process = subprocess.Popen(dockerd_command(dockerd, compat), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    (directory / "dockerd.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DockerError(f"dockerd (pid {process.pid}) exited with status {process.returncode} "
                              f"while starting; last lines of {log_path}:\n{log_tail(log_path)}")
        answered, detail = _docker_info(docker)
        if answered:
            return Engine(docker=docker, server_version=detail, started_pid=process.pid)
        time.sleep(1.0)
    raise DockerError(f"dockerd (pid {process.pid}) did not answer `docker info` within {timeout:g} s; "
                      f"last lines of {log_path}:\n{log_tail(log_path)}")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(command: Sequence[str], log_path: Path, *, what: str, stdin: IO[bytes] | bytes | None = None,
               env: Mapping[str, str] | None = None, timeout: float = 3600.0,
               capture_stdout: bool = False) -> str:
    """Run a build step with its output appended to ``log_path``; on failure raise
    :class:`DockerError` naming ``what``, the command and the log's last lines.

    ``stdin`` is a file or the bytes to feed it. With ``capture_stdout`` the command's standard output
    is returned (and logged after it ends) instead of streamed to the log; stderr always goes to the
    log. Returns ``''`` otherwise."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    feed = stdin if isinstance(stdin, bytes) else None
    source: IO[bytes] | int | None = None
    if feed is None:
        source = stdin if stdin is not None and not isinstance(stdin, bytes) else subprocess.DEVNULL
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                list(command), input=feed, stdin=source,
                stdout=subprocess.PIPE if capture_stdout else log, stderr=log,
                env=dict(env) if env is not None else None, timeout=timeout)
        except FileNotFoundError as exc:
            raise DockerError(f"{what}: `{command[0]}` not found ({exc})") from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerError(f"{what}: timed out after {timeout:g} s; log {log_path}") from exc
        if capture_stdout and result.stdout:
            log.write(result.stdout)
    if result.returncode != 0:
        raise DockerError(f"{what} failed (exit status {result.returncode}): {' '.join(command)}\n"
                          f"last lines of {log_path}:\n{log_tail(log_path)}")
    return result.stdout.decode(errors="replace") if capture_stdout else ""


def image_exists(tag: str) -> bool:
    """Whether the engine holds an image with this tag."""
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                          timeout=60).returncode == 0


def image_size(tag: str) -> int:
    """The image's size in bytes as ``docker images`` reports it (all its layers, uncompressed)."""
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise DockerError(f"docker image inspect {tag}: {result.stderr.strip()}")
    return int(result.stdout.strip())


def tag_image(source: str, target: str) -> None:
    """``docker tag source target``."""
    result = subprocess.run(["docker", "tag", source, target], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise DockerError(f"docker tag {source} {target}: {result.stderr.strip()}")


def remove_other_tags(repository: str, *, keep: str, prefix: str, newest: int = 3) -> list[str]:
    """Remove the images of ``repository`` whose tag starts with ``prefix``, except ``keep`` and the
    ``newest`` most recent ones (every source change makes a new app image; the old ones would pile
    up, while a test session running next to this one may still use a recent one). An image a
    container still uses is left alone (``docker rmi`` refuses it). Returns the tags removed."""
    result = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
                            capture_output=True, text=True, timeout=60)
    # `docker images` lists the newest first.
    candidates = [name for name in result.stdout.split()
                  if name != keep and name.rsplit(":", 1)[-1].startswith(prefix)]
    removed = []
    for name in candidates[newest:]:
        if subprocess.run(["docker", "rmi", name], capture_output=True, timeout=120).returncode == 0:
            removed.append(name)
    return removed
