"""Log output: a JSON-lines observer for log shippers, level filtering, message tracing.

Socketeer logs through :mod:`twisted.logger` with structured fields. Every stream's life is
logged at info: the source's ``opening``, the sink's ``open``, ``failed to open: <reason>``
and ``closed: <bytes> out, <bytes> in, <seconds>s``. Per-message detail (every message sent
and received) is at debug, and only produced when :data:`trace` is on, because it costs
time on the data path.

For twistd, pick an observer with ``--logger``::

    twistd -n --logger=socketeer.logs.json_observer socketeer -c site.properties
    twistd -n --logger=socketeer.logs.text_observer socketeer -c site.properties

Both write to standard output (systemd's journal, a container's log) and drop events below
the level named by the environment variable ``SOCKETEER_LOG_LEVEL`` (``debug``, ``info``,
the default, ``warn``, ``error``); ``debug`` also switches :data:`trace` on. Without
``--logger``, twistd logs every level as text, to ``--logfile`` or standard output.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import provider

__all__ = [
    "json_observer",
    "jsonLinesObserver",
    "level_from_name",
    "text_observer",
    "trace",
]

#: Log every message a node sends and receives (at debug). Off unless the level is debug.
trace = False

LEVEL_ENV = "SOCKETEER_LOG_LEVEL"
_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


def level_from_name(name: str | None, default: LogLevel = LogLevel.info) -> LogLevel:
    """``"debug"`` -> LogLevel.debug; an empty or unknown name gives *default*."""
    if not name:
        return default
    return _LEVELS.get(name.strip().lower(), default)


def filtered(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """*observer*, seeing only events at *level* or above; debug also switches tracing on."""
    global trace
    trace = level <= LogLevel.debug
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(observer, [predicate])


def _plain(value: Any) -> Any:
    """A JSON-friendly field value: numbers, strings and booleans stay, others become text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)  # a Secret prints masked


def json_record(event: dict[str, Any]) -> dict[str, Any]:
    """One event as a flat JSON object: time, level, namespace, message, then its fields."""
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(
            timespec="milliseconds"
        ),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message"):
            continue  # twisted.logger's own keys, and legacy log.msg keys
        record[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    return record


def jsonLinesObserver(out: IO[str]) -> ILogObserver:
    """Write each event to *out* as one line of JSON (see :func:`json_record`)."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        try:
            line = json.dumps(json_record(event), ensure_ascii=False)
        except Exception as e:  # never let a bad field stop logging
            line = json.dumps({"level": "error", "message": f"unloggable event: {e!r}"})
        out.write(line + "\n")
        out.flush()

    return observe


def json_observer() -> ILogObserver:
    """``twistd --logger=socketeer.logs.json_observer``: JSON lines on standard output."""
    return filtered(jsonLinesObserver(sys.stdout), level_from_name(os.environ.get(LEVEL_ENV)))


def text_observer() -> ILogObserver:
    """``twistd --logger=socketeer.logs.text_observer``: twistd's text, filtered by level."""
    return filtered(textFileLogObserver(sys.stdout), level_from_name(os.environ.get(LEVEL_ENV)))
