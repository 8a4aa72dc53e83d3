"""Advertising a node with zeroconf (mDNS/DNS-SD), bound to chosen interfaces only."""

from __future__ import annotations

import ipaddress
import logging

from posefleet.common.mdns import open_zeroconf
from posefleet.v1.discovery import SERVICE_TYPE, NodeAdvert, service_name
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger("posefleet.node.zeroconf")


def _packed(addresses: list[str]) -> list[bytes]:
    return [ipaddress.ip_address(a).packed for a in addresses]


def host_addresses() -> list[str]:
    """This host's IPv4 addresses for the record when no interface is named: every interface's but
    loopback's (loopback's only when it has no other)."""
    import ifaddr

    found = [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]
    outside = [a for a in found if not ipaddress.ip_address(a).is_loopback]
    return outside or found


class Advertiser:
    """Registers ``<node id>._posefleet._tcp.local.``, updates its TXT record, says goodbye on close."""

    def __init__(self, interfaces: list[str], addresses: list[str], port: int) -> None:
        self.interfaces = interfaces
        self.addresses = addresses or interfaces or host_addresses()
        self.port = port
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    def _service_info(self, advert: NodeAdvert) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            service_name(advert.node_id),
            addresses=_packed(self.addresses) if self.addresses else None,
            port=self.port,
            properties=advert.to_txt(),
            server=f"{advert.node_id}.local.",
        )

    async def start(self, advert: NodeAdvert) -> None:
        self._zc = open_zeroconf(self.interfaces)
        self._info = self._service_info(advert)
        # The zeroconf coroutines return the broadcast task: await it too, so the packets are out.
        await (await self._zc.async_register_service(self._info))
        log.info("advertised %s on %s", self._info.name, self.interfaces or "all interfaces")

    async def update(self, advert: NodeAdvert) -> None:
        """Publish a changed TXT record (e.g. state=draining)."""
        if self._zc is None:
            return
        self._info = self._service_info(advert)
        await (await self._zc.async_update_service(self._info))

    async def close(self) -> None:
        """Send the goodbye (TTL 0) and close the sockets."""
        if self._zc is None:
            return
        if self._info is not None:
            await (await self._zc.async_unregister_service(self._info))
        await self._zc.async_close()
        self._zc = None
