"""Channel URLs: the ``channel`` value of a sourcesink, parsed into a ChannelSpec.

A channel names the message broker a sourcesink talks through and the topic it
uses there. Two spellings are accepted: the original Socketeer's short form and the
ordinary URL form::

    stomp:localhost:61626/sisotopic/?username=user&password=pass&codekey=blabla
    stomp://user:pass@localhost:61626/sisotopic?codekey=blabla&heartbeat=10000

Query parameters: ``username``, ``password``, ``codekey``, ``vhost`` (sent as
the STOMP ``host`` header) and ``heartbeat`` (milliseconds, ``0`` disables).

``stomp+ssl://`` (or ``ssl:`` in the short form) is STOMP over TLS, default port
61627, with the extra parameters ``cafile`` (PEM trust roots; default: the system's
store), ``certfile`` and ``keyfile`` (a client certificate; the key defaults to the
certfile; ``keypassphrase`` decrypts an encrypted key, and may be a secret reference such
as ``env:NAME``), ``fingerprint`` (the broker certificate's sha256, hex, colons allowed) and
``verify`` (``full``, the default: CA, host name and the pin if given; ``pin``: only the
fingerprint, for a self-signed broker certificate). See :mod:`socketeer.channel.tls`.

Schemes are plugins: a scheme object in :data:`SCHEMES` describes its default port, its
extra parameters and the transport it runs on, so another scheme is added with
:func:`register_scheme` instead of another ``if`` branch. This module is pure (no Twisted,
so the configuration can use it): :mod:`socketeer.channel.endpoints` turns a ChannelSpec
into the Twisted endpoint that reaches the broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Protocol

from hyperlink import URL, DecodedURL
from stompest.protocol.failover import StompFailoverUri

from socketeer.secret import Secret

__all__ = [
    "DEFAULT_HEARTBEAT_MS",
    "DEFAULT_STOMP_PORT",
    "DEFAULT_STOMP_SSL_PORT",
    "DEFAULT_TOPIC",
    "QUERY_PARAMS",
    "SCHEMES",
    "ChannelScheme",
    "ChannelSpec",
    "ChannelURLError",
    "SslScheme",
    "StompScheme",
    "StompSslScheme",
    "parse_channel_url",
    "register_scheme",
]

DEFAULT_TOPIC = "socketeer"
#: Where ``stomp:`` reaches a broker when the URL names no port (the broker listens there).
DEFAULT_STOMP_PORT = 61626
#: The same for ``stomp+ssl:`` and ``ssl:``.
DEFAULT_STOMP_SSL_PORT = 61627
DEFAULT_HEARTBEAT_MS = 10_000
QUERY_PARAMS = ("username", "password", "codekey", "vhost", "heartbeat")
#: The TLS parameter that decrypts a client key: a secret, never shown.
KEY_PASSPHRASE = "keypassphrase"

# The topic ends up inside broker destination names, so keep it boring.
_TOPIC_RE = re.compile(r"[A-Za-z0-9_\-]+")
# Names and IPv4 literals; IPv6 literals are validated by hyperlink.
_HOST_RE = re.compile(r"[\w.\-]+")
_SCHEME_NO_SLASHES_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(?!//)")


class ChannelURLError(ValueError):
    """A channel URL is malformed; the message says what is wrong and what is allowed."""


class ChannelScheme(Protocol):
    """One channel URL scheme: its default port and the transport that reaches the broker.

    ``transport`` names an entry of :data:`socketeer.channel.endpoints.TRANSPORTS` (``tcp``,
    ``tls``). A scheme may also have ``params`` (extra query parameters it accepts, kept in
    ``ChannelSpec.options``), ``check_options(options)`` (raise ChannelURLError if they do
    not make sense) and ``encrypted`` (True if the transport itself encrypts).
    """

    name: str
    default_port: int
    transport: str


SCHEMES: dict[str, ChannelScheme] = {}


def register_scheme(scheme: ChannelScheme) -> None:
    """Make *scheme* usable in channel URLs; a later registration replaces an earlier one."""
    SCHEMES[scheme.name.lower()] = scheme


class StompScheme:
    """``stomp:``: STOMP over plain TCP."""

    name = "stomp"
    default_port = DEFAULT_STOMP_PORT
    transport = "tcp"


class StompSslScheme(StompScheme):
    """``stomp+ssl:``: STOMP over TLS, verified (see :mod:`socketeer.channel.tls`)."""

    name = "stomp+ssl"
    default_port = DEFAULT_STOMP_SSL_PORT
    transport = "tls"
    params = ("cafile", "certfile", "keyfile", "keypassphrase", "fingerprint", "verify")
    encrypted = True

    def check_options(self, options: dict[str, str]) -> None:
        for name, value in options.items():
            if not value:
                raise ChannelURLError(f"channel parameter {name!r} is empty")
        fingerprint = options.get("fingerprint")
        if fingerprint is not None:
            value = fingerprint.replace(":", "").lower()
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ChannelURLError(
                    "invalid channel fingerprint; allowed: a sha256 fingerprint, "
                    "64 hex digits (colons allowed)"
                )
        verify = options.get("verify", "full")
        if verify not in ("full", "pin"):
            raise ChannelURLError(f"invalid channel verify {verify!r}; allowed: full, pin")
        if verify == "pin" and fingerprint is None:
            raise ChannelURLError("verify=pin needs a fingerprint parameter")
        if "keyfile" in options and "certfile" not in options:
            raise ChannelURLError("channel parameter keyfile needs certfile")
        if KEY_PASSPHRASE in options and "certfile" not in options:
            raise ChannelURLError("channel parameter keypassphrase needs certfile")


class SslScheme(StompSslScheme):
    """``ssl:``: the short spelling of ``stomp+ssl:`` (``ssl:host:61627/topic?...``)."""

    name = "ssl"


register_scheme(StompScheme())
register_scheme(StompSslScheme())
register_scheme(SslScheme())


@dataclass(frozen=True)
class ChannelSpec:
    """Where a sourcesink's broker is and how to log in; secrets are wrapped in Secret."""

    scheme: str
    host: str
    port: int
    topic: str
    username: str | None
    password: Secret | None
    codekey: Secret | None
    vhost: str | None
    heartbeat_ms: int
    #: Scheme-specific query parameters (e.g. the TLS files), in URL order.
    options: tuple[tuple[str, str], ...] = ()
    failover: tuple[ChannelSpec, ...] = ()  # further brokers of a failover: channel
    randomize: bool = False  # failover: try the brokers in random order
    key_passphrase: Secret | None = None  # stomp+ssl: decrypts the client certificate's key

    @property
    def brokers(self) -> tuple[ChannelSpec, ...]:
        """Every broker this channel may use, in the configured order."""
        return (replace(self, failover=()), *self.failover)

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)

    @property
    def encrypted(self) -> bool:
        """True if this broker's transport encrypts (TLS); sealing with a codekey is apart."""
        return bool(getattr(SCHEMES.get(self.scheme), "encrypted", False))

    def redacted(self) -> str:
        """The channel as a URL with secrets shown as ``***``, safe for logs."""
        if self.failover:
            inner = ",".join(spec.redacted() for spec in self.brokers)
            return f"failover:({inner})" + ("" if self.randomize else "?randomize=false")
        query: list[tuple[str, str]] = []
        if self.username is not None:
            query.append(("username", self.username))
        if self.password is not None:
            query.append(("password", "***"))
        if self.codekey is not None:
            query.append(("codekey", "***"))
        if self.key_passphrase is not None:
            query.append((KEY_PASSPHRASE, "***"))
        if self.vhost is not None:
            query.append(("vhost", self.vhost))
        if self.heartbeat_ms != DEFAULT_HEARTBEAT_MS:
            query.append(("heartbeat", str(self.heartbeat_ms)))
        query.extend(self.options)
        url = DecodedURL(URL(scheme=self.scheme, host=self.host, port=self.port))
        url = url.replace(path=(self.topic,), query=query)
        # Keep the stars readable instead of percent-encoding them.
        return url.to_text().replace("%2A%2A%2A", "***")


def _allowed_schemes() -> str:
    return ", ".join(SCHEMES)  # registration order: plain stomp first


def parse_channel_url(text: str) -> ChannelSpec:
    """Parse a channel URL (short form, ``scheme://`` form or failover); raise ChannelURLError.

    ``failover:(URL1,URL2,...)?options`` lists brokers to try in turn (the stompest /
    ActiveMQ failover syntax, with full channel URLs inside): the spec returned is the
    first broker's, carrying the others in ``failover``. Options are stompest's; of them
    ``randomize`` (default true) and ``priorityBackup`` choose the order, while reconnect
    delays come from the channel service's exponential backoff with jitter.
    """
    if isinstance(text, str) and text.strip().lower().startswith("failover:"):
        return _parse_failover(text.strip())
    return _parse_single(text)


def _parse_failover(text: str) -> ChannelSpec:
    body = text[len("failover:") :]
    options = ""
    if body.startswith("("):
        end = body.find(")")
        if end == -1:
            raise ChannelURLError("failover channel: missing ')'; expected failover:(URL,URL)?opts")
        inner, rest = body[1:end], body[end + 1 :]
        if rest and not rest.startswith("?"):
            raise ChannelURLError("failover channel: expected '?options' after ')'")
        options = rest[1:]
    else:
        inner = body
    urls = [u.strip() for u in inner.split(",") if u.strip()]
    if not urls:
        raise ChannelURLError("failover channel lists no broker; expected failover:(URL,URL)")
    specs = [_parse_single(u) for u in urls]
    if len({spec.topic for spec in specs}) != 1:
        raise ChannelURLError("failover channel: every broker URL must name the same topic")
    # Let stompest judge the options (it knows their names and types).
    probe = ",".join(f"tcp://{spec.host.strip('[]') or 'x'}:{spec.port}" for spec in specs)
    try:
        parsed = StompFailoverUri(f"failover:({probe})" + (f"?{options}" if options else ""))
    except Exception as e:  # stompest raises ValueError/KeyError-like errors of its own
        raise ChannelURLError(f"failover channel: invalid options {options!r}: {e}") from None
    order = list(specs)
    if parsed.options.get("priorityBackup"):
        local = {"localhost", "127.0.0.1", "::1"}
        order.sort(key=lambda spec: spec.host not in local)
    first, *others = order
    return replace(
        first, failover=tuple(others), randomize=bool(parsed.options.get("randomize", True))
    )


def _parse_single(text: str) -> ChannelSpec:
    """Parse one broker's channel URL (short form or ``scheme://`` form)."""
    if not isinstance(text, str):
        raise ChannelURLError(f"channel must be text, not {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise ChannelURLError("channel is empty; expected e.g. stomp://host:61626/topic")
    # The short form is "stomp:host:port/..."; hyperlink needs "stomp://host:port/...".
    raw = _SCHEME_NO_SLASHES_RE.sub(r"\1://", raw, count=1)
    try:
        url = DecodedURL.from_text(raw)
        scheme_name = url.scheme.lower()
        host = url.host
        port = url.port
        path = url.path
        query = url.query
        userinfo = url.userinfo
        fragment = url.fragment
    except (ValueError, UnicodeError) as e:
        # hyperlink quotes the whole URL, password and all: never echo it.
        problem = str(e).replace(repr(raw), "the URL").replace(raw, "the URL")
        raise ChannelURLError(f"malformed channel URL: {problem}") from None

    if not scheme_name:
        raise ChannelURLError(f"channel has no scheme; allowed schemes: {_allowed_schemes()}")
    scheme = SCHEMES.get(scheme_name)
    if scheme is None:
        raise ChannelURLError(
            f"unknown channel scheme {scheme_name!r}; allowed schemes: {_allowed_schemes()}"
        )
    if not host:
        raise ChannelURLError("channel has no host; expected e.g. stomp://host:61626/topic")
    if ":" not in host and not _HOST_RE.fullmatch(host):
        raise ChannelURLError(
            f"invalid channel host {host!r}; allowed: a host name, IPv4 or [IPv6] address"
        )
    if port is None:
        # hyperlink knows no default port for our schemes; the plugin does.
        port = scheme.default_port
    if not 1 <= port <= 65535:
        raise ChannelURLError(f"invalid channel port {port}; allowed: 1..65535")
    if fragment:
        raise ChannelURLError(
            "channel must not have a fragment ('#'; in a password or codekey write it as %23)"
        )

    segments = [s for s in path if s]
    if len(segments) > 1:
        raise ChannelURLError(
            f"channel path {'/'.join(path)!r} has more than one segment; "
            "allowed: a single topic, e.g. /sisotopic"
        )
    topic = segments[0] if segments else DEFAULT_TOPIC
    if not _TOPIC_RE.fullmatch(topic):
        raise ChannelURLError(
            f"invalid channel topic {topic!r}; allowed characters: A-Z a-z 0-9 _ -"
        )

    params: dict[str, str] = {}
    allowed = QUERY_PARAMS + tuple(getattr(scheme, "params", ()))
    for name, value in query:
        if name not in allowed:
            raise ChannelURLError(
                f"unknown channel parameter {name!r}; allowed: {', '.join(allowed)}"
            )
        if name in params:
            raise ChannelURLError(f"channel parameter {name!r} given more than once")
        params[name] = "" if value is None else value

    username = params.get("username")
    password = params.get("password")
    if userinfo and userinfo != ("",):
        if "username" in params or "password" in params:
            raise ChannelURLError(
                "channel gives credentials both as user:pass@ and as query parameters; "
                "allowed: one of the two"
            )
        username = userinfo[0]
        password = userinfo[1] if len(userinfo) > 1 else None

    heartbeat = DEFAULT_HEARTBEAT_MS
    if "heartbeat" in params:
        hb = params["heartbeat"]
        if not (hb.isascii() and hb.isdigit()):
            raise ChannelURLError(
                f"invalid channel heartbeat {hb!r}; allowed: an integer >= 0 (milliseconds)"
            )
        heartbeat = int(hb)

    codekey = params.get("codekey")
    options = {k: v for k, v in params.items() if k not in QUERY_PARAMS}
    check_options = getattr(scheme, "check_options", None)
    if check_options is not None:
        check_options(options)
    passphrase = options.pop(KEY_PASSPHRASE, None)  # a secret: kept out of options
    return ChannelSpec(
        scheme=scheme_name,
        host=host,
        port=port,
        topic=topic,
        username=username,
        password=None if password is None else Secret(password),
        codekey=None if codekey is None else Secret(codekey),
        vhost=params.get("vhost"),
        heartbeat_ms=heartbeat,
        options=tuple(options.items()),
        key_passphrase=None if passphrase is None else Secret(passphrase),
    )
