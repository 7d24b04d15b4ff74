"""Certificate and key files for TLS, and certificate fingerprints: ``cryptography`` only.

The configuration checks TLS files with these when it is loaded (it must not import
Twisted); :mod:`socketeer.channel.tls` uses them to build the real contexts.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from socketeer.config.files import FileReadError, read_capped

__all__ = [
    "TLSFileError",
    "certificate_fingerprint",
    "check_key_matches",
    "check_key_pair",
    "normalize_fingerprint",
    "read_certificates",
    "read_private_key",
]

_MAX_PEM = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class TLSFileError(ValueError):
    """A certificate or key file cannot be used; the message names the file, not its content."""


def _read(path: str, what: str) -> bytes:
    try:
        return read_capped(path, _MAX_PEM, what)
    except FileReadError as e:
        raise TLSFileError(str(e)) from None


def read_certificates(path: str, what: str = "certificate file") -> list[x509.Certificate]:
    """Every PEM certificate in ``path`` (at least one), in file order."""
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSFileError(f"{what} {path} holds no PEM certificate") from None
    return certs


def read_private_key(path: str, what: str = "key file", passphrase: str | None = None):
    """The PEM private key in ``path``; an encrypted one needs its *passphrase*."""
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted
        if passphrase is None:
            raise TLSFileError(
                f"{what} {path} is encrypted; give its passphrase (or use a key without one)"
            ) from None
    except ValueError:
        raise TLSFileError(f"{what} {path} holds no PEM private key") from None
    else:
        if passphrase is not None:
            raise TLSFileError(f"{what} {path} is not encrypted, but a passphrase is given for it")
        return key
    try:
        return serialization.load_pem_private_key(data, password=passphrase.encode("utf-8"))
    except (TypeError, ValueError):
        raise TLSFileError(f"cannot decrypt {what} {path}: wrong passphrase") from None


def check_key_matches(cert: x509.Certificate, key: Any, cert_path: str, key_path: str) -> None:
    """Raise TLSFileError unless *key* is the private key of *cert* (both already read)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise TLSFileError(f"the key in {key_path} does not match the certificate in {cert_path}")


def check_key_pair(cert_path: str, key_path: str, passphrase: str | None = None) -> None:
    """Raise TLSFileError unless ``cert_path`` and ``key_path`` make a usable identity."""
    certs = read_certificates(cert_path)
    key = read_private_key(key_path, passphrase=passphrase)
    check_key_matches(certs[0], key, cert_path, key_path)


def normalize_fingerprint(text: str) -> str | None:
    """A sha256 fingerprint as 64 lower-case hex digits (colons allowed), or None if invalid."""
    value = text.replace(":", "").strip().lower()
    return value if _HEX64.match(value) else None


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """The sha256 fingerprint of a certificate's DER encoding, 64 lower-case hex digits."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
