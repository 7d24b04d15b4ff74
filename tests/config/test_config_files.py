"""The capped reader shared by secret files and TLS files, and relative configuration paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from socketeer.config.files import FileReadError, read_capped, resolve_path
from socketeer.config.secretref import MAX_FILE, SecretRefError, resolve_secret
from socketeer.config.tlsfiles import TLSFileError, read_certificates


def test_read_capped(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_capped(str(path), 10, "thing") == b"x" * 10
    with pytest.raises(FileReadError, match=rf"thing {path} is larger than 9 bytes"):
        read_capped(str(path), 9, "thing")
    with pytest.raises(FileReadError, match=r"cannot read thing .*nope: No such file"):
        read_capped(str(tmp_path / "nope"), 10, "thing")


def test_read_capped_never_shows_the_content(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"TOPSECRET" * 10)
    with pytest.raises(FileReadError) as e:
        read_capped(str(path), 8, "secret file")
    assert "TOPSECRET" not in str(e.value)


def test_resolve_path(tmp_path: Path) -> None:
    assert resolve_path("key.pem", str(tmp_path)) == str(tmp_path / "key.pem")
    assert resolve_path("/etc/key.pem", str(tmp_path)) == "/etc/key.pem"
    assert resolve_path("key.pem", None) == "key.pem"


def test_secret_and_tls_files_share_the_cap_and_its_messages(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"a" * (MAX_FILE + 1))
    with pytest.raises(SecretRefError, match=f"secret file {big} is larger than {MAX_FILE} bytes"):
        resolve_secret(f"file:{big}")
    with pytest.raises(TLSFileError, match=f"cannot read CA file {tmp_path / 'nope'}"):
        read_certificates(str(tmp_path / "nope"), "CA file")
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"-" * (1024 * 1024 + 1))
    with pytest.raises(TLSFileError, match="is larger than 1048576 bytes"):
        read_certificates(str(huge))
