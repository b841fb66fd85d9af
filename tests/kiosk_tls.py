"""A certificate authority and a kiosk server certificate for the tests, made
by `alc broker`'s own code (`tools.broker_setup.certs`): the LAN screens
trust the CA, the kiosk holds the server certificate and its key (mode 600)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tools.broker_setup.certs import issue_server, make_ca


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


def make_kiosk_cert(directory: Path, host: str = "127.0.0.1") -> KioskCert:
    """A CA and a certificate for `host` (an IP address, also valid as
    `localhost`) signed by it, written under `directory`: made by the same code
    as `alc broker init` and `alc broker cert` make a club's."""
    now = datetime.datetime.now(datetime.UTC)
    ca = make_ca("kiosk tests", now)
    kiosk = issue_server(ca, [host, "localhost"], now)
    directory.mkdir(parents=True, exist_ok=True)
    files = KioskCert(directory / "ca.crt", directory / "kiosk.crt", directory / "kiosk.key")
    files.ca_file.write_bytes(ca.cert_pem)
    files.cert_file.write_bytes(kiosk.cert_pem)
    descriptor = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(kiosk.key_pem)
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
