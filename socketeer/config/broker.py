"""Security settings read from the properties file (called by :mod:`socketeer.config.load`).

* Secrets by reference (``env:NAME``, ``file:PATH``, ``literal:TEXT``; see
  :mod:`socketeer.config.secretref`) for channel passwords and codekeys, broker passcodes and
  authorisation users' passwords.
* TLS files of ``stomp+ssl`` channels: relative paths are made relative to the properties
  file's directory, and every file is checked now, so a bad one stops start-up with a
  located error instead of failing each connection.
* The broker's TLS listener (``messagingserverssl*``) and per-login destination prefixes
  (``messagingserveruserdestinations.<login>``).
* ``requireencryption`` and ``sealmaxage``.

Every error is a ConfigError naming the key and line; none contains a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from socketeer.channel.url import ChannelSpec, Secret
from socketeer.config.load import (
    K_INTERFACE,
    K_PORT,
    K_REQUIRE_ENCRYPTION,
    K_SEAL_MAX_AGE,
    K_SSLCERT,
    K_SSLCLIENTCA,
    K_SSLKEY,
    K_SSLPORT,
    SOURCESINK,
    USER_DEST_PREFIX,
    USER_PREFIX,
    ConfigError,
    _listen_endpoint,
    _listen_key,
    _nonnegative_float,
)
from socketeer.config.secretref import SecretRefError, resolve_secret
from socketeer.config.tlsfiles import TLSFileError, check_key_pair, read_certificates

if TYPE_CHECKING:
    from socketeer.config.load import BrokerConfig, SourceSinkConfig, _Props

__all__ = ["BrokerTLSConfig", "channel_is_protected"]

DEFAULT_SEAL_MAX_AGE = 300.0
_PREFIX_ALLOWED = "comma-separated destination prefixes, e.g. /topic/sisotopic.c,/queue/c."
_ENDPOINT_ALLOWED = "a port number 1..65535 or an endpoint string tcp:, tcp6: or unix:"


@dataclass(frozen=True)
class BrokerTLSConfig:
    """The broker's TLS listener: where, its certificate chain and key, the client CA."""

    listen: str
    cert: str
    key: str
    client_ca: str | None = None  # set: clients must present a certificate it signed


def _base_dir(props: _Props) -> str | None:
    path = props.path
    if path.startswith("<"):
        return None
    return os.path.dirname(os.path.abspath(path))


def _path(props: _Props, value: str) -> str:
    base = _base_dir(props)
    if base is not None and not os.path.isabs(value):
        return os.path.join(base, value)
    return value


def secret_value(props: _Props, key: str, value: str, what: str = "secret") -> str:
    """``value`` with an ``env:``/``file:``/``literal:`` reference resolved."""
    try:
        return resolve_secret(value, base_dir=_base_dir(props))
    except SecretRefError as e:
        raise props.error(key, f"cannot read the {what}: {e}") from None


def broker_passcode(props: _Props, key: str) -> Secret:
    """A broker user's passcode (plain or pbkdf2 hash), its reference resolved."""
    from socketeer.passwords import BadPasswordHash, parse_stored

    value = secret_value(props, key, props.get(key) or "", "passcode")
    try:
        parse_stored(value)
    except BadPasswordHash as e:
        raise props.error(key, "malformed passcode hash", str(e)) from None
    return Secret(value)


# -- channels ------------------------------------------------------------------------------


def _brokers(spec: ChannelSpec) -> tuple[ChannelSpec, ...]:
    return tuple(getattr(spec, "brokers", (spec,)))


def channel_is_protected(spec: ChannelSpec) -> bool:
    """A codekey seals every message, or every broker of the channel is reached over TLS."""
    return spec.codekey is not None or all(b.encrypted for b in _brokers(spec))


def _one_broker(props: _Props, key: str, spec: ChannelSpec) -> ChannelSpec:
    changes: dict[str, Any] = {}
    if spec.password is not None:
        changes["password"] = Secret(secret_value(props, key, spec.password.value, "password"))
    if spec.codekey is not None:
        changes["codekey"] = Secret(secret_value(props, key, spec.codekey.value, "codekey"))
    if spec.options:
        options = []
        for name, value in spec.options:
            if name in ("cafile", "certfile", "keyfile"):
                value = _path(props, value)
            options.append((name, value))
        changes["options"] = tuple(options)
        opts = dict(options)
        try:
            if "cafile" in opts:
                read_certificates(opts["cafile"], "CA file")
            if "certfile" in opts:
                check_key_pair(opts["certfile"], opts.get("keyfile", opts["certfile"]))
        except TLSFileError as e:
            raise props.error(key, f"channel TLS: {e}") from None
    return replace(spec, **changes) if changes else spec


def channel_security(props: _Props, key: str, spec: ChannelSpec) -> ChannelSpec:
    """Resolve secret references and check TLS files of every broker of a channel."""
    first = _one_broker(props, key, spec)
    failover = getattr(spec, "failover", ())
    if failover:
        others = tuple(_one_broker(props, key, s) for s in failover)
        codekeys = {None if s.codekey is None else s.codekey.value for s in (first, *others)}
        if len(codekeys) > 1:
            raise props.error(
                key,
                "the brokers of a failover channel have different codekeys",
                "the same codekey (or none) in every broker URL",
            )
        first = replace(first, failover=others)
    return first


# -- the broker ------------------------------------------------------------------------


def _user_destinations(props: _Props, users: Mapping[str, Secret]) -> Mapping[str, tuple[str, ...]]:
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


def _broker_tls(props: _Props, interface: str, warnings: list[str]) -> BrokerTLSConfig | None:
    port = props.get(K_SSLPORT)
    if port is None or port.lower() == "none":
        for other in (K_SSLCERT, K_SSLKEY, K_SSLCLIENTCA):
            if props.get(other) is not None:
                raise props.error(other, f"{other} needs {K_SSLPORT}", f"set {K_SSLPORT}")
        return None
    listen = _listen_endpoint(props, K_SSLPORT, interface, K_INTERFACE, warnings)
    if listen.startswith("ssl:"):
        raise props.error(
            K_SSLPORT, "the TLS listener is configured by messagingserverssl*", _ENDPOINT_ALLOWED
        )
    cert_value = props.required(
        K_SSLCERT,
        "a PEM file with the broker's certificate (and chain)",
        f"required by {K_SSLPORT}",
    )
    cert = _path(props, cert_value)
    key_value = props.get(K_SSLKEY)
    key = _path(props, key_value) if key_value else cert
    ca_value = props.get(K_SSLCLIENTCA)
    client_ca = _path(props, ca_value) if ca_value else None
    try:
        check_key_pair(cert, key)
    except TLSFileError as e:
        raise props.error(K_SSLKEY if key_value else K_SSLCERT, str(e)) from None
    if client_ca is not None:
        try:
            read_certificates(client_ca, "client CA file")
        except TLSFileError as e:
            raise props.error(K_SSLCLIENTCA, str(e)) from None
    return BrokerTLSConfig(listen, cert, key, client_ca)


def broker_security(
    props: _Props, broker: BrokerConfig, interface: str, warnings: list[str]
) -> BrokerConfig:
    """The broker config with its TLS listener and per-user destinations added."""
    tls = _broker_tls(props, interface, warnings)
    if broker.enabled and broker.listen is None and tls is None:
        raise props.error(
            K_PORT,
            "the broker is enabled but has no listener",
            f"a port, or set {K_SSLPORT} when {K_PORT}=none",
        )
    if broker.listen is not None and tls is not None:
        a, b = _listen_key(broker.listen), _listen_key(tls.listen)
        if a is not None and a == b:
            raise props.error(
                K_SSLPORT, "the TLS listener clashes with the plain one", "another port"
            )
    return replace(broker, tls=tls, destinations=_user_destinations(props, broker.users))


# -- general ---------------------------------------------------------------------------


def general_security(props: _Props, sourcesinks: tuple[SourceSinkConfig, ...]) -> dict[str, Any]:
    """``requireencryption`` (checked against every sourcesink) and ``sealmaxage``."""
    require = props.boolean(K_REQUIRE_ENCRYPTION, False)
    if require:
        for ss in sourcesinks:
            if not channel_is_protected(ss.channel):
                key = f"{SOURCESINK}{ss.id}.channel"
                raise ConfigError(
                    props.path,
                    f"{K_REQUIRE_ENCRYPTION} is true but this channel has neither TLS nor a "
                    "codekey",
                    line=props.line(key),
                    key=key,
                    allowed="a stomp+ssl:// channel and/or codekey=... (or env:/file: reference)",
                )
    max_age = _nonnegative_float(props, K_SEAL_MAX_AGE, DEFAULT_SEAL_MAX_AGE)
    return {"require_encryption": require, "seal_max_age": max_age}
