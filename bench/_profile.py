"""CPU profiles of one bench phase: the kube-apiserver's (Go pprof) and the operator's (py-spy).

``bench/scale.py --profile DIR`` uses this to say where the CPU of "300 policies at once" goes. The API
server's profile needs its ``--profiling=true`` (devcluster turns profiling off by default; the bench
turns it on only for its own cluster) and is read with ``go tool pprof -top DIR/<tag>-apiserver.pprof``.
The operator's needs ``py-spy`` (not a dependency of the project: ``pip install py-spy`` into the venv
to get it; without it only the API server is profiled); it samples only the thread holding the GIL
(``--gil``: not threads waiting on sockets) and writes collapsed stacks (``DIR/<tag>-operator.txt``,
one "frame;frame;... count" per line), which ``top_frames`` sums up. Its samples are wall-clock: on a
saturated machine a thread descheduled while it holds the GIL keeps collecting them (a pydantic
validation measured at 0.2 ms of CPU showed as a fifth of the samples), so read the shares as where to
look, then time the suspect alone.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

APISERVER_ARGS = ["--profiling=true"]
_SITE = re.compile(r"\(/[^()]*?/(site-packages|cachewarden|bench)/")


class PhaseProfile:
    """Start both profilers at the beginning of a phase (``seconds`` long); ``wait`` for them after."""

    def __init__(
        self, directory: Path, tag: str, kubectl: Path, kubeconfig: Path, operator_pid: int, seconds: int
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.apiserver_path = directory / f"{tag}-apiserver.pprof"
        self.operator_path = directory / f"{tag}-operator.txt"
        url = f"/debug/pprof/profile?seconds={seconds}"
        self._out = self.apiserver_path.open("wb")
        self._processes = [
            subprocess.Popen(
                [str(kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", url],
                stdout=self._out,
                stderr=subprocess.DEVNULL,
            )
        ]
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        self.operator_profiled = spy is not None
        if spy is not None:
            command = [spy, "record", "--pid", str(operator_pid), "--duration", str(seconds), "--rate", "200"]
            command += ["--gil", "--nonblocking", "--format", "raw", "--output", str(self.operator_path)]
            self._processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def wait(self, timeout_s: float = 60.0) -> list[str]:
        """Wait for both (bounded); lines saying where the profiles are and the operator's top frames."""
        for process in self._processes:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._out.close()
        lines = [f"  API server CPU profile: {self.apiserver_path} (go tool pprof -top -cum <file>)"]
        if not self.operator_profiled:
            lines.append("  operator not profiled: py-spy is not installed (pip install py-spy)")
        elif self.operator_path.exists():
            lines.append(f"  operator CPU profile (GIL held): {self.operator_path}; top frames, inclusive:")
            lines += [f"    {share:5.1f}%  {frame}" for frame, share in top_frames(self.operator_path)]
        return lines


def top_frames(path: Path, count: int = 15, entry_share: float = 60.0) -> list[tuple[str, float]]:
    """The frames with the largest inclusive share of samples in a py-spy ``raw`` file, below the
    entry points (frames in more than ``entry_share`` percent of the samples: ``main``, kopf's run)
    and without the event loop's and threads' own frames."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        for frame in {_SITE.sub("(", frame) for frame in stack.split(";")}:
            inclusive[frame] += samples
    if not total:
        return []
    shares = [(frame, 100.0 * n / total) for frame, n in inclusive.most_common()]
    skip = ("asyncio/", "threading.py", "concurrent/futures", "<module>")
    kept = [(f, share) for f, share in shares if share <= entry_share and not any(s in f for s in skip)]
    return kept[:count]


__all__ = ["APISERVER_ARGS", "PhaseProfile", "top_frames"]
