"""The process kubelet against the real API server: pods bound to the fake node run as local
processes on their own 127.0.0.N addresses, see their env and volumes, get a real ServiceAccount
token whose RBAC the API server enforces, restart when they crash or fail a liveness probe, and stop
when deleted.

Every pod here carries the restricted Pod Security settings (:func:`restricted_pod_spec`): the test
namespaces enforce that profile, and none of these tests needs anything it forbids (no host network,
host paths, privileges or added capabilities). devcluster's kubelet does not apply securityContext
(pods are processes of the cluster's user), so what each test checks is unchanged by it."""

from __future__ import annotations

import json
import textwrap
import threading
import urllib.request
from typing import Any

import redis
from kubernetes import client as k8s_client

from devcluster.cluster import Cluster
from devcluster.controlplane import ApiError, process_start_ticks
from devcluster.kubeapi import Informer, KubeApi, raw_watch_func
from devcluster.testing import KubeTools, restricted_pod_spec, wait_for

TIMEOUT = 90.0


# --- helpers --------------------------------------------------------------------------------------


def get_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}"))


def list_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    return list(cluster.api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"])


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod.get("status", {}).get("phase") == "Running" and conditions.get("Ready") == "True"


def container_status(pod: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return next((s for s in statuses if name is None or s.get("name") == name), {})


def wait_pod(cluster: Cluster, namespace: str, name: str, check: Any, what: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pod = get_pod(cluster, namespace, name)
        return pod if check(pod) else None

    result: dict[str, Any] = wait_for(probe, TIMEOUT, f"pod {namespace}/{name}: {what}")
    return result


def container_log(cluster: Cluster, pod: dict[str, Any], container: str, restart: int = 0) -> str:
    meta = pod["metadata"]
    path = (
        cluster.run_dir
        / "kubelet"
        / "logs"
        / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
        / container
        / f"{restart}.log"
    )
    return path.read_text() if path.exists() else ""


def pid_of(pod: dict[str, Any], container: str | None = None) -> int:
    container_id = container_status(pod, container)["containerID"]
    assert container_id.startswith("devcluster://"), container_id
    return int(container_id.removeprefix("devcluster://"))


def python_pod(name: str, program: str, **extra: Any) -> dict[str, Any]:
    """A pod of one `python` container running ``program`` (passed through an env var, so any
    quoting survives the trip)."""
    container = {
        "name": "main",
        "image": "python:3.12",
        "command": ["python", "-c", "$(PROGRAM)"],
        "env": [{"name": "PROGRAM", "value": textwrap.dedent(program)}, *extra.pop("env", [])],
        **extra.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": restricted_pod_spec({"containers": [container], "terminationGracePeriodSeconds": 2, **extra}),
    }


def apply(kube: KubeTools, namespace: str, *objects: dict[str, Any]) -> None:
    kube.apply("\n---\n".join(json.dumps(o) for o in objects), namespace=namespace)


# --- tests ----------------------------------------------------------------------------------------


def test_node_is_ready_with_a_renewed_lease(dev_cluster: Cluster) -> None:
    node = dev_cluster.api.get(f"/api/v1/nodes/{dev_cluster.node_name}")
    conditions = {c["type"]: c for c in node["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}
    assert int(node["status"]["capacity"]["pods"]) > 0
    lease = dev_cluster.api.get(
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{dev_cluster.node_name}"
    )
    assert lease["spec"]["holderIdentity"] == dev_cluster.node_name
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"


def test_deployment_replicas_serve_http_on_their_own_addresses(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": restricted_pod_spec({
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.12",
                            "command": ["python", "-m", "http.server", "$(PORT)", "--bind", "$(POD_IP)"],
                            "env": [
                                {"name": "PORT", "value": "8080"},
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            ],
                            "ports": [{"containerPort": 8080}],
                        }
                    ],
                }),
            },
        },
    }
    apply(kube, namespace, deployment)

    def two_ready() -> list[dict[str, Any]] | None:
        ready = [p for p in list_pods(dev_cluster, namespace, "app=web") if is_ready(p)]
        return ready if len(ready) == 2 else None

    pods = wait_for(two_ready, TIMEOUT, "2 Ready web pods")
    addresses = [p["status"]["podIP"] for p in pods]
    assert len(set(addresses)) == 2
    for pod, address in zip(pods, addresses, strict=True):
        assert address.startswith("127.") and address != "127.0.0.1"
        assert pod["status"]["podIPs"] == [{"ip": address}]
        assert pod["status"]["hostIP"] == "127.0.0.1"
        assert pod["spec"]["nodeName"] == dev_cluster.node_name
        with urllib.request.urlopen(f"http://{address}:8080/", timeout=10) as response:
            assert response.status == 200
        assert f"Serving HTTP on {address} port 8080" in container_log(dev_cluster, pod, "web")
        # kubectl logs goes API server -> the kubelet's log endpoint.
        logs = kube.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
        assert f"Serving HTTP on {address} port 8080" in logs


def test_env_resolution_waits_for_a_missing_key_then_starts(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"},
    }
    program = """
        import json, os
        keys = ["PASSWORD", "PORT", "APP_mode", "NAME", "NS", "SA", "NODE", "IP", "GREETING",
                "DEVCLUSTER_POD_IP", "CACHEWARDEN_BIND_HOST", "KUBERNETES_SERVICE_HOST"]
        print("ENV " + json.dumps({k: os.environ.get(k) for k in keys}), flush=True)
    """
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "PORT", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "port"}}},
        {
            "name": "OPTIONAL",
            "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": True}},
        },
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello $(NAME) on $(PORT)"},
    ]
    pod = python_pod(
        "env",
        program,
        env=env,
        restartPolicy="Never",
        container={"envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}]},
    )
    apply(kube, namespace, secret, pod)
    waiting = wait_pod(
        dev_cluster,
        namespace,
        "env",
        lambda p: (
            container_status(p).get("state", {}).get("waiting", {}).get("reason")
            == "CreateContainerConfigError"
        ),
        "CreateContainerConfigError",
    )
    assert container_status(waiting)["state"]["waiting"]["message"] == (
        f"container 'main': envFrom[0]: ConfigMap {namespace}/settings not found "
        "(mark the reference optional: true to start without it)"
    )

    apply(
        kube,
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "fast"}},
    )
    wait_pod(
        dev_cluster,
        namespace,
        "env",
        lambda p: (
            "couldn't find key port in ConfigMap"
            in container_status(p).get("state", {}).get("waiting", {}).get("message", "")
        ),
        "the missing key named",
    )

    apply(
        kube,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"mode": "fast", "port": "8080"},
        },
    )
    done = wait_pod(
        dev_cluster, namespace, "env", lambda p: p["status"].get("phase") == "Succeeded", "Succeeded"
    )
    line = next(x for x in container_log(dev_cluster, done, "main").splitlines() if x.startswith("ENV "))
    seen = json.loads(line[4:])
    ip = done["status"]["podIP"]
    assert seen == {
        "PASSWORD": "s3cret",
        "PORT": "8080",
        "APP_mode": "fast",
        "NAME": "env",
        "NS": namespace,
        "SA": "default",
        "NODE": dev_cluster.node_name,
        "IP": ip,
        "GREETING": "hello env on 8080",
        "DEVCLUSTER_POD_IP": ip,
        "CACHEWARDEN_BIND_HOST": ip,
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
    }
    terminated = container_status(done)["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"


def test_configmap_volume_is_visible_and_follows_updates(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "greeting"},
        "data": {"text": "hello"},
    }
    program = """
        import os, pathlib, time
        mounted = pathlib.Path(os.environ["DEVCLUSTER_ROOT"]) / "etc/greeting/text"
        assert os.environ["DEVCLUSTER_MOUNT_CONFIG"] == str(mounted.parent)
        last = None
        for _ in range(3000):
            text = mounted.read_text()
            if text != last:
                print("SEEN " + text, flush=True)
                last = text
            time.sleep(0.1)
    """
    pod = python_pod(
        "reader",
        program,
        container={"volumeMounts": [{"name": "config", "mountPath": "/etc/greeting", "readOnly": True}]},
        volumes=[{"name": "config", "configMap": {"name": "greeting"}}],
    )
    apply(kube, namespace, configmap, pod)
    running = wait_pod(dev_cluster, namespace, "reader", is_ready, "Ready")
    wait_for(lambda: "SEEN hello" in container_log(dev_cluster, running, "main"), TIMEOUT, "hello in the log")
    kube.kubectl(
        "patch",
        "configmap",
        "greeting",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"text": "bonjour"}}),
    )
    wait_for(
        lambda: "SEEN bonjour" in container_log(dev_cluster, running, "main"), TIMEOUT, "bonjour in the log"
    )
    assert container_status(get_pod(dev_cluster, namespace, "reader"))["restartCount"] == 0


RBAC_PROGRAM = """
    import os
    from kubernetes import client, config
    config.load_kube_config()  # $KUBECONFIG, written by the kubelet with the pod's bound token
    try:
        client.CoreV1Api().list_namespaced_pod(os.environ["NS"])
        print("STATUS 200", flush=True)
    except client.exceptions.ApiException as exc:
        print(f"STATUS {exc.status}", flush=True)
"""


def test_service_account_token_is_real_and_rbac_is_enforced(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lister"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-lister"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lister"},
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-lister"},
        },
    ]
    ns_env = [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    allowed = python_pod(
        "allowed", RBAC_PROGRAM, env=ns_env, restartPolicy="Never", serviceAccountName="lister"
    )
    denied = python_pod(
        "denied", RBAC_PROGRAM, env=ns_env, restartPolicy="Never", serviceAccountName="nobody"
    )
    apply(kube, namespace, *objects, allowed, denied)
    results = {}
    for name in ("allowed", "denied"):
        pod = wait_pod(
            dev_cluster, namespace, name, lambda p: p["status"].get("phase") == "Succeeded", "Succeeded"
        )
        results[name] = wait_for(
            lambda pod=pod: next(
                (x for x in container_log(dev_cluster, pod, "main").splitlines() if x.startswith("STATUS ")),
                None,
            ),
            TIMEOUT,
            f"{name}: the status line",
        )
    assert results == {"allowed": "STATUS 200", "denied": "STATUS 403"}
    # The token came from the TokenRequest API, bound to the pod: the API server reports it as such.
    review = dev_cluster.api.request(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": _token_of_running_pod(dev_cluster, kube, namespace)},
        },
    )
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:lister"
    assert review["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["holder"]


def _token_of_running_pod(cluster: Cluster, kube: KubeTools, namespace: str) -> str:
    program = """
        import os, pathlib, time
        secrets = pathlib.Path(os.environ["DEVCLUSTER_ROOT"]) / "var/run/secrets/kubernetes.io"
        token = secrets / "serviceaccount/token"
        print("TOKEN " + token.read_text(), flush=True)
        time.sleep(300)
    """
    apply(kube, namespace, python_pod("holder", program, serviceAccountName="lister"))
    pod = wait_pod(cluster, namespace, "holder", is_ready, "Ready")
    line = wait_for(
        lambda: next(
            (x for x in container_log(cluster, pod, "main").splitlines() if x.startswith("TOKEN ")), None
        ),
        TIMEOUT,
        "the token line",
    )
    return str(line[len("TOKEN ") :])


def test_unknown_image_fails_the_pod_with_a_clear_message(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": restricted_pod_spec({"containers": [{"name": "nginx", "image": "nginx:1.27"}]}),
    }
    apply(kube, namespace, pod)
    seen = wait_pod(
        dev_cluster,
        namespace,
        "web",
        lambda p: container_status(p).get("state", {}).get("waiting", {}).get("reason") == "ImageNotMapped",
        "ImageNotMapped",
    )
    message = container_status(seen)["state"]["waiting"]["message"]
    assert "image 'nginx:1.27' has no local stand-in" in message
    assert (
        "accepted images: <registry>/cachewarden:<tag>, redis:<tag>, python:<tag>, busybox:<tag>" in message
    )
    assert seen["status"]["phase"] == "Pending"
    events = dev_cluster.api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    assert any(e["reason"] == "Failed" and "nginx:1.27" in e["message"] for e in events)


def test_deleting_a_pod_stops_its_processes(dev_cluster: Cluster, kube: KubeTools, namespace: str) -> None:
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL after the grace period ends this
        print("started", flush=True)
        time.sleep(600)
    """
    pod = python_pod("sleepy", "import time; time.sleep(600)", terminationGracePeriodSeconds=1)
    pod["spec"]["containers"].append(
        {"name": "stubborn", "image": "python", "command": ["python", "-c", textwrap.dedent(stubborn)]}
    )
    pod["spec"] = restricted_pod_spec(pod["spec"])  # the added container too
    apply(kube, namespace, pod)
    running = wait_pod(dev_cluster, namespace, "sleepy", is_ready, "Ready")
    wait_for(lambda: "started" in container_log(dev_cluster, running, "stubborn"), TIMEOUT, "SIGTERM ignored")
    pids = {name: pid_of(running, name) for name in ("main", "stubborn")}
    ticks = {name: process_start_ticks(pid) for name, pid in pids.items()}
    assert all(t is not None for t in ticks.values())
    dev_cluster.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/sleepy")

    def gone() -> bool:
        try:
            get_pod(dev_cluster, namespace, "sleepy")
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for(gone, TIMEOUT, "the pod to disappear from the API")
    for name, pid in pids.items():
        assert process_start_ticks(pid) != ticks[name], f"container {name} (pid {pid}) still runs"


def test_crashing_container_restarts_with_back_off(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    apply(kube, namespace, python_pod("crash", "import sys; print('bye', flush=True); sys.exit(3)"))
    pod = wait_pod(
        dev_cluster,
        namespace,
        "crash",
        lambda p: container_status(p).get("restartCount", 0) >= 1,
        "a restart",
    )
    status = container_status(pod)
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"  # restartPolicy Always: restarting, not failed
    assert kube.kubectl("logs", "-n", namespace, "crash", "--previous").stdout == "bye\n"
    assert "bye" in container_log(dev_cluster, pod, "main", restart=0)


def test_liveness_probe_failure_restarts_and_readiness_gates_ready(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    program = """
        import http.server, os
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/ready" else 500)
                self.end_headers()
        http.server.HTTPServer((os.environ["DEVCLUSTER_POD_IP"], 8080), Handler).serve_forever()
    """
    pod = python_pod(
        "probed",
        program,
        container={
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
            "livenessProbe": {
                "httpGet": {"path": "/alive", "port": "http"},
                "periodSeconds": 1,
                "failureThreshold": 2,
                "initialDelaySeconds": 2,
            },
        },
    )
    apply(kube, namespace, pod)
    wait_pod(dev_cluster, namespace, "probed", is_ready, "Ready through its readiness probe")
    restarted = wait_pod(
        dev_cluster,
        namespace,
        "probed",
        lambda p: container_status(p).get("restartCount", 0) >= 1,
        "a liveness restart",
    )
    last = container_status(restarted)["lastState"]["terminated"]
    assert "liveness probe failed: HTTP probe failed with statuscode: 500" in last["message"]


def test_redis_image_runs_debians_redis_on_the_pod_address(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "redis"},
        "spec": restricted_pod_spec({
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "redis",
                    "image": "docker.io/library/redis:7-alpine",
                    "args": ["--maxmemory", "16mb"],
                    "ports": [{"name": "redis", "containerPort": 6390}],
                    "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 1},
                }
            ],
        }, user_id=999),  # the official image's redis user
    }
    apply(kube, namespace, pod)
    ready = wait_pod(dev_cluster, namespace, "redis", is_ready, "Ready through redis-cli ping")
    client = redis.Redis(host=ready["status"]["podIP"], port=6390, socket_timeout=5)
    try:
        assert client.ping() is True
        assert client.config_get("maxmemory") == {"maxmemory": str(16 * 1024 * 1024)}
    finally:
        client.close()


def test_failed_container_fails_the_pod(dev_cluster: Cluster, kube: KubeTools, namespace: str) -> None:
    program = """
        import time
        for n in range(3):
            print(f"line {n}", flush=True)
            time.sleep(0.5)
        raise SystemExit(7)
    """
    apply(kube, namespace, python_pod("once", program, restartPolicy="Never"))
    wait_pod(
        dev_cluster,
        namespace,
        "once",
        lambda p: container_status(p).get("state", {}).get("running"),
        "running",
    )
    # Following ends when the container does, with everything it wrote.
    followed = kube.kubectl("logs", "-f", "-n", namespace, "once", timeout=TIMEOUT).stdout
    assert followed == "line 0\nline 1\nline 2\n"
    pod = wait_pod(dev_cluster, namespace, "once", lambda p: p["status"].get("phase") == "Failed", "Failed")
    assert container_status(pod)["state"]["terminated"]["exitCode"] == 7
    assert container_status(pod)["restartCount"] == 0
    ready = {c["type"]: c for c in pod["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"


def test_init_container_runs_first_and_shares_an_empty_dir(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    init = """
        import os, pathlib
        (pathlib.Path(os.environ["DEVCLUSTER_MOUNT_WORK"]) / "prepared").write_text("by init")
    """
    main = """
        import os, pathlib, time
        prepared = pathlib.Path(os.environ["DEVCLUSTER_MOUNT_WORK"]) / "prepared"
        print("MAIN SAW " + prepared.read_text(), flush=True)
        time.sleep(300)
    """
    mount = [{"name": "work", "mountPath": "/work"}]
    pod = python_pod(
        "staged",
        main,
        container={"volumeMounts": mount},
        volumes=[{"name": "work", "emptyDir": {}}],
        initContainers=[
            {
                "name": "prepare",
                "image": "python",
                "command": ["python", "-c", textwrap.dedent(init)],
                "volumeMounts": mount,
            }
        ],
    )
    apply(kube, namespace, pod)
    ready = wait_pod(dev_cluster, namespace, "staged", is_ready, "Ready")
    init_status = ready["status"]["initContainerStatuses"][0]
    assert init_status["state"]["terminated"]["exitCode"] == 0
    conditions = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    assert conditions["Initialized"] == "True"
    wait_for(
        lambda: "MAIN SAW by init" in container_log(dev_cluster, ready, "main"), TIMEOUT, "main read the file"
    )


def test_failed_init_container_fails_the_pod_before_its_containers_run(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    pod = python_pod(
        "blocked",
        "print('main ran', flush=True)",
        restartPolicy="Never",
        initContainers=[
            {"name": "check", "image": "python", "command": ["python", "-c", "raise SystemExit(5)"]}
        ],
    )
    apply(kube, namespace, pod)
    failed = wait_pod(
        dev_cluster, namespace, "blocked", lambda p: p["status"].get("phase") == "Failed", "Failed"
    )
    assert failed["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 5
    assert container_status(failed)["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert container_log(dev_cluster, failed, "main") == ""
    conditions = {c["type"]: c for c in failed["status"]["conditions"]}
    assert conditions["Initialized"]["status"] == "False"


def test_without_a_probe_ready_means_listening_on_the_declared_port(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    # The server listens only once the test opens a gate file in the pod's emptyDir, so "not Ready
    # while running" is observed without any timing assumption.
    program = """
        import http.server, os, pathlib, time
        gate = pathlib.Path(os.environ["DEVCLUSTER_MOUNT_GATE"]) / "open"
        print("waiting for the gate", flush=True)
        for _ in range(3000):
            if gate.exists():
                break
            time.sleep(0.1)
        handler = http.server.SimpleHTTPRequestHandler
        http.server.HTTPServer((os.environ["DEVCLUSTER_POD_IP"], 8081), handler).serve_forever()
    """
    pod = python_pod(
        "gated",
        program,
        volumes=[{"name": "gate", "emptyDir": {}}],
        container={
            "ports": [{"containerPort": 8081}],
            "volumeMounts": [{"name": "gate", "mountPath": "/gate"}],
        },
    )
    apply(kube, namespace, pod)
    running = wait_pod(
        dev_cluster,
        namespace,
        "gated",
        lambda p: container_status(p).get("state", {}).get("running"),
        "running",
    )
    wait_for(
        lambda: "waiting for the gate" in container_log(dev_cluster, running, "main"),
        TIMEOUT,
        "the gate wait",
    )
    pod_now = get_pod(dev_cluster, namespace, "gated")
    assert container_status(pod_now)["ready"] is False
    assert not is_ready(pod_now)
    meta = running["metadata"]
    gate_dir = (
        dev_cluster.run_dir
        / "kubelet"
        / "pods"
        / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
        / "volumes"
        / "gate"
    )
    (gate_dir / "open").write_text("")
    ready = wait_pod(dev_cluster, namespace, "gated", is_ready, "Ready once listening")
    with urllib.request.urlopen(f"http://{ready['status']['podIP']}:8081/", timeout=10) as response:
        assert response.status == 200


def test_informer_relists_when_its_version_is_gone(
    dev_cluster: Cluster, kube: KubeTools, namespace: str
) -> None:
    api = KubeApi(dev_cluster.kubeconfig)
    # The API server's watch cache of a new resource starts at the resourceVersion of its creation:
    # a watch from before that is answered 410 Gone, for real.
    group = f"{namespace}.kubelet.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    apply(kube, "", crd)
    try:
        kube.kubectl("wait", "--for=condition=Established", f"crd/gadgets.{group}", "--timeout=60s")
        path = f"/apis/{group}/v1/namespaces/{namespace}/gadgets"
        dev_cluster.api.request(
            "POST", path, {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g1"}}
        )
        custom = k8s_client.CustomObjectsApi(api.client)

        def list_gadgets(**kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(group, "v1", namespace, "gadgets", **kwargs)

        # Resuming from a version that is gone: 410, a pause, a fresh list, again (never a tight loop).
        listings: list[list[str]] = []
        stop = threading.Event()
        stale = Informer(
            api,
            "gadgets",
            path,
            raw_watch_func(lambda **kw: list_gadgets(**{**kw, "resource_version": "1"})),
            lambda items: listings.append([i["metadata"]["name"] for i in items]),
            lambda event, obj: None,
            stop,
            watch_timeout=5,
        )
        stale.start()
        try:
            wait_for(lambda: stale.gone >= 2, TIMEOUT, "two 410 answers")
        finally:
            stop.set()
        assert len(listings) >= 2 and all(names == ["g1"] for names in listings)

        # A normal informer lists, then sees what happens afterwards, without any 410.
        events: list[tuple[str, str]] = []
        stop = threading.Event()
        informer = Informer(
            api,
            "gadgets",
            path,
            raw_watch_func(list_gadgets),
            lambda items: None,
            lambda event, obj: events.append((event, obj["metadata"]["name"])),
            stop,
            watch_timeout=5,
        )
        informer.start()
        try:
            assert informer.synced.wait(TIMEOUT)
            dev_cluster.api.request("DELETE", f"{path}/g1")
            wait_for(lambda: ("DELETED", "g1") in events, TIMEOUT, "the DELETED event")
        finally:
            stop.set()
        assert informer.gone == 0
    finally:
        kube.kubectl("delete", "crd", f"gadgets.{group}", "--wait=false")
