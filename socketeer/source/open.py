"""The source's policy-checked open: from a client and a target to a stream, or a refusal.

Every front-end opens its streams here (the fixed forward, the SOCKS and HTTP handlers):
the source's policy comes first, a maplist may rewrite the target, and a denied target
gives a stream that has already failed with DENIED, counted and logged once with its rule,
without a message to the sink.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from socketeer.policy import Decision, PolicyRef
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import Stream

log = Logger()

OpenFailed = Callable[[Stream, OpenFailure, str], None]


def describe_peer(address: object) -> str:
    """``host:port`` of a client address for logs; a unix socket has no host or port."""
    host = getattr(address, "host", None)
    if host is None:
        return f"unix:{getattr(address, 'name', '') or '?'}"
    return f"{host}:{getattr(address, 'port', '')}"


def denied_stream(
    node: Node,
    peer: str,
    target: str,
    client: str,
    decision: Decision,
    on_fail: OpenFailed | None = None,
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


def open_checked(
    node: Node,
    peer: str,
    host: str,
    port: int,
    *,
    client: str,
    timeout: float,
    policy: PolicyRef | None = None,
    kind: int = 0,
    on_denied: OpenFailed | None = None,
) -> Stream:
    """Ask sink node ``peer`` for ``host:port`` on behalf of ``client``, the policy permitting.

    A denied target returns a stream that has failed already (its phase is CLOSED), after
    calling ``on_denied``.
    """
    if policy is not None:
        decision = policy.evaluate(host, port, cluster=node.cluster, node=peer)
        if not decision.allowed:
            return denied_stream(node, peer, f"{host}:{port}", client, decision, on_denied)
        if decision.mapped_by:
            log.debug(
                "{client}: {host}:{port} mapped to {target} by {rule}",
                client=client,
                host=host,
                port=port,
                target=f"{decision.target_host}:{decision.target_port}",
                rule=decision.mapped_by,
            )
        host, port = decision.target_host, decision.target_port
    return node.open_stream(peer, host, port, client=client, kind=kind, timeout=timeout)
