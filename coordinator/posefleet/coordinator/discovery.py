"""Finding nodes with zeroconf: adverts on the listening networks become ``Registry.add`` calls, within the
advert gate's limits; a goodbye or a draining advert triggers a health check (mDNS is unauthenticated: it
says where a node may be, TLS and gRPC health say whether to trust it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from posefleet.common.mdns import accept_only_from, open_zeroconf
from posefleet.coordinator.adverts import AdvertGate, listening_networks
from posefleet.coordinator.links import NodeLink
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1.discovery import SERVICE_TYPE, NodeAdvert
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger("posefleet.coordinator")


@dataclass(frozen=True)
class Membership:
    """What the browser reads and changes: the registry's links, and its calls that add and remove a node,
    note an ignored advert (name, address, why, claimed id) and run a task."""

    links: dict[str, NodeLink]
    add: Callable[[str, str, str, str | None], None]
    remove: Callable[[str, str], None]
    ignore: Callable[[str, str, str, str], None]
    spawn: Callable[[Coroutine[Any, Any, object]], None]


class NodeBrowser:
    """Browses ``_posefleet._tcp`` on the coordinator's zeroconf interfaces for the registry's ``members``."""

    def __init__(self, settings: CoordinatorSettings, members: Membership) -> None:
        self.settings = settings
        self.members = members
        self.networks = listening_networks(settings.zeroconf_interfaces)
        self.gate = AdvertGate(
            self.networks,
            max_links_per_host=settings.max_links_per_host,
            max_new_links_per_minute=settings.max_new_links_per_minute,
            backoff_initial_s=settings.backoff_initial_s,
        )
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None

    async def start(self) -> None:
        self._zc = open_zeroconf(self.settings.zeroconf_interfaces)
        await accept_only_from(self._zc, self.networks)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_service])

    async def stop(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._zc is not None:
            await self._zc.async_close()

    def _on_service(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self.members.spawn(self.check_leaving(name, "zeroconf goodbye"))
        else:
            self.members.spawn(self._resolve(name))

    async def check_leaving(self, key: str, said: str) -> None:
        """A goodbye or ``state=draining`` is a hint, not trust (mDNS is unauthenticated): it triggers a
        health check at once, and the node leaves only when that fails or the node says NOT_SERVING itself."""
        link = self.members.links.get(key)
        if link is None:
            return
        if link.healthy and await link.check():
            log.warning("node %s: %s, but it still answers its health check: staying", link.key, said)
            return
        self.members.remove(key, f"{said}, and its health check failed")

    async def _resolve(self, name: str) -> None:
        assert self._zc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, 3000):
            return
        try:
            advert = NodeAdvert.from_txt(info.properties)
        except ValueError as exc:
            self.members.ignore(name, "", f"an advert posefleet cannot use: {exc}", "")
            return
        if advert.state == "draining":
            await self.check_leaving(name, "advertised draining")
            return
        addresses = info.parsed_scoped_addresses()
        if not addresses or info.port is None:
            return
        host = addresses[0]
        address = f"[{host}]:{info.port}" if ":" in host else f"{host}:{info.port}"
        known = self.members.links.get(name)
        if known is None or known.address != address:
            discovered = (link.address for link in self.members.links.values() if link.source == "zeroconf")
            if (why := self.gate.refusal(host, address, discovered, time.monotonic())) is not None:
                self.members.ignore(name, address, why, advert.node_id)
                return
        self.members.add(name, address, "zeroconf", advert.node_id)
