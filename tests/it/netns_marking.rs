//! Network-namespace tests of the IP marking options, on the A → R → B path of `netns.rs`:
//!
//! - R re-marks the DSCP of every data datagram toward B to CS1 (an nftables `dscp set` rule
//!   that counts what it touched) and, as a router, decrements the TTL / hop limit: a sender in
//!   A marking EF with `--ttl 9` must see, in the receiver's results, every datagram re-marked
//!   (CS1 received) with TTL 8, over IPv4 and IPv6.
//! - R's link toward B has an MTU of 1280: a `--df --size 1400` sender gets R's ICMP
//!   "fragmentation needed" / "packet too big", its kernel learns the path MTU of 1280, and
//!   later sends fail with EMSGSIZE: the report counts them and shows the learned MTU; nothing
//!   arrives.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables) for the re-marking; without them a test
//! prints why and passes. Namespaces are removed when a test ends (see `netns::Lab`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::netns::{
    B_ADDR, Lab, ROOMY_RCVBUF, command, lab_or_skip, must_run, send_from_a, try_run,
};

/// UDP payload of the data datagrams; control messages toward B are at most 8 + 112 bytes of
/// UDP, so `udp length >= DATA_UDP_LEN` is data only.
const PAYLOAD: u64 = 600;
const DATA_UDP_LEN: u64 = 8 + PAYLOAD;
const COUNT: &str = "300";

/// IPv6 addresses for the same three namespaces (IPv4 ones are `netns`'s).
const A6: &str = "fd00:5::1";
const RA6: &str = "fd00:5::2";
const RB6: &str = "fd00:6::2";
const B6: &str = "fd00:6::1";

/// One address family of the lab: where B listens, and nft's names for it.
#[derive(Clone, Copy)]
struct Family {
    b_addr: &'static str,
    /// The receiver's `--bind` value.
    bind: &'static str,
    /// nft table family and header keyword.
    nft: &'static str,
    header: &'static str,
}

const V4: Family = Family {
    b_addr: B_ADDR,
    bind: "198.18.1.1:0",
    nft: "ip",
    header: "ip",
};
const V6: Family = Family {
    b_addr: B6,
    bind: "[fd00:6::1]:0",
    nft: "ip6",
    header: "ip6",
};

/// Adds IPv6 addresses and routes to the lab (no DAD, so they are usable at once), with R
/// forwarding IPv6. `Err` (IPv6 disabled here) is a skip.
fn add_ipv6(lab: &Lab) -> Result<(), String> {
    for (ns, dev, addr) in [
        (&lab.a, &lab.if_a, A6),
        (&lab.r, &lab.if_ra, RA6),
        (&lab.r, &lab.if_rb, RB6),
        (&lab.b, &lab.if_b, B6),
    ] {
        try_run(&mut command(&format!(
            "ip -n {ns} addr add {addr}/64 dev {dev} nodad"
        )))?;
    }
    try_run(&mut command(&format!(
        "ip -n {} route add fd00:6::/64 via {RA6}",
        lab.a
    )))?;
    try_run(&mut command(&format!(
        "ip -n {} route add fd00:5::/64 via {RB6}",
        lab.b
    )))?;
    try_run(&mut command(&format!(
        "ip netns exec {} sysctl -qw net.ipv6.conf.all.forwarding=1",
        lab.r
    )))?;
    Ok(())
}

/// The packet count of the nft rule commented `name` in table `family udplab_mark` of `ns`.
fn nft_rule_packets(ns: &str, family: &str, name: &str) -> u64 {
    let text = must_run(&mut command(&format!(
        "ip netns exec {ns} nft -j list table {family} udplab_mark"
    )));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("nft -j: {e}: {text}"));
    v["nftables"]
        .as_array()
        .expect("nft -j gives an nftables array")
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule["comment"].as_str() == Some(name))
        .find_map(|rule| {
            rule["expr"]
                .as_array()?
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())
        })
        .unwrap_or_else(|| panic!("no nft rule {name:?} in {text}"))
}

fn remark_run(test: &str, family: Family) {
    let _net = crate::common::network_shared();
    let Some(mut lab) = lab_or_skip(test, &["ip", "nft"]) else {
        return;
    };
    if family.nft == "ip6"
        && let Err(why) = add_ipv6(&lab)
    {
        eprintln!("netns test {test} skipped: no IPv6 here: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // R re-marks every data datagram toward B to CS1 and counts them.
    let rules = format!(
        "table {nft} udplab_mark {{\n chain forward_mark {{\n  type filter hook forward priority filter; policy accept;\n  {h} daddr {b} udp length >= {DATA_UDP_LEN} {h} dscp set cs1 counter comment \"remarked\"\n }}\n}}\n",
        nft = family.nft,
        h = family.header,
        b = family.b_addr,
    );
    let path = dir.path().join("mark.nft");
    std::fs::write(&path, rules).expect("writing the nft ruleset");
    if let Err(why) = try_run(&mut command(&format!(
        "ip netns exec {} nft -f {}",
        lab.r,
        path.display()
    ))) {
        eprintln!("netns test {test} skipped: cannot load the nft re-marking rule: {why}");
        return;
    }
    let recv_json = dir.path().join("recv.json");
    let send_json = dir.path().join("send.json");
    let addr = lab.start_receiver_at(family.bind, recv_json.to_str().unwrap(), ROOMY_RCVBUF);
    let run = send_from_a(
        &lab,
        &addr,
        &["--pps", "2000"],
        &[
            "--count",
            COUNT,
            "--size",
            &PAYLOAD.to_string(),
            "--dscp",
            "EF",
            "--ttl",
            "9",
        ],
        &send_json,
    );
    lab.wait_children(Duration::from_secs(30));
    let received = run.received;
    assert!(received > 0, "nothing arrived");
    let remarked_by_r = nft_rule_packets(&lab.r, family.nft, "remarked");
    assert!(
        remarked_by_r >= received,
        "R re-marked {remarked_by_r} datagrams, fewer than the {received} that arrived"
    );
    let flow = &run.report["flows"][0];
    assert_eq!(flow["sender"]["tos"], 0xb8);
    let m = &flow["receiver"]["marking"];
    assert_eq!(m["tos_sent"], 0xb8, "{m}");
    // Every datagram that arrived was re-marked on the way: none kept EF.
    assert_eq!(m["dscp_kept"], 0, "{m}");
    assert_eq!(m["dscp_remarked"].as_u64(), Some(received), "{m}");
    assert_eq!(
        m["tos_received"],
        json!([{"tos": 32, "dscp": 8, "ecn": 0, "count": received}]),
        "CS1 is what B saw"
    );
    // One router on the way: 9 hops left A, 8 reached B.
    assert_eq!(m["ttl_sent"], 9);
    assert_eq!(m["ttl_received"], json!([{"ttl": 8, "count": received}]));
    // The receiver's own report says the same.
    let text = std::fs::read_to_string(&recv_json).expect("the receiver's JSON");
    let own: Value = serde_json::from_str(text.lines().next().expect("one line")).unwrap();
    assert_eq!(own["flows"][0]["receiver"]["marking"], *m);
}

#[test]
fn a_router_that_remarks_dscp_and_decrements_ttl_shows_in_the_report_ipv4() {
    remark_run("re-marking (IPv4)", V4);
}

#[test]
fn a_router_that_remarks_dscp_and_decrements_ttl_shows_in_the_report_ipv6() {
    remark_run("re-marking (IPv6)", V6);
}

fn df_run(test: &str, family: Family) {
    let _net = crate::common::network_shared();
    let Some(mut lab) = lab_or_skip(test, &["ip"]) else {
        return;
    };
    if family.nft == "ip6"
        && let Err(why) = add_ipv6(&lab)
    {
        eprintln!("netns test {test} skipped: no IPv6 here: {why}");
        return;
    }
    // The link R → B (both ends) is the narrow one: A's own link stays at 1500, so A learns
    // 1280 only from R's ICMP.
    must_run(&mut command(&format!(
        "ip -n {} link set {} mtu 1280",
        lab.r, lab.if_rb
    )));
    must_run(&mut command(&format!(
        "ip -n {} link set {} mtu 1280",
        lab.b, lab.if_b
    )));
    let dir = tempfile::tempdir().expect("tempdir");
    let recv_json = dir.path().join("recv.json");
    let send_json = dir.path().join("send.json");
    let addr = lab.start_receiver_at(family.bind, recv_json.to_str().unwrap(), ROOMY_RCVBUF);
    let run = send_from_a(
        &lab,
        &addr,
        &["--pps", "1000"],
        &["--count", "100", "--size", "1400", "--df"],
        &send_json,
    );
    let sender = &run.report["flows"][0]["sender"];
    assert_eq!(sender["df"], true);
    assert_eq!(
        sender["path_mtu"], 1280,
        "the MTU R's ICMP taught: {sender}"
    );
    let emsgsize = sender["send_errors_emsgsize"].as_u64().unwrap();
    // The first datagram(s) leave before R's answer comes back; every later one is refused.
    assert!(emsgsize >= 1, "{sender}");
    assert!(emsgsize <= run.sent, "{sender}");
    assert_eq!(
        run.received, 0,
        "nothing of 1400 bytes crosses a 1280 link with DF"
    );
    // The receiver of a test that got no data keeps waiting (`--once`): the lab ends it.
}

#[test]
fn df_on_a_1280_link_counts_emsgsize_and_learns_the_mtu_ipv4() {
    df_run("--df (IPv4)", V4);
}

#[test]
fn df_on_a_1280_link_counts_emsgsize_and_learns_the_mtu_ipv6() {
    df_run("--df (IPv6)", V6);
}
