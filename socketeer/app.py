"""The service tree: broker, channels, sources, sinks and the status server from a Config.

``build_service`` takes the reactor as an argument, so tests and embedding applications pass
their own; :mod:`socketeer.tap` (twistd) adds what only a process of its own wants.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.application.service import MultiService
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.logger import Logger

from socketeer.addresses import ip_version
from socketeer.broker.listeners import broker_service, broker_tls_service
from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.channel.client import ChannelService
from socketeer.channel.endpoints import client_endpoint
from socketeer.config.channels import channel_is_protected
from socketeer.config.keys import SOURCESINK
from socketeer.config.load import load_config
from socketeer.config.model import Config, ConfigError, SourceSinkConfig
from socketeer.listening import ListenError, keyed_listener
from socketeer.logins import Logins
from socketeer.policy import EMPTY_POLICY, PolicyRef
from socketeer.sink.connect import Sink
from socketeer.sink.resolve import SystemResolver
from socketeer.source.forward import FixedForwardFactory
from socketeer.source.proxy import ProxyFactory, ProxySettings
from socketeer.tunnel.node import Node
from socketeer.tunnel.sessions import SessionKeys
from socketeer.wire.noise import codekey_psk
from socketeer.wire.seal import Sealer, sealer_for
from socketeer.wire.stompframing import StompLimits

log = Logger(namespace="socketeer.app")


class SocketeerService(MultiService):
    """The root service: children are the broker and one MultiService per sourcesink.

    ``nodes`` and ``sinks`` map each sourcesink id to its Node (and Sink), for embedding
    applications and tests.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, Node] = {}
        self.sinks: dict[str, Sink] = {}
        #: Each sourcesink's policy holder: ``reload_policies`` swaps what they hold.
        self.policies: dict[str, PolicyRef] = {}
        self.config: Config | None = None
        #: Proxy, status server and broker logins: hashing threads, cache, failure limits,
        #: counts.
        self.logins: Logins | None = None
        #: A process of its own (twistd) exits with one line when a listener cannot bind;
        #: an embedding application gets the ListenError.
        self.exit_on_listen_error = False

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ListenError as e:
            self._cannot_listen(e)

    def startService(self) -> None:
        try:
            super().startService()
        except ListenError as e:
            self._cannot_listen(e)

    def _cannot_listen(self, error: ListenError) -> None:
        if not self.exit_on_listen_error:
            raise error
        log.critical("{error}", error=str(error))  # twistd's log: stdout with -n, else its file
        raise SystemExit(1)

    def reload_policies(self, config: Config) -> None:
        """Swap in the lists of a freshly read configuration (SIGHUP).

        Only policies change: established streams are untouched (a policy is consulted when a
        stream opens), and any other change, or a sourcesink added or removed, is reported
        and waits for a restart.
        """
        for warning in config.warnings:
            log.warn("reload: {warning}", warning=warning)
        old = {ss.id: ss for ss in self.config.sourcesinks} if self.config else {}
        new = {ss.id: ss for ss in config.sourcesinks}
        for sid, holder in self.policies.items():
            ss = new.get(sid)
            if ss is None:
                log.warn(
                    "reload: sourcesink {id} is gone from {path}; it runs on, with its "
                    "current policy, until a restart",
                    id=sid,
                    path=config.path,
                )
                continue
            holder.policy = ss.policy
            before = old.get(sid)
            if before is not None and replace(before, policy=EMPTY_POLICY) != replace(
                ss, policy=EMPTY_POLICY
            ):
                log.warn(
                    "reload: sourcesink {id} has changes besides its lists; they take effect "
                    "at the next restart",
                    id=sid,
                )
        for sid in new.keys() - self.policies.keys():
            log.warn("reload: new sourcesink {id} starts at the next restart", id=sid)
        log.info(
            "reloaded policies from {path}: {summary}",
            path=config.path,
            summary="; ".join(
                f"{sid}: {_summary(holder.policy)}" for sid, holder in self.policies.items()
            ),
        )


def _summary(policy) -> str:
    counts = [
        f"{len(rules)} {kind}"
        for kind, rules in (
            ("accesslist", policy.accesslist),
            ("whitelist", policy.whitelist),
            ("blacklist", policy.blacklist),
            ("maplist", policy.maplist),
        )
        if rules
    ]
    return ", ".join(counts) or "no lists"


def reload_policies(root: SocketeerService, path: str) -> bool:
    """Re-read *path* and swap its policies in; an invalid file keeps the old ones."""
    try:
        config = load_config(path)
    except ConfigError as e:
        log.error("reload failed, keeping the current policies: {error}", error=str(e))
        return False
    root.reload_policies(config)
    root.config = config
    return True


def session_keys(ss: SourceSinkConfig, incarnation: str) -> SessionKeys | None:
    """The node's keyed sessions: with a codekey (its psk) and/or an identity, else None."""
    codekey = ss.channel.codekey
    if codekey is None and ss.identity is None:
        return None
    topic = ss.channel.topic
    return SessionKeys(
        topic,
        ss.clustername,
        ss.nodename,
        incarnation,
        psk=None if codekey is None else codekey_psk(codekey, topic, ss.clustername),
        identity=ss.identity,
        peer_keys=ss.peer_keys,
    )


def _node_service(
    ss: SourceSinkConfig,
    reactor,
    limits: StompLimits,
    sealer: Sealer | None = None,
    *,
    policy: PolicyRef | None = None,
    logins: Logins | None = None,
) -> tuple[Node, MultiService, Sink | None]:
    node = Node(
        ss.clustername,
        ss.nodename,
        ss.channel.topic,
        reactor,
        window=ss.window,
        grace=ss.grace_period,
        ping_interval=ss.ping_interval,
        channel_wait=ss.connect_timeout,
        max_waiting=ss.max_pending_opens,
        max_streams=ss.max_streams,
        max_streams_per_peer=ss.max_streams_per_peer,
        max_window=ss.max_window,
        window_budget=ss.window_budget,
        sealer=sealer,
    )
    node.keys = session_keys(ss, node.incarnation)
    svc = MultiService()
    svc.setName(f"sourcesink-{ss.id}")
    channel = ChannelService(
        node, ss.channel, client_endpoint(reactor, ss.channel), reactor, limits
    )
    channel.setName("channel")
    channel.setServiceParent(svc)
    if ss.spawning_sink:
        timeout = ss.connect_timeout

        def endpoint_for(host: str, port: int):
            # An address needs no lookup (HostnameEndpoint would still ask the thread pool).
            version = ip_version(host)
            if version == 4:
                return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
            if version == 6:
                return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
            return HostnameEndpoint(reactor, host, port, timeout=timeout)

        resolver = SystemResolver(reactor)
        sink = Sink(
            node,
            endpoint_for,
            reactor,
            connect_timeout=timeout,
            resolver=resolver.resolve,
            policy=policy,
            address_resolver=resolver.addresses,
        )
    else:
        sink = None
    if ss.is_source:
        open_timeout = ss.open_timeout
        if ss.proxy is not None:
            settings = ProxySettings.from_config(
                ss.peernode, ss.proxy, open_timeout, policy, logins
            )
            factory = ProxyFactory(node, settings, reactor)
        else:
            factory = FixedForwardFactory(
                node,
                ss.peernode,
                ss.fixed_host,
                ss.fixed_port,
                kind=ss.fixed_type,
                open_timeout=open_timeout,
                policy=policy,
            )
        listener = keyed_listener(
            f"{SOURCESINK}{ss.id}.serverport", ss.serverport, factory, reactor
        )
        listener.setName("listener")
        listener.setServiceParent(svc)
    return node, svc, sink


def build_service(config: Config, reactor) -> SocketeerService:
    """Compose broker, channels, sources and sinks into one MultiService."""
    root = SocketeerService()
    root.config = config
    root.logins = logins = Logins(config.logins, reactor)
    limits = StompLimits(max_body=config.broker.max_frame_size)
    for warning in config.warnings:
        log.warn("{warning}", warning=warning)
    if config.broker.enabled:
        factory = BrokerFactory(
            Router(),
            reactor,
            users={k: v.value for k, v in config.broker.users.items()},
            limits=limits,
            destinations=config.broker.destinations,
            subscriber_queue=config.broker.subscriber_queue,
            slow_subscriber_timeout=config.broker.slow_subscriber_timeout,
            connect_timeout=config.broker.limits.handshake_timeout,
            max_connect_frame=config.broker.limits.max_connect_frame,
            max_connections=config.broker.limits.max_connections,
            max_connections_per_address=config.broker.limits.max_connections_per_address,
            max_transactions=config.broker.limits.max_transactions,
            max_transaction_bytes=config.broker.limits.max_transaction_bytes,
            cert_login=config.broker.tls is not None and config.broker.tls.cert_login == "cn",
            logins=logins,
        )
        if config.broker.listen is not None:  # messagingserverport=none: TLS only
            broker = broker_service(config.broker.listen, factory, reactor)
            broker.setName("broker")
            broker.setServiceParent(root)
        if config.broker.tls is not None:  # the same broker (one router) behind TLS
            broker = broker_tls_service(config.broker.tls, factory, reactor)
            broker.setName("broker-tls")
            broker.setServiceParent(root)
    for ss in config.sourcesinks:
        sealer = sealer_for(ss.channel, ss.clustername, config.seal_max_age)
        policy = root.policies[ss.id] = PolicyRef(ss.policy)
        node, svc, sink = _node_service(ss, reactor, limits, sealer, policy=policy, logins=logins)
        root.nodes[ss.id] = node
        if sink is not None:
            root.sinks[ss.id] = sink
        svc.setServiceParent(root)
        if not channel_is_protected(ss.channel) and ss.identity is None:  # say so plainly
            log.warn(
                "sourcesink {id}: the channel to {url} is not encrypted: the broker and anyone "
                "on the path can read the relayed bytes (use stomp+ssl:// and/or a codekey; "
                "socketeer.general.requireencryption=true refuses this)",
                id=ss.id,
                url=ss.channel.redacted(),
            )
    if config.status is not None:  # the status server, after every listener it reports on
        # Imported only when enabled: twisted.web and prometheus_client cost each relay
        # process about 2 MiB that a node without a status server should not carry.
        from socketeer.ops.status import StatusService

        status = StatusService(root, config, reactor)
        status.setName("status")
        status.setServiceParent(root)
    return root
