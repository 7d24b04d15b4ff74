"""systemd readiness: ``READY=1`` once every listener is bound and every node is on its channel.

With ``Type=notify`` (``etc/systemd/socketeer@.service``) systemd starts the units that come
after Socketeer only once it really relays: :class:`ReadinessService` is the last child of
the root service, so the listeners before it are bound when it starts, and it sends
``READY=1`` through ``$NOTIFY_SOCKET`` when every node's ``when_ready()`` has fired. Without
``$NOTIFY_SOCKET`` (not run by systemd) it does nothing. The protocol is one datagram on a
unix socket (sd_notify(3)); no library is needed for that.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from socketeer.tunnel.node import Node

__all__ = ["ReadinessService", "notify"]

log = Logger(namespace="socketeer.ops.systemd")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send *state* (``"READY=1"``, ...) to systemd; False when not run under systemd."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(state.encode("utf-8"))
    except OSError as e:
        log.warn("cannot notify systemd at {path}: {error}", path=path, error=str(e))
        return False
    return True


class ReadinessService(Service):
    """Tells systemd ``READY=1`` when all nodes are connected, ``STOPPING=1`` on stop."""

    def __init__(self, nodes: Iterable[Node], environ: Mapping[str, str] | None = None) -> None:
        self.nodes = list(nodes)
        self.environ = environ
        self.ready: Deferred | None = None

    def _notify(self, state: str) -> bool:
        return notify(state, self.environ)

    def startService(self) -> None:
        super().startService()
        env = os.environ if self.environ is None else self.environ
        if not env.get("NOTIFY_SOCKET"):
            return
        self._notify(f"STATUS=waiting for the channels of {len(self.nodes)} nodes")

        def ready(_: object) -> None:
            if self.running:
                self._notify(f"READY=1\nSTATUS=relaying: {len(self.nodes)} nodes connected")
                log.info("told systemd we are ready")

        self.ready = gatherResults([node.when_ready() for node in self.nodes])
        self.ready.addCallback(ready)

    def stopService(self):
        if self.running:
            self._notify("STOPPING=1")
        return super().stopService()
