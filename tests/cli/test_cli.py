"""The ``socketeer`` console script: its parser and help, genkey and hash-password."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import pytest
import pytest_twisted

from socketeer.cli.main import main
from socketeer.passwords import verify

from support.cli import run


def test_genkey_prints_fresh_url_safe_keys():
    keys = []
    for _ in range(2):
        out = io.StringIO()
        assert main(["genkey"], out, io.StringIO()) == 0
        keys.append(out.getvalue().strip())
    assert keys[0] != keys[1]
    for key in keys:
        assert len(base64.urlsafe_b64decode(key + "=")) == 32
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert main(["genkey", "--bytes", "8"], io.StringIO(), io.StringIO()) == 2


def test_genkey_identity_and_its_public_key(monkeypatch):
    from socketeer.wire.noise import Identity

    out, err = io.StringIO(), io.StringIO()
    assert main(["genkey", "--identity"], out, err) == 0
    private = out.getvalue()
    assert private.count("\n") == 1  # the private key alone: `> node.key` makes the file
    identity = Identity.from_text(private)
    assert err.getvalue().strip() == (
        f"public key (for the peers' peerkeys): {identity.public_text()}"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(private))
    out = io.StringIO()
    assert main(["genkey", "--public"], out, io.StringIO()) == 0
    assert out.getvalue() == identity.public_text() + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("not a key\n"))
    err = io.StringIO()
    assert main(["genkey", "--public"], io.StringIO(), err) == 1
    assert "not a key" in err.getvalue() and "not a key\n" not in err.getvalue()
    assert main(["genkey", "--identity", "--public"], io.StringIO(), io.StringIO()) == 2
    again = io.StringIO()
    main(["genkey", "--identity"], again, io.StringIO())
    assert again.getvalue() != private


@pytest_twisted.ensureDeferred
async def test_console_script_genkey_and_hash_password():
    out, err, code = await run("genkey")
    assert code == 0 and len(out.strip()) == 43
    out, err, code = await run("genkey", "--identity")
    assert code == 0 and len(out.strip()) == 44 and b"public key" in err
    public, _, code = await run("genkey", "--public", stdin=out)
    assert code == 0 and err.strip().endswith(public.strip())
    out, err, code = await run("hash-password", "--iterations", "1000", stdin=b"open sesame\n")
    assert code == 0, err
    stored = out.decode().strip()
    assert stored.startswith("pbkdf2-sha256$1000$")
    assert verify(stored, "open sesame") and not verify(stored, "open sesame\n")
    out, err, code = await run("hash-password", stdin=b"\n")
    assert code == 1 and b"empty password" in err
    out, err, code = await run("--version")
    assert code == 0 and out.startswith(b"socketeer ")


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["connect", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "socketeer" in capsys.readouterr().out


def test_the_light_commands_do_not_load_twisted():
    """``check``, ``genkey``, ``hash-password`` and ``status`` start fast (systemd runs
    ``socketeer check`` before every start): only ``connect`` loads a node and the reactor."""
    code = (
        "import sys\n"
        "import socketeer.cli.main, socketeer.cli.check, socketeer.cli.genkey\n"
        "import socketeer.cli.hash_password, socketeer.cli.status\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'zope'))[:5])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
