"""kopf handlers, one module per custom resource; importing this package registers them."""

from __future__ import annotations

from cache_operator.handlers import (
    cacheincident,  # noqa: F401
    cachepolicy,  # noqa: F401
)
