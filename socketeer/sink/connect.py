"""The spawning and resolving sink: turns OPEN messages into real outbound TCP connections.

A sink node (``isSpawningAndResolvingSink=true``) resolves the name itself (remote DNS, as
``socks5h`` users expect), connects as soon as the OPEN arrives (a server that speaks first, like
MariaDB or SMTP, must not wait for client bytes), and answers OPEN_OK with the bound address
or OPEN_FAIL with the reason. Once connected, the outbound socket is relayed to the stream
(``tunnel.relay``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketeer import logs
from socketeer.config.defaults import DEFAULT_CONNECT_TIMEOUT
from socketeer.policy import Decision, Policy, PolicyRef, canonical_host, host_text
from socketeer.sink.resolve import AddressResolver, Resolver
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure, classify_connect_failure
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase, Stream
from socketeer.wire.envelope import Envelope

EndpointFor = Callable[[str, int], IStreamClientEndpoint]


class PolicyDenied(Exception):
    """The sink's policy refuses a target (carried to the errback of a checked open)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.rule_text)
        self.decision = decision


MAX_HOST = 255


class Sink:
    """Serves OPEN messages addressed to ``node``."""

    log = Logger()

    def __init__(
        self,
        node: Node,
        endpoint_for: EndpointFor,
        clock: IReactorTime,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        resolver: Resolver | None = None,
        policy: PolicyRef | None = None,
        address_resolver: AddressResolver | None = None,
        ip_endpoint_for: EndpointFor | None = None,
    ) -> None:
        self.node = node
        self.endpoint_for = endpoint_for
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.resolver = resolver
        #: The sink's own lists; authoritative whatever the source decided.
        self.policy = policy
        #: All addresses of a name (else ``resolver``'s one address is used).
        self.address_resolver = address_resolver
        #: The endpoint for a checked IP address; by default TCP4/TCP6ClientEndpoint on
        #: ``clock``, which must then be the reactor.
        self.ip_endpoint_for = ip_endpoint_for
        node.serve(self)

    def _deadline(self, d: Deferred, on_timeout: Callable[[], object]) -> Deferred:
        """Call ``on_timeout`` unless ``d`` fires within the connect timeout."""
        timer = self.clock.callLater(self.connect_timeout, on_timeout)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(done)

    def resolve(self, env: Envelope) -> None:
        """Answer a RESOLVE request (SOCKS5 RESOLVE / RESOLVE_PTR through the source).

        A sink whose policy judges targets judges the name (or the address of a reverse
        lookup) first, and a forward lookup's answer too (:meth:`Policy.judge_lookup`); a
        refusal answers ``denied``, counted and logged with its rule.
        """
        try:
            params = env.params()
            name = params["name"]
            reverse = params.get("ptr", "0") == "1"
        except (KeyError, ValueError):
            self.node.answer_resolve(env, None, OpenFailure.ERROR)
            return
        if self.resolver is None or not name or len(name) > MAX_HOST:
            self.node.answer_resolve(env, None, OpenFailure.ERROR)
            return
        policy = self.policy.policy if self.policy is not None else None
        judge = policy if policy is not None and policy.judges_targets else None
        cluster, peer = self.node.cluster, env.source
        if judge is not None:
            decision = judge.judge_lookup(name, cluster=cluster, node=peer)
            if not decision.allowed:
                self._deny_lookup(env, decision)
                return
        d = self.resolver(name, reverse)

        def answered(address: str) -> None:
            if judge is not None and not reverse:
                decision = judge.judge_lookup(name, cluster=cluster, node=peer, addresses=[address])
                if not decision.allowed:
                    self._deny_lookup(env, decision)
                    return
            self.node.answer_resolve(env, address)

        def failed(failure: Failure) -> None:
            reason = (
                OpenFailure.TIMEOUT if failure.check(CancelledError) else OpenFailure.NAME_NOT_FOUND
            )
            self.log.info("resolve {name} failed: {reason}", name=name, reason=reason.value)
            self.node.answer_resolve(env, None, reason)

        self._deadline(d, d.cancel).addCallbacks(answered, failed)

    def _deny_lookup(self, env: Envelope, decision: Decision) -> None:
        self.node.stats.denied[decision.rule] += 1
        self.log.info(
            "refused a lookup for node {peer}: {why}", peer=env.source, why=decision.rule_text
        )
        self.node.answer_resolve(env, None, OpenFailure.DENIED)

    def open(self, env: Envelope) -> None:
        try:
            params = env.params()
        except ValueError:  # EnvelopeError: malformed parameters, refused just below
            params = {}
        stream = self.node.accept_stream(env, params)
        try:
            host = params["host"]
            port = int(params["port"])
            kind = int(params.get("type", "0"))
        except (KeyError, ValueError) as e:
            stream.refuse(OpenFailure.ERROR, f"malformed open request: {e}")
            return
        stream.target = f"{host}:{port}"
        if not host or len(host) > MAX_HOST or not 0 < port < 65536:
            stream.refuse(OpenFailure.ERROR, "invalid target address")
            return
        if kind != 0:
            stream.refuse(OpenFailure.ERROR, f"unsupported stream type {kind}")
            return
        # The policy held now judges this whole open, even if a reload swaps it meanwhile.
        policy = self.policy.policy if self.policy is not None else None
        judge: Policy | None = None  # the policy that judges this target, if any
        if policy is not None and not policy.empty:
            host, port = self._map(stream, env.source, host, port, policy)
            if policy.judges_targets:
                judge = policy
        self._connect(stream, env.source, host, port, judge)

    def _connect(
        self, stream: Stream, peer: str, host: str, port: int, policy: Policy | None
    ) -> None:
        """Connect to the target, then relay the socket to the stream; or refuse the stream.

        With a ``policy`` that judges targets, a name is resolved here; the name and every
        address it resolves to are judged (``Policy.judge``), and the connection goes to
        those addresses (in resolver order, the next one if a connect fails), never to the
        name: no second lookup can answer differently (DNS rebinding).
        """
        self.node.add_stream(stream)
        if logs.trace:  # per stream, on the connect path: only built when asked for
            self.log.debug(
                "stream {resource}: connecting to {target}",
                resource=stream.resource,
                target=stream.target,
            )
        factory = Factory.forProtocol(
            lambda: SocketRelay(lambda relay: self._connected(stream, relay))
        )
        factory.noisy = False  # no "Starting factory" line per stream
        stopped: list[bool] = []  # timed out, or the source gave up: try no other address
        if policy is not None:
            d = Deferred.fromCoroutine(
                self._checked_connect(peer, host, port, policy, factory, stopped)
            )
        else:
            try:
                endpoint = self.endpoint_for(host, port)
            except ValueError as e:
                stream.refuse(OpenFailure.NAME_NOT_FOUND, str(e))
                return
            d = endpoint.connect(factory)

        def stop() -> None:
            if not d.called:
                stopped.append(True)
                d.cancel()

        self._deadline(d, stop).addErrback(self._failed, stream, peer)
        stream.on_finish = lambda s: stop()

    # -- the sink's policy -----------------------------------------------------------------

    def _map(
        self, stream: Stream, peer: str, host: str, port: int, policy: Policy
    ) -> tuple[str, int]:
        """The target after the sink's maplist (the stream's target updated if it moved)."""
        mapped = policy.map_target(host, port, cluster=self.node.cluster, node=peer)
        if mapped.rule is not None:
            stream.target = f"{mapped.host}:{mapped.port}"
            self.log.debug(
                "stream {resource}: {host}:{port} mapped to {target} by {rule}",
                resource=stream.resource,
                host=host,
                port=port,
                target=stream.target,
                rule=mapped.rule.describe(),
            )
        return mapped.host, mapped.port

    async def _checked_connect(
        self, peer: str, host: str, port: int, policy: Policy, factory, stopped: list[bool]
    ):
        cluster = self.node.cluster
        try:
            canonical = canonical_host(host)
        except ValueError:
            canonical = None  # judge() denies it
        addresses: list[str] | None = None
        if isinstance(canonical, str):
            rule = policy.blacklisted(canonical, port, cluster=cluster, node=peer)
            if rule is not None:  # no need to ask DNS
                raise PolicyDenied(Decision(False, host, port, rule.id, rule.describe()))
            addresses = await self._lookup(host)
        decision = policy.judge(host, port, cluster=cluster, node=peer, addresses=addresses)
        if not decision.allowed:
            raise PolicyDenied(decision)
        if addresses is None:
            candidates = [host_text(canonical)]
        else:
            candidates = list(dict.fromkeys(host_text(canonical_host(a)) for a in addresses))
        error: Exception | None = None
        for address in candidates:
            try:
                return await self._ip_endpoint(address, port).connect(factory)
            except Exception as e:
                if stopped or isinstance(e, CancelledError):
                    raise
                error = e  # try the next address
        raise error

    async def _lookup(self, name: str) -> list[str]:
        try:
            if self.address_resolver is not None:
                addresses = list(await self.address_resolver(name))
            elif self.resolver is not None:
                addresses = [await self.resolver(name, False)]
            else:
                raise DNSLookupError(f"{name}: this sink has no resolver")
        except (CancelledError, DNSLookupError):
            raise
        except Exception as e:
            raise DNSLookupError(f"{name}: {e}") from e
        if not addresses:
            raise DNSLookupError(f"{name}: no address")
        return addresses

    def _ip_endpoint(self, address: str, port: int) -> IStreamClientEndpoint:
        if self.ip_endpoint_for is not None:
            return self.ip_endpoint_for(address, port)
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        return kind(self.clock, address, port, timeout=self.connect_timeout)

    def _failed(self, failure: Failure, stream: Stream, peer: str) -> None:
        if stream.phase is Phase.CLOSED:
            return
        if failure.check(PolicyDenied):
            self._deny(stream, peer, failure.value.decision)
            return
        stream.refuse(classify_connect_failure(failure), failure.getErrorMessage())

    def _deny(self, stream: Stream, peer: str, decision: Decision) -> None:
        """Answer OPEN_FAIL ``denied``; the rule is logged here, not told to the source."""
        self.node.stats.denied[decision.rule] += 1
        stream.refuse(
            OpenFailure.DENIED,
            f"by the policy of node {self.node.name}",
            detail=f"{decision.rule_text} (stream from node {peer})",
        )

    def _connected(self, stream: Stream, relay: SocketRelay) -> Stream | None:
        if stream.phase is Phase.CLOSED:
            return None  # the client gave up while we were connecting
        bound = relay.transport.getHost()
        stream.on_finish = None
        stream.accept(bound.host, bound.port)
        self.log.info(
            "stream {resource} from {peer} open to {target}",
            resource=stream.resource,
            peer=stream.peer,
            target=stream.target,
        )
        return stream
