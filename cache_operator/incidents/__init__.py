"""Pure logic of CacheIncidents: detection with hysteresis, deterministic names, safety decisions,
execution plans with idempotency keys, and time-boxed overrides.

Nothing here does I/O: the kopf handlers read the cluster, call these functions with plain data, and
write the results back (so every safety fact lives in the cluster, never in the operator's memory).
Times are Unix seconds (``float``) in arguments and RFC 3339 UTC strings in anything stored.

- :mod:`.detection`: ``summarize_probe(reports, expected_hash)`` then
  ``observe(state, summary, now, settings) -> (state, opened, cleared)``; state = ``status.symptoms``.
- :mod:`.naming`: ``auto_incident_name(policy, symptom, opened_at, window_seconds)`` and labels.
- :mod:`.autoincident`: ``render_auto_incident(...)`` manifest and ``auto_incident_status(...)``.
- :mod:`.safety`: ``may_open``, ``may_run``, ``record_action``, ``incidents_to_delete``.
- :mod:`.plan`: ``build_plan``, ``next_steps``, ``outcome``, step records, ``override_for``,
  ``override_active``, ``override_to_lift``.
"""

from __future__ import annotations
