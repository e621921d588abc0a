"""What the runtime did and what went wrong, kept in memory in bounded rings.

* :class:`ActionJournal` counts every admin action executed (and every idempotent replay) and keeps
  the last few with their results, so the operator (and a test) can prove an incident step ran
  exactly once on this pod, and ``invalidation-stats`` can list recent invalidations.
* :class:`RecentErrors` is a logging handler that keeps the last warnings and errors of the engine
  and the service (message, logger, level, time: log messages never carry user text or secrets),
  serving ``recent-errors`` without a log pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any


class ActionJournal:
    """Counters and a bounded history of admin actions."""

    def __init__(self, history: int = 100) -> None:
        self.executed: Counter[str] = Counter()
        self.replayed: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.dry_runs: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)
        self.invalidations: deque[dict[str, Any]] = deque(maxlen=history)

    def record(
        self,
        action: str,
        *,
        result: Any,
        replayed: bool = False,
        failed: bool = False,
        dry_run: bool = False,
        idempotency_key: str | None = None,
    ) -> None:
        """Count one action call and remember it."""
        if replayed:
            self.replayed[action] += 1
        elif failed:
            self.failed[action] += 1
        elif dry_run:
            self.dry_runs[action] += 1
        else:
            self.executed[action] += 1
        self.recent.append(
            {
                "action": action,
                "at": time.time(),
                "replayed": replayed,
                "failed": failed,
                "dry_run": dry_run,
                "idempotency_key": idempotency_key,
                "result": result,
            }
        )

    def record_invalidation(
        self, *, pattern: str | None, namespace: str | None, counts: Any, dry_run: bool
    ) -> None:
        """Remember one invalidation for ``invalidation-stats``."""
        self.invalidations.append(
            {
                "at": time.time(),
                "pattern": pattern,
                "namespace": namespace,
                "dry_run": dry_run,
                "counts": counts,
            }
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready counters and history (newest last)."""
        return {
            "executed": dict(self.executed),
            "replayed": dict(self.replayed),
            "failed": dict(self.failed),
            "dry_runs": dict(self.dry_runs),
            "recent": list(self.recent),
        }


class RecentErrors(logging.Handler):
    """Keeps the newest WARNING-or-worse records of chosen loggers, for ``recent-errors``."""

    def __init__(self, capacity: int = 200, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock_ring = threading.Lock()
        self.total = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Store the record's level, logger, message and structured fields (no traceback text)."""
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        entry: dict[str, Any] = {
            "at": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message[:500],
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry["fields"] = {key: value for key, value in fields.items() if key != "text"}
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        with self._lock_ring:
            self._records.append(entry)
            self.total += 1

    def describe(self, limit: int = 50) -> dict[str, Any]:
        """The newest ``limit`` entries, newest first, and the total seen since start."""
        with self._lock_ring:
            entries = list(self._records)[-limit:]
        entries.reverse()
        return {"total": self.total, "returned": len(entries), "errors": entries}

    def attach(self, *logger_names: str) -> None:
        """Start collecting from these loggers (idempotent)."""
        for name in logger_names:
            target = logging.getLogger(name)
            if self not in target.handlers:
                target.addHandler(self)

    def detach(self, *logger_names: str) -> None:
        """Stop collecting from these loggers."""
        for name in logger_names:
            logging.getLogger(name).removeHandler(self)
