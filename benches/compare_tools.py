#!/usr/bin/env python3
"""Helpers for benches/compare.sh: parse each tool's output into one record, measure
inter-departure gaps on lo, run a bare GSO/recvmmsg ceiling, and write the report.

Subcommands (each prints what compare.sh needs on stdout):
  free-port                       a free UDP port on 127.0.0.1 (for tools without port 0)
  record KIND [--opt VALUE ...]   parse one run's files, append a JSON line to --records,
                                  print "loss_pct recv_pps sent_pps" for the caller
  capture --port P --out F        AF_PACKET tap on lo: kernel timestamps of outgoing datagrams
                                  to UDP port P, gap percentiles written as JSON
  ceiling-recv / ceiling-send     bare UDP receiver (recvmmsg via ctypes) and GSO sender
  report --records F --csv F --md F   medians, ratios, targets (PASS/FAIL), table
  reliable-record / reliable-report   one record per run of the reliable scenario (KCP, udplab
                                  --reliable, TCP; benches/reliable_peers.sh) and its table
Only the standard library is used.
"""

import argparse
import ctypes
import ctypes.util
import json
import math
import mmap
import os
import re
import select
import signal
import socket
import statistics
import struct
import sys
import time

# ---------------------------------------------------------------------------------------------
# Small parsers


def read_time_file(path):
    """GNU time output written with -f '%U %S %e %M': user s, sys s, elapsed s, max RSS KiB.

    GNU time prefixes 'Command exited with non-zero status N' when the command failed (an
    iperf2/sockperf server stopped by its timeout): the figures are on the last line."""
    try:
        with open(path) as f:
            lines = [l.split() for l in f if l.strip()]
    except OSError:
        return None
    for parts in reversed(lines):
        if len(parts) == 4:
            try:
                user, sys_, elapsed, rss = (float(p) for p in parts)
            except ValueError:
                continue
            return {"cpu_s": user + sys_, "elapsed_s": elapsed, "rss_kb": rss}
    return None


def read_proc_stat(path):
    """First line of /proc/stat saved before/after a run: (busy jiffies, total jiffies)."""
    try:
        with open(path) as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user + nice + system + steal: irq/softirq time is left out because the loopback path's
    # softirq work is the measured tools' own, and the kernel does not charge it to them.
    busy = fields[0] + fields[1] + fields[2] + (fields[7] if len(fields) > 7 else 0)
    total = sum(fields[:8])
    return busy, total


def background_cpu_pct(stat0, stat1, own_cpu_s):
    """Machine CPU use during the run not accounted for by the measured processes, in % of
    one core. A noise indicator: other agents share this 2-core machine."""
    a, b = read_proc_stat(stat0), read_proc_stat(stat1)
    if not a or not b or b[1] <= a[1]:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    busy_s = (b[0] - a[0]) / hz
    wall_s = (b[1] - a[1]) / hz / ncpu
    if wall_s <= 0:
        return None
    return max(0.0, 100.0 * (busy_s - own_cpu_s) / wall_s)


def pct(n, d):
    return 100.0 * n / d if d else None


def percentile(sorted_vals, q):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


# ---------------------------------------------------------------------------------------------
# One record per run


def rec_udplab(a, r):
    with open(a.json) as f:
        doc = json.load(f)
    # Report version 2: the run is the one entry of "flows" (version 1 had it at the top).
    d = doc["flows"][0] if doc.get("version", 1) >= 2 else doc
    s = d.get("sender") or {}
    rv = d.get("receiver") or {}
    st = rv.get("stats") or {}
    sent = s.get("sent")
    r["sent"] = sent
    r["sent_pps"] = s.get("pps_achieved")
    if rv:
        r["received"] = st.get("received")
        r["lost"] = st.get("lost")
        r["loss_pct"] = pct(st.get("lost", 0), sent)
        r["recv_pps"] = rv.get("pps_achieved")
        r["recv_gbps"] = (rv.get("rate_achieved_bps") or 0) / 1e9
        r["rcvbuf_drops"] = rv.get("rcvbuf_drops")
    if s.get("pps_target"):
        r["target_pps"] = s["pps_target"]
        r["achieved_over_target"] = s["pps_achieved"] / s["pps_target"]
    lat = s.get("schedule_lateness")
    if lat:
        r["lateness_p50_us"] = lat["p50_ns"] / 1e3
        r["lateness_p99_us"] = lat["p99_ns"] / 1e3
    rtt = s.get("rtt")
    if rtt:
        r["rtt_p50_us"] = rtt["p50_ns"] / 1e3
        r["rtt_p99_us"] = rtt["p99_ns"] / 1e3
        r["rtt_samples"] = rtt["count"]
    # Used when udplab reports its own inter-departure gaps (a field proposed for the sender).
    gaps = s.get("inter_departure")
    if gaps:
        r["own_gap_p50_us"] = gaps["p50_ns"] / 1e3
        r["own_gap_p99_us"] = gaps["p99_ns"] / 1e3
    if d.get("warnings"):
        r["warnings"] = d["warnings"]


def rec_iperf3(a, r):
    with open(a.json) as f:
        d = json.load(f)
    if "error" in d and "end" not in d:
        r["error"] = d["error"]
        return
    e = d["end"]
    ss, sr = e["sum_sent"], e["sum_received"]
    sent = ss["packets"]
    received = max(0, sr["packets"] - sr["lost_packets"])
    r["sent"] = sent
    r["received"] = received
    # Loss as udplab counts it: everything sent and not received (iperf3's own figure leaves out
    # datagrams still in flight when the server stopped counting).
    r["lost"] = max(0, sent - received)
    r["loss_pct"] = pct(r["lost"], sent)
    r["loss_pct_own"] = sr.get("lost_percent")
    r["sent_pps"] = sent / ss["seconds"] if ss["seconds"] else None
    r["recv_pps"] = received / sr["seconds"] if sr["seconds"] else None
    r["recv_gbps"] = sr["bits_per_second"] / 1e9
    r["cpu_own_send_pct"] = e["cpu_utilization_percent"]["host_total"]
    r["cpu_own_recv_pct"] = e["cpu_utilization_percent"]["remote_total"]
    if a.target_pps:
        r["target_pps"] = a.target_pps
        r["achieved_over_target"] = r["sent_pps"] / a.target_pps


IPERF2_SERVER_LINE = re.compile(
    r"\]\s+(?P<t0>[\d.]+)-(?P<t1>[\d.]+)\s+sec\s+.*?\s(?P<lost>-?\d+)/(?P<total>\d+)\s+\("
)
IPERF2_SENT = re.compile(r"Sent (\d+) datagrams")
IPERF2_CLIENT_LINE = re.compile(
    r"\]\s+(?P<t0>[\d.]+)-(?P<t1>[\d.]+)\s+sec\s+.*?\s(?P<writes>\d+)/(?P<err>\d+)\s+(?P<pps>\d+) pps"
)


def rec_iperf2(a, r):
    with open(a.client) as f:
        client = f.read()
    with open(a.server) as f:
        server = f.read()
    m = IPERF2_SENT.search(client)
    # The last datagram is iperf2's end-of-test marker, not a data datagram.
    sent = int(m.group(1)) - 1 if m else None
    cl = IPERF2_CLIENT_LINE.search(client)
    if cl:
        dur = float(cl.group("t1")) - float(cl.group("t0"))
        r["sent_pps"] = int(cl.group("writes")) / dur if dur > 0 else None
        sent = sent if sent is not None else int(cl.group("writes"))
    # The server's own line is exact in Lost/Total (its text rates have only 3 digits).
    lines = [mm for mm in IPERF2_SERVER_LINE.finditer(server)]
    if not lines:
        r["error"] = "no iperf2 server report"
        r["sent"] = sent
        return
    sl = lines[-1]
    dur = float(sl.group("t1")) - float(sl.group("t0"))
    total, lost = int(sl.group("total")), max(0, int(sl.group("lost")))
    received = total - lost
    r["sent"] = sent
    r["received"] = received
    if sent:
        r["lost"] = max(0, sent - received)
        r["loss_pct"] = pct(r["lost"], sent)
    if dur > 0:
        r["recv_pps"] = received / dur
        r["recv_gbps"] = received * a.size * 8 / dur / 1e9
    if a.target_pps and r.get("sent_pps"):
        r["target_pps"] = a.target_pps
        r["achieved_over_target"] = r["sent_pps"] / a.target_pps


SOCKPERF_PCT = re.compile(r"percentile\s+([\d.]+)\s+=\s+([\d.]+)")
SOCKPERF_VALID = re.compile(
    r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)"
)
SOCKPERF_DROPS = re.compile(r"# dropped messages = (\d+)")


def rec_sockperf(a, r):
    with open(a.client) as f:
        out = f.read()
    pcts = {float(p): float(v) for p, v in SOCKPERF_PCT.findall(out)}
    if 50.0 not in pcts:
        r["error"] = "no sockperf percentiles"
        return
    r["rtt_p50_us"] = pcts[50.0]
    r["rtt_p99_us"] = pcts.get(99.0)
    m = SOCKPERF_VALID.search(out)
    if m:
        secs, sent, received = float(m.group(1)), int(m.group(2)), int(m.group(3))
        r["sent"], r["received"] = sent, received
        r["rtt_samples"] = received
        r["sent_pps"] = sent / secs if secs else None
        r["recv_pps"] = received / secs if secs else None
        r["lost"] = max(0, sent - received)
        r["loss_pct"] = pct(r["lost"], sent)
    d = SOCKPERF_DROPS.search(out)
    if d:
        r["dropped"] = int(d.group(1))


def rec_ceiling(a, r):
    with open(a.recv_json) as f:
        rv = json.load(f)
    with open(a.send_json) as f:
        sd = json.load(f)
    r["sent"] = sd["sent"]
    r["sent_pps"] = sd["sent"] / sd["seconds"] if sd["seconds"] else None
    r["received"] = rv["received"]
    r["lost"] = max(0, sd["sent"] - rv["received"])
    r["loss_pct"] = pct(r["lost"], sd["sent"])
    r["recv_pps"] = rv["pps"]
    r["recv_gbps"] = rv["pps"] * a.size * 8 / 1e9
    if a.target_pps and r["sent_pps"]:
        r["target_pps"] = a.target_pps
        r["achieved_over_target"] = r["sent_pps"] / a.target_pps


def rec_capture(path, r, nominal_gap_us):
    """Adds the externally measured gap distribution to a record."""
    try:
        with open(path) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return
    if c.get("gaps", 0) < 2:
        r["capture_error"] = "too few packets captured"
        return
    r["gap_p50_us"] = c["p50_us"]
    r["gap_p99_us"] = c["p99_us"]
    r["gap_p999_us"] = c["p999_us"]
    r["gap_mean_us"] = c["mean_us"]
    r["capture_pps"] = c["pps"]
    r["capture_drops"] = c["drops"]
    r["gap_nominal_us"] = nominal_gap_us


def cmd_record(a):
    r = {
        "scenario": a.scenario,
        "tool": a.tool,
        "case": a.case,
        "rep": a.rep,
        "offered": a.offered,
        "duration_s": a.duration,
        "size": a.size,
    }
    if a.note:
        r["note"] = a.note
    try:
        {"udplab": rec_udplab, "iperf3": rec_iperf3, "iperf2": rec_iperf2,
         "sockperf": rec_sockperf, "ceiling": rec_ceiling}[a.kind](a, r)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        r["error"] = f"{type(e).__name__}: {e}"
    own_cpu = 0.0
    for side, path in (("send", a.stime), ("recv", a.rtime)):
        t = read_time_file(path) if path else None
        if t:
            # CPU over the data phase: the measured process's CPU seconds divided by the test
            # duration, so time spent waiting for the peer (servers started early, udplab's
            # Tmax wait) does not dilute it.
            r[f"cpu_{side}_pct"] = 100.0 * t["cpu_s"] / a.duration if a.duration else None
            r[f"rss_{side}_kb"] = t["rss_kb"]
            r[f"elapsed_{side}_s"] = t["elapsed_s"]
            own_cpu += t["cpu_s"]
    if a.stat0 and a.stat1:
        r["bg_cpu_pct"] = background_cpu_pct(a.stat0, a.stat1, own_cpu)
    if a.capture:
        rec_capture(a.capture, r, a.nominal_gap_us)
    if a.rc:
        r["rc"] = a.rc
    with open(a.records, "a") as f:
        f.write(json.dumps(r) + "\n")
    fmt = lambda v: "nan" if v is None else f"{v:.6g}"  # noqa: E731
    print(fmt(r.get("loss_pct")), fmt(r.get("recv_pps")), fmt(r.get("sent_pps")))


# ---------------------------------------------------------------------------------------------
# Inter-departure gaps on lo (AF_PACKET, kernel timestamps)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6
SKF_AD_PKTTYPE = 0xFFFFF000 + 4
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1


def udp_port_filter(port):
    """Classic BPF: outgoing IPv4 UDP to `port` on lo (14-byte zero Ethernet header, IHL 5)."""
    prog = [
        (0x30, 0, 0, SKF_AD_PKTTYPE),  # ldb pkttype
        (0x15, 0, 7, PACKET_OUTGOING),  # jeq OUTGOING else drop
        (0x28, 0, 0, 12),  # ldh ethertype
        (0x15, 0, 5, 0x0800),
        (0x30, 0, 0, 23),  # ldb ip proto
        (0x15, 0, 3, 17),
        (0x28, 0, 0, 36),  # ldh udp dst port
        (0x15, 0, 1, port),
        (0x06, 0, 0, 64),  # accept, 64 bytes are enough
        (0x06, 0, 0, 0),  # drop
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    return buf, struct.pack("HL", len(prog), ctypes.addressof(buf))


def cmd_capture(a):
    """Reads the packets from a TPACKET_V2 ring (mmap): no system call per packet, so Python
    keeps up with 100k datagrams/s; PACKET_STATISTICS says if the ring ever overflowed."""
    stop = {"now": False}

    def on_signal(_sig, _frm):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    keep, fprog = udp_port_filter(a.port)
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    frame_size, block_size, block_nr = 256, 1 << 16, 512  # 32 MiB: 131072 frames
    frame_nr = block_size // frame_size * block_nr
    s.setsockopt(SOL_PACKET, PACKET_RX_RING,
                 struct.pack("IIII", block_size, block_nr, frame_size, frame_nr))
    s.bind(("lo", ETH_P_ALL))
    ring = mmap.mmap(s.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                     mmap.PROT_READ | mmap.PROT_WRITE)
    poller = select.poll()
    poller.register(s.fileno(), select.POLLIN)
    with open(a.ready, "w") as f:
        f.write("ready\n")
    stamps = []
    deadline = time.monotonic() + a.max_seconds
    last_seen = None
    idx = 0
    unpack_hdr = struct.Struct("IIIHHII").unpack_from  # status, len, snaplen, mac, net, sec, nsec
    unpack_len = struct.Struct("!H").unpack_from
    while not stop["now"]:
        off = idx * frame_size
        status, _ln, snap, _mac, net, sec, nsec = unpack_hdr(ring, off)
        if not status & TP_STATUS_USER:
            now = time.monotonic()
            if now >= deadline or (last_seen is not None and now - last_seen > a.idle):
                break
            poller.poll(200)
            continue
        # A GSO send crosses lo as one packet: its datagrams all left at that instant.
        ip_len = unpack_len(ring, off + net + 2)[0] if snap >= 4 else 0
        segments = max(1, -(-(ip_len - 28) // a.size)) if a.size else 1
        t = sec * 1_000_000_000 + nsec
        if segments == 1:
            stamps.append(t)
        else:
            stamps.extend([t] * segments)
        struct.pack_into("I", ring, off, TP_STATUS_KERNEL)
        idx = (idx + 1) % frame_nr
        last_seen = time.monotonic()
    st = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _pk, drops = struct.unpack("II", st)
    del keep
    ring.close()
    gaps = sorted(b - a_ for a_, b in zip(stamps, stamps[1:]))
    out = {"datagrams": len(stamps), "gaps": len(gaps), "drops": drops}
    if gaps:
        span = (stamps[-1] - stamps[0]) / 1e9
        out.update(
            p50_us=percentile(gaps, 50) / 1e3,
            p99_us=percentile(gaps, 99) / 1e3,
            p999_us=percentile(gaps, 99.9) / 1e3,
            max_us=gaps[-1] / 1e3,
            mean_us=sum(gaps) / len(gaps) / 1e3,
            pps=(len(stamps) - 1) / span if span > 0 else None,
        )
    with open(a.out, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------------------------------------
# Bare ceiling: a GSO sender (socket.sendmsg + UDP_SEGMENT) and a recvmmsg receiver (ctypes)

UDP_SEGMENT = 103
UDP_GRO = 104
MSG_WAITFORONE = 0x10000


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(IoVec)), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


def cmd_ceiling_recv(a):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if a.rcvbuf:  # 0: the kernel's default
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    s.bind(("127.0.0.1", 0))
    # 200 ms blocking timeout so an idle socket is noticed.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200_000))
    n = a.batch
    bufs = (ctypes.c_char * (n * 2048))()
    iovs = (IoVec * n)()
    msgs = (MMsgHdr * n)()
    base = ctypes.addressof(bufs)
    for i in range(n):
        iovs[i].base = base + i * 2048
        iovs[i].len = 2048
        msgs[i].hdr.iov = ctypes.pointer(iovs[i])
        msgs[i].hdr.iovlen = 1
    print(f"listening on 127.0.0.1:{s.getsockname()[1]}", flush=True)
    fd = s.fileno()
    received = 0
    first = last = None
    deadline = time.monotonic() + a.max_seconds
    if a.gro:
        received, first, last = gro_loop(s, deadline, a.idle)
    recvmmsg = libc.recvmmsg
    while not a.gro and time.monotonic() < deadline:
        got = recvmmsg(fd, msgs, n, MSG_WAITFORONE, None)
        now = time.monotonic()
        if got > 0:
            if first is None:
                first = now
            received += got
            last = now
        elif first is not None and now - last > a.idle:
            break
    span = (last - first) if first is not None and last > first else 0.0
    with open(a.out, "w") as f:
        json.dump({"received": received, "seconds": span,
                   "pps": received / span if span > 0 else 0.0}, f)


def gro_loop(s, deadline, idle):
    """UDP_GRO receive: a GSO send arrives as one buffer; the cmsg gives the segment size."""
    s.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    buf = bytearray(65536)
    received, first, last = 0, None, None
    while time.monotonic() < deadline:
        try:
            n, anc, _fl, _addr = s.recvmsg_into([buf], 64)
        except (socket.timeout, BlockingIOError):
            if first is not None and time.monotonic() - last > idle:
                break
            continue
        seg = n
        for level, typ, val in anc:
            if level == socket.SOL_UDP and typ == UDP_GRO:
                seg = struct.unpack("i", val[:4])[0]
        received += max(1, -(-n // seg)) if seg else 1
        last = time.monotonic()
        if first is None:
            first = last
    return received, first, last


def cmd_ceiling_send(a):
    """Unpaced: GSO sends back to back. --pps: one GSO send of `segments` datagrams every
    segments/pps seconds (busy-wait). --plain with --pps: one send() per datagram, busy-waiting
    for each departure time: the simplest exact pacer, a floor for the inter-departure gaps."""
    host, port = a.target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if a.sndbuf:  # 0: the kernel's default
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, a.sndbuf)
    s.connect((host, int(port)))
    seg = 1 if a.plain else min(a.segments, 65507 // a.size)
    payload = bytes(a.size * seg)
    anc = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("H", a.size))] if seg > 1 else []
    clock = time.perf_counter
    sent = 0
    start = clock()
    end = start + a.duration
    send = s.sendmsg
    if a.pps:
        period = seg / a.pps
        k = 0
        if seg == 1:
            plain = s.send
            while True:
                due = start + k * period
                if due >= end:
                    break
                while clock() < due:
                    pass
                plain(payload)
                k += 1
        else:
            while True:
                due = start + k * period
                if due >= end:
                    break
                while clock() < due:
                    pass
                send([payload], anc)
                k += 1
        sent = k * seg
    else:
        while True:
            # Check the clock every 64 calls only: the loop itself is the thing measured.
            for _ in range(64):
                send([payload], anc)
            sent += 64 * seg
            if clock() >= end:
                break
    secs = clock() - start
    with open(a.out, "w") as f:
        json.dump({"sent": sent, "seconds": secs}, f)


# ---------------------------------------------------------------------------------------------
# Report

NUMERIC = [
    "sent_pps", "recv_pps", "recv_gbps", "loss_pct", "cpu_send_pct", "cpu_recv_pct",
    "cpu_own_send_pct", "cpu_own_recv_pct", "rtt_p50_us", "rtt_p99_us", "rtt_samples",
    "gap_p50_us", "gap_p99_us", "gap_p999_us", "gap_nominal_us", "own_gap_p50_us",
    "own_gap_p99_us", "capture_pps", "capture_drops", "target_pps", "achieved_over_target",
    "lateness_p50_us", "lateness_p99_us", "rss_send_kb", "rss_recv_kb", "elapsed_send_s",
    "bg_cpu_pct", "count",
]

CSV_COLUMNS = [
    "scenario", "tool", "case", "runs", "offered", "sent_pps", "recv_pps", "recv_gbps",
    "loss_pct", "cpu_send_pct", "cpu_recv_pct", "rtt_p50_us", "rtt_p99_us", "gap_p50_us",
    "gap_p99_us", "gap_nominal_us", "achieved_over_target", "lateness_p99_us", "rss_send_kb",
    "rss_recv_kb", "elapsed_send_s", "metric", "value", "udplab_value", "ratio_to_udplab",
    "bg_cpu_pct", "note",
]

# Per scenario: the headline metric, and which udplab row every other row is compared with.
HEADLINE = {
    "1-max-rate": ("recv_pps", None),
    "2-zero-loss": ("recv_pps", "udplab"),
    "3-1gbps-default-buf": ("recv_gbps", "udplab"),
    "4-pacing-100k": ("gap_p99_us", "udplab"),
    "5-rtt": ("rtt_p50_us", "udplab"),
    "6-memory": ("rss_recv_kb", None),
}
SCENARIO_ORDER = list(HEADLINE)


def median(vals):
    vals = [v for v in vals if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.median(vals) if vals else None


def summarize(records):
    groups = {}
    for r in records:
        # Search steps and unconfirmed zero-loss attempts stay in the raw records only.
        if r["scenario"] not in HEADLINE:
            continue
        groups.setdefault((r["scenario"], r["tool"], r["case"]), []).append(r)
    rows = []
    for (sc, tool, case), rs in groups.items():
        row = {"scenario": sc, "tool": tool, "case": case, "runs": len(rs),
               "offered": rs[0].get("offered", "")}
        for k in NUMERIC:
            row[k] = median([r.get(k) for r in rs])
        notes = sorted({r["note"] for r in rs if r.get("note")})
        errs = sorted({r["error"] for r in rs if r.get("error")})
        if errs:
            notes.append("errors: " + "; ".join(errs))
        drops = [r.get("capture_drops") for r in rs if r.get("capture_drops")]
        if drops:
            notes.append(f"capture dropped {int(max(drops))} packets in a run")
        row["note"] = " | ".join(notes)
        rows.append(row)
    return rows


def find(rows, sc, tool, case):
    for r in rows:
        if r["scenario"] == sc and r["tool"] == tool and r["case"] == case:
            return r
    return None


def add_ratios(rows):
    # Scenario 1: the reference is udplab's faster batched mode at the same size.
    for case in {r["case"] for r in rows if r["scenario"] == "1-max-rate"}:
        batched = [find(rows, "1-max-rate", t, case) for t in ("udplab-mmsg", "udplab-gso")]
        batched = [b for b in batched if b and b.get("recv_pps")]
        best = max(batched, key=lambda b: b["recv_pps"]) if batched else None
        if best:
            best["note"] = ("batched pick (faster of mmsg/gso) " + best["note"]).strip()
        for r in rows:
            if r["scenario"] == "1-max-rate" and r["case"] == case:
                metric = "recv_gbps" if case.startswith("1400") else "recv_pps"
                r["_ref"] = best["tool"] if best else None
                r["metric"] = metric
                r["value"] = r.get(metric)
                r["udplab_value"] = best.get(metric) if best else None
    for r in rows:
        sc = r["scenario"]
        if sc == "1-max-rate":
            pass
        elif sc == "6-memory":
            r["metric"] = "rss_recv_kb"
            r["value"] = r.get("rss_recv_kb")
            small = min((x for x in rows if x["scenario"] == sc),
                        key=lambda x: x.get("count") or 0, default=None)
            r["udplab_value"] = small.get("rss_recv_kb") if small else None
        else:
            metric, ref_tool = HEADLINE[sc]
            ref = find(rows, sc, ref_tool, r["case"]) or next(
                (x for x in rows if x["scenario"] == sc and x["tool"] == ref_tool), None)
            r["metric"] = metric
            r["value"] = r.get(metric)
            r["udplab_value"] = ref.get(metric) if ref else None
        v, u = r.get("value"), r.get("udplab_value")
        r["ratio_to_udplab"] = v / u if v is not None and u else None


def ratio_text(a, b):
    return f"{a / b:.3g}×" if a is not None and b else "n/a"


def targets(rows):
    """Each target: (name, passed or None when not measurable, the numbers)."""
    out = []
    g = lambda sc, tool, case, k: (find(rows, sc, tool, case) or {}).get(k)  # noqa: E731

    z_u = g("2-zero-loss", "udplab", "64B", "recv_pps")
    z_i = g("2-zero-loss", "iperf3", "64B", "recv_pps")
    out.append(("zero-loss (<=0.1%) rate at 64 B >= 2.5x iperf3",
                (z_u / z_i >= 2.5) if z_u and z_i else None,
                f"udplab {fmt_num(z_u)} pps vs iperf3 {fmt_num(z_i)} pps = {ratio_text(z_u, z_i)}"))

    # The ceiling measured the same way (zero-loss search) when available; otherwise the highest
    # received rate of the unpaced runs (an overloaded receiver drains less than it could).
    c_zero = g("2-zero-loss", "bare-gso-recvmmsg", "64B", "recv_pps")
    c_bare = g("1-max-rate", "bare-gso-recvmmsg", "64B", "recv_pps")
    c_gso = g("1-max-rate", "udplab-gso", "64B", "recv_pps")
    if c_zero:
        ceil, which = c_zero, "bare Python GSO sender, paced, + recvmmsg receiver, same search"
    else:
        ceil = max([c for c in (c_bare, c_gso) if c] or [0]) or None
        which = ("bare GSO + recvmmsg, unpaced" if ceil and ceil == c_bare
                 else "udplab --send-mode gso --rate max")
    out.append(("zero-loss rate at 64 B >= 70% of the GSO+recvmmsg ceiling",
                (z_u / ceil >= 0.70) if z_u and ceil else None,
                f"udplab {fmt_num(z_u)} pps vs ceiling {fmt_num(ceil)} pps ({which}) = "
                f"{(100 * z_u / ceil) if z_u and ceil else float('nan'):.1f}%; unpaced received: "
                f"bare {fmt_num(c_bare)}, udplab-gso {fmt_num(c_gso)} pps"))

    batched = [find(rows, "1-max-rate", t, "1400B") for t in ("udplab-mmsg", "udplab-gso")]
    b_u = max([b["recv_gbps"] for b in batched if b and b.get("recv_gbps")] or [0]) or None
    b_i = g("1-max-rate", "iperf3", "1400B", "recv_gbps")
    out.append(("1400 B received Gbit/s >= 2.5x iperf3",
                (b_u / b_i >= 2.5) if b_u and b_i else None,
                f"udplab {fmt_num(b_u)} vs iperf3 {fmt_num(b_i)} Gbit/s = {ratio_text(b_u, b_i)}"))

    l3 = g("3-1gbps-default-buf", "udplab", "1400B", "loss_pct")
    out.append(("1 Gbit/s at 1400 B, default rcvbuf: loss <= 0.5%",
                (l3 <= 0.5) if l3 is not None else None, f"udplab loss {fmt_num(l3)}%"))

    ach = g("4-pacing-100k", "udplab", "64B", "achieved_over_target")
    out.append(("pacing at 100k/s: achieved within 0.1% of target",
                (abs(ach - 1) <= 0.001) if ach is not None else None,
                f"achieved/target {ach:.6f}" if ach is not None else "not measured"))
    gp99 = g("4-pacing-100k", "udplab", "64B", "own_gap_p99_us")
    src = "udplab sender.inter_departure"
    if gp99 is None:
        gp99 = g("4-pacing-100k", "udplab", "64B", "gap_p99_us")
        src = "AF_PACKET tap on lo"
    nominal = 10.0
    floor = g("4-pacing-100k", "bare-spin-pacer", "64B", "gap_p99_us")
    floor_txt = (f"; the bare busy-wait pacer on this machine: {fmt_num(floor)} us"
                 if floor is not None else "")
    out.append(("pacing at 100k/s: gap p99 <= 2x nominal (20 us)",
                (gp99 <= 2 * nominal) if gp99 is not None else None,
                f"gap p99 {fmt_num(gp99)} us ({src}) = {gp99 / nominal:.2f}x nominal{floor_txt}"
                if gp99 is not None else "not measured"))

    r_u = g("5-rtt", "udplab", "64B", "rtt_p50_us")
    r_s = g("5-rtt", "sockperf", "64B", "rtt_p50_us")
    out.append(("RTT p50 <= 1.3x sockperf ping-pong p50",
                (r_u / r_s <= 1.3) if r_u and r_s else None,
                f"udplab {fmt_num(r_u)} us vs sockperf {fmt_num(r_s)} us = {ratio_text(r_u, r_s)}"))

    mem = sorted((r for r in rows if r["scenario"] == "6-memory"),
                 key=lambda r: r.get("count") or 0)
    if len(mem) >= 2:
        lo, hi = mem[0], mem[-1]
        parts, ok = [], True
        for side in ("send", "recv"):
            a_, b_ = lo.get(f"rss_{side}_kb"), hi.get(f"rss_{side}_kb")
            if a_ and b_:
                ok = ok and abs(b_ / a_ - 1) <= 0.10
                parts.append(f"{side} {a_:.0f} -> {b_:.0f} KiB ({100 * (b_ / a_ - 1):+.1f}%)")
            else:
                ok = None
        out.append((f"memory of {lo['case']} and {hi['case']} runs within 10%", ok,
                    "; ".join(parts)))
    else:
        out.append(("memory of the small and large runs within 10%", None, "not measured"))
    return out


def fmt_num(v):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


TABLE_COLS = [
    ("scenario", "scenario"), ("tool", "tool"), ("case", "case"), ("runs", "n"),
    ("sent_pps", "sent pps"), ("recv_pps", "recv pps"), ("recv_gbps", "recv Gbit/s"),
    ("loss_pct", "loss %"), ("cpu_send_pct", "CPU snd %"), ("cpu_recv_pct", "CPU rcv %"),
    ("rtt_p50_us", "RTT p50 µs"), ("rtt_p99_us", "RTT p99 µs"), ("gap_p50_us", "gap p50 µs"),
    ("gap_p99_us", "gap p99 µs"), ("achieved_over_target", "ach/target"),
    ("rss_send_kb", "RSS snd KiB"), ("rss_recv_kb", "RSS rcv KiB"),
    ("elapsed_send_s", "time s"), ("ratio_to_udplab", "ratio"), ("bg_cpu_pct", "bg CPU %"),
]


def cell(r, k):
    v = r.get(k)
    if v is None or v == "":
        return ""
    if k == "achieved_over_target":
        return f"{v:.5f}"
    if k == "ratio_to_udplab":
        return f"{v:.3g}"
    if k == "loss_pct":
        return f"{v:.3f}"
    if isinstance(v, float):
        return fmt_num(v)
    return str(v)


TOOL_ORDER = ["udplab", "udplab-plain", "udplab-mmsg", "udplab-gso", "iperf3", "iperf2",
              "sockperf", "bare-gso-recvmmsg", "bare-gso-gro", "bare-spin-pacer"]


def sort_key(r):
    digits = re.match(r"\d+", r["case"])
    size = int(digits.group()) * (1_000_000 if r["case"].endswith("M") else 1) if digits else 0
    return (SCENARIO_ORDER.index(r["scenario"]) if r["scenario"] in SCENARIO_ORDER else 99,
            size, TOOL_ORDER.index(r["tool"]) if r["tool"] in TOOL_ORDER else 99)


def cmd_report(a):
    with open(a.records) as f:
        records = [json.loads(l) for l in f if l.strip()]
    rows = summarize(records)
    add_ratios(rows)
    rows.sort(key=sort_key)
    import csv
    with open(a.csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else
                        (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                        for c in CSV_COLUMNS])
    tg = targets(rows)
    # Only columns with at least one value go to the table.
    cols = [(k, h) for k, h in TABLE_COLS if any(cell(r, k) for r in rows)]
    md = ["| " + " | ".join(h for _, h in cols) + " |",
          "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        md.append("| " + " | ".join(cell(r, k) for k, _ in cols) + " |")
    tlines = [f"- **{'PASS' if ok else ('FAIL' if ok is False else 'N/A')}** {name}: {nums}"
              for name, ok, nums in tg]
    notes = [f"- {r['scenario']} / {r['tool']} / {r['case']}: {r['note']}"
             for r in rows if r.get("note")]
    with open(a.md, "a") as f:
        f.write("\n## Results (medians)\n\n" + "\n".join(md) + "\n")
        f.write("\n`ratio` = the row's headline figure / udplab's (scenario 1: received pps at "
                "64 B, received Gbit/s at 1400 B, against udplab's faster batched mode; 2: "
                "zero-loss received pps; 3: received Gbit/s; 4: gap p99; 5: RTT p50; 6: receiver "
                "RSS against the smallest run). `bg CPU %` = CPU used by other processes on the "
                "machine during the run (% of one core): a noise indicator.\n")
        f.write("\n## Targets\n\n" + "\n".join(tlines) + "\n")
        if notes:
            f.write("\n## Notes per row\n\n" + "\n".join(notes) + "\n")
    # Terminal: a plain fixed-width table, then the targets.
    widths = [max(len(h), *(len(cell(r, k)) for r in rows)) for k, h in cols]
    print("  ".join(h.ljust(w) for (_, h), w in zip(cols, widths)))
    for r in rows:
        print("  ".join(cell(r, k).ljust(w) for (k, _), w in zip(cols, widths)))
    print()
    for line in tlines:
        print(line.replace("**", ""))


# ---------------------------------------------------------------------------------------------
# The reliable scenario (benches/reliable_peers.sh): one record per (case, peer) run.


def load_json(path):
    """A JSON document, or the last JSON line of a program's stdout; None when absent."""
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def dig(d, *paths):
    """The first of several dotted paths present in nested dicts d (None if none is)."""
    for p in paths:
        cur = d
        for k in p.split("."):
            if isinstance(cur, dict) and k in cur:
                cur = cur[k]
            else:
                cur = None
                break
        if cur is not None:
            return cur
    return None


def proxy_fields(r, path):
    px = load_json(path)
    if not px:
        return
    for side, key in (("forward", "fwd"), ("reverse", "rev")):
        d = px.get(side) or {}
        r[f"proxy_{key}_in"] = d.get("received")
        r[f"proxy_{key}_out"] = d.get("sent")
        r[f"proxy_{key}_dropped"] = (d.get("impair") or {}).get("dropped", 0)
    if r.get("proxy_fwd_in"):
        r["proxy_ack_dgram_pct"] = pct(r.get("proxy_rev_in") or 0, r["proxy_fwd_in"])


def rel_kcp(a, r):
    snd, rcv = load_json(a.send), load_json(a.recv)
    if not snd or not rcv:
        r["skip"] = "kcp_peer wrote no figures (see its stderr in the raw logs)"
        return
    n = a.count
    r["delivered"] = rcv.get("delivered")
    r["all_acked"] = snd.get("all_acked")
    r["retx_per_msg"] = snd["retransmissions"] / n
    r["dup_per_msg"] = rcv["duplicate_arrivals"] / n
    data_b, ack_b = snd["sent"]["bytes"], rcv["sent"]["bytes"]
    r["data_bytes"], r["ack_bytes"] = data_b, ack_b
    r["ack_byte_pct"] = pct(ack_b, data_b)
    lat = rcv.get("latency_ms") or {}
    for k in ("mean", "p50", "p99", "max"):
        r[f"lat_{k}_ms"] = lat.get(k)
    r["goodput_mbps"] = rcv.get("goodput_bps", 0) / 1e6
    r["latency_kind"] = "ordered"


def rel_udplab(a, r):
    snd, rcv = load_json(a.send), load_json(a.recv)
    err = ""
    if a.send_err and os.path.exists(a.send_err):
        err = open(a.send_err).read()
    if a.rc == 2 and "unexpected argument '--reliable'" in err:
        r["skip"] = "this udplab build has no --reliable (issue 10's layer not merged yet)"
        return
    if not snd:
        r["skip"] = f"udplab send rc={a.rc} wrote no JSON: {err.strip().splitlines()[-1] if err.strip() else ''}"
        return
    # `total.reliable` of the sender's JSON: both ends' figures merged (ArqReport, flattened)
    # once the receiver's results came back; latencies are LatencySummary objects in ns.
    rel = dig(snd, "total.reliable", "reliable") or {}
    if not rel:
        r["skip"] = f"udplab send rc={a.rc}: no reliable figures in its JSON"
        return
    n = a.count
    r["receiver_results"] = rel.get("receiver_results")
    r["delivered"] = rel.get("delivered") if rel.get("receiver_results", True) else None
    # The receiver's own view, to check that both ends agree on the count.
    r["recv_delivered"] = dig(rcv or {}, "total.receiver.reliable.delivered",
                              "total.reliable.delivered")
    if isinstance(rel.get("retransmissions"), (int, float)):
        r["retx_per_msg"] = rel["retransmissions"] / n
    if isinstance(rel.get("duplicate_arrivals"), (int, float)):
        r["dup_per_msg"] = rel["duplicate_arrivals"] / n
    r["spurious_per_msg"] = rel.get("spurious_per_message")
    r["data_bytes"], r["ack_bytes"] = rel.get("data_bytes"), rel.get("ack_bytes")
    if r["data_bytes"] and r["ack_bytes"] is not None:
        r["ack_byte_pct"] = pct(r["ack_bytes"], r["data_bytes"])
    kind = "unordered" if a.peer.endswith("unordered") else "ordered"
    r["latency_kind"] = kind
    lat = rel.get(f"latency_{kind}") or {}
    for k in ("mean", "p50", "p99", "max"):
        v = lat.get(f"{k}_ns")
        r[f"lat_{k}_ms"] = v / 1e6 if isinstance(v, (int, float)) else None
    gp = rel.get("goodput_bps")
    r["goodput_mbps"] = gp / 1e6 if isinstance(gp, (int, float)) else None
    r["mode"] = rel.get("mode")


def rel_tcp(a, r):
    snd, rcv = load_json(a.send), load_json(a.recv)
    if not rcv:
        r["skip"] = "the TCP receiver wrote no figures (see the raw logs)"
        return
    r["delivered"] = rcv.get("delivered")
    lat = rcv.get("latency_ms") or {}
    for k in ("mean", "p50", "p99", "max"):
        r[f"lat_{k}_ms"] = lat.get(k)
    r["goodput_mbps"] = rcv.get("goodput_bps", 0) / 1e6
    r["latency_kind"] = "ordered (stream)"
    if rcv.get("complete") is False:
        r["note"] = (f"the stream had delivered only {rcv.get('delivered')} messages when the "
                     f"receiver's {rcv.get('max_s'):.0f} s bound ran out")
    if snd and snd.get("tcp_total_retrans") is not None:
        r["retx_per_msg"] = snd["tcp_total_retrans"] / a.count
        r["retx_note"] = "TCP segments retransmitted (tcpi_total_retrans) per message"
    nft = load_json(a.nft)
    if nft:
        counters = {}
        for item in nft.get("nftables", []):
            c = item.get("counter")
            if c:
                counters[c["name"]] = c
        if counters:
            r["nft_fwd_packets"] = counters.get("fwd_in", {}).get("packets")
            r["nft_rev_packets"] = counters.get("rev_in", {}).get("packets")
            r["nft_fwd_bytes"] = counters.get("fwd_in", {}).get("bytes")
            r["nft_rev_bytes"] = counters.get("rev_in", {}).get("bytes")
            r["nft_dropped"] = counters.get("dropped", {}).get("packets")


def cmd_reliable_record(a):
    r = {"case": a.case, "impair": a.impair or "none", "peer": a.peer, "count": a.count, "rc": a.rc}
    if a.skip:
        r["skip"] = a.skip
    else:
        {"kcp": rel_kcp, "udplab": rel_udplab, "tcp": rel_tcp}[a.kind](a, r)
        if a.proxy:
            proxy_fields(r, a.proxy)
    with open(a.records, "a") as f:
        f.write(json.dumps(r) + "\n")


REL_PEERS = ["udplab-ordered", "udplab-unordered", "kcp-eager", "kcp-stock", "tcp"]
REL_COLS = [
    ("peer", "peer"), ("delivered", "delivered"), ("retx_per_msg", "retx/msg"),
    ("dup_per_msg", "dup arrivals/msg"), ("ack_byte_pct", "ACK B / data B %"),
    ("proxy_ack_dgram_pct", "ACK dg / data dg % (proxy)"), ("lat_mean_ms", "lat mean ms"),
    ("lat_p50_ms", "lat p50 ms"), ("lat_p99_ms", "lat p99 ms"), ("lat_max_ms", "lat max ms"),
    ("goodput_mbps", "goodput Mbit/s"), ("wire", "datagrams fwd/rev (dropped)"),
]
# Lower is better for these; a row "KCP wins" where the best KCP drive is lower than udplab's.
REL_COMPARE = [("retx_per_msg", "retransmissions/msg"), ("dup_per_msg", "duplicate arrivals/msg"),
               ("ack_byte_pct", "ACK bytes/data bytes %"), ("lat_mean_ms", "latency mean ms"),
               ("lat_p50_ms", "latency p50 ms"), ("lat_p99_ms", "latency p99 ms"),
               ("lat_max_ms", "latency max ms")]


def _targets(retx, dup, p99, mx, up99):
    return {
        "udplab-ordered": [("delivered", "delivered", None), ("retx_per_msg", "retx/msg", retx),
                           ("dup_per_msg", "dup arrivals/msg", dup),
                           ("ack_byte_pct", "ACK B / data B %", 2.0),
                           ("lat_p99_ms", "ordered p99 ms", p99),
                           ("lat_max_ms", "ordered max ms", mx)],
        "udplab-unordered": [("delivered", "delivered", None),
                             ("lat_p99_ms", "unordered p99 ms", up99)],
    }


# Issue 10's targets per case (ms, per message, %).
REL_TARGETS = {
    "loss1": _targets(0.0105, 0.0001, 2.5, 5, 2),
    "loss5": _targets(0.055, 0.001, 3, 7, 2),
    "loss20": _targets(0.27, 0.002, 8, 30, 7),
    "ge5": _targets(0.057, 0.001, 8, 20, 7),
    "loss5-delay20": {
        "udplab-ordered": [("delivered", "delivered", None),
                           ("lat_mean_ms", "ordered mean ms", 50),
                           ("lat_p99_ms", "ordered p99 ms", 100),
                           ("lat_max_ms", "ordered max ms", 145)],
        "udplab-unordered": [("delivered", "delivered", None),
                             ("lat_p99_ms", "unordered p99 ms", 70)],
    },
}


def rel_cell(r, k):
    if k == "wire":
        if r.get("proxy_fwd_in") is not None:
            return (f"{r['proxy_fwd_in']} ({r['proxy_fwd_dropped']}) / "
                    f"{r['proxy_rev_in']} ({r['proxy_rev_dropped']})")
        if r.get("nft_fwd_packets") is not None:
            return f"{r['nft_fwd_packets']} / {r['nft_rev_packets']} ({r.get('nft_dropped') or 0} both, nft)"
        return ""
    if k == "delivered":
        v = r.get("delivered")
        return "" if v is None else f"{v}/{r['count']}"
    v = r.get(k)
    if v is None:
        return ""
    if k in ("retx_per_msg", "dup_per_msg"):
        return f"{v:.4f}"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def cmd_reliable_report(a):
    with open(a.records) as f:
        recs = [json.loads(l) for l in f if l.strip()]
    cases = []
    for r in recs:
        if r["case"] not in cases:
            cases.append(r["case"])
    md = []
    md.append("\n## How it was run\n")
    md.append(f"- {a.count} messages of 1200 B at 1000 messages/s per run; every UDP peer through "
              "`udplab proxy --listen 127.0.0.1:0 --to RECEIVER --impair X,seed="
              f"{a.fwd_seed} --reverse-impair X,seed={a.rev_seed} --interval 0 --json F` "
              "(the same seeds for every peer: the same loss pattern per direction).")
    md.append("- KCP: `kcp_peer kcp-recv --bind 127.0.0.1:0 --count N --drive D`, then "
              "`kcp_peer kcp-send PROXY --count N --drive D` (benches/kcp_peer.rs: kcp 0.6, "
              "`set_nodelay(true, 10, 2, true)`, `set_wndsize(256, 256)`, MTU 1400; stock: "
              "`update()` every 1 ms; eager: also `flush()` after every `send()` and `input()`; "
              "waits are ppoll(2) of at most 1 ms).")
    md.append("- udplab: `udplab recv --bind 127.0.0.1:0 --once --quiet --json F`, then "
              "`udplab send PROXY --reliable ordered|unordered --pps 1000 --size 1200 --count N "
              "--json F --quiet`.")
    md.append("- TCP (informational): `kcp_peer tcp-recv` in namespace B, `kcp_peer tcp-send` "
              "(TCP_NODELAY, one write per message) in A, routed through namespace R whose "
              "nftables forward chain drops `numgen random mod 10000 < 100·loss%` (both "
              "directions); GE 5% is `tc netem loss gemodel 1.316% 25% 100% 0%` and delay=20ms "
              "`netem delay 20ms` on both of R's egress links. Counts in `wire` come from R's "
              "nftables counters; retx/msg is the sender's tcpi_total_retrans per message.")
    md.append("- Latency: one-way, for KCP and TCP from the time the message was due by the "
              "1000/s schedule (its wall-clock stamp in the message: a TCP writer blocked on a "
              "full send buffer shows in it), for udplab from the message's first send, to its "
              "delivery to the receiving application, in order for "
              "KCP, TCP and udplab-ordered, as it arrives for udplab-unordered. ACK B / data B: "
              "bytes each end wrote (UDP payload), acknowledgement side over data side. "
              "retx/msg for KCP: PUSH segments sent beyond the first of each message (parsed "
              "from the datagrams the sender wrote); dup arrivals: PUSH segments the receiver "
              "had already seen. `wire`: datagrams the proxy received from the sender (fwd) and "
              "from the receiver (rev), with what its impairment dropped.")
    md.append("\n## Results\n")
    for case in cases:
        rows = [r for r in recs if r["case"] == case]
        rows.sort(key=lambda r: REL_PEERS.index(r["peer"]) if r["peer"] in REL_PEERS else 99)
        md.append(f"\n### {case}: `{rows[0]['impair']}` both ways\n")
        md.append("| " + " | ".join(h for _, h in REL_COLS) + " |")
        md.append("|" + "|".join("---" for _ in REL_COLS) + "|")
        skips = []
        for r in rows:
            if r.get("skip"):
                skips.append(f"- {r['peer']}: not measured: {r['skip']}")
                continue
            md.append("| " + " | ".join(rel_cell(r, k) for k, _ in REL_COLS) + " |")
            if r.get("note"):
                skips.append(f"- {r['peer']}: {r['note']}")
            if r.get("recv_delivered") is not None and r["recv_delivered"] != r.get("delivered"):
                skips.append(f"- {r['peer']}: the receiver counts {r['recv_delivered']} delivered, "
                             f"the sender's report {r.get('delivered')}")
        md.extend([""] + skips if skips else [])
    md.append("\n## udplab --reliable against the issue's targets\n")
    md.append("Issue 10's target table (the bracketed KCP figures there came from another run); "
              "PASS/FAIL per figure of this run.\n")
    tlines = []
    for case in cases:
        by = {r["peer"]: r for r in recs if r["case"] == case and not r.get("skip")}
        for peer, checks in REL_TARGETS.get(case, {}).items():
            r = by.get(peer)
            if r is None:
                tlines.append(f"- **N/A** {case} {peer}: not measured")
                continue
            for k, name, limit in checks:
                v = r.get(k)
                if k == "delivered" and v is not None:
                    ok = v == r["count"]
                    tlines.append(f"- **{'PASS' if ok else 'FAIL'}** {case} {peer}: delivered "
                                  f"{v}/{r['count']}")
                    continue
                if v is None:
                    tlines.append(f"- **N/A** {case} {peer}: {name} not measured")
                    continue
                ok = v <= limit
                tlines.append(f"- **{'PASS' if ok else 'FAIL'}** {case} {peer}: {name} "
                              f"{v:.4g} (target <= {limit:g})")
    md.extend(tlines or ["- no udplab --reliable rows in this run"])
    md.append("\n## Where KCP wins\n")
    md.append("Each figure (lower is better) where the better of the two KCP drives beats "
              "udplab --reliable ordered (KCP delivers in order too) in the same run, with the "
              "margin.\n")
    wins = []
    for case in cases:
        by = {r["peer"]: r for r in recs if r["case"] == case and not r.get("skip")}
        kcps = [by[p] for p in ("kcp-eager", "kcp-stock") if p in by]
        ud = by.get("udplab-ordered")
        if not kcps or not ud:
            wins.append(f"- {case}: no comparison (udplab --reliable or KCP not measured)")
            continue
        for k, name in REL_COMPARE:
            uv = ud.get(k)
            cands = [(r.get(k), r["peer"]) for r in kcps if r.get(k) is not None]
            if uv is None or not cands:
                continue
            kv, kp = min(cands)
            if kv < uv:
                rel = f", {100 * (uv - kv) / uv:.0f}% lower" if uv else ""
                wins.append(f"- {case}: {name}: {kp} {kv:.4g} vs udplab-ordered {uv:.4g} "
                            f"(by {uv - kv:.4g}{rel})")
    if not wins:
        wins.append("- none: udplab --reliable is at least as good on every figure compared")
    md.extend(wins)
    with open(a.md, "a") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


# ---------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("free-port")

    r = sub.add_parser("record")
    r.add_argument("kind", choices=["udplab", "iperf3", "iperf2", "sockperf", "ceiling"])
    r.add_argument("--records", required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--tool", required=True)
    r.add_argument("--case", required=True)
    r.add_argument("--rep", type=int, default=1)
    r.add_argument("--offered", default="")
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--size", type=int, required=True)
    r.add_argument("--json")
    r.add_argument("--client")
    r.add_argument("--server")
    r.add_argument("--recv-json")
    r.add_argument("--send-json")
    r.add_argument("--stime")
    r.add_argument("--rtime")
    r.add_argument("--stat0")
    r.add_argument("--stat1")
    r.add_argument("--capture")
    r.add_argument("--nominal-gap-us", type=float)
    r.add_argument("--target-pps", type=float)
    r.add_argument("--note")
    r.add_argument("--rc", type=int, default=0)

    c = sub.add_parser("capture")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--size", type=int, default=0, help="datagram payload size (GSO splitting)")
    c.add_argument("--out", required=True)
    c.add_argument("--ready", required=True)
    c.add_argument("--max-seconds", type=float, default=30)
    c.add_argument("--idle", type=float, default=1.5)

    cr = sub.add_parser("ceiling-recv")
    cr.add_argument("--out", required=True)
    cr.add_argument("--rcvbuf", type=int, default=4 << 20)
    cr.add_argument("--batch", type=int, default=64)
    cr.add_argument("--max-seconds", type=float, default=30)
    cr.add_argument("--idle", type=float, default=1.0)
    cr.add_argument("--gro", action="store_true", help="UDP_GRO and recvmsg instead of recvmmsg")

    cs = sub.add_parser("ceiling-send")
    cs.add_argument("target")
    cs.add_argument("--out", required=True)
    cs.add_argument("--size", type=int, default=64)
    cs.add_argument("--segments", type=int, default=64)
    cs.add_argument("--sndbuf", type=int, default=4 << 20)
    cs.add_argument("--duration", type=float, default=10)
    cs.add_argument("--pps", type=float, help="paced: datagrams per second")
    cs.add_argument("--plain", action="store_true", help="one send() per datagram (no GSO)")

    rr = sub.add_parser("reliable-record")
    rr.add_argument("--records", required=True)
    rr.add_argument("--case", required=True)
    rr.add_argument("--impair", default="")
    rr.add_argument("--peer", required=True)
    rr.add_argument("--kind", choices=["kcp", "udplab", "tcp"], required=True)
    rr.add_argument("--count", type=int, required=True)
    rr.add_argument("--send")
    rr.add_argument("--recv")
    rr.add_argument("--send-err")
    rr.add_argument("--proxy")
    rr.add_argument("--nft")
    rr.add_argument("--skip")
    rr.add_argument("--rc", type=int, default=0)

    rq = sub.add_parser("reliable-report")
    rq.add_argument("--records", required=True)
    rq.add_argument("--md", required=True)
    rq.add_argument("--count", type=int, required=True)
    rq.add_argument("--fwd-seed", type=int, required=True)
    rq.add_argument("--rev-seed", type=int, required=True)

    rp = sub.add_parser("report")
    rp.add_argument("--records", required=True)
    rp.add_argument("--csv", required=True)
    rp.add_argument("--md", required=True)

    a = p.parse_args()
    if a.cmd == "free-port":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # iperf3 needs the TCP port free too: look for one free in both.
        for _ in range(50):
            try:
                t.bind(("127.0.0.1", s.getsockname()[1]))
                break
            except OSError:
                s.close()
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    elif a.cmd == "record":
        cmd_record(a)
    elif a.cmd == "capture":
        cmd_capture(a)
    elif a.cmd == "ceiling-recv":
        cmd_ceiling_recv(a)
    elif a.cmd == "ceiling-send":
        cmd_ceiling_send(a)
    elif a.cmd == "report":
        cmd_report(a)
    elif a.cmd == "reliable-record":
        cmd_reliable_record(a)
    elif a.cmd == "reliable-report":
        cmd_reliable_report(a)


if __name__ == "__main__":
    sys.exit(main())
