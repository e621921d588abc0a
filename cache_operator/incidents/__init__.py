"""Pure logic of CacheIncidents: detection with hysteresis, deterministic names, safety decisions,
execution plans with idempotency keys, and time-boxed overrides.

Nothing here does I/O: the kopf handlers read the cluster, call these functions with plain data, and
write the results back (so every safety fact lives in the cluster, never in the operator's memory).
Times are Unix seconds (``float``) in arguments and RFC 3339 UTC strings in anything stored.
"""

from __future__ import annotations
