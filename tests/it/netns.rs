//! Network-namespace tests: the loss udplab reports equals the drops the kernel counts.
//!
//! Three namespaces A → R → B joined by veth pairs; R forwards. Two set-ups give real,
//! counted drops on R, and udplab's path loss (its `lost` minus the datagrams the receiver's own
//! socket dropped, minus the sender's failed sends) must equal R's drop count exactly:
//!
//! - a bottleneck: udplab's control messages cross it too, so raw qdisc drops would mix data
//!   and control. An htb root on R sends the data datagrams (classified by their IP total
//!   length, which no control message has) into a rate-limited class whose small pfifo is the
//!   only place on the path where data can be dropped; everything else goes to a roomy default
//!   class.
//! - random loss: an nftables rule in R's forward chain drops 3% of the data datagrams (again
//!   told apart from control by their length) and counts each drop. This is the regression
//!   test of issue 11 item 9: a GSO batch crosses veth and R as one packet, so one drop took a
//!   whole batch and faked burst loss. The default send mode must send one packet per datagram
//!   toward another host, so the counter equals the loss and loss periods are not inflated.
//!
//! The datagrams the receiver's socket dropped are counted by the kernel on the path into B
//! (data that left R, or data that reached B's input hook, minus what udplab received), so
//! every check is exact whatever the machine's speed; a control message dropped by that same
//! full buffer is in `rcvbuf_drops` but is no data loss, which is why the two are not equated.
//!
//! Needs root, `ip` and `tc` (iproute2), and `nft` (nftables) for the random-loss tests;
//! without them (or without permission to make namespaces) a test prints why and passes.
//! Every namespace a test creates is deleted when it ends, pass or fail.

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
/// this size (wire v2: Hello 72, Fin 40, ResultReq 16, Abort 24), so the IP length below is
/// data only.
const PAYLOAD: u64 = 1200;
/// IPv4 total length of a data datagram: IP header + UDP header + payload.
const DATA_IP_LEN: u64 = 20 + 8 + PAYLOAD;
/// The data class's rate on R, as tc spells it.
const BOTTLENECK_TC: &str = "100mbit";
/// Datagrams the unpaced sender offers the bottleneck. It sends as fast as it can, so it
/// overruns the class's 50-packet queue once it outruns 100 Mbit/s (about 10,000 datagrams/s of
/// this size) for a few milliseconds: the set-up does not depend on reaching a given rate, only
/// on out-running a 100 Mbit/s link with an unpaced sender.
const BOTTLENECK_COUNT: &str = "30000";
/// Packets the data class may queue; a short queue keeps delays far below Tmax (1 s).
const DATA_QUEUE_LIMIT: u32 = 50;

/// Random-loss set-up (issue 11 item 9): UDP payload of each data datagram, how many the
/// unpaced sender sends, and R's drop probability in percent.
const RANDOM_PAYLOAD: u64 = 220;
const RANDOM_COUNT: u64 = 200_000;
const RANDOM_DROP_PERCENT: u64 = 3;
/// UDP length (header + payload) of a random-loss data datagram. Control messages from A to B
/// are at most 8 + 72 bytes (a v2 Hello), so `udp length >= RANDOM_UDP_LEN` toward B is data
/// only; a GSO super-packet of data is longer still and matches as one packet.
const RANDOM_UDP_LEN: u64 = 8 + RANDOM_PAYLOAD;

const A_ADDR: &str = "198.18.0.1";
const R_ADDR_A: &str = "198.18.0.2";
const R_ADDR_B: &str = "198.18.1.2";
pub(crate) const B_ADDR: &str = "198.18.1.1";
const A_NET: &str = "198.18.0.0/24";
const B_NET: &str = "198.18.1.0/24";

/// The udplab binary under test, run inside the namespaces through `ip netns exec`.
pub(crate) const UDPLAB: &str = env!("CARGO_BIN_EXE_udplab");
/// Bound on each `ip`/`tc`/`cat` command.
const CMD_LIMIT: Duration = Duration::from_secs(10);

/// Distinguishes labs made by one test process.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The namespaces and processes one test made; all removed on drop, pass or fail.
pub(crate) struct Lab {
    pub(crate) a: String,
    pub(crate) r: String,
    pub(crate) b: String,
    /// R's interface toward A and toward B (the bottleneck); A's and B's own interfaces.
    pub(crate) if_ra: String,
    pub(crate) if_rb: String,
    pub(crate) if_a: String,
    pub(crate) if_b: String,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
    /// Processes started inside the namespaces (killed on drop).
    pub(crate) children: Vec<Child>,
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

    /// Creates the namespaces, links, addresses and routes, with R forwarding. `Err` says why
    /// the test cannot run here (a missing kernel feature or permission), which is a skip.
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
        Ok(())
    }

    /// Adds the bottleneck on R's interface toward B. `Err` is a skip (no htb, no u32).
    fn add_bottleneck(&mut self) -> Result<(), String> {
        let r = &self.r;
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

    /// Adds the random loss: in R's forward chain, a counter of the data datagrams toward B and
    /// a rule that drops `RANDOM_DROP_PERCENT`% of them, counting each drop; in B's input
    /// chain, a counter of the data datagrams that arrived. `Err` is a skip (no nf_tables).
    fn add_random_drop(&mut self, dir: &std::path::Path) -> Result<(), String> {
        let data = format!("ip daddr {B_ADDR} udp length >= {RANDOM_UDP_LEN}");
        let forward = format!(
            "table ip udplab {{\n chain forward_data {{\n  type filter hook forward priority filter; policy accept;\n  {data} counter comment \"{SEEN}\"\n  {data} numgen random mod 100 < {RANDOM_DROP_PERCENT} counter drop comment \"{DROPPED}\"\n }}\n}}\n"
        );
        let input = format!(
            "table ip udplab {{\n chain input_data {{\n  type filter hook input priority filter; policy accept;\n  {data} counter comment \"{ARRIVED}\"\n }}\n}}\n"
        );
        for (ns, rules, name) in [(&self.r, forward, "r.nft"), (&self.b, input, "b.nft")] {
            let path = dir.join(name);
            std::fs::write(&path, rules).expect("writing an nft ruleset");
            let path = path.to_str().expect("utf-8 path");
            try_run(&mut command(&format!("ip netns exec {ns} nft -f {path}")))?;
        }
        Ok(())
    }

    /// Every kernel counter the comparison uses, read now. `qdiscs`: read the bottleneck's
    /// qdiscs; `nft`: read the random-loss rules' counters.
    fn counters(&self, qdiscs: bool, nft: bool) -> Counters {
        let snmp_a = snmp(&self.a);
        let snmp_r = snmp(&self.r);
        let snmp_b = snmp(&self.b);
        let qdisc = if qdiscs {
            qdisc_stats(&self.r, &self.if_rb)
        } else {
            HashMap::new()
        };
        let q = |handle: &str| {
            if !qdiscs {
                return (0, 0);
            }
            *qdisc
                .get(handle)
                .unwrap_or_else(|| panic!("no qdisc {handle} on {}: {qdisc:?}", self.if_rb))
        };
        let (r_rules, b_rules) = if nft {
            (nft_counters(&self.r), nft_counters(&self.b))
        } else {
            (HashMap::new(), HashMap::new())
        };
        let rule = |rules: &HashMap<String, u64>, name: &str| {
            if !nft {
                return 0;
            }
            *rules
                .get(name)
                .unwrap_or_else(|| panic!("no nft rule {name:?}: {rules:?}"))
        };
        let link_drops = netdev_drops(&self.a, &self.if_a)
            + netdev_drops(&self.r, &self.if_ra)
            + netdev_drops(&self.r, &self.if_rb)
            + netdev_drops(&self.b, &self.if_b);
        Counters {
            data_leaf: q("10:"),
            default_leaf: q("20:"),
            htb_root: q("1:"),
            nft_seen: rule(&r_rules, SEEN),
            nft_dropped: rule(&r_rules, DROPPED),
            nft_arrived: rule(&b_rules, ARRIVED),
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
    /// `rcvbuf` is the receiver's `--rcvbuf`, forced beyond net.core.rmem_max.
    pub(crate) fn start_receiver(&mut self, json: &str, rcvbuf: &str) -> String {
        self.start_receiver_at(&format!("{B_ADDR}:0"), json, rcvbuf)
    }

    /// [`Lab::start_receiver`] bound to `bind` (an address of B's, or of another family).
    pub(crate) fn start_receiver_at(&mut self, bind: &str, json: &str, rcvbuf: &str) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.b, UDPLAB, "recv"])
            .args(["--bind", bind, "--once", "--quiet"])
            .args(["--rcvbuf", rcvbuf, "--force-buf", "--json", json])
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
    pub(crate) fn wait_children(&mut self, limit: Duration) {
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
    /// Packets of data toward B that R's forward chain saw, and dropped.
    nft_seen: u64,
    nft_dropped: u64,
    /// Packets of data that reached B's input chain.
    nft_arrived: u64,
    b_rcvbuf_errors: u64,
    b_in_errors: u64,
    b_in_datagrams: u64,
    a_sndbuf_errors: u64,
    ip_discards: u64,
    link_drops: u64,
}

/// The receiver's buffer where its own drops should not happen: this large a buffer makes
/// them rare even on a loaded machine (they are still counted and subtracted when they do).
pub(crate) const ROOMY_RCVBUF: &str = "8M";

/// Comments naming the nftables rules whose counters the random-loss tests read.
const SEEN: &str = "data-seen";
const DROPPED: &str = "data-dropped";
const ARRIVED: &str = "data-arrived";

/// `Some(why)` when this machine cannot run a test that needs `tools` (each answers `-V`).
fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    for tool in tools {
        if let Err(e) = try_run(Command::new(tool).arg("-V")) {
            let package = if *tool == "nft" {
                "nftables"
            } else {
                "iproute2"
            };
            return Some(format!("`{tool}` ({package}) is not usable: {e}"));
        }
    }
    None
}

/// A built lab, or `None` after printing why this test skips here.
pub(crate) fn lab_or_skip(test: &str, tools: &[&str]) -> Option<Lab> {
    if let Some(why) = missing_prerequisite(tools) {
        eprintln!("netns test {test} skipped: {why}");
        return None;
    }
    let mut lab = Lab::new();
    if let Err(why) = lab.build() {
        eprintln!("netns test {test} skipped: cannot build the namespaces here: {why}");
        return None;
    }
    Some(lab)
}

/// What one `udplab send` in A reported (its JSON), with the receiver's results.
pub(crate) struct SendOutcome {
    pub(crate) report: Value,
    pub(crate) sent: u64,
    send_errors: u64,
    expected: u64,
    pub(crate) received: u64,
    lost: u64,
    duplicates: u64,
    loss_periods: u64,
    rcvbuf_drops: u64,
}

/// Runs `udplab send` from A to `target` with the given arguments, bounded in time, and reads its JSON.
pub(crate) fn send_from_a(
    lab: &Lab,
    target: &str,
    rate_args: &[&str],
    more_args: &[&str],
    json: &std::path::Path,
) -> SendOutcome {
    let sender = Command::new("ip")
        .args(["netns", "exec", &lab.a, UDPLAB, "send", target])
        .args(rate_args)
        .args(more_args)
        .args(["--quiet", "--json"])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip netns exec udplab send");
    let out = wait_bounded(sender, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "udplab send failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("send JSON")).unwrap();
    let n = |v: &Value, what: &str| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{what} is not a count: {v}"))
    };
    let snd = &report["flows"][0]["sender"];
    let rcv = &report["flows"][0]["receiver"];
    let st = &rcv["stats"];
    SendOutcome {
        sent: n(&snd["sent"], "sender.sent"),
        send_errors: n(&snd["send_errors"], "sender.send_errors"),
        expected: n(&st["expected"], "expected"),
        received: n(&st["received"], "received"),
        lost: n(&st["lost"], "lost"),
        duplicates: n(&st["duplicates"], "duplicates"),
        loss_periods: n(&st["loss_periods"], "loss_periods"),
        rcvbuf_drops: n(&rcv["rcvbuf_drops"], "receiver.rcvbuf_drops"),
        report,
    }
}

/// Checks what holds on every run: the receiver's bookkeeping, and no drop anywhere on the
/// path but where the test counts them (R's one drop point and B's socket).
fn check_common(run: &SendOutcome, before: &Counters, after: &Counters) {
    let d = |f: fn(&Counters) -> u64| f(after) - f(before);
    assert_eq!(
        run.expected, run.sent,
        "the receiver knows how many were sent"
    );
    assert_eq!(
        run.received + run.lost,
        run.sent,
        "every sequence is received or lost"
    );
    assert_eq!(run.duplicates, 0, "nothing on this path duplicates");
    let kernel_rcvbuf = d(|c| c.b_rcvbuf_errors);
    let elsewhere = [
        ("default-class drops", d(|c| c.default_leaf.1)),
        (
            "htb drops outside its leaves",
            d(|c| c.htb_root.1) - d(|c| c.data_leaf.1) - d(|c| c.default_leaf.1),
        ),
        ("A Udp SndbufErrors", d(|c| c.a_sndbuf_errors)),
        (
            "B Udp InErrors other than RcvbufErrors",
            d(|c| c.b_in_errors) - kernel_rcvbuf,
        ),
        ("IP discards in A, R, B", d(|c| c.ip_discards)),
        ("veth drops and errors", d(|c| c.link_drops)),
    ];
    for (what, count) in elsewhere {
        assert_eq!(
            count, 0,
            "{what}: drops outside the counted drop point and B's socket would make the count inexact"
        );
    }
    assert_eq!(
        run.rcvbuf_drops, kernel_rcvbuf,
        "udplab's SO_RXQ_OVFL count equals B's RcvbufErrors"
    );
    assert!(
        d(|c| c.b_in_datagrams) >= run.received,
        "B's kernel delivered fewer UDP datagrams than udplab received"
    );
}

/// Checks that the data datagrams B's socket dropped (those that reached B minus those udplab
/// received) are among the drops udplab counted at its socket: the rest of `rcvbuf_drops` are
/// control messages lost to the same full buffer, which are no data loss.
fn data_socket_drops(run: &SendOutcome, reached_b: u64) -> u64 {
    assert!(
        reached_b >= run.received,
        "udplab received {} datagrams, more than the {reached_b} data packets that reached B",
        run.received
    );
    let dropped_at_b = reached_b - run.received;
    assert!(
        dropped_at_b <= run.rcvbuf_drops,
        "{dropped_at_b} data datagrams reached B but not udplab, more than the {} its socket \
         dropped",
        run.rcvbuf_drops
    );
    dropped_at_b
}

#[test]
fn loss_equals_kernel_drops_at_a_bottleneck() {
    let _net = crate::common::network_shared();
    let Some(mut lab) = lab_or_skip("at a bottleneck", &["ip", "tc"]) else {
        return;
    };
    if let Err(why) = lab.add_bottleneck() {
        eprintln!("netns test at a bottleneck skipped: cannot set up htb/u32 here: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let recv_json = dir.path().join("recv.json");

    let before = lab.counters(true, false);
    let target = lab.start_receiver(recv_json.to_str().expect("utf-8 path"), ROOMY_RCVBUF);
    assert!(
        target.starts_with(&format!("{B_ADDR}:")),
        "receiver bound {target}"
    );
    let run = send_from_a(
        &lab,
        &target,
        &["--rate", "max", "--size", &PAYLOAD.to_string()],
        // One skb per datagram: a GSO super-packet would carry another IP length past the
        // classifier (and count as one drop for many datagrams).
        &["--count", BOTTLENECK_COUNT, "--send-mode", "mmsg"],
        &dir.path().join("send.json"),
    );
    lab.wait_children(Duration::from_secs(15));
    let after = lab.counters(true, false);
    let d = |f: fn(&Counters) -> u64| f(&after) - f(&before);
    let data_passed = d(|c| c.data_leaf.0);
    let data_dropped = d(|c| c.data_leaf.1);
    eprintln!(
        "netns bottleneck: sent {}, received {}, lost {}, loss periods {}, send errors {}, \
         rcvbuf_drops {}; kernel: data qdisc passed {data_passed} dropped {data_dropped}",
        run.sent, run.received, run.lost, run.loss_periods, run.send_errors, run.rcvbuf_drops
    );
    check_common(&run, &before, &after);
    // Every data datagram the kernel accepted reached the data class: none slipped past the
    // classifier into the default class, where its loss would not be counted.
    assert_eq!(
        data_passed + data_dropped,
        run.sent - run.send_errors,
        "the u32 filter classified every data datagram"
    );
    // What left the data class reached B: no drops between (checked above).
    let at_b_socket = data_socket_drops(&run, data_passed);
    assert_eq!(
        run.lost - at_b_socket - run.send_errors,
        data_dropped,
        "udplab's path loss (lost minus B's socket drops of data minus failed sends) equals the \
         bottleneck's drops"
    );
    // The bottleneck really bit: the unpaced sender outran 100 Mbit/s (see BOTTLENECK_COUNT).
    assert!(
        data_dropped > 0,
        "the bottleneck dropped nothing: the check above was vacuous"
    );
}

/// Issue 11 item 9: in the default send mode, a 3% random drop on a forwarding router shows
/// up in udplab datagram by datagram, not as batch-sized bursts.
#[test]
fn default_mode_loss_equals_a_routers_random_drops() {
    random_drop_run("random drop, default mode", ROOMY_RCVBUF);
}

/// The same with a receive buffer of a few dozen datagrams, which the unpaced sender
/// overruns whenever the receiver is slower than it: udplab's loss is then R's drops plus the
/// data B's socket dropped, exactly, and `rcvbuf_drops` matches the kernel's count.
#[test]
fn with_a_small_receive_buffer_the_receivers_own_drops_are_told_apart() {
    random_drop_run("random drop, small receive buffer", "16K");
}

/// One run through R's random drop, to a receiver with `--rcvbuf rcvbuf`.
fn random_drop_run(test: &str, rcvbuf: &str) {
    let _net = crate::common::network_shared();
    let Some(mut lab) = lab_or_skip(test, &["ip", "nft"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    if let Err(why) = lab.add_random_drop(dir.path()) {
        eprintln!("netns test {test} skipped: cannot load nftables rules here: {why}");
        return;
    }
    let recv_json = dir.path().join("recv.json");
    let before = lab.counters(false, true);
    let target = lab.start_receiver(recv_json.to_str().expect("utf-8 path"), rcvbuf);
    let run = send_from_a(
        &lab,
        &target,
        &["--rate", "max", "--size", &RANDOM_PAYLOAD.to_string()],
        &["--count", &RANDOM_COUNT.to_string()],
        &dir.path().join("send.json"),
    );
    lab.wait_children(Duration::from_secs(15));
    let after = lab.counters(false, true);
    let d = |f: fn(&Counters) -> u64| f(&after) - f(&before);
    let (seen, dropped, arrived) = (
        d(|c| c.nft_seen),
        d(|c| c.nft_dropped),
        d(|c| c.nft_arrived),
    );
    let send_mode = &run.report["flows"][0]["sender"]["send_mode"];
    eprintln!(
        "netns {test}: send mode {send_mode}, sent {}, received {}, lost {}, loss periods \
         {}, send errors {}, rcvbuf_drops {}; nft: R saw {seen} data packets, dropped \
         {dropped}; B's input saw {arrived}",
        run.sent, run.received, run.lost, run.loss_periods, run.send_errors, run.rcvbuf_drops
    );
    check_common(&run, &before, &after);
    assert_eq!(
        send_mode, "mmsg",
        "toward another host, --send-mode auto sends with sendmmsg"
    );
    assert!(
        run.report["flows"][0]["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .all(|w| !w.as_str().unwrap_or_default().contains("GSO")),
        "no batching warning in the default mode: {}",
        run.report["flows"][0]["warnings"]
    );
    // One packet per datagram: R saw exactly the datagrams the kernel accepted in A. A GSO
    // batch would cross as one packet, and one random drop would take all of it.
    assert_eq!(
        seen,
        run.sent - run.send_errors,
        "every data datagram crossed R as its own packet"
    );
    assert_eq!(
        arrived,
        seen - dropped,
        "R's rule is the only drop between A and B"
    );
    let at_b_socket = data_socket_drops(&run, arrived);
    assert_eq!(
        run.lost - at_b_socket - run.send_errors,
        dropped,
        "udplab's path loss (lost minus B's socket drops of data minus failed sends) equals R's \
         nftables drop counter"
    );
    // The rule drops 3% of 200,000: about 6,000 with a standard deviation of about 76, so the
    // band below is over 25 standard deviations wide on each side.
    let drop_share = dropped as f64 / seen as f64;
    assert!(
        (0.02..=0.04).contains(&drop_share),
        "R dropped {dropped} of {seen} ({:.3}%), not about {RANDOM_DROP_PERCENT}%",
        drop_share * 100.0
    );
    // Independent 3% drops rarely hit neighbours: about 0.97 loss periods per drop (the
    // number of neighbouring pairs is about n·p² = 180, standard deviation about 13), so 0.9
    // leaves over 25 standard deviations. Each datagram lost elsewhere (B's socket, a failed
    // send) can join two periods into one, so it may lower the count by one. GSO batches of
    // 32 gave about 0.03 periods per lost datagram.
    let lost_elsewhere = run.lost - dropped;
    assert!(
        (run.loss_periods + lost_elsewhere) as f64 >= 0.9 * dropped as f64,
        "{} loss periods (+{lost_elsewhere} lost elsewhere) for {dropped} independent drops: \
         the loss pattern is inflated into bursts",
        run.loss_periods
    );
}

/// Issue 11 item 9: GSO toward another host, asked for explicitly, is warned about in the
/// report and on its send-mode line.
#[test]
fn explicit_gso_toward_another_host_is_warned_about() {
    let _net = crate::common::network_shared();
    let Some(mut lab) = lab_or_skip("explicit GSO", &["ip"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let recv_json = dir.path().join("recv.json");
    let target = lab.start_receiver(recv_json.to_str().expect("utf-8 path"), ROOMY_RCVBUF);
    let run = send_from_a(
        &lab,
        &target,
        &["--rate", "max", "--size", &RANDOM_PAYLOAD.to_string()],
        &["--count", "20000", "--send-mode", "gso"],
        &dir.path().join("send.json"),
    );
    lab.wait_children(Duration::from_secs(15));
    let sender = &run.report["flows"][0]["sender"];
    if sender["send_mode"] != "gso" {
        // The kernel refused GSO here and the run fell back to sendmmsg, as it says.
        eprintln!(
            "netns explicit GSO: GSO refused here, nothing to warn about: {}",
            run.report["flows"][0]["warnings"]
        );
        return;
    }
    let warnings: Vec<&str> = run.report["flows"][0]["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("--send-mode gso toward") && w.contains(&target)),
        "a warning that batching can shape the loss pattern: {warnings:?}"
    );
    let note = sender["send_mode_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("batch-shaped"),
        "the send-mode line says so too: {sender}"
    );
}

/// A command from a line of whitespace-separated words (none of ours contains a space).
pub(crate) fn command(line: &str) -> Command {
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
pub(crate) fn try_run(cmd: &mut Command) -> Result<String, String> {
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

pub(crate) fn must_run(cmd: &mut Command) -> String {
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

/// Packet counts of the udplab nftables rules in namespace `ns`, keyed by the rule's comment.
fn nft_counters(ns: &str) -> HashMap<String, u64> {
    let text = must_run(&mut command(&format!(
        "ip netns exec {ns} nft -j list table ip udplab"
    )));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("nft -j: {e}: {text}"));
    v["nftables"]
        .as_array()
        .expect("nft -j gives an nftables array")
        .iter()
        .filter_map(|item| {
            let rule = item.get("rule")?;
            let name = rule["comment"].as_str()?.to_string();
            let packets = rule["expr"]
                .as_array()?
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())?;
            Some((name, packets))
        })
        .collect()
}
