"""``identity`` and ``peerkeys``: read into the sourcesink's config, and every bad value a
located error that names the key, the line (and the peers file's line), never a private key."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from socketeer.cli.main import main
from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError
from socketeer.wire.noise import Identity

SI, SO, OTHER = Identity.generate(), Identity.generate(), Identity.generate()

BASE = (
    "socketeer.sourcesink.0.clustername=c\n"
    "socketeer.sourcesink.0.nodename=si\n"
    "socketeer.sourcesink.0.isSpawningAndResolvingSink=true\n"
    "socketeer.sourcesink.0.channel=stomp://127.0.0.1/t\n"
    "socketeer.sourcesink.1.clustername=c\n"
    "socketeer.sourcesink.1.nodename=so\n"
    "socketeer.sourcesink.1.serverport=1234\n"
    "socketeer.sourcesink.1.peernode=si\n"
    "socketeer.sourcesink.1.fixedHost=127.0.0.1\n"
    "socketeer.sourcesink.1.fixedPort=8000\n"
    "socketeer.sourcesink.1.channel=stomp://127.0.0.1/t\n"
)
K_ID = "socketeer.sourcesink.1.identity"
K_PEERS = "socketeer.sourcesink.1.peerkeys"


def config(identity: str | None, peers: str | None, path: str = "test.properties"):
    text = BASE
    if identity is not None:
        text += f"{K_ID}={identity}\n"
    if peers is not None:
        text += f"{K_PEERS}={peers}\n"
    return parse_config(text, path), text


def error(identity: str | None, peers: str | None, path: str = "test.properties") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config(identity, peers, path)
    return info.value


def test_without_them_nothing_changes() -> None:
    cfg, _ = config(None, None)
    for ss in cfg.sourcesinks:
        assert ss.identity is None and ss.peer_keys is None


def test_inline_identity_and_peerkeys() -> None:
    cfg, _ = config(SO.to_text(), f"si={SI.public_text()} ,  so={SO.public_text()}")
    source = cfg.sourcesinks[1]
    assert source.identity == SO and source.identity.public_key == SO.public_key
    assert dict(source.peer_keys) == {"si": SI.public_key, "so": SO.public_key}
    assert cfg.warnings == ()
    with pytest.raises(TypeError):
        source.peer_keys["x"] = b""  # frozen, like the rest of the config
    assert SO.to_text() not in repr(cfg)


def test_identity_from_env_and_file_and_peerkeys_from_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SO_IDENTITY", SO.to_text())
    (tmp_path / "so.key").write_text(SO.to_text() + "\n")
    (tmp_path / "peers").write_text(
        f"# the cluster's nodes\n\nsi = {SI.public_text()}\nso={SO.public_text()}  \n"
    )
    path = str(tmp_path / "s.properties")
    for identity in ("env:SO_IDENTITY", "file:so.key", f"file:{tmp_path / 'so.key'}"):
        cfg, _ = config(identity, "file:peers", path)
        assert cfg.sourcesinks[1].identity == SO
        assert dict(cfg.sourcesinks[1].peer_keys) == {"si": SI.public_key, "so": SO.public_key}


@pytest.mark.parametrize(
    ("identity", "peers", "key", "fragments"),
    [
        ("not-a-key", "si=PEER", K_ID, ["not a node identity", "socketeer genkey --identity"]),
        ("ID", "si=PEER", None, []),  # the good case, for contrast
        ("env:NO_SUCH_VARIABLE", "si=PEER", K_ID, ["cannot read the identity", "not set"]),
        ("ID", None, K_ID, ["an identity needs peerkeys", f"also set {K_PEERS}"]),
        (None, "si=PEER", K_PEERS, ["peerkeys needs identity", f"also set {K_ID}"]),
        ("ID", "", K_PEERS, ["empty"]),
        ("ID", "si", K_PEERS, ["entry 1", "'si' has no valid public key", "node=publickey"]),
        ("ID", "si=PEER,,so=SELF", K_PEERS, ["entry 2 is empty"]),
        ("ID", "si=PEER, so=short", K_PEERS, ["entry 2: node 'so' has no valid public key"]),
        ("ID", "si.x=PEER", K_PEERS, ["'si.x' is not a node=publickey entry", "no '.'"]),
        ("ID", "si=PEER, si=PEER", K_PEERS, ["entry 2: node 'si' is listed twice"]),
        ("ID", "si=PEER, so=OTHER", K_PEERS, ["lists this node 'so' with a key that is not"]),
        ("ID", "so=SELF", K_PEERS, ["peernode 'si' is not listed", "si=<its public key>"]),
        ("ID", "file:", K_PEERS, ["file: needs a path"]),
        ("ID", "file:/no/such/peers", K_PEERS, ["cannot read peers file /no/such/peers"]),
    ],
)
def test_bad_values_are_located_errors(
    identity: str | None, peers: str | None, key: str | None, fragments: list[str]
) -> None:
    def fill(value: str | None) -> str | None:
        if value is None:
            return None
        for name, text in (
            ("PEER", SI.public_text()),
            ("SELF", SO.public_text()),
            ("OTHER", OTHER.public_text()),
        ):
            value = value.replace(name, text)
        return value.replace("ID", SO.to_text()) if value == "ID" else value

    identity, peers = fill(identity), fill(peers)
    if key is None:
        config(identity, peers)
        return
    e = error(identity, peers)
    assert e.key == key and e.allowed
    message = str(e)
    line = 12 if key == K_ID or identity is None else 13  # BASE has 11 lines
    assert e.line == line and message.startswith(f"test.properties:{line}: {key}: ")
    for fragment in fragments:
        assert fragment in message
    assert SO.to_text() not in message  # never the private key


def test_errors_in_a_peers_file_name_its_line(tmp_path: Path) -> None:
    (tmp_path / "peers").write_text(f"# nodes\nsi={SI.public_text()}\nso={SI.public_text()[:-4]}\n")
    e = error(SO.to_text(), "file:peers", str(tmp_path / "s.properties"))
    assert e.key == K_PEERS and e.line == 13
    assert f"peers file {tmp_path / 'peers'} line 3: node 'so' has no valid public key" in str(e)
    (tmp_path / "empty").write_text("# nobody yet\n")
    e = error(SO.to_text(), "file:empty", str(tmp_path / "s.properties"))
    assert "lists no node" in str(e)
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    e = error(SO.to_text(), "file:binary", str(tmp_path / "s.properties"))
    assert "not UTF-8" in str(e)


def test_a_private_key_pasted_as_a_public_key_is_not_echoed() -> None:
    """Both are 32 bytes of base64, so a private key in peerkeys parses: but an error
    about the entry names the node, not the text."""
    e = error(SO.to_text(), f"si={SI.public_text()}, so=oops{SO.to_text()}")
    assert "node 'so' has no valid public key" in str(e)
    assert SO.to_text() not in str(e)


def test_two_nodes_with_one_key_is_a_warning() -> None:
    cfg, _ = config(SO.to_text(), f"si={SI.public_text()}, si2={SI.public_text()}")
    (warning,) = cfg.warnings
    assert "nodes 'si' and 'si2' have the same public key" in warning
    assert warning.startswith("test.properties:13: ")


def test_check_shows_public_keys_only(tmp_path: Path) -> None:
    path = tmp_path / "s.properties"
    path.write_text(BASE + f"{K_ID}={SO.to_text()}\n{K_PEERS}=si={SI.public_text()}\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(path)], out, err) == 0, err.getvalue()
    text = out.getvalue()
    assert f"identity: public key {SO.public_text()}" in text
    assert f"si: {SI.public_text()}" in text
    assert SO.to_text() not in text
