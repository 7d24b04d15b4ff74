"""From a run's raw results to docs/benchmarks.rst (tables, targets) and benchmarks.png.

``python -m bench.report RESULTS.json [OUTDIR]`` redoes the report of a saved run. The text
after the generated part comes from bench/notes.rst (hand-written analysis), if present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import fmt_num, fmt_ratio, median, meets, ratio

NOTES = Path(__file__).with_name("notes.rst")

# key, scenario, how to read the figure from a trial, unit, higher is better, title
METRICS = [
    ("bulk_up", "bulk_up", lambda r: r["mibps"], "MiB/s", True, "bulk upload"),
    ("bulk_down", "bulk_down", lambda r: r["mibps"], "MiB/s", True, "bulk download"),
    ("parallel", "parallel", lambda r: r["mibps"], "MiB/s", True, "parallel streams"),
    ("connect_p50", "connect", lambda r: r["p50_ms"], "ms", False, "connect p50"),
    ("connect_p99", "connect", lambda r: r["p99_ms"], "ms", False, "connect p99"),
    ("rtt_p50", "rtt", lambda r: r["p50_ms"] * 1000, "µs", False, "RTT p50"),
    ("rtt_p99", "rtt", lambda r: r["p99_ms"] * 1000, "µs", False, "RTT p99"),
    ("idle_rss", "idle", lambda r: r["held"]["mem"]["rss_mib"], "MiB", False, "RSS, idle streams"),
    ("idle_pss", "idle", lambda r: r["held"]["mem"]["pss_mib"], "MiB", False, "idle streams: PSS"),
    ("idle_base", "idle", lambda r: r["mem_before"]["rss_mib"], "MiB", False, "RSS before opening"),
    ("idle_open", "idle", lambda r: r["open_s"], "s", False, "time to open all"),
    ("many_open", "many", lambda r: r["open_s"], "s", False, "time to open all"),
    ("many_rss", "many", lambda r: r["held"]["mem"]["rss_mib"], "MiB", False, "RSS held"),
    ("hwm_end", "end", lambda r: r["mem"]["hwm_mib"], "MiB", False, "peak RSS (all runs)"),
]
METRIC = {m[0]: m for m in METRICS}


def values(trials: list[dict], peer: str, key: str) -> list[float]:
    _, scenario, get, *_ = METRIC[key]
    out = []
    for t in trials:
        if t["peer"] != peer or t["scenario"] != scenario or "error" in t:
            continue
        if scenario in ("idle", "many") and not t.get("ok"):
            continue  # a hold whose streams did not all verify has no valid figure
        try:
            out.append(get(t))
        except (KeyError, TypeError):
            continue
    return out


def errors(trials: list[dict], peer: str, scenario: str) -> list[str]:
    out = []
    for t in trials:
        if t["peer"] == peer and t["scenario"] == scenario:
            if "error" in t:
                out.append(t["error"])
            elif scenario in ("idle", "many") and not t.get("ok"):
                out.append(
                    f"{t.get('verified')}/{t.get('streams')} verified, errors {t.get('errors')}"
                )
    return out


def aggregate(results: dict) -> dict:
    """peer -> metric -> {"median", "values", "ratio"} (ratio to the reference peer)."""
    trials = results["trials"]
    ref = results["meta"]["reference"]
    out: dict = {}
    for peer in results["meta"]["peers"]:
        out[peer] = {}
        for key in METRIC:
            vals = values(trials, peer, key)
            out[peer][key] = {"values": vals, "median": median(vals)}
    for peer in out:
        for key in METRIC:
            refm = out.get(ref, {}).get(key, {}).get("median")
            out[peer][key]["ratio"] = ratio(out[peer][key]["median"], refm)
    return out


def targets(results: dict, agg: dict) -> list[dict]:
    main = results["meta"]["main_peer"]
    rabbit = next((p for p in results["meta"]["peers"] if "rabbit" in p), None)
    trials = results["trials"]
    m = agg.get(main, {})
    rows = []

    def add(what: str, peer: str | None, key: str, op: str, bound: float) -> None:
        r = agg.get(peer, {}).get(key, {}).get("ratio") if peer else None
        rows.append(
            {"target": what, "peer": peer, "figure": fmt_ratio(r), "met": meets(r, op, bound)}
        )

    add("bulk upload >= 1.0x ssh -D", main, "bulk_up", ">=", 1.0)
    add("bulk download >= 1.0x ssh -D", main, "bulk_down", ">=", 1.0)
    add("parallel streams >= 1.0x ssh -D", main, "parallel", ">=", 1.0)
    add("connect latency p50 <= 1.5x ssh -D", main, "connect_p50", "<=", 1.5)
    add("RTT p50 <= 1.5x ssh -D", main, "rtt_p50", "<=", 1.5)
    add("1000 idle streams: total RSS <= 1.0x ssh -D", main, "idle_rss", "<=", 1.0)
    many = [t for t in trials if t["peer"] == main and t["scenario"] == "many"]
    n = results["meta"]["sizes"]["many"]
    good = sum(1 for t in many if t.get("ok"))
    rows.append(
        {
            "target": f"{n:,} concurrent streams held without error",
            "peer": main,
            "figure": f"{good}/{len(many)} rounds"
            + (
                ""
                if not many
                else ", "
                + "; ".join(f"{t.get('verified', 0)}/{t.get('streams', n)} verified" for t in many)
            ),
            "met": (good == len(many)) if many else None,
        }
    )
    add("through RabbitMQ: bulk upload >= 0.5x ssh -D", rabbit, "bulk_up", ">=", 0.5)
    add("through RabbitMQ: bulk download >= 0.5x ssh -D", rabbit, "bulk_down", ">=", 0.5)
    del m
    return rows


# -- reStructuredText ------------------------------------------------------------------------


def list_table(title: str, header: list[str], rows: list[list[str]], widths=None) -> str:
    lines = [f".. list-table:: {title}", "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {' '.join(str(w) for w in widths)}")
    lines.append("")
    for row in [header] + rows:
        lines.append(f"   * - {row[0]}")
        for cell in row[1:]:
            lines.append(f"     - {cell}")
    return "\n".join(lines) + "\n"


def cell(agg: dict, peer: str, key: str, digits: int = 3, with_ratio: bool = True) -> str:
    entry = agg[peer][key]
    if entry["median"] is None:
        return "**failed**"
    text = fmt_num(entry["median"], digits)
    if with_ratio and entry["ratio"] is not None:
        text += f" ({fmt_ratio(entry['ratio'])})"
    return text


def render(results: dict) -> str:
    meta = results["meta"]
    agg = aggregate(results)
    sizes = meta["sizes"]
    peers = meta["peers"]
    main = meta["main_peer"]
    machine = meta["machine"]
    code = meta["code"]
    date = machine["date"]
    out = []
    title = "Benchmarks"
    out += [title, "=" * len(title), ""]
    out.append(
        f"Measured on {date[:10]} by ``python -m bench{' --quick' if meta.get('quick') else ''}``"
        f" in {meta.get('seconds', 0) / 60:.1f} minutes (everything on one machine, over "
        "loopback). **Every ratio is to ssh -D with aes128-gcm from the same run** (this "
        "machine is shared and noisy: compare nothing across runs). Figures are medians over "
        f"{sizes['repeats']} round(s); each round starts every tunnel afresh. The main "
        f"Socketeer configuration is ``{main}`` ({peers.get(main, '')}).\n"
    )
    if "codekey" not in (meta.get("notes") or {}):
        out.append(
            "Sealed messages are in the code under test (``socketeer.wire.seal``): the *codekey* "
            "configurations seal every message with AES-256-GCM (``codekey=`` in the "
            "channel URL).\n"
        )
    out.append(".. image:: benchmarks.png\n   :alt: ratios to ssh -D aes128-gcm\n")
    if meta.get("notes"):
        out.append("Left out or changed in this run:\n")
        for note in meta["notes"].values():
            out.append(f"* {note}")
        out.append("")

    # targets first: what the issue asks
    out.append("Targets\n-------\n")
    rows = []
    for t in targets(results, agg):
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        rows.append([t["target"], t["figure"], met])
    out.append(
        list_table(
            f"Targets for {main} (ratios to ssh -D aes128-gcm, same run)",
            ["target", "figure", "result"],
            rows,
            [60, 25, 15],
        )
    )

    out.append("Throughput\n----------\n")
    rows = [
        [peers[p], cell(agg, p, "bulk_up"), cell(agg, p, "bulk_down"), cell(agg, p, "parallel")]
        for p in peers
    ]
    out.append(
        list_table(
            "MiB/s (ratio to ssh -D aes128-gcm); higher is better",
            [
                "tunnel",
                f"bulk upload, {sizes['bulk'] >> 20} MiB",
                f"bulk download, {sizes['bulk'] >> 20} MiB",
                f"{sizes['parallel_streams']} parallel streams"
                f" x {sizes['parallel_size'] >> 20} MiB",
            ],
            rows,
            [34, 22, 22, 22],
        )
    )

    out.append("Latency\n-------\n")
    rows = [
        [
            peers[p],
            cell(agg, p, "connect_p50"),
            cell(agg, p, "connect_p99"),
            cell(agg, p, "rtt_p50"),
            cell(agg, p, "rtt_p99"),
        ]
        for p in peers
    ]
    out.append(
        list_table(
            "lower is better (ratio to ssh -D aes128-gcm)",
            [
                "tunnel",
                "connect p50, ms",
                "connect p99, ms",
                f"RTT p50, µs ({sizes['rtt_size']} B)",
                f"RTT p99, µs ({sizes['rtt_size']} B)",
            ],
            rows,
            [32, 17, 17, 17, 17],
        )
    )
    out.append(
        f"Connect: {sizes['connects']} sequential connections, each TCP connect + SOCKS5 "
        "handshake + one byte echoed by the target + close, timed to the echoed byte. "
        f"RTT: {sizes['rtts']} ping-pongs of {sizes['rtt_size']} bytes on one open stream.\n"
    )

    out.append("Memory\n------\n")
    rows = []
    for p in peers:
        if p == "direct":
            continue
        rows.append(
            [
                peers[p],
                cell(agg, p, "idle_base", with_ratio=False),
                cell(agg, p, "idle_rss"),
                cell(agg, p, "idle_pss"),
                cell(agg, p, "idle_open", with_ratio=False),
                cell(agg, p, "hwm_end", with_ratio=False),
            ]
        )
    out.append(
        list_table(
            f"{sizes['idle']:,} idle streams held open, then all verified; the tunnel's own "
            "processes only (lower is better)",
            [
                "tunnel",
                "RSS before, MiB",
                f"RSS with {sizes['idle']:,} streams, MiB",
                "PSS, MiB",
                "time to open all, s",
                "peak RSS over the round, MiB",
            ],
            rows,
            [30, 14, 16, 14, 12, 14],
        )
    )
    out.append(
        "RSS sums every process of the tunnel (ssh: the ssh client and the sshd listener and "
        "session processes; Socketeer: its twistd processes; RabbitMQ itself is not counted). "
        "PSS shares the pages that processes have in common (libraries) among them.\n"
    )

    many = [t for t in results["trials"] if t["peer"] == main and t["scenario"] == "many"]
    out.append("Many streams\n------------\n")
    if many:
        rows = []
        for t in many:
            mem = t.get("held", {}).get("mem", {})
            rows.append(
                [
                    str(t["round"] + 1),
                    f"{t.get('opened', 0):,}",
                    f"{t.get('verified', 0):,}",
                    fmt_num(t.get("open_s")),
                    fmt_num(t.get("verify_s")),
                    fmt_num(mem.get("rss_mib")),
                    t.get("error") or (json.dumps(t["errors"]) if t.get("errors") else "-"),
                ]
            )
        out.append(
            list_table(
                f"{sizes['many']:,} concurrent streams through {main}",
                ["round", "opened", "verified", "open s", "verify s", "RSS MiB", "errors"],
                rows,
            )
        )
    else:
        out.append("Not run.\n")

    failures = []
    for p in peers:
        for scenario in (
            "start",
            "idle",
            "connect",
            "rtt",
            "bulk_up",
            "bulk_down",
            "parallel",
            "many",
            "alive",
        ):
            for e in errors(results["trials"], p, scenario):
                failures.append(f"* {p} {scenario}: ``{e[:300]}``")
    if failures:
        out.append("Failures\n--------\n")
        out += failures
        out.append("")

    prof = results.get("profile")
    if prof and prof.get("processes"):
        out.append("Profile\n-------\n")
        out.append(render_profile(prof))

    out.append("The run\n-------\n")
    uncommitted = code.get("uncommitted") or []
    loads = [t["load"] for t in results["trials"] if t.get("load") is not None]
    load_text = (
        f" 1-minute load average during the scenarios: median {median(loads):.1f}, "
        f"max {max(loads):.1f} (2 means both cores busy; the benchmark itself accounts for "
        "about 1-2)."
        if loads
        else ""
    )
    facts = [
        f"* Date: {date}; duration {meta.get('seconds', 0) / 60:.1f} min; "
        f"load average at start {' '.join(machine.get('loadavg_start', []))}, at end "
        f"{' '.join(machine.get('loadavg_end', []))}.{load_text}",
        f"* Machine: {machine.get('cpu', '?')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, Linux {machine.get('kernel')}, Python "
        f"{machine.get('python')}.",
        "* Versions: "
        + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
        + ".",
        f"* Code under test: {code.get('source')} at {code.get('head')}"
        + (
            f", with uncommitted changes in {', '.join(uncommitted)}"
            if uncommitted
            else (" (no uncommitted changes in socketeer/)" if code.get("source") == "tree" else "")
        )
        + ".",
        f"* Sizes: {json.dumps(sizes)}.",
    ]
    for peer, info in (meta.get("peer_info") or {}).items():
        if info:
            facts.append(f"* {peer}: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".")
    out += facts
    out.append("")
    out.append(
        "The client (bench/client.py, asyncio, one process per scenario) is the same for "
        "every tunnel and speaks SOCKS5 to all but direct TCP; the targets (echo, upload "
        "with checksum, download; bench/target.py) run in one more process. Every transfer "
        "is checked by length and CRC-32 and every echo byte-for-byte; a failed check is a "
        "failure above, never a figure. Reproduce with ``python -m bench`` (about 10-15 "
        "minutes) or ``python -m bench --quick`` (1-2 minutes; writes to a temporary "
        f"directory). Raw figures of this run: {meta.get('raw', 'benchmarks.json')} "
        "(``python -m bench.report FILE OUTDIR`` renders them again).\n"
    )
    if NOTES.exists():
        out.append(NOTES.read_text())
    return "\n".join(out)


def render_profile(prof: dict) -> str:
    """The py-spy summary of each process, as reStructuredText."""
    if prof.get("error"):
        return f"Not profiled: {prof['error']}\n"
    what = {"bulk": "one bulk upload and one bulk download", "connect": "the connect scenario"}
    figures = ", ".join(
        f"{k} {brief_figure(prof[k])}" for k in ("bulk_up", "bulk_down", "connect") if k in prof
    )
    out = [
        f"py-spy (100 Hz, by function, idle samples included) on the main thread of each "
        f"process of ``{prof['peer']}`` while it relayed "
        f"{what.get(prof.get('scenario', 'bulk'))} ({fmt_num(prof.get('seconds'))} s; under "
        f"the profiler: {figures}). *busy* is the share of the samples that were not "
        "waiting in the reactor's poll; the shares below are of the busy samples.\n"
    ]
    for role, s in prof["processes"].items():
        out.append(
            f"``{role}``: busy {s.get('busy', 0):.0%}. By package (self time): "
            + ", ".join(f"{k} {v:.0%}" for k, v in s["packages"])
            + ". By area (inclusive): "
            + (", ".join(f"{k} {v:.0%}" for k, v in s.get("areas", [])) or "-")
            + ".\n"
        )
        rows = [[f"``{name}``", f"{share:.1%}"] for name, share in s["self"][:12]]
        out.append(
            list_table(
                f"{role}: top functions by self time",
                ["function", "share of busy samples"],
                rows,
                [80, 20],
            )
        )
        rows = [[f"``{name}``", f"{share:.1%}"] for name, share in s["inclusive"][:12]]
        out.append(
            list_table(
                f"{role}: Socketeer, STOMP and logging functions by inclusive time",
                ["function", "share of busy samples"],
                rows,
                [80, 20],
            )
        )
    return "\n".join(out)


def brief_figure(r: dict) -> str:
    if "error" in r:
        return "failed"
    if "mibps" in r:
        return f"{fmt_num(r['mibps'])} MiB/s"
    if "p50_ms" in r:
        return f"p50 {fmt_num(r['p50_ms'])} ms"
    return "-"


# -- the plot --------------------------------------------------------------------------------


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    agg = aggregate(results)
    meta = results["meta"]
    peers = [p for p in meta["peers"] if p != "direct"]
    groups = [
        ("throughput (higher is better)", ["bulk_up", "bulk_down", "parallel"], 1.0),
        ("latency p50 (lower is better)", ["connect_p50", "rtt_p50"], 1.5),
        ("memory (lower is better)", ["idle_rss"], 1.0),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 2, 1.4]})
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(peers))
    for ax, (title, keys, bound) in zip(axes, groups, strict=True):
        for i, peer in enumerate(peers):
            ys = [agg[peer][k]["ratio"] or 0 for k in keys]
            xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(keys))]
            bars = ax.bar(
                xs,
                ys,
                width,
                label=meta["peers"][peer],
                color=colors(i % 10),
                edgecolor="black" if peer == meta["main_peer"] else None,
                linewidth=1.5 if peer == meta["main_peer"] else 0,
            )
            for b, y in zip(bars, ys, strict=True):
                if y:
                    ax.annotate(
                        f"{y:.2f}",
                        (b.get_x() + b.get_width() / 2, y),
                        ha="center",
                        va="bottom",
                        fontsize=6,
                        rotation=90,
                    )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(bound, color="red", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([METRIC[k][5] for k in keys])
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if lo <= t <= hi]
        ax.set_yticks(ticks)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("ratio to ssh -D aes128-gcm (same run); red dashes: target")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"Socketeer benchmark, {meta['machine']['date'][:10]}: ratios to ssh -D "
        f"aes128-gcm (main configuration outlined: {meta['main_peer']})",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict, outdir: Path) -> tuple[Path, Path | None]:
    rst = outdir / "benchmarks.rst"
    rst.write_text(render(results))
    png = plot(results, outdir / "benchmarks.png")
    return rst, png


def main(argv=None) -> None:
    argv = argv if argv is not None else sys.argv[1:]
    path = Path(argv[0])
    outdir = Path(argv[1]) if len(argv) > 1 else path.parent
    results = json.loads(path.read_text())
    print(*write_report(results, outdir))


if __name__ == "__main__":
    main()
