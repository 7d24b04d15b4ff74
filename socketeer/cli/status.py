"""``socketeer status [URL]``: a running Socketeer's status endpoint, as terminal tables."""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO, Any

from socketeer.config.defaults import DEFAULT_STATUS_URL
from socketeer.config.endpoints import endpoint_fields
from socketeer.config.load import load_config
from socketeer.ops.human import human_bytes, human_seconds


def _url_from_config(path: str) -> str:
    config = load_config(path)
    if config.status is None:
        raise ValueError(f"{path}: the status server is not enabled")
    kind = config.status.listen.split(":", 1)[0]
    args, kwargs = endpoint_fields(config.status.listen)
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"{path}: cannot reach a {kind} status listener; give the URL")
    port = kwargs.get("port", args[0] if args else "")
    host = kwargs.get("interface", "127.0.0.1")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch_status(url: str, user: str | None, password: str | None, timeout: float) -> dict:
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/status")
    query = urllib.parse.urlencode([("format", "json")])
    request = urllib.request.Request(
        urllib.parse.urlunsplit(parts._replace(query=query)),
        headers={"Accept": "application/json"},
    )
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _rate(n: float | None) -> str:
    return "-" if n is None else f"{human_bytes(n)}/s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def render_status(
    snap: Mapping[str, Any], previous: Mapping[str, Any] | None = None, source: str = ""
) -> str:
    """The status snapshot as terminal tables; rates are per second since *previous*, or
    averages over each stream's life without one."""
    elapsed = snap["time"] - previous["time"] if previous else 0.0
    before_nodes: dict[str, Any] = {}
    before_streams: dict[tuple[str, str], Any] = {}
    if previous and elapsed > 0:
        for n in previous["nodes"]:
            before_nodes[n["id"]] = n["totals"]
            for s in n["streams"]:
                before_streams[(n["id"], s["id"])] = s

    def rate(now: float, before: float | None, age: float | None = None) -> float | None:
        if before is not None:
            return max(now - before, 0) / elapsed
        if age:
            return now / age
        return None

    head = f"Socketeer {snap['version']}"
    if source:
        head += f" at {source}"
    head += f", up {human_seconds(snap['uptime'])}"
    if snap.get("broker"):
        head += f", embedded broker: {snap['broker']['connections']} connections"
    lines = [head, ""]
    rows = []
    for n in snap["nodes"]:
        ch, t = n["channel"], n["totals"]
        old = before_nodes.get(n["id"])
        state = f"up {ch['broker']}" if ch["connected"] else "DOWN"
        rows.append(
            (
                f"{n['cluster']}/{n['node']}",
                n["role"],
                state,
                ch["reconnects"],
                t["streams_open"],
                t["streams_opened"],
                sum(t["streams_failed"].values()),
                human_bytes(t["bytes_out"]),
                human_bytes(t["bytes_in"]),
                _rate(rate(t["bytes_out"], old and old["bytes_out"])) if old else "-",
                _rate(rate(t["bytes_in"], old and old["bytes_in"])) if old else "-",
            )
        )
    lines += _table(
        (
            "NODE",
            "ROLE",
            "CHANNEL",
            "RECONNECTS",
            "OPEN",
            "OPENED",
            "FAILED",
            "OUT",
            "IN",
            "OUT/s",
            "IN/s",
        ),
        rows,
    )
    peers = [
        (
            f"{n['cluster']}/{n['node']}",
            p["node"],
            human_seconds(p["last_heard"]) + " ago",
            human_seconds(p["rtt"]),
        )
        for n in snap["nodes"]
        for p in n["peers"]
    ]
    if peers:
        lines += ["", *_table(("NODE", "PEER", "LAST HEARD", "ROUND TRIP"), peers)]
    streams = []
    for n in snap["nodes"]:
        for s in n["streams"]:
            old = before_streams.get((n["id"], s["id"]))
            streams.append(
                (
                    f"{n['cluster']}/{n['node']}",
                    s["client"],
                    s["target"],
                    s["phase"],
                    human_bytes(s["sent"]),
                    human_bytes(s["received"]),
                    human_seconds(s["age"]),
                    _rate(rate(s["sent"], old and old["sent"], s["age"])),
                    _rate(rate(s["received"], old and old["received"], s["age"])),
                    human_bytes(s["window"]),
                )
            )
    if streams:
        lines += [
            "",
            *_table(
                (
                    "NODE",
                    "CLIENT",
                    "TARGET",
                    "PHASE",
                    "OUT",
                    "IN",
                    "AGE",
                    "OUT/s",
                    "IN/s",
                    "WINDOW",
                ),
                streams,
            ),
        ]
    else:
        lines += ["", "no open streams"]
    for n in snap["nodes"]:
        for title, counts in (
            ("open failures", n["totals"]["streams_failed"]),
            ("denials", n["denials"]),
            ("dropped messages", n["dropped"]),
        ):
            if counts:
                items = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                lines.append(f"{n['cluster']}/{n['node']} {title}: {items}")
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        url = args.url or (_url_from_config(args.config) if args.config else DEFAULT_STATUS_URL)
    except Exception as e:  # ConfigError or ValueError: a one-line message either way
        print(f"error: {e}", file=err)
        return 1
    password = os.environ.get("SOCKETEER_STATUS_PASSWORD")
    if args.user and password is None:
        password = getpass.getpass(f"Password for {args.user}: ", stream=err)
    previous = None
    while True:
        try:
            snap = fetch_status(url, args.user, password, args.timeout)
        except (OSError, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code == 401:
                print(f"error: {url}: authentication required (--user)", file=err)
            else:
                print(f"error: {url}: {e}", file=err)
            return 1
        if args.json:
            out.write(json.dumps(snap, indent=1) + "\n")
        else:
            if args.watch and out.isatty():
                out.write("\x1b[H\x1b[2J")
            out.write(render_status(snap, previous, url))
        out.flush()
        if not args.watch:
            return 0
        previous = snap
        time.sleep(args.watch)
