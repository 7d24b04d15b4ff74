"""The STOMP channel: one node's connection to the broker, kept up by ClientService.

``ChannelProtocol`` is a thin STOMP client over the sans-IO frame parser and stompest's frame
builders: CONNECT, SUBSCRIBE to the node's own destination and its cluster's broadcast
destination (with a receipt, so "ready" means the broker will really deliver to us),
heart-beats both ways, and MESSAGE frames handed to the node. ``ChannelService`` reconnects
with backoff. The protocol is also the push producer of its transport: when the broker
connection's send buffer fills, the node stops reading every local socket.
"""

from __future__ import annotations

from collections.abc import Sequence

from stompest.protocol import StompFrame, StompSpec, commands
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import fastwrite
from socketeer.channel.url import ChannelSpec
from socketeer.tunnel.node import ChannelLink, Node
from socketeer.wire.envelope import cluster_destination, node_destination
from socketeer.wire.stompframing import StompFrameParser, StompLimits, StompProtocolError

_READY_RECEIPT = "socketeer-subscribed"
_VERSIONS = ["1.0", "1.1", "1.2"]
#: Seconds to wait for CONNECTED (and the subscription receipt) before trying again.
CONNECT_TIMEOUT = 30.0


@implementer(IPushProducer)
class ChannelProtocol(Protocol, ChannelLink):
    """A STOMP client connection carrying one node's messages."""

    log = Logger()

    def __init__(
        self, node: Node, spec: ChannelSpec, clock: IReactorTime, limits: StompLimits
    ) -> None:
        self.node = node
        self.spec = spec
        self.broker = f"{spec.host}:{spec.port}"  # for status: the broker this link reached
        self.clock = clock
        self.parser = StompFrameParser("1.0", limits, server=False)
        self.ready = False
        self.version = "1.0"
        self._last_sent = 0.0
        self._last_received = 0.0
        self._send_beat: LoopingCall | None = None
        self._check_beat: LoopingCall | None = None
        self._recv_interval = 0.0
        self._connect_timer = None
        self._closing = False

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        fastwrite.no_delay(self.transport)
        fastwrite.large_reads(self.transport)
        self.transport.registerProducer(self, True)
        beat = self.spec.heartbeat_ms
        frame = commands.connect(
            login=self.spec.username,
            passcode=self.spec.password.value if self.spec.password else None,
            versions=_VERSIONS,
            host=self.spec.vhost or self.spec.host,
            heartBeats=(beat, beat),
        )
        self._last_received = self.clock.seconds()
        self._connect_timer = self.clock.callLater(CONNECT_TIMEOUT, self._connect_timed_out)
        self._write(bytes(frame))

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        self.log.warn("broker did not answer CONNECT within {t}s: reconnecting", t=CONNECT_TIMEOUT)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self._cancel_connect_timer()
        for loop in (self._send_beat, self._check_beat):
            if loop is not None and loop.running:
                loop.stop()
        was_ready, self.ready = self.ready, False
        if was_ready and not self._closing:
            self.log.warn(
                "node {node}: lost the broker connection to {broker}",
                node=self.node.name,
                broker=f"{self.spec.host}:{self.spec.port}",
            )
        self.node.channel_lost()

    def disconnect(self) -> None:
        """Say goodbye politely (service stop), then close."""
        if self.transport is None:
            return
        self._closing = True
        if self.ready:
            self._write(bytes(commands.disconnect(version=self.version)))
        self.transport.loseConnection()

    # -- bytes in --------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._last_received = self.clock.seconds()
        try:
            frames = self.parser.feed(data)
        except StompProtocolError as e:
            self.log.error("broker sent a malformed frame: {problem}", problem=str(e))
            self.transport.abortConnection()
            return
        for frame in frames:
            if not isinstance(frame, StompFrame):
                continue  # heart-beat
            command = frame.command
            if command == StompSpec.MESSAGE:
                self.node.frame_received(frame)
            elif command == StompSpec.CONNECTED:
                self._connected(frame)
            elif command == StompSpec.RECEIPT:
                if frame.headers.get(StompSpec.RECEIPT_ID_HEADER) == _READY_RECEIPT:
                    self._cancel_connect_timer()
                    self.ready = True
                    self.node.channel_ready(self)
            elif command == StompSpec.ERROR:
                headers = frame.headers
                self.log.error(
                    "broker refused node {node}: {message}",
                    node=self.node.name,
                    message=headers.get("message", frame.body[:200].decode("utf-8", "replace")),
                )
                self.transport.loseConnection()
                return

    def _cancel_connect_timer(self) -> None:
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None

    def _connected(self, frame: StompFrame) -> None:
        headers = frame.headers
        self.version = headers.get(StompSpec.VERSION_HEADER, "1.0")
        if self.version not in _VERSIONS:
            self.log.error("broker chose unknown STOMP version {v}", v=self.version)
            self.transport.loseConnection()
            return
        self.parser.version = self.version
        self._start_heartbeats(headers.get(StompSpec.HEART_BEAT_HEADER, "0,0"))
        spec, node = self.spec, self.node
        dests = [
            node_destination(spec.topic, node.cluster, node.name),
            cluster_destination(spec.topic, node.cluster),
        ]
        for i, dest in enumerate(dests):
            sub_headers = {StompSpec.ACK_HEADER: StompSpec.ACK_AUTO}
            if self.version != "1.0":
                sub_headers[StompSpec.ID_HEADER] = f"sub-{i}"
            receipt = _READY_RECEIPT if i == len(dests) - 1 else None
            sub = commands.subscribe(dest, sub_headers, receipt=receipt, version=self.version)
            self._write(bytes(sub[0]))

    def _start_heartbeats(self, value: str) -> None:
        try:
            sx, sy = (int(v) for v in value.split(","))
        except ValueError:
            sx = sy = 0
        ours = self.spec.heartbeat_ms
        send_ms = max(ours, sy) if ours and sy else 0
        recv_ms = max(ours, sx) if ours and sx else 0
        if send_ms:
            self._send_beat = LoopingCall(self._beat, send_ms / 1000.0)
            self._send_beat.clock = self.clock
            self._send_beat.start(send_ms / 2000.0, now=False)
        if recv_ms:
            self._recv_interval = recv_ms / 1000.0
            self._check_beat = LoopingCall(self._check)
            self._check_beat.clock = self.clock
            self._check_beat.start(self._recv_interval, now=False)

    def _beat(self, interval: float) -> None:
        if self.clock.seconds() - self._last_sent >= interval / 2:
            self._write(b"\n")

    def _check(self) -> None:
        silent = self.clock.seconds() - self._last_received
        if silent > 2 * self._recv_interval:
            self.log.warn("broker silent for {silent:.1f}s: reconnecting", silent=silent)
            self.transport.abortConnection()

    # -- bytes out -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._last_sent = self.clock.seconds()
        self.transport.write(data)

    def send_bytes(self, data: bytes) -> None:
        self._last_sent = self.clock.seconds()
        fastwrite.write(self.transport, data)

    def send_parts(self, parts: Sequence[bytes]) -> None:
        """One message in pieces (head, sealed body, NUL): no join on the way out."""
        self._last_sent = self.clock.seconds()
        fastwrite.write_sequence(self.transport, parts)

    # -- IPushProducer: the broker connection's send buffer --------------------------------

    def pauseProducing(self) -> None:
        self.node.channel_congested(True)

    def resumeProducing(self) -> None:
        self.node.channel_congested(False)

    def stopProducing(self) -> None:
        pass


class ChannelFactory(Factory):
    def __init__(
        self, node: Node, spec: ChannelSpec, clock: IReactorTime, limits: StompLimits
    ) -> None:
        self.node, self.spec, self.clock, self.limits = node, spec, clock, limits

    def use_spec(self, spec: ChannelSpec) -> None:
        """The broker the next connection goes to (failover): its credentials, its vhost."""
        self.spec = spec

    def buildProtocol(self, addr) -> ChannelProtocol:
        return ChannelProtocol(self.node, self.spec, self.clock, self.limits)


class ChannelService(Service):
    """Keeps one node connected to its broker, reconnecting with exponential backoff."""

    log = Logger()

    def __init__(
        self,
        node: Node,
        spec: ChannelSpec,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        limits: StompLimits | None = None,
    ) -> None:
        self.node = node
        self.spec = spec
        self._client = ClientService(
            endpoint,
            ChannelFactory(node, spec, clock, limits or StompLimits()),
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=30.0, factor=2.0),
            clock=clock,
        )

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "node {cluster}/{node} connecting to {url}",
            cluster=self.node.cluster,
            node=self.node.name,
            url=self.spec.redacted(),
        )
        self.node.start()
        self._client.startService()

    def stopService(self) -> Deferred:
        super().stopService()
        self.node.stop()
        self.node.shutdown()
        d = self._client.whenConnected(failAfterFailures=1)

        def bye(proto: ChannelProtocol) -> None:
            proto.disconnect()

        d.addCallbacks(bye, lambda f: None)
        return self._client.stopService()
