"""The process kubelet's HTTPS endpoint: the slice of the kubelet API the API server proxies
``kubectl logs`` to."""

from __future__ import annotations

import http.client
import http.server
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from devcluster.pki import CertificateAuthority, CertificatePair
from devcluster.podips import HOST_IP

log = logging.getLogger("devcluster.kubelet")


class LogSource(Protocol):
    """What the endpoint reads from the kubelet (:class:`devcluster.kubelet.Kubelet`)."""

    run_dir: Path

    def container_log(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> tuple[Path, Callable[[], bool]] | str:
        """The log file of a container run and whether that run still writes to it; or an error."""
        ...


def serving_certificate(directory: Path) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 from a throwaway CA (created once per run directory). The
    API server does not verify kubelet certificates unless given ``--kubelet-certificate-authority``."""
    pair = CertificatePair(cert=directory / "kubelet.crt", key=directory / "kubelet.key")
    if pair.cert.exists() and pair.key.exists():
        return pair.cert, pair.key
    directory.mkdir(parents=True, exist_ok=True)
    CertificateAuthority.create("devcluster-kubelet-ca").issue_to_files(
        pair, "devcluster-kubelet", server=True, ip_addresses=[ipaddress.ip_address(HOST_IP)]
    )
    return pair.cert, pair.key


LOG_READ_LIMIT = 8 * 1024 * 1024
FOLLOW_POLL_SECONDS = 0.2


class KubeletServer:
    """The slice of the kubelet API the API server proxies to: ``/containerLogs/<ns>/<pod>/<c>``
    (so ``kubectl logs [-f] [--previous] [--tail N]`` works) and ``/healthz``, over HTTPS on
    127.0.0.1 at a free port (published as the Node's kubeletEndpoint). exec, attach and
    port-forward are not served. Read-only, loopback only, like every other devcluster port."""

    def __init__(self, kubelet: LogSource) -> None:
        self.kubelet = kubelet
        cert, key = serving_certificate(kubelet.run_dir / "serving")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("kubelet API: " + format, *args)

        self.httpd = http.server.ThreadingHTTPServer((HOST_IP, 0), Handler)
        self.httpd.daemon_threads = True
        # The handshake happens in the request's own thread, not in the accept loop.
        self.httpd.socket = context.wrap_socket(
            self.httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = int(self.httpd.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        threading.Thread(target=self.httpd.serve_forever, name="kubelet-api", daemon=True).start()
        log.info("kubelet API (logs) on https://%s:%d", HOST_IP, self.port)

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, request: Any) -> None:
        """Answer one GET."""
        url = urlparse(request.path)
        parts = [p for p in url.path.split("/") if p]
        if parts in (["healthz"], ["readyz"], ["livez"]):
            self._reply(request, 200, "ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs" or any(p.startswith(".") for p in parts):
            self._reply(
                request, 404, f"{url.path} is not served by the devcluster kubelet (only /containerLogs)"
            )
            return
        _, namespace, pod, container = parts
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            tail = int(query["tailLines"]) if "tailLines" in query else None
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
        except ValueError:
            self._reply(request, 400, "tailLines and limitBytes must be integers")
            return
        found = self.kubelet.container_log(namespace, pod, container, query.get("previous") == "true")
        if isinstance(found, str):
            self._reply(request, 404, found)
            return
        path, live = found
        request.send_response(200)
        request.send_header("Content-Type", "text/plain; charset=utf-8")
        request.end_headers()
        try:
            offset = self._send_existing(request, path, tail, limit)
            if query.get("follow") == "true":
                self._follow(request, path, offset, live)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    @staticmethod
    def _reply(request: Any, status: int, text: str) -> None:
        body = (text + "\n").encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/plain; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    @staticmethod
    def _send_existing(request: Any, path: Path, tail: int | None, limit: int | None) -> int:
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - LOG_READ_LIMIT))
                data = handle.read()
        except FileNotFoundError:
            return 0
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        if limit is not None:
            data = data[:limit]
        request.wfile.write(data)
        request.wfile.flush()
        return size

    def _follow(self, request: Any, path: Path, offset: int, live: Callable[[], bool]) -> None:
        # Until the container run ends (or the kubelet stops, or the client goes away): bounded.
        while True:
            running = live()
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(1024 * 1024)
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                request.wfile.write(chunk)
                request.wfile.flush()
                continue
            if not running:
                return
            time.sleep(FOLLOW_POLL_SECONDS)
