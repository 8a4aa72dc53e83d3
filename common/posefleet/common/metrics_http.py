"""The Prometheus ``/metrics`` endpoint of a node or coordinator (one way to serve it)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from posefleet.common.certs import Guard, peer_of_pem
from posefleet.common.tls import TlsFiles

log = logging.getLogger(__name__)

#: Who may read a server's metrics over the network: an admin certificate (give the Prometheus scraper one).
METRICS_ROLES = ("admin",)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: Any, guard: Guard, context: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.registry, self.guard, self.context = registry, guard, context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.context is not None:  # the handshake happens in the request's thread, not the accept loop's
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that fails the TLS handshake or hangs up: logged at debug, never a traceback on stderr
        (``socketserver``'s default prints one for every such caller)."""
        log.debug("metrics: a request from %s failed", client_address, exc_info=True)

    def refusal(self, connection: Any) -> str | None:
        """Why the caller may not read the metrics (None: it may)."""
        if self.context is None:
            return None
        der = connection.getpeercert(binary_form=True)
        peer = peer_of_pem(ssl.DER_cert_to_PEM_cert(der).encode()) if der else None
        if peer is None:
            return "no posefleet fleet certificate"
        if self.guard.revoked(peer):
            return f"{peer}: its certificate is revoked"
        if peer.role not in METRICS_ROLES:
            return f"{peer} may not read metrics: it needs the role {' or '.join(METRICS_ROLES)}"
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self._answer(404, b"not found\n", "text/plain")
            return
        if (why := self.server.refusal(self.connection)) is not None:
            self._answer(403, f"{why}\n".encode(), "text/plain")
            return
        self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def serve_metrics(registry: Any, host: str, port: int, tls: TlsFiles | None, *, plain_on_loopback: bool = True) -> int:
    """Serve ``registry`` on ``host:port`` in a thread; returns the bound port. On a loopback address (the
    default) plain HTTP for a local scraper; on any other address, when the server has its fleet
    certificate, HTTPS that requires a fleet certificate with a role of ``METRICS_ROLES`` (not revoked)."""
    context = None
    if tls is not None and not (plain_on_loopback and _loopback(host)):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
        context.load_cert_chain(str(tls.cert), str(tls.key))
        context.verify_mode = ssl.CERT_REQUIRED
    server = _MetricsServer((host, port), registry, Guard(tls), context)
    threading.Thread(target=server.serve_forever, name="posefleet-metrics", daemon=True).start()
    return int(server.server_address[1])
