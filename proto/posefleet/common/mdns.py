"""Opening zeroconf (mDNS) for a node or a coordinator: one helper for both."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncZeroconf


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
