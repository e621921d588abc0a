"""CacheIncidents, in one package: the pure logic (detection with hysteresis, deterministic names,
safety decisions, execution plans with idempotency keys, time-boxed overrides) and the two modules
that talk to the cluster. The names say which is which: a module ending in ``_io`` reads and writes
the cluster (through :class:`cache_operator.ports.KubeIO`); every other module is pure.

The pure modules do no I/O: the ``_io`` modules read the cluster, call them with plain data, and
write the results back (so every safety fact lives in the cluster, never in the operator's memory).
Times are Unix seconds (``float``) in arguments and RFC 3339 UTC strings in anything stored.

- :mod:`.detection`: ``summarize_probe(reports, expected_hash)`` then
  ``observe(state, summary, now, settings) -> (state, opened, cleared)``; state = ``status.symptoms``.
- :mod:`.naming`: ``auto_incident_name(policy, symptom, opened_at, window_seconds)`` and labels.
- :mod:`.auto_manifest`: ``render_auto_incident(...)`` manifest and ``auto_incident_status(...)``.
- :mod:`.lifecycle`: resolution and recurrence of automatic incidents, as status computations.
- :mod:`.safety`: ``may_open``, ``may_run``, ``record_action``, ``incidents_to_delete``.
- :mod:`.plan`: ``build_plan``, ``next_steps``, ``outcome``, step records, ``override_for``,
  ``override_active``, ``override_to_lift``.

Talk to the cluster:

- :mod:`.automatic_io`: automatic incidents in the policy's probe pass (``run_detection``: detect,
  open, resolve, collect garbage).
- :mod:`.executor_io`: running one CacheIncident (``handle_incident``), at most once per pod.
- :mod:`.redis_cluster_io`: reading the Kubernetes state of a policy's Redis (read-only) for the pure
  :mod:`.redis_cluster` (``diagnose_cluster``: Redis scaled to 0, OOMKilled, crash-looping, no ready
  endpoint), the cross-layer part of an incident's diagnosis.
"""

from __future__ import annotations
