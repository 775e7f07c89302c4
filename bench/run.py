#!/usr/bin/env python3
"""make bench: runs notify-bench against tsugi-notifyd and the Node `ws` reference
server, each scenario on a fresh server, and writes BENCHMARKS.md."""
import json, math, os, platform, re, socket, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target/release/notify-bench")
DAEMON = os.path.join(ROOT, "target/release/tsugi-notifyd")
NODE_SERVER = os.path.join(ROOT, "bench/node-ws/server.mjs")
TEST_CA = os.path.join(ROOT, "target/debug/examples/test-ca")
CA_DIR = os.path.join(ROOT, "target/bench-tls")
SECRET = "bench-secret"
SOURCES = "127.0.0.2,127.0.0.3"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")

# The rate limits lifted (a queue bound to match: the daemon refuses limits under which
# one sender could fill a reader's queue within write_timeout_secs).
LIFTED = ["--messages-per-second", "1000000", "--burst", "1000000",
          "--bytes-per-second", "100000000", "--burst-bytes", "100000000",
          "--outbound-queue", "11000000", "--outbound-queue-bytes", "2000000000"]

_TLS = []

def tls_files():
    """A test CA and a certificate for 127.0.0.1, made once per run (as in the tests)."""
    if not _TLS:
        _TLS.extend(subprocess.run([TEST_CA, CA_DIR], capture_output=True, text=True,
                                   check=True).stdout.split())
    return _TLS

def start(kind):
    port = free_port()
    if kind.startswith("tsugi-notifyd"):
        url = "ws://127.0.0.1:2021"
        tls = []
        if kind == "tsugi-notifyd-tls":
            _, cert, key = tls_files()
            url = "wss://127.0.0.1:443"
            tls = ["--tls-cert", cert, "--tls-key", key]
        cmd = [DAEMON, "--url", url, "--bind", "127.0.0.1", "--proxyport", str(port),
               "--secret", SECRET, *LIFTED, *tls,
               "--max-connections", "19950", "--max-connections-per-space", "19950",
               "--metrics-bind", "off", "--log-level", "warn"]
    else:
        cmd = ["node", NODE_SERVER, str(port)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    time.sleep(0.3)
    return p, port, cmd

def run_floor(args):
    """The kernel's floor for a fanout scenario: no server; notify-bench writes itself."""
    full = [BENCH] + args[:1] + ["--addr", "127.0.0.1:9", "--sources", SOURCES, "--floor"] + args[1:]
    out = subprocess.run(full, capture_output=True, text=True, timeout=600)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
    shown = " ".join(full).replace(ROOT + "/", "")
    print(f"[floor] {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}", flush=True)
    time.sleep(1)
    return json.loads(line), shown

def run(kind, args):
    p, port, cmd = start(kind)
    try:
        full = [BENCH] + args[:1] + ["--addr", f"127.0.0.1:{port}", "--server-pid", str(p.pid),
                                     "--sources", SOURCES] + args[1:]
        if kind.startswith("tsugi-notifyd"):
            full += ["--secret", SECRET]
        if kind == "tsugi-notifyd-tls":
            full += ["--tls-ca", tls_files()[0]]
        out = subprocess.run(full, capture_output=True, text=True, timeout=600)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
        res = json.loads(line)
        shown = " ".join(a if " " not in a else repr(a) for a in full).replace(ROOT + "/", "")
        print(f"[{kind}] {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}", flush=True)
        return res, shown
    finally:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()
        time.sleep(1)

SCENARIOS = [
    ("idle", "idle 19,500 connections", ["idle", "--connections", "19500", "--workers", "2"]),
    ("fan1000", "1 room x 1,000, 2,000 msgs of 64 B unpaced",
     ["fanout", "--rooms", "1", "--subscribers", "1000", "--senders", "1", "--messages", "2000"]),
    ("rooms", "100 rooms x 10, 500 msgs each",
     ["fanout", "--rooms", "100", "--subscribers", "10", "--senders", "1", "--messages", "500"]),
    ("paced", "1 room x 1,000, one sender at 100 msg/s (500 msgs)",
     ["fanout", "--rooms", "1", "--subscribers", "1000", "--senders", "1", "--messages", "500", "--rate", "100"]),
    ("churn", "churn: 2,000 connect + disconnect, 5 rounds", ["churn", "--connections", "2000", "--rounds", "5"]),
]

def main():
    results = {}
    for key, title, args in SCENARIOS:
        for kind in ("tsugi-notifyd", "node-ws"):
            results[(key, kind)] = run(kind, args)
    for key, title, args in SCENARIOS:
        if key in TLS_SCENARIOS:
            results[(key, "tsugi-notifyd-tls")] = run("tsugi-notifyd-tls", args)
    for key, title, args in SCENARIOS:
        if key in PROTOCOL_SCENARIOS:
            results[(key, "tsugi-notifyd-v1")] = run("tsugi-notifyd", args + ["--protocol"])
    for key, title, args in FLOOR_SCENARIOS:
        if (key, "tsugi-notifyd") not in results:
            results[(key, "tsugi-notifyd")] = run("tsugi-notifyd", args)
        results[(key, "floor")] = run_floor(args)
    held = run("tsugi-notifyd", ["idle", "--connections", "19900", "--workers", "2"])
    write(results, held)

# The scenarios run again over wss:// (tls_cert in the daemon): the cost of TLS per
# connection (memory, handshakes) and per delivery (CPU, latency).
TLS_SCENARIOS = ("idle", "fan1000", "paced", "churn")

# Paced scenarios against the kernel's floor: the same receivers, N, rate and size, with
# one thread of notify-bench writing each frame to every receiver socket itself (one
# write per delivery) instead of a server.
FLOOR_SCENARIOS = [
    ("paced", "1 room x 1,000, one sender at 100 msg/s (500 msgs)", None),
    ("paced10", "1 room x 1,000, one sender at 10 msg/s (100 msgs)",
     ["fanout", "--rooms", "1", "--subscribers", "1000", "--senders", "1", "--messages", "100", "--rate", "10"]),
    ("classroom", "classroom: 1 room x 100, one sender at 20 msg/s (200 msgs)",
     ["fanout", "--rooms", "1", "--subscribers", "100", "--senders", "1", "--messages", "200", "--rate", "20"]),
    ("schoolday", "a school day: 50 rooms x 30, one sender each at 2 msg/s (20 msgs)",
     ["fanout", "--rooms", "50", "--subscribers", "30", "--senders", "1", "--messages", "20", "--rate", "2"]),
]
FLOOR_SCENARIOS = [(k, t, a if a is not None else next(x for kk, _, x in SCENARIOS if kk == k))
                   for k, t, a in FLOOR_SCENARIOS]

# The delivery scenarios again with every client offering tsugi-notify.v1: receivers
# get JSON frames with the room's sequence (the room keeps its history), the sender acks.
PROTOCOL_SCENARIOS = ("fan1000", "rooms", "paced")

def fmt(v, unit="", digits=0):
    if v is None: return "?"
    return f"{v:,.{digits}f}{unit}"

def capacity(get):
    """What one node and N nodes hold, on paper, from this run's per-connection and
    per-delivery costs, for a site of 100,000 concurrent students."""
    idle = get("idle", "tsugi-notifyd", "server_bytes_per_connection") or 0
    tls = get("idle", "tsugi-notifyd-tls", "server_bytes_per_connection") or 0
    batched = get("fan1000", "tsugi-notifyd", "server_cpu_us_per_delivery") or 0
    single = get("schoolday", "tsugi-notifyd", "server_cpu_us_per_delivery") or 0
    paced = get("paced", "tsugi-notifyd", "server_cpu_us_per_delivery") or 0
    floor = get("paced", "floor", "server_cpu_us_per_delivery") or 0
    churn = get("churn", "tsugi-notifyd", "handshakes_per_sec") or 0
    both = get("idle", "tsugi-notifyd", "kernel_slab_bytes_per_connection_both_ends")
    # Both ends of each connection are on this machine: the server's socket is half.
    kernel = both / 2 / 1024 if both else 3.5
    students, room, rate = 100_000, 30, 2
    rooms = students // room
    msgs = rooms * rate
    deliveries = msgs * (room - 1)
    cores = deliveries * single / 1e6
    mem = students * (idle + kernel * 1024) / 2**20
    return [
        "", "## Capacity on paper: a site of 100,000 concurrent students", "",
        "From this run's figures. The model: every student has one page open (one socket),",
        f"in rooms of {room} (a class on one link), and every room carries {rate} messages a",
        "second at its peak (the school day above, everywhere at once). What was not",
        "measured here is marked as an estimate.", "",
        f"- Sockets: {students:,}; rooms: {rooms:,}; messages: {msgs:,}/s; deliveries: "
        f"{deliveries:,}/s.",
        f"- Memory on one node: {idle:,.0f} B of daemon RSS per idle connection (measured; "
        f"{tls:,.0f} B over TLS, which is rustls's own buffers) plus {kernel:.1f} KiB per "
        f"socket in the kernel's slab (socket, TCP state, file and epoll entries; "
        + (f"measured: it grew by {both:,.0f} B per connection with both ends on this "
           "machine, and the server's socket is half of that)" if both else "an estimate)")
        + ": "
        f"about {mem:,.0f} MiB for {students:,} students, with LimitNOFILE and "
        "max_connections raised to match.",
        f"- CPU on one node: a delivery at these rates is one write of its own, "
        f"{single:.2f} us of server CPU (the school day's figure, kernel included); "
        f"{deliveries:,} deliveries/s is about {cores:.1f} cores. In bursts writes batch, "
        f"and a delivery costs {batched:.2f} us (1 x 1,000 unpaced).",
        f"- Reconnects: after a restart every client comes back; at this run's "
        f"{churn:,.0f} handshakes/s (2 cores shared with the client) {students:,} "
        f"reconnect in about {students / max(churn, 1):.0f} s. The browser client backs off "
        "with jitter, which spreads them.",
        f"- So one node of {max(2, math.ceil(2 * cores))} cores (twice the peak's CPU) holds "
        "the site; a second node is for failure, not load.",
        "- N nodes and one Redis: each message is published to Redis once (a script for "
        "rooms of the protocol: sequence, history, publish) and comes back to every node; "
        f"{msgs:,} messages/s is a few percent of one Redis core (Redis's own figures for "
        "small commands, not measured here), and the N nodes share the sockets and the "
        "deliveries evenly. Redis's output grows with N: each message goes out N times.",
        "", "## Directions measured, kept or dropped", "",
        "- Encode a broadcast frame once and share its bytes: kept. A message is one "
        "reference-counted buffer for all its receivers; each receiver's frame is a header "
        "of 2 to 10 bytes made as it is written, handed to the kernel with the payload in "
        "one writev, with no copy into a per-connection write buffer (tungstenite copied "
        "every payload into one, and kept a read and a write buffer for the life of each "
        "connection; the daemon's own codec holds memory only while a frame is in flight: "
        "idle memory went from 4,586 to the figure above).",
        f"- Write straight from the fan-out when a receiver's queue is empty: not built. "
        f"What it could save is the cost of waking the receiver's task, which is at most "
        f"the gap between the daemon's CPU per delivery and the floor's at 1 x 1,000 and "
        f"100 msg/s ({paced:.2f} us against {floor:.2f} us). It would move every write of "
        "a room onto the sender's thread (1,000 writes one after another, where now the "
        "receivers' tasks write on every worker), share each socket between its task and "
        "any sender (a lock on every write), and it cannot apply under TLS.",
        "- Spread a big room's writes over worker threads: already so. A message is pushed "
        "to each receiver's queue by the sender's task (the serial part: about the unpaced "
        f"cost, {batched:.2f} us per receiver), and each receiver's task writes its own "
        "socket on whichever worker runs it (one worker per core). On 16 cores, 1 x 1,000 "
        f"at 100 msg/s would take about {1000 * batched / 1000:.1f} ms of serial pushing "
        f"and {1000 * paced / 1000 / 16:.1f} ms of writes per message per core, against "
        f"{1000 * paced / 1000 / 2:.1f} ms on this machine's 2 cores; it cannot show here, "
        "where the client takes most of a core.",
    ]

def write(r, held):
    def get(key, kind, *path):
        v = r[(key, kind)][0]
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        return v
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read())
    node_v = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    lines = ["# Benchmarks", "",
             "Made by `make bench` (bench/run.py): each scenario runs `notify-bench` against a fresh",
             "tsugi-notifyd and a fresh reference broadcast server on Node's `ws` (bench/node-ws/,",
             "same /notify semantics, space = the token string), one after the other, on loopback.",
             "The load client shares the machine's cores with the server; its own CPU use is shown.",
             "tsugi-notifyd runs with its rate limits lifted (`" + " ".join(LIFTED) + "`)",
             "and room for 19,950 connections; every other setting is the default.", "",
             f"Machine: {os.cpu_count()} cores ({cpu.group(1) if cpu else '?'}), {platform.system()} {platform.release()}, "
             f"{rustc}, Node {node_v}. Run on {time.strftime('%Y-%m-%d')}.", "",
             "| scenario | figure | tsugi-notifyd | Node ws | ratio |", "|---|---|---|---|---|"]
    def row(title, fig, a, b, unit="", digits=0, better="high"):
        ratio = "?" if not a or not b else (f"{a / b:.1f}x" if better == "high" else f"{b / a:.1f}x")
        lines.append(f"| {title} | {fig} | {fmt(a, unit, digits)} | {fmt(b, unit, digits)} | {ratio} |")
    row("idle 19,500", "server RSS per connection", get("idle", "tsugi-notifyd", "server_bytes_per_connection"),
        get("idle", "node-ws", "server_bytes_per_connection"), " B", better="low")
    row("idle 19,500", "handshakes per second", get("idle", "tsugi-notifyd", "handshakes_per_sec"),
        get("idle", "node-ws", "handshakes_per_sec"))
    for key, title, _ in SCENARIOS[1:4]:
        row(title, "deliveries per second", get(key, "tsugi-notifyd", "deliveries_per_sec"), get(key, "node-ws", "deliveries_per_sec"))
        row(title, "server CPU per delivery", get(key, "tsugi-notifyd", "server_cpu_us_per_delivery"),
            get(key, "node-ws", "server_cpu_us_per_delivery"), " us", 2, better="low")
        for p in ("p50", "p99"):
            a, b = get(key, "tsugi-notifyd", "latency_us", p), get(key, "node-ws", "latency_us", p)
            row(title, f"latency {p}", a and a / 1000, b and b / 1000, " ms", 1, better="low")
        lost = [get(key, k, f) for k in ("tsugi-notifyd", "node-ws") for f in ("loss", "duplicates", "leaks", "echoes")]
        lines.append(f"| {title} | loss / dup / leak / echo | {lost[0]} / {lost[1]} / {lost[2]} / {lost[3]} | {lost[4]} / {lost[5]} / {lost[6]} / {lost[7]} | |")
        row(title, "client CPU share", get(key, "tsugi-notifyd", "client_cpu_share"), get(key, "node-ws", "client_cpu_share"), "", 2)
    row("churn", "handshakes per second", get("churn", "tsugi-notifyd", "handshakes_per_sec"), get("churn", "node-ws", "handshakes_per_sec"))
    lines += ["", "## TLS in the daemon: wss:// against ws://", "",
              "The same scenarios against tsugi-notifyd with `tls_cert`/`tls_key` (a test CA's ECDSA",
              "P-256 certificate, made by the test-ca example; rustls with ring, TLS 1.3), the",
              "client trusting that CA (`--tls-ca`), every connection a full handshake (no session",
              "resumption).", "",
              "| scenario | figure | ws:// | wss:// | TLS costs |", "|---|---|---|---|---|"]
    def versus(kind):
        """A row of tsugi-notifyd (ws://, raw) against the same daemon run as `kind`."""
        def row_of(key, title, fig, path, unit="", digits=0, scale=1, better="low"):
            a, b = get(key, "tsugi-notifyd", *path), get(key, kind, *path)
            a, b = a and a / scale, b and b / scale
            cost = "?" if not a or not b else (f"{b / a:.2f}x" if better == "low" else f"{a / b:.2f}x slower")
            lines.append(f"| {title} | {fig} | {fmt(a, unit, digits)} | {fmt(b, unit, digits)} | {cost} |")
        def deliveries(key):
            title = next(t for k, t, _ in SCENARIOS if k == key)
            row_of(key, title, "server CPU per delivery", ("server_cpu_us_per_delivery",), " us", 2)
            row_of(key, title, "deliveries per second", ("deliveries_per_sec",), better="high")
            for p in ("p50", "p99"):
                row_of(key, title, f"latency {p}", ("latency_us", p), " ms", 1, 1000)
            lost = [get(key, kind, f) for f in ("loss", "duplicates", "leaks", "echoes")]
            lines.append(f"| {title} | loss / dup / leak / echo | | {lost[0]} / {lost[1]} / {lost[2]} / {lost[3]} | |")
        return row_of, deliveries
    tls_row, tls_deliveries = versus("tsugi-notifyd-tls")
    tls_row("idle", "idle 19,500", "server RSS per connection", ("server_bytes_per_connection",), " B")
    tls_row("idle", "idle 19,500", "handshakes per second", ("handshakes_per_sec",), better="high")
    tls_row("churn", "churn", "handshakes per second", ("handshakes_per_sec",), better="high")
    for key in ("fan1000", "paced"):
        tls_deliveries(key)
    lines += ["", "## tsugi-notify.v1 against raw frames", "",
              "The same delivery scenarios against tsugi-notifyd, every client offering the",
              "subprotocol tsugi-notify.v1 (`--protocol`): each message is given the room's",
              "sequence and kept in the room's history (in memory, one node), and its JSON",
              "`message` frame is made once and shared by the receivers.", "",
              "| scenario | figure | raw | tsugi-notify.v1 | v1 costs |", "|---|---|---|---|---|"]
    v1_deliveries = versus("tsugi-notifyd-v1")[1]
    for key in PROTOCOL_SCENARIOS:
        v1_deliveries(key)
    lines += ["", "## Against the kernel's floor", "",
              "Paced scenarios against tsugi-notifyd (raw frames) and against the floor: no server,",
              "one thread of notify-bench writing each frame to every receiver socket itself, one",
              "write per delivery, at the same N, rate and size, read by the same client code",
              "(`fanout --floor`). The ratio is the daemon's figure over the floor's.", "",
              "| scenario | figure | tsugi-notifyd | floor | ratio |", "|---|---|---|---|---|"]
    for key, title, _ in FLOOR_SCENARIOS:
        def floor_row(fig, path, unit, digits, scale=1):
            a, b = get(key, "tsugi-notifyd", *path), get(key, "floor", *path)
            a, b = a and a / scale, b and b / scale
            ratio = "?" if not a or not b else f"{a / b:.2f}x"
            lines.append(f"| {title} | {fig} | {fmt(a, unit, digits)} | {fmt(b, unit, digits)} | {ratio} |")
        for p in ("p50", "p99"):
            floor_row(f"latency {p}", ("latency_us", p), " ms", 2, 1000)
        floor_row("CPU per delivery (server / writer thread)", ("server_cpu_us_per_delivery",), " us", 2)
        lost = [get(key, k, f) for k in ("tsugi-notifyd", "floor") for f in ("loss", "duplicates", "leaks", "echoes")]
        lines.append(f"| {title} | loss / dup / leak / echo | {lost[0]} / {lost[1]} / {lost[2]} / {lost[3]} | {lost[4]} / {lost[5]} / {lost[6]} / {lost[7]} | |")
    lines += ["", f"tsugi-notifyd held {held[0].get('connections')} concurrent connections "
              f"({fmt(held[0].get('server_bytes_per_connection'), ' B')} of server RSS each).", "",
              "## Bars", ""]
    idle_b = get("idle", "tsugi-notifyd", "server_bytes_per_connection") or 1e9
    cpu_b = get("fan1000", "tsugi-notifyd", "server_cpu_us_per_delivery") or 1e9
    rooms_ratio = (get("rooms", "tsugi-notifyd", "deliveries_per_sec") or 0) / max(get("rooms", "node-ws", "deliveries_per_sec") or 1, 1)
    def over_floor(key):
        a, b = get(key, "tsugi-notifyd", "latency_us", "p99"), get(key, "floor", "latency_us", "p99")
        return a / b if a and b else 1e9
    clean = all((get(k, "tsugi-notifyd", f) or 0) == 0 for k in ("fan1000", "rooms", "paced") for f in ("loss", "duplicates", "leaks", "echoes"))
    def bar(ok, text): lines.append(f"- {'met' if ok else 'MISSED'}: {text}")
    bar(idle_b <= 2048, f"idle memory at 19,500 connections at most 2 KiB per connection: {idle_b:,.0f} B")
    bar(cpu_b <= 0.5, f"server CPU per delivery at most 0.5 us at 1 x 1,000 unpaced: {cpu_b:.2f} us")
    bar(over_floor("classroom") <= 1.3, f"classroom p99 at most 1.3x the floor's: {over_floor('classroom'):.2f}x")
    bar(over_floor("paced") <= 1.2, f"1 x 1,000 at 100 msg/s p99 at most 1.2x the floor's: {over_floor('paced'):.2f}x")
    bar(rooms_ratio >= 2, f"at least 2x the reference's deliveries/s with many rooms: {rooms_ratio:.1f}x")
    bar(clean, "no loss, duplicate, leak or echo in any scenario")
    bar((held[0].get("connections") or 0) >= 19900, f"19,900 concurrent connections held: {held[0].get('connections')}")
    lines += capacity(get)
    lines += ["", "## Commands", "", "Each row above came from one of these (ports and pids vary per run):", ""]
    for key in dict.fromkeys([k for k, _, _ in SCENARIOS] + [k for k, _, _ in FLOOR_SCENARIOS]):
        for k in ("tsugi-notifyd", "node-ws", "tsugi-notifyd-tls", "tsugi-notifyd-v1", "floor"):
            if (key, k) in r:
                lines.append(f"    {r[(key, k)][1]}")
    lines += [f"    {held[1]}", "", "## Raw results", "", "```"]
    for (key, kind), (res, _) in r.items():
        lines.append(f"{kind} {key}: {json.dumps(res, sort_keys=True)}")
    lines += [f"tsugi-notifyd held: {json.dumps(held[0], sort_keys=True)}", "```", ""]
    open(os.path.join(ROOT, "BENCHMARKS.md"), "w").write("\n".join(lines))
    print("wrote BENCHMARKS.md")

if __name__ == "__main__":
    main()
