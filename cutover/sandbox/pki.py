"""A throwaway PKI for loopback: a CA, a server certificate for 127.0.0.1, and client certs.

Also the two ways a gateway task can read the client certificate chain that the ALB forwards
in passthrough mode: `verify_client_pem` (what a correct target does: the leaf must chain to the
trust store) and `parse_client_pem` (the `untrusted-cert` scenario's bug: any well-formed
certificate passes). And `make_self_signed`, a well-formed certificate no trust store knows.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: str  # path to PEM
    key: str


@dataclass(frozen=True)
class Pki:
    ca_cert: str
    ca: x509.Certificate
    server: Pair
    clients: dict[str, Pair]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "brainstorm-router sandbox"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_path, key_path = path.with_suffix(".pem"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Pair(str(cert_path), str(key_path))


def make_pki(directory: Path, clients: list[str], *, now: dt.datetime | None = None) -> Pki:
    now = now or dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("sandbox CA")).issuer_name(_name("sandbox CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    server = _write(directory / "server", *leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH,
                                                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                 x509.DNSName("localhost")]))
    pairs = {cn: _write(directory / f"client-{cn}", *leaf(cn, ExtendedKeyUsageOID.CLIENT_AUTH, None))
             for cn in clients}
    return Pki(ca_cert=str(ca_path), ca=ca, server=server, clients=pairs)


def make_self_signed(directory: Path, cn: str, *, now: dt.datetime | None = None) -> Pair:
    """A well-formed client certificate that no trust store knows (its own issuer)."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return _write(directory / f"self-signed-{cn}", cert, key)


def _leaf(pem: bytes) -> x509.Certificate | None:
    """The first certificate of a PEM chain (the ALB forwards leaf first), or None if malformed."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except (ValueError, TypeError):
        return None
    return certs[0] if certs else None


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else "?"


def parse_client_pem(pem: bytes) -> str | None:
    """The leaf's CN if `pem` is a well-formed certificate, trusted or not (a target that skips
    chain verification: the bug the `untrusted-cert` scenario plants)."""
    cert = _leaf(pem)
    return _cn(cert) if cert is not None else None


def verify_client_pem(pem: bytes, ca: x509.Certificate) -> str | None:
    """The client's CN if the chain's leaf is currently valid and signed by `ca`; None otherwise."""
    cert = _leaf(pem)
    if cert is None:
        return None
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # foreign, self-signed or forged: never trusted
        return None
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return None
    return _cn(cert)
