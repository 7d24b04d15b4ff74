"""Listen endpoint strings: bare ports made into endpoints, endpoint strings checked, clashes.

A listener key takes a port (bound to its ``...interface`` key, loopback by default) or a
Twisted endpoint string (``tcp:``, ``tcp6:``, ``unix:``, ``ssl:``). The strings are
checked here without Twisted, with the same unescaping as Twisted's parser, so a bad
one is a located ConfigError at start-up rather than a traceback when the port opens.
"""

from __future__ import annotations

import re

from socketeer.addresses import is_ip
from socketeer.config.defaults import DEFAULT_INTERFACE
from socketeer.config.properties import Properties

__all__ = [
    "ENDPOINT_ALLOWED",
    "ListenKey",
    "bare_port_endpoint",
    "clashes",
    "endpoint_fields",
    "listen_endpoint",
    "listen_key",
    "read_interface",
]

_ENDPOINT_RE = re.compile(r"^(tcp|tcp6|unix|ssl):")
ENDPOINT_ALLOWED = (
    "a port number 1..65535 or an endpoint string starting with tcp:, tcp6:, unix: or ssl: "
    "(e.g. tcp:1234:interface=127.0.0.1)"
)

#: What two listeners would fight over: (family, port or path, interface).
ListenKey = tuple[str, int | str, str]


def read_interface(props: Properties, key: str) -> str:
    """The IP address an ``...interface`` key names (loopback when it is not set)."""
    value = props.get(key)
    if value is None:
        return DEFAULT_INTERFACE
    if not is_ip(value):
        raise props.error(
            key, f"invalid interface {value!r}", "an IP address such as 127.0.0.1, 0.0.0.0 or ::1"
        )
    return value


def _escape(text: str) -> str:
    """Escape ``\\``, ``:`` and ``=`` the way Twisted endpoint strings expect."""
    return re.sub(r"([\\:=])", r"\\\1", text)


def bare_port_endpoint(port: int, interface: str) -> str:
    """The endpoint string of a bare *port* bound to *interface*."""
    kind = "tcp6" if ":" in interface else "tcp"
    return f"{kind}:{port}:interface={_escape(interface)}"


def endpoint_fields(description: str) -> tuple[list[str], dict[str, str]]:
    """Positional and keyword fields after the type, unescaped as Twisted's parser does."""
    fields: list[tuple[str | None, str]] = []
    name: str | None = None
    buf: list[str] = []
    for token in re.findall(r"\\.?|[:=]|[^\\:=]+", description):
        if token == ":":
            fields.append((name, "".join(buf)))
            name, buf = None, []
        elif token == "=" and name is None:
            name, buf = "".join(buf), []
        elif token.startswith("\\"):
            buf.append(token[1:])
        else:
            buf.append(token)
    fields.append((name, "".join(buf)))
    args = [value for key, value in fields[1:] if key is None]
    kwargs = {key: value for key, value in fields[1:] if key is not None}
    return args, kwargs


def listen_endpoint(
    props: Properties, key: str, interface: str, interface_key: str, warnings: list[str]
) -> str:
    """A listener: bare port -> ``tcp:PORT:interface=...``; endpoint strings are checked."""
    value = props.required(key, ENDPOINT_ALLOWED)
    if value.isascii() and value.isdigit():
        port = int(value)
        if not 1 <= port <= 65535:
            raise props.error(key, f"port {port} is out of range", ENDPOINT_ALLOWED)
        return bare_port_endpoint(port, interface)
    match = _ENDPOINT_RE.match(value)
    if not match:
        raise props.error(key, f"invalid listener {value!r}", ENDPOINT_ALLOWED)
    if props.get(interface_key) is not None:
        warnings.append(
            f"{props.path}:{props.line(interface_key)}: {interface_key} is ignored "
            f"because {key} is an endpoint string"
        )
    kind = match.group(1)
    args, kwargs = endpoint_fields(value)
    if kind == "unix":
        if not ((args and args[0]) or kwargs.get("address")):
            raise props.error(key, f"unix endpoint {value!r} has no path", "unix:/path/to/socket")
        return value
    port_text = kwargs.get("port", args[0] if args else None)
    if port_text is None or not (port_text.isascii() and port_text.isdigit()):
        raise props.error(
            key, f"endpoint {value!r} has no valid port", f"{kind}:PORT[:interface=ADDRESS]"
        )
    if int(port_text) > 65535:
        raise props.error(key, f"endpoint port {port_text} is out of range", "0..65535")
    if kind in ("tcp", "tcp6") and "interface" not in kwargs:
        loopback = "127.0.0.1" if kind == "tcp" else "::1"
        value = f"{value}:interface={_escape(loopback)}"
    return value


def listen_key(endpoint: str) -> ListenKey | None:
    """What *endpoint* would fight other listeners over; None for an ephemeral port."""
    kind = endpoint.split(":", 1)[0]
    args, kwargs = endpoint_fields(endpoint)
    if kind == "unix":
        return ("unix", kwargs.get("address", args[0] if args else ""), "")
    port = int(kwargs.get("port", args[0] if args else "0"))
    if port == 0:
        return None  # ephemeral ports never clash
    interface = kwargs.get("interface", "")
    return ("inet", port, interface)


def clashes(a: ListenKey, b: ListenKey) -> bool:
    """Two listeners cannot both bind: same port or path, and an interface in common."""
    if a[:2] != b[:2]:
        return False
    wildcard = {"", "0.0.0.0", "::"}
    return a[2] == b[2] or a[2] in wildcard or b[2] in wildcard
