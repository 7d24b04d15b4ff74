"""twistd's side: the options, and what makeService adds to the service tree."""

from __future__ import annotations

import pytest
from twisted.python import usage

from socketeer.tap import Options, makeService

from support import ROOT


def test_options_parse_and_validate(tmp_path):
    cfg = tmp_path / "s.properties"
    cfg.write_text((ROOT / "etc" / "examples" / "sink.properties").read_text())
    opts = Options()
    opts.parseOptions(["-c", str(cfg)])
    assert opts["config"] == str(cfg)
    assert opts["parsed"].broker.enabled
    with pytest.raises(usage.UsageError, match="required"):
        Options().parseOptions([])


def test_make_service_adds_readiness_last(tmp_path, monkeypatch):
    monkeypatch.setattr("socketeer.tap.tune_malloc", lambda: False)
    monkeypatch.setattr("signal.signal", lambda *a: None)  # no SIGHUP handler in the test run
    cfg = tmp_path / "s.properties"
    cfg.write_text((ROOT / "etc" / "examples" / "sink.properties").read_text())
    opts = Options()
    opts.parseOptions(["-c", str(cfg)])
    root = makeService(opts)
    names = [s.name for s in root]
    assert names[-1] == "readiness" and "broker" in names
