"""The properties reader: located entries, and typed values that fail at their key's line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from socketeer.config.model import ConfigError
from socketeer.config.properties import NAME_ALLOWED, Properties, is_name, read_entries, read_text

PATH = "t.properties"


def props(text: str, path: str = PATH) -> Properties:
    warnings: list[str] = []
    return Properties(path, read_entries(text, path, warnings))


def test_entries_know_their_line() -> None:
    warnings: list[str] = []
    entries = read_entries("# c\na=1\nb = x \\\n  y\na: 2\n", PATH, warnings)
    assert [(e.key, e.value, e.line) for e in entries.values()] == [("a", "2", 5), ("b", "x y", 3)]
    assert warnings == [f"{PATH}:5: duplicate key a (also on line 2); the last value wins"]


def test_error_points_at_the_key() -> None:
    p = props("\n\nk=v\n")
    error = p.error("k", "bad", "good")
    assert isinstance(error, ConfigError)
    assert (error.line, error.key, str(error)) == (3, "k", f"{PATH}:3: k: bad; allowed: good")
    assert p.error("missing", "bad").line is None


def test_get_and_required() -> None:
    p = props("k =  v  \n")
    assert p.get("k") == "v" and p.get("missing") is None
    assert p.required("k", "anything") == "v"
    with pytest.raises(ConfigError, match="missing: required key is missing; allowed: x"):
        p.required("missing", "x")


@pytest.mark.parametrize("text,value", [("yes", True), ("TRUE", True), ("0", False), ("no", False)])
def test_boolean(text: str, value: bool) -> None:
    assert props(f"k={text}\n").boolean("k", not value) is value


def test_boolean_default_and_error() -> None:
    assert props("").boolean("k", True) is True
    with pytest.raises(ConfigError, match="invalid boolean 'maybe'"):
        props("k=maybe\n").boolean("k", True)


def test_integer() -> None:
    assert props("k=42\n").integer("k", 0, 1, 100) == 42
    assert props("").integer("k", 7, 1, 100) == 7
    with pytest.raises(
        ConfigError, match="101 is out of range; allowed: an integer 1..100 \\(b\\)"
    ):
        props("k=101\n").integer("k", 0, 1, 100, " (b)")
    with pytest.raises(ConfigError, match="invalid integer '-1'"):
        props("k=-1\n").integer("k", 0, 0, 100)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "x"])
def test_positive_float_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="seconds > 0"):
        props(f"k={text}\n").positive_float("k", 1.0)


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "x"])
def test_nonnegative_float_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="0 means no limit"):
        props(f"k={text}\n").nonnegative_float("k", 1.0)


def test_floats() -> None:
    assert props("k=2.5\n").positive_float("k", 1.0) == 2.5
    assert props("").positive_float("k", 1.0) == 1.0
    assert props("k=0\n").nonnegative_float("k", 1.0) == 0.0
    assert not math.isnan(props("").nonnegative_float("k", 3.0))


def test_names() -> None:
    assert is_name("a-b_c%2E1") and not is_name("a.b") and not is_name("")
    assert props("k=node%2E1\n").name("k") == "node%2E1"
    assert props("").optional_name("k") is None
    with pytest.raises(ConfigError, match="invalid name 'a.b'") as e:
        props("k=a.b\n").optional_name("k")
    assert e.value.allowed == NAME_ALLOWED


def test_relative_files_follow_the_properties_file(tmp_path: Path) -> None:
    p = props("", str(tmp_path / "s.properties"))
    assert p.base_dir == str(tmp_path)
    assert p.file_path("cert.pem") == str(tmp_path / "cert.pem")
    assert props("", "<string>").base_dir is None
    assert props("", "<string>").file_path("cert.pem") == "cert.pem"


def test_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.delenv("SK_UNSET", raising=False)
    p = props("k=file:pw\nu=env:SK_UNSET\n", str(tmp_path / "s.properties"))
    assert p.secret("k", "file:pw") == "from-file"
    with pytest.raises(ConfigError, match="u: cannot read the codekey: .*SK_UNSET") as e:
        p.secret("u", "env:SK_UNSET", "codekey")
    assert e.value.line == 2


def test_read_text(tmp_path: Path) -> None:
    path = tmp_path / "s.properties"
    path.write_bytes("\ufeffk=\u00e9\n".encode())
    assert read_text(str(path)) == "k=\u00e9\n"
    path.write_bytes(b"k=\xe9\n")
    assert read_text(str(path)) == "k=\u00e9\n"
    with pytest.raises(ConfigError, match="cannot read configuration"):
        read_text(str(tmp_path / "nope"))
