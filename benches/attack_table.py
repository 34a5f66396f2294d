#!/usr/bin/env python3
"""Reruns the hostile-stranger attack table of issue 7 against a built udplab, on loopback only.

Each row starts its own `udplab recv --bind 127.0.0.1:0` (or proxy), runs a real test where the
row needs one, plays the stranger from its own socket with hand-made datagrams in the documented
wire format (src/wire.rs, version 2), and prints what happened as figures. Rows that forge a
source address use a raw socket and need root; they say so and skip otherwise. Every process and
wait is bounded. Standard library only.

    cargo build --release && python3 benches/attack_table.py [target/release/udplab]
"""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

UDPLAB = sys.argv[1] if len(sys.argv) > 1 else "target/release/udplab"
MAGIC, VERSION = 0x5544, 2
DATA, HELLO, HELLO_ACK, FIN, RESULT_REQ, RESULT_CHUNK, ABORT = 1, 16, 17, 18, 20, 21, 22


def prefix(kind, sid, version=VERSION):
    return struct.pack(">HBBI", MAGIC, version, kind, sid)


def hello(sid, tmax_ns=1_000_000_000, rate_bps=10_000_000, pps_milli=1_000_000, cookie=0,
          count=0, duration_ns=10_000_000_000, size=1200):
    return prefix(HELLO, sid) + struct.pack(
        ">IIQQQQQQQ", size, 0, 1_000_000_000, tmax_ns, count, duration_ns, rate_bps, pps_milli,
        cookie)


def fin(sid, total, secret=0):
    return prefix(FIN, sid) + struct.pack(">QQQQ", total, total * 1200, 0, secret)


def result_req(sid, secret=0):
    return prefix(RESULT_REQ, sid) + struct.pack(">Q", secret)


def abort(sid, secret=0):
    return prefix(ABORT, sid) + bytes([1]) + bytes(7) + struct.pack(">Q", secret)


def data(sid, seq):
    return prefix(DATA, sid) + struct.pack(">QQ", seq, time.time_ns()) + bytes(1176)


def hello_ack(buf):
    """(status, reason, retry_after_s, cookie, secret, limit) of a HelloAck, or None."""
    if len(buf) < 44 or buf[3] != HELLO_ACK:
        return None
    status, reason, retry = struct.unpack(">BBH", buf[8:12])
    cookie, secret, limit = struct.unpack(">QQQ", buf[20:44])
    return status, reason, retry, cookie, secret, limit


class Recv:
    """A `udplab recv` child on 127.0.0.1 whose stdout lines are collected as they come."""

    def __init__(self, *extra):
        self.p = subprocess.Popen([UDPLAB, "recv", "--bind", "127.0.0.1:0", "-q", *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.p.stdout.readline()
        host, port = first.split("listening on ")[1].strip().rsplit(":", 1)
        self.addr = (host, int(port))
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line)

    def wait_line(self, needle, limit=10.0):
        end = time.time() + limit
        while time.time() < end:
            for line in list(self.lines):
                if needle in line:
                    return line
            time.sleep(0.01)
        return None

    def rss_kib(self):
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1])
        return -1

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()


def stranger(timeout=0.05):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def drain(s, seconds):
    """Bytes and datagrams that reach `s` within `seconds`."""
    end, total, n = time.time() + seconds, 0, 0
    while time.time() < end:
        try:
            total += len(s.recv(65535))
            n += 1
        except (socket.timeout, BlockingIOError):
            pass
    return total, n


def send(addr, *args, limit=60):
    cmd = [UDPLAB, "send", "%s:%d" % addr, "-q", "--json", "-", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p


def finish(p, limit=60):
    out, err = p.communicate(timeout=limit)
    try:
        doc = json.loads(out)
        flow = doc["flows"][0]
    except (ValueError, KeyError, IndexError):
        flow = None
    return p.returncode, flow, err.strip()


def figures(flow):
    if not flow or not flow.get("receiver"):
        return "no receiver results"
    st, rx = flow["receiver"]["stats"], flow["receiver"]
    return (f"sent {flow['sender']['sent']} received {st['received']} lost {st['lost']} "
            f"implausible {st.get('implausible', '-')} foreign {rx['foreign_datagrams']} "
            f"rcvbuf_drops {rx['rcvbuf_drops']}")


def row(title):
    print(f"\n## {title}", flush=True)


def raw_socket():
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        return None


def forged(raw, src, dst, payload):
    """One UDP datagram from `src` to `dst` (both (ip, port)), IP header ours (IP_HDRINCL)."""
    udp = struct.pack(">HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), random.randrange(65536), 0, 64,
                     socket.IPPROTO_UDP, 0, socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    raw.sendto(ip + udp, (dst[0], 0))


def main():
    random.seed(7)

    row("1. ResultReq for a finished test's id, from any port")
    r = Recv()
    rc, flow, _ = finish(send(r.addr, "-n", "20000", "--pps", "20000", "-i", "100ms"))
    sid = int(r.wait_line("test ").split()[1], 16)
    s = stranger()
    sent_bytes = 0
    for _ in range(300):
        for msg in (result_req(sid), result_req(sid, random.getrandbits(64)),
                    prefix(RESULT_REQ, sid, version=1)):
            s.sendto(msg, r.addr)
            sent_bytes += len(msg)
        time.sleep(0.01)
    got, n = drain(s, 1.0)
    print(f"real test exit {rc}; stranger sent {sent_bytes} bytes of ResultReq (900 datagrams, "
          f"v2 without/with a guessed secret and v1): got back {got} bytes in {n} datagrams")
    r.stop()

    row("2. The same request with a forged source address")
    raw = raw_socket()
    if raw is None:
        print("skipped: forging a source address needs root (raw socket)")
    else:
        r = Recv()
        finish(send(r.addr, "-n", "20000", "--pps", "20000", "-i", "100ms"))
        sid = int(r.wait_line("test ").split()[1], 16)
        victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        victim.bind(("127.0.0.9", 0))
        victim.settimeout(0.05)
        sent_bytes = 0
        for _ in range(45):
            msg = result_req(sid)
            forged(raw, victim.getsockname(), r.addr, msg)
            sent_bytes += len(msg)
        got, n = drain(victim, 1.0)
        print(f"45 ResultReq ({sent_bytes} bytes) forged from {victim.getsockname()}: the victim "
              f"received {got} bytes in {n} datagrams")
        # Forged Hellos: their stateless answers reach the victim, each smaller than the Hello.
        sent_bytes = 0
        for _ in range(10):
            msg = hello(random.getrandbits(32))
            forged(raw, victim.getsockname(), r.addr, msg)
            sent_bytes += len(msg)
        got, n = drain(victim, 1.0)
        print(f"10 Hellos ({sent_bytes} bytes) forged from it: the victim received {got} bytes "
              f"in {n} datagrams (the receiver kept nothing)")
        r.stop()

    row("3. Abort or Fin from a stranger who knows the session id, during a real test")
    for name, msgs in [("Abort", lambda sid: [abort(sid), abort(sid, random.getrandbits(64))]),
                       ("Fin total 10^9", lambda sid: [fin(sid, 10**9)]),
                       ("Fin total 100", lambda sid: [fin(sid, 100)])]:
        r = Recv()
        p = send(r.addr, "-n", "40000", "--pps", "20000")
        sid = int(r.wait_line("test ").split()[1], 16)
        s = stranger()
        for _ in range(20):
            for m in msgs(sid):
                s.sendto(m, r.addr)
            time.sleep(0.05)
        rc, flow, err = finish(p)
        print(f"{name}: real sender exit {rc}; {figures(flow)}")
        r.stop()

    row("4. 16 Hellos with Tmax 600 s and the largest rate, then a far-ahead Data each")
    r = Recv()
    rss0 = r.rss_kib()
    answers = {}
    for i in range(16):
        s = stranger(0.3)
        sid = random.getrandbits(32)
        h = hello(sid, tmax_ns=600 * 10**9, rate_bps=2**63, pps_milli=2**63)
        s.sendto(h, r.addr)
        try:
            ack = hello_ack(s.recv(2048))
        except socket.timeout:
            ack = None
        if ack and ack[0] == 3:  # retry with the cookie: a stranger can validate its own address
            s.sendto(hello(sid, tmax_ns=600 * 10**9, rate_bps=2**63, pps_milli=2**63,
                           cookie=ack[3]), r.addr)
            try:
                ack = hello_ack(s.recv(2048))
            except socket.timeout:
                ack = None
        answers[ack[:2] if ack else None] = answers.get(ack[:2] if ack else None, 0) + 1
        s.sendto(data(sid, 2**30 - 1), r.addr)
    time.sleep(0.5)
    print(f"answers (status, reason): {answers}; receiver RSS {rss0} KiB before, "
          f"{r.rss_kib()} KiB after")
    # The largest Tmax allowed (60 s) and a large rate, validated: the memory budget decides.
    answers = {}
    for i in range(16):
        s = stranger(0.3)
        sid = random.getrandbits(32)
        args = dict(tmax_ns=60 * 10**9, rate_bps=10**11, pps_milli=10**10 * 1000)
        s.sendto(hello(sid, **args), r.addr)
        ack = hello_ack(s.recv(2048))
        if ack and ack[0] == 3:
            s.sendto(hello(sid, cookie=ack[3], **args), r.addr)
            ack = hello_ack(s.recv(2048))
        answers[ack[:2]] = answers.get(ack[:2], 0) + 1
        if ack[0] == 0:
            s.sendto(data(sid, 2**30 - 1), r.addr)
    time.sleep(0.5)
    rc, flow, _ = finish(send(r.addr, "-n", "2000", "--pps", "10000"))
    print(f"Tmax 60 s, 10^10 datagrams/s: answers {answers}; RSS now {r.rss_kib()} KiB; "
          f"a real test right after: exit {rc}, {figures(flow)}")
    r.stop()

    row("5. Lockout: 16 Hellos; Hello+Fin with Tmax 600 s; recv --once")
    r = Recv()
    s = stranger()
    for _ in range(16):
        sid = random.getrandbits(32)
        s.sendto(hello(sid, tmax_ns=600 * 10**9), r.addr)
        s.sendto(fin(sid, 10), r.addr)
    t0 = time.time()
    rc, flow, err = finish(send(r.addr, "-n", "2000", "--pps", "10000"))
    print(f"16 unvalidated Hello+Fin: a real sender then: exit {rc} after {time.time() - t0:.2f} s"
          f"; {figures(flow)}")
    # 16 strangers that validate their own addresses and go silent.
    for _ in range(16):
        t = stranger(0.3)
        sid = random.getrandbits(32)
        t.sendto(hello(sid), r.addr)
        ack = hello_ack(t.recv(2048))
        if ack and ack[0] == 3:
            t.sendto(hello(sid, cookie=ack[3]), r.addr)
            t.recv(2048)
    t0 = time.time()
    rc, flow, err = finish(send(r.addr, "-n", "2000", "--pps", "10000"))
    first = err.splitlines()[-1] if err else ""
    print(f"16 validated silent strangers: a real sender: exit {rc} ({first})")
    deadline = time.time() + 30
    while time.time() < deadline:
        rc, flow, err = finish(send(r.addr, "-n", "2000", "--pps", "10000"))
        if rc == 0:
            break
        time.sleep(0.5)
    print(f"  served again {time.time() - t0:.1f} s after they went silent: exit {rc}, "
          f"{figures(flow)}")
    r.stop()
    r = Recv("--once")
    s = stranger()
    sid = random.getrandbits(32)
    for m in (hello(sid), hello(sid, tmax_ns=600 * 10**9), fin(sid, 5)):
        s.sendto(m, r.addr)
    time.sleep(0.5)
    alive = r.p.poll() is None
    rc, flow, _ = finish(send(r.addr, "-n", "2000", "--pps", "10000"))
    try:
        r.p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    print(f"recv --once after a stranger's 3 datagrams: still running {alive}; the real test: "
          f"exit {rc}, {figures(flow)}; recv then exited {r.p.returncode}")
    r.stop()

    row("6. One Data with a far-ahead sequence in the middle of a real test")
    for spoof in (False, True):
        raw = raw_socket() if spoof else None
        if spoof and raw is None:
            print("forged-source variant skipped: needs root")
            continue
        r = Recv()
        p = send(r.addr, "-n", "20000", "--pps", "10000")
        line = r.wait_line("test ")
        sid = int(line.split()[1], 16)
        peer = line.split(" from ")[1].split(":")
        peer = (peer[0], int(peer[1].split()[0]))
        time.sleep(0.5)
        for seq in (300_000, 10**9):
            if spoof:
                forged(raw, peer, r.addr, data(sid, seq))
            else:
                stranger().sendto(data(sid, seq), r.addr)
        rc, flow, _ = finish(p)
        how = f"forged from the sender's own address {peer}" if spoof else "from another port"
        print(f"{how}: exit {rc}; {figures(flow)}")
        r.stop()

    row("7. 1,024 one-datagram clients at udplab proxy, then a real test through it")
    r = Recv()
    px = subprocess.Popen([UDPLAB, "proxy", "--listen", "127.0.0.1:0", "--to", "%s:%d" % r.addr,
                           "--interval", "0", "--client-idle", "5s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    host, port = px.stdout.readline().split("on ")[1].split(",")[0].rsplit(":", 1)
    paddr = (host, int(port))
    clients = [stranger() for _ in range(1024)]
    for c in clients:
        c.sendto(b"stranger", paddr)
    time.sleep(1.0)
    threads = [l for l in open(f"/proc/{px.pid}/status") if l.startswith("Threads")][0].split()[1]
    fds = len(os.listdir(f"/proc/{px.pid}/fd"))
    for c in clients:
        c.close()
    rc, flow, err = finish(send(paddr, "-n", "2000", "--pps", "10000"))
    print(f"proxy (--client-idle 5s) after 1,024 clients: {threads} threads, {fds} open files; "
          f"a real test through it at once: exit {rc} {err.splitlines()[-1] if rc else ''}")
    time.sleep(7)
    rc, flow, err = finish(send(paddr, "-n", "2000", "--pps", "10000"))
    print(f"  7 s later (the strangers expired): exit {rc}, {figures(flow)}")
    px.send_signal(signal.SIGINT)
    out, _ = px.communicate(timeout=20)
    print("proxy summary:", " ".join(out.split())[:300])
    r.stop()

    # With a key, strangers without it never take a client's place.
    key = "/tmp/attack_table.key"
    with open(key, "w") as f:
        f.write("a shared key of thirty-two bytes\n")
    r = Recv("--key", key)
    px = subprocess.Popen([UDPLAB, "proxy", "--listen", "127.0.0.1:0", "--to", "%s:%d" % r.addr,
                           "--interval", "0", "--key", key], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    host, port = px.stdout.readline().split("on ")[1].split(",")[0].rsplit(":", 1)
    paddr = (host, int(port))
    clients = [stranger() for _ in range(1024)]
    for c in clients:
        c.sendto(b"stranger", paddr)
        c.close()
    rc, flow, err = finish(send(paddr, "-n", "2000", "--pps", "10000", "--key", key))
    px.send_signal(signal.SIGINT)
    out, _ = px.communicate(timeout=20)
    print(f"proxy --key after 1,024 unkeyed clients: a keyed real test at once: exit {rc}, "
          f"{figures(flow)}")
    print("proxy summary:", " ".join(out.split())[:300])
    r.stop()

    row("8. --seed N twice within 30 s")
    r = Recv()
    rcs = []
    for _ in range(2):
        rc, flow, err = finish(send(r.addr, "-n", "1000", "--pps", "10000", "--seed", "42"))
        rcs.append((rc, flow["run_id"] if flow else err))
    print(f"two runs with --seed 42: {rcs}")
    r.stop()


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)) + "/..")
    main()
