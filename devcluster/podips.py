"""Addresses of the process kubelet: the node's (``HOST_IP``) and one loopback address 127.0.0.N per
pod, allocated across every kubelet of the machine under a file lock and kept over a kubelet restart
(``pod-ips.json``)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from devcluster.fileutil import write_atomic

log = logging.getLogger("devcluster.kubelet")

HOST_IP = "127.0.0.1"
POD_IP_LOCK_DIR_ENV = "DEVCLUSTER_POD_IP_LOCK_DIR"


def pod_ip_candidates() -> Iterable[str]:
    """127.0.0.2 .. 127.0.0.254, then 127.0.1.1 and onwards (127.0.0.1 is the host)."""
    for third in range(0, 256):
        for fourth in range(2 if third == 0 else 1, 255):
            yield f"127.0.{third}.{fourth}"


@functools.cache
def _all_pod_ips() -> tuple[str, ...]:
    return tuple(pod_ip_candidates())


class PodIpAllocator:
    """Hands each pod its own loopback address and keeps it across kubelet restarts.

    Addresses are claimed machine-wide with an ``flock`` on a file per address (in
    ``/tmp/devcluster-pod-ips`` or ``$DEVCLUSTER_POD_IP_LOCK_DIR``), so two clusters running side by
    side never give the same address to two pods; a lock dies with its kubelet.

    New addresses are handed out round robin from a machine-wide cursor (the file ``.next`` in the
    lock directory), not lowest-free first: a client that still holds a deleted pod's address (a
    runtime pod's Redis connection to a Redis pod just deleted) must find nothing there, not another
    cluster's or test's new pod. Before this, a stopped Redis's address went to the next Redis pod
    on the machine within seconds, and "Redis stopped" looked like "wrong password" to the runtime.
    The cursor is a hint: a lost update only means an address is tried that may be taken, and the
    ``flock`` decides.
    """

    CURSOR_FILE = ".next"

    def __init__(self, state_path: Path, lock_dir: Path, candidates: Sequence[str] | None = None) -> None:
        self.state_path = state_path
        self.lock_dir = lock_dir
        self.candidates: Sequence[str] = candidates if candidates is not None else _all_pod_ips()
        self.assigned: dict[str, str] = {}
        self.locks: dict[str, int] = {}
        self.lock = threading.Lock()
        lock_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            os.chmod(lock_dir, 0o1777)
        previous: dict[str, str] = {}
        if state_path.exists():
            try:
                previous = {str(k): str(v) for k, v in json.loads(state_path.read_text()).items()}
            except (ValueError, AttributeError):
                log.warning("ignoring unreadable %s", state_path)
        for uid, ip in previous.items():
            if self._claim(ip):
                self.assigned[uid] = ip
        self._save()

    def _claim(self, ip: str) -> bool:
        if ip in self.locks:
            return False
        try:
            fd = os.open(self.lock_dir / ip, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.locks[ip] = fd
        return True

    def _save(self) -> None:
        write_atomic(self.state_path, json.dumps(self.assigned, indent=1, sort_keys=True).encode(), 0o644)

    def allocate(self, uid: str) -> str:
        """The pod's address (the same one on every call until released)."""
        with self.lock:
            if uid in self.assigned:
                return self.assigned[uid]
            count = len(self.candidates)
            start = self._read_cursor() % count
            for offset in range(count):
                index = (start + offset) % count
                candidate = self.candidates[index]
                if self._claim(candidate):
                    self.assigned[uid] = candidate
                    self._save()
                    self._write_cursor((index + 1) % count)
                    return candidate
        raise RuntimeError("no free pod address left in 127.0.0.0/16")

    def _read_cursor(self) -> int:
        try:
            return max(0, int((self.lock_dir / self.CURSOR_FILE).read_text().strip() or 0))
        except (OSError, ValueError):
            return 0  # absent or torn: start from the first address; the flocks still decide

    def _write_cursor(self, index: int) -> None:
        with contextlib.suppress(OSError):
            write_atomic(self.lock_dir / self.CURSOR_FILE, str(index).encode(), 0o666)

    def release(self, uid: str) -> None:
        """Give the pod's address back."""
        with self.lock:
            ip = self.assigned.pop(uid, None)
            if ip is not None and ip in self.locks:
                os.close(self.locks.pop(ip))
                self._save()

    def keep_only(self, live_uids: set[str]) -> None:
        """Release addresses of pods that no longer exist (after the first list)."""
        for uid in [u for u in list(self.assigned) if u not in live_uids]:
            self.release(uid)
