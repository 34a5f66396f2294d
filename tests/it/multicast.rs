//! Multicast (issue 9): a sender to a group and several `recv --join` members, each reporting on
//! its own exactly the loss the sender's seeded `--impair` made (its counters are the ground
//! truth: nothing else on these paths drops).
//!
//! - Over loopback (IPv4 on `lo`, when this kernel lets a socket join a group there): three
//!   members on one host share the group's port.
//! - In network namespaces (root and `ip` needed, else the test prints why and passes): a sender
//!   namespace, an intruder namespace and three member namespaces, all on one bridge (multicast
//!   snooping off, so the bridge floods the group). IPv4 and IPv6, any-source and
//!   source-specific; in the source-specific cases the intruder sends to the same group at the
//!   same time, and no member may measure it. Every namespace is deleted when the test ends.

use std::cell::RefCell;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common::{LineWatch, cell, network_shared, num, read_csv, wait_bounded};

const UDPLAB: &str = env!("CARGO_BIN_EXE_udplab");
/// Bound on each set-up command, each member's start and each run.
const LIMIT: Duration = Duration::from_secs(30);
const COUNT: u64 = 2000;
const PPS: &str = "4000";

/// A started member: its process, its stdout lines, and its JSON report's path.
struct Member {
    child: Option<Child>,
    lines: Option<LineWatch>,
    json: std::path::PathBuf,
}

impl Member {
    /// Starts `udplab recv --once -q --json FILE` with `args` under `prefix` (e.g. `ip netns
    /// exec NS`), and waits until it has joined; returns it and its first line (the address).
    fn start(prefix: &[&str], args: &[&str], json: std::path::PathBuf) -> (Member, String) {
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(UDPLAB.into());
        argv.extend(["recv", "--once", "-q", "--json"].map(String::from));
        argv.push(json.display().to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn udplab recv");
        let lines = LineWatch::new(child.stdout.take().expect("stdout"));
        let first = RefCell::new(String::new());
        lines.wait_for(
            1,
            |l| {
                if l.starts_with("listening on ") {
                    *first.borrow_mut() = l.to_string();
                }
                l.starts_with("joined ")
            },
            LIMIT,
        );
        let member = Member {
            child: Some(child),
            lines: Some(lines),
            json,
        };
        (member, first.into_inner())
    }

    /// Waits for the member to exit by itself (`--once`: after the sender's Fin and Tmax) and
    /// returns its one report, with its stdout for failure messages.
    fn report(mut self) -> (Value, String) {
        let child = self.child.take().expect("child");
        let out = wait_bounded(child, LIMIT);
        let text = self.lines.take().map(LineWatch::finish).unwrap_or_default();
        assert!(
            out.status.success(),
            "member failed: {:?}\n{text}",
            out.status
        );
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.json).expect("member's JSON"))
                .expect("member's JSON parses");
        let flows = json["flows"].as_array().expect("flows").clone();
        assert_eq!(flows.len(), 1, "one test per member: {text}");
        (flows[0].clone(), text)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sender's own report (flow 0 of its JSON) after a run of `args` under `prefix`.
fn send(prefix: &[&str], args: &[&str], json: &Path) -> Value {
    let mut cmd = Command::new(prefix.first().copied().unwrap_or(UDPLAB));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(UDPLAB);
    }
    let child = cmd
        .args(args)
        .args(["-q", "--json"])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn udplab send");
    let out = wait_bounded(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sender failed: {stderr}");
    assert!(
        stderr.contains("each receiver (udplab recv --join) reports on its own"),
        "the sender says where the results are: {stderr}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).expect("sender's JSON"))
        .expect("sender's JSON parses");
    let flow = v["flows"][0].clone();
    assert!(
        flow["receiver"].is_null(),
        "a group sender has no receiver report"
    );
    flow
}

/// Each member's report must show exactly what the sender's impairment let through, from that
/// sender (`sender_ip`, or where not known in advance, the one address all members name).
fn check_members(sender: &Value, sender_ip: Option<&str>, members: Vec<Member>) {
    let mut peers = Vec::new();
    let counters = &sender["sender"]["impair_counters"];
    let sent = sender["sender"]["sent"].as_u64().unwrap();
    let dropped = counters["dropped"].as_u64().unwrap();
    assert_eq!(sent, COUNT);
    assert!(dropped > 0, "the impairment dropped something: {counters}");
    for (i, m) in members.into_iter().enumerate() {
        let (run, text) = m.report();
        let r = &run["receiver"];
        let stats = &r["stats"];
        let lost = stats["lost"].as_u64().unwrap();
        // A datagram the member's own full socket buffer dropped is no path loss.
        let rcvbuf = r["rcvbuf_drops"].as_u64().unwrap_or(0);
        println!(
            "member {i}: expected {} received {} lost {lost} (rcvbuf {rcvbuf}); sender sent {sent}, impairment dropped {dropped}",
            stats["expected"], stats["received"]
        );
        assert_eq!(stats["expected"].as_u64(), Some(sent), "member {i}: {text}");
        assert_eq!(lost - rcvbuf, dropped, "member {i}: {text}");
        assert_eq!(
            stats["received"].as_u64(),
            Some(sent - lost),
            "member {i}: {text}"
        );
        assert_eq!(stats["duplicates"].as_u64(), Some(0), "member {i}");
        assert_eq!(
            run["interrupted"].as_bool(),
            Some(false),
            "the Fin arrived: {text}"
        );
        let peer = r["peer"].as_str().unwrap().to_string();
        if let Some(ip) = sender_ip {
            assert!(
                peer.starts_with(&format!("{ip}:")) || peer.starts_with(&format!("[{ip}]:")),
                "member {i} measured {peer}, not the sender {ip}"
            );
        }
        peers.push(peer);
    }
    peers.dedup();
    assert_eq!(
        peers.len(),
        1,
        "every member measured the one sender: {peers:?}"
    );
}

#[test]
fn three_members_on_loopback_each_report_the_senders_exact_loss() {
    let _net = network_shared();
    // Can a socket join a group on lo here at all?
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let lo = udplab::net::multicast::Iface::parse("lo").unwrap();
    let group = "239.255.71.3";
    if let Err(e) = udplab::net::multicast::join(
        &probe,
        &udplab::net::multicast::Membership {
            group: group.parse().unwrap(),
            source: None,
            iface: Some(lo),
        },
    ) {
        println!("skipped: this kernel does not let a socket join a group on lo ({e})");
        return;
    }
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let join = ["--join", group, "--iface", "lo"];
    let csv = dir.path().join("m0.csv");
    let (first, addr) = Member::start(
        &[],
        &[
            &join[..],
            &["--bind", "0.0.0.0:0", "--csv", csv.to_str().unwrap()],
        ]
        .concat(),
        dir.path().join("m0.json"),
    );
    let port = addr.rsplit(':').next().unwrap().to_string();
    let bind = format!("0.0.0.0:{port}");
    let mut members = vec![first];
    for i in 1..3 {
        let (m, a) = Member::start(
            &[],
            &[&join[..], &["--bind", &bind]].concat(),
            dir.path().join(format!("m{i}.json")),
        );
        assert_eq!(a, addr, "every member shares the group's port");
        members.push(m);
    }
    let target = format!("{group}:{port}");
    let count = COUNT.to_string();
    let sender = send(
        &[],
        &[
            "send",
            &target,
            "--iface",
            "lo",
            "--count",
            &count,
            "--pps",
            PPS,
            "--impair",
            "loss=5%,seed=11",
        ],
        &dir.path().join("sender.json"),
    );
    // The sender's source address is whichever the kernel picked: the members must agree.
    check_members(&sender, None, members);
    // The member's CSV row carries the sender's total (from its Fin) and the same loss.
    let (header, rows) = read_csv(&csv);
    assert_eq!(rows.len(), 1, "one receiver row");
    assert_eq!(cell(&header, &rows[0], "role"), "receiver");
    assert_eq!(num(&header, &rows[0], "sent"), COUNT);
    assert_eq!(
        num(&header, &rows[0], "lost"),
        sender["sender"]["impair_counters"]["dropped"]
            .as_u64()
            .unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// Roles on the bridge: the sender, an intruder, three members; their host number in each
/// subnet.
const ROLES: [(&str, u8); 5] = [("s", 1), ("x", 2), ("m1", 11), ("m2", 12), ("m3", 13)];

/// The namespaces of one test: removed on drop, pass or fail.
struct Lab {
    tag: String,
    created: Vec<String>,
}

impl Lab {
    fn new() -> Self {
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        Lab {
            tag: format!("{}x{seq}", std::process::id()),
            created: Vec::new(),
        }
    }

    fn ns(&self, role: &str) -> String {
        format!("udplab-mc-{}-{role}", self.tag)
    }

    /// Interface names have at most 15 bytes: "mc" + pid (≤ 7) + "x" + seq + role (≤ 2).
    fn dev(&self, role: &str) -> String {
        format!("mc{}{role}", self.tag)
    }

    fn v4(host: u8) -> String {
        format!("198.18.71.{host}")
    }

    fn v6(host: u8) -> String {
        format!("2001:db8:71::{host}")
    }

    /// Builds the bridge and the five namespaces. `Err`: why the test cannot run here.
    fn build(&mut self) -> Result<(), String> {
        let br = self.ns("br");
        try_run(&format!("ip netns add {br}"))?;
        self.created.push(br.clone());
        try_run(&format!(
            "ip netns exec {br} ip link add br0 type bridge mcast_snooping 0"
        ))?;
        run(&format!("ip netns exec {br} ip link set br0 up"));
        for (role, host) in ROLES {
            let ns = self.ns(role);
            try_run(&format!("ip netns add {ns}"))?;
            self.created.push(ns.clone());
            let dev = self.dev(role);
            let port = self.dev(&format!("{role}p"));
            try_run(&format!(
                "ip link add {dev} netns {ns} type veth peer name {port} netns {br}"
            ))?;
            run(&format!(
                "ip netns exec {br} ip link set {port} master br0 up"
            ));
            run(&format!("ip netns exec {ns} ip link set lo up"));
            run(&format!("ip netns exec {ns} ip link set {dev} up"));
            run(&format!(
                "ip netns exec {ns} ip addr add {}/24 dev {dev}",
                Self::v4(host)
            ));
            run(&format!(
                "ip netns exec {ns} ip -6 addr add {}/64 dev {dev} nodad",
                Self::v6(host)
            ));
        }
        // Every link (each namespace's end, each bridge port, the bridge) says it is UP before
        // the test: a waited-for condition, bounded, so no datagram meets a link coming up.
        let mut links = vec![(br.clone(), "br0".to_string())];
        for (role, _) in ROLES {
            links.push((self.ns(role), self.dev(role)));
            links.push((br.clone(), self.dev(&format!("{role}p"))));
        }
        for (ns, dev) in links {
            let up = (0..200).any(|_| {
                let out = Command::new("ip")
                    .args([
                        "netns", "exec", &ns, "ip", "-o", "link", "show", "dev", &dev,
                    ])
                    .output();
                let up = out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"));
                if !up {
                    std::thread::sleep(Duration::from_millis(25));
                }
                up
            });
            if !up {
                return Err(format!("{dev} in {ns} never came up"));
            }
        }
        Ok(())
    }

    fn prefix(&self, role: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(role)]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn try_run(cmd: &str) -> Result<(), String> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let out = wait_bounded(child, LIMIT);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run(cmd: &str) {
    if let Err(e) = try_run(cmd) {
        panic!("set-up step failed after the lab proved workable: {e}");
    }
}

/// Why namespace tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    let found = Command::new("sh")
        .arg("-c")
        .arg("command -v ip")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Some("needs `ip` (iproute2)".into());
    }
    None
}

/// One namespace case: three members of `group` (source-specific when `ssm`), the sender's
/// impaired test, and for SSM an intruder sending to the group at the same time.
fn namespace_case(group: &str, ipv6: bool, ssm: bool, seed: u32) {
    let _net = network_shared();
    if let Some(why) = unavailable() {
        println!("skipped: {why}");
        return;
    }
    let mut lab = Lab::new();
    if let Err(why) = lab.build() {
        println!("skipped: cannot build the namespace lab here: {why}");
        return;
    }
    let addr_of = |host: u8| if ipv6 { Lab::v6(host) } else { Lab::v4(host) };
    let sender_ip = addr_of(1);
    let port = "5310";
    let bind = if ipv6 {
        format!("[::]:{port}")
    } else {
        format!("0.0.0.0:{port}")
    };
    let target = if ipv6 {
        format!("[{group}]:{port}")
    } else {
        format!("{group}:{port}")
    };
    let dir = tempfile::tempdir().unwrap();
    let mut members = Vec::new();
    for role in ["m1", "m2", "m3"] {
        let dev = lab.dev(role);
        let mut args = vec!["--join", group, "--iface", &dev, "--bind", &bind];
        if ssm {
            args.extend(["--source", &sender_ip]);
        }
        let prefix = lab.prefix(role);
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let (m, _) = Member::start(&prefix, &args, dir.path().join(format!("{role}.json")));
        members.push(m);
    }
    let count = COUNT.to_string();
    // The intruder: the same group and port, from another address, for longer than the test.
    let intruder = ssm.then(|| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.ns("x"), UDPLAB, "send", &target])
            .args([
                "--iface",
                &lab.dev("x"),
                "--count",
                "6000",
                "--pps",
                PPS,
                "-q",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        KillOnDrop(cmd.spawn().expect("spawn the intruder"))
    });
    let prefix = lab.prefix("s");
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let impair = format!("loss=4%,seed={seed}");
    let dev = lab.dev("s");
    let sender = send(
        &prefix,
        &[
            "send", &target, "--iface", &dev, "--ttl", "2", "--count", &count, "--pps", PPS,
            "--impair", &impair,
        ],
        &dir.path().join("sender.json"),
    );
    check_members(&sender, Some(&sender_ip), members);
    drop(intruder);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn namespaces_ipv4_any_source_three_members_exact() {
    namespace_case("239.71.0.1", false, false, 21);
}

#[test]
fn namespaces_ipv4_source_specific_three_members_exact_despite_an_intruder() {
    namespace_case("232.71.0.1", false, true, 22);
}

#[test]
fn namespaces_ipv6_any_source_three_members_exact() {
    namespace_case("ff15::71:1", true, false, 23);
}

#[test]
fn namespaces_ipv6_source_specific_three_members_exact_despite_an_intruder() {
    namespace_case("ff35::8000:71", true, true, 24);
}

// ---------------------------------------------------------------------------------------------
// Usage and keys
// ---------------------------------------------------------------------------------------------

#[test]
fn usage_errors_name_what_is_wrong() {
    use crate::common::run_bounded;
    let cases: [(&[&str], &str); 7] = [
        (
            &["send", "239.1.2.3:5210", "--max-loss", "1%"],
            "a --max-* threshold with a multicast target",
        ),
        (
            &["send", "239.1.2.3:5210", "--echo"],
            "--echo with a multicast target",
        ),
        (
            &["send", "239.1.2.3:5210", "--flows", "2"],
            "--flows with a multicast target",
        ),
        (
            &["send", "239.1.2.3:5210", "--iface", "no-such-if0"],
            "no network interface named",
        ),
        (&["recv", "--join", "192.0.2.1"], "not a multicast group"),
        (
            &["recv", "--join", "239.1.2.3", "--source", "2001:db8::1"],
            "same family",
        ),
        (&["recv", "--source", "192.0.2.1"], "--join"),
    ];
    for (args, wanted) in cases {
        let out = run_bounded(args, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
    for (cmd, wanted) in [
        ("recv", "udplab recv --join 232.1.2.3 --source"),
        ("send", "udplab send 239.1.2.3:5210 --iface eth0"),
    ] {
        let out = run_bounded(&[cmd, "--help"], LIMIT);
        // Wrapped to the terminal's width: compare with the line breaks squeezed out.
        let help = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(help.contains(wanted), "{cmd} --help: {help}");
    }
}

/// With --key, a member measures only the keyed sender's test: an unkeyed sender to the same
/// group starts nothing.
#[test]
fn a_keyed_member_ignores_an_unkeyed_sender() {
    let _net = network_shared();
    let group = "239.255.71.4";
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if let Err(e) = udplab::net::multicast::join(
        &probe,
        &udplab::net::multicast::Membership {
            group: group.parse().unwrap(),
            source: None,
            iface: Some(udplab::net::multicast::Iface::parse("lo").unwrap()),
        },
    ) {
        println!("skipped: this kernel does not let a socket join a group on lo ({e})");
        return;
    }
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "a shared key of thirty-two bytes\n").unwrap();
    let key = key.to_str().unwrap();
    let (member, addr) = Member::start(
        &[],
        &[
            "--join",
            group,
            "--iface",
            "lo",
            "--bind",
            "0.0.0.0:0",
            "--key",
            key,
        ],
        dir.path().join("member.json"),
    );
    let port = addr.rsplit(':').next().unwrap();
    let target = format!("{group}:{port}");
    let count = COUNT.to_string();
    let common = [
        "send", &target, "--iface", "lo", "--count", &count, "--pps", PPS,
    ];
    send(&[], &common, &dir.path().join("unkeyed.json"));
    let impair = ["--impair", "loss=3%,seed=5", "--key", key];
    let sender = send(
        &[],
        &[&common[..], &impair].concat(),
        &dir.path().join("keyed.json"),
    );
    check_members(&sender, None, vec![member]);
}
