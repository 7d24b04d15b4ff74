"""What a loaded configuration is: the frozen Config and its parts, and ConfigError.

Everything the rest of Socketeer reads from a configuration file arrives as these
dataclasses; the section modules build them, nothing changes them afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from socketeer.channel.url import ChannelSpec
from socketeer.config.defaults import (
    DEFAULT_BROKER_HANDSHAKE_TIMEOUT,
    DEFAULT_BROKER_MAX_CONNECT_FRAME,
    DEFAULT_BROKER_MAX_CONNECTIONS,
    DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_BROKER_MAX_TRANSACTION_BYTES,
    DEFAULT_BROKER_MAX_TRANSACTIONS,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_LOGIN_CACHE_AGE,
    DEFAULT_LOGIN_CACHE_SIZE,
    DEFAULT_LOGIN_FAILURE_WINDOW,
    DEFAULT_LOGIN_LOCKOUT,
    DEFAULT_LOGIN_MAX_ADDRESSES,
    DEFAULT_LOGIN_MAX_FAILURES,
    DEFAULT_LOGIN_MAX_PENDING,
    DEFAULT_LOGIN_THREADS,
    DEFAULT_MAX_PENDING_OPENS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_PEER,
    DEFAULT_MAX_WINDOW,
    DEFAULT_PING_INTERVAL,
    DEFAULT_REQUIRE_ENCRYPTION,
    DEFAULT_SEAL_MAX_AGE,
    DEFAULT_SLOW_SUBSCRIBER_TIMEOUT,
    DEFAULT_SUBSCRIBER_QUEUE,
    DEFAULT_WINDOW_BUDGET,
    OPEN_TIMEOUT_FACTOR,
)
from socketeer.policy import EMPTY_POLICY, Policy
from socketeer.secret import Secret
from socketeer.wire.noise import Identity

__all__ = [
    "BrokerConfig",
    "BrokerLimits",
    "BrokerTLSConfig",
    "Config",
    "ConfigError",
    "LoginLimits",
    "ProxyConfig",
    "SourceSinkConfig",
    "StatusConfig",
]


class ConfigError(Exception):
    """A configuration problem, located as precisely as the file allows.

    It names the file, the line, the key and what would have been allowed, because the
    person reading it is editing that file.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        line: int | None = None,
        key: str | None = None,
        allowed: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
        self.allowed = allowed
        where = path if line is None else f"{path}:{line}"
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ProxyConfig:
    """What a source without fixedHost serves on its one listener (a mixed SOCKS/HTTP port)."""

    socks4: bool
    socks5: bool
    http: bool
    users: Mapping[str, Secret] | None  # None: no authentication required
    handshake_timeout: float
    idle_timeout: float  # 0: none


@dataclass(frozen=True)
class BrokerTLSConfig:
    """The broker's TLS listener: where, its certificate chain and key, the client CA."""

    listen: str
    cert: str
    key: str
    client_ca: str | None = None  # set: clients must present a certificate it signed
    key_passphrase: Secret | None = None  # decrypts an encrypted key
    cert_login: str | None = None  # "cn": a client certificate's common name is the login


@dataclass(frozen=True)
class BrokerLimits:
    """What one client may cost the broker: before login, in connections, in transactions."""

    handshake_timeout: float = DEFAULT_BROKER_HANDSHAKE_TIMEOUT
    max_connect_frame: int = DEFAULT_BROKER_MAX_CONNECT_FRAME
    max_connections: int = DEFAULT_BROKER_MAX_CONNECTIONS
    max_connections_per_address: int = DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS
    max_transactions: int = DEFAULT_BROKER_MAX_TRANSACTIONS
    max_transaction_bytes: int = DEFAULT_BROKER_MAX_TRANSACTION_BYTES


@dataclass(frozen=True)
class BrokerConfig:
    """The in-process STOMP broker; ``users`` empty means any login is accepted."""

    enabled: bool
    listen: str | None  # None: messagingserverport=none (TLS listener only)
    max_frame_size: int
    users: Mapping[str, Secret]
    tls: BrokerTLSConfig | None = None
    #: login -> the destination prefixes it may use (absent: all destinations).
    destinations: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Bytes a congested subscriber's queue may hold before its publishers are paused.
    subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    #: Seconds a subscriber may stay over that bound before it is disconnected.
    slow_subscriber_timeout: float = DEFAULT_SLOW_SUBSCRIBER_TIMEOUT
    limits: BrokerLimits = field(default_factory=BrokerLimits)


@dataclass(frozen=True)
class StatusConfig:
    """The status server: where it listens and who may read it (no users: anyone)."""

    listen: str
    users: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class SourceSinkConfig:
    """One ``socketeer.sourcesink.<id>`` profile: a source, a spawning sink, or both."""

    id: str
    clustername: str
    nodename: str
    channel: ChannelSpec
    serverport: str | None
    spawning_sink: bool
    peernode: str | None
    fixed_host: str | None
    fixed_port: int | None
    fixed_type: int
    connect_timeout: float
    window: int
    proxy: ProxyConfig | None = None  # a source without fixedHost: a SOCKS/HTTP proxy port
    policy: Policy = EMPTY_POLICY  # its access list, whitelist, blacklist and maplist
    grace_period: float = DEFAULT_GRACE_PERIOD  # streams wait this long for a silent peer
    ping_interval: float = DEFAULT_PING_INTERVAL  # ping a peer node silent for this long
    max_pending_opens: int = DEFAULT_MAX_PENDING_OPENS  # waiting for the channel, at most
    max_streams: int = DEFAULT_MAX_STREAMS  # live streams of this node, at most
    max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER  # with one peer node, at most
    max_window: int = DEFAULT_MAX_WINDOW  # a stream's window grows to this, at most
    window_budget: int = DEFAULT_WINDOW_BUDGET  # all windows' growth together, at most
    #: This node's static key for authenticated sessions (``identity``); None: none.
    identity: Identity | None = None
    #: ``peerkeys``: node name -> raw X25519 public key of the nodes it may hold sessions
    #: with; None exactly when ``identity`` is None.
    peer_keys: Mapping[str, bytes] | None = None

    @property
    def is_source(self) -> bool:
        """A sourcesink with a listener accepts local clients, so it is a source."""
        return self.serverport is not None

    @property
    def open_timeout(self) -> float:
        """Seconds a source waits for its sink's answer to an OPEN or a RESOLVE."""
        return OPEN_TIMEOUT_FACTOR * self.connect_timeout


@dataclass(frozen=True)
class LoginLimits:
    """How proxy, status server and broker logins are cached and rate-limited (``login*``
    keys)."""

    cache_size: int = DEFAULT_LOGIN_CACHE_SIZE
    cache_age: float = DEFAULT_LOGIN_CACHE_AGE
    max_failures: int = DEFAULT_LOGIN_MAX_FAILURES  # 0: no limit
    failure_window: float = DEFAULT_LOGIN_FAILURE_WINDOW
    lockout: float = DEFAULT_LOGIN_LOCKOUT
    max_addresses: int = DEFAULT_LOGIN_MAX_ADDRESSES
    threads: int = DEFAULT_LOGIN_THREADS
    max_pending: int = DEFAULT_LOGIN_MAX_PENDING


@dataclass(frozen=True)
class Config:
    """Everything one Socketeer process runs, plus the warnings found while reading it."""

    path: str
    broker: BrokerConfig
    sourcesinks: tuple[SourceSinkConfig, ...]
    warnings: tuple[str, ...]
    #: Refuse a channel with neither TLS nor a codekey.
    require_encryption: bool = DEFAULT_REQUIRE_ENCRYPTION
    seal_max_age: float = DEFAULT_SEAL_MAX_AGE  # seconds; older (or newer) seals are dropped
    status: StatusConfig | None = None  # the status server (/metrics, /status); None: off
    logins: LoginLimits = LoginLimits()  # proxy, status server and broker logins
