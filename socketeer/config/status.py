"""Operations settings: the status server's keys, read from the properties file.

The status endpoint (``/metrics``, ``/status``; see :mod:`socketeer.ops.status`) is off unless
``socketeer.general.statusserverenabled=true``. It listens on ``statusserverport`` (a port,
bound to ``statusserverinterface``, default 127.0.0.1, or an endpoint string) and asks for
HTTP basic authentication when ``statusserveruser.<login>=<password>`` entries exist (a
password may be a ``pbkdf2-sha256$...`` hash, see ``socketeer hash-password``).

Pure, like :mod:`socketeer.config.load`, which calls :func:`status_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from socketeer.passwords import BadPasswordHash, parse_stored
from socketeer.secret import Secret

if TYPE_CHECKING:
    from socketeer.config.load import BrokerConfig, SourceSinkConfig, _Props

__all__ = [
    "DEFAULT_STATUS_PORT",
    "STATUS_KEYS",
    "STATUS_USER_PREFIX",
    "StatusConfig",
    "status_config",
]

_GENERAL = "socketeer.general."
K_STATUS_ENABLED = _GENERAL + "statusserverenabled"
K_STATUS_PORT = _GENERAL + "statusserverport"
K_STATUS_INTERFACE = _GENERAL + "statusserverinterface"
STATUS_USER_PREFIX = _GENERAL + "statusserveruser."
STATUS_KEYS = (K_STATUS_ENABLED, K_STATUS_PORT, K_STATUS_INTERFACE)
DEFAULT_STATUS_PORT = 9626

_LOOPBACK = ("127.", "::1", "localhost")


@dataclass(frozen=True)
class StatusConfig:
    """The status server: where it listens and who may read it (no users: anyone)."""

    listen: str
    users: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))


def is_status_user_key(key: str) -> bool:
    return key.startswith(STATUS_USER_PREFIX) and len(key) > len(STATUS_USER_PREFIX)


def status_config(
    props: _Props,
    broker: BrokerConfig,
    sourcesinks: tuple[SourceSinkConfig, ...],
    warnings: list[str],
) -> StatusConfig | None:
    """The status server's settings, or None when it is off (the default)."""
    from socketeer.config.load import (
        _bare_port_endpoint,
        _clash,
        _endpoint_fields,
        _interface,
        _listen_endpoint,
        _listen_key,
    )

    users: dict[str, Secret] = {}
    for key, entry in props.entries.items():
        if not is_status_user_key(key):
            continue
        value = entry.value.strip()
        try:
            parse_stored(value)
        except BadPasswordHash as e:
            raise props.error(key, f"invalid password hash: {e}") from None
        if not value:
            raise props.error(key, "empty password", "a password or a pbkdf2-sha256$... hash")
        users[key[len(STATUS_USER_PREFIX) :]] = Secret(value)

    if not props.boolean(K_STATUS_ENABLED, False):
        ignored = [k for k in (K_STATUS_PORT, K_STATUS_INTERFACE) if props.get(k) is not None]
        for key in ignored:
            warnings.append(
                f"{props.path}:{props.line(key)}: {key} is ignored because "
                f"{K_STATUS_ENABLED} is not true"
            )
        if users and not ignored:
            warnings.append(
                f"{props.path}: {STATUS_USER_PREFIX}<login> entries are ignored because "
                f"{K_STATUS_ENABLED} is not true"
            )
        return None

    interface = _interface(props, K_STATUS_INTERFACE)
    if props.get(K_STATUS_PORT) is None:
        listen = _bare_port_endpoint(DEFAULT_STATUS_PORT, interface)
    else:
        listen = _listen_endpoint(props, K_STATUS_PORT, interface, K_STATUS_INTERFACE, warnings)

    kind = listen.split(":", 1)[0]
    bound = _endpoint_fields(listen)[1].get("interface", "")
    if kind != "unix" and not users and not bound.startswith(_LOOPBACK):
        warnings.append(
            f"{props.path}:{props.line(K_STATUS_PORT) or props.line(K_STATUS_INTERFACE)}: "
            f"the status server listens on {bound or 'every interface'} without a password: "
            f"anyone who can reach it sees every stream (add {STATUS_USER_PREFIX}<login>=...)"
        )

    mine = _listen_key(listen)
    if mine is not None:
        others = []
        if broker.enabled and broker.listen is not None:
            others.append((broker.listen, "the broker's messagingserverport"))
        tls = getattr(broker, "tls", None)
        if broker.enabled and tls is not None:
            others.append((tls.listen, "the broker's TLS listener"))
        others += [
            (ss.serverport, f"socketeer.sourcesink.{ss.id}.serverport")
            for ss in sourcesinks
            if ss.serverport is not None
        ]
        for endpoint, what in others:
            theirs = _listen_key(endpoint)
            if theirs is not None and _clash(mine, theirs):
                raise props.error(
                    K_STATUS_PORT,
                    f"status server listener {listen!r} clashes with {what}",
                    "a port not used by another listener",
                )
    return StatusConfig(listen=listen, users=MappingProxyType(users))
