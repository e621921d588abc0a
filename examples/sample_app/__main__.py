"""``python -m examples.sample_app``: serve the sample app (host/port from CACHEWARDEN_BIND_HOST/PORT)."""

from __future__ import annotations

import sys

import uvicorn

from cache_runtime.service.logging import configure_logging
from cache_runtime.service.settings import ServiceSettings
from examples.sample_app.app import create_sample_app


def main() -> int:
    """Serve until SIGTERM; the lifespan closes the engine."""
    settings = ServiceSettings.from_env()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_sample_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
