"""Properties text for tests: one builder for the broker, status, sink, forward and proxy
lines, the one-process relay most tests run, and copies of etc/ files on free ports."""

from __future__ import annotations

import re
from pathlib import Path

from support import ROOT


def channel_url(broker: int | str, topic: str = "t") -> str:
    return f"stomp://127.0.0.1:{broker}/{topic}"


class Properties:
    """Properties text built section by section, in order; ``str()`` is the file's text."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __str__(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    def add(self, text: str) -> Properties:
        """Lines as they are (``key=value`` or comments); a trailing newline is optional."""
        self.lines += text.splitlines()
        return self

    def general(self, **keys: object) -> Properties:
        """``socketeer.general.<key>=<value>`` for each key whose value is not None."""
        self.lines += [f"socketeer.general.{k}={v}" for k, v in keys.items() if v is not None]
        return self

    def broker(self, port: int | str | None = None) -> Properties:
        """The broker, on *port* (without one: on its default port)."""
        return self.general(messagingserverenabled="true", messagingserverport=port)

    def status(self, port: int | str) -> Properties:
        return self.general(statusserverenabled="true", statusserverport=port)

    def sourcesink(self, name: str, channel: str, cluster: str = "c", **keys: object) -> Properties:
        """Sourcesink *name* (also its node name) on *channel*, with further *keys*."""
        keys = {"clustername": cluster, "nodename": name, "channel": channel, **keys}
        self.lines += [f"socketeer.sourcesink.{name}.{k}={v}" for k, v in keys.items()]
        return self

    def sink(self, name: str, channel: str, **keys: object) -> Properties:
        """A spawning and resolving sink."""
        return self.sourcesink(name, channel, isSpawningAndResolvingSink="true", **keys)

    def proxy(self, name: str, channel: str, port: int | str, peer: str = "si") -> Properties:
        """A source serving SOCKS and HTTP on *port* through sink *peer*."""
        return self.sourcesink(name, channel, serverport=port, peernode=peer)

    def forward(
        self, name: str, channel: str, port: int | str, target: int, peer: str = "si"
    ) -> Properties:
        """A source forwarding *port* to 127.0.0.1:*target* through sink *peer*."""
        return self.sourcesink(
            name,
            channel,
            serverport=port,
            peernode=peer,
            fixedHost="127.0.0.1",
            fixedPort=target,
        )


def relay_properties(
    broker: int,
    forward: int,
    target: int,
    extra: str = "",
    *,
    status: int | None = None,
    proxy: int | None = None,
    channel: str | None = None,
) -> str:
    """One process: a broker on *broker*, sink ``si``, source ``so`` forwarding
    127.0.0.1:*forward* to 127.0.0.1:*target*; with *status* the status server, with *proxy* a
    proxy source ``px`` on that port; the nodes on *channel* (default: this broker, topic t);
    *extra* lines last."""
    url = channel or channel_url(broker)
    props = Properties().broker(broker)
    if status is not None:
        props.status(status)
    props.sink("si", url).forward("so", url, forward, target)
    if proxy is not None:
        props.proxy("px", url, proxy)
    return str(props.add(extra))


def configure(name: str, tmp_path: Path, ports: dict[str, int]) -> Path:
    """Copy an etc/ file, with its well-known ports replaced by free ones."""
    text = (ROOT / "etc" / name).read_text()
    # One pass, whole numbers only: a new port must never be rewritten by a later rule.
    pattern = re.compile(r"\b(" + "|".join(re.escape(old) for old in ports) + r")\b")
    text = pattern.sub(lambda m: str(ports[m.group(1)]), text)
    out = tmp_path / Path(name).name
    out.write_text(text)
    return out
