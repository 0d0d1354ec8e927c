#!/usr/bin/env python3
"""Summarise scripts/bench results: medians per scenario and server, ratios against the peers,
the issue's targets, and an SVG chart of delivered msgs/s against subscriber count.

    bench_report.py results.jsonl [--env env.json] [--md report.md] [--svg fanout.svg]
    bench_report.py --one '<json result of one run>'     (one progress line)
    bench_report.py --wrk '<wrk --latency output>'       (wrk's run as a result line)

Standard library only, so it runs on a fresh machine.
"""
import argparse
import json
import math
import statistics
import sys
from collections import defaultdict

GATEWAYS = ("gateway", "gateway-stomp", "gateway-relay", "gateway-proxy", "gateway-proxy-node", "gateway-app")
METRICS = [
    # key, header, format
    ("msgs_per_s", "msgs/s", "{:,.0f}"),
    ("rss_per_session", "RSS/session B", "{:,.0f}"),
    ("establish_s", "establish s", "{:.2f}"),
    ("p50_us", "p50 us", "{:,.0f}"),
    ("p99_us", "p99 us", "{:,.0f}"),
    ("p999_us", "p999 us", "{:,.0f}"),
    ("server_cpu_us_per_msg", "srv CPU us/msg", "{:.2f}"),
    ("server_cpu_cores", "srv cores", "{:.2f}"),
    ("client_cpu_cores", "gen cores", "{:.2f}"),
    ("machine_busy_cores", "machine cores", "{:.2f}"),
    ("lost", "lost", "{:,.0f}"),
    ("broker_connections", "broker conns", "{:,.0f}"),
]


def fmt(key, v):
    if v is None:
        return "–"
    for k, _, f in METRICS:
        if k == key:
            return f.format(v)
    return str(v)


def one(js):
    d = json.loads(js)
    if "error" in d and not d.get("ok"):
        return "ERROR " + str(d["error"])
    s = d.get("scenario", "?")
    parts = [f"ok {d.get('ok', 0)}/{d.get('clients', 0)}"]
    if s == "idle":
        if "rss_per_session" in d:
            parts.append(f"{d['rss_per_session']:,.0f} B/session")
        parts.append(f"established in {d.get('establish_s', 0):.2f}s")
    else:
        parts.append(f"{d.get('msgs_per_s', 0):,.0f} msgs/s")
        parts.append(f"p50 {d.get('p50_us', 0):,.0f}us p99 {d.get('p99_us', 0):,.0f}us")
        if "server_cpu_us_per_msg" in d:
            parts.append(f"server {d['server_cpu_us_per_msg']:.2f} CPU-us/msg")
        if "lost" in d:
            parts.append(f"lost {d['lost']}")
        if s == "contention":
            ops = " ".join(f"{op} {d.get(op + '_p99_us', 0):,.0f}"
                           for op in ("subscribe", "send", "ack", "unsubscribe"))
            parts.append(f"probe p99 us: {ops}; max {d.get('max_us', 0):,.0f}us; "
                         f"{d.get('published', 0)} publishes")
    if d.get("error"):
        parts.append("error: " + str(d["error"]))
    return ", ".join(parts)


def wrk_result(text):
    """wrk --latency output as a result: requests/s, count, p50/p99 (wrk -c100: 100 clients)."""
    def us(value):
        num = float(value.rstrip("usmn"))
        unit = value[len(value.rstrip("usmn")):]
        return num * {"us": 1, "ms": 1e3, "s": 1e6}.get(unit, 1)
    d = {"scenario": "wrk", "label": "wrk", "clients": 100, "ok": 0}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            d["msgs_per_s"] = float(parts[1])
        elif "requests in" in line:
            d["msgs"] = int(parts[0])
            d["ok"] = 100
        elif parts[:1] == ["50%"]:
            d["p50_us"] = us(parts[1])
        elif parts[:1] == ["99%"]:
            d["p99_us"] = us(parts[1])
        elif "Socket errors" in line or "Non-2xx" in line:
            d["error"] = line.strip()
    if "msgs_per_s" not in d:
        d["error"] = "wrk printed no Requests/sec: " + text.strip()[-200:]
    return d


def load(paths):
    """Results per (scenario, server); a later file replaces a pair's runs entirely (a rerun)."""
    runs = {}
    order = []
    for path in paths:
        mine = defaultdict(list)
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                mine[(rec["id"], rec["server"])].append(rec["result"])
        for key, rs in mine.items():
            if key not in runs:
                order.append(key)
            runs[key] = rs
    return runs, order


def valid(r):
    """A run that measured something: sessions opened and, for traffic scenarios, messages."""
    if r.get("ok", 0) <= 0:
        return False
    return r.get("scenario") == "idle" or r.get("msgs", 0) > 0


def median(results, key):
    vals = [r[key] for r in results if isinstance(r.get(key), (int, float)) and valid(r)]
    return statistics.median(vals) if vals else None


def build(runs, order):
    med = {}
    for key in order:
        rs = runs[key]
        m = {k: median(rs, k) for k, _, _ in METRICS}
        m["n"] = sum(1 for r in rs if valid(r))
        m["runs"] = len(rs)
        errs = [r.get("error") for r in rs if r.get("error")]
        m["error"] = errs[0] if errs else None
        m["ok"] = median(rs, "ok")
        m["clients"] = next((r.get("clients") for r in rs if r.get("clients")), None)
        med[key] = m
    return med


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def targets(med):
    g = lambda i, s, k: med.get((i, s), {}).get(k)  # noqa: E731
    rows = []

    def add(name, value, goal, ok, note=""):
        rows.append((name, value, goal, ok if value is not None else None, note))

    v = g("idle-ws-10k", "gateway", "rss_per_session")
    add("idle websocket RSS/session (10k)", v and f"{v/1024:.2f} KiB", "≤ 5.5 KiB",
        v is not None and v <= 5.5 * 1024,
        f"sockjs-node {g('idle-ws-10k', 'sockjs-node', 'rss_per_session') or 0:,.0f} B")
    v = g("idle-xs-1k", "gateway", "rss_per_session")
    add("idle xhr-streaming RSS/session (1k)", v and f"{v/1024:.2f} KiB", "≤ 8 KiB",
        v is not None and v <= 8 * 1024,
        f"sockjs-node {g('idle-xs-1k', 'sockjs-node', 'rss_per_session') or 0:,.0f} B")
    for i, goal, label in (("fanout-ws-1k", 15, "websocket fan-out 1k"),
                           ("fanout-ws-10k", 15, "websocket fan-out 10k"),
                           ("fanout-xs-1k", 8, "xhr-streaming fan-out 1k")):
        r = ratio(g(i, "gateway", "msgs_per_s"), g(i, "sockjs-node", "msgs_per_s"))
        add(f"{label} msgs/s vs sockjs-node", r and f"{r:.1f}×", f"≥ {goal}×", r is not None and r >= goal)
    r = ratio(g("echo-ws-100", "sockjs-node", "server_cpu_us_per_msg"),
              g("echo-ws-100", "gateway", "server_cpu_us_per_msg"))
    add("echo 100 websocket server CPU/msg", r and f"1/{r:.1f} of sockjs-node", "≤ 1/4", r is not None and r >= 4)
    r = ratio(g("echo-xp-100", "gateway", "msgs_per_s"), g("echo-xp-100", "sockjs-node", "msgs_per_s"))
    add("echo 100 xhr-polling msgs/s vs sockjs-node", r and f"{r:.1f}×", "≥ 3×", r is not None and r >= 3)
    r = ratio(g("stomp-fanout-1k", "gateway-stomp", "msgs_per_s"), g("stomp-fanout-1k", "rabbitmq", "msgs_per_s"))
    add("STOMP /topic fan-out 1k raw WS vs RabbitMQ", r and f"{r:.1f}×", "≥ 3×", r is not None and r >= 3,
        "" if r is not None else "gateway STOMP not available")
    a = g("idle-stomp-1k", "gateway-stomp", "rss_per_session")
    b = g("idle-stomp-1k", "rabbitmq", "rss_per_session")
    r = ratio(b, a)
    add("idle STOMP-over-WS memory vs RabbitMQ", r and f"1/{r:.1f}", "≤ 1/10", r is not None and r >= 10,
        f"RabbitMQ {b/1024:.1f} KiB/conn" if b else "")
    for i, label, goal in (("proxy-echo-ws-100", "websocket, Rust upstream", 0.6),
                           ("proxy-echo-raw-100", "raw websocket, Rust upstream", None),
                           ("proxy-echo-xs-100", "xhr-streaming, Rust upstream", None),
                           ("proxy-node-echo-ws-100", "websocket, Node ws upstream", 0.6),
                           ("proxy-node-echo-xs-100", "xhr-streaming, Node ws upstream", None)):
        gw, up = ("gateway-proxy-node", "upstream-node") if "-node-" in i else ("gateway-proxy", "upstream-echo")
        r = ratio(g(i, gw, "msgs_per_s"), g(i, up, "msgs_per_s"))
        add(f"proxy echo 100 {label}: msgs/s vs the upstream directly", r and f"{r:.2f}×",
            f"≥ {goal}×" if goal else "– (report)", (r is not None and r >= goal) if goal else None)
    v = g("idle-proxy-ws-5k", "gateway-proxy", "rss_per_session")
    add("idle proxied websocket session RSS/session (gateway only)", v and f"{v/1024:.2f} KiB", "≤ 10 KiB",
        v is not None and v <= 10 * 1024)
    r = ratio(g("app-rt-100", "gateway-app", "msgs_per_s"), g("app-rt-100", "wrk", "msgs_per_s"))
    add("/app round trips 100 clients vs wrk on the same backend", r and f"{r:.2f}×", "≥ 0.7×",
        r is not None and r >= 0.7,
        f"broker-only loop {g('app-rt-100', 'gateway-broker', 'msgs_per_s') or 0:,.0f}/s")
    v = g("relay-fanout-1k", "gateway-relay", "broker_connections")
    add("relay: broker connections for 1,000 /topic subscribers", v and f"{v:,.0f}", "≤ pool_size + 1 = 5",
        v is not None and v <= 5, "Spring's relay: 1,001")
    r = ratio(g("relay-fanout-1k", "gateway-relay", "msgs_per_s"), g("relay-fanout-1k", "rabbitmq", "msgs_per_s"))
    add("relay /topic fan-out 1k vs RabbitMQ Web-STOMP", r and f"{r:.1f}×", "≥ 2×", r is not None and r >= 2)
    r = ratio(g("relay-modes-1k", "gateway-relay", "msgs_per_s"), g("relay-modes-1k", "gateway-relay-ps", "msgs_per_s"))
    add("relay /topic fan-out 1k: shared mode vs per-session mode", r and f"{r:.1f}×", "≥ 1× (one broker subscription per node)",
        r is not None and r >= 1,
        "broker connections: shared %s, per-session %s" % (
            g("relay-modes-1k", "gateway-relay", "broker_connections"),
            g("relay-modes-1k", "gateway-relay-ps", "broker_connections")))
    for carrier, label in (("sjs", "SockJS websocket"), ("raw", "raw WebSocket")):
        for n in ("1k", "10k"):
            for size, goal in (("100", 1.0), ("16k", 2.0)):
                i = f"stomp-{carrier}-{n}-{size}"
                r = ratio(g(i, "gateway-stomp", "msgs_per_s"), g(i, "baseline-stomp", "msgs_per_s"))
                add(f"STOMP /topic fan-out {n}, {size} B, {label}: vs the baseline commit",
                    r and f"{r:.2f}×", "≥ 2×" if goal > 1 else "no regression (≥ 0.95×)",
                    r is not None and r >= (goal if goal > 1 else 0.95),
                    "" if r is not None else "no baseline run (--baseline REV)")
    for i in ("contention-10k", "contention-1k"):
        v = g(i, "gateway-stomp", "p99_us")
        b = g(i, "baseline-stomp", "p99_us")
        add(f"{i}: probe p99 round trip during a fan-out", v and f"{v/1000:.2f} ms",
            "≤ 1 ms", v is not None and v <= 1000,
            f"baseline {b/1000:.2f} ms ({b/v:.1f}× slower)" if b and v else "no baseline run (--baseline REV)")
    for i in ("fanout-ws-1k", "fanout-raw-1k", "fanout-ws-10k"):
        r = ratio(g(i, "gateway", "msgs_per_s"), g(i, "ceiling", "msgs_per_s"))
        c = ratio(g(i, "ceiling", "server_cpu_us_per_msg"), g(i, "gateway", "server_cpu_us_per_msg"))
        add(f"{i}: gateway / ceiling (report only)", r and f"{r:.2f}× msgs/s" + (f", {c:.2f}× CPU efficiency" if c else ""), "–", None)
    return rows


def markdown(med, order, env):
    out = []
    if env:
        out.append("Machine: {cpu}, {cores} cores, {mem_gib} GiB, Linux {kernel}. "
                   "Versions: {rustc}; node {node}; sockjs-node {sockjs_node}; RabbitMQ {rabbitmq}. "
                   "Gateway commit {gateway_commit}; {repeats} repeats, {duration_s} s measured per run; "
                   "{date}.".format(**env))
        out.append("")
    heads = ["scenario", "server", "runs"] + [h for _, h, _ in METRICS]
    out.append("| " + " | ".join(heads) + " |")
    out.append("|" + "---|" * len(heads))
    for key in order:
        m = med[key]
        if m["n"] == 0:
            cells = [key[0], key[1], f"0/{m['runs']}", (m["error"] or "no result")[:60]] + [""] * (len(METRICS) - 1)
        else:
            cells = [key[0], key[1], f"{m['n']}/{m['runs']}"] + [fmt(k, m[k]) for k, _, _ in METRICS]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    # Ratios per scenario: gateway against each peer.
    out.append("| scenario | gateway vs | msgs/s ratio | server CPU/msg (peer ÷ gateway) | RSS/session (peer ÷ gateway) |")
    out.append("|---|---|---|---|---|")
    ids = []
    for i, _ in order:
        if i not in ids:
            ids.append(i)
    for i in ids:
        gw = next((s for s in GATEWAYS if (i, s) in med and med[(i, s)]["n"]), None)
        if not gw:
            continue
        for (j, s) in order:
            if j != i or s in GATEWAYS or not med[(j, s)]["n"]:
                continue
            a, b = med[(i, gw)], med[(j, s)]
            r1 = ratio(a["msgs_per_s"], b["msgs_per_s"])
            r2 = ratio(b["server_cpu_us_per_msg"], a["server_cpu_us_per_msg"])
            r3 = ratio(b["rss_per_session"], a["rss_per_session"])
            out.append(f"| {i} | {s} | {r1 and f'{r1:.2f}×' or '–'} | {r2 and f'{r2:.2f}×' or '–'} | {r3 and f'{r3:.2f}×' or '–'} |")
    out.append("")
    out.append("| target | measured | goal | met |")
    out.append("|---|---|---|---|")
    for name, value, goal, ok, note in targets(med):
        met = "–" if ok is None else ("yes" if ok else "**no**")
        v = value or "n/a"
        if note:
            v += f" ({note})"
        out.append(f"| {name} | {v} | {goal} | {met} |")
    return "\n".join(out) + "\n"


SERIES = [
    # label, server, scenario ids by subscriber count, colour
    ("gateway (SockJS websocket)", "gateway", {100: "fanout-ws-100", 1000: "fanout-ws-1k", 10000: "fanout-ws-10k"}, "#d62728"),
    ("sockjs-node 0.3.24 (websocket)", "sockjs-node", {100: "fanout-ws-100", 1000: "fanout-ws-1k", 10000: "fanout-ws-10k"}, "#1f77b4"),
    ("ceiling: tokio-tungstenite broadcaster (raw)", "ceiling", {100: "fanout-ws-100", 1000: "fanout-ws-1k", 10000: "fanout-ws-10k"}, "#7f7f7f"),
    ("gateway STOMP (raw WS)", "gateway-stomp", {100: "stomp-fanout-100", 1000: "stomp-fanout-1k"}, "#ff7f0e"),
    ("RabbitMQ Web-STOMP (raw WS)", "rabbitmq", {100: "stomp-fanout-100", 1000: "stomp-fanout-1k"}, "#2ca02c"),
]


def svg(med):
    W, H, L, R, T, B = 760, 460, 80, 250, 40, 60
    pts = []
    for label, server, ids, colour in SERIES:
        p = []
        for subs, i in sorted(ids.items()):
            m = med.get((i, server))
            if m and m["n"] and m["msgs_per_s"]:
                p.append((m.get("clients") or subs, m["msgs_per_s"]))
        pts.append((label, colour, p))
    ys = [y for _, _, p in pts for _, y in p] or [1e3, 1e6]
    xs = [x for _, _, p in pts for x, _ in p] or [100, 10000]
    y0 = 10 ** math.floor(math.log10(min(ys)))
    y1 = 10 ** math.ceil(math.log10(max(ys)))
    x0 = 10 ** math.floor(math.log10(min(xs)))
    x1 = 10 ** math.ceil(math.log10(max(xs)))
    if x1 == x0:
        x1 = x0 * 10
    if y1 == y0:
        y1 = y0 * 10
    pw, ph = W - L - R, H - T - B

    def px(x):
        return L + (math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0)) * pw

    def py(y):
        return T + ph - (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) * ph

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="15" font-weight="bold">Fan-out: delivered msgs/s vs subscribers (100 B, log-log, medians)</text>']
    d = y0
    while d <= y1 * 1.0001:
        y = py(d)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L+pw}" y2="{y:.1f}" stroke="#ddd"/>')
        lab = f"{d/1e6:g}M" if d >= 1e6 else (f"{d/1e3:g}k" if d >= 1e3 else f"{d:g}")
        s.append(f'<text x="{L-8}" y="{y+4:.1f}" text-anchor="end">{lab}</text>')
        d *= 10
    d = x0
    while d <= x1 * 1.0001:
        x = px(d)
        s.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T+ph}" stroke="#ddd"/>')
        s.append(f'<text x="{x:.1f}" y="{T+ph+18}" text-anchor="middle">{d:,.0f}</text>')
        d *= 10
    s.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    s.append(f'<text x="{L+pw/2}" y="{H-15}" text-anchor="middle">subscribers</text>')
    s.append(f'<text transform="translate(18,{T+ph/2}) rotate(-90)" text-anchor="middle">delivered msgs/s</text>')
    ly = T + 10
    for label, colour, p in pts:
        if p:
            path = " ".join(f"{'M' if k == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for k, (x, y) in enumerate(p))
            s.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for x, y in p:
                s.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour}"/>')
                s.append(f'<text x="{px(x)+6:.1f}" y="{py(y)-6:.1f}" font-size="10" fill="{colour}">{y/1e3:,.0f}k</text>')
        s.append(f'<rect x="{L+pw+15}" y="{ly-9}" width="12" height="12" fill="{colour}"/>')
        s.append(f'<text x="{L+pw+32}" y="{ly+1}" font-size="11">{label}{"" if p else " (n/a)"}</text>')
        ly += 22
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="*", help="results.jsonl files; later ones replace earlier pairs")
    ap.add_argument("--one")
    ap.add_argument("--wrk")
    ap.add_argument("--env")
    ap.add_argument("--md")
    ap.add_argument("--svg")
    a = ap.parse_args()
    if a.one:
        print(one(a.one))
        return
    if a.wrk is not None:
        print(json.dumps(wrk_result(a.wrk)))
        return
    runs, order = load(a.results)
    if not order:
        print("no results")
        return 1
    med = build(runs, order)
    env = json.load(open(a.env)) if a.env else None
    md = markdown(med, order, env)
    print(md)
    if a.md:
        open(a.md, "w").write(md)
    if a.svg:
        open(a.svg, "w").write(svg(med))
        print(f"chart: {a.svg}")


if __name__ == "__main__":
    sys.exit(main())
