"""A certificate authority and a kiosk server certificate for the tests, made
with `cryptography` as `alc broker init` makes the club's: the LAN screens
trust the CA, the kiosk holds the server certificate and its key (mode 600)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KioskCert:
    """The files: the CA's certificate (what screens trust), the kiosk's
    certificate and key (what `[kiosk]` `cert_file` and `key_file` name)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client(self) -> ssl.SSLContext:
        """A client context that trusts only this CA, hostnames checked."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_kiosk_cert(directory: Path, host: str = "127.0.0.1") -> KioskCert:
    """A CA and a certificate for `host` (an IP address, also valid as
    `localhost`) signed by it, written under `directory`."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("alc test CA"))
        .issuer_name(_name("alc test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(host)),
        x509.DNSName("localhost"),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = KioskCert(directory / "ca.crt", directory / "kiosk.crt", directory / "kiosk.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    return files


def lan_config(cert: KioskCert, port: int) -> str:
    """More `[kiosk]` lines: the HTTPS listener for LAN screens on loopback
    (the tests' LAN), with `cert`'s files."""
    return (
        f'lan_listen = "127.0.0.1:{port}"\n'
        f'cert_file = "{cert.cert_file}"\nkey_file = "{cert.key_file}"\n'
    )


def spki_pin(cert: KioskCert) -> str:
    """base64(sha256(the certificate's public key info)): what Chromium's
    `--ignore-certificate-errors-spki-list` takes to trust exactly this key."""
    loaded = x509.load_pem_x509_certificate(cert.cert_file.read_bytes())
    info = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(info).digest()).decode()
