"""What a node must prove on its link before frames go to it: its certificate's node id, not revoked."""

from __future__ import annotations

import ssl

from cryptography import x509
from posefleet.common.certs import revocations_of
from posefleet.common.tls import TlsError, TlsFiles, peer_certificate, role_name


class NodeTrust:
    """The node id a node must prove (its certificate's name) and the certificate it presented.

    ``claimed_id`` is what its advert claims, or, for a static address, what it says in GetInfo (until then
    any fleet node certificate will do). Without ``tls`` (an ``--insecure`` fleet) there is nothing to prove.
    """

    def __init__(self, tls: TlsFiles | None, claimed_id: str | None) -> None:
        self.tls = tls
        self.claimed_id = claimed_id
        self._revocations = revocations_of(tls.ca) if tls is not None else None
        #: The serial of the certificate the node presented when it (re)joined (checked against ``ca.crl``).
        self.cert_serial: int | None = None

    @property
    def server_name(self) -> str:
        """The name the node's certificate must carry (any node's while ``claimed_id`` is unknown)."""
        return role_name("node", self.claimed_id)

    def revoked(self) -> bool:
        """Whether the certificate the node presented is in the fleet's revocation list now."""
        return (
            self._revocations is not None
            and self.cert_serial is not None
            and self._revocations.revoked(self.cert_serial)
        )

    async def certificate_problem(self, address: str, node_id: str) -> str | None:
        """Read the serial of the certificate the node at ``address`` presents (a TLS handshake of its own: a
        gRPC channel does not show its peer's certificate); what is wrong with it, or None."""
        if self.tls is None:
            return None
        try:
            der = await peer_certificate(address, self.tls, role_name("node", node_id))
            self.cert_serial = int(x509.load_der_x509_certificate(der).serial_number)
        except (TimeoutError, OSError, ssl.SSLError, TlsError, ValueError) as exc:
            return f"its certificate could not be read: {exc}"
        if self.revoked():
            return f"its certificate (serial {self.cert_serial:x}) is revoked"
        return None
