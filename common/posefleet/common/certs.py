"""Fleet certificates: a CA, certificates it issues, and who a TLS peer is (``require``).

``init_ca`` makes a fleet CA (ECDSA P-256, 10 years) in a directory; ``issue`` signs a certificate for one
holder: its role and name as DNS names (see ``posefleet.common.tls``), the camera ids it may use as URIs,
``hosts`` (names and addresses clients dial it by). Keys are written 0600. Needs ``cryptography`` (the
node and coordinator extras install it; camera machines do not).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from posefleet.common.errors import PosefleetError
from posefleet.common.tls import DOMAIN, ROLES, TOKEN_ROLES, TlsFiles, role_name
from posefleet.v1.ids import NODE_ID, camera_id_problem, node_id_problem

CAMERA_URI = "urn:posefleet:camera:"
log = logging.getLogger("posefleet.pki")


class PkiError(PosefleetError):
    """A fleet CA or certificate that cannot be made or read."""


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write ``path`` atomically: a new temporary file of its own (created 0600, never an existing file or a
    symlink someone left), then renamed over ``path``, which may not be a symlink."""
    if path.is_symlink():
        raise PkiError(f"{path} is a symlink: refusing to write a {'key' if private else 'certificate'} through it")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fleet_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The fleet CA's key and certificate in ``directory``, or a ``PkiError`` saying how to make one."""
    try:
        ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError("ca.key is not the EC key `posefleet pki init` writes")
        ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{directory}: no usable fleet CA ({exc}); make one with `posefleet pki init`") from None
    return ca_key, ca_cert


def _check_holder(name: str, cameras: list[str]) -> None:
    """A holder's name becomes a DNS label; its camera ids must be camera ids."""
    if (problem := node_id_problem(name)) is not None:
        raise PkiError(f"name: {problem.replace('node id ', '', 1)}")
    for camera in cameras:
        if (problem := camera_id_problem(camera)) is not None:
            raise PkiError(f"--cameras: {problem}")


def _check_host(host: str) -> str:
    """An extra host name of a certificate: a plain DNS name outside the fleet's own names (``*.posefleet``
    says who a holder is, and only ``issue`` writes those) and no wildcard."""
    name = host.rstrip(".").lower()
    if "*" in name:
        raise PkiError(f"--host {host!r}: wildcard names are refused (one certificate, one holder)")
    if name == DOMAIN or name.endswith("." + DOMAIN):
        raise PkiError(
            f"--host {host!r}: names under .{DOMAIN} say a holder's role and name, and only --role/--name set them"
        )
    if len(name) > 253 or not all(NODE_ID.fullmatch(label) for label in name.split(".")):
        raise PkiError(f"--host {host!r}: not a DNS name or an IP address")
    return name


def init_ca(directory: Path, name: str = "posefleet fleet CA", days: int = 3650) -> Path:
    """A new fleet CA in ``directory`` (``ca.crt``, ``ca.key``); refuses to replace an existing one."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.key").exists():
        raise PkiError(f"{directory}: already holds a fleet CA (ca.key); refusing to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(directory / "ca.key", pem_key, private=True)
    _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return directory / "ca.crt"


def _common_name(role: str, name: str) -> str:
    """The subject's CN: the holder's fleet name where it fits X.509's 64 characters, else the name alone (the
    identity is in the subject alternative names either way)."""
    full = role_name(role, name)
    return full if len(full) <= 64 else name


#: Roles that serve TLS themselves (a broker: the MQTT broker the coordinators publish to, no gRPC rights).
SERVER_ROLES = ("node", "coordinator", "broker")


def issue(
    directory: Path,
    *,
    role: str,
    name: str,
    cameras: list[str] | None = None,
    hosts: list[str] | None = None,
    days: int = 365,
    not_before: datetime.datetime | None = None,
) -> tuple[Path, Path]:
    """Sign ``NAME.crt`` / ``NAME.key`` (0600) in ``directory`` with its fleet CA."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    cameras = list(cameras or [])
    _check_holder(name, cameras)
    ca_key, ca_cert = _fleet_ca(directory)
    sans: list[x509.GeneralName] = [
        x509.DNSName(role_name(role, name)),
        x509.DNSName(role_name(role)),
        *(x509.UniformResourceIdentifier(CAMERA_URI + c) for c in cameras),
    ]
    for host in hosts or []:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(_check_host(host)))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role in SERVER_ROLES:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(role, name))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(pem, key_pem, private=True)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return crt, pem


def throwaway_fleet(directory: Path, members: Sequence[tuple[str, str, Sequence[str]]]) -> dict[str, TlsFiles]:
    """A fresh CA in ``directory`` (replacing what is there) and a week-long certificate for each
    ``(role, name, camera ids)``: the demo's and the tests' fleets."""
    shutil.rmtree(directory, ignore_errors=True)
    init_ca(directory, name="posefleet throwaway CA", days=7)
    for role, name, cameras in members:
        issue(directory, role=role, name=name, cameras=list(cameras), days=7)
    return {name: TlsFiles.from_pki(directory, name) for _, name, _ in members}


# -- dashboard login tokens -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: A dashboard token lives at most this long (``pki token --days``); coordinators refuse longer ones.
MAX_TOKEN_DAYS = 90


#: The key that signs dashboard tokens: its own, certified by the fleet CA (``token-signer.crt``/``.key`` beside
#: ``ca.crt``), so that a machine minting tokens needs no CA key; ``pki revoke token-signer`` ends its tokens.
TOKEN_SIGNER = "token-signer"
TOKEN_SIGNER_URI = "urn:posefleet:token-signer"


def issue_token_signer(directory: Path, days: int = 365) -> Path:
    """A new token-signing key and its certificate from the fleet CA (a signing key only: no fleet identity, no
    TLS use); replaces an earlier one, whose tokens keep working until revoked or expired."""
    ca_key, ca_cert = _fleet_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posefleet dashboard token signer")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(TOKEN_SIGNER_URI)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(directory / f"{TOKEN_SIGNER}.key", key_pem, private=True)
    crt = directory / f"{TOKEN_SIGNER}.crt"
    _write(crt, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return crt


def _token_signer(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The token signer in ``directory``; made (with the CA key) the first time a token is issued."""
    key_path, crt_path = directory / f"{TOKEN_SIGNER}.key", directory / f"{TOKEN_SIGNER}.crt"
    if not key_path.exists():
        issue_token_signer(directory)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{directory}: no usable token signer ({exc}); `posefleet pki token-signer` makes one") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: not the EC key `posefleet pki token-signer` writes")
    return key, cert


def issue_token(directory: Path, *, role: str, name: str, cameras: list[str] | None = None, days: int = 30) -> str:
    """A login token for the dashboard, signed with the fleet's token signer (not the CA key) and carrying the
    signer's certificate: any coordinator of the fleet checks it against ``ca.crt`` alone. It carries an id
    (``pki revoke ID`` revokes it) and lives at most ``MAX_TOKEN_DAYS``."""
    if role not in TOKEN_ROLES:
        raise PkiError(f"a token's role is {' or '.join(TOKEN_ROLES)}, not {role!r}")
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise PkiError(f"--days {days}: a token lives 1 to {MAX_TOKEN_DAYS} days")
    _check_holder(name, cameras or [])
    key, signer = _token_signer(directory)
    now = int(time.time())
    claims = {
        "role": role,
        "name": name,
        "cameras": sorted(cameras or []),
        "iat": now,
        "exp": now + days * 86400,
        "id": format(x509.random_serial_number(), "x"),
    }
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return f"{_b64(payload)}.{_b64(signature)}.{_b64(signer.public_bytes(serialization.Encoding.DER))}"


@lru_cache(maxsize=32)
def _signer_of(der: bytes, ca_pem: bytes) -> tuple[ec.EllipticCurvePublicKey, int, float] | str:
    """A token signer's key, serial and end of validity, if the fleet CA certified it as one; else why not."""
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return "the token's signer is not one this fleet's CA certified"
    public = cert.public_key()
    if TOKEN_SIGNER_URI not in uris.get_values_for_type(x509.UniformResourceIdentifier) or not isinstance(
        public, ec.EllipticCurvePublicKey
    ):
        return "the token is signed by a certificate that is no token signer"
    return public, cert.serial_number, cert.not_valid_after_utc.timestamp()


def token_id(token: str) -> str:
    """The id a token carries (what ``pki revoke`` takes), without checking it."""
    try:
        return str(json.loads(_unb64(token.split(".", maxsplit=1)[0]))["id"])
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise PkiError("not a posefleet token") from None


def peer_of_token(
    token: str, ca_pem: bytes, revocations: Revocations | None = None, max_days: float = MAX_TOKEN_DAYS
) -> tuple[Peer | None, str]:
    """The holder of a dashboard token signed by the CA of ``ca_pem``, or None and why not: unsigned, expired,
    revoked, without an id, or made to live longer than ``max_days``."""
    try:
        payload_text, signature_text, signer_text = token.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
        signer = _signer_of(_unb64(signer_text), ca_pem)
    except (ValueError, binascii.Error):
        return None, "the token is not one this fleet signed (tokens from before token signers: issue a new one)"
    if isinstance(signer, str):
        return None, signer
    public, signer_serial, signer_expires = signer
    try:
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        claims = json.loads(payload)
    except (ValueError, InvalidSignature):
        return None, "the token is not one this fleet signed"
    if signer_expires < time.time():
        return None, "the token's signer has expired"
    if revocations is not None and revocations.revoked(signer_serial):
        return None, "the token's signer is revoked"
    if not isinstance(claims, dict) or claims.get("role") not in TOKEN_ROLES:
        return None, "the token carries no dashboard role"
    try:
        serial = int(str(claims["id"]), 16)
        issued, expires = float(claims["iat"]), float(claims["exp"])
    except (KeyError, ValueError, TypeError):
        return None, "the token has no id or lifetime (issue a new one with `posefleet pki token`)"
    if expires < time.time():
        return None, "the token has expired"
    if expires - issued > max_days * 86400:
        return None, f"the token lives longer than {max_days:g} days, the most this coordinator accepts"
    if revocations is not None and revocations.revoked(serial):
        return None, "the token is revoked"
    role, name = str(claims["role"]), str(claims.get("name", ""))
    cameras = frozenset(map(str, claims.get("cameras", [])))
    return Peer(role, name, cameras, serial, min(expires, signer_expires)), ""


# -- who a peer is ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    """A TLS peer as its fleet certificate says: role, name and the camera ids it may use."""

    role: str
    name: str
    cameras: frozenset[str]
    #: The certificate's serial number, or a token's id: what a revocation list names.
    serial: int = 0
    #: When the certificate or token stops being valid (Unix time): long calls end then.
    expires: float = math.inf

    def __str__(self) -> str:
        return f"{self.role} {self.name!r}"


#: Everyone, on an --insecure server (no TLS: nothing to check).
ANYONE = Peer("admin", "insecure", frozenset())


@lru_cache(maxsize=256)
def peer_of_pem(pem: bytes) -> Peer | None:
    """The fleet identity in a (CA-verified) certificate; None when it has none."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    identities, roles = set(), set()
    for dns in sans.get_values_for_type(x509.DNSName):
        name = dns.rstrip(".").lower()
        if name != DOMAIN and not name.endswith("." + DOMAIN):
            continue  # a host name it is dialled by
        parts = name.split(".")
        if len(parts) == 3 and parts[1] in ROLES and node_id_problem(parts[0]) is None:
            identities.add((parts[1], parts[0]))
            roles.add(parts[1])
        elif len(parts) == 2 and parts[0] in ROLES:
            roles.add(parts[0])
        else:
            return None  # a wildcard or another name in the fleet's namespace: no identity at all
    if len(identities) != 1 or len(roles) != 1:
        return None  # two roles or two holders in one certificate: whoever issued it, it says nobody
    (identity,) = identities
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    cameras = frozenset(u[len(CAMERA_URI) :] for u in uris if u.startswith(CAMERA_URI))
    return Peer(identity[0], identity[1], cameras, cert.serial_number, cert.not_valid_after_utc.timestamp())


def own_peer(files: TlsFiles, role: str, name: str | None = None) -> Peer:
    """A server's own certificate, which must be of ``role`` (and named ``name``, if given); else a
    ``PkiError`` saying what it is instead."""
    own = peer_of_pem(files.cert.read_bytes())
    if own is None or own.role != role or (name is not None and own.name != name):
        wanted = f"a {role} certificate" + (f" for {role} id {name!r}" if name is not None else "")
        raise PkiError(f"{files.cert}: not {wanted} (it is {own})")
    return own


class Revocations:
    """The fleet's revocation list, ``ca.crl`` beside ``ca.crt`` (``posefleet pki revoke`` writes it): the
    revoked certificate serials and token ids. Read again when the file changes (one ``stat`` per check); a
    list the fleet CA did not sign, or that cannot be read, is logged and the last good one kept."""

    def __init__(self, ca: Path) -> None:
        self.ca = ca
        self.path = ca.with_name(CRL_FILE)
        self._stamp: tuple[int, float] | None = None
        self._serials: frozenset[int] = frozenset()

    def serials(self) -> frozenset[int]:
        try:
            st = self.path.stat()
            stamp = (st.st_size, st.st_mtime)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            if stamp is None:
                self._serials = frozenset()
            else:
                try:
                    self._serials = read_crl(self.path, self.ca)
                except PkiError as exc:
                    log.error("%s; keeping the last revocation list (%d entries)", exc, len(self._serials))
        return self._serials

    def revoked(self, serial: int) -> bool:
        return serial in self.serials()


@lru_cache(maxsize=16)
def revocations_of(ca: Path) -> Revocations:
    """The one ``Revocations`` of the fleet CA at ``ca`` in this process (servers, node links and the
    dashboard share its cache: a changed list is read and verified once)."""
    return Revocations(ca)


@dataclass
class Guard:
    """Who may call a server: anyone on an ``--insecure`` one, else holders of a fleet certificate that is not
    revoked, with the role the call needs."""

    tls: TlsFiles | None

    def __post_init__(self) -> None:
        self.revocations = revocations_of(self.tls.ca) if self.tls is not None else None

    @property
    def secure(self) -> bool:
        return self.tls is not None

    def revoked(self, peer: Peer) -> bool:
        return self.revocations is not None and self.revocations.revoked(peer.serial)


async def require(context: grpc.aio.ServicerContext, roles: tuple[str, ...], guard: Guard) -> Peer:
    """The caller, if its certificate has one of ``roles`` and is not revoked; else the call ends with
    UNAUTHENTICATED (no fleet certificate, or a revoked one) or PERMISSION_DENIED (the wrong role), saying
    what was missing."""
    if not guard.secure:
        return ANYONE
    pems = context.auth_context().get("x509_pem_cert") or []
    peer = peer_of_pem(bytes(pems[0])) if pems else None
    if peer is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "no posefleet fleet certificate (issue one with `posefleet pki issue`)"
        )
        raise AssertionError  # abort raises
    if guard.revoked(peer):
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{peer}: its certificate (serial {peer.serial:x}) is revoked; issue a new one with `posefleet pki issue`",
        )
    if peer.role not in roles:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"{peer} may not call this: it needs the role {' or '.join(roles)}"
        )
    return peer


# -- revocation -------------------------------------------------------------------------------------
CRL_FILE = "ca.crl"


def read_crl(path: Path, ca: Path) -> frozenset[int]:
    """The serials a CRL revokes, once its signature checks out against the fleet CA's certificate."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        public = x509.load_pem_x509_certificate(ca.read_bytes()).public_key()
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a readable revocation list ({exc})") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public):
        raise PkiError(f"{path}: a revocation list the fleet CA did not sign: refused")
    return frozenset(entry.serial_number for entry in crl)


def revoke(directory: Path, what: str) -> tuple[int, Path]:
    """Revoke a certificate (``NAME``: the ``NAME.crt`` issued in ``directory``; a certificate file; or a
    hexadecimal serial) or a token (its id, as ``pki token`` prints it): the fleet's ``ca.crl`` gains it,
    signed by the CA, valid 30 days after each change (nodes and coordinators read the file again when it
    changes)."""
    ca_key, ca_cert = _fleet_ca(directory)
    crt = directory / f"{what}.crt"
    if what.endswith(".crt") and Path(what).is_file():  # a certificate file (one a rotation replaced)
        crt = Path(what)
    if (node_id_problem(what) is None or crt == Path(what)) and crt.is_file():
        serial = x509.load_pem_x509_certificate(crt.read_bytes()).serial_number
    else:
        try:
            serial = int(what.removeprefix("0x"), 16)
        except ValueError:
            raise PkiError(
                f"{what!r}: neither a certificate issued in {directory} nor a serial in hexadecimal"
            ) from None
    crl_path = directory / CRL_FILE
    known = read_crl(crl_path, directory / "ca.crt") if crl_path.exists() else frozenset()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=30))
    )
    for number in sorted(known | {serial}):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(number).revocation_date(now).build()
        )
    _write(crl_path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), private=False)
    return serial, crl_path
