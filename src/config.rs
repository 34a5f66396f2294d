//! Validated, resolved settings: what the library runs, built from what the user typed.
//!
//! Every cross-field rule lives here (rate vs size, duration vs count, sizes vs the wire header)
//! so the driver never sees an inconsistent configuration, and every refusal is a one-line
//! `UsageError` that maps to exit code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use crate::auth::{self, AllowList, Key};
use crate::cli::{
    RateArg, RecvArgs, ReliableArg, ReliableArgs, ReportArgs, SendArgs, ThresholdArgs,
};
use crate::error::UsageError;
use crate::impair::ImpairSpec;
use crate::net::SendMode;
use crate::pacing::Pattern;
use crate::report::hdrlog::HdrLog;
use crate::summary::IntervalRow;
use crate::wire;

/// Default receiver port.
pub const DEFAULT_PORT: u16 = 5210;
/// Default payload bit rate of `send` and `loopback`.
pub const DEFAULT_RATE_BPS: u64 = 10_000_000;
/// `--batch` when not given: most datagrams per syscall when sending back to back.
pub const DEFAULT_BATCH: usize = 32;
/// Lowest `--pps`: the Hello message carries the rate in thousandths of a datagram per second.
pub const MIN_PPS: f64 = 0.001;

/// Refuses a destination no receiver can listen on (port 0 means "any port" only when binding),
/// before anything is sent.
pub fn check_destination(target: &str, addr: SocketAddr) -> Result<(), UsageError> {
    if addr.port() == 0 {
        return Err(UsageError(format!(
            "{target}: port 0 is not a valid destination; give the port `udplab recv` printed, \
             e.g. {}",
            SocketAddr::new(addr.ip(), DEFAULT_PORT)
        )));
    }
    Ok(())
}

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Paced at this many datagrams per second.
    Pps(f64),
    /// Back to back, as fast as the socket takes them.
    Max,
}

/// Where the JSON report goes.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonOut {
    Stdout,
    File(PathBuf),
}

/// Report outputs shared by every role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    pub csv: Option<PathBuf>,
    pub intervals_csv: Option<PathBuf>,
    pub json: Option<JsonOut>,
    pub loss_log: Option<PathBuf>,
    pub quiet: bool,
    /// Live NDJSON interval stream (`--intervals-json`).
    pub intervals_json: Option<JsonOut>,
}

impl Outputs {
    fn from_args(a: &ReportArgs) -> Result<Self, UsageError> {
        let json_out = |p: &PathBuf| {
            if p.as_os_str() == "-" {
                JsonOut::Stdout
            } else {
                JsonOut::File(p.clone())
            }
        };
        let outputs = Outputs {
            csv: a.csv.clone(),
            intervals_csv: a.intervals_csv.clone(),
            json: a.json.as_ref().map(json_out),
            loss_log: a.loss_log.clone(),
            quiet: a.quiet,
            intervals_json: a.intervals_json.as_ref().map(json_out),
        };
        if outputs.json == Some(JsonOut::Stdout) && outputs.intervals_json == Some(JsonOut::Stdout)
        {
            return Err(UsageError(
                "--json - and --intervals-json - cannot share stdout: send one of them to a file"
                    .into(),
            ));
        }
        Ok(outputs)
    }

    /// True when stdout is reserved for JSON, so the text report goes to stderr.
    pub fn json_on_stdout(&self) -> bool {
        self.json == Some(JsonOut::Stdout) || self.intervals_json == Some(JsonOut::Stdout)
    }
}

/// Pass/fail limits; all optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Fraction 0..=1.
    pub max_loss: Option<f64>,
    pub max_dup: Option<u64>,
    /// Fraction 0..=1.
    pub max_reorder: Option<f64>,
    pub max_jitter: Option<Duration>,
    pub max_latency_p99: Option<Duration>,
    pub max_rtt_p99: Option<Duration>,
}

impl Thresholds {
    fn from_args(a: &ThresholdArgs) -> Self {
        Thresholds {
            max_loss: a.max_loss,
            max_dup: a.max_dup,
            max_reorder: a.max_reorder,
            max_jitter: a.max_jitter,
            max_latency_p99: a.max_latency_p99,
            max_rtt_p99: a.max_rtt_p99,
        }
    }

    pub fn any(&self) -> bool {
        *self != Thresholds::default()
    }
}

/// Everything a sender needs, validated.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The receiver as the user wrote it (for reports).
    pub target: String,
    pub addr: SocketAddr,
    pub rate: Rate,
    /// Target payload bit rate, when paced.
    pub rate_bps: Option<f64>,
    pub payload_size: usize,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub sndbuf: Option<u64>,
    pub rcvbuf: Option<u64>,
    pub force_buf: bool,
    pub pattern: Pattern,
    pub interval: Duration,
    pub echo: bool,
    pub tmax: Duration,
    pub impair: Option<ImpairSpec>,
    pub impair_log: Option<PathBuf>,
    /// None: choose the fastest the socket supports.
    pub send_mode: Option<SendMode>,
    pub batch: usize,
    pub cpus: Vec<usize>,
    /// Parallel flows, each its own socket, session and threads.
    pub flows: usize,
    /// Which flow this configuration drives (0 for a single flow).
    pub flow_index: usize,
    pub seed: Option<u64>,
    pub thresholds: Thresholds,
    pub outputs: Outputs,
    /// Where each sender interval row also goes, tagged with `flow_index` (`--flows` gathers
    /// them into one progress line per interval).
    pub live_rows: Option<mpsc::Sender<(usize, IntervalRow)>>,
    /// The shared key every datagram is tagged with (`--key`, else `UDPLAB_KEY`); None: no tags.
    pub key: Option<Key>,
    /// `-R/--reverse`: the receiver sends, this side measures.
    pub reverse: bool,
    /// `--bidir`: both sides send at once, both measure.
    pub bidir: bool,
    /// The TOS / traffic-class byte of every datagram (`--tos`, or `--dscp` shifted into place);
    /// None: the kernel's default (0), and the receiver judges no marking.
    pub tos: Option<u8>,
    /// IPv4 TTL / IPv6 hop limit (`--ttl`); also the multicast TTL toward a group.
    pub ttl: Option<u8>,
    /// Don't Fragment / path MTU discovery (`--df`): oversized sends fail with EMSGSIZE.
    pub df: bool,
    /// Source address to send from (`send --bind`); None: the kernel chooses.
    pub bind: Option<SocketAddr>,
    /// Toward a group: the outgoing interface (`--iface`).
    pub iface: Option<crate::net::multicast::Iface>,
    /// `--hdr-log FILE`: the interval histograms being collected, written to FILE at the end.
    pub hdr_log: Option<(PathBuf, HdrLog)>,
    /// `--label KEY=VALUE` tags carried into the reports (a later value of a key wins).
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--omit`: the warm-up left out of the statistics (zero: none).
    pub omit: Duration,
    /// `--reliable`: the ACK/retransmit layer and its tuning; None: the plain measurement.
    pub reliable: Option<ReliableSettings>,
}

/// `--reliable` and its tuning, validated. Tuning left out takes the ARQ layer's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliableSettings {
    pub mode: ReliableArg,
    /// Share of the paced rate retransmissions may add (0.25 = 25%).
    pub rexmit_budget: Option<f64>,
    /// Messages in flight at most.
    pub window: Option<u32>,
    /// Transmissions of one message before it is given up.
    pub max_transmissions: Option<u32>,
    /// No ACK progress for this long gives the transfer up.
    pub give_up: Option<Duration>,
    /// Transmission from which a retransmission may go twice (0: never).
    pub repeat_from: Option<u16>,
    /// The `--impair` spec also hits the ACKs (loopback, where both directions are ours; on
    /// `send` only `udplab proxy --reverse-impair` can).
    pub impair_acks: bool,
}

/// Largest `--window`: the receiver's reorder buffer follows it.
pub const MAX_RELIABLE_WINDOW: u32 = 1 << 20;

impl ReliableSettings {
    fn from_args(a: &ReliableArgs) -> Result<Option<Self>, UsageError> {
        let Some(mode) = a.reliable else {
            return Ok(None);
        };
        if let Some(b) = a.rexmit_budget
            && !(0.0..=10.0).contains(&b)
        {
            return Err(UsageError(
                "--rexmit-budget: 0% to 1000% of the paced rate".into(),
            ));
        }
        let window = match a.window {
            None => None,
            Some(w) if w == 0 || w > MAX_RELIABLE_WINDOW as usize => {
                return Err(UsageError(format!(
                    "--window {w}: 1..={MAX_RELIABLE_WINDOW} messages in flight"
                )));
            }
            Some(w) => Some(w as u32),
        };
        let max_transmissions = match a.max_transmissions {
            None => None,
            Some(n) if n == 0 || n > 1000 => {
                return Err(UsageError(format!(
                    "--max-transmissions {n}: 1..=1000 transmissions per message"
                )));
            }
            Some(n) => Some(n as u32),
        };
        if a.give_up.is_some_and(|d| d < Duration::from_millis(10)) {
            return Err(UsageError("--give-up: at least 10ms".into()));
        }
        let repeat_from = match a.repeat_from {
            None => None,
            Some(n) if n == 1 || n > 1000 => {
                return Err(UsageError(format!(
                    "--repeat-from {n}: copies are of retransmissions, so 2..=1000 \
                     (a message's Nth transmission on), or 0 for no copies"
                )));
            }
            Some(n) => Some(n as u16),
        };
        Ok(Some(ReliableSettings {
            mode,
            rexmit_budget: a.rexmit_budget,
            window,
            max_transmissions,
            give_up: a.give_up,
            repeat_from,
            impair_acks: false,
        }))
    }

    /// What the Hello announces (flag bit 2, bytes 72..96).
    pub fn hello(&self) -> wire::HelloReliable {
        let (mode, deadline, deadline_in_rtt) = match self.mode {
            ReliableArg::Ordered => (wire::ReliableMode::Ordered, 0, false),
            ReliableArg::Unordered => (wire::ReliableMode::Unordered, 0, false),
            ReliableArg::Deadline(d) => (
                wire::ReliableMode::Deadline,
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                false,
            ),
            ReliableArg::DeadlineRtt(t) => (wire::ReliableMode::Deadline, u64::from(t), true),
        };
        wire::HelloReliable {
            mode,
            deadline,
            deadline_in_rtt,
            window: self.window.unwrap_or(0),
            // The layer's default budget when the user gave none.
            rexmit_budget_pct: (self
                .rexmit_budget
                .unwrap_or(crate::arq::ArqConfig::default().rexmit_budget)
                * 100.0)
                .round() as u32,
        }
    }
}

impl SendConfig {
    /// Validates `args` for a sender to `addr`. `default_duration` applies when neither
    /// --duration nor --count is given.
    pub fn from_args(
        target: &str,
        addr: SocketAddr,
        args: &SendArgs,
        default_duration: Duration,
    ) -> Result<Self, UsageError> {
        let size = args.size;
        if size < wire::DATA_HEADER_LEN as u64 || size > wire::MAX_PAYLOAD as u64 {
            return Err(UsageError(format!(
                "--size {size}: the UDP payload must be {}..={} bytes (udplab's header takes {})",
                wire::DATA_HEADER_LEN,
                wire::MAX_PAYLOAD,
                wire::DATA_HEADER_LEN
            )));
        }
        let key = resolve_key(args.key.as_deref())?;
        if key.is_some() && size < auth::MIN_KEYED_PAYLOAD as u64 {
            return Err(UsageError(format!(
                "--size {size}: with a key each Data datagram carries a {}-byte tag after \
                 udplab's {}-byte header: use --size {} or more",
                auth::TAG_LEN,
                wire::DATA_HEADER_LEN,
                auth::MIN_KEYED_PAYLOAD
            )));
        }
        let (rate, rate_bps) = match (args.rate, args.pps) {
            (Some(RateArg::Max), _) => (Rate::Max, None),
            (Some(RateArg::Bps(0)), _) => {
                return Err(UsageError(
                    "--rate 0: the rate must be above zero (use --rate max for unpaced)".into(),
                ));
            }
            (Some(RateArg::Bps(bps)), _) => {
                let pps = bps as f64 / (size as f64 * 8.0);
                (Rate::Pps(pps), Some(bps as f64))
            }
            (None, Some(pps)) if pps <= 0.0 => {
                return Err(UsageError(
                    "--pps 0: the rate must be above zero (use --rate max for unpaced)".into(),
                ));
            }
            (None, Some(pps)) if pps < MIN_PPS => {
                return Err(UsageError(format!(
                    "--pps {pps}: the lowest packet rate is {MIN_PPS} datagrams/s (one every \
                     1000 s; the wire carries the rate in thousandths)"
                )));
            }
            (None, Some(pps)) => (Rate::Pps(pps), Some(pps * size as f64 * 8.0)),
            (None, None) => {
                let pps = DEFAULT_RATE_BPS as f64 / (size as f64 * 8.0);
                (Rate::Pps(pps), Some(DEFAULT_RATE_BPS as f64))
            }
        };
        if let Rate::Pps(pps) = rate
            && pps > 100_000_000.0
        {
            return Err(UsageError(format!(
                "rate of {pps:.0} datagrams/s is beyond any host; use --rate max for unpaced"
            )));
        }
        if args.duration == Some(Duration::ZERO) {
            return Err(UsageError(
                "--duration 0: the test must last longer than zero".into(),
            ));
        }
        if args.count == Some(0) {
            return Err(UsageError("--count 0: send at least one datagram".into()));
        }
        let duration = match (args.duration, args.count) {
            (None, None) => Some(default_duration),
            (d, _) => d,
        };
        // 0 means no live interval lines (as `proxy --interval 0`); rows are still kept for the
        // reports, per second.
        let (interval, quiet) = if args.interval.is_zero() {
            (Duration::from_secs(1), true)
        } else if args.interval < Duration::from_millis(10) {
            return Err(UsageError(
                "--interval: the report interval must be 0 (no interval lines) or at least 10ms"
                    .into(),
            ));
        } else {
            (args.interval, args.reports.quiet)
        };
        if args.tmax > Duration::from_secs(600) {
            return Err(UsageError("--tmax: at most 600s".into()));
        }
        if args.flows == 0 || args.flows > 64 {
            return Err(UsageError("--flows: 1..=64 parallel flows".into()));
        }
        let batch = args.batch.unwrap_or(DEFAULT_BATCH);
        if batch == 0 || batch > 1024 {
            return Err(UsageError("--batch: 1..=1024 datagrams per syscall".into()));
        }
        let send_mode = match args.send_mode.to_ascii_lowercase().as_str() {
            "auto" => None,
            other => Some(other.parse::<SendMode>().map_err(|_| {
                UsageError(format!(
                    "--send-mode {other}: expected auto, plain, mmsg or gso"
                ))
            })?),
        };
        let cpus = match &args.cpu {
            None => Vec::new(),
            Some(list) => crate::net::parse_cpu_list(list)
                .map_err(|e| UsageError(format!("--cpu {list}: {e}")))?,
        };
        let impair = args.impair.filter(|s| !s.is_noop());
        if args.hdr_log.is_some() && args.flows > 1 {
            return Err(UsageError(
                "--hdr-log logs one flow's histograms: use it without --flows".into(),
            ));
        }
        if args.impair_log.is_some() && args.flows > 1 {
            return Err(UsageError(
                "--impair-log logs one flow's fates: use it without --flows".into(),
            ));
        }
        if (args.reverse || args.bidir) && args.hdr_log.is_some() {
            return Err(UsageError(
                "--hdr-log with -R/--reverse or --bidir: the reverse measurement does not export its \
                 interval histograms yet; the JSON report has the latency summary"
                    .into(),
            ));
        }
        if args.reverse {
            let clash = [
                (args.echo, "--echo"),
                (impair.is_some(), "--impair"),
                (args.flows > 1, "--flows"),
                (matches!(args.rate, Some(RateArg::Max)), "--rate max"),
            ];
            if let Some((_, name)) = clash.iter().find(|(set, _)| *set) {
                return Err(UsageError(format!(
                    "--reverse cannot be combined with {name}: the receiver sends a paced, \
                     unimpaired single flow (impair the path with `udplab proxy \
                     --reverse-impair` instead)"
                )));
            }
        }
        if args.bidir {
            let clash = [
                (args.echo, "--echo"),
                (impair.is_some(), "--impair"),
                (args.flows > 1, "--flows"),
                (matches!(args.rate, Some(RateArg::Max)), "--rate max"),
                (addr.ip().is_multicast(), "a multicast target"),
            ];
            if let Some((_, name)) = clash.iter().find(|(set, _)| *set) {
                return Err(UsageError(format!(
                    "--bidir cannot be combined with {name}: the receiver sends a paced, \
                     unimpaired single flow back (impair the path with `udplab proxy --impair \
                     --reverse-impair` instead)"
                )));
            }
        }
        if args.impair_log.is_some() && impair.is_none() {
            return Err(UsageError(
                "--impair-log needs an --impair spec to log".into(),
            ));
        }
        if addr.ip().is_multicast() {
            // Nothing comes back from a group: no echoes, no results to carry lost ranges.
            let refused = [
                (args.echo, "--echo"),
                (args.reports.loss_log.is_some(), "--loss-log"),
                (args.flows > 1, "--flows"),
                (has_thresholds(&args.thresholds), "a --max-* threshold"),
            ];
            if let Some((_, what)) = refused.iter().find(|(given, _)| *given) {
                return Err(UsageError(format!(
                    "{what} with a multicast target ({}): group members answer nothing; each \
                     one reports on its own (udplab recv --join)",
                    addr.ip()
                )));
            }
        }
        let omit = args.omit.unwrap_or(Duration::ZERO);
        if !omit.is_zero() {
            if args.reverse || args.bidir {
                return Err(UsageError(
                    "--omit with -R/--reverse or --bidir: the reverse measurement does not leave a warm-up \
                     out yet; run without --omit"
                        .into(),
                ));
            }
            if rate == Rate::Max || args.pattern == Pattern::Poisson {
                return Err(UsageError(
                    "--omit needs a schedule fixed in advance, so both sides know which \
                     datagrams are the warm-up: a paced --pattern cbr or burst=N"
                        .into(),
                ));
            }
            if duration.is_some_and(|d| omit >= d) {
                return Err(UsageError(
                    "--omit: the warm-up must be shorter than --duration".into(),
                ));
            }
            if let (Some(count), Rate::Pps(pps)) = (args.count, rate)
                && omit.as_secs_f64() * pps >= count as f64
            {
                return Err(UsageError(format!(
                    "--omit: the warm-up would take all {count} datagrams of --count"
                )));
            }
        }
        let reliable = ReliableSettings::from_args(&args.reliable)?;
        if reliable.is_some() {
            let clash = [
                (args.reverse, "-R/--reverse"),
                (args.bidir, "--bidir"),
                (addr.ip().is_multicast(), "a multicast target"),
                (!omit.is_zero(), "--omit"),
                (args.hdr_log.is_some(), "--hdr-log"),
            ];
            if let Some((_, name)) = clash.iter().find(|(set, _)| *set) {
                return Err(UsageError(format!(
                    "--reliable cannot be combined with {name} (not supported yet)"
                )));
            }
            if args.echo {
                return Err(UsageError(
                    "--echo with --reliable: the ACKs already measure the RTT (srtt, min RTT in \
                     the report); drop --echo"
                        .into(),
                ));
            }
            if args.impair_log.is_some() {
                return Err(UsageError(
                    "--impair-log logs plain Data sequences: use it without --reliable".into(),
                ));
            }
            // The reliable sender hands the kernel one datagram per send() (each RData is
            // stamped when it leaves, retransmissions interleave with new data): batching
            // would be ignored, so asking for it is refused rather than silently dropped.
            if let Some(mode) = send_mode.filter(|m| *m != SendMode::Plain) {
                return Err(UsageError(format!(
                    "--send-mode {mode} cannot be combined with --reliable: the reliable sender \
                     sends one datagram per send() (use --send-mode plain or auto, or drop \
                     --reliable)"
                )));
            }
            if let Some(n) = args.batch {
                return Err(UsageError(format!(
                    "--batch {n} cannot be combined with --reliable: the reliable sender sends \
                     one datagram per send(); drop --batch"
                )));
            }
            if size < crate::run::reliable::MIN_RELIABLE_SIZE as u64 {
                return Err(UsageError(format!(
                    "--size {size}: with --reliable each datagram carries the RData header: use \
                     --size {} or more",
                    crate::run::reliable::MIN_RELIABLE_SIZE
                )));
            }
            if key.is_some()
                && size < (crate::run::reliable::MIN_RELIABLE_SIZE + auth::TAG_LEN) as u64
            {
                return Err(UsageError(format!(
                    "--size {size}: with --reliable and a key each datagram carries the RData \
                     header and the tag: use --size {} or more",
                    crate::run::reliable::MIN_RELIABLE_SIZE + auth::TAG_LEN
                )));
            }
        }
        Ok(SendConfig {
            target: target.to_string(),
            addr,
            rate,
            rate_bps,
            payload_size: size as usize,
            duration,
            count: args.count,
            sndbuf: args.sndbuf,
            rcvbuf: args.rcvbuf,
            force_buf: args.force_buf,
            pattern: args.pattern,
            interval,
            echo: args.echo,
            tmax: args.tmax,
            impair,
            impair_log: args.impair_log.clone(),
            send_mode,
            batch,
            cpus,
            reverse: args.reverse,
            bidir: args.bidir,
            flows: args.flows,
            flow_index: 0,
            seed: args.seed,
            thresholds: Thresholds::from_args(&args.thresholds),
            outputs: Outputs {
                quiet,
                ..Outputs::from_args(&args.reports)?
            },
            live_rows: None,
            key,
            tos: marking_tos(args.dscp, args.tos),
            ttl: args.ttl,
            df: args.df,
            bind: None,
            iface: args.iface,
            hdr_log: args.hdr_log.clone().map(|p| (p, HdrLog::new())),
            labels: args.label.iter().cloned().collect(),
            omit,
            reliable,
        })
    }

    /// Sets the source address (`send --bind`), refusing one of the other family or a fixed
    /// port shared by several flows. Whether it is an address of this host is known only
    /// when binding (the error then says so).
    pub fn set_bind(&mut self, text: &str) -> Result<(), UsageError> {
        let bind = crate::net::resolve(text, 0).map_err(|e| UsageError(format!("--bind: {e}")))?;
        let mapped_v4 = |a: &SocketAddr| match a.ip() {
            std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some(),
            std::net::IpAddr::V4(_) => true,
        };
        if bind.is_ipv4() != self.addr.is_ipv4() && !(mapped_v4(&bind) && mapped_v4(&self.addr)) {
            let family = |a: &SocketAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(UsageError(format!(
                "--bind {text}: an {} source cannot reach the {} target {}; bind an {} address",
                family(&bind),
                family(&self.addr),
                self.addr,
                family(&self.addr)
            )));
        }
        if bind.port() != 0 && self.flows > 1 {
            return Err(UsageError(format!(
                "--bind {text}: {} flows need a socket each, and only one can have port {}: \
                 give the address without a port",
                self.flows,
                bind.port()
            )));
        }
        // An IPv4-mapped source toward an IPv4 target (or the reverse) is the same address in
        // the target's family, which is what the sending socket is made of.
        let bind = match (bind.ip(), self.addr.is_ipv4()) {
            (std::net::IpAddr::V6(ip), true) => match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), bind.port()),
                None => bind,
            },
            (std::net::IpAddr::V4(ip), false) => {
                SocketAddr::new(ip.to_ipv6_mapped().into(), bind.port())
            }
            _ => bind,
        };
        self.bind = Some(bind);
        Ok(())
    }

    /// Target datagrams per second, when paced.
    pub fn pps(&self) -> Option<f64> {
        match self.rate {
            Rate::Pps(p) => Some(p),
            Rate::Max => None,
        }
    }
}

/// Everything a receiver needs, validated.
#[derive(Debug, Clone)]
pub struct RecvConfig {
    pub bind: SocketAddr,
    pub rcvbuf: Option<u64>,
    pub sndbuf: Option<u64>,
    pub force_buf: bool,
    pub once: bool,
    pub max_sessions: usize,
    /// Memory budget of all tests together, bytes (`--max-memory`).
    pub max_memory: u64,
    pub kernel_timestamps: bool,
    /// Ask for UDP GRO: coalesced datagrams, split again in user space (far fewer wakeups), at
    /// the price of drop events that count buffers, not datagrams.
    pub gro: bool,
    /// Poll without blocking while datagrams flow (no wake-up latency, one busy core).
    pub busy_poll: bool,
    pub outputs: Outputs,
    /// No per-test banner, summary or report files: the caller reports (loopback's receiver
    /// half). Live interval lines still follow `outputs.quiet`.
    pub silent: bool,
    pub cpus: Vec<usize>,
    /// Accept only datagrams tagged with this key, and tag every reply (`--key`).
    pub key: Option<Key>,
    /// Accept datagrams only from these prefixes (`--allow`); None: from anyone.
    pub allow: Option<AllowList>,
    /// `--join`: a group member, bound to the group on `bind`'s port.
    pub multicast: Option<crate::net::multicast::Membership>,
    /// Most payload bit/s of one reverse test (`--max-reverse-rate`); 0 refuses them.
    pub max_reverse_bps: u64,
    /// The TOS / traffic-class byte of this receiver's replies (`--tos`/`--dscp`).
    pub tos: Option<u8>,
    /// Where each interval's one-way latency histogram goes (the loopback receiver, sharing
    /// the sender's `--hdr-log`).
    pub hdr_log: Option<HdrLog>,
}

impl RecvConfig {
    pub fn from_args(bind: SocketAddr, args: &RecvArgs) -> Result<Self, UsageError> {
        if args.max_sessions == 0 {
            return Err(UsageError("--max-sessions must be at least 1".into()));
        }
        Ok(RecvConfig {
            bind,
            rcvbuf: args.rcvbuf,
            sndbuf: args.sndbuf,
            force_buf: args.force_buf,
            once: args.once,
            max_sessions: args.max_sessions,
            max_memory: args.max_memory,
            kernel_timestamps: !args.no_kernel_timestamps,
            gro: args.gro,
            busy_poll: args.busy_poll,
            outputs: Outputs::from_args(&args.reports)?,
            silent: false,
            cpus: args.cpu.into_iter().collect(),
            key: resolve_key(args.key.as_deref())?,
            allow: AllowList::new(args.allow.clone()),
            multicast: match args.join {
                None => None,
                Some(group) => {
                    let m = crate::net::multicast::Membership {
                        group,
                        source: args.source,
                        iface: args.iface,
                    };
                    m.check().map_err(UsageError)?;
                    Some(m)
                }
            },
            max_reverse_bps: args.max_reverse_rate,
            tos: marking_tos(args.dscp, args.tos),
            hdr_log: None,
        })
    }
}

/// The TOS byte `--dscp` or `--tos` asks for (clap keeps them exclusive).
fn marking_tos(dscp: Option<u8>, tos: Option<u8>) -> Option<u8> {
    dscp.map(crate::net::marking::tos_of_dscp).or(tos)
}

/// Whether any `--max-*` threshold was given: all of them judge the receiver's figures.
fn has_thresholds(t: &ThresholdArgs) -> bool {
    t.max_loss.is_some()
        || t.max_dup.is_some()
        || t.max_reorder.is_some()
        || t.max_jitter.is_some()
        || t.max_latency_p99.is_some()
        || t.max_rtt_p99.is_some()
}

/// `--key FILE|-` when given, else the key in `UDPLAB_KEY`, else none (see [`Key::resolve`]).
fn resolve_key(option: Option<&std::path::Path>) -> Result<Option<Key>, UsageError> {
    Key::resolve(option).map_err(|e| UsageError(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn send(args: &[&str]) -> Result<SendConfig, UsageError> {
        let mut argv = vec!["udplab", "send", "127.0.0.1:5210"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("clap accepts");
        let crate::cli::Command::Send(cmd) = cli.command else {
            panic!("not send")
        };
        SendConfig::from_args(
            &cmd.target,
            "127.0.0.1:5210".parse().unwrap(),
            &cmd.opts,
            Duration::from_secs(10),
        )
    }

    #[test]
    fn rate_becomes_datagrams_per_second_of_the_payload() {
        let c = send(&["--rate", "100M", "--size", "1250"]).unwrap();
        assert_eq!(c.rate, Rate::Pps(10_000.0));
        assert_eq!(c.rate_bps, Some(100e6));
        let c = send(&["--pps", "2000", "--size", "100"]).unwrap();
        assert_eq!(c.rate_bps, Some(1.6e6));
        let c = send(&["--rate", "max"]).unwrap();
        assert_eq!((c.rate, c.rate_bps), (Rate::Max, None));
    }

    #[test]
    fn default_duration_applies_only_without_a_count() {
        assert_eq!(send(&[]).unwrap().duration, Some(Duration::from_secs(10)));
        let c = send(&["--count", "5"]).unwrap();
        assert_eq!((c.duration, c.count), (None, Some(5)));
    }

    #[test]
    fn fractional_packet_rates_are_accepted() {
        let c = send(&["--pps", "0.5", "--size", "100"]).unwrap();
        assert_eq!(c.rate, Rate::Pps(0.5));
        assert_eq!(c.rate_bps, Some(400.0));
    }

    #[test]
    fn interval_zero_means_no_interval_lines() {
        let c = send(&["--interval", "0"]).unwrap();
        assert!(c.outputs.quiet);
        assert_eq!(c.interval, Duration::from_secs(1));
        let c = send(&["--interval", "500ms"]).unwrap();
        assert!(!c.outputs.quiet);
        assert_eq!(c.interval, Duration::from_millis(500));
    }

    #[test]
    fn port_zero_is_not_a_destination() {
        let e = check_destination("127.0.0.1:0", "127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(e.0.contains("port 0 is not a valid destination"), "{}", e.0);
        assert!(check_destination("h", "127.0.0.1:5210".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_key_needs_room_for_its_tag_in_every_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "0123456789abcdef\n").unwrap();
        let key = key.to_str().unwrap();
        let e = send(&["--key", key, "--size", "39"]).unwrap_err();
        assert!(
            e.0.contains("--size 39") && e.0.contains("--size 40 or more"),
            "{}",
            e.0
        );
        let c = send(&["--key", key, "--size", "40"]).unwrap();
        assert!(c.key.is_some());
        // Without a key the smallest datagram is still the bare header.
        assert!(send(&["--size", "24"]).unwrap().key.is_none());
        let short = dir.path().join("short");
        std::fs::write(&short, "too short").unwrap();
        let e = send(&["--key", short.to_str().unwrap()]).unwrap_err();
        assert!(e.0.contains("use at least 16"), "{}", e.0);
    }

    #[test]
    fn markings_become_one_tos_byte() {
        assert_eq!(send(&["--dscp", "EF"]).unwrap().tos, Some(0xb8));
        assert_eq!(send(&["--dscp", "af41"]).unwrap().tos, Some(34 << 2));
        assert_eq!(send(&["--tos", "0x01"]).unwrap().tos, Some(1));
        let c = send(&["--ttl", "7", "--df"]).unwrap();
        assert_eq!((c.tos, c.ttl, c.df, c.bind), (None, Some(7), true, None));
        let mut argv = vec![
            "udplab",
            "send",
            "127.0.0.1:5210",
            "--dscp",
            "EF",
            "--tos",
            "4",
        ];
        let e = crate::cli::Cli::try_parse_from(&argv)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        argv.truncate(3);
        argv.extend(["--dscp", "64"]);
        let e = crate::cli::Cli::try_parse_from(&argv)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0..=63"), "{e}");
    }

    #[test]
    fn bind_must_match_the_target_family() {
        let mut c = send(&[]).unwrap();
        c.set_bind("127.0.0.1").unwrap();
        assert_eq!(c.bind, Some("127.0.0.1:0".parse().unwrap()));
        c.set_bind("127.0.0.1:6000").unwrap();
        assert_eq!(c.bind, Some("127.0.0.1:6000".parse().unwrap()));
        let e = c.set_bind("::1").unwrap_err();
        assert!(
            e.0.contains("IPv6 source cannot reach the IPv4 target"),
            "{}",
            e.0
        );
        c.set_bind("[::ffff:127.0.0.1]:0").unwrap();
        assert_eq!(c.bind, Some("127.0.0.1:0".parse().unwrap()));
        let mut c = send(&["--flows", "2"]).unwrap();
        let e = c.set_bind("127.0.0.1:6000").unwrap_err();
        assert!(e.0.contains("without a port"), "{}", e.0);
        assert!(c.set_bind("127.0.0.1").is_ok());
    }

    #[test]
    fn repeat_copies_start_at_a_retransmission_or_are_off() {
        let repeat = |v: &str| send(&["--reliable", "--repeat-from", v]);
        let of = |c: SendConfig| c.reliable.and_then(|r| r.repeat_from);
        assert_eq!(of(repeat("0").unwrap()), Some(0));
        assert_eq!(of(repeat("2").unwrap()), Some(2));
        assert_eq!(of(send(&["--reliable"]).unwrap()), None);
        for bad in ["1", "1001"] {
            let e = repeat(bad).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(&format!("--repeat-from {bad}")), "{e}");
        }
    }

    #[test]
    fn impossible_settings_are_refused_with_the_option_named() {
        for (args, needle) in [
            (&["--rate", "0"][..], "--rate 0"),
            (&["--pps", "0"], "--pps 0"),
            (&["--size", "23"], "--size 23"),
            (&["--size", "65508"], "--size 65508"),
            (&["--count", "0"], "--count 0"),
            (&["--duration", "0s"], "--duration 0"),
            (&["--interval", "1ms"], "--interval"),
            (&["--pps", "0.0001"], "--pps 0.0001"),
            (&["--send-mode", "warp"], "--send-mode warp"),
            (&["--flows", "0"], "--flows"),
            (&["--impair-log", "x.csv"], "--impair-log"),
            (
                &["--omit", "1s", "--rate", "max"],
                "--omit needs a schedule",
            ),
            (
                &["--omit", "1s", "--pattern", "poisson"],
                "--omit needs a schedule",
            ),
            (&["--omit", "10s"], "shorter than --duration"),
            (
                &["--omit", "1s", "--pps", "100", "--count", "100"],
                "all 100 datagrams",
            ),
        ] {
            let e = send(args).expect_err(needle);
            assert!(e.0.contains(needle), "{args:?}: {}", e.0);
        }
    }
}
