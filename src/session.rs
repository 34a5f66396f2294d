//! Sender and receiver session state machines: handshake, end-of-test exchange, results transfer.
//!
//! Sans-IO in the quinn-proto style: datagrams go in through `handle_*`, datagrams to send come
//! out of `poll_transmit`, the next deadline out of `poll_timeout`, happenings out of
//! `poll_event`. Time is always an argument. The control exchange travels on the same UDP
//! 5-tuple as the data, so it crosses `udplab proxy`, NATs and firewalls exactly as the data does;
//! every control message is retried until answered, so control survives the loss being measured.
//!
//! Exchange: Hello → HelloAck (retry, with a cookie) → Hello with the cookie → HelloAck
//! (accepted, with the test's secret); data; Fin (sender totals) → FinAck (receiver's Tmax);
//! after Tmax, ResultReq → ResultChunk×n (the receiver's report as JSON, in chunks that fit
//! any MTU). Every control message after the handshake carries the secret.
//!
//! Trust (the receiver may be reachable by anyone): a Hello's address is validated by a
//! stateless cookie before anything is kept for it; nothing sent to an unvalidated address is
//! larger than the datagram that caused it; a test's Data and control are taken only from its
//! validated address, control only with its secret; per-test memory is capped and all tests
//! share a budget; claims a peer makes (Tmax, rate, sequence numbers) are checked before they
//! cost memory; what is refused or ignored is counted (`foreign`, `implausible`).
//!
//! Multicast: a group member (`recv --join`, [`MulticastReceive`]) takes tests from the
//! sender's announcement (a Hello with the multicast flag) and its Fin, without cookie or
//! secret, because it never sends anything at all.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::arq::{ArqConfig, ArqDeadline, ArqOrdering, ArqReceiver};
use crate::stats::marking::MarkingCounter;
use crate::stats::{ReceiverStats, StatsConfig};
use crate::summary::{
    BufferInfo, IntervalRow, MAX_CARRIED_LOSS_RANGES, REPORT_VERSION, ReceiverReport,
    ReliableInterval, SenderReport, keep_interval,
};
use crate::wire::{
    self, AbortReason, DataHeader, Fin, FinAck, Hello, HelloAck, HelloPattern, HelloReliable,
    HelloStatus, Kind, Message, RejectReason, ResultChunk,
};

/// How often an unanswered control message is sent again.
pub const CONTROL_RETRY: Duration = Duration::from_millis(200);
/// How long the sender waits for the receiver to answer the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the sender waits for the receiver to acknowledge the end of the test.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after Tmax the sender keeps asking for results.
pub const RESULTS_GRACE: Duration = Duration::from_secs(5);
/// A running test with no datagram from its sender for this long is ended by the receiver (a
/// draining one ends at most Tmax, itself at most [`MAX_TMAX`], after its Fin).
pub const PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Tmax a receiver accepts: a test's memory is held at most this long after its end.
pub const MAX_TMAX: Duration = Duration::from_secs(60);
/// Largest duplicate window a receiver gives one test, in sequences (128 MiB of window).
pub const MAX_WINDOW_BITS: usize = 1 << 28;
/// Default total memory budget of a receiver's tests (`recv --max-memory`).
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;
/// A cookie is valid in the 10 s bucket it was made in and the next one.
pub const COOKIE_BUCKET: Duration = Duration::from_secs(10);
/// Finished tests whose results are kept for their sender at once; the oldest goes first.
pub const MAX_FINISHED_KEPT: usize = 64;
/// Sequence slack of the plausibility check (added to twice the declared rate × elapsed time).
pub const PLAUSIBLE_SLACK_SEQS: u64 = 4096;
/// How long a finished test's results stay available for (re)requests.
pub const RESULTS_LINGER: Duration = Duration::from_secs(30);
/// Longest wait between two looks at due losses while a test runs: an interval row is
/// published once its losses are final, and this bounds how late after that it appears.
pub const LOSS_TICK_MAX: Duration = Duration::from_millis(100);
/// Default most bit/s (UDP payload) a receiver sends in one reverse test
/// (`recv --max-reverse-rate`).
pub const DEFAULT_MAX_REVERSE_BPS: u64 = 100_000_000;
/// Longest reverse test a receiver accepts: what one validated request can make it send is
/// bounded by this times its rate limit.
pub const MAX_REVERSE_DURATION: Duration = Duration::from_secs(300);

/// Test parameters the sender announces in its Hello.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestParams {
    pub payload_size: u32,
    pub echo: bool,
    pub interval: Duration,
    pub tmax: Duration,
    /// Datagrams to send (0: limited by duration instead).
    pub count: u64,
    /// Test length (zero: limited by count instead).
    pub duration: Duration,
    /// Target payload bits per second (0: unpaced).
    pub rate_bps: u64,
    /// Target datagrams per second × 1000 (0: unpaced).
    pub pps_milli: u64,
    /// The sender wants the lost sequence ranges in the results (`send --loss-log`).
    pub loss_ranges: bool,
    /// The send pattern, for the receiver's report.
    pub pattern: HelloPattern,
    /// The TOS byte and TTL the sender marks its Data with (`--dscp`/`--tos`, `--ttl`).
    pub marking: wire::HelloMarking,
    /// Warm-up excluded from the statistics on both sides (`--omit`): the datagrams scheduled
    /// in it, see [`TestParams::warmup_sequences`].
    pub omit: Duration,
    /// `--reliable`: the test runs the ACK/retransmit layer with these parameters.
    pub reliable: Option<HelloReliable>,
}

impl TestParams {
    fn hello(&self, session_id: u32) -> Hello {
        Hello {
            session_id,
            payload_size: self.payload_size,
            echo: self.echo,
            loss_ranges: self.loss_ranges,
            reverse: false,
            bidir: false,
            pattern: self.pattern,
            interval_ns: self.interval.as_nanos() as u64,
            tmax_ns: self.tmax.as_nanos() as u64,
            count: self.count,
            duration_ns: self.duration.as_nanos() as u64,
            rate_bps: self.rate_bps,
            pps_milli: self.pps_milli,
            cookie: 0,
            multicast: false,
            marking: self.marking,
            omit_ns: u64::try_from(self.omit.as_nanos()).unwrap_or(u64::MAX),
            reliable: self.reliable,
        }
    }

    fn from_hello(h: &Hello) -> Self {
        TestParams {
            payload_size: h.payload_size,
            echo: h.echo,
            interval: Duration::from_nanos(h.interval_ns),
            tmax: Duration::from_nanos(h.tmax_ns),
            count: h.count,
            duration: Duration::from_nanos(h.duration_ns),
            rate_bps: h.rate_bps,
            pps_milli: h.pps_milli,
            loss_ranges: h.loss_ranges,
            pattern: h.pattern,
            marking: h.marking,
            omit: Duration::from_nanos(h.omit_ns),
            reliable: h.reliable,
        }
    }

    /// The sequences `0..B` of the warm-up (`--omit`): those the sender's schedule puts before
    /// `omit` after its start, which both sides compute alike from the Hello (datagram k of a
    /// cbr schedule leaves at k / pps, burst j of N at j·N / pps). Their arrivals, losses,
    /// delays and echoes count in no statistic. 0 without omit, and for a schedule that is
    /// not fixed in advance (poisson, unpaced), which the sender refuses with `--omit`. At
    /// most `count` when the count is fixed.
    pub fn warmup_sequences(&self) -> u64 {
        let omit_ns = self.omit.as_nanos();
        if omit_ns == 0 || self.pps_milli == 0 {
            return 0;
        }
        // k leaves in the warm-up when k / pps < omit, i.e. k < omit·pps: B = ceil(omit·pps),
        // in integers (omit in ns, pps in thousandths).
        let scaled = omit_ns.saturating_mul(u128::from(self.pps_milli));
        let per = 1_000_000_000_000u128;
        let k = scaled.div_ceil(per);
        let k = match self.pattern {
            HelloPattern::Cbr => k,
            // Burst j (N datagrams) leaves at j·N/pps: whole bursts in the warm-up.
            HelloPattern::Burst(n) if n > 0 => k.div_ceil(u128::from(n)) * u128::from(n),
            _ => return 0,
        };
        let k = u64::try_from(k).unwrap_or(u64::MAX);
        if self.count > 0 { k.min(self.count) } else { k }
    }

    /// Why a receiver refuses these parameters, if it does: the reason and the limit it names.
    pub fn validate(&self) -> Result<(), (RejectReason, u64)> {
        let min_payload = if self.reliable.is_some() {
            wire::RDATA_HEADER_LEN
        } else {
            wire::DATA_HEADER_LEN
        };
        if (self.payload_size as usize) < min_payload
            || self.payload_size as usize > wire::MAX_PAYLOAD
        {
            return Err((RejectReason::PayloadSize, wire::MAX_PAYLOAD as u64));
        }
        if self.interval < Duration::from_millis(10) {
            return Err((RejectReason::Interval, 10_000_000));
        }
        if self.tmax > MAX_TMAX {
            return Err((RejectReason::Tmax, MAX_TMAX.as_nanos() as u64));
        }
        if self.window_bits() > MAX_WINDOW_BITS {
            return Err((RejectReason::Window, MAX_WINDOW_BITS as u64));
        }
        Ok(())
    }

    /// Datagrams per second the receiver plans for: the declared rate, or 2 M/s for an
    /// unpaced sender (beyond what one socket delivers).
    fn planned_pps(&self) -> f64 {
        // A reliable test's packet numbers also count its retransmissions, which may exceed
        // the rate by the announced budget.
        let rexmit = self.reliable.map_or(1.0, |r| {
            1.0 + f64::from(r.rexmit_budget_pct.min(1000)) / 100.0
        });
        if self.pps_milli > 0 {
            self.pps_milli as f64 / 1000.0 * rexmit
        } else {
            2_000_000.0
        }
    }

    /// The duplicate window this test needs: everything that can arrive within Tmax (at least
    /// 1 s), with a quarter of headroom.
    pub fn window_bits(&self) -> usize {
        let tmax_ns = self.tmax.as_nanos() as u64;
        StatsConfig::window_bits_for(self.planned_pps() * 1.25, tmax_ns.max(1_000_000_000))
    }

    /// One past the highest sequence the sender can plausibly have sent `elapsed` after its
    /// test was accepted: its declared count if it gave one, and never more than twice its
    /// declared rate (2 M/s unpaced) over `elapsed` + 1 s, plus [`PLAUSIBLE_SLACK_SEQS`].
    /// A burst pattern adds twice its burst size; a burst too large for the Hello's field
    /// leaves only the count as the bound.
    pub fn plausible_end(&self, elapsed: Duration) -> u64 {
        // A reliable test sends its count of messages under more packet numbers than that.
        let count_bound = if self.count > 0 && self.reliable.is_none() {
            self.count
        } else {
            crate::stats::SEQ_LIMIT
        };
        let burst = match self.pattern {
            HelloPattern::Burst(0) => return count_bound,
            HelloPattern::Burst(n) => f64::from(n),
            _ => 0.0,
        };
        let secs = elapsed.as_secs_f64() + 1.0;
        let by_rate = 2.0 * (self.planned_pps() * secs + burst) + PLAUSIBLE_SLACK_SEQS as f64;
        let by_rate = if by_rate < crate::stats::SEQ_LIMIT as f64 {
            by_rate as u64
        } else {
            crate::stats::SEQ_LIMIT
        };
        by_rate.min(count_bound)
    }
}

/// What a rejecting HelloAck means, in the sender's words.
pub fn reject_text(reason: RejectReason, limit: u64) -> String {
    match reason {
        RejectReason::PayloadSize => format!(
            "the receiver refuses the datagram size (it takes {}..={limit} bytes)",
            wire::DATA_HEADER_LEN
        ),
        RejectReason::Interval => format!(
            "the receiver refuses a report interval below {} ms",
            limit / 1_000_000
        ),
        RejectReason::Tmax => format!(
            "the receiver refuses Tmax above {} s",
            Duration::from_nanos(limit).as_secs_f64()
        ),
        RejectReason::Window => format!(
            "the receiver refuses rate × Tmax above {limit} datagrams (its duplicate window): lower --rate/--pps or --tmax"
        ),
        RejectReason::Memory => format!(
            "the receiver's memory budget (recv --max-memory) has {} KiB left, less than this test needs; retry when its tests have ended, or lower --rate/--pps or --tmax",
            limit / 1024
        ),
        RejectReason::ReverseRate => format!(
            "the receiver sends reverse tests at up to {} bit/s (recv --max-reverse-rate), and only paced ones: lower --rate/--pps/--size, or give --rate",
            limit
        ),
        RejectReason::ReverseLength => format!(
            "the receiver sends reverse tests of at most {} s, limited by --duration or by --count at a paced rate",
            Duration::from_nanos(limit).as_secs_f64()
        ),
        RejectReason::SessionInUse => "the receiver already runs a test with this session id from another address (a collision of random ids): run again".into(),
        RejectReason::Unspecified => "the receiver rejected the test parameters".into(),
    }
}

fn emit(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    msg.emit(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Sender side
// ---------------------------------------------------------------------------------------------

/// Why the sender's control exchange failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no answer from a udplab receiver within {0:.1} s: is `udplab recv` running there (of a udplab speaking wire version 2), and is UDP allowed through?"
    )]
    NoReceiver(f64),
    #[error("the receiver is busy with other tests; retry in {0} s")]
    Busy(u16),
    #[error("{0}")]
    Rejected(String),
    #[error("the receiver speaks udplab wire version {0}; this udplab speaks version {v}", v = wire::VERSION)]
    WrongVersion(u8),
    #[error("the receiver did not acknowledge the end of the test within {0:.1} s")]
    NoFinAck(f64),
    #[error("the receiver's results did not arrive within {0:.1} s")]
    NoResults(f64),
    #[error("the receiver's results could not be decoded: {0}")]
    BadResults(String),
    #[error("the receiver ended the test early")]
    PeerAborted,
}

/// What the sender's control exchange tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum SenderEvent {
    /// The receiver accepted the test: start sending data.
    Accepted { rcvbuf_effective: u64 },
    /// The receiver's full report.
    Results(Box<ReceiverReport>),
    /// A reverse test's results: the receiver's report of what it sent (its totals end the
    /// sender's measurement as a Fin's do the receiver's); `interrupted` when the receiver was
    /// stopped (Ctrl-C) before the test's end.
    SenderResults {
        report: Box<SenderReport>,
        interrupted: bool,
    },
    /// The exchange failed; for failures after data was sent the sender still reports its side.
    Failed(ControlError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderPhase {
    Handshake,
    Running,
    Finishing,
    AwaitingResults,
    Done,
}

/// The sender's half of the control exchange.
#[derive(Debug)]
pub struct SenderControl {
    session_id: u32,
    params: TestParams,
    phase: SenderPhase,
    phase_started: Instant,
    next_send: Option<Instant>,
    fin: Option<Fin>,
    /// Time from which ResultReq starts (FinAck + Tmax).
    results_from: Option<Instant>,
    results_deadline: Option<Instant>,
    chunks: Vec<Option<Vec<u8>>>,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<SenderEvent>,
    /// Datagrams taken from `outbox`.
    control_sent: u64,
    /// The receiver's retry cookie, carried by the Hello once known.
    cookie: u64,
    /// The test's secret from the accepting HelloAck (0 until then): later control carries
    /// it, and replies without it are ignored.
    secret: u64,
    /// Receiver datagrams ignored for a wrong secret.
    ignored: u64,
    /// A reverse test (`send -R`): the receiver sends, this side measures.
    reverse: bool,
    /// A bidirectional test (`send --bidir`): both sides send, both measure.
    bidir: bool,
    /// `--bidir` interrupted: every Fin and ResultReq is followed by an Abort that stops the
    /// receiver's data (its forward half drains as usual).
    stop_reverse_asked: bool,
    /// `--bidir`: when the receiver's data should have ended (from the accepting answer, as
    /// planned): its results may take until then, whenever the forward half ended.
    reverse_planned_end: Option<Instant>,
}

impl SenderControl {
    /// Starts the handshake at `now`: the first Hello is ready in `poll_transmit`.
    pub fn new(session_id: u32, params: TestParams, now: Instant) -> Self {
        Self::with_direction(session_id, params, false, now)
    }

    /// Like [`SenderControl::new`]; with `reverse` the Hello asks the receiver to send the
    /// data (flag bit 3) and, once accepted, the driver calls [`Self::await_reverse_results`].
    pub fn with_direction(
        session_id: u32,
        params: TestParams,
        reverse: bool,
        now: Instant,
    ) -> Self {
        Self::build(session_id, params, reverse, false, now)
    }

    /// A bidirectional test (Hello flag bit 4): the driver sends its Data and finishes as in a
    /// forward test while it measures the receiver's; the results bring both
    /// [`SenderEvent::Results`] and [`SenderEvent::SenderResults`].
    pub fn bidir(session_id: u32, params: TestParams, now: Instant) -> Self {
        Self::build(session_id, params, false, true, now)
    }

    fn build(
        session_id: u32,
        params: TestParams,
        reverse: bool,
        bidir: bool,
        now: Instant,
    ) -> Self {
        let mut s = SenderControl {
            session_id,
            params,
            phase: SenderPhase::Handshake,
            phase_started: now,
            next_send: Some(now),
            fin: None,
            results_from: None,
            results_deadline: None,
            chunks: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            control_sent: 0,
            cookie: 0,
            secret: 0,
            ignored: 0,
            reverse,
            bidir,
            stop_reverse_asked: false,
            reverse_planned_end: None,
        };
        s.handle_timeout(now);
        s
    }

    /// The test's secret (0 before the receiver accepted).
    pub fn secret(&self) -> u64 {
        self.secret
    }

    /// Datagrams naming this test that were ignored for a wrong secret.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    fn hello(&self) -> Vec<u8> {
        let mut hello = self.params.hello(self.session_id);
        hello.cookie = self.cookie;
        hello.reverse = self.reverse;
        hello.bidir = self.bidir;
        emit(&Message::Hello(hello))
    }

    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    pub fn params(&self) -> &TestParams {
        &self.params
    }

    /// True once the results are being asked for (or arriving): by then everything the
    /// receiver sent during the test, echo replies included, has had Tmax to arrive.
    pub fn requesting_results(&self, now: Instant) -> bool {
        self.phase == SenderPhase::AwaitingResults && self.results_from.is_none_or(|t| now >= t)
    }

    /// True once results arrived or the exchange failed.
    pub fn is_done(&self) -> bool {
        self.phase == SenderPhase::Done
    }

    /// Feeds a datagram from the receiver (Echo datagrams are the driver's: ignored here).
    pub fn handle_datagram(&mut self, now: Instant, buf: &[u8]) {
        let msg = match wire::parse(buf) {
            Ok(msg) => msg,
            Err(_) => {
                // A receiver of another version answers our Hello with its own prefix.
                if let Some((version, kind, id)) = wire::foreign_version(buf)
                    && kind == Kind::HelloAck as u8
                    && id == self.session_id
                    && self.phase == SenderPhase::Handshake
                {
                    self.fail(ControlError::WrongVersion(version));
                }
                return;
            }
        };
        if msg.session_id() != self.session_id {
            return;
        }
        // Everything after the handshake must carry the test's secret.
        let secret = match msg {
            Message::FinAck(m) => Some(m.secret),
            Message::ResultChunk(m) => Some(m.secret),
            Message::Abort { secret, .. } => Some(secret),
            _ => None,
        };
        if secret.is_some_and(|s| self.secret == 0 || s != self.secret) {
            self.ignored += 1;
            return;
        }
        match msg {
            Message::HelloAck(ack) => {
                if self.phase != SenderPhase::Handshake {
                    return; // a retried Hello's second ack
                }
                match ack.status {
                    HelloStatus::Accepted if ack.secret != 0 => {
                        self.secret = ack.secret;
                        if self.bidir {
                            self.reverse_planned_end = Some(
                                now + planned_sending(&self.params).unwrap_or(MAX_REVERSE_DURATION),
                            );
                        }
                        self.phase = SenderPhase::Running;
                        self.phase_started = now;
                        self.next_send = None;
                        self.events.push_back(SenderEvent::Accepted {
                            rcvbuf_effective: ack.rcvbuf_effective,
                        });
                    }
                    HelloStatus::Accepted => self.ignored += 1,
                    HelloStatus::Retry => {
                        // Repeat the Hello at once, with the cookie; later retries carry it too.
                        if ack.cookie != 0 && ack.cookie != self.cookie {
                            self.cookie = ack.cookie;
                            self.outbox.push_back(self.hello());
                        }
                    }
                    HelloStatus::Busy => self.fail(ControlError::Busy(ack.retry_after_s)),
                    HelloStatus::Rejected => {
                        self.fail(ControlError::Rejected(reject_text(ack.reason, ack.limit)))
                    }
                }
            }
            Message::FinAck(FinAck { tmax_ns, .. }) if self.phase == SenderPhase::Finishing => {
                let tmax = Duration::from_nanos(tmax_ns);
                self.phase = SenderPhase::AwaitingResults;
                self.phase_started = now;
                self.results_from = Some(now + tmax);
                // `--bidir`: the receiver's results also wait for its data's end.
                let results_by = self
                    .reverse_planned_end
                    .map_or(now, |end| end.max(now) + self.params.tmax);
                self.results_deadline = Some(results_by.max(now + tmax) + RESULTS_GRACE);
                self.next_send = Some(now + tmax);
            }
            Message::ResultChunk(chunk) => {
                self.handle_chunk(now, &chunk);
            }
            Message::Abort { .. } if self.phase != SenderPhase::Done => {
                self.fail(ControlError::PeerAborted);
            }
            _ => {}
        }
    }

    fn handle_chunk(&mut self, now: Instant, chunk: &ResultChunk<'_>) {
        // An interrupted receiver pushes a bidirectional test's results while data still flows.
        let pushed_bidir = self.bidir && self.phase == SenderPhase::Running;
        if !(pushed_bidir
            || matches!(
                self.phase,
                SenderPhase::Finishing | SenderPhase::AwaitingResults
            ))
            || !chunk.ready
            || chunk.count == 0
            || chunk.index >= chunk.count
        {
            return;
        }
        if matches!(self.phase, SenderPhase::Finishing | SenderPhase::Running) {
            // FinAck lost but results already flowing: the receiver is done waiting.
            self.phase = SenderPhase::AwaitingResults;
            self.results_deadline = Some(now + RESULTS_GRACE);
        }
        if self.chunks.len() != chunk.count as usize {
            self.chunks = vec![None; chunk.count as usize];
        }
        self.chunks[chunk.index as usize] = Some(chunk.data.to_vec());
        if self.chunks.iter().all(Option::is_some) {
            let json: Vec<u8> = self.chunks.iter().flatten().flatten().copied().collect();
            match serde_json::from_slice::<ResultsEnvelope>(&json) {
                Ok(env) if env.version == REPORT_VERSION => {
                    self.phase = SenderPhase::Done;
                    self.next_send = None;
                    if self.bidir {
                        // Both halves: the receiver's measurement, then what it sent.
                        self.events
                            .push_back(SenderEvent::Results(Box::new(env.report.clone())));
                    }
                    self.events.push_back(match env.sender {
                        Some(sender) if self.reverse || self.bidir => SenderEvent::SenderResults {
                            report: Box::new(sender),
                            interrupted: env.interrupted,
                        },
                        _ if self.bidir => SenderEvent::Failed(ControlError::BadResults(
                            "a bidirectional test's results without the receiver's totals".into(),
                        )),
                        _ => SenderEvent::Results(Box::new(env.report)),
                    });
                }
                Ok(env) => self.fail(ControlError::BadResults(format!(
                    "results version {} (this udplab reads {REPORT_VERSION})",
                    env.version
                ))),
                Err(e) => self.fail(ControlError::BadResults(e.to_string())),
            }
        }
    }

    fn fail(&mut self, e: ControlError) {
        self.phase = SenderPhase::Done;
        self.next_send = None;
        self.events.push_back(SenderEvent::Failed(e));
    }

    /// Data is over: announce the totals (retried until acknowledged).
    pub fn finish(&mut self, now: Instant, total_sent: u64, total_bytes: u64, send_errors: u64) {
        if matches!(self.phase, SenderPhase::Done) {
            return;
        }
        self.fin = Some(Fin {
            session_id: self.session_id,
            total_sent,
            total_bytes,
            send_errors,
            secret: self.secret,
        });
        self.phase = SenderPhase::Finishing;
        self.phase_started = now;
        self.next_send = Some(now);
        self.handle_timeout(now);
    }

    /// A reverse test was accepted at `now` and the receiver sends for about `planned`: ask
    /// for its results until they come (each request also tells it we are still here, so it
    /// keeps sending), giving up `planned` + Tmax + [`RESULTS_GRACE`] from now.
    pub fn await_reverse_results(&mut self, now: Instant, planned: Duration) {
        if self.phase != SenderPhase::Running {
            return;
        }
        self.phase = SenderPhase::AwaitingResults;
        self.phase_started = now;
        self.results_from = None;
        self.results_deadline = Some(now + planned + self.params.tmax + RESULTS_GRACE);
        self.next_send = Some(now);
    }

    /// Interrupted during a reverse test: ask the receiver to stop sending (Abort) and keep
    /// asking for its results (its totals) for at most [`RESULTS_GRACE`].
    pub fn stop_reverse(&mut self, now: Instant) {
        if self.phase != SenderPhase::AwaitingResults {
            return;
        }
        self.outbox.push_back(emit(&Message::Abort {
            session_id: self.session_id,
            reason: AbortReason::Interrupted,
            secret: self.secret,
        }));
        let by = now + RESULTS_GRACE;
        self.results_deadline = Some(self.results_deadline.map_or(by, |d| d.min(by)));
    }

    /// `--bidir` interrupted: the forward half ends with its Fin as usual; the receiver's data
    /// is asked to stop with an Abort sent along every later Fin and ResultReq.
    pub fn stop_bidir_reverse(&mut self) {
        if self.bidir && !self.stop_reverse_asked && self.phase != SenderPhase::Done {
            self.stop_reverse_asked = true;
            self.push_stop_reverse();
        }
    }

    fn push_stop_reverse(&mut self) {
        if self.stop_reverse_asked && self.secret != 0 {
            self.outbox.push_back(emit(&Message::Abort {
                session_id: self.session_id,
                reason: AbortReason::Interrupted,
                secret: self.secret,
            }));
        }
    }

    /// The user interrupted the run: tell the receiver (best effort) and stop.
    pub fn abort(&mut self) {
        if self.secret != 0 {
            self.outbox.push_back(emit(&Message::Abort {
                session_id: self.session_id,
                reason: AbortReason::Interrupted,
                secret: self.secret,
            }));
        }
        self.phase = SenderPhase::Done;
        self.next_send = None;
    }

    /// Earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_send
    }

    /// Sends what is due (retries) and fails the exchange when a phase ran out of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_send else { return };
        if now < due {
            return;
        }
        let waited = now.saturating_duration_since(self.phase_started);
        match self.phase {
            SenderPhase::Handshake => {
                if waited >= HANDSHAKE_TIMEOUT {
                    return self.fail(ControlError::NoReceiver(waited.as_secs_f64()));
                }
                self.outbox.push_back(self.hello());
            }
            SenderPhase::Finishing => {
                if waited >= FIN_TIMEOUT {
                    return self.fail(ControlError::NoFinAck(waited.as_secs_f64()));
                }
                if let Some(fin) = self.fin {
                    self.outbox.push_back(emit(&Message::Fin(fin)));
                    self.push_stop_reverse();
                }
            }
            SenderPhase::AwaitingResults => {
                if self.results_deadline.is_some_and(|d| now >= d) {
                    return self.fail(ControlError::NoResults(waited.as_secs_f64()));
                }
                if self.results_from.is_none_or(|t| now >= t) {
                    self.outbox.push_back(emit(&Message::ResultReq {
                        session_id: self.session_id,
                        secret: self.secret,
                    }));
                    self.push_stop_reverse();
                }
            }
            SenderPhase::Running | SenderPhase::Done => {
                self.next_send = None;
                return;
            }
        }
        self.next_send = Some(now + CONTROL_RETRY);
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let msg = self.outbox.pop_front()?;
        self.control_sent += 1;
        Some(msg)
    }

    /// Control datagrams handed out by `poll_transmit` so far, retries included.
    pub fn control_sent(&self) -> u64 {
        self.control_sent
    }

    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver side
// ---------------------------------------------------------------------------------------------

/// Settings of a receiver that are not negotiated per test.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How many tests may run at once (parallel flows are separate tests).
    pub max_sessions: usize,
    pub rcvbuf: BufferInfo,
    pub sndbuf: BufferInfo,
    /// "kernel" or "user".
    pub timestamp_source: String,
    /// Whether lost sequence ranges are kept for an event log.
    pub record_loss_ranges: bool,
    /// Memory budget of all tests together, bytes (`recv --max-memory`): a new test whose
    /// statistics do not fit in what is left is refused.
    pub max_memory: u64,
    /// Seed of the receiver's cryptographic RNG (cookie key and test secrets). The driver
    /// draws it from the OS; tests fix it.
    pub rng_seed: [u8; 32],
    /// `recv --join`: this receiver is a group member. It takes tests from multicast
    /// announcements only and never sends anything (see [`MulticastReceive`]).
    pub multicast: Option<MulticastReceive>,
    /// Most payload bit/s one reverse test may ask this receiver to send
    /// (`recv --max-reverse-rate`); 0 refuses reverse tests.
    pub max_reverse_bps: u64,
}

/// How a group member (`recv --join`) takes tests.
///
/// A multicast sender cannot run a handshake with every subscriber, so a test starts from the
/// sender's announcement (a Hello with the multicast flag) without a cookie, and ends with its
/// Fin (secret 0) or after Tmax plus [`MULTICAST_ANNOUNCE_EVERY`] of silence. This is safe
/// because a group member answers nothing: no HelloAck, FinAck, Echo, result or version reply,
/// so a forged source address gains an attacker nothing. Ownership still holds: a test's Data
/// and Fin count only from the address that announced it, and with `--key` every datagram is
/// authenticated before it gets here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MulticastReceive {
    /// `--source`: only this sender's announcements start a test (source-specific multicast;
    /// the kernel filters too, this is the second look).
    pub source: Option<IpAddr>,
}

/// How often a multicast sender repeats its announcement while it sends.
pub const MULTICAST_ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// The multicast announcement of a test: a Hello with the multicast flag, never answered.
pub fn multicast_announcement(session_id: u32, params: &TestParams) -> Vec<u8> {
    let mut hello = params.hello(session_id);
    hello.multicast = true;
    // Nothing comes back to a group sender: no echo, no results carrying lost ranges.
    hello.echo = false;
    hello.loss_ranges = false;
    emit(&Message::Hello(hello))
}

/// A multicast sender's Fin: its totals, with secret 0 (there is no handshake to agree one).
pub fn multicast_fin(
    session_id: u32,
    total_sent: u64,
    total_bytes: u64,
    send_errors: u64,
) -> Vec<u8> {
    emit(&Message::Fin(Fin {
        session_id,
        total_sent,
        total_bytes,
        send_errors,
        secret: 0,
    }))
}

impl Default for ServerConfig {
    /// One test at a time, the default budget, and a fixed RNG seed: for simulations only (the
    /// driver draws the seed from the OS).
    fn default() -> Self {
        ServerConfig {
            max_sessions: 1,
            rcvbuf: BufferInfo::default(),
            sndbuf: BufferInfo::default(),
            timestamp_source: "user".into(),
            record_loss_ranges: false,
            max_memory: DEFAULT_MAX_MEMORY,
            rng_seed: [7; 32],
            multicast: None,
            max_reverse_bps: DEFAULT_MAX_REVERSE_BPS,
        }
    }
}

/// Cumulative counts of datagrams the receiver's driver dropped before the session; None where
/// that check is not in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateTotals {
    /// `--key`: tags that did not verify.
    pub unauthenticated: Option<u64>,
    /// `recv --allow`: sources outside the allowed prefixes.
    pub refused_by_allow: Option<u64>,
}

/// What the receiver tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    Started {
        session_id: u32,
        peer: SocketAddr,
        params: TestParams,
    },
    /// A closed interval row, announced once its losses are final (about Tmax after it ended)
    /// and never changed afterwards; rows come in order.
    Interval {
        session_id: u32,
        row: Box<IntervalRow>,
    },
    /// Lost sequence ranges declared since the last such event (only with `record_loss_ranges`).
    Lost {
        session_id: u32,
        ranges: Vec<std::ops::RangeInclusive<u64>>,
    },
    /// A reverse test was accepted: the driver sends its Data (paced as `params` say, at
    /// most [`MAX_REVERSE_DURATION`]) to `peer`, its validated address, and nowhere else, then
    /// hands its totals to [`ReceiverServer::reverse_done`].
    StartSending {
        session_id: u32,
        peer: SocketAddr,
        params: TestParams,
    },
    /// Stop sending a reverse test's Data at once (its peer aborted or went silent for
    /// [`PEER_SILENCE_TIMEOUT`]); its totals still go to `reverse_done`.
    StopSending { session_id: u32 },
    /// The one-way latency histogram of an interval, as it closes (only after
    /// `ReceiverServer::export_latency_histograms`; negative delays count as 0). Every datagram
    /// counted in the test's latency is in exactly one of them.
    IntervalLatency {
        session_id: u32,
        /// The interval, seconds since the test start.
        start_s: f64,
        end_s: f64,
        histogram: Box<hdrhistogram::Histogram<u64>>,
    },
    /// A test ended (normally, by the peer's Abort, by silence, or by `interrupt_all`).
    Finished {
        session_id: u32,
        peer: SocketAddr,
        report: Box<ReceiverReport>,
    },
}

#[derive(Debug)]
enum RxState {
    Running,
    /// A reverse test: the driver sends; `stop_asked` once StopSending went out.
    Sending {
        stop_asked: bool,
    },
    /// Fin received; waiting Tmax for late datagrams.
    Draining {
        until: Instant,
        total_sent: u64,
    },
    Finished {
        chunks: Vec<Vec<u8>>,
        linger_until: Instant,
    },
}

struct RxSession {
    /// The validated address: the only one whose Data and control count, and the only one
    /// anything of this test is sent to.
    peer: SocketAddr,
    /// Carried by every control message of this test, both ways.
    secret: u64,
    params: TestParams,
    /// None once the test finished: its window and histograms go, its results stay.
    stats: Option<ReceiverStats>,
    /// Bytes this test holds against the budget (its statistics; its results once finished).
    memory: u64,
    /// Sequences at or above this are implausible unless a fresh look at the clock allows
    /// them (the bound only grows with time: it is recomputed only when a datagram reaches it).
    plausible_end: u64,
    /// Added to the plausibility bound: the first sequence a group member saw, when it joined
    /// a multicast test late (0 otherwise).
    seq_base: u64,
    /// Whether any Data was counted (a `--once` receiver waits for a test that sent data).
    data_seen: bool,
    /// The receiver's foreign count when the test started: its report gives the difference.
    foreign_at_start: u64,
    /// Another test was running on the socket during this one: the drop count is shared.
    shared_socket: bool,
    /// Started from a multicast announcement: nothing of it is ever sent anywhere.
    multicast: bool,
    /// Sequences `0..warmup` are the `--omit` warm-up: not counted; the statistics see the
    /// rest shifted down by `warmup`, as a test that started after it.
    warmup: u64,
    /// Warm-up datagrams that arrived (duplicates included), not counted.
    omitted: u64,
    state: RxState,
    started: Instant,
    last_activity: Instant,
    next_interval: Instant,
    /// Next look at due losses (at most LOSS_TICK_MAX apart).
    next_tick: Instant,
    interval_index: u64,
    /// Start and end (s since the test start) of the closed rows the stats have not published
    /// yet, oldest first.
    row_spans: VecDeque<(f64, f64)>,
    intervals: Vec<IntervalRow>,
    intervals_not_kept: u64,
    send_errors: u64,
    rxq_at_start: Option<u64>,
    gate_at_start: GateTotals,
    /// Echo replies handed to the socket (the driver takes back the ones whose send failed).
    echo_sent: u64,
    /// Lost ranges kept for the results, when the sender asked for them.
    loss_ranges: Vec<[u64; 2]>,
    loss_ranges_not_kept: u64,
    /// TOS bytes and TTLs the Data arrived with; None once the test finished (its summary is
    /// in the results).
    marks: Option<MarkingCounter>,
    /// `--reliable`: the ARQ receiver this test's RData feeds (None for a plain test).
    arq: Option<ArqReceiver>,
    /// One past the highest message id seen, and the wall clock of the last RData: at the
    /// Fin the ARQ receiver delivers (or counts missing) what still waits behind a gap.
    arq_msg_end: u64,
    arq_last_wall_ns: u64,
    /// The ARQ receiver's counters at the last closed interval, and each closed row's
    /// reliable figures until the row is published (in step with `row_spans`).
    arq_at_row: crate::arq::ArqReceiverStats,
    arq_rows: VecDeque<Option<ReliableInterval>>,
    /// A bidirectional test's reverse half (None otherwise).
    bidir: Option<BidirHalf>,
}

/// The reverse half of a bidirectional test (`send --bidir`): the driver sends Data to the
/// peer while the session measures the peer's. The results wait for both halves.
#[derive(Debug, Default)]
struct BidirHalf {
    /// StopSending went out while the forward half still ran.
    stop_asked: bool,
    /// The forward half's report, once measured, while the driver still sends.
    forward: Option<Box<ReceiverReport>>,
    /// What the driver sent, once its thread stopped while the forward half still ran; with
    /// whether this receiver is being interrupted (the results then go out at once).
    sent: Option<(SenderReport, bool)>,
}

impl RxSession {
    /// How long a running test may stay silent before the receiver ends it. A multicast sender
    /// repeats its announcement every [`MULTICAST_ANNOUNCE_EVERY`], so a group member ends its
    /// test Tmax after that rhythm stops (the Fin may be lost: nothing is retried to it).
    fn silence_timeout(&self) -> Duration {
        if self.multicast {
            self.params.tmax + MULTICAST_ANNOUNCE_EVERY
        } else {
            PEER_SILENCE_TIMEOUT
        }
    }
}

impl RxSession {
    /// Feeds the ARQ receiver's timers, hands its deliveries to the (absent) application and
    /// queues its ACKs, to the validated peer only.
    fn pump_arq(&mut self, now: Instant, outbox: &mut VecDeque<(SocketAddr, Vec<u8>)>) {
        let Some(arq) = self.arq.as_mut() else {
            return;
        };
        let now_ns = session_ns(now, self.started);
        if arq.poll_timeout().is_some_and(|t| t <= now_ns) {
            arq.handle_timeout(now_ns);
        }
        // The measurement is the delivery itself (the layer counts it); no application
        // consumes the messages.
        while arq.poll_delivery().is_some() {}
        while let Some(ack) = arq.poll_ack(now_ns) {
            let mut bytes = Vec::with_capacity(ack.encoded_len());
            ack.encode(&mut bytes);
            outbox.push_back((self.peer, bytes));
        }
    }

    /// When the ARQ receiver's next timer is due.
    fn arq_timeout(&self) -> Option<Instant> {
        let t = self.arq.as_ref()?.poll_timeout()?;
        Some(self.started + Duration::from_nanos(t))
    }

    /// Whether this session's statistics keep lost ranges (for the driver's log or the sender).
    fn records_loss_ranges(&self, driver_log: bool) -> bool {
        driver_log || self.params.loss_ranges
    }

    /// Moves the ranges declared since the last call out of the statistics: into the results
    /// (bounded) when the sender asked, and returned for the driver's log.
    fn drain_loss_ranges(&mut self) -> Vec<std::ops::RangeInclusive<u64>> {
        let Some(stats) = self.stats.as_mut() else {
            return Vec::new();
        };
        // Back to the sender's sequence numbers (the statistics start after the warm-up).
        let warmup = self.warmup;
        let ranges: Vec<_> = stats
            .drain_loss_ranges()
            .into_iter()
            .map(|r| r.start() + warmup..=r.end() + warmup)
            .collect();
        if self.params.loss_ranges {
            for r in &ranges {
                if self.loss_ranges.len() < MAX_CARRIED_LOSS_RANGES {
                    self.loss_ranges.push([*r.start(), *r.end()]);
                } else {
                    self.loss_ranges_not_kept += 1;
                }
            }
        }
        ranges
    }
}

/// The IP marking one datagram arrived with, as the kernel reported it (None: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub tos: Option<u8>,
    pub ttl: Option<u8>,
}

/// Hashes session ids with one multiplication: the map is looked up for every datagram, SipHash
/// cost a tenth of the receiver's time at millions of datagrams per second, and the map holds
/// at most `max_sessions` entries, so there is no flooding to defend against.
#[derive(Default)]
struct SessionIdHasher(u64);

impl Hasher for SessionIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SessionIdHash = BuildHasherDefault<SessionIdHasher>;

/// The receiver: any number of sessions, keyed by session id.
pub struct ReceiverServer {
    cfg: ServerConfig,
    sessions: HashMap<u32, RxSession, SessionIdHash>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ServerEvent>,
    /// Datagrams that were not udplab's, named no known session, or came from the wrong
    /// address or without the secret: counted, never acted on.
    foreign: u64,
    /// Latest cumulative count of kernel receive-queue drops on the socket.
    rxq_dropped: Option<u64>,
    /// Latest cumulative counts of the driver's refusals before the session (`--key` tag
    /// failures, `--allow` refusals); None where not in force.
    gate: GateTotals,
    last_result_request: Option<Instant>,
    completed: u64,
    /// Ended tests that had been validated and had sent data (what `--once` waits for).
    completed_with_data: u64,
    /// Cryptographic RNG for test secrets (ChaCha12, seeded from the OS by the driver).
    rng: rand::rngs::StdRng,
    /// SipHash key of the address-validation cookies, drawn at start.
    cookie_key: [u64; 2],
    /// Origin of the cookies' time buckets: the first datagram's time.
    epoch: Option<Instant>,
    /// Hellos answered with a retry (stateless: nothing else is kept for them).
    retries_sent: u64,
    /// Hellos refused: bad parameters, over a limit, busy, or a session id in use.
    refused: u64,
    /// Data datagrams with an implausible sequence, all tests together.
    implausible: u64,
    /// Group member: multicast announcements refused for want of room (`--max-sessions`,
    /// `--max-memory`) or for bad parameters; each repeat counts.
    announcements_refused: u64,
    /// Whether closing intervals emit `ServerEvent::IntervalLatency` (`--hdr-log`).
    export_latency: bool,
}

impl ReceiverServer {
    pub fn new(cfg: ServerConfig) -> Self {
        let mut rng = rand::rngs::StdRng::from_seed(cfg.rng_seed);
        let cookie_key = [rng.next_u64(), rng.next_u64()];
        ReceiverServer {
            cfg,
            sessions: HashMap::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            foreign: 0,
            rxq_dropped: None,
            gate: GateTotals::default(),
            last_result_request: None,
            completed: 0,
            completed_with_data: 0,
            rng,
            cookie_key,
            epoch: None,
            retries_sent: 0,
            refused: 0,
            implausible: 0,
            announcements_refused: 0,
            export_latency: false,
        }
    }

    /// Feeds one received datagram. `now` is monotonic (one reading per received batch is
    /// enough): it times Tmax, intervals and timeouts. `recv_ns` is the datagram's receive time
    /// on the wall clock (kernel SO_TIMESTAMPNS, CLOCK_REALTIME, or the driver's wall clock),
    /// used for the one-way delay only. Returns true when an echo reply was written into `echo`
    /// and must be sent back to `src` (the hot path avoids the outbox's allocation); `src` is
    /// then the test's validated address and the echo is never larger than the datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        recv_ns: u64,
        src: SocketAddr,
        buf: &[u8],
        echo: &mut [u8; wire::DATA_HEADER_LEN],
    ) -> bool {
        self.handle_datagram_marked(now, recv_ns, src, buf, echo, Marks::default())
    }

    /// [`handle_datagram`](Self::handle_datagram) with the TOS byte and TTL the datagram
    /// arrived with (from the receive cmsgs), counted for its test's marking report.
    pub fn handle_datagram_marked(
        &mut self,
        now: Instant,
        recv_ns: u64,
        src: SocketAddr,
        buf: &[u8],
        echo: &mut [u8; wire::DATA_HEADER_LEN],
        marks: Marks,
    ) -> bool {
        if let Some(h) = DataHeader::parse_data(buf) {
            let Some(s) = self.sessions.get_mut(&h.session_id) else {
                self.foreign += 1;
                return false;
            };
            if s.peer != src {
                self.foreign += 1;
                return false;
            }
            let Some(stats) = s.stats.as_mut() else {
                // Finished: its results wait for the sender, its statistics are gone.
                self.foreign += 1;
                return false;
            };
            if h.seq >= s.plausible_end {
                // Cold path: the bound grows with time, look again before refusing.
                if s.multicast && !s.data_seen {
                    // A late joiner: the sender's sequences started before this member heard
                    // the announcement. Its bound counts from the first sequence it sees.
                    s.seq_base = h.seq;
                }
                s.plausible_end = s.seq_base.saturating_add(
                    s.params
                        .plausible_end(now.saturating_duration_since(s.started)),
                );
                if h.seq >= s.plausible_end {
                    stats.on_implausible();
                    s.last_activity = now;
                    self.implausible += 1;
                    return false;
                }
            }
            let now_ns = session_ns(now, s.started);
            if h.seq < s.warmup {
                s.omitted += 1;
            } else {
                stats.on_datagram(h.seq - s.warmup, h.send_ns, recv_ns, now_ns, buf.len());
                if let Some(m) = s.marks.as_mut() {
                    m.record(marks.tos, marks.ttl);
                }
            }
            s.last_activity = now;
            s.data_seen = true;
            if s.params.echo {
                h.write(Kind::Echo, echo);
                s.echo_sent += 1;
                return true;
            }
            return false;
        }
        match wire::parse(buf) {
            Ok(Message::RData { frame, len }) => self.handle_rdata(now, recv_ns, src, &frame, len),
            Ok(msg) => self.handle_control(now, src, buf.len(), msg),
            Err(_) => {
                self.foreign += 1;
                // A sender of another version learns ours, in no more bytes than it sent (a
                // group member answers nothing).
                if self.cfg.multicast.is_none()
                    && let Some(reply) = wire::version_reply(buf)
                {
                    self.outbox.push_back((src, reply.to_vec()));
                }
            }
        }
        false
    }

    /// One RData of a reliable test: the raw datagram goes to the plain statistics under its
    /// packet number (loss, reordering and one-way delay of the path, before recovery), the
    /// frame to the ARQ receiver, whose ACKs go to the validated peer. From anyone else, for
    /// another session, or for a plain test: foreign.
    fn handle_rdata(
        &mut self,
        now: Instant,
        recv_ns: u64,
        src: SocketAddr,
        frame: &wire::RDataFrame,
        len: usize,
    ) {
        let Some(s) = self.sessions.get_mut(&frame.session_id) else {
            self.foreign += 1;
            return;
        };
        if s.peer != src || s.arq.is_none() {
            self.foreign += 1;
            return;
        }
        let Some(stats) = s.stats.as_mut() else {
            self.foreign += 1;
            return;
        };
        let pn = frame.packet_number;
        if pn >= s.plausible_end {
            s.plausible_end = s
                .params
                .plausible_end(now.saturating_duration_since(s.started));
            if pn >= s.plausible_end {
                stats.on_implausible();
                s.last_activity = now;
                self.implausible += 1;
                return;
            }
        }
        let now_ns = session_ns(now, s.started);
        stats.on_datagram(pn, frame.send_ns, recv_ns, now_ns, len);
        if let Some(arq) = s.arq.as_mut() {
            arq.handle_data(now_ns, recv_ns, frame, len);
        }
        s.arq_msg_end = s.arq_msg_end.max(frame.message_id.saturating_add(1));
        s.arq_last_wall_ns = recv_ns;
        s.last_activity = now;
        s.data_seen = true;
        s.pump_arq(now, &mut self.outbox);
    }

    /// Whether a reliable test is running: its ACK timers want the driver's attention at
    /// sub-millisecond precision.
    pub fn has_reliable_session(&self) -> bool {
        self.sessions
            .values()
            .any(|s| s.arq.is_some() && s.stats.is_some())
    }

    /// The session `id` if `src` is its validated address and `secret` its secret; else the
    /// datagram is foreign (counted, nothing else happens).
    fn owned_session(&mut self, id: u32, src: SocketAddr, secret: u64) -> Option<&mut RxSession> {
        match self.sessions.get_mut(&id) {
            Some(s) if s.peer == src && s.secret == secret => Some(s),
            _ => {
                self.foreign += 1;
                None
            }
        }
    }

    fn handle_control(&mut self, now: Instant, src: SocketAddr, len: usize, msg: Message<'_>) {
        if self.cfg.multicast.is_some() {
            self.handle_group_control(now, src, msg);
            return;
        }
        match msg {
            // An announcement is for group members; a unicast sender never sets the flag.
            Message::Hello(h) if h.multicast => self.foreign += 1,
            Message::Hello(h) => self.handle_hello(now, src, len, &h),
            Message::Fin(fin) => {
                let Some(s) = self.owned_session(fin.session_id, src, fin.secret) else {
                    return;
                };
                s.last_activity = now;
                if matches!(s.state, RxState::Running) {
                    // The sender is done: nothing waiting behind a gap will be filled.
                    if let Some(arq) = s.arq.as_mut() {
                        arq.finish(s.arq_last_wall_ns, s.arq_msg_end);
                        while arq.poll_delivery().is_some() {}
                    }
                    s.send_errors = fin.send_errors;
                    s.state = RxState::Draining {
                        until: now + s.params.tmax,
                        total_sent: fin.total_sent,
                    };
                }
                // Acknowledge every Fin: the first FinAck may have been lost.
                let remaining = match s.state {
                    RxState::Draining { until, .. } => until.saturating_duration_since(now),
                    _ => Duration::ZERO,
                };
                let reply = emit(&Message::FinAck(FinAck {
                    session_id: fin.session_id,
                    tmax_ns: remaining.as_nanos() as u64,
                    secret: s.secret,
                }));
                let peer = s.peer;
                self.outbox.push_back((peer, reply));
            }
            Message::ResultReq { session_id, secret } => {
                let Some(s) = self.owned_session(session_id, src, secret) else {
                    return;
                };
                if matches!(s.state, RxState::Sending { .. }) {
                    // A reverse test's keep-alive: its results do not exist yet, and an answer
                    // would only share the measured direction with the Data.
                    s.last_activity = now;
                    return;
                }
                let Some(s) = self.sessions.get(&session_id) else {
                    return;
                };
                let peer = s.peer;
                match &s.state {
                    RxState::Finished { chunks, .. } => {
                        let count = chunks.len() as u16;
                        for (i, data) in chunks.iter().enumerate() {
                            self.outbox.push_back((
                                peer,
                                emit(&Message::ResultChunk(ResultChunk {
                                    session_id,
                                    ready: true,
                                    index: i as u16,
                                    count,
                                    secret,
                                    data,
                                })),
                            ));
                        }
                    }
                    _ => self.outbox.push_back((
                        peer,
                        emit(&Message::ResultChunk(ResultChunk {
                            session_id,
                            ready: false,
                            index: 0,
                            count: 0,
                            secret,
                            data: &[],
                        })),
                    )),
                }
                self.last_result_request = Some(now);
            }
            Message::Abort {
                session_id, secret, ..
            } => {
                let Some(s) = self.owned_session(session_id, src, secret) else {
                    return;
                };
                if matches!(s.state, RxState::Sending { .. })
                    || (matches!(s.state, RxState::Draining { .. }) && s.bidir.is_some())
                {
                    // The client stops a reverse test (or a bidirectional test's reverse half,
                    // its forward half draining after the Fin): its results follow once the
                    // data thread has stopped.
                    s.last_activity = now;
                    self.stop_sending(session_id);
                } else if !matches!(s.state, RxState::Finished { .. }) {
                    self.finish_session(now, session_id, true);
                    // A bidirectional test's reverse half stops with it.
                    self.stop_sending(session_id);
                }
            }
            _ => self.foreign += 1,
        }
    }

    /// A group member's control: announcements start tests, the sender's Fin ends one; nothing
    /// is ever answered, everything else is foreign.
    fn handle_group_control(&mut self, now: Instant, src: SocketAddr, msg: Message<'_>) {
        match msg {
            Message::Hello(h) if h.multicast => self.handle_announcement(now, src, &h),
            Message::Fin(fin) if fin.secret == 0 => {
                let Some(s) = self.owned_session(fin.session_id, src, 0) else {
                    return;
                };
                s.last_activity = now;
                if matches!(s.state, RxState::Running) {
                    s.send_errors = fin.send_errors;
                    s.state = RxState::Draining {
                        until: now + s.params.tmax,
                        total_sent: fin.total_sent,
                    };
                }
            }
            _ => self.foreign += 1,
        }
    }

    /// A multicast announcement: a test for its sender, if there is room; never answered.
    fn handle_announcement(&mut self, now: Instant, src: SocketAddr, h: &Hello) {
        let wanted_source = self.cfg.multicast.as_ref().and_then(|m| m.source);
        if wanted_source.is_some_and(|ip| ip.to_canonical() != src.ip().to_canonical()) {
            self.foreign += 1;
            return;
        }
        if let Some(s) = self.sessions.get_mut(&h.session_id) {
            // The repeats of a known test say nothing new; the same id from another address
            // is a collision or a stranger, and changes nothing.
            if s.peer == src {
                if !matches!(s.state, RxState::Finished { .. }) {
                    s.last_activity = now;
                }
            } else {
                self.foreign += 1;
            }
            return;
        }
        let mut params = TestParams::from_hello(h);
        // Nothing goes back to a group sender.
        params.echo = false;
        params.loss_ranges = false;
        let window_bits = params.window_bits();
        let needed = ReceiverStats::memory_for(window_bits) as u64;
        if params.validate().is_err()
            || self.active_sessions() >= self.cfg.max_sessions
            || self.memory_in_use().saturating_add(needed) > self.cfg.max_memory
        {
            self.refused += 1;
            self.announcements_refused += 1;
            return;
        }
        self.evict_finished(MAX_FINISHED_KEPT.saturating_sub(1));
        self.insert_session(now, src, h.session_id, 0, params, true);
    }

    /// The address-validation cookie of `src` for `session_id` in time bucket `bucket`: a keyed
    /// hash (SipHash-2-4 under the receiver's secret key), never 0.
    fn cookie(&self, src: SocketAddr, session_id: u32, bucket: u64) -> u64 {
        let mut msg = [0u8; 16 + 2 + 4 + 8];
        let ip = match src.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        msg[..16].copy_from_slice(&ip);
        msg[16..18].copy_from_slice(&src.port().to_be_bytes());
        msg[18..22].copy_from_slice(&session_id.to_be_bytes());
        msg[22..].copy_from_slice(&bucket.to_be_bytes());
        siphash24(self.cookie_key, &msg).max(1)
    }

    fn cookie_bucket(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs() / COOKIE_BUCKET.as_secs()
    }

    /// Whether `cookie` was made for `src` and `session_id` in this bucket or the one before.
    fn cookie_valid(
        &mut self,
        now: Instant,
        src: SocketAddr,
        session_id: u32,
        cookie: u64,
    ) -> bool {
        let bucket = self.cookie_bucket(now);
        cookie != 0
            && (cookie == self.cookie(src, session_id, bucket)
                || (bucket > 0 && cookie == self.cookie(src, session_id, bucket - 1)))
    }

    /// Bytes the tests hold against the budget.
    pub fn memory_in_use(&self) -> u64 {
        self.sessions.values().map(|s| s.memory).sum()
    }

    /// Seconds after which the earliest-ending running test should be over: its planned
    /// length (if it said) plus Tmax, or the silence timeout; at least 1.
    fn retry_after_s(&self, now: Instant) -> u16 {
        let soonest = self
            .sessions
            .values()
            .filter_map(|s| match s.state {
                RxState::Running | RxState::Sending { .. } => {
                    let planned = if s.params.duration > Duration::ZERO {
                        Some(s.params.duration)
                    } else if s.params.count > 0 && s.params.pps_milli > 0 {
                        Some(Duration::from_secs_f64(
                            (s.params.count as f64 * 1000.0 / s.params.pps_milli as f64)
                                .min(86_400.0),
                        ))
                    } else {
                        None
                    };
                    let end = match planned {
                        Some(d) => (s.started + d).max(now) + s.params.tmax,
                        None => s.last_activity + PEER_SILENCE_TIMEOUT,
                    };
                    Some(end.saturating_duration_since(now))
                }
                RxState::Draining { until, .. } => Some(until.saturating_duration_since(now)),
                RxState::Finished { .. } => None,
            })
            .min()
            .unwrap_or(Duration::ZERO);
        soonest.as_secs().saturating_add(1).min(u64::from(u16::MAX)) as u16
    }

    /// A Hello: answered (never with more bytes than it had), a test created only for a valid
    /// cookie, and only within the limits.
    fn handle_hello(&mut self, now: Instant, src: SocketAddr, len: usize, h: &Hello) {
        let mut ack = HelloAck {
            session_id: h.session_id,
            status: HelloStatus::Accepted,
            rcvbuf_effective: self.cfg.rcvbuf.effective,
            reason: RejectReason::Unspecified,
            retry_after_s: 0,
            cookie: 0,
            secret: 0,
            limit: 0,
        };
        // The parser took at least wire::HELLO_LEN bytes, longer than any HelloAck.
        debug_assert!(len >= wire::HELLO_ACK_LEN);
        if !self.cookie_valid(now, src, h.session_id, h.cookie) {
            // Stateless retry: the cookie is all there is, and only `src` can read it.
            let bucket = self.cookie_bucket(now);
            ack.status = HelloStatus::Retry;
            ack.cookie = self.cookie(src, h.session_id, bucket);
            self.retries_sent += 1;
            self.outbox.push_back((src, emit(&Message::HelloAck(ack))));
            return;
        }
        if let Some(s) = self.sessions.get(&h.session_id) {
            // A retried Hello of this test: answer again. The same id from another address
            // is a collision (random ids) or a stranger: refused, the test untouched.
            if s.peer == src {
                ack.secret = s.secret;
            } else {
                ack.status = HelloStatus::Rejected;
                ack.reason = RejectReason::SessionInUse;
                self.refused += 1;
            }
            self.outbox.push_back((src, emit(&Message::HelloAck(ack))));
            return;
        }
        let params = TestParams::from_hello(h);
        let window_bits = params.window_bits();
        let arq_cfg = params.reliable.map(|r| arq_receiver_config(&params, &r));
        let needed = ReceiverStats::memory_for(window_bits) as u64
            + arq_cfg.as_ref().map_or(0, arq_receiver_memory);
        let in_use = self.memory_in_use();
        // A reverse test keeps no window here: the client measures.
        let needed = if h.reverse { 0 } else { needed };
        if let Err((reason, limit)) = params.validate() {
            ack.status = HelloStatus::Rejected;
            ack.reason = reason;
            ack.limit = limit;
        } else if (h.reverse || h.bidir)
            && let Err((reason, limit)) = reverse_limits(&params, self.cfg.max_reverse_bps)
        {
            ack.status = HelloStatus::Rejected;
            ack.reason = reason;
            ack.limit = limit;
        } else if self.active_sessions() >= self.cfg.max_sessions {
            ack.status = HelloStatus::Busy;
            ack.retry_after_s = self.retry_after_s(now);
        } else if in_use.saturating_add(needed) > self.cfg.max_memory {
            ack.status = HelloStatus::Rejected;
            ack.reason = RejectReason::Memory;
            ack.limit = self.cfg.max_memory.saturating_sub(in_use);
            ack.retry_after_s = self.retry_after_s(now);
        }
        if ack.status != HelloStatus::Accepted {
            self.refused += 1;
            self.outbox.push_back((src, emit(&Message::HelloAck(ack))));
            return;
        }
        self.evict_finished(MAX_FINISHED_KEPT.saturating_sub(1));
        let secret = loop {
            let x = self.rng.next_u64();
            if x != 0 {
                break x;
            }
        };
        ack.secret = secret;
        self.outbox.push_back((src, emit(&Message::HelloAck(ack))));
        if h.reverse {
            self.start_sending(now, src, h.session_id, secret, params);
            return;
        }
        self.insert_session(now, src, h.session_id, secret, params, false);
        if h.bidir
            && let Some(s) = self.sessions.get_mut(&h.session_id)
        {
            // Both at once: this session measures the peer's Data while the driver sends.
            s.bidir = Some(BidirHalf::default());
            self.events.push_back(ServerEvent::StartSending {
                session_id: h.session_id,
                peer: src,
                params,
            });
        }
    }

    /// A test of `peer` as it starts: nothing measured, sent or kept yet, state Running. Each
    /// kind of test sets what differs (statistics, memory, marks, ARQ, Sending).
    fn new_session(
        &self,
        now: Instant,
        peer: SocketAddr,
        secret: u64,
        params: TestParams,
    ) -> RxSession {
        RxSession {
            peer,
            secret,
            params,
            stats: None,
            memory: 0,
            plausible_end: 0,
            seq_base: 0,
            data_seen: false,
            foreign_at_start: self.foreign,
            shared_socket: false,
            multicast: false,
            warmup: 0,
            omitted: 0,
            state: RxState::Running,
            started: now,
            last_activity: now,
            next_interval: now + params.interval,
            next_tick: now + params.interval.min(LOSS_TICK_MAX),
            interval_index: 0,
            row_spans: VecDeque::new(),
            intervals: Vec::new(),
            intervals_not_kept: 0,
            send_errors: 0,
            rxq_at_start: self.rxq_dropped,
            gate_at_start: self.gate,
            echo_sent: 0,
            loss_ranges: Vec::new(),
            loss_ranges_not_kept: 0,
            marks: None,
            arq: None,
            arq_msg_end: 0,
            arq_last_wall_ns: 0,
            arq_at_row: Default::default(),
            arq_rows: VecDeque::new(),
            bidir: None,
        }
    }

    /// Starts measuring a test whose sender is `src`.
    fn insert_session(
        &mut self,
        now: Instant,
        src: SocketAddr,
        session_id: u32,
        secret: u64,
        params: TestParams,
        multicast: bool,
    ) {
        let window_bits = params.window_bits();
        // A group member never sends, so never ACKs: it measures RData as plain data.
        let arq_cfg = params
            .reliable
            .filter(|_| !multicast)
            .map(|r| arq_receiver_config(&params, &r));
        let needed = ReceiverStats::memory_for(window_bits) as u64
            + arq_cfg.as_ref().map_or(0, arq_receiver_memory);
        let tmax_ns = params.tmax.as_nanos() as u64;
        let stats = ReceiverStats::new(StatsConfig {
            window_bits,
            loss_horizon_ns: tmax_ns,
            record_loss_ranges: self.cfg.record_loss_ranges || params.loss_ranges,
        });
        // Tests sharing the socket share its drop counter: say so in each of their reports.
        let mut shared = false;
        for other in self.sessions.values_mut() {
            if !matches!(other.state, RxState::Finished { .. }) {
                other.shared_socket = true;
                shared = true;
            }
        }
        let arq = arq_cfg.map(|c| ArqReceiver::new(c, session_id, 0));
        let base = self.new_session(now, src, secret, params);
        self.sessions.insert(
            session_id,
            RxSession {
                stats: Some(stats),
                memory: needed,
                plausible_end: params.plausible_end(Duration::ZERO),
                shared_socket: shared,
                multicast,
                warmup: params.warmup_sequences(),
                marks: Some(MarkingCounter::default()),
                arq,
                ..base
            },
        );
        self.events.push_back(ServerEvent::Started {
            session_id,
            peer: src,
            params,
        });
    }

    /// Keeps a reverse test (no statistics: its client measures) and tells the driver to send.
    fn start_sending(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        session_id: u32,
        secret: u64,
        params: TestParams,
    ) {
        // No statistics: the client measures a reverse test, and counts what its Data arrived
        // with; a reverse test's warm-up would be the client's to leave out (refused for now).
        let base = self.new_session(now, peer, secret, params);
        self.sessions.insert(
            session_id,
            RxSession {
                state: RxState::Sending { stop_asked: false },
                ..base
            },
        );
        self.events.push_back(ServerEvent::StartSending {
            session_id,
            peer,
            params,
        });
    }

    /// Asks the driver (once) to stop a reverse test's data thread.
    fn stop_sending(&mut self, session_id: u32) {
        let Some(s) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let stop_asked = match (&mut s.state, s.bidir.as_mut()) {
            (RxState::Sending { stop_asked }, _) => stop_asked,
            // A bidirectional test still measuring: its driver may still be sending.
            (RxState::Running | RxState::Draining { .. }, Some(b)) if b.sent.is_none() => {
                &mut b.stop_asked
            }
            _ => return,
        };
        if !*stop_asked {
            *stop_asked = true;
            self.events
                .push_back(ServerEvent::StopSending { session_id });
        }
    }

    /// A reverse test's data thread stopped: `report`, what it sent, becomes the test's results
    /// for its client to ask for (as a Fin's totals, they end its measurement). With `push`
    /// (this receiver is being interrupted and will not wait for the request) they also go to
    /// the client at once, to its validated address only.
    pub fn reverse_done(
        &mut self,
        now: Instant,
        session_id: u32,
        report: SenderReport,
        push: bool,
    ) {
        let Some(s) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if let (RxState::Running | RxState::Draining { .. }, Some(b)) = (&s.state, s.bidir.as_mut())
        {
            // A bidirectional test still measuring: its results wait for the forward half.
            if b.sent.is_none() {
                b.sent = Some((report, push));
            }
            return;
        }
        if !matches!(s.state, RxState::Sending { .. }) {
            return;
        }
        // A bidirectional test's forward half (already measured) travels with the totals.
        let forward = s.bidir.as_mut().and_then(|b| b.forward.take());
        s.data_seen = s.data_seen || report.sent > 0;
        let (json_len, chunks) = result_chunks(ResultsEnvelope {
            version: REPORT_VERSION,
            report: forward.map(|f| *f).unwrap_or_default(),
            sender: Some(report),
            // Pushed at once only when this receiver is being interrupted.
            interrupted: push,
        });
        s.memory = json_len as u64;
        if push {
            push_chunks(&mut self.outbox, s.peer, session_id, s.secret, &chunks);
        }
        s.state = RxState::Finished {
            chunks,
            linger_until: now + RESULTS_LINGER,
        };
        self.completed += 1;
        if s.data_seen {
            self.completed_with_data += 1;
        }
    }

    /// Forgets the oldest finished tests (their results) until at most `keep` remain.
    fn evict_finished(&mut self, keep: usize) {
        let mut finished: Vec<(Instant, u32)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| match s.state {
                RxState::Finished { linger_until, .. } => Some((linger_until, *id)),
                _ => None,
            })
            .collect();
        if finished.len() <= keep {
            return;
        }
        finished.sort_unstable();
        for (_, id) in &finished[..finished.len() - keep] {
            self.sessions.remove(id);
        }
    }

    /// The driver could not send the echo reply in `echo` (the one `handle_datagram` asked for):
    /// it does not count as sent, so the return path is not blamed for it.
    pub fn echo_not_sent(&mut self, echo: &[u8; wire::DATA_HEADER_LEN]) {
        if let Some(h) = DataHeader::parse_echo(echo)
            && let Some(s) = self.sessions.get_mut(&h.session_id)
        {
            s.echo_sent = s.echo_sent.saturating_sub(1);
        }
    }

    /// Latest cumulative counts of what the driver refused before the session (they name no
    /// test): each test reports the increase over its own time, to its sender too.
    pub fn set_gate_totals(&mut self, totals: GateTotals) {
        self.gate = totals;
    }

    /// Emit each closing interval's one-way latency histogram as
    /// `ServerEvent::IntervalLatency` (for an HdrHistogram interval log).
    pub fn export_latency_histograms(&mut self, export: bool) {
        self.export_latency = export;
    }

    /// Latest cumulative receive-queue drop counter of the socket (SO_RXQ_OVFL), if known.
    pub fn set_rxq_dropped(&mut self, total: Option<u64>) {
        if total.is_some() {
            self.rxq_dropped = total;
        }
    }

    /// Earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| {
                let t = match s.state {
                    RxState::Running => s
                        .next_interval
                        .min(s.next_tick)
                        .min(s.last_activity + s.silence_timeout()),
                    RxState::Sending { stop_asked: false } => {
                        s.last_activity + PEER_SILENCE_TIMEOUT
                    }
                    RxState::Sending { stop_asked: true } => return None,
                    RxState::Draining { until, .. } => until.min(s.next_interval).min(s.next_tick),
                    RxState::Finished { linger_until, .. } => return Some(linger_until),
                };
                Some(s.arq_timeout().map_or(t, |a| a.min(t)))
            })
            .min()
    }

    /// Closes intervals, declares losses older than Tmax, ends drained and silent tests.
    /// `now` is the monotonic clock of `handle_datagram`; the wall clock plays no part here.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<u32> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            match s.state {
                RxState::Finished { linger_until, .. } => {
                    if now >= linger_until {
                        self.sessions.remove(&id);
                    }
                    continue;
                }
                RxState::Draining { until, total_sent } if now >= until => {
                    if let Some(stats) = s.stats.as_mut() {
                        // The statistics count from the end of the warm-up.
                        let counted = total_sent.saturating_sub(s.warmup);
                        stats.finish(counted, session_ns(now, s.started));
                    }
                    self.finish_session(now, id, false);
                    continue;
                }
                RxState::Running if now >= s.last_activity + s.silence_timeout() => {
                    self.finish_session(now, id, true);
                    continue;
                }
                RxState::Sending { stop_asked } => {
                    // A reverse test's client that went silent (gone, or its path is): stop
                    // sending toward it.
                    if !stop_asked && now >= s.last_activity + PEER_SILENCE_TIMEOUT {
                        self.stop_sending(id);
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(stats) = s.stats.as_mut() {
                stats.on_tick(session_ns(now, s.started));
            }
            s.pump_arq(now, &mut self.outbox);
            if now >= s.next_tick {
                s.next_tick = now + s.params.interval.min(LOSS_TICK_MAX);
            }
            while now >= s.next_interval {
                let secs = s.params.interval.as_secs_f64();
                let start_s = s.interval_index as f64 * secs;
                let export = self.export_latency.then_some((id, &mut self.events));
                Self::close_row(s, now, start_s + secs, export);
                s.next_interval += s.params.interval;
            }
            Self::publish_rows(s, id, &mut self.events);
            if s.records_loss_ranges(self.cfg.record_loss_ranges) {
                let ranges = s.drain_loss_ranges();
                if self.cfg.record_loss_ranges && !ranges.is_empty() {
                    self.events.push_back(ServerEvent::Lost {
                        session_id: id,
                        ranges,
                    });
                }
            }
        }
    }

    /// Closes the open interval row at `now`; it ends at `end_s` (s since the test start).
    /// With `export`, the row's latency histogram goes out as an event of that session.
    fn close_row(
        s: &mut RxSession,
        now: Instant,
        end_s: f64,
        export: Option<(u32, &mut VecDeque<ServerEvent>)>,
    ) {
        let start_s = s.interval_index as f64 * s.params.interval.as_secs_f64();
        if let Some(stats) = s.stats.as_mut() {
            if let Some((session_id, events)) = export {
                events.push_back(ServerEvent::IntervalLatency {
                    session_id,
                    start_s,
                    end_s,
                    histogram: Box::new(stats.interval_latency_hdr()),
                });
            }
            stats.close_interval(session_ns(now, s.started));
        }
        s.row_spans.push_back((start_s, end_s));
        let reliable = s.arq.as_ref().map(|arq| {
            let now = arq.stats();
            let was = std::mem::replace(&mut s.arq_at_row, now.clone());
            ReliableInterval {
                delivered: now.delivered - was.delivered,
                duplicate_arrivals: now.duplicate_arrivals - was.duplicate_arrivals,
                ack_datagrams: now.ack_datagrams - was.ack_datagrams,
                ack_bytes: now.ack_bytes - was.ack_bytes,
                ..ReliableInterval::default()
            }
        });
        s.arq_rows.push_back(reliable);
        s.interval_index += 1;
    }

    /// Publishes (keeps and announces) every closed row whose losses are final: a row is
    /// printed once, with its final figures, about Tmax after it closed.
    fn publish_rows(s: &mut RxSession, id: u32, events: &mut VecDeque<ServerEvent>) {
        while let Some(stats) = s.stats.as_mut().and_then(ReceiverStats::poll_interval) {
            let (start_s, end_s) = s.row_spans.pop_front().unwrap_or_default();
            let reliable = s.arq_rows.pop_front().flatten();
            let dt = (end_s - start_s).max(1e-9);
            let row = IntervalRow {
                role: "receiver".into(),
                start_s,
                end_s,
                rate_bps: stats.received_bytes as f64 * 8.0 / dt,
                pps: stats.received as f64 / dt,
                stats: Some(stats),
                reliable,
                ..IntervalRow::default()
            };
            keep_interval(&mut s.intervals, row.clone(), &mut s.intervals_not_kept);
            events.push_back(ServerEvent::Interval {
                session_id: id,
                row: Box::new(row),
            });
        }
    }

    /// Ends a test: final (partial) interval, the report, results ready for the sender.
    fn finish_session(&mut self, now: Instant, id: u32, interrupted: bool) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(st) = s.stats.as_mut() else {
            return; // already finished
        };
        if interrupted {
            // Unknown total: everything up to the highest sequence seen is what was expected.
            let seen = st.seen_end();
            st.finish(seen, session_ns(now, s.started));
        }
        // The last, partial interval; then every row is final.
        let elapsed = now.saturating_duration_since(s.started).as_secs_f64();
        let start_s = s.interval_index as f64 * s.params.interval.as_secs_f64();
        if elapsed > start_s {
            let export = self.export_latency.then_some((id, &mut self.events));
            Self::close_row(s, now, elapsed, export);
        }
        Self::publish_rows(s, id, &mut self.events);
        if s.records_loss_ranges(self.cfg.record_loss_ranges) {
            let ranges = s.drain_loss_ranges();
            if self.cfg.record_loss_ranges && !ranges.is_empty() {
                self.events.push_back(ServerEvent::Lost {
                    session_id: id,
                    ranges,
                });
            }
        }
        let stats = s
            .stats
            .as_ref()
            .map(ReceiverStats::summary)
            .unwrap_or_default();
        let duration_s = match (stats.first_recv_ns, stats.last_recv_ns) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let rcvbuf_drops = match (self.rxq_dropped, s.rxq_at_start) {
            (Some(now_total), Some(start)) => Some(now_total.saturating_sub(start)),
            (Some(now_total), None) => Some(now_total),
            _ => None,
        };
        let report = ReceiverReport {
            duration_s,
            rate_achieved_bps: per_s(stats.received_bytes as f64 * 8.0),
            pps_achieved: per_s(stats.received as f64),
            rcvbuf: self.cfg.rcvbuf,
            sndbuf: self.cfg.sndbuf,
            rcvbuf_drops,
            timestamp_source: self.cfg.timestamp_source.clone(),
            // What arrived while this test ran, not over the receiver's lifetime.
            foreign_datagrams: self.foreign - s.foreign_at_start,
            rcvbuf_drops_shared: s.shared_socket,
            tmax_s: s.params.tmax.as_secs_f64(),
            intervals: std::mem::take(&mut s.intervals),
            intervals_not_kept: s.intervals_not_kept,
            interrupted,
            echo_sent: s.echo_sent,
            // An IPv4 peer of a dual-stack socket arrives IPv4-mapped: shown as people write it.
            peer: SocketAddr::new(s.peer.ip().to_canonical(), s.peer.port()).to_string(),
            loss_ranges: std::mem::take(&mut s.loss_ranges),
            loss_ranges_not_kept: s.loss_ranges_not_kept,
            // The driver's refusals during this test (it keeps the totals: `set_gate_totals`).
            unauthenticated: self
                .gate
                .unauthenticated
                .map(|n| n - s.gate_at_start.unauthenticated.unwrap_or(0)),
            refused_by_allow: self
                .gate
                .refused_by_allow
                .map(|n| n - s.gate_at_start.refused_by_allow.unwrap_or(0)),
            marking: s
                .marks
                .take()
                .map(|m| m.summary(s.params.marking))
                .unwrap_or_default(),
            omit_s: s.params.omit.as_secs_f64(),
            omitted_sequences: s.warmup,
            omitted: s.omitted,
            stats,
            reliable: s.arq.as_ref().map(ArqReceiver::stats),
        };
        // The window goes now; the results stay for the sender (bounded by MAX_FINISHED_KEPT).
        s.stats = None;
        s.arq = None;
        self.events.push_back(ServerEvent::Finished {
            session_id: id,
            peer: s.peer,
            report: Box::new(report.clone()),
        });
        let (sender, push) = match s.bidir.as_mut() {
            Some(b) => match b.sent.take() {
                Some((sent, push)) => (Some(sent), push),
                None => {
                    // A bidirectional test whose driver still sends: the results wait for
                    // its totals (`reverse_done`), as a reverse test's do.
                    b.forward = Some(Box::new(report));
                    s.memory = 0;
                    s.state = RxState::Sending {
                        stop_asked: b.stop_asked,
                    };
                    return;
                }
            },
            None => (None, false),
        };
        if let Some(sent) = &sender {
            s.data_seen = s.data_seen || sent.sent > 0;
        }
        let (json_len, chunks) = result_chunks(ResultsEnvelope {
            version: REPORT_VERSION,
            report,
            sender,
            interrupted: push,
        });
        if push {
            push_chunks(&mut self.outbox, s.peer, id, s.secret, &chunks);
        }
        s.memory = json_len as u64;
        s.state = RxState::Finished {
            chunks,
            linger_until: now + RESULTS_LINGER,
        };
        self.completed += 1;
        if s.data_seen {
            self.completed_with_data += 1;
        }
    }

    /// Ctrl-C: ends every running test with what was measured, and tells the peers.
    pub fn interrupt_all(&mut self, now: Instant) {
        let sending: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.state, RxState::Sending { .. }))
            .map(|(id, _)| *id)
            .collect();
        // Reverse tests end when their data thread has stopped (`reverse_done`).
        for id in sending {
            self.stop_sending(id);
        }
        let running: Vec<(u32, SocketAddr, u64, bool, bool)> = self
            .sessions
            .iter()
            .filter(|(_, s)| !matches!(s.state, RxState::Finished { .. } | RxState::Sending { .. }))
            .map(|(id, s)| (*id, s.peer, s.secret, s.multicast, s.bidir.is_some()))
            .collect();
        for (id, peer, secret, multicast, bidir) in running {
            self.finish_session(now, id, true);
            if bidir {
                // Its results go to the client once its data thread stopped (pushed): an
                // Abort would make the client drop them.
                self.stop_sending(id);
                continue;
            }
            if multicast {
                continue; // a group sender is told nothing
            }
            self.outbox.push_back((
                peer,
                emit(&Message::Abort {
                    session_id: id,
                    reason: AbortReason::Interrupted,
                    secret,
                }),
            ));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Tests that are running or draining.
    pub fn active_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| !matches!(s.state, RxState::Finished { .. }))
            .count()
    }

    /// Tests that have ended since the server started.
    pub fn completed_sessions(&self) -> u64 {
        self.completed
    }

    /// Ended tests that were validated and sent data: strangers' handshakes and empty tests
    /// do not count.
    pub fn completed_with_data(&self) -> u64 {
        self.completed_with_data
    }

    /// Hellos answered with a retry (address validation), which cost no state.
    pub fn retries_sent(&self) -> u64 {
        self.retries_sent
    }

    /// Hellos refused (bad parameters, over a limit, busy, session id in use).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Data datagrams with an implausibly far-ahead sequence, all tests together.
    pub fn implausible(&self) -> u64 {
        self.implausible
    }

    /// True when a `--once` receiver may exit: a validated test that sent data ended, none is
    /// running, and the sender has stopped asking for results for `quiet` (or never asked and
    /// the results lingered).
    pub fn may_exit_once(&self, now: Instant, quiet: Duration) -> bool {
        if self.cfg.multicast.is_some() {
            // Nobody asks a group member for results: its report is out once the test ended.
            return self.completed_with_data > 0 && self.active_sessions() == 0;
        }
        self.completed_with_data > 0
            && self.active_sessions() == 0
            && (self.sessions.is_empty()
                || self
                    .last_result_request
                    .is_some_and(|t| now.saturating_duration_since(t) >= quiet))
    }

    /// Group member: announcements refused (no room, bad parameters); each repeat counts.
    pub fn announcements_refused(&self) -> u64 {
        self.announcements_refused
    }

    /// Datagrams that were not udplab's or named no known session.
    pub fn foreign_datagrams(&self) -> u64 {
        self.foreign
    }
}

/// SipHash-2-4 of `msg` under `key` (Aumasson and Bernstein): the keyed hash of the
/// address-validation cookies.
fn siphash24(key: [u64; 2], msg: &[u8]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |m: u64, v: &mut [u64; 4]| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        compress(u64::from_le_bytes(b), &mut v);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    compress(u64::from_le_bytes(last), &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Monotonic nanoseconds since a session started: the clock of its `ReceiverStats`.
fn session_ns(now: Instant, started: Instant) -> u64 {
    now.saturating_duration_since(started).as_nanos() as u64
}

/// The ARQ receiver of a reliable test: the sender's mode and window (the reorder buffer
/// follows the window, capped at the largest `--window`), the layer's ACK policy.
fn arq_receiver_config(params: &TestParams, r: &HelloReliable) -> ArqConfig {
    let defaults = ArqConfig::default();
    let window = (r.window > 0).then(|| r.window.min(crate::config::MAX_RELIABLE_WINDOW));
    ArqConfig {
        ordering: match r.mode {
            wire::ReliableMode::Unordered => ArqOrdering::Unordered,
            _ => ArqOrdering::Ordered,
        },
        deadline: match (r.mode, r.deadline_in_rtt) {
            (wire::ReliableMode::Deadline, false) => ArqDeadline::After { ns: r.deadline },
            (wire::ReliableMode::Deadline, true) => ArqDeadline::RttMultiple {
                times_1000: u32::try_from(r.deadline).unwrap_or(u32::MAX),
            },
            _ => ArqDeadline::None,
        },
        max_in_flight: window.unwrap_or(defaults.max_in_flight),
        recv_window: window.unwrap_or(defaults.recv_window),
        payload_size: params.payload_size,
        ..defaults
    }
}

/// Bytes a reliable test's ARQ receiver may hold (the bound stated in [`crate::arq`]), counted
/// against the receiver's memory budget with the test's statistics.
pub fn arq_receiver_memory(cfg: &ArqConfig) -> u64 {
    // The receiver's stated bound (src/arq/mod.rs) + the fixed-size histograms.
    crate::arq::RECEIVER_BYTES_PER_WINDOW_MESSAGE * u64::from(cfg.recv_window.max(1))
        + crate::arq::RECEIVER_FIXED_BYTES
        + (ArqReceiver::HISTOGRAMS * crate::stats::LatencyHistogram::CAPACITY_BYTES) as u64
}

/// The results payload carries its version so a mismatched peer fails loudly.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct ResultsEnvelope {
    version: u32,
    /// The receiver's measurement (empty in a reverse test's results).
    report: ReceiverReport,
    /// A reverse test's results: what the receiver sent (absent otherwise, so a forward
    /// test's results are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<SenderReport>,
    /// A reverse test's receiver was interrupted before the test's end (absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    interrupted: bool,
}

/// Queues every results chunk of test `session_id` to its validated `peer` (results pushed by
/// an interrupted receiver, which will not wait for the request).
fn push_chunks(
    outbox: &mut VecDeque<(SocketAddr, Vec<u8>)>,
    peer: SocketAddr,
    session_id: u32,
    secret: u64,
    chunks: &[Vec<u8>],
) {
    let count = chunks.len() as u16;
    for (i, data) in chunks.iter().enumerate() {
        outbox.push_back((
            peer,
            emit(&Message::ResultChunk(ResultChunk {
                session_id,
                ready: true,
                index: i as u16,
                count,
                secret,
                data,
            })),
        ));
    }
}

/// The results as JSON in ResultChunk-sized pieces, and the JSON's length. A ResultChunk counts
/// in u16: a larger document would wrap. Interval rows are capped so this cannot happen, but
/// never send a corrupt result if it did: the rows are dropped (and counted as not kept).
fn result_chunks(env: ResultsEnvelope) -> (usize, Vec<Vec<u8>>) {
    let json = serde_json::to_vec(&env).unwrap_or_default();
    let json = if json.len() > wire::RESULT_CHUNK_DATA * usize::from(u16::MAX) {
        let mut slim = env;
        slim.report.intervals_not_kept += slim.report.intervals.len() as u64;
        slim.report.intervals.clear();
        if let Some(sender) = slim.sender.as_mut() {
            sender.intervals_not_kept += sender.intervals.len() as u64;
            sender.intervals.clear();
        }
        serde_json::to_vec(&slim).unwrap_or_default()
    } else {
        json
    };
    let chunks = json
        .chunks(wire::RESULT_CHUNK_DATA)
        .map(<[u8]>::to_vec)
        .collect();
    (json.len(), chunks)
}

/// How long a paced test `params` describe sends for (None: it does not end by itself).
fn planned_sending(params: &TestParams) -> Option<Duration> {
    let by_count = (params.count > 0 && params.pps_milli > 0).then(|| {
        Duration::from_secs_f64((params.count as f64 * 1000.0 / params.pps_milli as f64).min(1e9))
    });
    match (params.duration > Duration::ZERO, by_count) {
        (true, Some(c)) => Some(params.duration.min(c)),
        (true, None) => Some(params.duration),
        (false, Some(c)) => Some(c),
        (false, None) => None,
    }
}

/// Why a receiver refuses to send the reverse test `params` describe, if it does. The rate is
/// what the pacing makes of the declared datagram rate and size (not the declared bit rate, a
/// claim), and the test must end by itself within [`MAX_REVERSE_DURATION`].
fn reverse_limits(params: &TestParams, max_bps: u64) -> Result<(), (RejectReason, u64)> {
    let bps = params.pps_milli as f64 / 1000.0 * f64::from(params.payload_size) * 8.0;
    if params.pps_milli == 0 || bps > max_bps as f64 {
        return Err((RejectReason::ReverseRate, max_bps));
    }
    let limit = (
        RejectReason::ReverseLength,
        MAX_REVERSE_DURATION.as_nanos() as u64,
    );
    let Some(planned) = planned_sending(params) else {
        return Err(limit);
    };
    if planned > MAX_REVERSE_DURATION {
        return Err(limit);
    }
    Ok(())
}

#[cfg(test)]
mod trust_tests;

#[cfg(test)]
mod multicast_tests;

#[cfg(test)]
mod reverse_tests;

#[cfg(test)]
mod bidir_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn params() -> TestParams {
        TestParams {
            payload_size: 100,
            echo: true,
            interval: Duration::from_secs(1),
            tmax: Duration::from_millis(300),
            count: 0,
            duration: Duration::ZERO,
            rate_bps: 0,
            pps_milli: 0,
            loss_ranges: false,
            pattern: HelloPattern::Cbr,
            marking: Default::default(),
            omit: Duration::ZERO,
            reliable: None,
        }
    }

    fn server(max_sessions: usize) -> ReceiverServer {
        ReceiverServer::new(ServerConfig {
            max_sessions,
            rcvbuf: BufferInfo::default(),
            sndbuf: BufferInfo::default(),
            timestamp_source: "user".into(),
            record_loss_ranges: false,
            ..ServerConfig::default()
        })
    }

    const PEER: &str = "192.0.2.9:4000";

    /// Delivers everything queued on both sides until nothing moves.
    fn pump(clock: &ManualClock, ctl: &mut SenderControl, srv: &mut ReceiverServer) {
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        loop {
            let mut moved = false;
            while let Some(m) = ctl.poll_transmit() {
                srv.handle_datagram(clock.now(), clock.wall_ns(), peer, &m, &mut echo);
                moved = true;
            }
            while let Some((_, m)) = srv.poll_transmit() {
                ctl.handle_datagram(clock.now(), &m);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn handshake_is_retried_then_fails_with_a_clear_error() {
        let mut clock = ManualClock::new(0);
        let mut ctl = SenderControl::new(7, params(), clock.now());
        let mut hellos = 0;
        while !ctl.is_done() {
            while ctl.poll_transmit().is_some() {
                hellos += 1;
            }
            clock.advance(Duration::from_millis(50));
            ctl.handle_timeout(clock.now());
        }
        assert_eq!(hellos, 15, "one Hello every 200 ms for 3 s");
        assert_eq!(ctl.control_sent(), 15, "every retry is counted");
        match ctl.poll_event() {
            Some(SenderEvent::Failed(ControlError::NoReceiver(s))) => assert!(s >= 3.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_test_is_busy_when_the_receiver_is_full() {
        let clock = ManualClock::new(0);
        let mut srv = server(1);
        let mut a = SenderControl::new(1, params(), clock.now());
        pump(&clock, &mut a, &mut srv);
        assert!(matches!(a.poll_event(), Some(SenderEvent::Accepted { .. })));
        let mut b = SenderControl::new(2, params(), clock.now());
        pump(&clock, &mut b, &mut srv);
        assert_eq!(
            b.poll_event(),
            Some(SenderEvent::Failed(ControlError::Busy(11))),
            "a silent-for-now test ends by the 10 s silence timeout at the latest"
        );
    }

    #[test]
    fn lost_fin_ack_is_recovered_and_results_arrive_in_any_order() {
        let mut clock = ManualClock::new(1_000_000_000);
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut srv = server(4);
        let mut ctl = SenderControl::new(3, params(), clock.now());
        pump(&clock, &mut ctl, &mut srv);
        assert!(matches!(
            ctl.poll_event(),
            Some(SenderEvent::Accepted { .. })
        ));
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        let mut buf = [0u8; 100];
        for seq in 0..10u64 {
            DataHeader {
                session_id: 3,
                seq,
                send_ns: clock.wall_ns(),
            }
            .write(Kind::Data, &mut buf);
            assert!(srv.handle_datagram(clock.now(), clock.wall_ns(), peer, &buf, &mut echo));
            assert_eq!(DataHeader::parse_echo(&echo).map(|h| h.seq), Some(seq));
        }
        ctl.finish(clock.now(), 12, 1200, 0);
        // The first Fin's answer is lost.
        let fin = ctl.poll_transmit().unwrap();
        srv.handle_datagram(clock.now(), clock.wall_ns(), peer, &fin, &mut echo);
        assert!(srv.poll_transmit().is_some());
        for _ in 0..40 {
            clock.advance(Duration::from_millis(50));
            ctl.handle_timeout(clock.now());
            srv.handle_timeout(clock.now());
            // Deliver the receiver's replies in reverse order.
            while let Some(m) = ctl.poll_transmit() {
                srv.handle_datagram(clock.now(), clock.wall_ns(), peer, &m, &mut echo);
            }
            let mut replies = Vec::new();
            while let Some((_, m)) = srv.poll_transmit() {
                replies.push(m);
            }
            for m in replies.iter().rev() {
                ctl.handle_datagram(clock.now(), m);
            }
            if ctl.is_done() {
                break;
            }
        }
        match ctl.poll_event() {
            Some(SenderEvent::Results(r)) => {
                assert_eq!(r.stats.expected, 12);
                assert_eq!(r.stats.received, 10);
                assert_eq!(r.stats.lost, 2, "tail losses count");
                assert!(!r.interrupted);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Runs a test whose receiver sees `seqs` (in order) of `total` sent, to its results.
    fn results_of(
        params: TestParams,
        seqs: &[u64],
        total: u64,
        unsent_echoes: usize,
    ) -> ReceiverReport {
        let mut clock = ManualClock::new(1_000_000_000);
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut srv = server(1);
        let mut ctl = SenderControl::new(6, params, clock.now());
        pump(&clock, &mut ctl, &mut srv);
        assert!(matches!(
            ctl.poll_event(),
            Some(SenderEvent::Accepted { .. })
        ));
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        let mut buf = [0u8; 100];
        for &seq in seqs {
            DataHeader {
                session_id: 6,
                seq,
                send_ns: clock.wall_ns(),
            }
            .write(Kind::Data, &mut buf);
            assert_eq!(
                srv.handle_datagram(clock.now(), clock.wall_ns(), peer, &buf, &mut echo),
                params.echo
            );
        }
        for _ in 0..unsent_echoes {
            srv.echo_not_sent(&echo);
        }
        ctl.finish(clock.now(), total, total * 100, 0);
        for _ in 0..40 {
            pump(&clock, &mut ctl, &mut srv);
            if ctl.is_done() {
                break;
            }
            clock.advance(Duration::from_millis(50));
            ctl.handle_timeout(clock.now());
            srv.handle_timeout(clock.now());
        }
        loop {
            match ctl.poll_event() {
                Some(SenderEvent::Results(r)) => return *r,
                Some(SenderEvent::Failed(e)) => panic!("{e}"),
                Some(_) => {}
                None => panic!("no results"),
            }
        }
    }

    #[test]
    fn results_are_requested_only_once_tmax_after_the_fin_ack() {
        let mut clock = ManualClock::new(0);
        let mut srv = server(1);
        let mut ctl = SenderControl::new(8, params(), clock.now());
        pump(&clock, &mut ctl, &mut srv);
        assert!(!ctl.requesting_results(clock.now()));
        ctl.finish(clock.now(), 0, 0, 0);
        pump(&clock, &mut ctl, &mut srv);
        assert!(
            !ctl.requesting_results(clock.now()),
            "FinAck in, Tmax not over"
        );
        clock.advance(params().tmax);
        assert!(ctl.requesting_results(clock.now()));
    }

    #[test]
    fn results_count_the_echo_replies_sent_not_the_datagrams_received() {
        // Sequence 1 arrives twice: both copies are answered.
        let r = results_of(params(), &[0, 1, 1, 4, 5], 8, 0);
        assert_eq!(r.stats.received, 4);
        assert_eq!(r.stats.duplicates, 1);
        assert_eq!(r.echo_sent, 5);
        assert_eq!(r.peer, PEER);
        assert!(r.loss_ranges.is_empty(), "not asked for");
        // An echo the driver could not send is not the return path's to lose.
        let r = results_of(params(), &[0, 1, 1, 4, 5], 8, 2);
        assert_eq!(r.echo_sent, 3);
        let quiet = TestParams {
            echo: false,
            ..params()
        };
        assert_eq!(results_of(quiet, &[0, 1], 2, 0).echo_sent, 0);
    }

    #[test]
    fn the_warm_up_is_left_out_of_every_statistic_and_counted_apart() {
        // 1000 datagrams/s, 5 ms warm-up: sequences 0..5 are the warm-up.
        let omitting = TestParams {
            pps_milli: 1_000_000,
            omit: Duration::from_millis(5),
            loss_ranges: true,
            ..params()
        };
        assert_eq!(omitting.warmup_sequences(), 5);
        // 0, 2, 3 arrive (1 and 4 lost) in the warm-up; then 5, 6, 8, 9 of 5..10.
        let r = results_of(omitting, &[0, 2, 3, 3, 5, 6, 8, 9], 10, 0);
        assert_eq!(r.omitted_sequences, 5);
        assert_eq!(r.omitted, 4, "warm-up arrivals, the duplicate too");
        assert_eq!(r.stats.expected, 5);
        assert_eq!(r.stats.received, 4);
        assert_eq!(r.stats.lost, 1);
        assert_eq!(
            r.stats.duplicates, 0,
            "the warm-up's duplicate is not counted"
        );
        assert_eq!(r.stats.loss_periods, 1);
        // Ranges in the sender's numbering.
        assert_eq!(r.loss_ranges, vec![[7, 7]]);
        assert_eq!(r.omit_s, 0.005);
    }

    #[test]
    fn warm_up_sequences_follow_the_schedule() {
        let p = |pattern, pps_milli, omit_ms, count| TestParams {
            pattern,
            pps_milli,
            omit: Duration::from_millis(omit_ms),
            count,
            ..params()
        };
        assert_eq!(p(HelloPattern::Cbr, 1_000_000, 0, 0).warmup_sequences(), 0);
        // 2.5 datagrams/s for 1 s: sequences 0, 1 and 2 leave at 0, 0.4 and 0.8 s.
        assert_eq!(p(HelloPattern::Cbr, 2_500, 1000, 0).warmup_sequences(), 3);
        // Exactly on a deadline: sequence 10 leaves at 10 ms, after a 10 ms warm-up.
        assert_eq!(
            p(HelloPattern::Cbr, 1_000_000, 10, 0).warmup_sequences(),
            10
        );
        // Bursts of 4 at 1000/s leave every 4 ms: bursts at 0, 4 and 8 ms are in a 10 ms one.
        assert_eq!(
            p(HelloPattern::Burst(4), 1_000_000, 10, 0).warmup_sequences(),
            12
        );
        // Not fixed in advance: none.
        assert_eq!(
            p(HelloPattern::Poisson, 1_000_000, 10, 0).warmup_sequences(),
            0
        );
        assert_eq!(p(HelloPattern::Unpaced, 0, 10, 0).warmup_sequences(), 0);
        // Never more than the count.
        assert_eq!(p(HelloPattern::Cbr, 1_000_000, 10, 7).warmup_sequences(), 7);
    }

    #[test]
    fn results_carry_the_lost_ranges_when_asked_up_to_the_cap() {
        let asked = TestParams {
            loss_ranges: true,
            ..params()
        };
        let r = results_of(asked, &[0, 1, 4, 5], 8, 0);
        assert_eq!(r.loss_ranges, vec![[2, 3], [6, 7]], "tail losses too");
        assert_eq!(r.loss_ranges_not_kept, 0);

        // Every other sequence lost: one range each, five more than are carried.
        let ranges = MAX_CARRIED_LOSS_RANGES as u64 + 5;
        let even: Vec<u64> = (0..ranges).map(|i| 2 * i).collect();
        let r = results_of(asked, &even, 2 * ranges, 0);
        assert_eq!(r.stats.lost, ranges);
        assert_eq!(r.loss_ranges.len(), MAX_CARRIED_LOSS_RANGES);
        assert_eq!(r.loss_ranges[0], [1, 1]);
        assert_eq!(r.loss_ranges_not_kept, 5);
    }

    #[test]
    fn a_silent_sender_ends_its_test_as_interrupted() {
        let mut clock = ManualClock::new(0);
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut srv = server(1);
        let mut ctl = SenderControl::new(4, params(), clock.now());
        pump(&clock, &mut ctl, &mut srv);
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        let mut buf = [0u8; 100];
        for seq in [0u64, 1, 3] {
            DataHeader {
                session_id: 4,
                seq,
                send_ns: clock.wall_ns(),
            }
            .write(Kind::Data, &mut buf);
            srv.handle_datagram(clock.now(), clock.wall_ns(), peer, &buf, &mut echo);
        }
        clock.advance(PEER_SILENCE_TIMEOUT + Duration::from_millis(1));
        srv.handle_timeout(clock.now());
        let finished = std::iter::from_fn(|| srv.poll_event())
            .find_map(|e| match e {
                ServerEvent::Finished { report, .. } => Some(report),
                _ => None,
            })
            .expect("finished");
        assert!(finished.interrupted);
        assert_eq!(
            finished.stats.expected, 4,
            "everything up to the highest sequence seen"
        );
        assert_eq!(finished.stats.lost, 1);
        assert_eq!(srv.active_sessions(), 0);
    }

    /// A wall-clock step of an hour (either way) in the middle of a test: the missing sequence
    /// is declared lost exactly Tmax of monotonic time after it was overtaken, not an hour
    /// early or late. The step shows in the one-way delays, where it belongs.
    #[test]
    fn a_wall_clock_step_neither_hastens_nor_delays_loss() {
        const HOUR: Duration = Duration::from_secs(3600);
        for step_forward in [true, false] {
            let mut clock = ManualClock::new(1_800_000_000_000_000_000);
            let peer: SocketAddr = PEER.parse().unwrap();
            let mut srv = ReceiverServer::new(ServerConfig {
                record_loss_ranges: true,
                ..server(1).cfg
            });
            let mut ctl = SenderControl::new(6, params(), clock.now());
            pump(&clock, &mut ctl, &mut srv);
            let mut echo = [0u8; wire::DATA_HEADER_LEN];
            let mut buf = [0u8; 100];
            // The receiver's wall clock steps by an hour after sequence 64 overtook 5, before
            // Tmax has passed.
            let mut wall_step = 0i64;
            let mut overtaken = None;
            for seq in (0..100u64).filter(|&s| s != 5) {
                clock.advance(Duration::from_millis(1));
                if seq == 80 {
                    let hour = HOUR.as_nanos() as i64;
                    wall_step = if step_forward { hour } else { -hour };
                }
                DataHeader {
                    session_id: 6,
                    seq,
                    send_ns: clock.wall_ns() - 20_000,
                }
                .write(Kind::Data, &mut buf);
                let wall = clock.wall_ns().wrapping_add_signed(wall_step);
                srv.handle_datagram(clock.now(), wall, peer, &buf, &mut echo);
                if seq == 64 {
                    overtaken = Some(clock.now());
                }
            }
            let declared_at = overtaken.unwrap() + params().tmax;
            let lost_ranges = |srv: &mut ReceiverServer| {
                std::iter::from_fn(|| srv.poll_event())
                    .filter_map(|e| match e {
                        ServerEvent::Lost { ranges, .. } => Some(ranges),
                        _ => None,
                    })
                    .flatten()
                    .collect::<Vec<_>>()
            };
            while clock.now() + Duration::from_millis(1) < declared_at {
                clock.advance(Duration::from_millis(1));
                srv.handle_timeout(clock.now());
                assert!(
                    lost_ranges(&mut srv).is_empty(),
                    "declared early (step forward {step_forward})"
                );
            }
            clock.advance_to(declared_at);
            srv.handle_timeout(clock.now());
            assert_eq!(
                lost_ranges(&mut srv),
                vec![5..=5],
                "declared at Tmax (step forward {step_forward})"
            );
        }
    }

    #[test]
    fn datagrams_of_unknown_sessions_or_other_peers_are_foreign() {
        let clock = ManualClock::new(0);
        let mut srv = server(1);
        let mut ctl = SenderControl::new(5, params(), clock.now());
        pump(&clock, &mut ctl, &mut srv);
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        let mut buf = [0u8; 100];
        DataHeader {
            session_id: 99,
            seq: 0,
            send_ns: 0,
        }
        .write(Kind::Data, &mut buf);
        let other: SocketAddr = "192.0.2.10:1".parse().unwrap();
        srv.handle_datagram(clock.now(), 0, other, &buf, &mut echo);
        srv.handle_datagram(clock.now(), 0, other, b"GET / HTTP/1.1", &mut echo);
        DataHeader {
            session_id: 5,
            seq: 0,
            send_ns: 0,
        }
        .write(Kind::Data, &mut buf);
        // Right session id, wrong peer address: not counted into the test.
        assert!(!srv.handle_datagram(clock.now(), 0, other, &buf, &mut echo));
        assert_eq!(srv.foreign_datagrams(), 3);
    }

    fn rdata(session_id: u32, pn: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 200];
        wire::RDataFrame {
            session_id,
            packet_number: pn,
            message_id: pn,
            transmission: 1,
            first_send_ns: 1,
            send_ns: 1,
            skip_below: 0,
            acked_below: 0,
        }
        .write(&mut buf);
        buf
    }

    /// A reliable test: the peer's RData is acknowledged to the peer; a stranger's RData
    /// (right session id), a forged Ack, or RData for a plain test are foreign: counted, never
    /// answered, and the test's figures do not move.
    #[test]
    fn acks_go_only_to_the_validated_peer_and_forgeries_are_counted() {
        let clock = ManualClock::new(0);
        let mut srv = server(2);
        let reliable = TestParams {
            payload_size: 200,
            echo: false,
            reliable: Some(HelloReliable::default()),
            ..params()
        };
        let mut ctl = SenderControl::new(5, reliable, clock.now());
        pump(&clock, &mut ctl, &mut srv);
        let mut plain_ctl = SenderControl::new(6, params(), clock.now());
        pump(&clock, &mut plain_ctl, &mut srv);
        assert_eq!(srv.active_sessions(), 2);
        assert!(srv.has_reliable_session());
        let peer: SocketAddr = PEER.parse().unwrap();
        let stranger: SocketAddr = "192.0.2.10:1".parse().unwrap();
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        // Two RData from the peer: ACK policy answers (every second datagram), to the peer.
        for pn in 0..2 {
            srv.handle_datagram(clock.now(), 5, peer, &rdata(5, pn), &mut echo);
        }
        let acks: Vec<(SocketAddr, Vec<u8>)> = std::iter::from_fn(|| srv.poll_transmit()).collect();
        assert!(!acks.is_empty(), "the peer's RData is acknowledged");
        for (dst, bytes) in &acks {
            assert_eq!(*dst, peer);
            let ack = wire::AckFrame::decode(bytes).expect("an Ack");
            assert_eq!((ack.session_id, ack.largest), (5, 1));
            assert!(
                bytes.len() < 200,
                "an Ack is smaller than the RData it answers"
            );
        }
        let foreign = srv.foreign_datagrams();
        // The same RData from a stranger, a forged Ack, and RData for the plain test.
        srv.handle_datagram(clock.now(), 5, stranger, &rdata(5, 2), &mut echo);
        srv.handle_datagram(clock.now(), 5, stranger, &rdata(5, 3), &mut echo);
        let mut forged = Vec::new();
        wire::AckFrame {
            session_id: 5,
            largest: 1_000,
            ack_delay_ns: 0,
            delivered_below: 1_000,
            ranges: crate::arq::AckRanges::default(),
        }
        .encode(&mut forged);
        srv.handle_datagram(clock.now(), 5, stranger, &forged, &mut echo);
        srv.handle_datagram(clock.now(), 5, peer, &rdata(6, 0), &mut echo);
        assert_eq!(srv.foreign_datagrams(), foreign + 4);
        assert_eq!(srv.poll_transmit(), None, "nothing answers a forgery");
        let s = srv.sessions.get(&5).unwrap();
        let stats = s.arq.as_ref().unwrap().stats();
        assert_eq!(
            stats.data_datagrams, 2,
            "the stranger's RData never counted"
        );
        assert_eq!(stats.delivered, 2);
    }

    #[test]
    fn a_reliable_test_is_sized_under_the_memory_budget() {
        let clock = ManualClock::new(0);
        let big = TestParams {
            payload_size: 200,
            echo: false,
            reliable: Some(HelloReliable {
                window: crate::config::MAX_RELIABLE_WINDOW,
                ..HelloReliable::default()
            }),
            ..params()
        };
        let cfg = arq_receiver_config(&big, &big.reliable.unwrap());
        assert_eq!(cfg.recv_window, crate::config::MAX_RELIABLE_WINDOW);
        let arq_bytes = arq_receiver_memory(&cfg);
        assert!(
            arq_bytes
                >= crate::arq::RECEIVER_BYTES_PER_WINDOW_MESSAGE
                    * u64::from(crate::config::MAX_RELIABLE_WINDOW)
        );
        let stats_bytes = ReceiverStats::memory_for(big.window_bits()) as u64;
        // A budget that holds the statistics but not the reorder buffer refuses the test.
        let mut srv = ReceiverServer::new(ServerConfig {
            max_memory: stats_bytes + arq_bytes - 1,
            ..ServerConfig::default()
        });
        let mut ctl = SenderControl::new(5, big, clock.now());
        pump(&clock, &mut ctl, &mut srv);
        assert_eq!(srv.active_sessions(), 0);
        assert_eq!(srv.refused(), 1);
        // One byte more and it fits, and the test holds what it was sized for.
        let mut srv = ReceiverServer::new(ServerConfig {
            max_memory: stats_bytes + arq_bytes,
            ..ServerConfig::default()
        });
        let mut ctl = SenderControl::new(5, big, clock.now());
        pump(&clock, &mut ctl, &mut srv);
        assert_eq!(srv.active_sessions(), 1);
        assert_eq!(srv.memory_in_use(), stats_bytes + arq_bytes);
        let held = srv.sessions[&5].arq.as_ref().unwrap().state_bytes() as u64;
        assert!(held <= arq_bytes, "{held} > {arq_bytes}");
    }
}
