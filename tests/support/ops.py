"""Test helpers for the operations tests: whole services from properties text, HTTP GET."""

from __future__ import annotations

import warnings

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from socketeer.app import SocketeerService, build_service
from socketeer.config.load import parse_config


async def start_service(text: str, path: str = "<test>") -> SocketeerService:
    """Build and start what *text* configures; wait until every node is on its channel."""
    root = build_service(parse_config(text, path), reactor)
    root.startService()
    await defer.gatherResults([n.when_ready() for n in root.nodes.values()]).addTimeout(30, reactor)
    return root


async def http_get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, list[str]], bytes]:
    """GET *url*: status code, headers (lowercased names), body."""
    hdrs = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
    response = await Agent(reactor).request(b"GET", url.encode(), hdrs).addTimeout(20, reactor)
    with warnings.catch_warnings():  # Twisted's own Agent response transport lacks abort
        warnings.simplefilter("ignore", DeprecationWarning)
        body = await readBody(response)
    found = {
        k.decode().lower(): [v.decode() for v in vs]
        for k, vs in response.headers.getAllRawHeaders()
    }
    return response.code, found, body
