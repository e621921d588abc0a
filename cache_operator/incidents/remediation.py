"""Remediation that changes settings, verified by its effect: pure logic, no I/O.

The loop of an automatic incident (docs/operator.md, "Self-healing"):

detect -> diagnose -> act -> **verify** -> keep or roll back -> make permanent.

* **act**: a cause whose fix is a setting (the engine's ``config-change`` recommendation: TtlTooShort,
  KeyInconsistency, LargeUncompressedEntries, L1TooSmall, UnboundedGrowth, PoolExhaustion,
  CompressionTooCostly, RedisLatency) becomes the action ``apply-override``: a time-boxed override kept
  in the policy's ``status.override`` (never the spec: GitOps owns it). :func:`bounded_override` clamps
  it to the engine's ranges (:data:`cache_runtime.config.RANGES`), keeps ``l1.max_bytes`` within a share
  of the pod's memory limit, and checks the spec it would make with the spec's own validation.
* **verify**: :func:`symptom_figure` reads the symptom's own figure (hit rate, memory, p95, L1 hit
  rate; pods affected for Redis symptoms) from every probe; :func:`verify_step` collects
  ``verifyProbes`` of them after the action and decides: improved -> ``Remediated``, not improved or
  worse -> ``Ineffective`` (the caller rolls the override back and escalates).
* **make permanent**: :func:`permanent_patch` is the same change as a spec edit: a ``kubectl patch``
  line and the YAML of ``spec.overrides`` for a GitOps commit.

State lives in the incident's ``status.remediation`` (camelCase keys), so an operator restart resumes it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from cache_operator.api.cachepolicy import CachePolicySpec
from cache_runtime.config import RANGES, merge_overrides
from cache_runtime.timefmt import rfc3339

OVERRIDE_ACTION = "apply-override"
PROPOSED = "Proposed"
VERIFYING = "Verifying"
REMEDIATED = "Remediated"
INEFFECTIVE = "Ineffective"
# Condition type and reasons on the incident.
REMEDIATED_CONDITION = "Remediated"  # cache_operator.conditions.REMEDIATED
IMPROVED_REASON = "Improved"
INEFFECTIVE_REASON = "RemediationIneffective"
VERIFYING_REASON = "Verifying"
# L1's byte budget never gets more than this share of the pod's memory limit (the rest: the runtime
# itself, Python objects around the entries, request buffers).
L1_MEMORY_SHARE = 0.5
DEFAULT_MEMORY_LIMIT = "512Mi"  # cache_operator.render.DEFAULT_LIMITS
MIB = 1024 * 1024
# How much better the figure must be to count as improved (an absolute 5 points of hit rate; a tenth
# less memory, latency or evictions per insert; one pod fewer for the Redis symptoms).
HIT_RATE_MARGIN = 0.05
RELATIVE_MARGIN = 0.10

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    """How a symptom is measured: the name shown in status, which way is better, and its unit."""

    name: str
    better: Better
    unit: str


FIGURES: dict[str, Figure] = {
    "LowHitRate": Figure("hitRate", "higher", "ratio"),
    "HighMemory": Figure("memoryMiB", "lower", "MiB"),
    "SlowOperations": Figure("p95Ms", "lower", "ms"),
    # The symptom's own value (evictions per insert) is a ratio of two window counters that both stop
    # moving once L1 is large enough; the L1 hit rate it also requires low is what recovers.
    "L1Thrashing": Figure("l1HitRate", "higher", "ratio"),
}
PODS_AFFECTED = Figure("podsAffected", "lower", "pods")


def figure_of(symptom: str) -> Figure:
    """The figure watched for ``symptom``; symptoms without one (Redis, ConfigDrift) count pods."""
    return FIGURES.get(symptom, PODS_AFFECTED)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _reported(report: Mapping[str, Any], symptom: str) -> Mapping[str, Any] | None:
    for entry in ((report.get("diagnosis") or {}).get("symptoms")) or []:
        if isinstance(entry, Mapping) and entry.get("name") == symptom:
            return entry
    return None


def _pod_figure(report: Mapping[str, Any], symptom: str) -> float | None:
    """One pod's figure: the value its own health report gives the symptom, else the same figure read
    from the report's fields (the symptom does not show there)."""
    if symptom == "L1Thrashing":
        return _number((report.get("hit_rates") or {}).get("l1"))
    entry = _reported(report, symptom)
    if entry is not None and _number(entry.get("value")) is not None:
        return _number(entry.get("value"))
    if symptom == "LowHitRate":
        return _number((report.get("hit_rates") or {}).get("overall"))
    if symptom == "HighMemory":
        memory = _number((report.get("memory") or {}).get("bytes"))
        return None if memory is None else memory / MIB
    if symptom == "SlowOperations":
        p95s = [
            _number(lat.get("p95_ms"))
            for lat in (report.get("latency") or {}).values()
            if isinstance(lat, Mapping)
        ]
        known = [p for p in p95s if p is not None]
        return max(known) if known else None
    return None


def symptom_figure(symptom: str, reports: Mapping[str, Mapping[str, Any] | None]) -> float | None:
    """The symptom's figure over a probe's health answers (pod -> answer, None = not answered): the
    worst pod's (lowest hit rate, most memory, slowest p95, lowest L1 hit rate), or the number
    of pods showing the symptom for symptoms without a figure; None when no pod answered."""
    answered = [report for report in reports.values() if isinstance(report, Mapping)]
    if not answered:
        return None
    figure = figure_of(symptom)
    if figure is PODS_AFFECTED:
        return float(sum(1 for report in answered if _reported(report, symptom) is not None))
    values = [v for v in (_pod_figure(report, symptom) for report in answered) if v is not None]
    if not values:
        return None
    worst = min(values) if figure.better == "higher" else max(values)
    return round(worst, 6)


# Hit-rate figures are judged between probes during verification: hits and lookups since the previous
# probe (hit rate x lookups since the pod started, per pod) show the effect at the next probe. The
# lifetime counts, because they only grow: the pods' detection window (10-60 s) is about as long as a
# probe interval, so the difference of two windows' counts is not the traffic in between.
RATE_FIGURES = {"LowHitRate": "overall", "L1Thrashing": "l1"}
# The exact hit count behind each rate in ``lifetime_hit_rates`` (older runtimes: rate x lookups).
RATE_HITS = {"overall": "hits", "l1": "l1_hits"}


def rate_counts(symptom: str, reports: Mapping[str, Mapping[str, Any] | None]) -> dict[str, list[float]]:
    """Per pod ``[hits, lookups]`` since the pod started (``lifetime_hit_rates``; the health window's
    ``hit_rates`` from a runtime that does not report them) for a hit-rate symptom ({} for others)."""
    key = RATE_FIGURES.get(symptom)
    if key is None:
        return {}
    counts: dict[str, list[float]] = {}
    for pod, report in sorted(reports.items()):
        if not isinstance(report, Mapping):
            continue
        rates = report.get("lifetime_hit_rates") or report.get("hit_rates") or {}
        rate, lookups = _number(rates.get(key)), _number(rates.get("lookups"))
        hits = _number(rates.get(RATE_HITS[key]))
        if hits is not None and lookups is not None:
            counts[pod] = [hits, lookups]
        elif rate is not None and lookups is not None:
            counts[pod] = [round(rate * lookups, 3), lookups]
    return counts


def rate_between(
    previous: Mapping[str, Sequence[float]], current: Mapping[str, Sequence[float]]
) -> float | None:
    """The hit rate of the lookups between two probes, over the pods seen at both (None: no lookup).
    Exact while a pod's window only grows; once it slides, old lookups leave it too, so each pod's
    share is clamped to what is possible."""
    hits = lookups = 0.0
    for pod, (now_hits, now_lookups) in current.items():
        if pod not in previous:
            continue
        delta_lookups = now_lookups - previous[pod][1]
        if delta_lookups <= 0:
            continue
        hits += min(max(now_hits - previous[pod][0], 0.0), delta_lookups)
        lookups += delta_lookups
    return round(hits / lookups, 6) if lookups else None


def probe_figure(
    symptom: str,
    reports: Mapping[str, Mapping[str, Any] | None],
    baseline: Mapping[str, Sequence[float]] | None,
) -> tuple[float | None, dict[str, list[float]], bool]:
    """A verification probe's figure: ``(figure, counts to keep, is_baseline)``. Hit-rate symptoms
    give the hit rate since the previous probe's ``baseline`` counts (the first probe only records
    them: ``is_baseline`` True); the others give :func:`symptom_figure`."""
    if symptom not in RATE_FIGURES:
        return symptom_figure(symptom, reports), {}, False
    counts = rate_counts(symptom, reports)
    if baseline is None:
        return None, counts, True
    return rate_between(baseline, counts), counts, False


def improved(symptom: str, before: float | None, after: float | None, shown: bool) -> bool:
    """Did the figure get better? Always when the symptom no longer shows on any pod; otherwise by at
    least the margin (5 points of a hit rate, 10% of memory or latency, one pod fewer)."""
    if not shown:
        return True
    if before is None or after is None:
        return False
    figure = figure_of(symptom)
    if figure is PODS_AFFECTED:
        return after < before
    if figure.better == "higher":
        return after >= before + HIT_RATE_MARGIN
    return after <= before * (1 - RELATIVE_MARGIN)


def start_verification(
    remediation: Mapping[str, Any] | None, action: str, now: float, verify_probes: int
) -> dict[str, Any]:
    """``status.remediation`` once the action ran: Verifying, no probe yet, ``before`` kept."""
    return {
        **dict(remediation or {}),
        "action": action,
        "state": VERIFYING,
        "verifyProbes": verify_probes,
        "startedAt": rfc3339(now),
        "probes": [],
        "baseline": None,
        "after": None,
        "verifiedAt": None,
        "message": f"watching the symptom's figure for {verify_probes} probe(s)",
    }


def _describe(symptom: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    figure = figure_of(symptom)
    if figure.unit == "ratio":
        return f"{value:.1%}"
    return f"{value:g} {figure.unit}"


def conclude(
    remediation: Mapping[str, Any], symptom: str, after: float | None, shown: bool, now: float
) -> tuple[dict[str, Any], str]:
    """The verdict on ``remediation`` with ``after`` as the final figure: (status.remediation, state)."""
    before = _number(remediation.get("before"))
    good = improved(symptom, before, after, shown)
    state = REMEDIATED if good else INEFFECTIVE
    name = figure_of(symptom).name
    change = f"{name} {_describe(symptom, before)} -> {_describe(symptom, after)}"
    if good:
        cleared = "" if shown else f" ({symptom} cleared)"
        message = f"{remediation.get('action')} helped: {change}{cleared}"
    else:
        probes = len(remediation.get("probes") or [])
        message = f"{remediation.get('action')} did not help: {change} after {probes} probe(s)"
    return {
        **dict(remediation),
        "state": state,
        "after": after,
        "verifiedAt": rfc3339(now),
        "message": message,
    }, state


def verify_step(
    remediation: Mapping[str, Any],
    symptom: str,
    figure: float | None,
    shown: bool,
    now: float,
    *,
    counts: Mapping[str, Sequence[float]] | None = None,
    baseline: bool = False,
) -> tuple[dict[str, Any], str | None]:
    """One probe during verification: (status.remediation, verdict). The verdict is None until
    ``verifyProbes`` probes are in (a probe where no pod answered, or no lookup happened since the
    last one, does not count; nor does a ``baseline`` probe, which only keeps ``counts`` for the
    next one, see :func:`probe_figure`), then Remediated or Ineffective from the last probe's figure
    (:func:`improved`). Anything not Verifying is returned unchanged with no verdict."""
    if remediation.get("state") != VERIFYING:
        return dict(remediation), None
    kept = {**dict(remediation)}
    if counts:
        kept["baseline"] = {pod: list(pair) for pod, pair in counts.items()}
    if baseline:
        return kept, None
    probes = list(remediation.get("probes") or [])
    if figure is not None:
        probes.append(figure)
    current = {**kept, "probes": probes[-100:]}
    wanted = int(remediation.get("verifyProbes") or 1)
    if len(probes) < wanted:
        return current, None
    return conclude(current, symptom, figure, shown, now)


# --------------------------------------------------------------------------------------------------
# bounding an override


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTE]i?|k|m)?$")
_UNITS = {
    None: 1,
    "m": 0.001,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "E": 1e18,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Ei": 1024**6,
}


def memory_bytes(quantity: str | int | None) -> int | None:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``1048576``) in bytes; None when absent or
    not understood."""
    if quantity is None:
        return None
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        return quantity
    match = _QUANTITY.match(str(quantity).strip())
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def pod_memory_limit(spec: CachePolicySpec) -> int | None:
    """The runtime pods' memory limit in bytes (spec.runtime.resources.limits.memory, default 512Mi);
    None in selector mode (the application's pods: unknown here)."""
    if spec.runtime is None:
        return None
    resources = spec.runtime.resources
    limits = (resources.limits if resources is not None else None) or {}
    return memory_bytes(limits.get("memory", DEFAULT_MEMORY_LIMIT))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        target = nested
        *groups, leaf = path.split(".")
        for group in groups:
            target = target.setdefault(group, {})
        target[leaf] = value
    return nested


def bounded_override(
    overrides: Mapping[str, Any],
    spec: Mapping[str, Any],
    memory_limit: int | None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """``overrides`` (a diagnosis' ``config-change``) bounded for the policy ``spec`` (its raw spec
    dict): numbers clamped to the engine's ranges, ``l1.max_bytes`` to :data:`L1_MEMORY_SHARE` of
    ``memory_limit``; then the spec with ``spec.overrides`` merged with it must pass the spec's own
    validation. Returns (nested overrides, notes on what was clamped), or (None, [why]) when it
    cannot be applied (invalid, or no change left)."""
    notes: list[str] = []
    flat = _flatten(overrides)
    for path, value in sorted(flat.items()):
        number = _number(value)
        bounds = RANGES.get(path)
        if number is None or bounds is None:
            continue
        clamped = min(max(number, bounds.low), bounds.high)
        if path == "l1.max_bytes" and memory_limit:
            clamped = min(clamped, int(L1_MEMORY_SHARE * memory_limit))
        if clamped != number:
            notes.append(f"{path} {value} clamped to {clamped:g}")
            flat[path] = int(clamped) if isinstance(value, int) else clamped
    bounded = _nest(flat)
    current = _flatten(dict(spec.get("overrides") or {}))
    if all(current.get(path) == value for path, value in flat.items()):
        return None, [*notes, "the policy's spec.overrides already hold these values"]
    try:
        merged = merge_overrides(dict(spec.get("overrides") or {}), bounded, where="spec.overrides")
        CachePolicySpec.model_validate({**dict(spec), "overrides": merged})
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        return None, [*notes, f"refused by the spec's validation: {first}"]
    return bounded, notes


# --------------------------------------------------------------------------------------------------
# making it permanent


def permanent_patch(
    policy: str, namespace: str, spec_overrides: Mapping[str, Any] | None, override: Mapping[str, Any]
) -> dict[str, str]:
    """The override as a spec change (``status.remediation.permanentPatch``): a ``kubectl patch``
    merge-patch line (a JSON merge patch merges nested objects, so only the override's keys go in)
    and the whole ``spec.overrides`` after it, as YAML to commit where the policy lives (GitOps)."""
    body = json.dumps({"spec": {"overrides": dict(override)}}, separators=(",", ":"), sort_keys=True)
    merged = merge_overrides(dict(spec_overrides or {}), dict(override), where="spec.overrides")
    text = yaml.safe_dump({"spec": {"overrides": merged}}, sort_keys=True, default_flow_style=False)
    return {
        "command": f"kubectl -n {namespace} patch cachepolicy {policy} --type merge -p '{body}'",
        "yaml": text,
    }


def proposal(
    action: str,
    override: Mapping[str, Any] | None,
    *,
    symptom: str,
    before: float | None,
    policy: str,
    namespace: str,
    spec_overrides: Mapping[str, Any] | None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The initial ``status.remediation`` of an automatic incident: what it would do (Proposed), the
    figure watched and its value at detection, and, for an override, the permanent patch."""
    state: dict[str, Any] = {
        "action": action,
        "state": PROPOSED,
        "figure": figure_of(symptom).name,
        "before": before,
        "probes": [],
    }
    if override is not None:
        state["override"] = dict(override)
        state["permanentPatch"] = permanent_patch(policy, namespace, spec_overrides, override)
    if notes:
        state["message"] = "; ".join(notes)[:1024]
    return state
