"""The benchmark run: set up, measure, tear down, report (``python -m bench [--quick]``).

One run measures every peer side by side on loopback. Each round starts every peer afresh,
runs its scenarios and ends it, one peer at a time (the peers' order rotates between
rounds, so slow drift of this shared machine spreads over all of them). Figures are the
medians over the rounds, and ratios are to ``ssh -D`` with aes128-gcm *of the same run*.

The code under test is a snapshot of this checkout's ``socketeer`` package (and its twistd
plugin) copied at the start, so edits made while the run goes on do not mix into it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import peers as P
from bench.common import MiB

ROOT = P.ROOT
REFERENCE = "ssh-gcm"
#: Raw figures of the run whose report is docs/benchmarks.rst.
RESULTS = ROOT / "bench" / "results.json"

FULL = {
    "repeats": 3,
    "bulk": 256 * MiB,
    "parallel_streams": 32,
    "parallel_size": 16 * MiB,
    "connects": 500,
    "rtts": 2000,
    "rtt_size": 64,
    "idle": 1000,
    "many": 10000,
    "bulk_timeout": 150,
}
QUICK = {
    "repeats": 1,
    "bulk": 16 * MiB,
    "parallel_streams": 32,
    "parallel_size": 1 * MiB,
    "connects": 50,
    "rtts": 200,
    "rtt_size": 64,
    "idle": 100,
    "many": 1000,
    "bulk_timeout": 60,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the code under test ---------------------------------------------------------------------


def snapshot_code(workdir: Path, source: str) -> tuple[Path, dict]:
    """Copy the package to run into ``workdir/code``: this working tree ("tree"), a git
    revision, or another directory holding ``socketeer/`` and ``twisted/plugins/``."""
    code = workdir / "code"
    (code / "twisted" / "plugins").mkdir(parents=True)  # workdir may be new: parents
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    info: dict = {"head": head, "source": source}
    if source != "tree" and Path(source).is_dir():  # another checkout, e.g. a patched copy
        src = Path(source).resolve()
        shutil.copytree(
            src / "socketeer", code / "socketeer", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(
            src / "twisted" / "plugins" / "socketeer_plugin.py", code / "twisted" / "plugins"
        )
        info.update(source=str(src), head="-", uncommitted=[])
    elif source == "tree":
        shutil.copytree(
            ROOT / "socketeer", code / "socketeer", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(
            ROOT / "twisted" / "plugins" / "socketeer_plugin.py", code / "twisted" / "plugins"
        )
        status = subprocess.run(
            git + ["status", "--porcelain", "--", "socketeer"], capture_output=True, text=True
        ).stdout.splitlines()
        info["uncommitted"] = [line[3:] for line in status]
    else:
        got = subprocess.run(
            git + ["archive", source, "socketeer", "twisted/plugins"], capture_output=True
        )
        if got.returncode != 0:
            raise SystemExit(f"{source!r} is neither 'tree', a directory nor a git revision")
        archive = got.stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        info["head"] = subprocess.run(
            git + ["rev-parse", "--short", source], capture_output=True, text=True
        ).stdout.strip()
        info["uncommitted"] = []
    return code, info


# -- clients ---------------------------------------------------------------------------------


def run_client(
    ctx: P.Context, peer: P.Peer, scenario: str, params: dict, timeout: float, on_held=None
) -> dict:
    """One scenario in a fresh client process; its RESULT, or {"error": ...}."""
    spec = {
        "scenario": scenario,
        "proxy": peer.proxy,
        "target": ctx.target,
        "timeout": timeout,
        **params,
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [ctx.python, "-m", "bench.client", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()

    def reader() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + timeout + 20
    result: dict = {"error": "client ended without a result"}
    held: dict = {}
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                result = {"error": f"client killed after {timeout + 20:g}s"}
                break
            if line is None:
                break
            if line.startswith("HELD "):
                held = json.loads(line[5:])
                if on_held is not None:
                    held.update(on_held())
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
                break
    finally:
        if proc.poll() is None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
    if "error" in result and err.strip():
        result["stderr"] = err.strip()[-600:]
    if held:
        result["held"] = held
    return result


def scenarios(sizes: dict, peer: P.Peer, main_peer: str) -> list[tuple[str, str, dict, float]]:
    """(name, client scenario, parameters, timeout) for one peer, in the order they run."""
    out = [
        ("idle", "hold", {"streams": sizes["idle"], "concurrency": 64}, 120),
        ("connect", "connect", {"count": sizes["connects"]}, 120),
        ("rtt", "rtt", {"count": sizes["rtts"], "size": sizes["rtt_size"]}, 120),
        ("bulk_up", "bulk_up", {"size": sizes["bulk"]}, sizes["bulk_timeout"]),
        ("bulk_down", "bulk_down", {"size": sizes["bulk"]}, sizes["bulk_timeout"]),
        (
            "parallel",
            "parallel",
            {"streams": sizes["parallel_streams"], "size": sizes["parallel_size"]},
            sizes["bulk_timeout"],
        ),
    ]
    if peer.name == main_peer:
        out.append(("many", "hold", {"streams": sizes["many"], "concurrency": 128}, 300))
    return out


def measure_peer(
    ctx: P.Context,
    peer: P.Peer,
    sizes: dict,
    main_peer: str,
    rnd: int,
    trials: list,
    only: set[str] | None,
) -> None:
    t0 = time.monotonic()
    try:
        peer.start(ctx)
    except Exception as e:  # noqa: BLE001 - a peer that cannot start is reported, not fatal
        log(f"  {peer.name}: could not start: {e}")
        trials.append({"peer": peer.name, "round": rnd, "scenario": "start", "error": str(e)})
        peer.stop()
        return
    log(f"  {peer.name}: up in {time.monotonic() - t0:.1f}s {peer.info or ''}")
    try:
        for name, scenario, params, timeout in scenarios(sizes, peer, main_peer):
            if only and name not in only:
                continue
            mem_before = P.memory(peer.pids())

            def on_held(peer=peer) -> dict:
                time.sleep(0.5)  # let the last opens settle in every process
                return {"mem": P.memory(peer.pids())}

            t = time.monotonic()
            result = run_client(ctx, peer, scenario, params, timeout, on_held)
            result["mem_before"] = mem_before
            wall = time.monotonic() - t
            trials.append(
                {"peer": peer.name, "round": rnd, "scenario": name, "load": loadavg(), **result}
            )
            log(f"  {peer.name} {name}: {brief(name, result)} ({wall:.1f}s)")
            try:
                peer.check_alive()
            except RuntimeError as e:
                log(f"  {peer.name} died: {e}")
                trials.append(
                    {"peer": peer.name, "round": rnd, "scenario": "alive", "error": str(e)}
                )
                break
        trials.append(
            {"peer": peer.name, "round": rnd, "scenario": "end", "mem": P.memory(peer.pids())}
        )
    finally:
        peer.stop()


def loadavg() -> float | None:
    """The 1-minute load average: how busy the shared machine was (our processes included)."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError):
        return None


def brief(name: str, r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"][:200]
    if name in ("bulk_up", "bulk_down", "parallel"):
        return f"{r['mibps']:.1f} MiB/s"
    if name in ("connect", "rtt"):
        return f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms"
    if name in ("idle", "many"):
        mem = r.get("held", {}).get("mem", {})
        return (
            f"{r['verified']}/{r['streams']} verified, open {r['open_s']:.1f}s, "
            f"RSS {mem.get('rss_mib', 0):.1f} MiB"
        )
    return json.dumps(r)[:200]


# -- profiling -------------------------------------------------------------------------------


def profile(
    ctx: P.Context, peer: P.Socketeer, sizes: dict, scratch: Path, scenario: str = "bulk"
) -> dict:
    """py-spy on each Socketeer process while it relays one bulk upload and one download
    (``scenario="bulk"``), or while it runs the connect-latency scenario ("connect")."""
    from bench.profile import summarize_file

    pyspy = shutil.which("py-spy") or str(Path(ctx.python).with_name("py-spy"))
    if not os.path.exists(pyspy):
        return {"error": "py-spy not installed (pip install py-spy)"}
    peer.start(ctx)
    out: dict = {"peer": peer.name, "scenario": scenario, "processes": {}}
    try:
        spies = {}
        for role, pid in peer.role_pids().items():
            raw = scratch / f"profile-{scenario}-{role}.txt"
            args = [pyspy, "record", "-p", str(pid), "-r", "100", "-f", "raw", "--function"]
            args += ["--full-filenames", "--idle", "--threads", "-o", str(raw)]
            spy = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            spies[role] = (spy, raw)
        time.sleep(1.0)
        started = time.monotonic()
        if scenario == "bulk":
            jobs = [(name, {"size": sizes["bulk"]}) for name in ("bulk_up", "bulk_down")]
        else:
            jobs = [("connect", {"count": sizes["connects"]})]
        for name, params in jobs:
            r = run_client(ctx, peer, name, params, sizes["bulk_timeout"])
            out[name] = r
            log(f"  profiled {name}: {brief(name, r)}")
        out["seconds"] = time.monotonic() - started
        for spy, _ in spies.values():
            spy.send_signal(signal.SIGINT)
        for role, (spy, raw) in spies.items():
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
            if raw.exists():
                out["processes"][role] = summarize_file(raw)
    finally:
        peer.stop()
    return out


# -- the run ---------------------------------------------------------------------------------


def machine_facts() -> dict:
    facts = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                facts["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("twisted", "stompest", "cryptography", "pproxy"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001
            pass
    try:
        versions["openssh"] = subprocess.run(
            ["ssh", "-V"], capture_output=True, text=True
        ).stderr.strip()
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "version"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
        if out:
            versions["rabbitmq"] = out
    except (OSError, subprocess.TimeoutExpired):
        pass
    facts["versions"] = versions
    try:
        facts["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return facts


def choose_peers(code: Path, wanted: list[str] | None) -> tuple[list[P.Peer], dict, str]:
    notes: dict[str, str] = {}
    sealed = P.seal_available(code)
    peers: list[P.Peer] = [P.Direct()]
    ssh_missing = P.Ssh.available()
    pproxy_missing = P.Pproxy.available()
    rabbit_missing = P.Socketeer.rabbit_available()
    if ssh_missing:
        notes["ssh"] = ssh_missing
    else:
        peers += [P.Ssh(None), P.Ssh(P.GCM)]
    if pproxy_missing:
        notes["pproxy"] = pproxy_missing
    else:
        peers += [P.Pproxy(1), P.Pproxy(2)]
    if sealed:
        peers += [P.Socketeer("3p", True), P.Socketeer("3p", False), P.Socketeer("1p", True)]
    else:
        notes["codekey"] = (
            "socketeer.wire.seal is not in the code under test: Socketeer runs without a codekey"
        )
        peers += [P.Socketeer("3p", False), P.Socketeer("1p", False)]
    if rabbit_missing:
        notes["rabbitmq"] = rabbit_missing
    else:
        peers.append(P.Socketeer("rabbit", sealed))
    main_peer = "socketeer-3p-key" if sealed else "socketeer-3p"
    if wanted:
        peers = [p for p in peers if p.name in wanted]
    return peers, notes, main_peer


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="small sizes, one round (about 1-2 minutes)"
    )
    ap.add_argument("--repeats", type=int, help="rounds (default 3, --quick 1)")
    ap.add_argument("--peers", help="comma-separated peer names to run (default: all)")
    ap.add_argument(
        "--scenarios", help="comma-separated: idle,connect,rtt,bulk_up,bulk_down,parallel,many"
    )
    ap.add_argument(
        "--code",
        default="tree",
        help="what to benchmark: 'tree' (this checkout's files, default), a git revision, "
        "or a directory with socketeer/ and twisted/plugins/ (e.g. a patched copy)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="directory for benchmarks.rst/.png/.json (default: docs/ for a full "
        "run, a temporary directory for --quick)",
    )
    ap.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the py-spy profile of the three-process bulk case",
    )
    ap.add_argument(
        "--profile-only",
        action="store_true",
        help="only profile the main Socketeer configuration with py-spy (no rounds)",
    )
    ap.add_argument(
        "--profile-scenario",
        choices=("bulk", "connect"),
        default="bulk",
        help="what --profile-only profiles (default: bulk upload + download)",
    )
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=CODE",
        help="also run the main Socketeer configuration with other code (a git revision or a "
        "directory, as for --code), side by side in the same run, e.g. before=HEAD~1",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=N",
        help="override one size or count (keys: " + ", ".join(FULL) + "), e.g. bulk=67108864",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory and logs")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    twistd = Path(sys.executable).with_name("twistd")
    if importlib.util.find_spec("twisted") is None or not twistd.exists():
        raise SystemExit(
            f"{sys.executable} has no Twisted/twistd: run the benchmark with the Python that "
            "Socketeer is installed in (pip install -e '.[bench]')"
        )
    sizes = dict(QUICK if args.quick else FULL)
    if args.repeats:
        sizes["repeats"] = args.repeats
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in sizes:
            raise SystemExit(f"--set: unknown key {key!r}; known: {', '.join(sizes)}")
        sizes[key] = int(value)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < sizes["many"] + 1000:
        sizes["many"] = max(100, hard - 1000)
    workdir = Path(tempfile.mkdtemp(prefix="socketeer-bench-"))
    if args.out:
        outdir = args.out
    elif args.quick or args.profile_only:  # never overwrite the committed figures
        outdir = Path(tempfile.mkdtemp(prefix="socketeer-bench-quick-"))
    else:
        outdir = ROOT / "docs"
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    target_proc = None
    trials: list[dict] = []
    interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        code, code_info = snapshot_code(workdir, args.code)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        target_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.target"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
            start_new_session=True,
        )
        target = json.loads(target_proc.stdout.readline())
        ctx = P.Context(workdir=workdir, target=target, code=code)
        wanted = args.peers.split(",") if args.peers else None
        peers, notes, main_peer = choose_peers(code, wanted)
        for item in args.compare:  # the main configuration again, with other code
            variant, _, where = item.partition("=")
            other, other_info = snapshot_code(workdir / f"compare-{variant}", where)
            main = next(p for p in choose_peers(code, None)[0] if p.name == main_peer)
            assert isinstance(main, P.Socketeer)
            peers.append(P.Socketeer(main.layout, main.codekey, other, variant))
            code_info.setdefault("compare", {})[variant] = other_info
        only = set(args.scenarios.split(",")) if args.scenarios else None
        meta = {
            "machine": machine_facts(),
            "sizes": sizes,
            "code": code_info,
            "notes": notes,
            "main_peer": main_peer,
            "reference": REFERENCE,
            "quick": args.quick,
            "peers": {p.name: p.label for p in peers},
        }
        log(f"benchmarking {code_info} with {[p.name for p in peers]} in {workdir}")
        for note in notes.values():
            log(f"note: {note}")
        if args.profile_only:
            main = next(p for p in peers if p.name == main_peer)
            assert isinstance(main, P.Socketeer)
            log(f"profiling {main_peer} ({args.profile_scenario}) with py-spy")
            prof = profile(ctx, main, sizes, workdir, args.profile_scenario)
            (outdir / "profile.json").write_text(json.dumps(prof, indent=1) + "\n")
            from bench.report import render_profile

            print(render_profile(prof))
            log(f"raw py-spy stacks in {workdir} (kept with --keep), summary {outdir}")
            return 0
        for rnd in range(sizes["repeats"]):
            shift = rnd % len(peers)
            order = peers[shift:] + peers[:shift]
            log(f"round {rnd + 1}/{sizes['repeats']}")
            for peer in order:
                measure_peer(ctx, peer, sizes, main_peer, rnd, trials, only)
                meta.setdefault("peer_info", {}).setdefault(peer.name, {}).update(peer.info)
        prof = None
        if not args.quick and not args.no_profile and any(p.name == main_peer for p in peers):
            log("profiling the three-process Socketeer bulk case with py-spy")
            main = next(p for p in peers if p.name == main_peer)
            assert isinstance(main, P.Socketeer)
            prof = profile(ctx, P.Socketeer(main.layout, main.codekey), sizes, workdir)
        meta["seconds"] = time.monotonic() - started
        try:
            meta["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        except OSError:
            pass
        results = {"meta": meta, "trials": trials, "profile": prof}
        # Next to the report, except for the committed one: docs/ holds only .rst and .png.
        raw = (
            RESULTS if outdir.resolve() == (ROOT / "docs").resolve() else outdir / "benchmarks.json"
        )
        meta["raw"] = str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw)
        raw.write_text(json.dumps(results, indent=1) + "\n")
        from bench.report import write_report

        rst, png = write_report(results, outdir)
        log(f"done in {meta['seconds'] / 60:.1f} min: {rst}, {png}")
        print(Path(rst).read_text())
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: tearing down")
    finally:
        if target_proc is not None:
            P.end([P.Proc("target", target_proc, workdir / "target.log")])
        if args.keep or interrupted:
            log(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
