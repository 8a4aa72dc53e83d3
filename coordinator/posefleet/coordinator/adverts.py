"""Which zeroconf adverts may become node links. mDNS is unauthenticated: anyone on the network (or any packet
that reaches the port) can advertise nodes, so packets from outside the networks zeroconf listens on are
dropped (``common.mdns.accept_only_from``) and adverts are bounded before the coordinator dials anything:

- by network: the advertised address must lie in a network of an interface zeroconf listens on (so an advert
  cannot make the coordinator dial an address of the attacker's choosing elsewhere);
- by address: one discovered link per address (two names at one address: the second is refused), and at
  most ``max_links_per_host`` discovered links per IP address;
- by time: at most ``max_new_links_per_minute`` new discovered links in any minute;
- by failure: an address (host and port) whose first dial failed (unreachable, or a TLS handshake refused) gets
  no new link until its backoff (doubling, up to ``HOST_BACKOFF_MAX_S``) has passed.

Static nodes are the operator's word and are not gated. The tables are bounded (``max_hosts`` failures kept).
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable, Sequence

import ifaddr
from posefleet.common.mdns import Network
from posefleet.common.tls import split_address

HOST_BACKOFF_MAX_S = 300.0
_LOOPBACKS: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def listening_networks(interfaces: Sequence[str]) -> tuple[Network, ...]:
    """The networks of the interfaces with these addresses (every interface's, when none are named)."""
    wanted = {ipaddress.ip_address(a) for a in interfaces}
    networks: list[Network] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            try:
                interface = ipaddress.ip_interface(f"{address.split('%')[0]}/{ip.network_prefix}")
            except ValueError:
                continue
            if not wanted or interface.ip in wanted:
                networks.append(interface.network)
    for named in wanted:  # a named address no adapter reports (a namespace being set up): its own host
        if not any(named in n for n in networks):
            networks.append(ipaddress.ip_network(named))
    if not wanted or any(a.is_loopback for a in wanted):
        networks.extend(_LOOPBACKS)
    return tuple(networks)


class AdvertGate:
    def __init__(
        self,
        networks: Sequence[Network],
        *,
        max_links_per_host: int,
        max_new_links_per_minute: int,
        backoff_initial_s: float,
        max_hosts: int = 1024,
    ) -> None:
        self.networks = tuple(networks)
        self.max_links_per_host = max_links_per_host
        self.max_new_links_per_minute = max_new_links_per_minute
        self.backoff_initial_s = backoff_initial_s
        self._created: collections.deque[float] = collections.deque(maxlen=max_new_links_per_minute)
        self._failed: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._max_hosts = max_hosts

    def refusal(self, host: str, address: str, discovered: Iterable[str], now: float) -> str | None:
        """Why an advert at ``address`` (on ``host``) may not become a new link now (None: it may); ``discovered``
        are the addresses of the discovered links."""
        try:
            ip = ipaddress.ip_address(host.split("%", maxsplit=1)[0])
        except ValueError:
            return f"{host} is not an IP address"
        if not any(ip in network for network in self.networks):
            return f"{host} is outside the networks zeroconf listens on"
        failed = self._failed.get(address)
        if failed is not None and now < failed[1]:
            return f"{address} failed its last dial; retried in {failed[1] - now:.0f} s"
        discovered = list(discovered)
        if address in discovered:
            return f"{address} is already a node under another name"
        if sum(1 for d in discovered if split_address(d)[0] == host) >= self.max_links_per_host:
            return f"{host} already has {self.max_links_per_host} discovered nodes, the most one host may"
        if len(self._created) == self.max_new_links_per_minute and now - self._created[0] < 60.0:
            return f"more than {self.max_new_links_per_minute} new nodes advertised within a minute"
        return None

    def backoff_s(self, failures: int) -> float:
        """How long a discovered link that never answered waits before its next dial."""
        return float(min(HOST_BACKOFF_MAX_S, self.backoff_initial_s * 2.0 ** max(0, failures - 1)))

    def created(self, now: float) -> None:
        self._created.append(now)

    def failed(self, address: str, now: float) -> None:
        """A new link's first dial to ``address`` failed: back off new links there."""
        count = self._failed.pop(address, (0, 0.0))[0] + 1
        self._failed[address] = (count, now + self.backoff_s(count))
        while len(self._failed) > self._max_hosts:
            self._failed.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failed.pop(address, None)
