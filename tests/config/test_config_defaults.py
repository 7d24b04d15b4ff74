"""One default per setting: the loader, the model and the code share the defaults module."""

from __future__ import annotations

import inspect

from twisted.internet.task import Clock

from socketeer.channel.url import SCHEMES, parse_channel_url
from socketeer.config import defaults
from socketeer.config.defaults import DEFAULT_STATUS_URL as STATUS_URL
from socketeer.config.load import parse_config
from socketeer.config.model import Config, SourceSinkConfig
from socketeer.sink.connect import Sink
from socketeer.source.forward import FixedForwardFactory
from socketeer.source.handler import ProxySettings
from socketeer.tunnel.node import Node
from socketeer.wire import seal
from socketeer.wire.stompframing import StompLimits

MINIMAL = """\
socketeer.general.messagingserverenabled=true
socketeer.general.statusserverenabled=true
socketeer.sourcesink.0.clustername=c
socketeer.sourcesink.0.nodename=si
socketeer.sourcesink.0.channel=stomp://127.0.0.1:61626/t
socketeer.sourcesink.0.serverport=1080
socketeer.sourcesink.0.peernode=si2
socketeer.sourcesink.0.isSpawningAndResolvingSink=true
"""


def test_an_empty_file_gets_the_defaults() -> None:
    config = parse_config(MINIMAL)
    ss = config.sourcesinks[0]
    assert config.broker.listen == f"tcp:{defaults.DEFAULT_BROKER_PORT}:interface=127.0.0.1"
    assert config.broker.max_frame_size == defaults.DEFAULT_MAX_FRAME_SIZE
    assert config.broker.subscriber_queue == defaults.DEFAULT_SUBSCRIBER_QUEUE
    assert config.broker.slow_subscriber_timeout == defaults.DEFAULT_SLOW_SUBSCRIBER_TIMEOUT
    assert config.status is not None
    assert config.status.listen == f"tcp:{defaults.DEFAULT_STATUS_PORT}:interface=127.0.0.1"
    assert config.require_encryption is defaults.DEFAULT_REQUIRE_ENCRYPTION
    assert config.seal_max_age == defaults.DEFAULT_SEAL_MAX_AGE
    assert (ss.window, ss.connect_timeout) == (
        defaults.DEFAULT_WINDOW,
        defaults.DEFAULT_CONNECT_TIMEOUT,
    )
    assert (ss.grace_period, ss.ping_interval) == (
        defaults.DEFAULT_GRACE_PERIOD,
        defaults.DEFAULT_PING_INTERVAL,
    )
    assert ss.fixed_type == defaults.DEFAULT_FIXED_TYPE
    assert ss.proxy is not None
    assert (ss.proxy.socks4, ss.proxy.socks5, ss.proxy.http) == (
        defaults.DEFAULT_SOCKS4_ENABLED,
        defaults.DEFAULT_SOCKS5_ENABLED,
        defaults.DEFAULT_HTTP_ENABLED,
    )
    assert ss.proxy.handshake_timeout == defaults.DEFAULT_HANDSHAKE_TIMEOUT
    assert ss.proxy.idle_timeout == defaults.DEFAULT_IDLE_TIMEOUT


def test_the_model_defaults_are_the_loader_defaults() -> None:
    config_fields = inspect.signature(Config).parameters
    assert config_fields["seal_max_age"].default == defaults.DEFAULT_SEAL_MAX_AGE
    assert config_fields["require_encryption"].default is defaults.DEFAULT_REQUIRE_ENCRYPTION
    ss_fields = inspect.signature(SourceSinkConfig).parameters
    assert ss_fields["grace_period"].default == defaults.DEFAULT_GRACE_PERIOD
    assert ss_fields["ping_interval"].default == defaults.DEFAULT_PING_INTERVAL


def test_the_seal_age_default_is_the_seal_format_s() -> None:
    assert defaults.DEFAULT_SEAL_MAX_AGE is seal.DEFAULT_MAX_AGE


def test_a_node_without_configuration_has_the_configured_default_window() -> None:
    assert Node("c", "n", "t", Clock()).window == defaults.DEFAULT_WINDOW


def test_format_constants_are_the_configured_defaults() -> None:
    assert defaults.DEFAULT_MAX_FRAME_SIZE == StompLimits().max_body
    assert defaults.DEFAULT_BROKER_PORT == SCHEMES["stomp"].default_port
    assert parse_channel_url("stomp://h/t").port == defaults.DEFAULT_BROKER_PORT


def test_the_open_timeout_is_one_rule() -> None:
    ss = parse_config(MINIMAL).sourcesinks[0]
    assert ss.open_timeout == defaults.DEFAULT_OPEN_TIMEOUT
    assert defaults.DEFAULT_OPEN_TIMEOUT == (
        defaults.OPEN_TIMEOUT_FACTOR * defaults.DEFAULT_CONNECT_TIMEOUT
    )


def test_code_that_runs_without_a_configuration_uses_the_same_defaults() -> None:
    settings = ProxySettings(peer="si")
    assert (settings.socks4, settings.socks5, settings.http) == (
        defaults.DEFAULT_SOCKS4_ENABLED,
        defaults.DEFAULT_SOCKS5_ENABLED,
        defaults.DEFAULT_HTTP_ENABLED,
    )
    assert settings.handshake_timeout == defaults.DEFAULT_HANDSHAKE_TIMEOUT
    assert settings.idle_timeout == defaults.DEFAULT_IDLE_TIMEOUT
    assert settings.open_timeout == defaults.DEFAULT_OPEN_TIMEOUT
    assert inspect.signature(Sink).parameters["connect_timeout"].default == (
        defaults.DEFAULT_CONNECT_TIMEOUT
    )
    forward = inspect.signature(FixedForwardFactory).parameters
    assert forward["open_timeout"].default == defaults.DEFAULT_OPEN_TIMEOUT
    assert inspect.signature(Node.open_stream).parameters["timeout"].default == (
        defaults.DEFAULT_OPEN_TIMEOUT
    )
    assert STATUS_URL == f"http://127.0.0.1:{defaults.DEFAULT_STATUS_PORT}/status"
