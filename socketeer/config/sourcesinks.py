"""A sourcesink section: ``socketeer.sourcesink.<id>.*`` read into a SourceSinkConfig.

A sourcesink is a source (it has a ``serverport``), a spawning sink, or both. A source
either forwards to its fixed target (``fixedHost``/``fixedPort``) or serves SOCKS and
HTTP proxy clients on its one port. Its list profiles are added afterwards by
:mod:`socketeer.config.policies`.
"""

from __future__ import annotations

import re

from socketeer.addresses import is_ip
from socketeer.config.authorisation import auth_users
from socketeer.config.channels import channel_config
from socketeer.config.defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIXED_TYPE,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HTTP_ENABLED,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PENDING_OPENS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_PEER,
    DEFAULT_MAX_WINDOW,
    DEFAULT_PING_INTERVAL,
    DEFAULT_SOCKS4_ENABLED,
    DEFAULT_SOCKS5_ENABLED,
    DEFAULT_SPAWNING_SINK,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BUDGET,
    FIXED_TYPES,
    MAX_PENDING_OPENS_RANGE,
    MAX_STREAMS_RANGE,
    MAX_WINDOW_RANGE,
    WINDOW_BUDGET_RANGE,
    WINDOW_RANGE,
)
from socketeer.config.endpoints import listen_endpoint, read_interface
from socketeer.config.identities import check_identity, node_identity, peer_keys
from socketeer.config.keys import SOURCESINK, sourcesink_id
from socketeer.config.model import ConfigError, ProxyConfig, SourceSinkConfig
from socketeer.config.properties import NAME_ALLOWED, Properties

__all__ = ["sourcesink_config"]

_HOST_RE = re.compile(r"[\w.\-]+")


def sourcesink_config(props: Properties, sid: str, warnings: list[str]) -> SourceSinkConfig:
    """The sourcesink ``socketeer.sourcesink.<sid>``, without its list profiles."""

    def k(sub: str) -> str:
        return f"{SOURCESINK}{sid}.{sub}"

    clustername = props.name(k("clustername"))
    nodename = props.name(k("nodename"))
    channel = channel_config(props, k("channel"))  # secret references, TLS files

    serverport = None
    if props.get(k("serverport")) is not None:
        interface = read_interface(props, k("serverinterface"))
        serverport = listen_endpoint(
            props, k("serverport"), interface, k("serverinterface"), warnings
        )
    elif props.get(k("serverinterface")) is not None:
        raise props.error(
            k("serverinterface"), "serverinterface needs serverport", f"also set {k('serverport')}"
        )
    spawning = props.boolean(k("isSpawningAndResolvingSink"), DEFAULT_SPAWNING_SINK)

    if serverport is None and not spawning:
        raise ConfigError(
            props.path,
            "sourcesink is neither a source nor a sink",
            line=min(e.line for e in props.entries.values() if sourcesink_id(e.key) == sid),
            key=f"{SOURCESINK}{sid}",
            allowed=f"set {k('serverport')} (a source) "
            f"and/or {k('isSpawningAndResolvingSink')}=true (a sink)",
        )

    peernode = props.optional_name(k("peernode"))
    if serverport is not None and peernode is None:
        raise ConfigError(
            props.path,
            "required for a source (the node name of the sink it talks to)",
            key=k("peernode"),
            allowed=NAME_ALLOWED,
        )

    fixed_host = props.get(k("fixedHost"))
    if fixed_host is not None and not (_HOST_RE.fullmatch(fixed_host) or is_ip(fixed_host)):
        raise props.error(
            k("fixedHost"), f"invalid host {fixed_host!r}", "a host name or an IP address"
        )
    fixed_port = None
    if props.get(k("fixedPort")) is not None:
        fixed_port = props.integer(k("fixedPort"), 0, 1, 65535)
    if (fixed_host is None) != (fixed_port is None):
        given, missing = "fixedHost", "fixedPort"
        if fixed_host is None:
            given, missing = missing, given
        raise ConfigError(
            props.path,
            f"required because {given} is set (they go together)",
            key=k(missing),
            allowed=f"set both {k('fixedHost')} and {k('fixedPort')}, or neither",
        )
    proxy = None
    if serverport is not None and fixed_host is None:
        proxy = ProxyConfig(
            socks4=props.boolean(k("socks4enabled"), DEFAULT_SOCKS4_ENABLED),
            socks5=props.boolean(k("socks5enabled"), DEFAULT_SOCKS5_ENABLED),
            http=props.boolean(k("httpenabled"), DEFAULT_HTTP_ENABLED),
            users=auth_users(props, k("authorisation")),
            handshake_timeout=props.positive_float(
                k("handshaketimeout"), DEFAULT_HANDSHAKE_TIMEOUT
            ),
            idle_timeout=props.nonnegative_float(k("idletimeout"), DEFAULT_IDLE_TIMEOUT),
        )
        if not (proxy.socks4 or proxy.socks5 or proxy.http):
            raise props.error(
                k("httpenabled"),
                "a source without fixedHost serves SOCKS and/or HTTP, but all are disabled",
                f"enable one of socks4enabled, socks5enabled, httpenabled, or set {k('fixedHost')}",
            )
    fixed_type = props.integer(k("fixedType"), DEFAULT_FIXED_TYPE, 0, 2**31 - 1)
    if fixed_type not in FIXED_TYPES:
        raise props.error(
            k("fixedType"),
            f"unsupported fixedType {fixed_type}",
            ", ".join(f"{n} ({t})" for n, t in FIXED_TYPES.items()),
        )

    identity = node_identity(props, k("identity"))
    keys = peer_keys(props, k("peerkeys"), warnings)
    check_identity(props, k("identity"), k("peerkeys"), identity, keys, nodename, peernode)

    window = props.integer(k("window"), DEFAULT_WINDOW, *WINDOW_RANGE, " (bytes)")
    max_window = props.integer(
        k("maxwindow"), max(DEFAULT_MAX_WINDOW, window), *MAX_WINDOW_RANGE, " (bytes)"
    )
    if max_window < window:
        raise ConfigError(
            props.path,
            f"{k('maxwindow')} ({max_window}) is smaller than {k('window')} ({window})",
            line=props.line(k("maxwindow")),
            key=k("maxwindow"),
            allowed=f"at least the window, {window} bytes",
        )
    return SourceSinkConfig(
        id=sid,
        clustername=clustername,
        nodename=nodename,
        channel=channel,
        serverport=serverport,
        spawning_sink=spawning,
        peernode=peernode,
        fixed_host=fixed_host,
        fixed_port=fixed_port,
        fixed_type=fixed_type,
        connect_timeout=props.positive_float(k("connecttimeout"), DEFAULT_CONNECT_TIMEOUT),
        window=window,
        proxy=proxy,
        grace_period=props.positive_float(k("graceperiod"), DEFAULT_GRACE_PERIOD),
        ping_interval=props.positive_float(k("pinginterval"), DEFAULT_PING_INTERVAL),
        max_pending_opens=props.integer(
            k("maxpendingopens"), DEFAULT_MAX_PENDING_OPENS, *MAX_PENDING_OPENS_RANGE
        ),
        max_streams=props.integer(k("maxstreams"), DEFAULT_MAX_STREAMS, *MAX_STREAMS_RANGE),
        max_streams_per_peer=props.integer(
            k("maxstreamsperpeer"), DEFAULT_MAX_STREAMS_PER_PEER, *MAX_STREAMS_RANGE
        ),
        max_window=max_window,
        window_budget=props.integer(
            k("windowbudget"), DEFAULT_WINDOW_BUDGET, *WINDOW_BUDGET_RANGE, " (bytes)"
        ),
        identity=identity,
        peer_keys=keys,
    )
