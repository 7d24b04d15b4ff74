"""TLS for the channel (``stomp+ssl://``): verifying the broker and saying why it failed.

:func:`tls_client_endpoint` wraps a TCP endpoint to the broker in TLS built with
``optionsForClientTLS`` (trust roots from ``cafile`` or the platform's store, an optional
client certificate) and replaces the per-connection verification with one that checks, in
order, the certificate chain (``ca``), the pinned sha256 fingerprint of the broker's
certificate (``fingerprint``, when given) and the host name (``hostname``). With
``verify=pin`` only the pin is checked: for a self-signed broker certificate, where the pin
*is* the trust. Whatever fails, the channel logs one line saying which check failed (or, for
a handshake the broker broke off, what it said) and ``ClientService`` reconnects with
backoff. There is no fallback to plain TCP: a ``stomp+ssl`` channel speaks TLS or nothing.

:func:`identity_options` and :func:`openssl_certificates` turn PEM files into what Twisted's
TLS options take; the broker's TLS listener (:mod:`socketeer.broker.listeners`) builds its
context with them too, so both ends read certificates and keys the same way.

The configuration checks the files with :mod:`socketeer.config.tlsfiles` (which imports no
Twisted) when it is loaded, so a bad file stops start-up with a located error instead of
failing every connection. Nothing here imports the reactor.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer.addresses import is_ip
from socketeer.channel.url import ChannelSpec
from socketeer.config.tlsfiles import (
    certificate_fingerprint,
    check_key_matches,
    normalize_fingerprint,
    read_certificates,
    read_private_key,
)

__all__ = [
    "client_creator",
    "identity_options",
    "openssl_certificates",
    "tls_client_endpoint",
]

#: OpenSSL X509_V_ERR_* codes worth naming in a log line.
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate (not signed by a trusted CA)",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


class _Problem(NamedTuple):
    """Why a TLS connection to the broker failed: the check that failed, and the details."""

    check: str  # ca, fingerprint, hostname, handshake, internal
    detail: str


class _Verifier:
    """The checks of one channel's TLS connections; remembers why a connection failed."""

    def __init__(self, host: str, pin: str | None, pin_only: bool) -> None:
        self.host = host
        self.pin = pin
        self.pin_only = pin_only
        self.is_ip = is_ip(host)
        self._failures: weakref.WeakKeyDictionary[Any, _Problem] = weakref.WeakKeyDictionary()

    def failure(self, tls_protocol: Any) -> _Problem | None:
        return self._failures.get(tls_protocol)

    def callback_for(self, tls_protocol: Any):
        ref = weakref.ref(tls_protocol)

        def verify(conn, cert, err: int, depth: int, ok: int) -> bool:
            try:
                problem = self._check(cert, err, depth, bool(ok))
            except Exception as e:  # never let an exception escape into OpenSSL
                problem = _Problem("internal", f"{type(e).__name__} while verifying")
            if problem is None:
                return True
            proto = ref()
            if proto is not None and proto not in self._failures:
                self._failures[proto] = problem
            return False

        return verify

    def _check(self, cert, err: int, depth: int, ok: bool) -> _Problem | None:
        if self.pin_only:
            if depth != 0:
                return None
        elif not ok:
            reason = _VERIFY_ERRORS.get(err, f"OpenSSL verify error {err}")
            return _Problem("ca", f"certificate chain not trusted at depth {depth}: {reason}")
        elif depth != 0:
            return None
        leaf = cert.to_cryptography()
        if self.pin is not None:
            actual = certificate_fingerprint(leaf)
            if actual != self.pin:
                return _Problem(
                    "fingerprint", f"sha256 fingerprint {actual} is not the pinned {self.pin}"
                )
        if not self.pin_only:
            try:
                if self.is_ip:
                    verify_certificate_ip_address(leaf, self.host)
                else:
                    verify_certificate_hostname(leaf, self.host)
            except (VerificationError, CertificateError):
                return _Problem("hostname", f"certificate is for {_names(leaf)}, not {self.host}")
        return None


def _names(cert: x509.Certificate) -> str:
    """The names a certificate is valid for, for a log line."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName (the common name is not used)"
    names = [f"DNS:{n}" for n in alt.get_values_for_type(x509.DNSName)]
    names += [f"IP:{n}" for n in alt.get_values_for_type(x509.IPAddress)]
    return ", ".join(names) or "no DNS or IP name"


@implementer(IOpenSSLClientConnectionCreator)
class _ChannelCreator:
    """optionsForClientTLS plus our verification, per connection."""

    def __init__(self, options: Any, verifier: _Verifier) -> None:
        self._options = options
        self.verifier = verifier

    def clientConnectionForTLS(self, tls_protocol: Any):
        connection = self._options.clientConnectionForTLS(tls_protocol)
        connection.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            self.verifier.callback_for(tls_protocol),
        )
        return connection


def identity_options(
    cert_path: str, key_path: str, passphrase: str | None = None
) -> dict[str, Any]:
    """CertificateOptions arguments for a certificate chain and its key (cryptography objects;
    an encrypted key is decrypted with *passphrase*).

    Raises TLSFileError, naming the file, if either cannot be read or they do not match.
    """
    certs = read_certificates(cert_path)
    key = read_private_key(key_path, passphrase=passphrase)
    check_key_matches(certs[0], key, cert_path, key_path)
    return {"certificate": certs[0], "privateKey": key, "extraCertChain": certs[1:]}


def openssl_certificates(certs: list[x509.Certificate]) -> list[crypto.X509]:
    """The same certificates as pyOpenSSL objects, which Twisted's trust and CA options take."""
    return [crypto.X509.from_cryptography(c) for c in certs]


def client_creator(spec: ChannelSpec) -> IOpenSSLClientConnectionCreator:
    """The IOpenSSLClientConnectionCreator for a ``stomp+ssl`` channel (files read now)."""
    cafile = spec.option("cafile")
    if cafile:
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(c) for c in openssl_certificates(read_certificates(cafile, "CA file"))]
        )
    else:
        trust = ssl.platformTrust()
    extra: dict[str, Any] = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    certfile = spec.option("certfile")
    if certfile:
        passphrase = spec.key_passphrase.value if spec.key_passphrase is not None else None
        extra.update(identity_options(certfile, spec.option("keyfile") or certfile, passphrase))
    options = ssl.optionsForClientTLS(spec.host, trust, extraCertificateOptions=extra)
    fingerprint = spec.option("fingerprint")
    pin = normalize_fingerprint(fingerprint) if fingerprint else None
    verifier = _Verifier(spec.host, pin, spec.option("verify") == "pin")
    return _ChannelCreator(options, verifier)


def tls_client_endpoint(spec: ChannelSpec, tcp: IStreamClientEndpoint) -> IStreamClientEndpoint:
    """TLS over ``tcp`` (an endpoint to the broker of ``spec``), logging why TLS failed.

    The certificate files are read now: a file that went bad since the configuration was
    loaded raises TLSFileError here, to the caller, instead of failing inside a handshake.
    """
    creator = client_creator(spec)
    inner = wrapClientTLS(creator, tcp)
    return _ReportingEndpoint(inner, creator.verifier, f"{spec.host}:{spec.port}")


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """Connects through TLS; the caller gets its own protocol back, as with any endpoint."""

    def __init__(self, inner: Any, verifier: _Verifier, broker: str) -> None:
        self._inner = inner
        self._verifier = verifier
        self._broker = broker

    def __repr__(self) -> str:
        return f"<TLS endpoint {self._broker}>"

    def connect(self, factory: Any):
        wrapped = _ReportingFactory(factory, self._verifier, self._broker)
        return self._inner.connect(wrapped).addCallback(lambda proto: proto.wrappedProtocol)


@implementer(IHandshakeListener)
class _ReportingProtocol(ProtocolWrapper):
    """Sits between TLS and the channel protocol; logs one line when TLS fails."""

    log = Logger(namespace="socketeer.channel.tls")
    handshake_done = False

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Failure = None) -> None:
        factory: _ReportingFactory = self.factory
        problem = factory.verifier.failure(self.transport)
        if problem is None and reason is not None and reason.check(SSL.Error):
            problem = _Problem("handshake", _explain(_ssl_error_text(reason.value)))
        elif problem is None and not self.handshake_done:
            detail = reason.getErrorMessage() if reason is not None else "closed"
            if reason is None or reason.check(ConnectionDone):
                detail = "the broker closed the connection"
            problem = _Problem(
                "handshake", f"{detail} during the TLS handshake (does it speak TLS?)"
            )
        if problem is not None:
            self.log.error(
                "channel TLS to {broker} failed ({check} check): {detail}; will reconnect",
                broker=factory.broker,
                check=problem.check,
                detail=problem.detail,
            )
        super().connectionLost(reason)


class _ReportingFactory(WrappingFactory):
    protocol = _ReportingProtocol
    noisy = False  # one factory per connection attempt: no "Starting factory" lines

    def __init__(self, wrapped: Any, verifier: _Verifier, broker: str) -> None:
        super().__init__(wrapped)
        self.verifier = verifier
        self.broker = broker


def _explain(text: str) -> str:
    if ("alert" in text and "certificate" in text) or "unknown ca" in text:
        return f"the broker refused our client certificate (or its absence): {text}"
    if "wrong version number" in text or "packet length" in text:
        return f"{text} (does the broker speak TLS on this port?)"
    return f"TLS error: {text}"


def _ssl_error_text(error: Exception) -> str:
    """OpenSSL's reasons from an SSL.Error, e.g. 'tlsv13 alert certificate required'."""
    try:
        reasons = [entry[2] for entry in error.args[0] if len(entry) >= 3 and entry[2]]
    except (IndexError, TypeError):
        reasons = []
    return "; ".join(reasons) or str(error) or type(error).__name__
