"""The runbook's actions, listed once.

``IncidentAction`` is the CacheIncident ``spec.action`` enum (the operator's model and its CRD use this
type), ``INCIDENT_ACTIONS`` the same names as a tuple, and ``ACTIONS`` what a diagnosis may recommend:
those plus ``config-change`` (a recommendation to edit the policy's settings: the operator never edits
the spec, it runs the change as ``apply-override``, a time-boxed override kept in the policy's status).
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ACTIONS", "DISRUPTIVE_ACTIONS", "INCIDENT_ACTIONS", "IncidentAction"]

IncidentAction = Literal[
    "clear",
    "invalidate",
    "gc",
    "reset-config",
    "apply-preset",
    "apply-override",
    "reconnect-redis",
    "compress-existing",
    "isolate",
    "restore",
    "diagnose",
]
INCIDENT_ACTIONS: tuple[str, ...] = get_args(IncidentAction)
ACTIONS = frozenset((*INCIDENT_ACTIONS, "config-change"))
# Actions that change what pods serve or drop cached data: at most one runs per policy at a time, and a
# recommendation of one is flagged disruptive. One set for the engine's diagnosis and the operator.
DISRUPTIVE_ACTIONS = frozenset(
    {"clear", "invalidate", "reset-config", "apply-preset", "apply-override", "isolate", "restore",
     "compress-existing", "config-change"}
)
