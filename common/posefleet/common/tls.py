"""Fleet TLS: the certificate files a component uses, and gRPC credentials and channels made from them.

Every gRPC hop is mutual TLS against the fleet CA (``posefleet pki``). A certificate says who its holder is
in DNS names that ordinary hostname verification checks, so no central database is needed:

- ``NAME.ROLE.posefleet``: the holder's name and role (``ROLES``: node, coordinator, camera, subscriber, admin,
  and broker, the MQTT broker coordinators publish to, which has no gRPC rights);
- ``ROLE.posefleet``: any holder of the role (a client checks it talks to *a* coordinator, a coordinator
  that a static address is *a* node before it learns which);
- camera ids a camera or subscriber may use: URIs ``urn:posefleet:camera:ID``.

A coordinator dials a node as ``NODE_ID.node.posefleet`` (the id its advert claims) and clients dial a
coordinator as ``coordinator.posefleet``, whatever address they use. ``--insecure`` is for development: no
TLS, no authentication, a warning at every start; it is never the default. This module needs no
``cryptography`` (camera machines do not install it); reading roles from certificates is in ``certs``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from posefleet.common.errors import PosefleetError

ROLES = ("node", "coordinator", "camera", "subscriber", "admin", "broker")
#: Roles a dashboard login token may carry: people looking at the fleet, not machines in it.
TOKEN_ROLES = ("admin", "subscriber")
DOMAIN = "posefleet"
INSECURE_WARNING = (
    "WARNING: --insecure: no TLS and no authentication on this component's gRPC; anyone who can reach it may "
    "send frames or read every camera's poses. For development only."
)
log = logging.getLogger("posefleet")


class TlsError(PosefleetError):
    """Certificate files missing or unusable, or none given without --insecure."""


def role_name(role: str, name: str | None = None) -> str:
    """The DNS name that proves a role (``coordinator.posefleet``) or a holder (``n1.node.posefleet``)."""
    return f"{name}.{role}.{DOMAIN}" if name else f"{role}.{DOMAIN}"


@dataclass(frozen=True)
class TlsFiles:
    """A component's fleet CA certificate, its own certificate and its private key (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_pki(cls, directory: Path, name: str) -> TlsFiles:
        """``DIR/ca.crt``, ``DIR/NAME.crt`` and ``DIR/NAME.key``, as ``posefleet pki issue`` writes them."""
        return cls(directory / "ca.crt", directory / f"{name}.crt", directory / f"{name}.key")

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for what, path in (("fleet CA certificate", self.ca), ("certificate", self.cert), ("private key", self.key)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise TlsError(
                    f"{path}: cannot read the {what} ({exc.strerror or exc}); issue one with `posefleet pki issue`"
                ) from None
            if b"-----BEGIN" not in out[-1]:
                raise TlsError(f"{path}: not a PEM file (the {what})")
        return out[0], out[1], out[2]

    def stamp(self) -> tuple[float, ...]:
        """When the three files last changed (empty if one is missing): rotation is noticed by this."""
        try:
            return tuple(path.stat().st_mtime for path in (self.ca, self.cert, self.key))
        except OSError:
            return ()

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS that requires a client certificate from the fleet CA. The files are read again when they
        change (checked at each new handshake): a rotated certificate takes effect without a restart, and
        connections already open keep theirs."""
        ca, cert, key = self.read()
        stamp = [self.stamp()]

        def reload() -> grpc.ServerCertificateConfiguration | None:
            now = self.stamp()
            if not now or now == stamp[0]:
                return None
            try:
                ca, cert, key = self.read()
                ssl.create_default_context().load_cert_chain(self.cert, self.key)  # a matching pair
            except (TlsError, ssl.SSLError) as exc:  # mid-rotation (new certificate, old key): keep the last
                log.warning("keeping the current certificate for now: %s", exc)
                return None
            stamp[0] = now
            log.info("serving the rotated certificate %s", self.cert)
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

        initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        return grpc.dynamic_ssl_server_credentials(initial, reload, require_client_authentication=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self.read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def split_address(address: str) -> tuple[str, int]:
    """The host and port of ``HOST:PORT`` or ``[V6]:PORT`` (``ValueError`` when the port is no number)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _client_context(tls: TlsFiles) -> ssl.SSLContext:
    """A TLS client context as gRPC's: the fleet CA, this component's certificate offered, HTTP/2."""
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    context.set_alpn_protocols(["h2"])
    return context


async def _handshake(
    address: str, context: ssl.SSLContext, server: str, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection of its own to ``address``, whose server must prove ``server``."""
    host, port = split_address(address)
    return await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context, server_hostname=server), timeout)


async def peer_certificate(address: str, tls: TlsFiles, server: str, timeout: float = 5.0) -> bytes:
    """The DER certificate a TLS server at ``address`` presents (proving ``server``, with this component's own
    certificate offered): what a gRPC client cannot ask its channel for, to check it against a revocation
    list."""
    _, writer = await _handshake(address, _client_context(tls), server, timeout)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise TlsError(f"{address}: presented no certificate")
    return bytes(der)


async def explain_refusal(address: str, tls: TlsFiles | None, server: str, timeout: float = 5.0) -> str:
    """Why a call to ``address`` could not connect, in words: gRPC says only UNAVAILABLE ("Socket closed",
    "handshake failed"). One TLS handshake of its own with the same certificate tells which side refused what."""
    if tls is None:
        return ""
    try:
        context = _client_context(tls)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot use the certificate files {tls.cert} / {tls.key} ({exc})"
    try:
        reader, writer = await _handshake(address, context, server, timeout)
    except ssl.SSLCertVerificationError as exc:
        return (
            f"{address} does not prove it is {server} of this fleet ({exc.verify_message}): the wrong address, "
            f"or a server of another fleet"
        )
    except ssl.SSLError as exc:
        return _refused(address, tls, exc)
    except (OSError, TimeoutError, ValueError) as exc:
        return f"nothing answers at {address} ({exc or 'timed out'})"
    try:  # TLS 1.3: the server's verdict on this certificate comes after the handshake
        await asyncio.wait_for(reader.read(1), 1.0)
    except ssl.SSLError as exc:
        return _refused(address, tls, exc)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    return f"{address} accepts this certificate's TLS handshake"


def _refused(address: str, tls: TlsFiles, exc: ssl.SSLError) -> str:
    reason = (exc.reason or str(exc)).lower().replace("_", " ")
    return (
        f"{address} refused the certificate {tls.cert} ({reason}): is it still valid, and issued by the CA of this "
        f"fleet ({tls.ca})?"
    )


def aio_channel(
    address: str, tls: TlsFiles | None, server: str, options: list[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """A channel to ``address`` whose server must prove the DNS name ``server`` (``role_name``)."""
    options = list(options or [])
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    options.append(("grpc.ssl_target_name_override", server))
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


def sync_channel(
    address: str, tls: TlsFiles | None, server: str, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """``aio_channel`` for blocking code."""
    options = list(options or [])
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    options.append(("grpc.ssl_target_name_override", server))
    return grpc.secure_channel(address, tls.channel_credentials(), options=options)


def resolve(
    *,
    what: str,
    insecure: bool,
    pki: Path | None = None,
    name: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> TlsFiles | None:
    """The files of ``what`` from its options: ``--pki DIR --name NAME``, or ``--ca``/``--cert``/``--key``;
    ``None`` (no TLS, warned) with ``--insecure``; a ``TlsError`` saying what is missing otherwise."""
    if insecure:
        if pki or ca or cert or key:
            raise TlsError(f"{what}: --insecure and certificate options exclude each other")
        log.warning(INSECURE_WARNING)
        return None
    if pki is not None:
        if not name:
            raise TlsError(f"{what}: --pki needs --name (the certificate's name)")
        files = TlsFiles.from_pki(pki, name)
    elif ca and cert and key:
        files = TlsFiles(ca, cert, key)
    else:
        given = [flag for flag, value in (("--ca", ca), ("--cert", cert), ("--key", key)) if value]
        missing = f" (got only {', '.join(given)})" if given else ""
        raise TlsError(
            f"{what} needs its fleet certificate{missing}: --pki DIR --name NAME, or --ca, --cert and --key "
            "(`posefleet pki` makes them); --insecure runs without TLS, for development only"
        )
    files.read()  # fail now, with the file named, not at the first connection
    return files


def cli_args(tls: TlsFiles | None) -> list[str]:
    """The ``posefleet`` options that give a component ``tls`` (``--insecure`` for None)."""
    if tls is None:
        return ["--insecure"]
    return ["--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]


def add_arguments(parser: argparse.ArgumentParser, *, name: bool = True) -> None:
    """``--pki DIR [--name NAME] | --ca --cert --key | --insecure`` (``--name`` left out where the component
    has its own, like the node id)."""
    group = parser.add_argument_group("fleet TLS (mutual; `posefleet pki` makes the files)")
    group.add_argument("--pki", type=Path, metavar="DIR", help="DIR/ca.crt, DIR/NAME.crt, DIR/NAME.key")
    if name:
        group.add_argument("--name", help="the certificate's name in --pki")
    group.add_argument("--ca", type=Path, metavar="FILE", help="fleet CA certificate (PEM)")
    group.add_argument("--cert", type=Path, metavar="FILE", help="this component's certificate (PEM)")
    group.add_argument("--key", type=Path, metavar="FILE", help="its private key (PEM)")
    group.add_argument(
        "--insecure", action="store_true", default=None, help="no TLS, no authentication (development only; warns)"
    )


def from_args(args: argparse.Namespace, what: str) -> TlsFiles | None:
    """``resolve`` for a parsed command line with ``add_arguments``."""
    return resolve(
        what=what,
        insecure=bool(args.insecure),
        pki=args.pki,
        name=getattr(args, "name", None),
        ca=args.ca,
        cert=args.cert,
        key=args.key,
    )
