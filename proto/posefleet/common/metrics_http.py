"""The Prometheus ``/metrics`` endpoint of a node or coordinator (one way to serve it)."""

from __future__ import annotations

import ipaddress
from typing import Any

from posefleet.common.tls import TlsFiles


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_metrics(registry: Any, host: str, port: int, tls: TlsFiles | None) -> int:
    """Serve ``registry`` on ``host:port`` in a thread; returns the bound port. On a loopback address (the
    default) plain HTTP for a local scraper; on any other address, when the server has its fleet
    certificate, HTTPS that requires a client certificate of the fleet CA."""
    from prometheus_client import start_http_server

    secure: dict[str, Any] = {}
    if tls is not None and not _loopback(host):
        secure = dict(
            certfile=str(tls.cert), keyfile=str(tls.key), client_cafile=str(tls.ca), client_auth_required=True
        )
    server, _thread = start_http_server(port, addr=host, registry=registry, **secure)
    return int(server.server_port)
