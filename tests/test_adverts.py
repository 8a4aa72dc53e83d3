"""Zeroconf adverts bounded before anything is dialled (review finding 5): unit tests of the gate, and a flood
of spoofed adverts against a real coordinator browsing zeroconf on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from posefleet.common.tls import TlsFiles
from posefleet.coordinator.adverts import AdvertGate, listening_networks
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1.discovery import SERVICE_TYPE, NodeAdvert
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf


def gate(**kw: int) -> AdvertGate:
    settings = {"max_links_per_host": 2, "max_new_links_per_minute": 5, **kw}
    return AdvertGate([ipaddress.ip_network("192.0.2.0/24")], backoff_initial_s=1.0, **settings)


def test_an_advert_outside_the_listening_networks_or_beyond_a_hosts_share_is_refused() -> None:
    g = gate()
    assert g.refusal("192.0.2.7", "192.0.2.7:1", [], 0.0) is None
    assert "outside the networks" in (g.refusal("198.51.100.1", "198.51.100.1:1", [], 0.0) or "")
    assert "not an IP address" in (g.refusal("evil.example", "evil.example:1", [], 0.0) or "")
    two = ["192.0.2.7:1", "192.0.2.7:2"]
    assert "already a node under another name" in (g.refusal("192.0.2.7", "192.0.2.7:1", two, 0.0) or "")
    assert "already has 2 discovered nodes" in (g.refusal("192.0.2.7", "192.0.2.7:3", two, 0.0) or "")
    assert g.refusal("192.0.2.8", "192.0.2.8:1", two, 0.0) is None  # another host's share is its own


def test_new_links_are_bounded_per_minute_and_failed_hosts_back_off() -> None:
    g = gate()
    for i in range(5):
        g.created(float(i))
    host, address = "192.0.2.9", "192.0.2.9:50051"
    assert "within a minute" in (g.refusal(host, address, [], 10.0) or "")
    assert g.refusal(host, address, [], 61.0) is None  # the first of the five is a minute old
    g.failed(address, 100.0)
    assert "failed its last dial" in (g.refusal(host, address, [], 100.5) or "")
    assert g.refusal(host, "192.0.2.9:50052", [], 100.5) is None  # another port of the host: its own address
    assert g.refusal(host, address, [], 101.5) is None
    g.failed(address, 102.0)  # the second failure: two seconds
    assert g.refusal(host, address, [], 103.5) is not None and g.refusal(host, address, [], 104.5) is None
    g.succeeded(address)
    assert g.refusal(host, address, [], 104.6) is None


def test_listening_on_loopback_accepts_loopback_adverts_only() -> None:
    networks = listening_networks(["127.0.0.1"])
    assert any(ipaddress.ip_address("127.0.0.1") in n for n in networks)
    assert not any(ipaddress.ip_address("192.0.2.1") in n for n in networks)


class _Listener:
    """A TCP port that only counts the connections made to it (an attacker's address)."""

    def __init__(self) -> None:
        self.accepted = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


@pytest.fixture
async def discovering(fleet: dict[str, TlsFiles]) -> AsyncIterator[CoordinatorServer]:
    files = fleet["coordinator"]
    settings = CoordinatorSettings(
        host="127.0.0.1", port=0, zeroconf_interfaces=["127.0.0.1"], ca=files.ca, cert=files.cert, key=files.key
    )
    server = CoordinatorServer(settings)
    await server.start()
    yield server
    await server.stop()


async def test_a_flood_of_spoofed_adverts_dials_a_bounded_few(
    discovering: CoordinatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Review finding 5: 100 fake adverts became 100 links and 997 connections in 12 s to an attacker-chosen
    address. Now 40 adverts at one address make one link, whose failed dials back off, and an advert at an
    address outside the listening networks is never dialled."""
    caplog.set_level(logging.WARNING, "posefleet.coordinator")
    target = _Listener()
    port = await target.start()
    spoofer = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    advert = NodeAdvert("x", "posenet-mobilenet-v1-075", "posenet", (257, 257), "CPU", 64, "0", "0")
    infos = [
        AsyncServiceInfo(
            SERVICE_TYPE,
            f"fake-{i}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton("127.0.0.1" if i else "192.0.2.99")],
            port=port,
            properties=advert.to_txt(),
            server=f"fake-{i}.local.",
        )
        for i in range(40)
    ]
    try:
        await asyncio.gather(*(spoofer.async_register_service(info) for info in infos))
        await asyncio.sleep(10.0)
        links = [link for link in discovering.registry.links.values() if link.source == "zeroconf"]
        print(f"links {len(links)}, connections {target.accepted} in 10 s")
        assert len(links) == 1  # one address, one link, whatever the number of names
        assert target.accepted <= 20, target.accepted  # one link backing off: not hundreds of dials
        assert not any(link.available for link in links)
        assert "fake-0._posefleet._tcp.local. at 192.0.2.99" in caplog.text and "outside the networks" in caplog.text
        assert "already a node under another name" in caplog.text or "failed its last dial" in caplog.text
    finally:
        await spoofer.async_close()
        target.server.close()


async def test_mdns_packets_from_outside_the_listening_networks_are_dropped() -> None:
    """Review finding 5: a unicast mDNS packet from any source was accepted even with an interface set. The
    coordinator's zeroconf reads only packets whose source lies in its listening networks; here those are
    127.0.0.2/32, so the same answer from 127.0.0.3 is dropped and from 127.0.0.2 is taken (by the real
    zeroconf listener behind the filter)."""
    from posefleet.common.mdns import accept_only_from, open_zeroconf
    from zeroconf import const
    from zeroconf._dns import DNSPointer
    from zeroconf._protocol.outgoing import DNSOutgoing

    zc = open_zeroconf(["127.0.0.1"])
    try:
        filters = await accept_only_from(zc, [ipaddress.ip_network("127.0.0.2/32")])
        assert filters, "the engine's sockets are wrapped"

        def answer(name: str) -> bytes:
            out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
            record = DNSPointer(SERVICE_TYPE, const._TYPE_PTR, const._CLASS_IN, 120, f"{name}.{SERVICE_TYPE}")
            out.add_answer_at_time(record, 0)
            return out.packets()[0]

        # What each socket's transport hands its protocol (as it would for a datagram from that source; sent
        # for real, a unicast datagram to port 5353 may land on another process's SO_REUSEPORT socket).
        protocol = zc.zeroconf.engine.readers[0].transport.get_protocol()
        assert protocol in filters
        for source, name in (("127.0.0.3", "spoofed"), ("127.0.0.2", "allowed")):
            filters[filters.index(protocol)].datagram_received(answer(name), (source, 5353))
        await asyncio.sleep(0.5)
        cached = zc.zeroconf.cache.async_all_by_details(SERVICE_TYPE, const._TYPE_PTR, const._CLASS_IN)
        names = {r.alias for r in cached if isinstance(r, DNSPointer)}
        assert f"allowed.{SERVICE_TYPE}" in names and f"spoofed.{SERVICE_TYPE}" not in names, names
        assert sum(f.dropped for f in filters) >= 1
    finally:
        await zc.async_close()
