"""Loading a configuration: the properties file read, section by section, into a frozen Config.

The keys are the ones of the original (Java) Socketeer, so existing
``socketeer.properties`` files keep working::

    socketeer.general.messagingserverenabled=true
    socketeer.general.messagingserverport=61626
    socketeer.sourcesink.0.clustername=c
    socketeer.sourcesink.0.nodename=si
    socketeer.sourcesink.0.channel=stomp://localhost:61626/sisotopic
    socketeer.sourcesink.0.isSpawningAndResolvingSink=true

Every error is a ConfigError that names the file, the line, the key and what would have
been allowed (see :mod:`socketeer.config.properties` for the file syntax). Unknown keys are
only warnings, with a "did you mean" suggestion (:mod:`socketeer.config.suggest`).

Each section has its module: :mod:`~socketeer.config.broker`,
:mod:`~socketeer.config.sourcesinks` (with :mod:`~socketeer.config.channels` and
:mod:`~socketeer.config.authorisation`), :mod:`~socketeer.config.policies`,
:mod:`~socketeer.config.status` and :mod:`~socketeer.config.protection`; this module reads
the file, sorts its keys, calls the sections in order and checks what spans them.
Like all of :mod:`socketeer.config`, it imports no Twisted.
"""

from __future__ import annotations

import os

from socketeer.config.authorisation import auth_entry
from socketeer.config.broker import broker_config, broker_login, broker_passcode
from socketeer.config.endpoints import ListenKey, clashes, listen_key
from socketeer.config.keys import (
    GENERAL_KEYS,
    K_ENABLED,
    K_PORT,
    K_SSLPORT,
    SOURCESINK,
    USER_DEST_PREFIX,
    is_status_user_key,
    sourcesink_id,
)
from socketeer.config.logins import login_limits
from socketeer.config.model import BrokerConfig, Config, ConfigError, SourceSinkConfig
from socketeer.config.policies import policy_entry, policy_profiles, with_policies
from socketeer.config.properties import NAME_ALLOWED, Properties, is_name, read_entries, read_text
from socketeer.config.protection import require_encryption, seal_max_age
from socketeer.config.sourcesinks import sourcesink_config
from socketeer.config.status import status_config
from socketeer.config.suggest import unknown_key_warning
from socketeer.secret import Secret

__all__ = ["load_config", "parse_config"]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse the configuration file at *path*; raise ConfigError on any problem."""
    name = os.fspath(path)
    return parse_config(read_text(name), name)


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse properties *text*; *path* is used in messages and to resolve relative files."""
    warnings: list[str] = []
    props = Properties(path, read_entries(text, path, warnings))

    ids: list[str] = []
    for entry in props.entries.values():
        sid = sourcesink_id(entry.key)
        if sid is not None and sid not in ids:
            ids.append(sid)

    users = _sort_keys(props, ids, warnings)
    broker = broker_config(props, users, warnings)
    sourcesinks = tuple(sourcesink_config(props, sid, warnings) for sid in ids)
    sourcesinks = with_policies(props, sourcesinks, policy_profiles(props), warnings)
    _check_unique(props, broker, sourcesinks)
    status = status_config(props, broker, sourcesinks, warnings)
    if not broker.enabled and not sourcesinks:
        raise ConfigError(
            path,
            "nothing to run: no sourcesink is configured and the broker is disabled",
            allowed=f"set {K_ENABLED}=true or configure a {SOURCESINK}<id>.*",
        )
    require = require_encryption(props, sourcesinks)
    return Config(
        path,
        broker,
        sourcesinks,
        tuple(warnings),
        require_encryption=require,
        seal_max_age=seal_max_age(props),
        status=status,
        logins=login_limits(props),
    )


def _sort_keys(props: Properties, ids: list[str], warnings: list[str]) -> dict[str, Secret]:
    """Check every key belongs to a section (else warn) and read the broker's users.

    The users are read here, in file order with the other per-key checks, so that of two
    bad keys the first in the file is the one reported.
    """
    users: dict[str, Secret] = {}
    for entry in props.entries.values():
        key = entry.key
        if key in GENERAL_KEYS:
            continue
        login = broker_login(key)
        if login is not None:
            users[login] = broker_passcode(props, key)
            continue
        if key.startswith(USER_DEST_PREFIX) and len(key) > len(USER_DEST_PREFIX):
            continue  # checked with the broker
        if is_status_user_key(key):
            continue  # checked with the status server
        if auth_entry(props, key) is not None or policy_entry(props, key) is not None:
            continue
        sid = sourcesink_id(key)
        if sid is not None:
            if not is_name(sid):
                raise props.error(key, f"invalid sourcesink id {sid!r}", NAME_ALLOWED)
            continue
        warnings.append(unknown_key_warning(props.path, entry, ids))
    return users


def _check_unique(
    props: Properties, broker: BrokerConfig, sourcesinks: tuple[SourceSinkConfig, ...]
) -> None:
    """Node names are unique in their cluster; no two listeners want the same port."""
    nodes: dict[tuple[str, str], str] = {}
    listeners: list[tuple[ListenKey, str]] = []
    if broker.enabled:
        key = listen_key(broker.listen) if broker.listen is not None else None
        if key is not None:
            listeners.append((key, K_PORT))
        key = listen_key(broker.tls.listen) if broker.tls is not None else None
        if key is not None:
            listeners.append((key, K_SSLPORT))
    for ss in sourcesinks:
        node = (ss.clustername, ss.nodename)
        if node in nodes:
            raise props.error(
                f"{SOURCESINK}{ss.id}.nodename",
                f"node {ss.nodename!r} in cluster {ss.clustername!r} is already "
                f"used by sourcesink {nodes[node]!r}",
                "a node name that is unique within its cluster",
            )
        nodes[node] = ss.id
        if ss.serverport is None:
            continue
        key = listen_key(ss.serverport)
        if key is None:
            continue
        for other, other_key in listeners:
            if clashes(key, other):
                raise props.error(
                    f"{SOURCESINK}{ss.id}.serverport",
                    f"listener {ss.serverport!r} clashes with {other_key}",
                    "a port not used by another listener",
                )
        listeners.append((key, f"{SOURCESINK}{ss.id}.serverport"))
