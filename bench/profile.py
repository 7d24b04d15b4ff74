"""Reading py-spy's raw (collapsed-stack) output: where each process spends its time.

``py-spy record --format raw --function --full-filenames --idle --threads`` writes one line
per distinct stack, ``thread (tid): name;frame;...;leaf count``, each frame
``function (file:line)``. Only the main (reactor) thread counts; samples whose leaf is the
reactor's poll are idle time. Pure parsing, no I/O besides reading the file, so the smoke
test can run it on a few lines.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short_file(path: str) -> str:
    """``.../site-packages/twisted/internet/tcp.py`` -> ``twisted/internet/tcp.py``,
    ``.../code/socketeer/tunnel/node.py`` -> ``socketeer/tunnel/node.py``,
    stdlib -> ``asyncio/events.py``."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    parts = path.split("/")
    if "socketeer" in parts[:-1]:
        return "/".join(parts[len(parts) - 1 - parts[-2::-1].index("socketeer") - 1 :])
    for i, part in enumerate(parts):
        if part.startswith("python3."):
            return "/".join(parts[i + 1 :])
    return parts[-1]


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{short_file(m['file'])}:{m['func']}"


#: Leaf functions where a reactor thread waits for work (py-spy --idle records them).
IDLE = ("EPollReactor.doPoll", "PollReactor.doPoll", "SelectReactor.doSelect")


def parse_collapsed(lines, thread: str | None = "MainThread") -> list[tuple[list[str], int]]:
    """(frames, count) per stack; with ``--threads`` output, only the stacks of ``thread``."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        body, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = body.split(";")
        if frames and frames[0].startswith("thread ("):
            name = frames[0].split(": ", 1)[-1]
            if thread is not None and name != thread:
                continue
            frames = frames[1:]
        stacks.append(([frame_name(f) for f in frames], n))
    return stacks


#: Inclusive time of these areas (a sample counts if any frame is in one of the files).
AREAS = {
    "logging (twisted.logger, log files)": ("twisted/logger/", "twisted/python/logfile.py"),
    "sealing (wire/seal.py)": ("socketeer/wire/seal.py", "socketeer/seal.py"),
    "STOMP framing (wire/stompframing.py)": ("socketeer/wire/stompframing.py",),
    "envelope (wire/envelope.py)": ("socketeer/wire/envelope.py",),
}


def is_idle(frames: list[str]) -> bool:
    return bool(frames) and frames[-1].endswith(IDLE)


def category(name: str) -> str:
    file = name.split(":", 1)[0]
    if file.startswith("socketeer/"):
        return "socketeer"
    for pkg in ("twisted", "stompest", "cryptography", "zope", "OpenSSL"):
        if file.startswith(pkg + "/"):
            return pkg
    return "python/stdlib"


def summarize(stacks: list[tuple[list[str], int]], top: int = 15) -> dict:
    """Self and inclusive shares of the busy samples per function, self shares per package,
    and ``busy``: the share of all samples that were not waiting in the reactor."""
    everything = sum(n for _, n in stacks)
    busy_stacks = [(f, n) for f, n in stacks if f and not is_idle(f)]
    total = sum(n for _, n in busy_stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    for frames, n in busy_stacks:
        own[frames[-1]] += n
        cats[category(frames[-1])] += n
        for name in set(frames):
            inclusive[name] += n

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in counter.most_common(top)] if total else []

    interesting = Counter(
        {
            k: v
            for k, v in inclusive.items()
            if k.startswith(("socketeer/", "stompest/", "twisted/logger/"))
        }
    )
    areas: Counter[str] = Counter()
    for frames, n in busy_stacks:
        for area, prefixes in AREAS.items():
            if any(f.startswith(prefixes) for f in frames):
                areas[area] += n
    return {
        "samples": total,
        "busy": total / everything if everything else 0.0,
        "areas": [(k, v / total) for k, v in areas.most_common()] if total else [],
        "self": share(own),
        "inclusive": share(interesting),
        "packages": share(cats),
    }


def summarize_file(path: Path, top: int = 15) -> dict:
    with open(path, errors="replace") as f:
        return summarize(parse_collapsed(f), top)
