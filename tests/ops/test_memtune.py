"""memtune: glibc's malloc thresholds are set for the twistd process, unless the user set them."""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from socketeer.ops import memtune

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt only exists on glibc-based Linux",
)


@glibc
def test_tunes_malloc_in_a_fresh_process():
    # In a child, so that the test process keeps its own allocator settings.
    code = textwrap.dedent(
        """
        import os
        from socketeer.ops import memtune
        os.environ.pop("GLIBC_TUNABLES", None)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        print(memtune.tune_malloc(environ=env))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_leaves_malloc_alone_when_the_user_tuned_it():
    assert memtune.user_tuned({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert memtune.user_tuned({"MALLOC_ARENA_MAX_": "2"})
    assert not memtune.user_tuned({"GLIBC_TUNABLES": "glibc.rtld.nns=2", "HOME": "/"})
    assert memtune.tune_malloc(environ={"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}) is False


def test_twistd_plugin_tunes_its_process(monkeypatch):
    calls = []
    monkeypatch.setattr("socketeer.tap.tune_malloc", lambda: calls.append(True) or True)
    from socketeer import tap

    options = tap.Options()
    options.parseOptions(["-c", str(Path(__file__).parents[2] / "etc" / "socketeer.properties")])
    hup = signal.getsignal(signal.SIGHUP)
    try:
        root = tap.makeService(options)
    finally:
        signal.signal(signal.SIGHUP, hup)
    assert calls == [True]
    assert root.nodes
