"""kopf's diff-base storage, without a deep copy of every CachePolicy watch event.

On every watch event kopf computes the object's "essence" (``DiffBaseStorage.build``: a deep copy of
the whole body, then status and most metadata dropped) and compares it with the essence stored after
the last on.create/on.update/on.resume handler. CachePolicy has no such handler (a raw event handler and
a daemon, :mod:`cache_operator.handlers.cachepolicy`) and never carries the stored annotation, so for a
policy that comparison always finds "changed" whatever the essence holds: the deep copy of each event's
body (its status, managedFields and kubectl's last-applied annotation included) was pure cost, about a
tenth of the operator's CPU while 300 new policies arrived at once (bench/scale.py under py-spy).

:class:`LeanDiffBaseStorage` returns the spec alone (not copied here; kopf's progress storage copies
the essence it is given) for the kinds named ``lean_kinds`` when kopf asks for no extra fields, and
kopf's own essence for everything else: CacheIncident's create/resume/delete handlers keep the
behaviour they were written against.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, cast

import kopf


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, with a spec-only essence for ``lean_kinds`` ((apiVersion, kind) pairs,
    kinds without changing handlers)."""

    def __init__(self, *, lean_kinds: Collection[tuple[str, str]], **options: Any) -> None:
        super().__init__(**options)
        self.lean_kinds = frozenset(lean_kinds)

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """The spec alone for a lean kind (no deep copy of the body); kopf's essence otherwise."""
        wanted = list(extra_fields or ())
        if not wanted and (body.get("apiVersion"), body.get("kind")) in self.lean_kinds:
            return cast(kopf.BodyEssence, {"spec": body.get("spec") or {}})
        return super().build(body=body, extra_fields=wanted or None)
