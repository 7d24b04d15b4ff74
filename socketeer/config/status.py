"""The status server section: ``socketeer.general.statusserver*`` read into a StatusConfig.

The status endpoint (``/metrics``, ``/status``; see :mod:`socketeer.ops.status`) is off unless
``socketeer.general.statusserverenabled=true``. It listens on ``statusserverport`` (a port,
bound to ``statusserverinterface``, default 127.0.0.1, or an endpoint string) and asks for
HTTP basic authentication when ``statusserveruser.<login>=<password>`` entries exist (a
password may be a ``pbkdf2-sha256$...`` hash, see ``socketeer hash-password``).
"""

from __future__ import annotations

from types import MappingProxyType

from socketeer.config.defaults import DEFAULT_STATUS_ENABLED, DEFAULT_STATUS_PORT
from socketeer.config.endpoints import (
    bare_port_endpoint,
    clashes,
    endpoint_fields,
    listen_endpoint,
    listen_key,
    read_interface,
)
from socketeer.config.keys import (
    K_STATUS_ENABLED,
    K_STATUS_INTERFACE,
    K_STATUS_PORT,
    STATUS_USER_PREFIX,
    is_status_user_key,
)
from socketeer.config.model import BrokerConfig, SourceSinkConfig, StatusConfig
from socketeer.config.properties import Properties
from socketeer.passwords import BadPasswordHash, parse_stored
from socketeer.secret import Secret

__all__ = ["status_config"]

_LOOPBACK = ("127.", "::1", "localhost")


def status_config(
    props: Properties,
    broker: BrokerConfig,
    sourcesinks: tuple[SourceSinkConfig, ...],
    warnings: list[str],
) -> StatusConfig | None:
    """The status server's settings, or None when it is off (the default).

    *broker* and *sourcesinks* are the listeners it must not clash with.
    """
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

    if not props.boolean(K_STATUS_ENABLED, DEFAULT_STATUS_ENABLED):
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

    interface = read_interface(props, K_STATUS_INTERFACE)
    if props.get(K_STATUS_PORT) is None:
        listen = bare_port_endpoint(DEFAULT_STATUS_PORT, interface)
    else:
        listen = listen_endpoint(props, K_STATUS_PORT, interface, K_STATUS_INTERFACE, warnings)

    kind = listen.split(":", 1)[0]
    bound = endpoint_fields(listen)[1].get("interface", "")
    if kind != "unix" and not users and not bound.startswith(_LOOPBACK):
        warnings.append(
            f"{props.path}:{props.line(K_STATUS_PORT) or props.line(K_STATUS_INTERFACE)}: "
            f"the status server listens on {bound or 'every interface'} without a password: "
            f"anyone who can reach it sees every stream (add {STATUS_USER_PREFIX}<login>=...)"
        )

    mine = listen_key(listen)
    if mine is not None:
        others = []
        if broker.enabled and broker.listen is not None:
            others.append((broker.listen, "the broker's messagingserverport"))
        if broker.enabled and broker.tls is not None:
            others.append((broker.tls.listen, "the broker's TLS listener"))
        others += [
            (ss.serverport, f"socketeer.sourcesink.{ss.id}.serverport")
            for ss in sourcesinks
            if ss.serverport is not None
        ]
        for endpoint, what in others:
            theirs = listen_key(endpoint)
            if theirs is not None and clashes(mine, theirs):
                raise props.error(
                    K_STATUS_PORT,
                    f"status server listener {listen!r} clashes with {what}",
                    "a port not used by another listener",
                )
    return StatusConfig(listen=listen, users=MappingProxyType(users))
