"""A sourcesink's ``channel`` key: the URL parsed, its secrets resolved, its TLS files checked.

Secret references (``env:``, ``file:``, ``literal:``; see :mod:`socketeer.config.secretref`)
in a channel's password, codekey and keypassphrase are resolved once, here. The TLS files of a
``stomp+ssl`` channel are made relative to the properties file's directory and read now,
so a bad one stops start-up with a located error instead of failing each connection.
Errors name the key and line, never a secret.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from socketeer.channel.url import ChannelSpec, ChannelURLError, parse_channel_url
from socketeer.config.properties import Properties
from socketeer.config.tlsfiles import TLSFileError, check_key_pair, read_certificates
from socketeer.secret import Secret

__all__ = ["channel_config", "channel_is_protected"]

_CHANNEL_ALLOWED = "a channel URL such as stomp://host:61626/topic?username=u&password=p"


def _brokers(spec: ChannelSpec) -> tuple[ChannelSpec, ...]:
    return tuple(getattr(spec, "brokers", (spec,)))


def channel_is_protected(spec: ChannelSpec) -> bool:
    """A codekey seals every message, or every broker of the channel is reached over TLS."""
    return spec.codekey is not None or all(b.encrypted for b in _brokers(spec))


def _one_broker(props: Properties, key: str, spec: ChannelSpec) -> ChannelSpec:
    changes: dict[str, Any] = {}
    if spec.password is not None:
        changes["password"] = Secret(props.secret(key, spec.password.value, "password"))
    if spec.codekey is not None:
        changes["codekey"] = Secret(props.secret(key, spec.codekey.value, "codekey"))
    passphrase = None
    if spec.key_passphrase is not None:
        passphrase = props.secret(key, spec.key_passphrase.value, "key passphrase")
        changes["key_passphrase"] = Secret(passphrase)
    if spec.options:
        options = []
        for name, value in spec.options:
            if name in ("cafile", "certfile", "keyfile"):
                value = props.file_path(value)
            options.append((name, value))
        changes["options"] = tuple(options)
        opts = dict(options)
        try:
            if "cafile" in opts:
                read_certificates(opts["cafile"], "CA file")
            if "certfile" in opts:
                check_key_pair(opts["certfile"], opts.get("keyfile", opts["certfile"]), passphrase)
        except TLSFileError as e:
            raise props.error(key, f"channel TLS: {e}") from None
    return replace(spec, **changes) if changes else spec


def channel_config(props: Properties, key: str) -> ChannelSpec:
    """The channel at *key*, every broker's secrets resolved and TLS files checked."""
    text = props.required(key, _CHANNEL_ALLOWED)
    try:
        spec = parse_channel_url(text)
    except ChannelURLError as e:
        raise props.error(key, f"invalid channel: {e}", _CHANNEL_ALLOWED) from None
    first = _one_broker(props, key, spec)
    failover = getattr(spec, "failover", ())
    if failover:
        others = tuple(_one_broker(props, key, s) for s in failover)
        codekeys = {None if s.codekey is None else s.codekey.value for s in (first, *others)}
        if len(codekeys) > 1:
            raise props.error(
                key,
                "the brokers of a failover channel have different codekeys",
                "the same codekey (or none) in every broker URL",
            )
        first = replace(first, failover=others)
    return first
