#!/usr/bin/env python3
"""Summarise a scripts/bench.sh result directory as Markdown tables.

usage: bench_report.py DIR RUNS

DIR holds TARGET.CASE.RUN.json (hubload runs), TARGET.CASE.RUN.cpu (the
server's utime+stime ticks over that run and the tick rate, read by
bench.sh from /proc/PID/stat), TARGET.NAME.idle.json
(hubload idle), figures.txt ("name value" lines), notes.txt and
machine.txt. Every cell is the median over the runs; ratios are the hub's
figure over the other target's (above 1: the hub is ahead, for latency and
memory: below 1 is better).
"""
import glob
import json
import os
import statistics
import sys

out, runs = sys.argv[1], sys.argv[2]
res = {}
for path in glob.glob(os.path.join(out, "*.json")):
    parts = os.path.basename(path)[: -len(".json")].split(".")
    if len(parts) != 3:
        continue
    t, case, run = parts
    try:
        with open(path) as f:
            res.setdefault((t, case), {})[run] = json.load(f)
    except (OSError, ValueError):
        pass

server_cpu = {}  # (target, case) -> {run: CPU seconds over the whole hubload run}
for path in glob.glob(os.path.join(out, "*.cpu")):
    parts = os.path.basename(path)[: -len(".cpu")].split(".")
    if len(parts) != 3:
        continue
    t, case, run = parts
    try:
        ticks, hz = open(path).read().split()
        server_cpu.setdefault((t, case), {})[run] = int(ticks) / int(hz)
    except (OSError, ValueError):
        pass

figures = {}  # name -> median of its values
if os.path.exists(os.path.join(out, "figures.txt")):
    values = {}
    for line in open(os.path.join(out, "figures.txt")):
        k, _, v = line.strip().partition(" ")
        try:
            values.setdefault(k, []).append(float(v))
        except ValueError:
            pass
    figures = {k: statistics.median(v) for k, v in values.items()}


def runs_of(t, case):
    return list(res.get((t, case), {}).values())


def med(t, case, f):
    rs = [r for r in runs_of(t, case) if r.get("idle") is None]
    vals = [f(r) for r in rs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def rate(t, case):
    return med(t, case, lambda r: r.get("receive_rate_msg_s", r.get("logins_per_s")))


def p99(t, case):
    return med(t, case, lambda r: r["latency"]["p99_ms"])


def p50(t, case):
    return med(t, case, lambda r: r["latency"]["p50_ms"])


def cpu(t, case):
    return med(t, case, lambda r: (r.get("target") or {}).get("cpu_us_per_delivery"))


def server_us(t, case):
    """Median of the server's CPU µs per delivery over the whole hubload run
    (bench.sh's /proc/PID/stat readings), or None."""
    vals = []
    for run, r in res.get((t, case), {}).items():
        secs = server_cpu.get((t, case), {}).get(run)
        if secs is not None and r.get("received"):
            vals.append(secs * 1e6 / r["received"])
    return statistics.median(vals) if vals else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.1f} ms"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def losses(t, case):
    rs = runs_of(t, case)
    lost = sum(r.get("lost", 0) for r in rs)
    errs = sum(r.get("error_count", 0) + r.get("failed", 0) for r in rs)
    return f" (lost {lost}, errors {errs})" if lost or errs else ""


print(open(os.path.join(out, "machine.txt")).read().strip() if os.path.exists(os.path.join(out, "machine.txt")) else "")
print(f"medians of {runs} alternating run(s) per cell; msg/s = deliveries received per second;")
print("p99 = publish-to-delivery latency; cpu = server CPU µs per delivery (user+sys)")
print()

mqtt_targets = ["hub", "mochi", "mosquitto", "ejabberd"]
mqtt_cases = [
    ("mqtt-q0-1to1", "QoS 0, 1→1"),
    ("mqtt-q1-1to1", "QoS 1, 1→1"),
    ("mqtt-q0-1to100", "QoS 0, 1→100"),
    ("mqtt-q1-1to100", "QoS 1, 1→100"),
    ("mqtt-q0-100to1", "QoS 0, 100→1"),
    ("mqtt-q1-100to1", "QoS 1, 100→1"),
    ("mqtt-q1-1to1-paced", "QoS 1, 1→1 paced (p99)"),
]
print("| MQTT case | hub msg/s (p99) | mochi | Mosquitto | ejabberd | hub/mochi | hub/Mosquitto | hub/ejabberd "
      "| cpu µs/msg hub / mochi / Mosquitto / ejabberd | cpu hub/Mosquitto |")
print("|---|---|---|---|---|---|---|---|---|---|")
for case, label in mqtt_cases:
    cells = [f"{fmt(rate(t, case))} ({fmt(p99(t, case), 'ms')}){losses(t, case)}" for t in mqtt_targets]
    if case.endswith("paced"):
        rs = [ratio(p99("hub", case), p99(t, case)) + " p99" for t in mqtt_targets[1:]]
    else:
        rs = [ratio(rate("hub", case), rate(t, case)) for t in mqtt_targets[1:]]
    cpus = " / ".join(fmt(server_us(t, case)) for t in mqtt_targets)
    print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(rs)
          + f" | {cpus} | {ratio(server_us('hub', case), server_us('mosquitto', case))} |")
case = "mqtt-q1-1to1-persistent"
hp = rate("hub", case)
print(f"| QoS 1, 1→1, persistent session, durable (hub) vs clean QoS 1 (others) | {fmt(hp)} ({fmt(p99('hub', case), 'ms')}){losses('hub', case)} | "
      + " | ".join(fmt(rate(t, "mqtt-q1-1to1")) for t in mqtt_targets[1:]) + " | "
      + " | ".join(ratio(hp, rate(t, "mqtt-q1-1to1")) for t in mqtt_targets[1:])
      + f" | {fmt(server_us('hub', case))} / " + " / ".join(fmt(server_us(t, "mqtt-q1-1to1")) for t in mqtt_targets[1:])
      + f" | {ratio(server_us('hub', case), server_us('mosquitto', 'mqtt-q1-1to1'))} |")
print()
print("cpu µs/msg: the server process's user+system CPU (/proc/PID/stat) over the whole hubload run,")
print("connecting and disconnecting included, over the deliveries received; mochi's is the `hubload mochi`")
print("process, which runs the broker only. cpu hub/Mosquitto below 1: the hub spends less per message.")
print()

xmpp_targets = ["hub", "prosody", "ejabberd"]
print("| XMPP case | hub | Prosody | ejabberd | hub/Prosody | hub/ejabberd |")
print("|---|---|---|---|---|---|")
for case, label in [("xmpp-chat-paced", "chat, paced: msg/s (p99, cpu µs/msg)"),
                    ("xmpp-chat-max", "chat, 50 pairs at 180 msg/s each: msg/s (p99, cpu)")]:
    cells = [f"{fmt(rate(t, case))} ({fmt(p99(t, case), 'ms')}, {fmt(cpu(t, case))}){losses(t, case)}" for t in xmpp_targets]
    rs = [ratio(rate("hub", case), rate(t, case)) for t in xmpp_targets[1:]]
    rc = [ratio(cpu("hub", case), cpu(t, case)) for t in xmpp_targets[1:]]
    print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(f"{a} (cpu {b})" for a, b in zip(rs, rc)) + " |")
case = "xmpp-login"
cells = [f"{fmt(rate(t, case))} (p99 {fmt(p99(t, case), 'ms')}){losses(t, case)}" for t in xmpp_targets]
print("| c2s logins/s, 4 workers (STARTTLS, SASL, bind) | " + " | ".join(cells) + " | "
      + " | ".join(ratio(rate("hub", case), rate(t, case)) for t in xmpp_targets[1:]) + " |")
print()

print("| hub only | msg/s | p50 | p99 | cpu µs/msg |")
print("|---|---|---|---|---|")
for case, label in [("topic-jid-1to10", "topic JID delivery, MQTT → 10 XMPP subscribers, unpaced"),
                    ("cross-coap-mqtt", "CoAP NON → MQTT, paced"),
                    ("cross-mqtt-xmpp", "MQTT → XMPP topic JID, paced"),
                    ("cross-mqtt-sse", "MQTT → SSE, paced")]:
    print(f"| {label} | {fmt(rate('hub', case))}{losses('hub', case)} | {fmt(p50('hub', case), 'ms')} | {fmt(p99('hub', case), 'ms')} | {fmt(cpu('hub', case))} |")
print()


def idle(t, name):
    p = os.path.join(out, f"{t}.{name}.idle.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def kb_per(t, name):
    r = idle(t, name)
    return r["bytes_per_session"] / 1000 if r else None


def peak_fanout(t):
    vals = [r["target"]["max_rss_kib"] for c in ("mqtt-q0-1to100", "mqtt-q1-1to100") for r in runs_of(t, c) if r.get("target")]
    return max(vals) / 1024 if vals else None


all_targets = ["hub", "mochi", "mosquitto", "prosody", "ejabberd"]
print("| footprint | " + " | ".join(all_targets) + " |")
print("|---|" + "---|" * len(all_targets))
startup = [figures.get(f"{t}.startup_ms") for t in all_targets]
print("| start-up to ready (median of every start), ms | " + " | ".join(fmt(v) for v in startup) + " |")
idle_rss = [figures.get(f"{t}.idle_rss_kib") for t in all_targets]
print("| idle RSS, MiB | " + " | ".join(fmt(v / 1024 if v else None) for v in idle_rss) + " |")
print("| RSS per idle MQTT connection, KB | " + " | ".join(fmt(kb_per(t, "mqtt")) for t in all_targets) + " |")
print("| RSS per idle XMPP c2s session, KB | " + " | ".join(fmt(kb_per(t, "xmpp")) for t in all_targets) + " |")
print("| peak RSS in the 1→100 runs, MiB | " + " | ".join(fmt(peak_fanout(t)) for t in all_targets) + " |")
big = idle("hub", "big")
if big:
    print(f"\nhub: {big['mqtt_sessions']} idle MQTT + {big['xmpp_sessions']} XMPP sessions: "
          f"{big['rss_after_kib'] / 1024:.1f} MiB RSS in all ({big['rss_before_kib'] / 1024:.1f} MiB before), "
          f"{big['bytes_per_session'] / 1000:.1f} KB a session, opened in {big['connect_seconds']:.1f} s")
pf_h, pf_m = peak_fanout("hub"), peak_fanout("mosquitto")
if pf_h and pf_m:
    print(f"hub/Mosquitto peak RSS in fan-out: {pf_h / pf_m:.2f}")

client = [r["client_cpu_seconds"] / r["wall_seconds"] for v in res.values() for r in v.values()
          if r.get("wall_seconds") and "client_cpu_seconds" in r]
if client:
    print(f"hubload's own CPU: median {statistics.median(client):.2f}, max {max(client):.2f} cores of {os.cpu_count()} "
          "(near the core count, a figure measures hubload as much as the server)")
mqtt_client = [r for (t, c), v in res.items() if c.startswith("mqtt-") for r in v.values()
               if r.get("client_cpu_us_per_delivery")]
if mqtt_client:
    names = sorted({r.get("mqtt_client", "paho") for r in mqtt_client})
    per = statistics.median(r["client_cpu_us_per_delivery"] for r in mqtt_client)
    srv = [server_us(t, c) for (t, c) in res if c.startswith("mqtt-") and server_us(t, c)]
    print(f"hubload's own CPU per delivery in the MQTT cases (client {', '.join(names)}): median {per:.2f} µs"
          + (f", against the servers' median {statistics.median(srv):.2f} µs" if srv else ""))
notes = os.path.join(out, "notes.txt")
if os.path.exists(notes):
    print("\nnotes:")
    print(open(notes).read().rstrip())
