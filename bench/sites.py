"""Starting ``twistd socketeer`` processes for the stand-alone stress scripts.

``flowcontrol.py`` and ``wan.py`` each run a few Socketeer processes from properties text on
loopback ports; this is how they find ports, start the processes and end them (by PID, the
ones they started).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "free_port", "start_twistd", "stop_all", "wait_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float) -> None:
    """Until ``port`` on loopback accepts a connection; SystemExit at ``deadline``."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def start_twistd(config: Path, text: str) -> subprocess.Popen:
    """Write ``text`` to ``config`` and run ``twistd -n socketeer -c config`` on it."""
    config.write_text(text)
    twistd = str(Path(sys.executable).with_name("twistd"))
    return subprocess.Popen(
        [twistd, "-n", "--pidfile=", "socketeer", "-c", str(config)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_all(procs: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each process still running, then wait for it (SIGKILL after 15 s)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
