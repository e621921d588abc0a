"""The Redis ACL an engine needs: the one list of rules (docs, the chart's notes and the ACL tests
use it through :func:`cache_runtime.config.required_acl_rules`).

Pure; lives with the Redis tier because it lists what that tier sends.
"""

from __future__ import annotations

import re

__all__ = ["acl_rules"]

# Commands the engine sends, whatever its feature switches say (they can change live through
# apply_config, the ACL cannot): reads, writes, invalidation, namespace versions, the lease
# (SET NX PX, then a compare-and-delete script: EVALSHA, SCRIPT LOAD when the script is not cached,
# DEL inside the script), coherence, health, and connecting (AUTH for RESP2, HELLO for RESP3, SELECT
# for a db other than 0, CLIENT SETNAME for ``client_name``). redis-py also sends CLIENT SETINFO on
# connect but ignores its errors, and Redis 7.0 has no such command, so it is not required.
_ACL_COMMANDS = ("get", "mget", "set", "unlink", "del", "incr", "scan", "evalsha", "script|load",
                 "publish", "subscribe", "unsubscribe", "ping", "info", "auth", "hello", "select",
                 "client|setname")
# Redis Cluster clients also read the slot map and the command table (key positions).
_ACL_CLUSTER_COMMANDS = ("cluster|slots", "cluster|shards", "command")



def _acl_glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so an ACL pattern matches ``text`` literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def acl_rules(key_prefix: str, channel: str, *, cluster: bool) -> tuple[str, ...]:
    """The ``ACL SETUSER`` rules of an engine whose keys start with ``key_prefix`` and whose coherence
    channel is ``channel``, and nothing more (add ``on`` and the password): its keys ``{prefix}:*``
    (entries) and ``{prefix}#*`` (namespace versions, leases), its channel, and the commands in
    ``_ACL_COMMANDS`` (plus the cluster ones with ``cluster``).
    """
    if any(char.isspace() for char in channel):
        # ACL rules are space-separated words (also in ACL files): Redis rejects such a pattern.
        raise ValueError(f"coherence.channel: {channel!r} cannot be granted by a Redis ACL rule; accepted: "
                         f"a channel name without whitespace")
    commands = _ACL_COMMANDS + (_ACL_CLUSTER_COMMANDS if cluster else ())
    # the prefix has letters, digits, _.- only: nothing to escape
    return ("resetkeys", f"~{key_prefix}:*", f"~{key_prefix}#*",
            "resetchannels", f"&{_acl_glob_escape(channel)}",
            "-@all", *(f"+{command}" for command in commands))
