"""What kopf writes on a new CachePolicy: no finalizer, no annotation (cache_operator.handlers.cachepolicy).

Each would be one more API write per new policy. kopf adds its finalizer to any object with a daemon
unless the registered handler says otherwise, and writes its last-handled-configuration annotation
when a create/update/delete handler exists: both are pinned here against the registry itself, so a
kopf upgrade that changes how handlers are registered fails this test instead of adding writes.
"""

from __future__ import annotations

import kopf

from cache_operator import main  # noqa: F401  (registers every handler)
from cache_operator.api.cachepolicy import PLURAL
from cache_operator.handlers.cachepolicy import DAEMON_RETRY_S, policy_reconciler


def test_the_policy_daemon_is_registered_without_the_finalizer() -> None:
    registry = kopf.get_default_registry()
    daemons = [h for h in registry._spawning._handlers if h.fn is policy_reconciler]
    assert len(daemons) == 1
    assert daemons[0].requires_finalizer is False
    # A daemon that raised starts again in seconds, not kopf's default minute.
    assert daemons[0].backoff == DAEMON_RETRY_S <= 5.0


def test_no_create_update_or_delete_handler_on_policies() -> None:
    registry = kopf.get_default_registry()
    assert not [h.id for h in registry._changing._handlers if h.selector.any_name == PLURAL]
