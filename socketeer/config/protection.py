"""How tunnel traffic must be protected: ``requireencryption`` and ``sealmaxage``.

``requireencryption=true`` refuses to start a sourcesink whose channel has neither TLS nor
a codekey and that has no node identity (whose sessions seal every stream message);
``sealmaxage`` is how old (or how far in the future) a sealed message may be before it is
dropped as a replay.
"""

from __future__ import annotations

from socketeer.config.channels import channel_is_protected
from socketeer.config.defaults import DEFAULT_REQUIRE_ENCRYPTION, DEFAULT_SEAL_MAX_AGE
from socketeer.config.keys import K_REQUIRE_ENCRYPTION, K_SEAL_MAX_AGE, SOURCESINK
from socketeer.config.model import ConfigError, SourceSinkConfig
from socketeer.config.properties import Properties

__all__ = ["require_encryption", "seal_max_age"]


def require_encryption(props: Properties, sourcesinks: tuple[SourceSinkConfig, ...]) -> bool:
    """``requireencryption``, checked against every sourcesink's channel."""
    require = props.boolean(K_REQUIRE_ENCRYPTION, DEFAULT_REQUIRE_ENCRYPTION)
    if require:
        for ss in sourcesinks:
            if not channel_is_protected(ss.channel) and ss.identity is None:
                key = f"{SOURCESINK}{ss.id}.channel"
                raise ConfigError(
                    props.path,
                    f"{K_REQUIRE_ENCRYPTION} is true but this channel has neither TLS nor a "
                    "codekey, and the sourcesink no identity",
                    line=props.line(key),
                    key=key,
                    allowed="a stomp+ssl:// channel and/or codekey=... (or env:/file: reference)"
                    ", or an identity and peerkeys for this sourcesink",
                )
    return require


def seal_max_age(props: Properties) -> float:
    """``sealmaxage`` in seconds; 0 means no limit."""
    return props.nonnegative_float(K_SEAL_MAX_AGE, DEFAULT_SEAL_MAX_AGE)
