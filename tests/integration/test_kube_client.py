"""The operator's Kubernetes client (cache_operator.k8s.Kube) when the API server does not answer.

A real client built against a loopback HTTP server that answers discovery and then shuts down, so
every later call is refused at once, as during an API server restart: every call raises KubeError
with no status, the one error type every caller handles (logged, retried on the next pass). Before,
urllib3's MaxRetryError escaped the policy daemon during an API server restart, and kopf restarted
the daemon only 60 s later (the soak's apiserver-restart faults converged in 55-63 s).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes.client import ApiClient, Configuration

from cache_operator.k8s import Kube, KubeError

pytestmark = pytest.mark.integration


# What the client's discovery reads when it is built, as a minimal API server answers it.
DISCOVERY: dict[str, dict[str, object]] = {
    "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
}


class DiscoveryOnly(BaseHTTPRequestHandler):
    """Answers the discovery calls the client makes when it is built, like an API server."""

    def do_GET(self) -> None:
        answer = DISCOVERY.get(self.path.split("?")[0])
        if answer is None:
            self.send_error(404)
            return
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[Kube]:
    """A client built while its API server answered, which then went away (its port now refuses)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), DiscoveryOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = 0
    try:
        client = Kube(ApiClient(configuration))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    yield client
    client.close()


POLICY = {
    "apiVersion": "cachewarden.io/v1alpha1",
    "kind": "CachePolicy",
    "metadata": {"name": "web", "namespace": "team"},
    "spec": {},
}


async def test_every_call_to_an_unreachable_api_server_is_a_kube_error(kube: Kube) -> None:
    calls = {
        "get": kube.get("cachewarden.io/v1alpha1", "CachePolicy", "team", "web"),
        "create": kube.create(POLICY),
        "apply": kube.apply(POLICY),
        "patch_status": kube.patch_status("cachewarden.io/v1alpha1", "CachePolicy", "team", "web", {"a": 1}),
        "list_objects": kube.list_objects("cachewarden.io/v1alpha1", "CachePolicy", "team"),
        "list_pods": kube.list_pods("team", "app=web"),
        "delete": kube.delete("cachewarden.io/v1alpha1", "CachePolicy", "team", "web"),
    }
    for name, call in calls.items():
        with pytest.raises(KubeError) as caught:
            await call
        assert caught.value.status is None, name
        message = str(caught.value)
        assert "no answer from the API server" in message and "HTTP None" not in message, (name, message)
