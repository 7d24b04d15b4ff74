"""``socketeer check``: the resolved configuration, secrets masked, errors by file and line."""

from __future__ import annotations

import io

from socketeer.cli.main import main

from support import ROOT


def check(*args: str) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *args], out, err)
    return out.getvalue(), err.getvalue(), code


def test_check_prints_the_resolved_configuration():
    out, err, code = check(str(ROOT / "etc" / "socketeer.properties"))
    assert code == 0
    assert err.rstrip().endswith("socketeer.properties: OK")
    assert "broker:\n  enabled: true\n  listen: tcp:61626:interface=127.0.0.1\n" in out
    assert "sourcesink 1:\n" in out
    assert "  serverport: tcp:1234:interface=127.0.0.1\n" in out
    assert "  connect_timeout: 10.0\n" in out  # defaults are shown
    assert "status: none\n" in out


def test_check_masks_every_secret(tmp_path):
    cfg = tmp_path / "secret.properties"
    cfg.write_text(
        "socketeer.general.messagingserverenabled=true\n"
        "socketeer.general.messagingserveruser.bob=BROKERPASS\n"
        "socketeer.general.statusserverenabled=true\n"
        "socketeer.general.statusserveruser.ops=STATUSPASS\n"
        "socketeer.authorisation.team.user.alice=PROXYPASS\n"
        "socketeer.sourcesink.p.clustername=c\n"
        "socketeer.sourcesink.p.nodename=p\n"
        "socketeer.sourcesink.p.channel=stomp://bob:CHANNELPASS@127.0.0.1:61626/t"
        "?codekey=CODEKEY\n"
        "socketeer.sourcesink.p.serverport=1080\n"
        "socketeer.sourcesink.p.peernode=si\n"
        "socketeer.sourcesink.p.authorisation=team\n"
    )
    out, err, code = check(str(cfg))
    assert code == 0, err
    for secret in ("BROKERPASS", "STATUSPASS", "PROXYPASS", "CHANNELPASS", "CODEKEY"):
        assert secret not in out + err
    assert "bob: ***" in out and "ops: ***" in out and "alice: ***" in out
    assert "channel: stomp://127.0.0.1:61626/t?username=bob&password=***&codekey=***" in out


def test_check_error_names_file_and_line_and_fails(tmp_path):
    cfg = tmp_path / "bad.properties"
    cfg.write_text(
        "socketeer.general.messagingserverenabled=true\n"
        "# a comment\n"
        "socketeer.general.messagingserverport=99999\n"
    )
    out, err, code = check(str(cfg))
    assert code == 1
    assert out == ""
    assert err.startswith(f"error: {cfg}:3: socketeer.general.messagingserverport: ")
    assert "out of range" in err


def test_check_missing_file_fails(tmp_path):
    out, err, code = check(str(tmp_path / "nope.properties"))
    assert code == 1 and "cannot read configuration" in err


def test_check_prints_warnings_and_strict_fails_on_them(tmp_path):
    cfg = tmp_path / "warn.properties"
    cfg.write_text(
        "socketeer.general.messagingserverenabled=true\nsocketeer.general.messagingservrport=1\n"
    )
    out, err, code = check(str(cfg))
    assert code == 0
    assert f"warning: {cfg}:2: unknown key socketeer.general.messagingservrport" in err
    assert "did you mean socketeer.general.messagingserverport?" in err
    out, err, code = check("--strict", "--quiet", str(cfg))
    assert code == 1 and out == "" and "1 warnings (--strict)" in err
