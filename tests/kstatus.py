"""kstatus as the tools run it: a small Go helper (tests/kstatus_helper/main.go) built against
sigs.k8s.io/cli-utils at the version pinned in devcluster/versions.env (``CLI_UTILS_VERSION``), into a
cache directory outside the repository (``<cache root>/kstatus/<version>-<source digest>/``, like
devcluster/build.sh builds the cluster's binaries). kstatus is what Helm 4 ``--wait``, Flux without
``healthCheckExprs`` and kpt read: ``status.Compute`` on each object.

The first build downloads the module from the Go proxy (a minute or two); later runs reuse the binary.
Without a ``go`` command the tests that need it skip, saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from devcluster.binaries import cache_root, read_version_table

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "tests" / "kstatus_helper" / "main.go"
BUILD_TIMEOUT_S = 900
KSTATUS_STATUSES = ("InProgress", "Failed", "Current", "Terminating", "NotFound", "Unknown")


class KstatusUnavailable(RuntimeError):
    """The helper cannot be built here (no Go toolchain); the message says why."""


def cli_utils_version() -> str:
    """``CLI_UTILS_VERSION`` from devcluster/versions.env."""
    versions = read_version_table()
    if "CLI_UTILS_VERSION" not in versions:
        raise KeyError("devcluster/versions.env has no CLI_UTILS_VERSION; accepted: CLI_UTILS_VERSION=v0.x.y")
    return versions["CLI_UTILS_VERSION"]


@cache
def helper_binary() -> Path:
    """The built helper (built now when missing). Raises :class:`KstatusUnavailable` without Go and
    RuntimeError naming the log when the build fails."""
    go = shutil.which("go")
    if go is None:
        raise KstatusUnavailable("no `go` command on PATH: the kstatus helper is built from its Go module")
    version = cli_utils_version()
    digest = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()[:12]
    work = cache_root() / "kstatus" / f"{version}-{digest}"
    binary = work / "kstatus-check"
    if binary.is_file():
        return binary
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, work / "main.go")
    (work / "go.mod").write_text("module kstatus-check\n\ngo 1.22\n")
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false"}
    log = work / "build.log"
    with log.open("w") as out:
        for command in (
            [go, "get", f"sigs.k8s.io/cli-utils@{version}"],
            [go, "build", "-o", "kstatus-check.new", "."],
        ):
            done = subprocess.run(
                command,
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0:
                tail = "\n".join(log.read_text().splitlines()[-20:])
                raise RuntimeError(
                    f"building the kstatus helper failed ({' '.join(command[1:3])}); {log}:\n{tail}"
                )
    (work / "kstatus-check.new").rename(binary)
    return binary


def kstatus_read(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """kstatus' ``{"status", "message"}`` for each object, in order."""
    done = subprocess.run(
        [str(helper_binary())],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kstatus helper exited {done.returncode}: {done.stderr[-2000:]}")
    results: list[dict[str, str]] = json.loads(done.stdout)
    for result in results:
        if result["status"] not in KSTATUS_STATUSES:
            raise RuntimeError(f"kstatus helper: status {result['status']!r} ({result.get('error')})")
    return results
