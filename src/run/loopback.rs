//! `udplab loopback`: a receiver thread and a sender in one process over 127.0.0.1 (or ::1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::thread;

use anyhow::Context;

use crate::config::{Outputs, RecvConfig, SendConfig};
use crate::net;
use crate::run::recv::Receiver;
use crate::run::{Stop, send};
use crate::summary::RunReport;

/// Receive buffer `loopback` asks for when the user gives none.
pub const LOOPBACK_RCVBUF: u64 = 4 << 20;

/// Runs one complete test over loopback and returns the sender's report (which carries the
/// receiver's). The receiver half writes only the loss log; the caller writes the reports.
pub fn run(cfg: SendConfig, rx: LoopbackReceiver, stop: &Stop) -> anyhow::Result<RunReport> {
    with_receiver(cfg, rx, stop, send::run)
}

/// Choices for the receiver half of `loopback`.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackReceiver {
    pub ipv6: bool,
    pub kernel_timestamps: bool,
    pub gro: bool,
}

/// Starts a loopback receiver for `cfg.flows` tests, runs `sender` against it, and waits for
/// the receiver to deliver its results and end.
pub fn with_receiver<T>(
    mut cfg: SendConfig,
    rx_opts: LoopbackReceiver,
    stop: &Stop,
    sender: impl FnOnce(&SendConfig, &Stop) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // Both directions are ours here: `--impair` hits the ACKs too (with their own fates).
    if let Some(r) = cfg.reliable.as_mut() {
        r.impair_acks = true;
    }
    let ip: IpAddr = if rx_opts.ipv6 {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    // Loopback is for studying what udplab and its impairment do, not the kernel's default
    // buffer: ask for 4 MiB (or net.core.rmem_max if lower, so nothing is clamped) unless the
    // user chose; the report shows requested → effective.
    let rcfg = RecvConfig {
        bind: SocketAddr::new(ip, 0),
        rcvbuf: cfg.rcvbuf.or(Some(
            net::rcvbuf_limit().map_or(LOOPBACK_RCVBUF, |l| l.min(LOOPBACK_RCVBUF)),
        )),
        sndbuf: None,
        force_buf: cfg.force_buf,
        once: true,
        max_sessions: cfg.flows.max(1),
        max_memory: crate::session::DEFAULT_MAX_MEMORY,
        kernel_timestamps: rx_opts.kernel_timestamps,
        gro: rx_opts.gro,
        busy_poll: false,
        // The receiver half prints its live interval lines next to the sender's (one test:
        // with --flows the flows' progress line stands for them) and streams its interval rows;
        // `json` only steers the text to stderr when stdout carries JSON; the caller writes
        // the reports.
        outputs: Outputs {
            // A reverse test's loss is measured (and logged) by the sending half (with
            // --bidir, both directions are logged there).
            loss_log: if cfg.reverse || cfg.bidir {
                None
            } else {
                cfg.outputs.loss_log.take()
            },
            quiet: cfg.outputs.quiet || cfg.flows > 1,
            json: cfg.outputs.json.clone(),
            intervals_json: cfg.outputs.intervals_json.clone(),
            ..Outputs::default()
        },
        silent: true,
        cpus: cfg.cpus.get(1).copied().into_iter().collect(),
        // Both halves share the key: loopback measures what a keyed test costs.
        key: cfg.key.clone(),
        allow: None,
        multicast: None,
        // This host's own loopback: the user's rate is the only limit.
        max_reverse_bps: u64::MAX,
        // Echoes carry the sender's marking, as a receiver given the same --dscp would.
        tos: cfg.tos,
        hdr_log: cfg.hdr_log.as_ref().map(|(_, log)| log.clone()),
    };
    let receiver = Receiver::bind(rcfg)?;
    let addr = receiver.local_addr();
    // The receiver's buffer clamps come back with its results and are warned about from
    // there (once); the rest is said now.
    let buffer_warning = |w: &&String| w.starts_with("SO_RCVBUF") || w.starts_with("SO_SNDBUF");
    for w in receiver.warnings().iter().filter(|w| !buffer_warning(w)) {
        crate::run::warn(&format!("receiver: {w}"));
    }
    let rstop = Stop::new();
    let rx = {
        let rstop = rstop.clone();
        thread::Builder::new()
            .name("udplab-recv".into())
            .spawn(move || receiver.run(&rstop))
            .context("starting the receive thread")?
    };
    cfg.addr = addr;
    cfg.target = addr.to_string();
    let result = sender(&cfg, stop);
    // The sender has its results (or gave up): the receiver has nothing left to serve. Its
    // `--once` waits for a test that sent data, which a run that sent nothing never gives it.
    rstop.raise_to(1);
    let received = rx
        .join()
        .map_err(|_| anyhow::anyhow!("the receive thread panicked"))?;
    let report = result?;
    received.context("receiver")?;
    Ok(report)
}
