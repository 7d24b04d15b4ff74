"""The broker section: ``socketeer.general.messagingserver*`` read into a BrokerConfig.

The in-process broker's plain listener, frame size limit and users (passcodes may be
secret references or pbkdf2 hashes), its TLS listener (``messagingserverssl*``: files
relative to the properties file, checked now) and per-login destination prefixes
(``messagingserveruserdestinations.<login>``), and what a client may cost it (handshake
timeout, CONNECT size, connection caps, transactions). Errors name the key and line, never a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from socketeer.config.defaults import (
    DEFAULT_BROKER_ENABLED,
    DEFAULT_BROKER_HANDSHAKE_TIMEOUT,
    DEFAULT_BROKER_MAX_CONNECT_FRAME,
    DEFAULT_BROKER_MAX_CONNECTIONS,
    DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_BROKER_MAX_TRANSACTION_BYTES,
    DEFAULT_BROKER_MAX_TRANSACTIONS,
    DEFAULT_BROKER_PORT,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_SLOW_SUBSCRIBER_TIMEOUT,
    DEFAULT_SUBSCRIBER_QUEUE,
    MAX_CONNECT_FRAME_RANGE,
    MAX_CONNECTIONS_RANGE,
    MAX_FRAME_SIZE_RANGE,
    MAX_TRANSACTION_BYTES_RANGE,
    MAX_TRANSACTIONS_RANGE,
    SUBSCRIBER_QUEUE_RANGE,
)
from socketeer.config.endpoints import (
    bare_port_endpoint,
    listen_endpoint,
    listen_key,
    read_interface,
)
from socketeer.config.keys import (
    K_CERTLOGIN,
    K_ENABLED,
    K_HANDSHAKE_TIMEOUT,
    K_INTERFACE,
    K_MAXCONNECTFRAME,
    K_MAXCONNECTIONS,
    K_MAXCONNECTIONS_PER_ADDRESS,
    K_MAXFRAME,
    K_MAXTRANSACTION_BYTES,
    K_MAXTRANSACTIONS,
    K_PORT,
    K_SLOWSUBSCRIBERTIMEOUT,
    K_SSLCERT,
    K_SSLCLIENTCA,
    K_SSLKEY,
    K_SSLKEYPASSPHRASE,
    K_SSLPORT,
    K_SUBSCRIBERQUEUE,
    USER_DEST_PREFIX,
    USER_PREFIX,
)
from socketeer.config.model import BrokerConfig, BrokerLimits, BrokerTLSConfig
from socketeer.config.properties import Properties
from socketeer.config.tlsfiles import TLSFileError, check_key_pair, read_certificates
from socketeer.passwords import BadPasswordHash, parse_stored
from socketeer.secret import Secret

__all__ = ["broker_config", "broker_login", "broker_passcode"]

_PREFIX_ALLOWED = "comma-separated destination prefixes, e.g. /topic/sisotopic.c,/queue/c."
_TLS_ENDPOINT_ALLOWED = "a port number 1..65535 or an endpoint string tcp:, tcp6: or unix:"


def broker_login(key: str) -> str | None:
    """The login of a ``messagingserveruser.<login>`` key, else None."""
    if key.startswith(USER_PREFIX) and len(key) > len(USER_PREFIX):
        return key[len(USER_PREFIX) :]
    return None


def broker_passcode(props: Properties, key: str) -> Secret:
    """A broker user's passcode (plain or pbkdf2 hash), its reference resolved."""
    value = props.secret(key, props.get(key) or "", "passcode")
    try:
        parse_stored(value)
    except BadPasswordHash as e:
        raise props.error(key, "malformed passcode hash", str(e)) from None
    return Secret(value)


def _user_destinations(
    props: Properties, users: Mapping[str, Secret]
) -> Mapping[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for entry in props.entries.values():
        if not entry.key.startswith(USER_DEST_PREFIX) or len(entry.key) == len(USER_DEST_PREFIX):
            continue
        login = entry.key[len(USER_DEST_PREFIX) :]
        if login not in users:
            raise props.error(
                entry.key,
                f"no broker user {login!r}",
                f"define {USER_PREFIX}{login}=<passcode> too",
            )
        prefixes = tuple(p.strip() for p in entry.value.split(",") if p.strip())
        if not prefixes or any(not p.startswith("/") for p in prefixes):
            raise props.error(
                entry.key, f"invalid destination prefixes {entry.value!r}", _PREFIX_ALLOWED
            )
        result[login] = prefixes
    return MappingProxyType(result)


def _broker_tls(props: Properties, interface: str, warnings: list[str]) -> BrokerTLSConfig | None:
    port = props.get(K_SSLPORT)
    if port is None or port.lower() == "none":
        for other in (K_SSLCERT, K_SSLKEY, K_SSLCLIENTCA, K_SSLKEYPASSPHRASE, K_CERTLOGIN):
            if props.get(other) is not None:
                raise props.error(other, f"{other} needs {K_SSLPORT}", f"set {K_SSLPORT}")
        return None
    listen = listen_endpoint(props, K_SSLPORT, interface, K_INTERFACE, warnings)
    if listen.startswith("ssl:"):
        raise props.error(
            K_SSLPORT,
            "the TLS listener is configured by messagingserverssl*",
            _TLS_ENDPOINT_ALLOWED,
        )
    cert_value = props.required(
        K_SSLCERT,
        "a PEM file with the broker's certificate (and chain)",
        f"required by {K_SSLPORT}",
    )
    cert = props.file_path(cert_value)
    key_value = props.get(K_SSLKEY)
    key = props.file_path(key_value) if key_value else cert
    ca_value = props.get(K_SSLCLIENTCA)
    client_ca = props.file_path(ca_value) if ca_value else None
    passphrase = None
    passphrase_value = props.get(K_SSLKEYPASSPHRASE)
    if passphrase_value is not None:
        passphrase = props.secret(K_SSLKEYPASSPHRASE, passphrase_value, "key passphrase")
    try:
        check_key_pair(cert, key, passphrase)
    except TLSFileError as e:
        wrong = passphrase is not None and "passphrase" in str(e)
        where = K_SSLKEYPASSPHRASE if wrong else K_SSLKEY if key_value else K_SSLCERT
        raise props.error(where, str(e)) from None
    if client_ca is not None:
        try:
            read_certificates(client_ca, "client CA file")
        except TLSFileError as e:
            raise props.error(K_SSLCLIENTCA, str(e)) from None
    cert_login = _cert_login(props, client_ca)
    return BrokerTLSConfig(
        listen,
        cert,
        key,
        client_ca,
        key_passphrase=None if passphrase is None else Secret(passphrase),
        cert_login=cert_login,
    )


def _cert_login(props: Properties, client_ca: str | None) -> str | None:
    """``messagingservercertlogin``: ``cn`` or ``none`` (the default)."""
    value = props.get(K_CERTLOGIN)
    if value is None or value.strip().lower() == "none":
        return None
    if value.strip().lower() != "cn":
        raise props.error(K_CERTLOGIN, f"invalid value {value!r}", "cn or none")
    if client_ca is None:
        raise props.error(
            K_CERTLOGIN,
            "certificate logins need verified client certificates",
            f"set {K_SSLCLIENTCA} too",
        )
    return "cn"


def _broker_limits(props: Properties) -> BrokerLimits:
    return BrokerLimits(
        handshake_timeout=props.positive_float(
            K_HANDSHAKE_TIMEOUT, DEFAULT_BROKER_HANDSHAKE_TIMEOUT
        ),
        max_connect_frame=props.integer(
            K_MAXCONNECTFRAME,
            DEFAULT_BROKER_MAX_CONNECT_FRAME,
            *MAX_CONNECT_FRAME_RANGE,
            " (bytes)",
        ),
        max_connections=props.integer(
            K_MAXCONNECTIONS, DEFAULT_BROKER_MAX_CONNECTIONS, *MAX_CONNECTIONS_RANGE
        ),
        max_connections_per_address=props.integer(
            K_MAXCONNECTIONS_PER_ADDRESS,
            DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
            *MAX_CONNECTIONS_RANGE,
        ),
        max_transactions=props.integer(
            K_MAXTRANSACTIONS, DEFAULT_BROKER_MAX_TRANSACTIONS, *MAX_TRANSACTIONS_RANGE
        ),
        max_transaction_bytes=props.integer(
            K_MAXTRANSACTION_BYTES,
            DEFAULT_BROKER_MAX_TRANSACTION_BYTES,
            *MAX_TRANSACTION_BYTES_RANGE,
            " (bytes)",
        ),
    )


def broker_config(
    props: Properties, users: Mapping[str, Secret], warnings: list[str]
) -> BrokerConfig:
    """The broker's settings; *users* are its logins, read by :func:`broker_passcode`."""
    interface = read_interface(props, K_INTERFACE)
    port = props.get(K_PORT)
    if port is None:
        listen = bare_port_endpoint(DEFAULT_BROKER_PORT, interface)
    elif port.lower() == "none":
        listen = None  # only the TLS listener (checked below that there is one)
    else:
        listen = listen_endpoint(props, K_PORT, interface, K_INTERFACE, warnings)
    enabled = props.boolean(K_ENABLED, DEFAULT_BROKER_ENABLED)
    max_frame_size = props.integer(
        K_MAXFRAME, DEFAULT_MAX_FRAME_SIZE, *MAX_FRAME_SIZE_RANGE, " (bytes)"
    )
    subscriber_queue = props.integer(
        K_SUBSCRIBERQUEUE, DEFAULT_SUBSCRIBER_QUEUE, *SUBSCRIBER_QUEUE_RANGE, " (bytes)"
    )
    slow_subscriber_timeout = props.positive_float(
        K_SLOWSUBSCRIBERTIMEOUT, DEFAULT_SLOW_SUBSCRIBER_TIMEOUT
    )
    tls = _broker_tls(props, interface, warnings)
    if enabled and listen is None and tls is None:
        raise props.error(
            K_PORT,
            "the broker is enabled but has no listener",
            f"a port, or set {K_SSLPORT} when {K_PORT}=none",
        )
    if listen is not None and tls is not None:
        a, b = listen_key(listen), listen_key(tls.listen)
        if a is not None and a == b:
            raise props.error(
                K_SSLPORT, "the TLS listener clashes with the plain one", "another port"
            )
    return BrokerConfig(
        enabled=enabled,
        listen=listen,
        max_frame_size=max_frame_size,
        users=MappingProxyType(dict(users)),
        tls=tls,
        destinations=_user_destinations(props, users),
        subscriber_queue=subscriber_queue,
        slow_subscriber_timeout=slow_subscriber_timeout,
        limits=_broker_limits(props),
    )
