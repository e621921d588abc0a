"""Pydantic models of the cachewarden custom resources (spec and status); the CRDs are generated from them."""

from __future__ import annotations

from cache_operator.api.cacheincident import CacheIncidentSpec, CacheIncidentStatus
from cache_operator.api.cachepolicy import CachePolicySpec
from cache_operator.api.cachepolicy_status import CachePolicyStatus
from cache_operator.api.common import API_VERSION, GROUP, VERSION, Condition, SpecError, spec_error_from

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "CacheIncidentSpec",
    "CacheIncidentStatus",
    "CachePolicySpec",
    "CachePolicyStatus",
    "Condition",
    "SpecError",
    "spec_error_from",
]
