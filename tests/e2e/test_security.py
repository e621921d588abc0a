"""Security end to end on devcluster, with the real operator and real runtime pods (issue 8).

- **Token rotation**: replacing the admin token in the policy's Secret takes effect on the running
  pods without a restart (the kubelet re-projects the Secret volume, the runtime re-reads the token
  file), old tokens stop working once they leave the Secret, an overlap (new and old on two lines)
  accepts both and survives more than ten operator passes (drift repair re-applies the Secret every
  10th), a write token lost from the Secret comes back without touching the others, and the operator
  itself goes on probing with the new token (the policy stays Ready). The write token writes data and
  nothing more.
- **No leaks**: a representative flow (a Redis password from a Secret, the data API storing and
  looking up distinctive marker text as keys, values, prompts, questions and options, invalidation by
  a pattern holding marker text, a refused request carrying a bogus token, incidents) and then every
  log line (the operator's log, every container log the kubelet wrote for the namespace, ``kubectl
  logs``) and every status field and Event of the namespace's objects is searched for the password,
  the tokens (raw and base64) and the marker text. Control plane logs are out of scope.

Both run in a namespace enforcing the ``restricted`` Pod Security profile, with the operator at
``--log-level DEBUG`` (the same subprocess as test_operator.py's, one more flag).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from cache_operator import render
from devcluster.cluster import Cluster
from devcluster.testing import KubeTools, restricted_namespace, wait_for
from tests.e2e.support import (
    READY_TIMEOUT,
    OperatorProcess,
    crds,
    free_port,
    get_policy,
    policy_passes,
    policy_yaml,
    ready_policy,
    redis_manifest,
    runtime_pods,
    serve_operator,
    wait_dict,
)

__all__ = ["crds", "restricted_namespace"]  # fixtures, reused


class DebugOperatorProcess(OperatorProcess):
    """``cachewarden operator`` exactly as test_operator.OperatorProcess runs it, plus ``--log-level
    DEBUG``: the leak search covers the operator's (and kopf's) most talkative level."""

    def __init__(self, cluster: Cluster, log_path: Path) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        argv = [
            str(Path(sys.executable).parent / "cachewarden"), "operator", "--all-namespaces",
            "--metrics-port", str(self.metrics_port),
            "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--resolve-service-hosts", "--log-level", "DEBUG",
        ]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


@pytest.fixture(scope="module")
def operator(
    dev_cluster: Cluster, crds: None, kube: KubeTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the module, at DEBUG."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    yield from serve_operator(DebugOperatorProcess(dev_cluster, log), kube)


PORT = 8080


def secret_tokens(kube: KubeTools, namespace: str, policy: str) -> dict[str, str]:
    """The decoded data of the policy's token Secret."""
    secret = kube.kubectl_json("get", "secret", render.token_secret_name(policy), "-n", namespace)
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def put_tokens(kube: KubeTools, namespace: str, policy: str, tokens: dict[str, str | None]) -> None:
    """Replace the Secret's token data, as an administrator rotating it would (kubectl patch); a None
    value removes the key."""
    data = {
        key: None if value is None else base64.b64encode(value.encode()).decode()
        for key, value in tokens.items()
    }
    kube.kubectl(
        "patch",
        "secret",
        render.token_secret_name(policy),
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"data": data}),
    )


def status_code(pod: dict[str, Any], token: str, path: str = "/internal/cache/status") -> int:
    """The pod's answer to an authenticated GET."""
    response = httpx.get(
        f"http://{pod['status']['podIP']}:{PORT}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    return response.status_code


def probed_since(
    operator: OperatorProcess, kube: KubeTools, namespace: str, name: str, passes_before: int
) -> dict[str, Any] | None:
    """The policy once Ready, with no target error, after two more finished passes than
    ``passes_before`` (so at least one pass ran wholly after it). The operator writes status only
    when it changes: an unchanged status after those passes is what they observed."""
    if policy_passes(operator, namespace, name) < passes_before + 2:
        return None
    policy = ready_policy(kube, namespace, name)
    if policy is None:
        return None
    targets = policy["status"].get("targets") or []
    return policy if targets and not any(t.get("lastError") for t in targets) else None


def operator_passes(operator: OperatorProcess, namespace: str, name: str, passes: int, timeout: float) -> int:
    """Wait until the operator has finished at least ``passes`` reconcile passes of the policy from now
    (its per-policy pass counter). Returns the number of passes seen."""
    start = policy_passes(operator, namespace, name)
    deadline = time.monotonic() + timeout
    while (seen := policy_passes(operator, namespace, name) - start) < passes:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {seen} passes of {namespace}/{name} in {timeout} s")
        time.sleep(1)
    return seen


def put_status(pod: dict[str, Any], token: str, key: str) -> int:
    """The pod's answer to a data-API write of ``key``."""
    response = httpx.put(
        f"http://{pod['status']['podIP']}:{PORT}/data/v1/keys/{key}",
        headers={"Authorization": f"Bearer {token}"},
        json={"value": {"by": "test"}, "ttl_s": 60},
        timeout=5,
    )
    return response.status_code


def pod_identity(pods: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(name, uid, restarts) of each pod: equal before and after means nothing restarted."""
    return sorted(
        (
            p["metadata"]["name"],
            p["metadata"]["uid"],
            sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or []),
        )
        for p in pods
    )


def test_admin_token_rotation_takes_effect_without_a_restart(
    operator: OperatorProcess, kube: KubeTools, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    spec = {"preset": "development", "runtime": {"replicas": 2}, "health": {"probeIntervalSeconds": 5}}
    kube.apply(policy_yaml("rot", spec), ns)
    wait_dict(lambda: ready_policy(kube, ns, "rot", 1), READY_TIMEOUT, "policy rot Ready")
    pods = runtime_pods(kube, ns, "rot")
    before = pod_identity(pods)
    tokens = secret_tokens(kube, ns, "rot")
    old, read = tokens[render.ADMIN_TOKEN_KEY], tokens[render.READ_TOKEN_KEY]
    write = tokens[render.WRITE_TOKEN_KEY]
    assert all(status_code(p, old) == 200 for p in pods)
    # The write token an application holds writes data, and only that; the read token cannot write.
    for pod in pods:
        assert put_status(pod, write, "by-writer") == 200
        assert status_code(pod, write, "/data/v1/keys/by-writer") == 200
        assert httpx.post(
            f"http://{pod['status']['podIP']}:{PORT}/internal/cache/gc",
            headers={"Authorization": f"Bearer {write}"},
            timeout=5,
        ).status_code == 403
        assert put_status(pod, read, "by-reader") == 403

    new = secrets.token_urlsafe(32)
    # Overlap first (new token on the first line, old on the second): both work on every pod. The
    # write token is removed at the same time, as in a Secret written before it existed.
    overlap = f"{new}\n{old}\n"
    put_tokens(
        kube,
        ns,
        "rot",
        {render.ADMIN_TOKEN_KEY: overlap, render.READ_TOKEN_KEY: read, render.WRITE_TOKEN_KEY: None},
    )
    wait_for(lambda: all(status_code(p, new) == 200 for p in pods), 60, "the new admin token accepted")
    assert all(status_code(p, old) == 200 for p in pods), "the old token must still work during the overlap"
    # The overlap outlives drift repair: more than ten passes later (the Secret is re-applied on every
    # 10th) both tokens still work, the Secret holds both lines as written, the read token is the same
    # and a new write token was added (and works once the kubelet has projected it).
    waited = time.monotonic()
    seen = operator_passes(operator, ns, "rot", 12, 300)
    print(f"overlap held through {seen} passes in {time.monotonic() - waited:.0f} s")
    assert all(status_code(p, new) == 200 for p in pods)
    assert all(status_code(p, old) == 200 for p in pods), "the overlap was cut short by the operator"
    held = secret_tokens(kube, ns, "rot")
    assert held[render.ADMIN_TOKEN_KEY] == overlap and held[render.READ_TOKEN_KEY] == read
    added = held.get(render.WRITE_TOKEN_KEY)
    assert added and added != write and len(added) >= render.MIN_TOKEN_LENGTH, "no write token added"
    wait_for(lambda: all(put_status(p, added, "by-writer") == 200 for p in pods), 60, "the new write token")
    assert all(put_status(p, write, "by-writer") == 401 for p in pods)
    rotated_at = policy_passes(operator, ns, "rot")

    # Then the old one leaves the Secret: refused (401) everywhere, the new one still accepted.
    put_tokens(kube, ns, "rot", {render.ADMIN_TOKEN_KEY: new, render.READ_TOKEN_KEY: read})
    wait_for(lambda: all(status_code(p, old) == 401 for p in pods), 60, "the old admin token refused")
    assert all(status_code(p, new) == 200 for p in pods)
    # An admin action with the new token works; the read token (untouched) still reads and only reads.
    for pod in pods:
        ip = pod["status"]["podIP"]
        assert (
            httpx.post(
                f"http://{ip}:{PORT}/internal/cache/gc", headers={"Authorization": f"Bearer {new}"}, timeout=5
            ).status_code
            == 200
        )
        assert status_code(pod, read) == 200
        assert (
            httpx.post(
                f"http://{ip}:{PORT}/internal/cache/gc",
                headers={"Authorization": f"Bearer {read}"},
                timeout=5,
            ).status_code
            == 403
        )

    # No pod restarted or was replaced.
    assert pod_identity(runtime_pods(kube, ns, "rot")) == before

    # The operator reads the new token from the Secret: it keeps probing the pods successfully.
    policy = wait_dict(
        partial(probed_since, operator, kube, ns, "rot", rotated_at),
        60,
        "a successful probe after the rotation",
    )
    assert policy["status"]["pods"]["configured"] == 2
    # The operator did not put the old token back (drift repair applies what the Secret holds).
    assert secret_tokens(kube, ns, "rot")[render.ADMIN_TOKEN_KEY].splitlines()[0] == new

    # A bad line stalls the policy (reason InvalidTokenSecret) naming the Secret, key and line, in the
    # status and the operator's log, never the line itself.
    put_tokens(kube, ns, "rot", {render.ADMIN_TOKEN_KEY: f"{new}\nbadline-xy"})
    error = f"Secret {ns}/rot-cachewarden-tokens data['admin-token'] line 2: a token of 10 characters"

    def stalled_for_the_secret() -> dict[str, Any] | None:
        conditions = (get_policy(kube, ns, "rot").get("status") or {}).get("conditions") or []
        stalled = next((c for c in conditions if c.get("type") == "Stalled"), {})
        return stalled if stalled.get("reason") == "InvalidTokenSecret" else None

    stalled = wait_dict(stalled_for_the_secret, 60, "Stalled=True InvalidTokenSecret")
    assert stalled["status"] == "True" and error in stalled["message"]
    assert "badline-xy" not in stalled["message"]
    wait_for(lambda: error in operator.log_path.read_text(errors="replace"), 60, "the bad line logged")
    assert "badline-xy" not in operator.log_path.read_text(errors="replace")
    assert secret_tokens(kube, ns, "rot")[render.ADMIN_TOKEN_KEY] == f"{new}\nbadline-xy"  # left alone
    kube.kubectl("delete", "cachepolicy", "rot", "-n", ns, "--timeout", "60s")


# --- leaks -------------------------------------------------------------------------------------------


class Markers:
    """Distinctive text that must never leave the data plane, one marker per role."""

    def __init__(self) -> None:
        tag = secrets.token_hex(6)
        self.key = f"leakkey{tag}"
        self.value = f"leakvalue{tag}"
        self.prompt = f"leakprompt{tag}"
        self.question = f"leakquestion{tag}"
        self.option = f"leakoption{tag}"
        self.bogus_token = f"leakbogustoken{tag}{secrets.token_hex(8)}"

    def all(self) -> dict[str, str]:
        """name -> marker text."""
        return {name: value for name, value in vars(self).items() if isinstance(value, str)}


def incident_finished(kube: KubeTools, namespace: str, name: str) -> bool:
    """The incident reached Succeeded or Failed."""
    incident = kube.kubectl_json("get", "cacheincident", name, "-n", namespace)
    return (incident.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def data_flow(pod: dict[str, Any], token: str, read: str, m: Markers) -> None:
    """Stores, lookups, reads, invalidations and refused requests carrying the marker text."""
    base = f"http://{pod['status']['podIP']}:{PORT}"
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        key = f"{m.key}/sub key"
        assert (
            client.put(
                f"/data/v1/keys/{quote(key)}", headers=admin, json={"value": {"text": m.value}, "ttl_s": 600}
            ).status_code
            == 200
        )
        got = client.get(f"/data/v1/keys/{quote(key)}", headers={"Authorization": f"Bearer {read}"})
        assert got.status_code == 200 and got.json()["value"] == {"text": m.value}, got.text
        assert (
            client.post("/data/v1/mget", headers=admin, json={"keys": [key, m.key + "-missing"]}).status_code
            == 200
        )
        request = {
            "operation": "qa",
            "text": f"{m.prompt} " * 3,
            "question": m.question,
            "options": {"style": m.option},
        }
        # A miss on the first pod; the second finds what the first stored in Redis.
        assert client.post("/data/v1/ai/lookup", headers=admin, json=request).status_code == 200
        assert (
            client.post(
                "/data/v1/ai/store", headers=admin, json={**request, "value": {"answer": m.value}}
            ).status_code
            == 200
        )
        assert client.post("/data/v1/ai/lookup", headers=admin, json=request).json()["hit"] is True
        short = {"operation": "summarize", "text": m.prompt}
        assert (
            client.post("/data/v1/ai/store", headers=admin, json={**short, "value": m.value}).status_code
            == 200
        )
        assert (
            client.post("/internal/cache/debug/key-generation", headers=admin, json=request).status_code
            == 200
        )
        # Refused requests: a bogus token, a bad body carrying marker text, a too-long key.
        assert (
            client.get(
                f"/data/v1/keys/{quote(key)}", headers={"Authorization": f"Bearer {m.bogus_token}"}
            ).status_code
            == 401
        )
        assert (
            client.put(
                f"/data/v1/keys/{quote(key)}", headers=admin, json={"value": None, "note": m.value}
            ).status_code
            == 422
        )
        assert client.put(f"/data/v1/keys/{m.key * 60}", headers=admin, json={"value": 1}).status_code == 422
        # An operation name of the caller's own (stored under the default TTL; the name is user text).
        assert client.post(
            "/data/v1/ai/store", headers=admin, json={"operation": m.option, "text": m.prompt, "value": 1}
        ).status_code in (200, 422)
        # Invalidation by a pattern holding user text, then a delete.
        assert (
            client.post(
                "/internal/cache/invalidate", headers=admin, params={"pattern": f"*{m.key}*"}
            ).status_code
            == 200
        )
        assert client.delete(f"/data/v1/keys/{quote(key)}", headers=admin).status_code == 200
        for path in (
            "status",
            "metrics",
            "health",
            "key-analysis",
            "recent-errors",
            "invalidation-stats",
            "config/current",
            "memory-stats",
        ):
            assert client.get(f"/internal/cache/{path}", headers=admin).status_code == 200, path


def plant_undecodable_value(
    kube: KubeTools, namespace: str, pods: list[dict[str, Any]], token: str, password: str, m: Markers
) -> None:
    """Overwrite a stored value in Redis with bytes that carry marker text but do not decode, and read it
    on the other pod: the engine logs the decode failure (at DEBUG) and must not log the bytes."""
    key = f"{m.key}planted"
    first, second = (f"http://{p['status']['podIP']}:{PORT}" for p in pods[:2])
    headers = {"Authorization": f"Bearer {token}"}
    stored = httpx.put(f"{first}/data/v1/keys/{key}", headers=headers, json={"value": m.value}, timeout=10)
    assert stored.status_code == 200, stored.text
    redis_pod = kube.kubectl_json("get", "pods", "-n", namespace, "-l", "app=redis")["items"][0]
    client = redis.Redis(host=redis_pod["status"]["podIP"], port=6379, password=password, socket_timeout=5)
    try:
        planted = [k for k in client.scan_iter(match=f"*{key}*") if not k.startswith(b"cw#")]
        assert len(planted) == 1, planted
        client.set(planted[0], b"CW\x01\x09\x00" + m.value.encode() * 4, px=600_000)
    finally:
        client.close()
    missed = httpx.get(f"{second}/data/v1/keys/{key}", headers=headers, timeout=10)
    assert missed.status_code == 404, missed.text  # a counted miss, not an error


def collect_logs(
    cluster: Cluster, kube: KubeTools, namespace: str, operator: OperatorProcess
) -> dict[str, str]:
    """Every log of the flow: the operator's, each container log file the kubelet wrote for the
    namespace (every container and restart), and ``kubectl logs`` of each pod."""
    logs = {"operator": operator.log_path.read_text(errors="replace")}
    log_root = cluster.run_dir / "kubelet" / "logs"
    for path in sorted(log_root.glob(f"{namespace}_*/*/*.log")):
        logs[str(path.relative_to(log_root))] = path.read_text(errors="replace")
    pods = kube.kubectl_json("get", "pods", "-n", namespace)["items"]
    for pod in pods:
        name = pod["metadata"]["name"]
        result = kube.kubectl("logs", "-n", namespace, name, "--all-containers", check=False)
        logs[f"kubectl logs {name}"] = result.stdout
    return logs


def collect_statuses(kube: KubeTools, namespace: str) -> dict[str, str]:
    """Status of every CachePolicy and CacheIncident, every Event, and the rendered ConfigMaps."""
    found: dict[str, str] = {}
    for kind in ("cachepolicies", "cacheincidents"):
        for obj in kube.kubectl_json("get", kind, "-n", namespace)["items"]:
            found[f"{kind}/{obj['metadata']['name']} status"] = json.dumps(obj.get("status"))
    events = kube.kubectl_json("get", "events", "-n", namespace)["items"]
    found["events"] = json.dumps([e.get("message") for e in events])
    for cm in kube.kubectl_json("get", "configmaps", "-n", namespace)["items"]:
        found[f"configmap/{cm['metadata']['name']}"] = json.dumps(cm.get("data"))
    return found


def test_no_secret_token_or_user_text_in_any_log_or_status(
    operator: OperatorProcess, dev_cluster: Cluster, kube: KubeTools, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    markers = Markers()
    password = f"leakpassword{secrets.token_hex(8)}"
    kube.kubectl("create", "secret", "generic", "redis-auth", "-n", ns, f"--from-literal=password={password}")
    redis = redis_manifest(password=password)
    kube.apply(redis, ns)
    spec = {
        "preset": "ai-development",
        # The engine at DEBUG: its most talkative level must not leak either.
        "overrides": {"log_level": "DEBUG", "keys": {"readable_small_text": True}},
        "redis": {
            "url": "redis://redis:6379/0",
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
        },
        "runtime": {"replicas": 2},
        "health": {"probeIntervalSeconds": 5},
    }
    kube.apply(policy_yaml("leak", spec), ns)
    wait_dict(lambda: ready_policy(kube, ns, "leak", 1), READY_TIMEOUT, "policy leak Ready")
    wait_for(
        lambda: (
            ((ready_policy(kube, ns, "leak") or {}).get("status", {}).get("health") or {}).get("redis")
            == "Connected"
        ),
        60,
        "Redis connected (the password works)",
    )
    tokens = secret_tokens(kube, ns, "leak")
    admin, read = tokens[render.ADMIN_TOKEN_KEY], tokens[render.READ_TOKEN_KEY]
    pods = runtime_pods(kube, ns, "leak")
    for pod in pods:
        data_flow(pod, admin, read, markers)
    plant_undecodable_value(kube, ns, pods, admin, password, markers)

    # Incidents through the operator (diagnose reads the pods' health reports into status).
    for name, action, params in (
        ("diag", "diagnose", None),
        ("inv", "invalidate", {"namespace": "default"}),
        ("preset", "apply-preset", {"preset": "conservative", "durationSeconds": 600}),
    ):
        incident = {
            "apiVersion": "cachewarden.io/v1alpha1",
            "kind": "CacheIncident",
            "metadata": {"name": name},
            "spec": {
                "policyRef": {"name": "leak"},
                "action": action,
                "reason": "leak test",
                **({"parameters": params} if params else {}),
            },
        }
        kube.apply(json.dumps(incident), ns)
        wait_for(partial(incident_finished, kube, ns, name), 90, f"incident {name} finished")
    # A successful probe pass after the traffic and the incidents: the status carries health from it.
    passes = policy_passes(operator, ns, "leak")
    wait_dict(partial(probed_since, operator, kube, ns, "leak", passes), 60, "a probe after the incidents")

    needles = {
        **markers.all(),
        "redis password": password,
        "admin token": admin,
        "read token": read,
        "write token": tokens[render.WRITE_TOKEN_KEY],
    }
    for name, value in list(needles.items()):
        needles[f"{name} (base64)"] = base64.b64encode(value.encode()).decode().rstrip("=")
    haystacks = {**collect_logs(dev_cluster, kube, ns, operator), **collect_statuses(kube, ns)}
    assert any(name.startswith("e2e-") or "/" in name for name in haystacks), haystacks.keys()
    runtime_logs = [name for name in haystacks if "_leak-cachewarden-" in name]
    assert len(runtime_logs) >= 2, f"no runtime container logs found: {sorted(haystacks)}"
    assert sum(len(text) for text in haystacks.values()) > 10_000, "suspiciously little was logged"
    # Positive controls: the request lines of the marker-carrying requests are in what was searched
    # (by route template), and so is the incidents' status.
    runtime_text = "".join(haystacks[name] for name in runtime_logs)
    for route in ("/data/v1/keys/{key}", "/data/v1/ai/store", "/internal/cache/invalidate"):
        assert route in runtime_text, f"no request line for {route} in the runtime logs"
    assert any(name.startswith("cacheincidents/diag") for name in haystacks), sorted(haystacks)
    assert " DEBUG " in haystacks["operator"], "the operator was meant to log at DEBUG"
    assert "undecodable L2 entry" in runtime_text, "the planted value's decode failure was meant to be logged"
    leaks = [
        f"{what} in {where}: ...{text[max(0, text.index(needle) - 200) : text.index(needle) + 200]}..."
        for where, text in haystacks.items()
        for what, needle in needles.items()
        if needle in text
    ]
    assert not leaks, "\n\n".join(leaks)
    print(
        f"searched {len(haystacks)} logs and statuses ({sum(len(t) for t in haystacks.values())} characters) "
        f"for {len(needles)} needles: none found"
    )
    kube.kubectl("delete", "cacheincidents", "--all", "-n", ns, "--timeout", "60s")
    kube.kubectl("delete", "cachepolicy", "leak", "-n", ns, "--timeout", "60s")


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "operator" in request.fixturenames:
        print("---- operator log ----\n" + request.getfixturevalue("operator").log_tail())
