"""``socketeer check FILE``: validate a configuration and print it resolved, secrets masked."""

from __future__ import annotations

import argparse
import base64
import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import IO, Any

from socketeer.channel.url import ChannelSpec
from socketeer.config.load import load_config
from socketeer.config.model import ConfigError
from socketeer.secret import Secret


def _value(value: Any) -> str | None:
    """A scalar shown on one line, or None for something to unfold."""
    if value is None:
        return "none"
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, ChannelSpec):
        return value.redacted()
    describe = getattr(value, "describe", None)
    if callable(describe):
        return str(describe())
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")  # peerkeys' public keys, as written
    if isinstance(value, Mapping | list | tuple) and not value:
        return "none"
    if dataclasses.is_dataclass(value) or isinstance(value, Mapping | list | tuple):
        return None
    return str(value)


def describe_config(config: Any) -> list[str]:
    """The resolved configuration, one ``name: value`` line each, nested by indentation."""
    lines: list[str] = []

    def walk(name: str, value: Any, depth: int) -> None:
        pad = "  " * depth
        text = _value(value)
        if text is not None:
            lines.append(f"{pad}{name}: {text}")
            return
        lines.append(f"{pad}{name}:")
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f.name, getattr(value, f.name), depth + 1)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(str(key), item, depth + 1)
        else:
            for i, item in enumerate(value):
                walk(f"- {i}", item, depth + 1)

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "warnings":
            continue  # printed on their own
        if f.name == "sourcesinks":
            for ss in value:
                walk(f"sourcesink {ss.id}", ss, 0)
            continue
        walk(f.name, value, 0)
    return lines


def cmd_check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=err)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    if not args.quiet:
        for line in describe_config(config):
            print(line, file=out)
    if args.strict and config.warnings:
        print(f"{args.config}: {len(config.warnings)} warnings (--strict)", file=err)
        return 1
    print(f"{args.config}: OK", file=err)
    return 0
