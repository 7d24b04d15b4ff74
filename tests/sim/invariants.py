"""What every run must satisfy, judged from its :class:`~.world.Report`.

Each check returns violations as one-line strings that start with the invariant's name, so
that a sweep can count them by kind. The names (docs/simulation.rst):

``prefix``       each end received a prefix of what the other wrote, in order, no duplicates
``clean-short``  a clean end (FIN/EOF/CLOSE) only with everything the peer wrote, and only
                 when the peer did end on purpose; a stream that fell short ends in a reset
``at-most-once`` each stream reached a target at most once
``bounds``       per-stream buffers within the effective window (sampled during the run)
``grace``        an end whose peer process died ends within grace + slack
``quiesce``      once the faults stop and time runs on, no stream or connection is left
``complete``     (runs whose faults are all survivable) every stream delivered everything
``impostor``     a process with a valid node name but a key no allowlist has reaches no
                 target and serves none
``error``        no exception escaped the code under test
"""

from __future__ import annotations

from .apps import End, Endpoint
from .world import Report

#: Beyond the grace period: the liveness check's period twice, and a few round trips.
GRACE_SLACK_PINGS = 2
GRACE_SLACK = 1.0


def _is_prefix(received: bytes | bytearray, peer: Endpoint) -> bool:
    n = len(received)
    return n <= peer.written and peer.script.payload[:n] == received


def _clean(app: Endpoint) -> bool:
    return app.end is End.CLEAN or app.eof


def _unfinished(peer: Endpoint, what: str) -> str:
    """Why a clean end was a lie when the peer never ended on purpose."""
    if peer.finished:
        return ""
    return f", but the {what} never closed (it ended {peer.end and peer.end.value})"


def _complete_from(app: Endpoint, peer: Endpoint) -> bool:
    return peer.finished and bytes(app.received) == peer.script.payload[: peer.written]


def check(report: Report) -> list[str]:
    out: list[str] = []
    plan = report.plan
    out += [f"error: {e.strip().splitlines()[-1]}" for e in report.errors]
    out += [f"bounds: {b}" for b in report.bounds]
    for record in report.clients:
        client = record.app
        name = f"client{record.plan.index}({record.key[1] if record.key else '-'})"
        targets = report.targets.get(record.key, []) if record.key else []
        if len(targets) > 1:
            out.append(f"at-most-once: {name} reached its target {len(targets)} times")
        if targets and not any(_is_prefix(client.received, t) for t in targets):
            out.append(
                f"prefix: {name} received {len(client.received)} bytes that are not a "
                f"prefix of what its target wrote ({targets[0].written})"
            )
        if not targets and client.received:
            out.append(f"prefix: {name} received {len(client.received)} bytes from no target")
        for target in targets:
            if not _is_prefix(target.received, client):
                out.append(
                    f"prefix: target of {name} received {len(target.received)} bytes, not a "
                    f"prefix of the {client.written} the client wrote"
                )
        # A clean end or EOF says "the peer finished and you have it all".
        if _clean(client):
            peer = targets[0] if targets else None
            if peer is None:
                out.append(f"clean-short: {name} ended cleanly but no target was ever reached")
            elif not _complete_from(client, peer):
                out.append(
                    f"clean-short: {name} ended cleanly ({'EOF' if client.eof else 'FIN'}) "
                    f"with {len(client.received)} of {peer.written} bytes"
                    f"{_unfinished(peer, 'target')}"
                )
        for target in targets:
            if _clean(target) and not _complete_from(target, client):
                out.append(
                    f"clean-short: target of {name} ended cleanly "
                    f"({'EOF' if target.eof else 'FIN'}) with {len(target.received)} of "
                    f"{client.written} bytes{_unfinished(client, 'client')}"
                )
        out += _grace(report, record, name, targets)
        if record.plan.source in plan.impostors:
            if targets:
                out.append(
                    f"impostor: {name} of {record.plan.source} (posing as "
                    f"{plan.impostors[record.plan.source]}) reached its target"
                )
        elif plan.expect_complete:
            out += _complete(record, name, targets)
    out += _impostors(report)
    if not report.quiet:
        for what in report.live[:3]:
            out.append(f"quiesce: at t={report.end_time:.1f} {what}")
    return out


def _impostors(report: Report) -> list[str]:
    """No target connection for a stream an impostor opened, and none made by an impostor."""
    out = []
    plan = report.plan
    for name, claimed in plan.impostors.items():
        process = report.processes[name]
        made = report.made_by.get(name, [])
        if made:
            out.append(
                f"impostor: {name} (posing as {claimed}) connected {len(made)} targets, "
                f"for streams {sorted(k[1] for k in made if k)[:3]}"
            )
        theirs = set(process.incarnations)
        for key, targets in report.targets.items():
            if key is not None and key[1].rpartition("-")[0] in theirs and targets:
                out.append(f"impostor: stream {key[1]} of {name} (as {claimed}) reached a target")
    return out


def _grace(report: Report, record, name: str, targets: list[Endpoint]) -> list[str]:
    """Each end must end within grace (+ slack) of its peer's process dying."""
    out = []
    plan = report.plan
    near_far = [(record.app, record.plan.source, record.plan.sink, name)]
    near_far += [(t, record.plan.sink, record.plan.source, f"target of {name}") for t in targets]
    for app, near, far, label in near_far:
        if app.connected_at is None:
            continue
        params = plan.params[near]
        slack = GRACE_SLACK_PINGS * params.ping_interval + GRACE_SLACK
        near_connects = report.processes[near].connects
        for death in report.processes[far].deaths:
            if death < app.connected_at or (app.end_time is not None and app.end_time < death):
                continue
            deadline = death + params.grace + slack
            for c in near_connects:  # our channel coming back restarts the silence count
                if death < c <= deadline:
                    deadline = max(deadline, c + params.grace + slack)
            ended = app.end_time if app.end_time is not None else float("inf")
            if ended > deadline and report.end_time > deadline:
                out.append(
                    f"grace: {label} still open {ended - death:.1f}s after node {far} died "
                    f"at t={death:.2f} (deadline {deadline - death:.1f}s)"
                )
    return out


def _complete(record, name: str, targets: list[Endpoint]) -> list[str]:
    out = []
    client = record.app
    if client.end in (End.RESET, End.DIED):
        out.append(f"complete: {name} was reset in a run with only survivable faults")
    if not targets:
        if client.end is not End.SELF:  # a client that gave up early may never get there
            out.append(f"complete: {name} never reached its target")
        return out
    target = targets[0]
    if target.end is End.RESET:
        out.append(f"complete: target of {name} was reset")
    if client.end is not End.SELF and not _complete_from(client, target):
        out.append(
            f"complete: {name} got {len(client.received)} of {target.written} bytes "
            f"(ended {client.end and client.end.value})"
        )
    if target.end is not End.SELF and not _complete_from(target, client):
        out.append(
            f"complete: target of {name} got {len(target.received)} of {client.written} bytes "
            f"(ended {target.end and target.end.value})"
        )
    return out


def kinds(violations: list[str]) -> list[str]:
    """The invariant names among ``violations``, sorted, once each."""
    return sorted({v.split(":", 1)[0] for v in violations})
