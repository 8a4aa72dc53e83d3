"""Opening zeroconf (mDNS) for a node or a coordinator: one helper for both."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncZeroconf

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
log = logging.getLogger("posefleet.mdns")


def open_zeroconf(interfaces: Sequence[str]) -> AsyncZeroconf:
    """An ``AsyncZeroconf`` bound to ``interfaces`` (IP addresses), or to every interface when none are named.

    The one place both the node and the coordinator open zeroconf. python-zeroconf wants a list of
    addresses or an ``InterfaceChoice``, never ``None`` (0.154 raises ``TypeError`` for it). With named
    addresses the IP versions follow them; without, IPv4 on all interfaces (zeroconf's own default).
    """
    if not interfaces:
        return AsyncZeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    versions = {ipaddress.ip_address(a).version for a in interfaces}
    version = IPVersion.All if versions == {4, 6} else (IPVersion.V6Only if versions == {6} else IPVersion.V4Only)
    return AsyncZeroconf(interfaces=list(interfaces), ip_version=version)


class _FromNetworks(asyncio.DatagramProtocol):
    """A zeroconf socket's protocol behind a source check: datagrams from outside ``networks`` are dropped."""

    def __init__(self, inner: Any, networks: Sequence[Network]) -> None:
        self.inner, self.networks = inner, tuple(networks)
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            source = ipaddress.ip_address(str(addr[0]).split("%")[0])
        except ValueError:
            self.dropped += 1
            return
        if any(source in network for network in self.networks):
            self.inner.datagram_received(data, addr)
        else:
            self.dropped += 1

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


async def accept_only_from(azc: AsyncZeroconf, networks: Sequence[Network]) -> list[_FromNetworks]:
    """Drop mDNS packets (multicast or unicast) whose source lies outside ``networks``, on every socket ``azc``
    reads. python-zeroconf has no hook for this: each reading transport gets a filtering protocol in front of
    its own (``asyncio.BaseTransport.set_protocol``). Returns the filters ([] where the engine has no readers
    to wrap: then only what adverts say is checked, ``coordinator.adverts``)."""
    await azc.zeroconf.async_wait_for_start()
    filters = []
    for reader in getattr(azc.zeroconf.engine, "readers", []):
        transport = getattr(reader, "transport", None)
        if transport is None or isinstance(transport.get_protocol(), _FromNetworks):
            continue
        wrapped = _FromNetworks(transport.get_protocol(), networks)
        transport.set_protocol(wrapped)
        filters.append(wrapped)
    if not filters:
        log.warning("zeroconf: cannot filter mDNS packets by source here; only advertised addresses are checked")
    return filters
