"""The process kubelet's image table: which local program stands in for which container image.

There is no container runtime on these machines, so an image is a promise about which programs exist
and what runs by default. The table is small and explicit on purpose: an image that is not in it
fails the pod with a message naming the image and the accepted ones, instead of running something
surprising.

=========================  =======================================  ===========================
image (any registry/tag)   programs a container may name             runs by default
=========================  =======================================  ===========================
``*/cachewarden``          cachewarden, python, python3, sh          ``cachewarden``
``redis``                  redis-server, redis-cli, sh               ``redis-server``
``python``                 python, python3, python3.X, sh            ``python3``
``busybox``                sh and a few coreutils (sleep, echo...)   ``sh``
=========================  =======================================  ===========================

``cachewarden`` and ``python`` run from the virtual environment of the kubelet itself
(``sys.executable``'s directory), so the pods run the code under test. ``redis`` runs Debian's
``/usr/bin/redis-server``; its arguments are completed so it binds the pod's address, listens on the
container's declared port and stays in the foreground (see :func:`complete_redis_args`).

Everything here is pure except :func:`resolve_image`'s default arguments, which read
``sys.executable`` and ``shutil.which``; tests pass their own.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
SHELL = "/bin/sh"
DEFAULT_REDIS_PORT = 6379

# Programs the busybox stand-in offers, looked up on the host's PATH. Enough for `sh -c 'sleep 5'`,
# `echo`, `cat` of a mounted file and the like; not a general escape hatch to the host.
BUSYBOX_PROGRAMS = (
    "sh",
    "sleep",
    "echo",
    "cat",
    "ls",
    "env",
    "true",
    "false",
    "test",
    "printf",
    "date",
    "touch",
    "mkdir",
    "rm",
    "head",
    "tail",
    "grep",
    "wc",
)


class ImageNotMappedError(ValueError):
    """The image (or the program a container names inside it) has no local stand-in."""

    reason = "ImageNotMapped"


class ProgramNotFoundError(ValueError):
    """The container's command names a program the image does not provide."""

    reason = "RunContainerError"


@dataclass(frozen=True)
class ImageSpec:
    """What the kubelet knows about one mapped image.

    ``entrypoint`` and ``default_args`` play the roles of the image's ENTRYPOINT and CMD: a container's
    ``command`` replaces the first, its ``args`` the second, as in Kubernetes.
    """

    image: str
    kind: str
    programs: Mapping[str, str]
    entrypoint: tuple[str, ...] = ()
    default_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str = "/"
    # The official redis image's entrypoint script runs `redis-server "$@"` when the first argument
    # is a flag or a .conf file, so `args: ["--maxmemory", "10mb"]` works there; so it does here.
    program_for_flags: str | None = None

    @property
    def image_id(self) -> str:
        """The containerStatus ``imageID``: the image kind and the program that stands in for it."""
        main = self.programs.get(self.kind) or next(iter(self.programs.values()), "")
        return f"devcluster://{self.kind}@{main}"

    def program_path(self, program: str) -> str:
        """The local executable for ``program`` as a container's command names it (``python3``,
        ``/usr/local/bin/python``, ``redis-server``...). Raises :class:`ProgramNotFoundError`."""
        if program in self.programs:
            return self.programs[program]
        base = program.rsplit("/", 1)[-1]
        if base in self.programs:
            return self.programs[base]
        accepted = ", ".join(sorted(self.programs))
        raise ProgramNotFoundError(
            f"image {self.image!r} has no program {program!r} under the devcluster kubelet; "
            f"it provides: {accepted}"
        )


def image_name(image: str) -> str:
    """The repository's last path component without tag or digest:
    ``ghcr.io/cachewarden/cachewarden:0.1@sha256:..`` -> ``cachewarden``, ``redis:7`` -> ``redis``."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0].lower()


ACCEPTED_IMAGES = ("<registry>/cachewarden:<tag>", "redis:<tag>", "python:<tag>", "busybox:<tag>")


def resolve_image(
    image: str,
    python_executable: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> ImageSpec:
    """Map a container image to its local stand-in, or raise :class:`ImageNotMappedError` whose
    message names the image and the accepted ones."""
    if not isinstance(image, str) or not image.strip():
        raise ImageNotMappedError(
            f"container image {image!r} is empty; accepted images: {', '.join(ACCEPTED_IMAGES)}"
        )
    python = python_executable or sys.executable
    venv_bin = Path(python).parent
    name = image_name(image)
    python_programs = {
        "python": python,
        "python3": python,
        f"python{sys.version_info.major}.{sys.version_info.minor}": python,
        "sh": SHELL,
    }
    if name == "cachewarden":
        return ImageSpec(
            image=image,
            kind="cachewarden",
            programs={"cachewarden": str(venv_bin / "cachewarden"), **python_programs},
            entrypoint=("cachewarden",),
            default_args=(),
            # Unbuffered so the per-container log file shows what happened before a crash.
            env={"PYTHONUNBUFFERED": "1"},
            working_dir="/",
        )
    if name == "redis":
        return ImageSpec(
            image=image,
            kind="redis",
            programs={"redis-server": REDIS_SERVER, "redis-cli": REDIS_CLI, "sh": SHELL},
            entrypoint=(),
            default_args=("redis-server",),
            working_dir="/data",
            program_for_flags="redis-server",
        )
    if name == "python":
        return ImageSpec(
            image=image,
            kind="python",
            programs=python_programs,
            entrypoint=(),
            default_args=("python3",),
            env={"PYTHONUNBUFFERED": "1"},
            working_dir="/",
        )
    if name == "busybox":
        programs: dict[str, str] = {}
        for program in BUSYBOX_PROGRAMS:
            path = SHELL if program == "sh" else which(program)
            if path:
                programs[program] = path
        return ImageSpec(
            image=image,
            kind="busybox",
            programs=programs,
            entrypoint=(),
            default_args=("sh",),
            working_dir="/",
        )
    raise ImageNotMappedError(
        f"image {image!r} has no local stand-in in the devcluster kubelet (no container runtime "
        f"here); accepted images: {', '.join(ACCEPTED_IMAGES)} (see devcluster/images.py)"
    )


def container_argv(spec: ImageSpec, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """Kubernetes' command/args rules over the image's entrypoint/default args, before program
    mapping: ``command`` replaces the entrypoint (and drops the default args), ``args`` replaces the
    default args."""
    if command:
        return [*command, *(args or [])]
    argv = [*spec.entrypoint, *(args if args else spec.default_args)]
    if spec.program_for_flags and argv and (argv[0].startswith("-") or argv[0].endswith(".conf")):
        argv.insert(0, spec.program_for_flags)
    return argv


def complete_redis_args(args: Sequence[str], pod_ip: str, container_ports: Sequence[int]) -> list[str]:
    """redis-server's arguments (without the program) completed for a process on a pod address.

    A config file stays first (redis requires it there). ``--port`` comes from the first declared
    container port unless the container chose one. ``--bind`` is always the pod's address (last, so
    it wins): ``0.0.0.0`` would collide with every other redis pod on the machine. ``--daemonize no``
    because a forked server looks like an exited container.
    """
    completed = list(args)
    if "--port" not in completed and not any(a.startswith("--port=") for a in completed):
        port = container_ports[0] if container_ports else DEFAULT_REDIS_PORT
        completed += ["--port", str(port)]
    completed += ["--bind", pod_ip, "--daemonize", "no"]
    return completed


def complete_redis_cli_args(args: Sequence[str], pod_ip: str, container_ports: Sequence[int]) -> list[str]:
    """redis-cli's arguments (without the program) aimed at the pod's own server: ``-h <pod IP>``
    unless a host or URL is given, ``-p <first declared port>`` unless a port is given."""
    completed = list(args)
    prefix: list[str] = []
    if not {"-h", "-u", "-s"} & set(completed):
        prefix += ["-h", pod_ip]
    if "-p" not in completed and "-u" not in completed and container_ports:
        prefix += ["-p", str(container_ports[0])]
    return prefix + completed
