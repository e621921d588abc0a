"""The process kubelet's access to the API server: a small client (:class:`KubeApi`), informers
(list, then watch with a server-side timeout and the last resourceVersion, re-list on 410 Gone) and
the object cache the pod specs are resolved against."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from devcluster import podspec

log = logging.getLogger("devcluster.kubelet")

WATCH_TIMEOUT_SECONDS = 60
KUBE_ROOT_CA = "kube-root-ca.crt"


class KubeApi:
    """The official client's transport (TLS, credentials from the kubeconfig) with plain dicts in
    and out: the pure logic works on the API's JSON, not on generated models."""

    def __init__(self, kubeconfig: Path) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 16
        self.client = k8s_client.ApiClient(configuration)
        self.core = k8s_client.CoreV1Api(self.client)
        self.server = str(configuration.host)
        document = yaml.safe_load(kubeconfig.read_text()) or {}
        self.ca_pem = _kubeconfig_ca(document, kubeconfig.parent)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> Any:
        """One API call; returns the decoded JSON body, raises :class:`ApiException` on non-2xx."""
        params = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items()]
        method, url, headers, payload, _ = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(method, url, headers, payload, _request_timeout=timeout)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(
                status=response.status,
                reason=response.reason,
                body=data.decode("utf-8", "replace") if data else "",
            )
        return json.loads(data) if data else None

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path``."""
        return self.request("GET", path, **kwargs)


def _kubeconfig_ca(document: Mapping[str, Any], base: Path) -> bytes:
    import base64

    contexts = {c["name"]: c.get("context") or {} for c in document.get("contexts") or []}
    clusters = {c["name"]: c.get("cluster") or {} for c in document.get("clusters") or []}
    context = contexts.get(document.get("current-context", ""), {})
    cluster = clusters.get(context.get("cluster", ""), next(iter(clusters.values()), {}))
    if cluster.get("certificate-authority-data"):
        return base64.b64decode(cluster["certificate-authority-data"])
    if cluster.get("certificate-authority"):
        return (base / cluster["certificate-authority"]).read_bytes()
    return b""


def _api_status(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


# --- informers ------------------------------------------------------------------------------------


class Informer(threading.Thread):
    """List, then watch from the list's resourceVersion with a server-side timeout; resume from the
    last seen version; re-list on 410 Gone or any error (after a short pause). ``on_list`` gets the
    full set after each list (so deletions missed while disconnected are noticed); ``on_event`` gets
    each ADDED/MODIFIED/DELETED."""

    def __init__(
        self,
        api: KubeApi,
        kind: str,
        path: str,
        watch_func: Callable[..., Any],
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
        watch_timeout: int = WATCH_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(name=f"informer-{kind}", daemon=True)
        self.api = api
        self.kind = kind
        self.path = path
        self.watch_func = watch_func
        self.on_list = on_list
        self.on_event = on_event
        self.stop_event = stop
        self.watch_timeout = watch_timeout
        self.synced = threading.Event()
        self.relists = 0
        self.gone = 0

    def run(self) -> None:
        """The list/watch loop until the stop event."""
        while not self.stop_event.is_set():
            try:
                listing = self.api.get(self.path, timeout=30)
                self.on_list(list(listing.get("items") or []))
                self.synced.set()
                version = str(listing["metadata"]["resourceVersion"])
                while not self.stop_event.is_set():
                    version = self.watch_once(version)
            except ApiException as exc:
                if exc.status == 410:
                    self.gone += 1
                    log.info("%s watch: resourceVersion too old (410 Gone), re-listing", self.kind)
                    # Short, but never a tight loop against the API server.
                    self.stop_event.wait(0.2)
                else:
                    log.warning("%s informer: API error %s %s", self.kind, exc.status, exc.reason)
                    self.stop_event.wait(1.0)
            except Exception as exc:
                log.warning("%s informer: %r; re-listing in 1s", self.kind, exc)
                self.stop_event.wait(1.0)
            self.relists += 1

    def watch_once(self, version: str) -> str:
        """One watch request from ``version`` (ends after the server-side timeout); returns the last
        resourceVersion seen. A version the server no longer has raises ApiException 410."""
        watcher = k8s_watch.Watch()
        for event in watcher.stream(
            self.watch_func,
            resource_version=version,
            timeout_seconds=self.watch_timeout,
            allow_watch_bookmarks=True,
            _request_timeout=(10, self.watch_timeout + 15),
        ):
            obj = event.get("raw_object") or event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(str(event["type"]), obj)
            if self.stop_event.is_set():
                watcher.stop()
                break
        return version


def raw_watch_func(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a list method of the official client) as a watch function whose events carry the
    raw JSON dicts: Watch.stream deserializes into the generated models when it can find the list
    type, and a wrapper without annotations hides it (410 handling stays)."""

    def call(**kwargs: Any) -> Any:
        return func(**kwargs)

    return call


class ObjectCache(podspec.ObjectLookup):
    """ConfigMaps and Secrets as the informers last saw them, falling back to a live GET for one not
    seen yet (created a moment ago). ``kube-root-ca.crt`` is synthesized from the cluster CA when the
    controller manager has not published it in a new namespace yet: its content is that CA."""

    def __init__(self, api: KubeApi, live: bool = False) -> None:
        self.api = api
        self.live = live
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def replace(self, kind: str, items: Iterable[dict[str, Any]]) -> None:
        """Replace every cached object of ``kind`` (after a list)."""
        with self.lock:
            for key in [k for k in self.objects if k[0] == kind]:
                del self.objects[key]
            for item in items:
                meta = item.get("metadata") or {}
                self.objects[(kind, meta.get("namespace", ""), meta.get("name", ""))] = item

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """Apply one watch event."""
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        with self.lock:
            if event == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if not self.live:
            with self.lock:
                cached = self.objects.get((kind, namespace, name))
            if cached is not None:
                return cached
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        try:
            return dict(
                self.api.get(f"/api/v1/namespaces/{quote(namespace)}/{plural}/{quote(name)}", timeout=10)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise podspec.PodSpecError(
                podspec.REASON_CONTAINER_CREATING,
                f"reading {kind} {namespace}/{name}: API error {exc.status} {exc.reason}",
            ) from exc

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """See :class:`devcluster.podspec.ObjectLookup`."""
        found = self._get("ConfigMap", namespace, name)
        if found is None and name == KUBE_ROOT_CA and self.api.ca_pem:
            return {
                "metadata": {"namespace": namespace, "name": name},
                "data": {"ca.crt": self.api.ca_pem.decode()},
            }
        return found

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """See :class:`devcluster.podspec.ObjectLookup`."""
        return self._get("Secret", namespace, name)
