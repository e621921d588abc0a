"""What the process and its pod know about themselves: RSS, CPU time, network and disk counters.

Read from ``/proc`` (Linux, which every pod is) and :mod:`resource`; each reader returns None where
the file is missing, so the guide's endpoints answer on other systems too. :class:`MemoryHistory`
keeps a bounded series of (time, RSS, L1 bytes) samples from which growth rates are computed: its
first sample is taken when the app is built (L1 empty), so a rate exists from the first request.
"""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process in bytes (``/proc/self/statm``, else the peak RSS)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cpu_seconds() -> float:
    """User + system CPU seconds this process used so far."""
    times = os.times()
    return float(times.user + times.system)


def network_counters() -> dict[str, int] | None:
    """Bytes and packets of the pod's network namespace (``/proc/net/dev``), loopback excluded."""
    try:
        with open("/proc/net/dev") as handle:
            lines = handle.read().splitlines()[2:]
    except OSError:
        return None
    totals = {"rx_bytes": 0, "rx_packets": 0, "tx_bytes": 0, "tx_packets": 0, "interfaces": 0}
    for line in lines:
        name, _, data = line.partition(":")
        fields = data.split()
        if name.strip() == "lo" or len(fields) < 10:
            continue
        totals["rx_bytes"] += int(fields[0])
        totals["rx_packets"] += int(fields[1])
        totals["tx_bytes"] += int(fields[8])
        totals["tx_packets"] += int(fields[9])
        totals["interfaces"] += 1
    return totals


def memory_limit_bytes() -> int | None:
    """The cgroup memory limit of the container, if one is set (v2, then v1)."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as handle:
                raw = handle.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def load_average() -> tuple[float, float, float] | None:
    """The host's 1/5/15-minute load average."""
    try:
        return os.getloadavg()
    except OSError:
        return None


@dataclass(frozen=True)
class Sample:
    """One memory sample."""

    at: float
    rss: int
    l1_bytes: int


class MemoryHistory:
    """Bounded series of memory samples and the process CPU clock, for growth and CPU figures."""

    def __init__(self, capacity: int = 720) -> None:
        self.samples: deque[Sample] = deque(maxlen=capacity)
        self.started_at = time.time()
        self.started_cpu = cpu_seconds()
        self.samples.append(Sample(self.started_at, rss_bytes(), 0))
        self._last_cpu = (time.monotonic(), self.started_cpu)

    def sample(self, l1_bytes: int) -> Sample:
        """Record the current RSS and L1 bytes (at most one sample a second) and return it."""
        now = time.time()
        current = Sample(now, rss_bytes(), int(l1_bytes))
        if now - self.samples[-1].at >= 1.0:
            self.samples.append(current)
        return current

    def growth(self, current: Sample) -> dict[str, Any]:
        """MB/hour growth of RSS and L1 since the first sample, and a trend word."""
        first = self.samples[0]
        hours = max((current.at - first.at) / 3600.0, 1e-9)
        rss_rate = (current.rss - first.rss) / MIB / hours
        l1_rate = (current.l1_bytes - first.l1_bytes) / MIB / hours
        # Recent trend: over the last eight samples.
        window = [*list(self.samples)[-8:], current]
        recent = (window[-1].rss - window[0].rss) / MIB / max((window[-1].at - window[0].at) / 3600.0, 1e-9)
        trend = "stable" if abs(recent) < 1.0 else ("growing" if recent > 0 else "shrinking")
        return {
            "since": first.at,
            "observed_seconds": round(current.at - first.at, 3),
            "samples": len(self.samples),
            "rss_mb_per_hour": round(rss_rate, 3),
            "l1_mb_per_hour": round(l1_rate, 3),
            "recent_rss_mb_per_hour": round(recent, 3),
            "trend": trend,
        }

    def cpu_utilization(self) -> dict[str, float | None]:
        """Process CPU share (1.0 = one core) since start and since the previous call."""
        now, cpu = time.monotonic(), cpu_seconds()
        last_at, last_cpu = self._last_cpu
        self._last_cpu = (now, cpu)
        uptime = max(time.time() - self.started_at, 1e-9)
        recent = (cpu - last_cpu) / (now - last_at) if now - last_at > 0.05 else None
        return {
            "process_cpu_seconds": round(cpu, 3),
            "since_start": round((cpu - self.started_cpu) / uptime, 4),
            "since_last_read": None if recent is None else round(recent, 4),
        }
