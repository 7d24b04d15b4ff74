"""Security settings in the properties file: secrets by reference (env:, file:, literal:),
requireencryption, sealmaxage, and the start-up warning for unprotected channels."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from socketeer.app import build_service
from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError
from socketeer.config.secretref import SecretRefError, resolve_secret

from support.logs import LogEvents


def sink(channel: str, **general: str) -> str:
    text = "".join(f"socketeer.general.{k}={v}\n" for k, v in general.items())
    return text + (
        "socketeer.sourcesink.0.clustername=c\n"
        "socketeer.sourcesink.0.nodename=si\n"
        "socketeer.sourcesink.0.isSpawningAndResolvingSink=true\n"
        f"socketeer.sourcesink.0.channel={channel}\n"
    )


# -- secret references -------------------------------------------------------------------------


def test_resolve_secret(tmp_path):
    env = {"SK_KEY": "from-env", "EMPTY": ""}
    (tmp_path / "key").write_text("from-file\n")
    (tmp_path / "crlf").write_bytes(b"from-file\r\n")
    assert resolve_secret("plain") == "plain"
    assert resolve_secret("env:SK_KEY", environ=env) == "from-env"
    assert resolve_secret(f"file:{tmp_path / 'key'}") == "from-file"
    assert resolve_secret("file:key", base_dir=str(tmp_path)) == "from-file"
    assert resolve_secret("file:crlf", base_dir=str(tmp_path)) == "from-file"
    assert resolve_secret("literal:env:NOT_A_REF") == "env:NOT_A_REF"
    for ref, message in [
        ("env:MISSING", "MISSING is not set"),
        ("env:EMPTY", "EMPTY is empty"),
        ("env:", "needs a variable name"),
        (f"file:{tmp_path / 'nope'}", "cannot read secret file"),
        ("file:", "needs a path"),
    ]:
        with pytest.raises(SecretRefError, match=message):
            resolve_secret(ref, environ=env)


def test_channel_secrets_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SK_CODEKEY", "the-codekey")
    (tmp_path / "pass.txt").write_text("the-password\n")
    channel = "stomp://127.0.0.1/t?username=u&password=file:pass.txt&codekey=env:SK_CODEKEY"
    config = parse_config(sink(channel), str(tmp_path / "s.properties"))
    spec = config.sourcesinks[0].channel
    assert (spec.password.value, spec.codekey.value) == ("the-password", "the-codekey")
    assert "the-codekey" not in repr(config) and "the-password" not in repr(config)
    assert "the-codekey" not in spec.redacted()


def test_broker_and_proxy_secrets_from_env(monkeypatch):
    from socketeer.passwords import Authenticator

    monkeypatch.setenv("SK_BROKER", "broker-pass")
    monkeypatch.setenv("SK_ALICE", "alice-pass")
    text = sink(
        "stomp://127.0.0.1/t",
        messagingserverenabled="true",
        **{"messagingserveruser.node": "env:SK_BROKER"},
    ) + (
        "socketeer.sourcesink.1.clustername=c\n"
        "socketeer.sourcesink.1.nodename=px\n"
        "socketeer.sourcesink.1.channel=stomp://127.0.0.1/t\n"
        "socketeer.sourcesink.1.serverport=1080\n"
        "socketeer.sourcesink.1.peernode=si\n"
        "socketeer.sourcesink.1.authorisation=staff\n"
        "socketeer.authorisation.staff.user.alice=env:SK_ALICE\n"
    )
    config = parse_config(text)
    assert config.broker.users["node"].value == "broker-pass"
    proxy = {ss.nodename: ss for ss in config.sourcesinks}["px"].proxy
    assert Authenticator(proxy.users).check("alice", "alice-pass")


@pytest.mark.parametrize(
    "text,key,line",
    [
        (sink("stomp://h/t?codekey=env:SK_NOT_SET"), "socketeer.sourcesink.0.channel", 4),
        (
            sink("stomp://h/t", **{"messagingserveruser.node": "file:/nonexistent/secret"}),
            "socketeer.general.messagingserveruser.node",
            1,
        ),
    ],
)
def test_unresolvable_secret_is_a_located_error(text, key, line, monkeypatch):
    monkeypatch.delenv("SK_NOT_SET", raising=False)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "s.properties")
    assert (e.value.key, e.value.line) == (key, line)
    assert "SK_NOT_SET" in str(e.value) or "/nonexistent/secret" in str(e.value)


def test_secret_file_content_never_in_errors(tmp_path):
    secret = tmp_path / "hash"
    secret.write_text("pbkdf2-sha256$1$TOPSECRET$x\n")  # read fine, but a malformed hash
    text = sink("stomp://h/t", **{"messagingserveruser.node": f"file:{secret}"})
    with pytest.raises(ConfigError, match="malformed passcode hash") as e:
        parse_config(text)
    assert "TOPSECRET" not in str(e.value)


# -- requireencryption, sealmaxage and the warning ------------------------------------------------


@pytest.mark.parametrize(
    "channel,protected",
    [
        ("stomp://h/t", False),
        ("stomp://h/t?codekey=k", True),
        ("stomp+ssl://h/t", True),
        ("ssl:h:61627/t", True),
        ("failover:(stomp+ssl://a/t,stomp://b/t)", False),
        ("failover:(stomp+ssl://a/t,ssl://b/t)", True),
        ("failover:(stomp://a/t?codekey=k,stomp://b/t?codekey=k)", True),
    ],
)
def test_requireencryption(channel, protected):
    text = sink(channel, requireencryption="true")
    if protected:
        assert parse_config(text).require_encryption
        return
    with pytest.raises(ConfigError, match="neither TLS nor a codekey") as e:
        parse_config(text, "s.properties")
    assert (e.value.key, e.value.line) == ("socketeer.sourcesink.0.channel", 5)
    assert not parse_config(sink(channel)).require_encryption  # default: only a warning


def test_failover_brokers_must_share_the_codekey():
    with pytest.raises(ConfigError, match="different codekeys"):
        parse_config(sink("failover:(stomp://a/t?codekey=k1,stomp://b/t?codekey=k2)"))


def test_sealmaxage():
    assert parse_config(sink("stomp://h/t")).seal_max_age == 300
    config = parse_config(sink("stomp://h/t?codekey=k", sealmaxage="30"))
    assert config.seal_max_age == 30
    root = build_service(config, MemoryReactorClock())
    assert root.nodes["0"].sealer.max_age == 30
    with pytest.raises(ConfigError, match="sealmaxage"):
        parse_config(sink("stomp://h/t", sealmaxage="-1"))


@pytest.mark.parametrize(
    "channel,warned",
    [("stomp://h/t", True), ("stomp://h/t?codekey=k", False), ("stomp+ssl://h/t", False)],
)
def test_startup_warning_only_without_tls_and_codekey(channel, warned):
    lines = LogEvents(lambda e: "not encrypted" in e.get("log_format", ""))
    try:
        root = build_service(parse_config(sink(channel)), MemoryReactorClock())
    finally:
        lines.close()
    assert bool(lines.events) is warned
    assert (root.nodes["0"].sealer is not None) is ("codekey" in channel)


@pytest.mark.parametrize(
    "channel",
    [
        "stomp://u:TOPSECRET@[zz/t",
        "stomp:u:TOPSECRET@[zz:1/t",
        "stomp://u:TOP#SECRET@h/t",
        "stomp://h/t?password=TOPSECRET&codekey=x&codekey=y",
    ],
)
def test_channel_errors_never_echo_secrets(channel):
    with pytest.raises(ConfigError) as e:
        parse_config(sink(channel))
    assert "SECRET" not in str(e.value)
