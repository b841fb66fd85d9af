"""The TLS context of the kiosk's LAN listener, from `[kiosk]` `cert_file` and
`key_file` (PEM): a certificate from `alc broker init`'s CA, or any other the
LAN screens trust.

TLS 1.2 at least, HTTP/1.1 only (the server speaks nothing else). The private
key must be readable by its owner alone: anyone who can read it can pose as
this kiosk to every screen on the LAN and collect its token and members' PINs.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from firmware.core.errors import LocalError


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context holding the certificate chain and key; raises
    `LocalError` (one line naming the file, and the `chmod` to run for a key
    other users can read)."""
    try:
        mode = key_file.stat().st_mode
    except OSError as exc:
        raise LocalError(f"kiosk: key_file: cannot read {key_file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LocalError(
            f"kiosk: key_file: {key_file} can be read by other users; run: chmod 600 {key_file}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise LocalError(
            f"kiosk: cert_file/key_file: cannot use {cert_file} with {key_file}: {reason}"
        ) from None
    return context
