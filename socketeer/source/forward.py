"""The source side of a fixed port-forward: every accepted TCP connection becomes a stream.

The seed's ``serverport`` listener with ``fixedHost``/``fixedPort``: like ``ssh -L``, each
client connection is relayed to one fixed target that the peer sink node connects to.
The SOCKS and HTTP front-ends (a later issue) differ only in how they learn the target.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from socketeer.policy import Decision, PolicyRef, client_host
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure, describe_peer
from socketeer.tunnel.stream import Stream, StreamProtocol


def denied_stream(
    node: Node,
    peer: str,
    target: str,
    client: str,
    decision: Decision,
    on_fail: Callable[[Stream, OpenFailure, str], None] | None = None,
) -> Stream:
    """A stream the source's policy refused before any message went out.

    It is counted (``denied:<rule>``), logged once with the rule, and failed with DENIED;
    ``on_fail`` runs as it would for a refusal from the sink.
    """
    stream = Stream(node, peer, node.new_resource_id(), node.window, target=target, client=client)
    stream.on_open_failed = on_fail
    node.stats.denied[decision.rule] += 1
    stream.fail(OpenFailure.DENIED, f"{decision.rule_text} (client {client})", notify_peer=False)
    return stream


class FixedForwardFactory(Factory):
    """Accepts client connections and opens a stream per connection to one fixed target."""

    log = Logger()

    def __init__(
        self,
        node: Node,
        peer: str,
        host: str,
        port: int,
        *,
        kind: int = 0,
        open_timeout: float = 30.0,
        policy: PolicyRef | None = None,
    ) -> None:
        self.node = node
        self.peer = peer
        self.host = host
        self.port = port
        self.kind = kind
        self.open_timeout = open_timeout
        self.policy = policy

    def buildProtocol(self, addr) -> StreamProtocol | None:
        if self.policy is not None:
            decision = self.policy.policy.admit(client_host(addr))
            if not decision.allowed:
                # No protocol: Twisted closes the connection at once.
                self.node.stats.denied[decision.rule] += 1
                self.log.info(
                    "refused client {client}: {rule}", client=addr, rule=decision.rule_text
                )
                return None
        return StreamProtocol(self._open)

    def _open(self, proto: StreamProtocol) -> Stream | None:
        client = describe_peer(proto.transport.getPeer())
        host, port = self.host, self.port
        if self.policy is not None:
            decision = self.policy.policy.evaluate(
                host, port, cluster=self.node.cluster, node=self.peer
            )
            if not decision.allowed:
                denied_stream(self.node, self.peer, f"{host}:{port}", client, decision)
                return None  # the client's connection is closed
            if decision.mapped_by:
                self.log.debug(
                    "{client}: {host}:{port} mapped to {target} by {rule}",
                    client=client,
                    host=host,
                    port=port,
                    target=f"{decision.target_host}:{decision.target_port}",
                    rule=decision.mapped_by,
                )
            host, port = decision.target_host, decision.target_port
        return self.node.open_stream(
            self.peer,
            host,
            port,
            client=client,
            kind=self.kind,
            timeout=self.open_timeout,
        )
