//! Network-namespace test: the loss udplab reports equals the drops the kernel counts.
//!
//! Three namespaces A → R → B joined by veth pairs; R forwards, and its egress toward B is the
//! bottleneck. udplab's control messages cross the same bottleneck, so raw qdisc drops would mix
//! data and control. Instead an htb root on R sends the data datagrams (classified by their IP
//! total length, which no control message has) into a rate-limited class whose small pfifo is
//! the only place on the path where data can be dropped; everything else goes to a roomy default
//! class. udplab's `lost` must then equal exactly that pfifo's drops plus the receiver socket's
//! drops (RcvbufErrors in B) plus the sender's failed sends.
//!
//! Needs root, `ip` and `tc`; without them (or without permission to make namespaces) the test
//! prints why and passes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::common::wait_bounded;

/// UDP payload of each data datagram. No udplab control message from sender to receiver has
/// this size (Hello 64, Fin 32, ResultReq 8, Abort 9), so the IP length below is data only.
const PAYLOAD: u64 = 1200;
/// IPv4 total length of a data datagram: IP header + UDP header + payload.
const DATA_IP_LEN: u64 = 20 + 8 + PAYLOAD;
/// The data class's rate on R, as tc spells it and in bit/s (htb counts the 14-byte Ethernet
/// header too).
const BOTTLENECK_TC: &str = "100mbit";
const BOTTLENECK_BPS: f64 = 100e6;
/// What the sender offers: twice the bottleneck, in UDP payload bit/s.
const OFFERED: &str = "200M";
const OFFERED_BPS: f64 = 200e6;
const DURATION: &str = "3s";
/// Packets the data class may queue; a short queue keeps delays far below Tmax (1 s).
const DATA_QUEUE_LIMIT: u32 = 50;

const A_ADDR: &str = "198.18.0.1";
const R_ADDR_A: &str = "198.18.0.2";
const R_ADDR_B: &str = "198.18.1.2";
const B_ADDR: &str = "198.18.1.1";
const A_NET: &str = "198.18.0.0/24";
const B_NET: &str = "198.18.1.0/24";

/// The udplab binary under test, run inside the namespaces through `ip netns exec`.
const UDPLAB: &str = env!("CARGO_BIN_EXE_udplab");
/// Bound on each `ip`/`tc`/`cat` command.
const CMD_LIMIT: Duration = Duration::from_secs(10);

/// Distinguishes labs made by one test process.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The namespaces and processes one test made; all removed on drop, pass or fail.
struct Lab {
    a: String,
    r: String,
    b: String,
    /// R's interface toward A and toward B (the bottleneck); A's and B's own interfaces.
    if_ra: String,
    if_rb: String,
    if_a: String,
    if_b: String,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
    /// Processes started inside the namespaces (killed on drop).
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let ns = |role: &str| format!("udplab-{pid}-{seq}-{role}");
        // Interface names have at most 15 bytes: "ul" + pid (≤ 7 digits) + "x" + seq + 2.
        let link = |end: &str| format!("ul{pid}x{seq}{end}");
        Lab {
            a: ns("a"),
            r: ns("r"),
            b: ns("b"),
            if_a: link("ar"),
            if_ra: link("ra"),
            if_rb: link("rb"),
            if_b: link("br"),
            created: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates the namespaces, links, addresses, routes and the bottleneck. `Err` says why the
    /// test cannot run here (a missing kernel feature or permission), which is a skip.
    fn build(&mut self) -> Result<(), String> {
        for ns in [self.a.clone(), self.r.clone(), self.b.clone()] {
            try_run(&mut command(&format!("ip netns add {ns}")))?;
            self.created.push(ns.clone());
            try_run(&mut command(&format!("ip netns exec {ns} true")))?;
        }
        // Each end of a veth pair is created directly inside its namespace.
        for (end1, ns1, end2, ns2) in [
            (&self.if_a, &self.a, &self.if_ra, &self.r),
            (&self.if_rb, &self.r, &self.if_b, &self.b),
        ] {
            try_run(&mut command(&format!(
                "ip link add {end1} netns {ns1} type veth peer name {end2} netns {ns2}"
            )))?;
        }

        // Set-up below uses only what the steps above proved to work: a failure is a bug.
        for (ns, dev, addr) in [
            (&self.a, &self.if_a, A_ADDR),
            (&self.r, &self.if_ra, R_ADDR_A),
            (&self.r, &self.if_rb, R_ADDR_B),
            (&self.b, &self.if_b, B_ADDR),
        ] {
            must_run(&mut command(&format!(
                "ip -n {ns} addr add {addr}/24 dev {dev}"
            )));
            must_run(&mut command(&format!("ip -n {ns} link set {dev} up")));
        }
        for ns in [&self.a, &self.r, &self.b] {
            must_run(&mut command(&format!("ip -n {ns} link set lo up")));
        }
        // Routes only between the test's own namespaces; no default route anywhere.
        let (a, r, b) = (&self.a, &self.r, &self.b);
        must_run(&mut command(&format!(
            "ip -n {a} route add {B_NET} via {R_ADDR_A}"
        )));
        must_run(&mut command(&format!(
            "ip -n {b} route add {A_NET} via {R_ADDR_B}"
        )));
        let forwarding_on = "echo 1 > /proc/sys/net/ipv4/ip_forward";
        must_run(Command::new("ip").args(["netns", "exec", r, "sh", "-c", forwarding_on]));

        // The bottleneck: htb on R toward B. Class 1:10 (data only) is rate-limited with a
        // short pfifo; the default class 1:20 (control, ARP, anything else) has ample rate.
        // The u32 filter matches UDP to B whose IP total length (header bytes 2..4) is a data
        // datagram's.
        let dev = &self.if_rb;
        let tc = format!("ip netns exec {r} tc");
        for step in [
            format!("qdisc add dev {dev} root handle 1: htb default 20"),
            format!(
                "class add dev {dev} parent 1: classid 1:10 htb rate {BOTTLENECK_TC} \
                 ceil {BOTTLENECK_TC} quantum 1514"
            ),
            format!(
                "class add dev {dev} parent 1: classid 1:20 htb rate 1gbit ceil 1gbit quantum 1514"
            ),
            format!("qdisc add dev {dev} parent 1:10 handle 10: pfifo limit {DATA_QUEUE_LIMIT}"),
            format!("qdisc add dev {dev} parent 1:20 handle 20: pfifo limit 1000"),
            format!(
                "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff \
                 match ip dst {B_ADDR}/32 match u16 {DATA_IP_LEN} 0xffff at 2 flowid 1:10"
            ),
        ] {
            try_run(&mut command(&format!("{tc} {step}")))?;
        }
        Ok(())
    }

    /// Every kernel counter the comparison uses, read now.
    fn counters(&self) -> Counters {
        let snmp_a = snmp(&self.a);
        let snmp_r = snmp(&self.r);
        let snmp_b = snmp(&self.b);
        let qdiscs = qdisc_stats(&self.r, &self.if_rb);
        let q = |handle: &str| {
            *qdiscs
                .get(handle)
                .unwrap_or_else(|| panic!("no qdisc {handle} on {}: {qdiscs:?}", self.if_rb))
        };
        let link_drops = netdev_drops(&self.a, &self.if_a)
            + netdev_drops(&self.r, &self.if_ra)
            + netdev_drops(&self.r, &self.if_rb)
            + netdev_drops(&self.b, &self.if_b);
        Counters {
            data_leaf: q("10:"),
            default_leaf: q("20:"),
            htb_root: q("1:"),
            b_rcvbuf_errors: snmp_b["Udp.RcvbufErrors"],
            b_in_errors: snmp_b["Udp.InErrors"],
            b_in_datagrams: snmp_b["Udp.InDatagrams"],
            a_sndbuf_errors: snmp_a["Udp.SndbufErrors"],
            ip_discards: snmp_r["Ip.InDiscards"]
                + snmp_r["Ip.OutDiscards"]
                + snmp_b["Ip.InDiscards"]
                + snmp_a["Ip.OutDiscards"],
            link_drops,
        }
    }

    /// Starts `udplab recv` in B and returns the address it printed.
    fn start_receiver(&mut self, json: &str) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.b, UDPLAB, "recv"])
            .args(["--bind", &format!("{B_ADDR}:0"), "--once", "--quiet"])
            // A buffer this large makes socket drops (which could hit a control message too,
            // blurring the count) practically impossible; they still enter the comparison.
            .args(["--rcvbuf", "8M", "--force-buf", "--json", json])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ip netns exec udplab recv");
        let stdout = child.stdout.take().expect("stdout");
        self.children.push(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so the receiver never blocks on a full pipe.
            let _ = r.read_to_end(&mut Vec::new());
        });
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the receiver printed its address within 10 s");
        first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from recv: {first:?}"))
            .to_string()
    }

    /// Waits (bounded) for every started process to exit.
    fn wait_children(&mut self, limit: Duration) {
        for child in &mut self.children {
            let exited = wait_bounded_any(child, limit);
            assert!(
                exited,
                "udplab in the namespaces did not exit within {limit:?}"
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace also deletes the veth ends inside it (and their peers).
        for ns in self.created.drain(..) {
            let _ = run(Command::new("ip").args(["netns", "del", &ns]));
        }
    }
}

/// The kernel's counters along the path. `(packets, drops)` for qdiscs.
#[derive(Debug, Clone, Copy)]
struct Counters {
    data_leaf: (u64, u64),
    default_leaf: (u64, u64),
    htb_root: (u64, u64),
    b_rcvbuf_errors: u64,
    b_in_errors: u64,
    b_in_datagrams: u64,
    a_sndbuf_errors: u64,
    ip_discards: u64,
    link_drops: u64,
}

/// `Some(why)` when this machine cannot run the test.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    for tool in ["ip", "tc"] {
        if let Err(e) = try_run(Command::new(tool).arg("-V")) {
            return Some(format!("`{tool}` (iproute2) is not usable: {e}"));
        }
    }
    None
}

#[test]
fn loss_equals_kernel_drops_at_a_bottleneck() {
    let _net = crate::common::network_shared();
    if let Some(why) = missing_prerequisite() {
        eprintln!("netns test skipped: {why}");
        return;
    }
    let mut lab = Lab::new();
    if let Err(why) = lab.build() {
        eprintln!("netns test skipped: cannot build the namespaces here: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let send_json = dir.path().join("send.json");
    let recv_json = dir.path().join("recv.json");

    let before = lab.counters();
    let target = lab.start_receiver(recv_json.to_str().expect("utf-8 path"));
    assert!(
        target.starts_with(&format!("{B_ADDR}:")),
        "receiver bound {target}"
    );
    let sender = Command::new("ip")
        .args(["netns", "exec", &lab.a, UDPLAB, "send"])
        .args([&target, "--rate", OFFERED, "--size", &PAYLOAD.to_string()])
        .args(["--duration", DURATION, "--quiet"])
        // One skb per datagram: a GSO super-packet would carry another IP length past the
        // classifier (and count as one drop for many datagrams).
        .args(["--send-mode", "mmsg"])
        .arg("--json")
        .arg(&send_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip netns exec udplab send");
    let out = wait_bounded(sender, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "udplab send failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_children(Duration::from_secs(15));
    let after = lab.counters();

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&send_json).expect("send JSON")).unwrap();
    let n = |v: &Value, what: &str| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{what} is not a count: {v}"))
    };
    let snd = &report["flows"][0]["sender"];
    let rcv = &report["flows"][0]["receiver"];
    let st = &rcv["stats"];
    let sent = n(&snd["sent"], "sender.sent");
    let send_errors = n(&snd["send_errors"], "sender.send_errors");
    let expected = n(&st["expected"], "expected");
    let received = n(&st["received"], "received");
    let lost = n(&st["lost"], "lost");
    let rcvbuf_drops = n(&rcv["rcvbuf_drops"], "receiver.rcvbuf_drops");

    let d = |f: fn(&Counters) -> u64| f(&after) - f(&before);
    let data_passed = d(|c| c.data_leaf.0);
    let data_dropped = d(|c| c.data_leaf.1);
    let kernel_rcvbuf = d(|c| c.b_rcvbuf_errors);
    let b_in_datagrams = d(|c| c.b_in_datagrams);
    let elsewhere = [
        ("default-class drops", d(|c| c.default_leaf.1)),
        (
            "htb drops outside its leaves",
            d(|c| c.htb_root.1) - data_dropped - d(|c| c.default_leaf.1),
        ),
        ("A Udp SndbufErrors", d(|c| c.a_sndbuf_errors)),
        (
            "B Udp InErrors other than RcvbufErrors",
            d(|c| c.b_in_errors) - kernel_rcvbuf,
        ),
        ("IP discards in A, R, B", d(|c| c.ip_discards)),
        ("veth drops and errors", d(|c| c.link_drops)),
    ];
    eprintln!(
        "netns: sent {sent}, received {received}, lost {lost}, send errors {send_errors}; \
         kernel: data qdisc passed {data_passed} dropped {data_dropped}, B RcvbufErrors \
         {kernel_rcvbuf} (udplab rcvbuf_drops {rcvbuf_drops}), B Udp InDatagrams \
         {b_in_datagrams}; elsewhere {elsewhere:?}"
    );

    assert_eq!(expected, sent, "the receiver knows how many were sent");
    assert_eq!(received + lost, sent, "every sequence is received or lost");
    assert_eq!(
        n(&st["duplicates"], "duplicates"),
        0,
        "nothing on this path duplicates"
    );
    for (what, count) in elsewhere {
        assert_eq!(
            count, 0,
            "{what}: drops outside the data qdisc and B's socket would make the count inexact"
        );
    }
    // Every data datagram the kernel accepted reached the data class: none slipped past the
    // classifier into the default class, where its loss would not be counted.
    assert_eq!(
        data_passed + data_dropped,
        sent - send_errors,
        "the u32 filter classified every data datagram"
    );
    assert_eq!(
        rcvbuf_drops, kernel_rcvbuf,
        "udplab's SO_RXQ_OVFL count equals B's RcvbufErrors"
    );
    assert_eq!(
        lost,
        data_dropped + kernel_rcvbuf + send_errors,
        "udplab's loss equals the kernel's drops"
    );
    assert!(
        b_in_datagrams >= received,
        "B's kernel delivered {b_in_datagrams} UDP datagrams, fewer than udplab's {received}"
    );

    // The bottleneck really bit: sending twice its rate loses about half.
    let wire_bits = ((DATA_IP_LEN + 14) * 8) as f64;
    let predicted = 1.0 - BOTTLENECK_BPS / (OFFERED_BPS / (PAYLOAD * 8) as f64 * wire_bits);
    let fraction = lost as f64 / sent as f64;
    assert!(
        (0.3..=0.7).contains(&fraction),
        "loss {fraction:.3} (about {predicted:.3} predicted) is not between 30% and 70%"
    );
}

/// A command from a line of whitespace-separated words (none of ours contains a space).
fn command(line: &str) -> Command {
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().expect("a program"));
    cmd.args(words);
    cmd
}

/// Reads a file inside namespace `ns`: the namespace's own view of /proc/net.
fn cat_in(ns: &str, path: &str) -> String {
    must_run(&mut command(&format!("ip netns exec {ns} cat {path}")))
}

/// Runs a command to completion within [`CMD_LIMIT`].
fn run(cmd: &mut Command) -> std::io::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(wait_bounded(child, CMD_LIMIT))
}

/// Runs a command; `Err` describes the command and why it failed.
fn try_run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    match run(cmd) {
        Err(e) => Err(format!("{shown}: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}

fn must_run(cmd: &mut Command) -> String {
    try_run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for `child` at most `limit`; false if it had to be killed.
fn wait_bounded_any(child: &mut Child, limit: Duration) -> bool {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while waited < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        thread::sleep(step);
        waited += step;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// `/proc/net/snmp` of namespace `ns` as "Proto.Field" → value.
fn snmp(ns: &str) -> HashMap<String, u64> {
    let text = cat_in(ns, "/proc/net/snmp");
    let mut out = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    // Lines come in pairs: "Proto: names..." then "Proto: values...".
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (proto, names) = names.split_once(':').expect("snmp header line");
        let (_, values) = values.split_once(':').expect("snmp value line");
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            // Some fields (Ip Forwarding, Tcp MaxConn) are not counters; skip what isn't a u64.
            if let Ok(v) = value.parse() {
                out.insert(format!("{proto}.{name}"), v);
            }
        }
    }
    out
}

/// Per-qdisc `(packets, drops)` on `dev` in `ns`, keyed by handle ("1:", "10:", ...).
fn qdisc_stats(ns: &str, dev: &str) -> HashMap<String, (u64, u64)> {
    let text = must_run(&mut command(&format!(
        "ip netns exec {ns} tc -s -j qdisc show dev {dev}"
    )));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("tc -j: {e}: {text}"));
    let count = |q: &Value, k: &str| {
        q[k].as_u64()
            .unwrap_or_else(|| panic!("qdisc without {k}: {q}"))
    };
    v.as_array()
        .expect("tc -j gives an array")
        .iter()
        .map(|q| {
            let handle = q["handle"].as_str().expect("qdisc handle").to_string();
            (handle, (count(q, "packets"), count(q, "drops")))
        })
        .collect()
}

/// Receive and transmit errors, drops and FIFO overruns of `dev` in `ns`, from /proc/net/dev.
fn netdev_drops(ns: &str, dev: &str) -> u64 {
    let text = cat_in(ns, "/proc/net/dev");
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in /proc/net/dev of {ns}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("a counter"))
        .collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop
    // fifo colls carrier compressed.
    f[2] + f[3] + f[4] + f[10] + f[11] + f[12]
}
