"""``python -m examples.sample_app``: serve the sample app (host/port from CACHEWARDEN_BIND_HOST/PORT)."""

from __future__ import annotations

import sys

from cache_runtime.service.logging import configure_logging
from cache_runtime.service.runtime_main import serve
from cache_runtime.service.settings import ServiceSettings
from examples.sample_app.app import create_sample_app


def main() -> int:
    """Serve until SIGTERM; the lifespan closes the engine."""
    settings = ServiceSettings.from_env()
    configure_logging(settings.log_level)
    return serve(create_sample_app(settings), settings)


if __name__ == "__main__":
    sys.exit(main())
