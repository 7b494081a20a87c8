#!/usr/bin/env python3
"""Parsing and the table of integration-tests/bench/run.sh.

  report.py iperf-tcp FILE      -> "<received bits/s> <received bytes>"
  report.py iperf-udp FILE      -> "<datagrams delivered per second>"
  report.py ping FILE           -> "<median ms> <p99 ms> <received of sent>"
  report.py median X...         -> median
  report.py table RESULTS OUT.md [machine description]
"""
import json
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def iperf_tcp(path):
    s = load(path).get("end", {}).get("sum_received", {})
    print(f"{s.get('bits_per_second', 0):.0f} {int(s.get('bytes', 0))}")


def iperf_udp(path):
    s = load(path).get("end", {}).get("sum", {})
    secs = s.get("seconds") or 0
    got = (s.get("packets") or 0) - (s.get("lost_packets") or 0)
    print(f"{got / secs:.0f}" if secs else "0")


def ping(path):
    rtts = []
    sent = recv = 0
    with open(path) as f:
        for line in f:
            if "time=" in line and "bytes from" in line:
                rtts.append(float(line.split("time=")[1].split()[0]))
            if "packets transmitted" in line:
                parts = line.split(",")
                sent = int(parts[0].split()[0])
                recv = int(parts[1].split()[0])
    if not rtts:
        print("nan nan 0/0")
        return
    rtts.sort()
    p99 = rtts[min(len(rtts) - 1, int(round(0.99 * len(rtts))) - 1)]
    print(f"{statistics.median(rtts):.3f} {p99:.3f} {recv}/{sent}")


# Rows of the table, in order, and their labels.
SYSTEMS = [
    ("raw", "raw underlay (veth)"),
    ("metalvpc", "metalvpc chacha20-poly1305"),
    ("metalvpc-aes", "metalvpc aes-256-gcm"),
    ("metalvpc-relay", "metalvpc relayed (supernode)"),
    ("metalvpc-plain", "metalvpc without offloads/batching"),
    ("boringtun", "boringtun-cli"),
    ("wireguard-go", "wireguard-go"),
    ("nebula", "nebula (aes)"),
    ("tinc", "tinc (switch mode)"),
    ("n2n", "n2n (Debian, v1)"),
]
PEERS = ["boringtun", "wireguard-go", "nebula", "tinc", "n2n"]


def extrapolate(mv):
    """When fewer than 1,000 peers registered in the time allowed: the per-peer slope and
    the figure it gives for 1,000 (clearly labelled as such)."""
    try:
        n, idle, rss = int(mv["peers_known"]), float(mv["rss_idle"]), float(mv["rss_1000_peers"])
    except (KeyError, ValueError):
        return ""
    if n >= 1000 or n < 50:
        return ""
    per = (rss - idle) / n
    return (f" [only {n} of 1,000 fake members registered in time; at the measured "
            f"{per * 1024:.1f} KB per peer, 1,000 peers would be about {idle + per * 1000:.1f} MB]")


def table(results, out, machine):
    data = {}
    with open(results) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                data.setdefault(parts[0], {})[parts[1]] = parts[2]

    def num(sys_, key, idx=0):
        try:
            return float(data[sys_][key].split()[idx])
        except (KeyError, IndexError, ValueError):
            return None

    def gbit(sys_, key):
        v = num(sys_, key)
        return None if v is None else v / 1e9

    def cpu_per_gb(sys_):
        secs = bytes_ = 0.0
        for k in ("cpu_tcp1", "cpu_tcp4"):
            if num(sys_, k) is not None:
                secs += num(sys_, k, 0)
                bytes_ += num(sys_, k, 1)
        return secs / (bytes_ / 1e9) if bytes_ > 0 else None

    raw_ping = num("raw", "ping")

    def overhead(sys_):
        p = num(sys_, "ping")
        return None if p is None or raw_ping is None else (p - raw_ping) * 1000

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    rows = []
    head = ("| system | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B kpps | "
            "ping median ms | ping p99 ms | overhead over raw µs | CPU s/GB | peak RSS MB (each daemon) |")
    rows.append(head)
    rows.append("|" + "---|" * 9)
    present = [(s, l) for s, l in SYSTEMS if s in data and "tcp1" in data[s]]
    for s, label in present:
        pps = num(s, "udp64_pps")
        rows.append(
            f"| {label} | {fmt(gbit(s, 'tcp1'), '.2f')} | {fmt(gbit(s, 'tcp4'), '.2f')} | "
            f"{fmt(None if pps is None else pps / 1e3, '.0f')} | {fmt(num(s, 'ping'), '.3f')} | "
            f"{fmt(num(s, 'ping', 1), '.3f')} | {fmt(overhead(s) if s != 'raw' else None, '.0f')} | "
            f"{fmt(cpu_per_gb(s) if s != 'raw' else None, '.1f')} | "
            f"{data[s].get('hwm_mb', '–') if s != 'raw' else '–'} |"
        )

    def ratio(a, b, invert=False):
        if a is None or b is None or a == 0 or b == 0:
            return "–"
        return f"{(b / a if invert else a / b):.2f}x"

    rows.append("")
    rows.append("metalvpc (chacha20-poly1305, direct) against each peer: throughput and packet rate as "
                "metalvpc / peer (higher is better for metalvpc); latency overhead and CPU per GB as "
                "metalvpc / peer (lower is better).")
    rows.append("")
    rows.append("| peer | TCP 1 | TCP 4 | UDP 64 B pps | latency overhead | CPU s/GB |")
    rows.append("|---|---|---|---|---|---|")
    m = "metalvpc"
    for p in PEERS:
        if p not in data or m not in data:
            continue
        rows.append(
            f"| {p} | {ratio(gbit(m, 'tcp1'), gbit(p, 'tcp1'))} | {ratio(gbit(m, 'tcp4'), gbit(p, 'tcp4'))} | "
            f"{ratio(num(m, 'udp64_pps'), num(p, 'udp64_pps'))} | {ratio(overhead(m), overhead(p))} | "
            f"{ratio(cpu_per_gb(m), cpu_per_gb(p))} |"
        )
    # The issue's targets, against the best peer of each figure in this run.
    peers = [p for p in PEERS if p in data and "tcp1" in data[p]]
    if peers:
        def best(f, pick):
            vals = [(f(p), p) for p in peers if f(p) is not None]
            return pick(vals) if vals else (None, None)
        t1 = best(lambda p: gbit(p, "tcp1"), max)
        t4 = best(lambda p: gbit(p, "tcp4"), max)
        lat = best(overhead, min)
        cpu = best(cpu_per_gb, min)
        rows.append("")
        rows.append("Targets against the best peer of each figure in this run:")
        rows.append("")
        rows.append("| metalvpc | TCP 1 ≥ 4x best | TCP 4 ≥ 4x best | latency overhead ≤ best | CPU s/GB ≤ 0.25x best |")
        rows.append("|---|---|---|---|---|")

        def verdict(r, ok):
            return "–" if r is None else f"{r:.2f}x ({'met' if ok(r) else 'missed'})"
        for m in ("metalvpc", "metalvpc-aes"):
            if m not in data or "tcp1" not in data[m]:
                continue
            def rr(a, b):
                return None if a is None or b in (None, 0) else a / b
            r1 = rr(gbit(m, "tcp1"), t1[0])
            r4 = rr(gbit(m, "tcp4"), t4[0])
            rl = rr(overhead(m), lat[0])
            rc = rr(cpu_per_gb(m), cpu[0])
            rows.append(
                f"| {m} | {verdict(r1, lambda r: r >= 4)} vs {t1[1]} | {verdict(r4, lambda r: r >= 4)} vs {t4[1]} | "
                f"{verdict(rl, lambda r: r <= 1)} vs {lat[1]} | {verdict(rc, lambda r: r <= 0.25)} vs {cpu[1]} |")

    mv = data.get("metalvpc", {})
    if "rss_idle" in mv:
        rows.append("")
        rows.append(
            f"metalvpc edge memory (VmRSS): idle {mv['rss_idle']} MB (target < 20); "
            f"with {mv.get('peers_known', '?')} peers known {mv.get('rss_1000_peers', '–')} MB, "
            f"peak {mv.get('hwm_1000_peers', '–')} MB (target < 64 with 1,000)"
            + (f", all known {mv['peers_secs']} s after the fake members started, "
               f"supernode CPU {mv.get('sn_cpu_secs', '–')} s" if "peers_secs" in mv else "")
            + extrapolate(mv) + f"; after the transfers {mv.get('rss_after_load_edge_a', '–')} MB.")
    text = "\n".join(rows) + "\n"
    if machine:
        text = machine + "\n\n" + text
    with open(out, "w") as f:
        f.write(text)
    print(text)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "iperf-tcp":
        iperf_tcp(args[0])
    elif cmd == "iperf-udp":
        iperf_udp(args[0])
    elif cmd == "ping":
        ping(args[0])
    elif cmd == "median":
        vals = [float(x) for x in args if x]
        print(f"{statistics.median(vals):.0f}" if vals else "0")
    elif cmd == "table":
        table(args[0], args[1], " ".join(args[2:]))
    else:
        sys.exit(f"report.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
