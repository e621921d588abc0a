"""``cachewarden runtime``: serve the runtime app with uvicorn until SIGTERM, then shut down gracefully.

On SIGTERM (Kubernetes' pod stop) uvicorn stops accepting connections, lets requests in flight finish
(up to ``--shutdown-grace`` seconds, keep it below the pod's terminationGracePeriodSeconds), then runs
the app's lifespan shutdown, which stops the config poller and closes the engine and its Redis pools.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from cache_runtime.service.settings import ServiceSettings, SettingsError

log = logging.getLogger("cachewarden.runtime")


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``cachewarden runtime``; each also reads ``CACHEWARDEN_<NAME>`` from the environment."""
    parser = argparse.ArgumentParser(
        prog="cachewarden runtime",
        description="Run the cache runtime service (engine + admin/data API, /metrics, /healthz, /readyz). "
        "Every flag can also be set as CACHEWARDEN_<FLAG> (e.g. CACHEWARDEN_CONFIG_PATH); "
        "flags win. With DEVCLUSTER_ROOT set, absolute paths are read below it.",
    )
    parser.add_argument("--host", help="bind address (env CACHEWARDEN_BIND_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8080)")
    parser.add_argument("--config-path", help="the mounted config file (JSON or YAML)")
    parser.add_argument("--preset", help="start preset when there is no config file")
    parser.add_argument("--redis-url", help="Redis URL that overrides the config's (pod-local)")
    parser.add_argument("--redis-url-file", help="file holding the Redis URL (a mounted Secret)")
    parser.add_argument("--redis-password-file", help="file holding the Redis password (a mounted Secret)")
    parser.add_argument("--admin-token-file", help="file with the admin bearer token(s), one per line")
    parser.add_argument("--read-token-file", help="file with the read-only bearer token(s)")
    parser.add_argument("--write-token-file", help="file with the data-write bearer token(s)")
    parser.add_argument(
        "--auth-disabled", action="store_const", const=True, help="no auth at all: local development only"
    )
    parser.add_argument(
        "--config-poll-interval",
        dest="config_poll_interval_s",
        type=float,
        help="seconds between checks of the config file (default 2)",
    )
    parser.add_argument(
        "--shutdown-grace",
        dest="shutdown_grace_s",
        type=float,
        help="seconds in-flight requests get after SIGTERM (default 20)",
    )
    parser.add_argument(
        "--resp-port",
        type=int,
        help="also serve the data API over the Redis protocol on this port (env CACHEWARDEN_RESP_PORT; "
        "default: off)",
    )
    parser.add_argument("--resp-host", help="bind address of the Redis protocol (default: --host)")
    parser.add_argument(
        "--resp-max-connections", type=int, help="Redis-protocol connections per pod (default 1000)"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the app, serve until a signal; return the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    flags = {name: value for name, value in vars(args).items() if value is not None}
    try:
        settings = ServiceSettings.from_env(**flags)
    except SettingsError as exc:
        print(f"cachewarden runtime: {exc}", file=sys.stderr)
        return 2

    from cache_runtime.service.app import create_app
    from cache_runtime.service.logging import configure_logging

    configure_logging(settings.log_level)
    return serve(create_app(settings), settings)


def serve(app: Any, settings: ServiceSettings) -> int:
    """Run ``app`` under uvicorn until SIGTERM/SIGINT; 0 after a graceful stop, 1 if it never started.

    uvicorn re-raises the signal that stopped it once it has drained, so that the process "dies of
    SIGTERM". A stop we asked for and completed is a success, so SIGTERM gets a no-op handler for
    that re-raise and the exit code is 0 (Kubernetes reads a non-zero code as a crash).
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(0, round(settings.shutdown_grace_s)),  # uvicorn takes whole seconds
        server_header=False,
        # One process, one engine: workers would each build their own cache and split the hit rate.
        workers=1,
    )
    server = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, _stopped_by_sigterm)
    log.info(
        "runtime listening",
        extra={"fields": {"host": settings.host, "port": settings.port, "resp_port": settings.resp_port}},
    )
    server.run()
    # uvicorn sets started only if the socket bound and the lifespan startup succeeded.
    return 0 if server.started else 1


def _stopped_by_sigterm(signum: int, frame: FrameType | None) -> None:
    """Receives uvicorn's re-raised SIGTERM after the graceful shutdown finished."""


if __name__ == "__main__":
    sys.exit(main())
