//! What the user typed: clap derive types for `udplab recv|send|loopback|proxy`.
//!
//! Values are parsed with the unit parsers (so `--rate 1.5G` and `--duration 500ms` fail with a
//! one-line message and exit code 2), but cross-field rules live in `config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::IpPrefix;
use crate::impair::ImpairSpec;
use crate::net::multicast::Iface;
use crate::pacing::Pattern;
use crate::units;

const EXAMPLES: &str = "\
Examples:
  udplab loopback                                   5 s test over 127.0.0.1, full report
  udplab recv --bind 0.0.0.0:5210                   serve tests one after another
  udplab send 192.0.2.7:5210 --rate 100M --size 1400 --duration 30s
  udplab send 192.0.2.7 --pps 50000 --size 64 --count 1M --echo --csv runs.csv
  udplab loopback --count 200000 --pps 50000 --impair loss=5%,seed=1
  udplab proxy --listen 127.0.0.1:6000 --to 127.0.0.1:5210 --impair loss=1%,delay=20ms
  udplab recv --join 239.1.2.3 --bind 0.0.0.0:5210  join a group; each receiver reports its own
  udplab send 239.1.2.3:5210 --ttl 4 --iface eth0   send to a group (announced, never answered)
  udplab loopback --count 10k --label commit=$GITHUB_SHA --label host=ci --json run.json
  udplab send 192.0.2.7 --rate 50M --duration 20s --omit 2s   the first 2 s are warm-up
  udplab suite ci/udp.toml --junit report.xml --json suite.json --csv suite.csv
  udplab suite ci/udp.toml --baseline main.json --max-regression loss=+0.1pp,latency_p99=+20%
  udplab compare main.json pr.json                 side by side; exit 1 on a regression
  udplab loopback --reliable --impair loss=20%,seed=3 --count 100000
  udplab send 192.0.2.7:5210 --reliable deadline=4rtt --pps 1000 --size 1200

Thresholds: percentages need a % sign (--max-loss 0.5% is 5 in 1000; a bare 0.5 is refused).
A threshold passes only when it was measured: a run that sent nothing, whose receiver results
never came back, or that has no samples for it (e.g. --max-rtt-p99 without --echo) is
incomplete, never a pass. The verdict is in the JSON (`thresholds`, `verdict`) and the CSV
(`verdict` column).

Exit codes:
  0    ran; every threshold given was measured and met (or none was given)
  1    ran, and a measured value exceeded its threshold (also when others were incomplete)
  2    usage or setup error (bad value, unwritable output file, port in use, no receiver
       answering), or a report file that failed to be written at the end (wins over the
       others; the remaining files and the summary are still written)
  3    incomplete: a threshold could not be judged (nothing sent, the receiver's results never
       came back, no samples); no threshold failed
  130  interrupted (what was measured is still reported and written)";

/// The impairment syntax, shown by `udplab proxy --help`.
pub const IMPAIR_SPEC_HELP: &str = "\
Impairment SPEC: a comma list, applied in this order: loss, dup, rate, delay/jitter, reorder.
  loss=1%                     Bernoulli loss
  loss=ge:p=0.5%,r=20%,h=0%,k=100%
                              Gilbert-Elliott: p = P(good->bad), r = P(bad->good) per datagram;
                              k = delivery probability in the good state, h = in the bad state
                              (loss 1-k in good, 1-h in bad). p and r alone: k=100%, h=0%.
  dup=1%                      emit an extra copy right after the original
  rate=10M,queue=64K          token-bucket bottleneck (bit/s) with a tail-drop queue (bytes)
  delay=20ms                  constant extra one-way delay
  jitter=5ms[:uniform|:normal] uniform +-5ms (default) or normal with sd 5ms, clamped at 0
  reorder=2%[:N]              hold a datagram back behind the next N (default 1)
  reorder-hold=100ms          longest a held datagram waits when fewer than N follow
  seed=42                     the RNG seed: the same seed gives the same fates
delay, jitter and reorder-hold are at most 60s each (a larger value is refused).
Example: udplab proxy --listen 127.0.0.1:6000 --to 127.0.0.1:5210 --impair loss=1%,delay=20ms,jitter=2ms,seed=7";

#[derive(Debug, Parser)]
#[command(
    name = "udplab",
    version,
    about = "UDP reliability and packet-loss test harness",
    long_about = "UDP reliability and packet-loss test harness.\n\n\
        A sender and a receiver exchange sequenced datagrams and measure loss (RFC 7680), loss \
        periods (RFC 3357), duplicates, reordering (RFC 4737), jitter (RFC 3550), IPDV (RFC 3393), \
        one-way latency and RTT. The receiver's results come back to the sender, so one command \
        shows both sides.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Listen for tests and measure what arrives (prints its address first).
    Recv(RecvArgs),
    /// Send a test to a running `udplab recv` and print both sides' results.
    Send(SendCmd),
    /// Receiver and sender in one process over loopback: a complete test with no setup.
    Loopback(LoopbackCmd),
    /// Relay UDP between two endpoints, impairing each direction (any UDP traffic).
    ///
    /// Limits: one thread serves every client. Each client (source address) holds one socket
    /// toward the target while it is active: at most --max-clients at once (default 256),
    /// dropped after --client-idle without a datagram either way (default 60s). A new client
    /// beyond the limit, or when no file descriptor is left, is refused (its datagrams are
    /// dropped) and counted (clients_refused), and is served once others expire. A udplab
    /// sender is silent for its --tmax between its Fin and its result request: keep
    /// --client-idle above it, or the request leaves from a new address.
    Proxy(ProxyArgs),
    /// Draw a run's JSON report as an SVG chart, or a suite's scenarios (against a baseline).
    Plot(PlotArgs),
    /// Print a shell completion script to stdout (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  udplab completions bash > /etc/bash_completion.d/udplab\n  udplab completions zsh > \"${fpath[1]}/_udplab\"\n  udplab completions fish > ~/.config/fish/completions/udplab.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout.
    #[command(after_help = "Example:\n  udplab man > udplab.1 && man ./udplab.1")]
    Man,
    /// Run the named scenarios of a suite file (TOML) one after another, each a loopback test
    /// or a `send` with any of their options, and judge each against its thresholds (and a
    /// baseline): JUnit, JSON and CSV reports for CI.
    Suite(SuiteArgs),
    /// Compare two runs or two suites (their JSON reports) metric by metric: a side-by-side
    /// table, exit 1 when B regressed beyond the tolerances.
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  udplab loopback --impair loss=1%,seed=7 --json run.json --loss-log loss.csv\n  udplab plot run.json -o run.svg --loss-log loss.csv\n  udplab plot pr.json --baseline main.json -o diff.svg\n  udplab plot suite.json --baseline main-suite.json -o diff.svg\n\n\
    A run plot shows the one-way latency by percentile (x: 1/(1 - p) on a log scale, labelled\n\
    0%, 90%, 99%, 99.9% ...), the payload rate sent and received, the lost datagrams and the\n\
    RFC 3550 jitter per interval, and the lost sequence ranges. A suite, or --baseline: per\n\
    scenario loss, latency p99, jitter and received rate (median over the repeats, whiskers\n\
    min..max), baseline and current side by side."
)]
pub struct PlotArgs {
    /// The JSON report to draw: a run (`send`/`loopback --json FILE`) or a suite (`suite --json
    /// FILE`, drawn as its scenarios' key metrics).
    pub input: PathBuf,
    /// An earlier run or suite JSON to compare with: draws each scenario's key metrics (a run
    /// is one scenario), baseline beside current, instead of the run's details.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Where the SVG goes, or `-` for stdout.
    #[arg(long, short = 'o', default_value = "-", value_name = "FILE|-")]
    pub output: PathBuf,
    /// Which flow of a `--flows N` report to draw (counted from 0).
    #[arg(long, default_value = "0", value_parser = parse_whole)]
    pub flow: usize,
    /// The run's `--loss-log` CSV: its lost sequence ranges draw the loss pattern (the JSON
    /// report does not repeat them).
    #[arg(long, value_name = "FILE")]
    pub loss_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// Writes the completion script of `shell` for the whole command line.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "udplab", out);
}

/// Writes the manual page (roff): udplab(1), then each subcommand's description and options
/// (clap_mangen's page alone lists the subcommands without their options).
pub fn write_man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let command = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands() {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        writeln!(out, ".SH \"UDPLAB {}\"", sub.get_name().to_uppercase())?;
        writeln!(out, "{}", roff_escape(&about))?;
        clap_mangen::Man::new(sub.clone()).render_options_section(out)?;
    }
    Ok(())
}

/// Text safe on a roff line: a leading dot or quote would read as a request, a backslash as
/// an escape.
fn roff_escape(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  udplab recv\n  udplab recv --bind 127.0.0.1:0 --once --csv recv.csv\n  udplab recv --bind [::]:5210 --rcvbuf 4M\n  udplab recv --join 239.1.2.3 --bind 0.0.0.0:5210 --iface eth0\n  udplab recv --join 232.1.2.3 --source 192.0.2.7 --bind 0.0.0.0:5210 --once --csv member.csv\n  udplab recv --join ff3e::8000:1 --source 2001:db8::7 --iface eth0 --bind [::]:5210"
)]
pub struct RecvArgs {
    /// Address to listen on; port 0 picks a free port (printed as the first stdout line).
    /// The default `[::]` is dual-stack: IPv4 and IPv6 senders on one socket (IPv4 peers shown
    /// as IPv4), like `iperf3 -s`; on a host without IPv6 it listens on 0.0.0.0 instead.
    #[arg(long, default_value = "[::]:5210")]
    pub bind: String,
    /// Requested SO_RCVBUF, e.g. 4M (binary units). Default: the kernel's.
    #[arg(long, value_parser = parse_size)]
    pub rcvbuf: Option<u64>,
    /// Requested SO_SNDBUF (echo replies and control).
    #[arg(long, value_parser = parse_size)]
    pub sndbuf: Option<u64>,
    /// Use SO_RCVBUFFORCE/SO_SNDBUFFORCE (root) to go beyond net.core.rmem_max/wmem_max.
    #[arg(long)]
    pub force_buf: bool,
    /// Exit after one test instead of serving tests one after another.
    #[arg(long)]
    pub once: bool,
    /// How many tests may run at once (parallel flows count one each).
    #[arg(long, default_value = "16", value_parser = parse_whole)]
    pub max_sessions: usize,
    /// Memory budget of all running tests together (binary units): a test whose duplicate
    /// window (32 bytes per 64 datagrams of rate × Tmax) does not fit in what is left is
    /// refused with a reason the sender prints.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub max_memory: u64,
    /// Use the user-space clock instead of kernel receive timestamps.
    #[arg(long)]
    pub no_kernel_timestamps: bool,
    /// Let the kernel coalesce datagrams (UDP GRO), split again by udplab: far fewer wakeups at
    /// millions of datagrams/s. Caveat: the kernel then drops a full coalesced buffer as one
    /// event, so `rcvbuf_drops` becomes a lower bound (loss itself stays exact).
    #[arg(long)]
    pub gro: bool,
    /// Busy-poll the socket while datagrams flow instead of blocking: no wake-up latency for an
    /// idle CPU, at the cost of a fully busy core (a bad neighbour for a sender or proxy on the
    /// same machine).
    #[arg(long)]
    pub busy_poll: bool,
    /// Pin the receiving thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Accept only datagrams that carry this shared key's HMAC tag, and tag every reply: the key
    /// is read from FILE, or `-` for standard input (at least 16 bytes; a trailing line end is
    /// not part of it). Without --key, the environment variable UDPLAB_KEY holds the key when
    /// set. Unauthenticated datagrams are counted (`unauthenticated`) and never answered.
    #[arg(long, value_name = "FILE|-")]
    pub key: Option<PathBuf>,
    /// Accept datagrams only from this address prefix (CIDR, e.g. 10.0.0.0/8, 2001:db8::/32, or
    /// one address); repeat for several. IPv4 senders on the dual-stack socket match IPv4
    /// prefixes. Others are counted (`refused_by_allow`) and never answered: their sender sees
    /// no receiver at all.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<IpPrefix>,
    /// Join this multicast group (IPv4 or IPv6) and measure the tests sent to it on --bind's
    /// port. A group member never sends anything: it starts a test from the sender's
    /// announcement, measures each sender on its own (at most --max-sessions senders, the
    /// others' announcements counted), and reports Tmax after the sender's Fin, or Tmax + 1 s
    /// after the sender went silent (it announces itself once a second while it sends).
    /// Example: udplab recv --join 239.1.2.3 --bind 0.0.0.0:5210
    #[arg(long, value_name = "GROUP")]
    pub join: Option<std::net::IpAddr>,
    /// With --join: source-specific membership (SSM): only this sender's datagrams are
    /// delivered and measured. Example: udplab recv --join 232.1.2.3 --source 192.0.2.7
    #[arg(long, value_name = "S", requires = "join")]
    pub source: Option<std::net::IpAddr>,
    /// With --join: the interface to join on, by name, index or (IPv4) address; default: the
    /// one the routing table picks. Example: udplab recv --join ff15::1 --iface eth0
    #[arg(long, value_name = "NAME|ADDR", requires = "join", value_parser = Iface::parse)]
    pub iface: Option<Iface>,
    /// Most payload bit rate (decimal SI, like --rate) one reverse test (`send -R`) may ask this
    /// receiver to send; a faster, unpaced or longer-than-300 s request is refused with a
    /// reason the client prints; 0 refuses reverse tests. The data goes only to the
    /// client's validated address, and stops when the client goes silent for 10 s.
    /// Example: udplab recv --max-reverse-rate 1G
    #[arg(long, default_value = "100M", value_name = "RATE", value_parser = parse_reverse_rate)]
    pub max_reverse_rate: u64,
    /// Mark this receiver's echoes and replies with a DSCP (IP_TOS / IPV6_TCLASS): a name (EF,
    /// AF11..AF43, CS0..CS7, VA) or a number 0..=63. Example: udplab recv --dscp EF
    #[arg(long, value_name = "NAME|N", conflicts_with = "tos", value_parser = parse_dscp)]
    pub dscp: Option<u8>,
    /// Set the whole TOS / traffic-class byte (DSCP and ECN) of this receiver's replies,
    /// 0..=255 or hex. Example: udplab recv --tos 0xb8
    #[arg(long, value_name = "N", value_parser = parse_tos)]
    pub tos: Option<u8>,
    #[command(flatten)]
    pub reports: ReportArgs,
}

fn parse_reverse_rate(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    units::parse_rate_bps(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct SendCmd {
    /// Receiver address: HOST:PORT, [IPv6]:PORT, or HOST (port 5210).
    pub target: String,
    /// Source address (and port) to send from: ADDR or ADDR:PORT, [IPv6]:PORT (multi-homed hosts,
    /// firewall pinholes). It must be an address of this host, of the target's family.
    /// Example: udplab send 192.0.2.7 --bind 192.0.2.1:6000
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub bind: Option<String>,
    #[command(flatten)]
    pub opts: SendArgs,
}

#[derive(Debug, Args)]
pub struct LoopbackCmd {
    /// Use ::1 instead of 127.0.0.1.
    #[arg(long)]
    pub ipv6: bool,
    /// Use the user-space clock instead of kernel receive timestamps on the receiver.
    #[arg(long)]
    pub no_kernel_timestamps: bool,
    /// Receiver uses UDP GRO (see `udplab recv --help`).
    #[arg(long)]
    pub gro: bool,
    #[command(flatten)]
    pub opts: SendArgs,
}

/// Options shared by `send` and `loopback`.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// Target payload bit rate (decimal SI: 100M, 1.5G), or `max` for unpaced.
    /// Counts UDP payload bits, like iperf's -b. Default 10M.
    #[arg(long, short = 'b', conflicts_with = "pps", value_parser = parse_rate_arg, allow_hyphen_values = true)]
    pub rate: Option<RateArg>,
    /// Target datagrams per second instead of a bit rate; fractions allowed (0.5 = one every
    /// 2 s, resolution 0.001).
    #[arg(long, value_parser = parse_pps, allow_hyphen_values = true)]
    pub pps: Option<f64>,
    /// UDP payload length in bytes, udplab's 24-byte header included (24..=65507).
    #[arg(long, short = 'l', default_value = "1200", value_parser = parse_size, allow_hyphen_values = true)]
    pub size: u64,
    /// Test length, e.g. 10s, 500ms (default 10s for send, 5s for loopback unless --count).
    #[arg(long, short = 't', value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Number of datagrams to send (with --duration too, whichever ends first).
    #[arg(long, short = 'n', value_parser = parse_count, allow_hyphen_values = true)]
    pub count: Option<u64>,
    /// Requested SO_SNDBUF of the sending socket, e.g. 4M.
    #[arg(long, value_parser = parse_size)]
    pub sndbuf: Option<u64>,
    /// Requested SO_RCVBUF (of the sender's socket; for loopback also of the receiver).
    #[arg(long, value_parser = parse_size)]
    pub rcvbuf: Option<u64>,
    /// Use SO_RCVBUFFORCE/SO_SNDBUFFORCE (root) beyond net.core.{r,w}mem_max.
    #[arg(long)]
    pub force_buf: bool,
    /// Departure pattern: cbr, poisson, or burst=N (N back to back at the same mean rate).
    #[arg(long, default_value = "cbr")]
    pub pattern: Pattern,
    /// Interval between live report lines; 0 for none (like `proxy --interval 0`; the interval
    /// rows of --intervals-csv and the JSON then cover 1 s each).
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Ask the receiver to echo a 24-byte timestamp reply per datagram: RTT percentiles.
    #[arg(long)]
    pub echo: bool,
    /// Waiting time for late datagrams (RFC 7680 Tmax): later arrivals count as lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub tmax: Duration,
    /// Seeded impairment applied before the socket, e.g. loss=1%,delay=5ms,seed=7
    /// (see `udplab proxy --help` for the full syntax).
    #[arg(long)]
    pub impair: Option<ImpairSpec>,
    /// Write each impaired datagram's fate (drop, qdrop, dup, hold) to FILE as CSV.
    #[arg(long)]
    pub impair_log: Option<PathBuf>,
    /// How datagrams are handed to the kernel: auto, plain, mmsg (sendmmsg) or gso (UDP GSO).
    /// auto uses GSO only when the destination is this host (a loopback address or one of its
    /// own interfaces' addresses), and sendmmsg toward any other host: a GSO batch can be
    /// forwarded as one packet (veth, bridges, containers, virtual NICs), so one drop on the way
    /// loses the whole batch and fakes burst loss. An explicit gso toward another host is
    /// warned about in the report. With --reliable only plain (auto means plain there): mmsg
    /// and gso are refused. Example: `--send-mode mmsg`.
    #[arg(long, default_value = "auto")]
    pub send_mode: String,
    /// Most datagrams per syscall when sending back to back [default: 32]. Not with
    /// --reliable, which sends one datagram per send(). Example: `--batch 8`.
    #[arg(long, value_parser = parse_whole, allow_hyphen_values = true)]
    pub batch: Option<usize>,
    /// Pin the sending thread (and for loopback the receiving thread) to these CPUs, e.g. 0,1.
    /// With --flows, flow i's sending thread goes to the i-th CPU of the list, round robin.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Parallel flows, each with its own socket, session and sending thread; --rate is per
    /// flow (like iperf3 -P). Prints one line per flow and the total; no interval lines.
    /// With --reliable, a second table gives each flow's and the total's delivery figures
    /// (example: `udplab loopback --reliable --flows 4 --impair loss=5%`).
    #[arg(long, short = 'P', default_value = "1", value_parser = parse_whole, allow_hyphen_values = true)]
    pub flows: usize,
    /// Seed for the Poisson schedule (default: random): a whole number
    /// 0..=18446744073709551615. The session id is random for every run whatever the seed.
    #[arg(long, value_parser = parse_seed, allow_hyphen_values = true)]
    pub seed: Option<u64>,
    /// Tag every datagram with this shared key (HMAC-SHA256, 16 bytes) and accept only replies
    /// that carry it; the receiver must use the same key. Read from FILE, or `-` for standard
    /// input (at least 16 bytes; a trailing line end is not part of it). Without --key, the
    /// environment variable UDPLAB_KEY holds the key when set. Data datagrams keep their
    /// --size (the tag takes their last 16 bytes, so --size must be at least 40).
    #[arg(long, value_name = "FILE|-")]
    pub key: Option<PathBuf>,
    /// Reverse test, like iperf3 -R: this side opens the test (so NATs and firewalls see a flow
    /// it started) and measures, the receiver sends the data with these --rate/--pps, --size,
    /// --count/--duration and --pattern. Both sides' results are shown, the receiver's as the
    /// sender block (`direction: reverse`). Needs a paced rate within the receiver's
    /// --max-reverse-rate (default 100M); no --echo, --impair or --flows.
    /// Example: udplab send 192.0.2.7 -R --rate 20M --duration 10s
    #[arg(long, short = 'R')]
    pub reverse: bool,
    /// Bidirectional test, like iperf3 --bidir: both directions at once through one handshake.
    /// This side sends its data as in a forward test and at the same time measures the data
    /// the receiver sends back with the same --rate/--pps, --size, --count/--duration and
    /// --pattern. Each direction has its own counts and results: two text blocks (forward,
    /// reverse), two JSON reports and two CSV rows, each with its `direction`. Needs a paced
    /// rate within the receiver's --max-reverse-rate (default 100M); no --echo, --impair or
    /// --flows. Example: udplab send 192.0.2.7 --bidir --rate 20M --duration 10s
    #[arg(long, conflicts_with = "reverse")]
    pub bidir: bool,
    /// Mark every datagram with this DSCP (IP_TOS / IPV6_TCLASS): a name (EF, AF11..AF43,
    /// CS0..CS7, VA) or a number 0..=63. The receiver reports how many arrived with it and how
    /// many were re-marked on the way. Example: udplab send 192.0.2.7 --dscp EF
    #[arg(long, value_name = "NAME|N", conflicts_with = "tos", value_parser = parse_dscp)]
    pub dscp: Option<u8>,
    /// Set the whole TOS / traffic-class byte (DSCP and ECN bits), 0..=255 or hex.
    /// Example: udplab send 192.0.2.7 --tos 0xb8
    #[arg(long, value_name = "N", value_parser = parse_tos)]
    pub tos: Option<u8>,
    /// IPv4 TTL / IPv6 hop limit of every datagram, 1..=255 (also the multicast TTL when the
    /// target is a group). The receiver reports the TTLs it saw. Example: udplab send 192.0.2.7 --ttl 3
    #[arg(long, value_name = "N", value_parser = parse_ttl)]
    pub ttl: Option<u8>,
    /// When the target is a multicast group: the interface to send on (IP_MULTICAST_IF /
    /// IPV6_MULTICAST_IF), by name, index or (IPv4) address. Example: udplab send 239.1.2.3:5210 --iface eth0
    #[arg(long, value_name = "NAME|ADDR", value_parser = Iface::parse)]
    pub iface: Option<Iface>,
    /// Set Don't Fragment (path MTU discovery, IP_PMTUDISC_DO / IPV6_DONTFRAG): datagrams
    /// larger than the path MTU fail with EMSGSIZE, counted and reported with the MTU the
    /// kernel learned. Example: udplab send 192.0.2.7 --df --size 1472
    #[arg(long)]
    pub df: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    #[command(flatten)]
    pub reports: ReportArgs,
    /// Write the one-way latency (tag `latency`; from `loopback`, whose receiver is in this
    /// process) and RTT (tag `rtt`, with --echo) histograms of every interval to FILE in
    /// HdrHistogram's interval-log format, for HistogramLogAnalyzer or hdr-plot. Values in ns.
    /// Example: udplab loopback --echo --hdr-log run.hlog
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Tag the report with KEY=VALUE (repeat for several), e.g. --label commit=3f2a9c1: a
    /// `labels` object in the JSON and a `labels` column (`k=v;k2=v2`) in the CSV.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Warm-up left out of the statistics on both sides (like iperf3 -O), e.g. --omit 1s: the
    /// datagrams the schedule sends in the first DUR are sent, but count in no loss, latency,
    /// jitter, reordering or RTT figure; the report says how many. Needs a fixed schedule
    /// (--pattern cbr or burst=N, paced).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub omit: Option<Duration>,
    #[command(flatten)]
    pub reliable: ReliableArgs,
}

/// `--reliable` and its tuning (send and loopback).
#[derive(Debug, Args, Clone, Default)]
pub struct ReliableArgs {
    /// Run the ACK/retransmit layer over the test and measure its cost: `ordered` (default:
    /// every message once, in order), `unordered` (once, as it arrives) or `deadline=DUR`
    /// (ordered; a message still missing DUR after its first send is given up and counted; DUR
    /// may be a multiple of the smoothed RTT, e.g. 4rtt). `--rate max` means window-limited
    /// bulk transfer. On `send`, --impair hits the data only: impair the ACKs with
    /// `udplab proxy --reverse-impair`. Put HOST before --reliable (or write --reliable=MODE).
    /// Examples: `udplab loopback --reliable --impair loss=5%`,
    /// `udplab send 192.0.2.7 --reliable deadline=10ms --pps 1000 --size 1200`.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "ordered", value_parser = parse_reliable)]
    pub reliable: Option<ReliableArg>,
    /// Retransmissions may exceed the paced rate by this share (with --reliable), e.g. 25%.
    /// Example: `--reliable --rexmit-budget 50%`.
    #[arg(long, value_parser = parse_percent, allow_hyphen_values = true, requires = "reliable")]
    pub rexmit_budget: Option<f64>,
    /// Messages in flight at most (the sender's window, with --reliable; it bounds both ends'
    /// memory and, with --rate max, the throughput). Example: `--reliable --window 2048`.
    #[arg(long, value_parser = parse_whole, allow_hyphen_values = true, requires = "reliable")]
    pub window: Option<usize>,
    /// Transmissions of one message before it is given up (with --reliable).
    /// Example: `--reliable --max-transmissions 20`.
    #[arg(long, value_parser = parse_whole, allow_hyphen_values = true, requires = "reliable")]
    pub max_transmissions: Option<usize>,
    /// Give the whole transfer up after this long without ACK progress (with --reliable).
    /// Example: `--reliable --give-up 5s`.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, requires = "reliable")]
    pub give_up: Option<Duration>,
    /// From this transmission of a message on (default 3), a retransmission goes out twice in
    /// a row when the copy pays: the loss so far × the messages one more round trip holds up
    /// (srtt / send interval when ordered, 1 when unordered) ≥ 1. 0 turns copies off.
    /// Example: `--reliable --repeat-from 0`.
    #[arg(long, value_name = "N", value_parser = parse_whole, allow_hyphen_values = true, requires = "reliable")]
    pub repeat_from: Option<usize>,
}

/// The delivery mode `--reliable` names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReliableArg {
    Ordered,
    Unordered,
    /// Given up this long after the first send.
    Deadline(Duration),
    /// Given up after this multiple of the smoothed RTT, × 1000.
    DeadlineRtt(u32),
}

fn parse_reliable(s: &str) -> Result<ReliableArg, String> {
    let t = s.trim().to_ascii_lowercase();
    let expected = || {
        format!(
            "invalid reliable mode \"{s}\": expected ordered, unordered or deadline=DUR (e.g. \
             deadline=10ms or deadline=4rtt); with `send`, put HOST before --reliable"
        )
    };
    match t.as_str() {
        "ordered" => return Ok(ReliableArg::Ordered),
        "unordered" => return Ok(ReliableArg::Unordered),
        _ => {}
    }
    let Some(dur) = t.strip_prefix("deadline=") else {
        return Err(expected());
    };
    if let Some(times) = dur.strip_suffix("rtt") {
        let times: f64 = times.trim().parse().map_err(|_| expected())?;
        if !times.is_finite() || times <= 0.0 || times > 1000.0 {
            return Err(format!(
                "deadline={dur}: the RTT multiple must be above 0 and at most 1000"
            ));
        }
        return Ok(ReliableArg::DeadlineRtt(
            (times * 1000.0).round().max(1.0) as u32
        ));
    }
    match units::parse_duration(dur) {
        Ok(d) if d.is_zero() => Err(format!("deadline={dur}: the deadline must be above 0")),
        Ok(d) => Ok(ReliableArg::Deadline(d)),
        Err(e) => Err(format!("deadline={dur}: {e}")),
    }
}

/// `--rate` is a bit rate or `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateArg {
    Bps(u64),
    Max,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ReportArgs {
    /// Append one summary row per role to this CSV file (header written when new).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Append one row per interval to this CSV file.
    #[arg(long)]
    pub intervals_csv: Option<PathBuf>,
    /// Write the whole run as JSON to FILE, or `-` for stdout (the text report then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the lost sequence ranges (receiver's view) to FILE as CSV, `run_id,first_seq,last_seq`
    /// (`send` asks the receiver to carry them back with its results).
    #[arg(long)]
    pub loss_log: Option<PathBuf>,
    /// No interval lines, only the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Stream each interval as it closes, one compact JSON line (NDJSON) per interval and role,
    /// to FILE, or `-` for stdout (the text report then goes to stderr).
    #[arg(long, value_name = "FILE|-")]
    pub intervals_json: Option<PathBuf>,
}

/// Limits that turn a run into a pass/fail check (exit code 1 when one is exceeded, 3 when one
/// could not be measured).
#[derive(Debug, Args, Clone, Default)]
pub struct ThresholdArgs {
    /// Fail (exit 1) when loss exceeds this percentage; the % sign is required, e.g. 0.1%.
    #[arg(long, value_parser = parse_percent, allow_hyphen_values = true)]
    pub max_loss: Option<f64>,
    /// Fail when more than N duplicates arrive.
    #[arg(long, value_parser = parse_count, allow_hyphen_values = true)]
    pub max_dup: Option<u64>,
    /// Fail when the reordered share of received datagrams exceeds this percentage, e.g. 1%.
    #[arg(long, value_parser = parse_percent, allow_hyphen_values = true)]
    pub max_reorder: Option<f64>,
    /// Fail when RFC 3550 jitter exceeds this, e.g. 2ms.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub max_jitter: Option<Duration>,
    /// Fail when one-way latency p99 exceeds this.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub max_latency_p99: Option<Duration>,
    /// Fail when RTT p99 (with --echo) exceeds this.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub max_rtt_p99: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(after_help = IMPAIR_SPEC_HELP)]
pub struct ProxyArgs {
    /// Address clients send to.
    #[arg(long)]
    pub listen: String,
    /// Address datagrams are relayed to.
    #[arg(long)]
    pub to: String,
    /// Impairment of client → target datagrams.
    #[arg(long)]
    pub impair: Option<ImpairSpec>,
    /// Impairment of target → client datagrams (default: none).
    #[arg(long)]
    pub reverse_impair: Option<ImpairSpec>,
    /// Interval between counter lines (0 for none).
    #[arg(long, default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requested SO_RCVBUF/SO_SNDBUF of the proxy's sockets.
    #[arg(long, value_parser = parse_size)]
    pub buffers: Option<u64>,
    /// Write the proxy's final counters as JSON to FILE (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Most clients (source addresses) relayed for at once; each holds one socket (one file
    /// descriptor). A new client beyond it is refused: its datagrams are dropped and counted
    /// (clients_refused) until others expire. So is a client for which no socket can be
    /// opened (`ulimit -n` reached).
    #[arg(long, default_value = "256", value_parser = parse_max_clients)]
    pub max_clients: usize,
    /// A client's relay state (its socket toward the target) is dropped after this long
    /// without a datagram in either direction, freeing its place for another client.
    #[arg(long, default_value = "60s", value_parser = parse_client_idle)]
    pub client_idle: Duration,
    /// Relay only udplab datagrams tagged with this shared key (the one sender and receiver
    /// use): anything else is counted (`unauthenticated`) and dropped before it can take a
    /// client's place. Without --key, the environment variable UDPLAB_KEY holds the key when
    /// set. Without a key the proxy relays any UDP traffic.
    #[arg(long, value_name = "FILE|-")]
    pub key: Option<PathBuf>,
}

/// `udplab suite FILE`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  udplab suite ci/udp.toml\n  udplab suite ci/udp.toml --junit report.xml --json suite.json --csv suite.csv\n  udplab suite ci/udp.toml --baseline main.json --max-regression loss=+0.1pp,latency_p99=+20%\n  udplab suite ci/udp.toml --label commit=3f2a9c1 --label host=ci\n\nThe suite file format is explained in ci/udp.toml (an example under version control).\n\nExit codes: 0 every scenario passed; 1 a threshold failed or a metric regressed against the\nbaseline; 2 usage error (bad suite file, unwritable report); 3 a threshold could not be\nmeasured or a scenario could not run (and none failed); 130 interrupted."
)]
pub struct SuiteArgs {
    /// The suite file (TOML): `[[scenario]]` tables, each with a `name` and `udplab loopback`
    /// or `udplab send` options as keys.
    pub file: PathBuf,
    /// Write a JUnit XML report to FILE: one testcase per scenario, one failure per failed
    /// threshold or regression; an incomplete measurement is an error, e.g. --junit report.xml.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the suite as JSON to FILE (every repeat's run report, the median and spread, the
    /// verdicts), e.g. --json suite.json.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write one row per scenario repeat to this CSV file, replacing it (the `--csv` summary
    /// columns of the sender row, then `scenario` and `repeat`), e.g. --csv suite.csv.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Compare each scenario with the same-named scenario of an earlier suite JSON (or a run
    /// JSON), e.g. --baseline main.json.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Tolerated change per metric against the baseline: absolute percentage points (pp, for
    /// loss and reorder), datagrams (duplicates=+5) or relative (%), e.g.
    /// loss=+0.1pp,latency_p99=+20%. Metrics: loss, reorder, duplicates, jitter, latency_p50,
    /// latency_p99, rtt_p50, rtt_p99, rate. Default: loss=+0.1pp,reorder=+0.1pp,duplicates=+0;
    /// the others are shown, and judged only when given here.
    #[arg(long, value_name = "METRIC=TOL,...", requires = "baseline")]
    pub max_regression: Option<String>,
    /// Tag every scenario's report with KEY=VALUE (repeat for several), e.g. --label host=ci.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
}

/// `udplab compare A B`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  udplab compare main.json pr.json\n  udplab compare main.json pr.json --max-regression loss=+0.5pp,latency_p99=+50%\n\nExit codes: 0 no regression beyond the tolerances; 1 a regression; 2 unreadable input."
)]
pub struct CompareArgs {
    /// The reference: a suite JSON (`udplab suite --json`) or a run JSON (`--json`).
    pub a: PathBuf,
    /// The one judged against it (same kind of document).
    pub b: PathBuf,
    /// Tolerated change per metric (see `udplab suite --help`), e.g. loss=+0.1pp,latency_p99=+20%.
    #[arg(long, value_name = "METRIC=TOL,...")]
    pub max_regression: Option<String>,
}

/// `KEY=VALUE` of `--label`: a non-empty key of letters, digits, `_`, `-`, `.`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\": expected KEY=VALUE, like commit=3f2a9c1"))?;
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "\"{key}\": a label key is letters, digits, '_', '-' or '.', like commit"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

fn parse_max_clients(s: &str) -> Result<usize, String> {
    match parse_whole(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn parse_client_idle(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        d => Ok(d),
    }
}

fn parse_dscp(s: &str) -> Result<u8, String> {
    crate::net::marking::parse_dscp(s)
}

fn parse_tos(s: &str) -> Result<u8, String> {
    crate::net::marking::parse_tos(s)
}

fn parse_ttl(s: &str) -> Result<u8, String> {
    crate::net::marking::parse_ttl(s)
}

fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size_bytes(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_count(s: &str) -> Result<u64, String> {
    units::parse_count(s).map_err(|e| e.to_string())
}

fn parse_percent(s: &str) -> Result<f64, String> {
    units::parse_percent(s).map_err(|e| e.to_string())
}

fn parse_rate_arg(s: &str) -> Result<RateArg, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(RateArg::Max);
    }
    units::parse_rate_bps(s)
        .map(RateArg::Bps)
        .map_err(|e| e.to_string())
}

fn parse_pps(s: &str) -> Result<f64, String> {
    let invalid = || {
        format!(
            "invalid packet rate \"{s}\": expected a number of datagrams per second above zero, \
             like 1000, 10k or 0.5"
        )
    };
    let v: f64 = match s.trim().parse::<f64>() {
        Ok(v) => v,
        // 10k, 1.5M: the count suffixes.
        Err(_) => units::parse_count(s).map_err(|_| invalid())? as f64,
    };
    if !v.is_finite() || v < 0.0 {
        return Err(invalid());
    }
    Ok(v)
}

/// A whole number option (`--seed`, `--flows`, `--batch`): one line naming what is expected
/// instead of Rust's "invalid digit found in string".
fn parse_whole_u64(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!(
            "\"{s}\" is not a whole number from 0 to {}, like 42",
            u64::MAX
        )
    })
}

fn parse_seed(s: &str) -> Result<u64, String> {
    parse_whole_u64(s)
}

fn parse_whole(s: &str) -> Result<usize, String> {
    let v = parse_whole_u64(s)?;
    usize::try_from(v).map_err(|_| format!("\"{s}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(args: &[&str]) -> String {
        let mut argv = vec!["udplab", "send", "127.0.0.1:5210"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(c) => panic!("{args:?} should be refused, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn negative_numbers_reach_the_value_parser() {
        // Not clap's "unexpected argument '-5'": the value's own message.
        let e = parse_err(&["--pps", "-5"]);
        assert!(e.contains("invalid packet rate \"-5\""), "{e}");
        assert!(e.contains("above zero"), "{e}");
        assert!(parse_err(&["--rate", "-5M"]).contains("negative"));
        assert!(parse_err(&["--count", "-3"]).contains("negative"));
        assert!(parse_err(&["--duration", "-1s"]).contains("negative"));
        assert!(parse_err(&["--max-loss", "-1%"]).contains("negative"));
        assert!(parse_err(&["--seed", "-1"]).contains("whole number"));
    }

    #[test]
    fn bad_values_get_one_line_naming_the_expected_form() {
        let e = parse_err(&["--seed", "abc"]);
        assert!(e.contains("--seed"), "{e}");
        assert!(e.contains("\"abc\" is not a whole number"), "{e}");
        assert!(!e.contains("invalid digit"), "{e}");
        let e = parse_err(&["--pps", "abc"]);
        assert!(!e.contains("whole number"), "fractions are allowed: {e}");
        assert!(e.contains("0.5"), "{e}");
        assert!(parse_err(&["--flows", "x"]).contains("whole number"));
        assert!(parse_err(&["--max-dup", "x"]).contains("invalid count"));
        let e = parse_err(&["--max-loss", "0.5"]);
        assert!(e.contains("write it with a percent sign, e.g. 0.5%"), "{e}");
        assert!(parse_err(&["--max-reorder", "1"]).contains("e.g. 1%"));
        assert!(parse_err(&["--rate", "0.5"]).contains("below 1 bit/s"));
    }

    #[test]
    fn reliable_modes_parse_with_their_deadlines() {
        assert_eq!(parse_reliable("ordered"), Ok(ReliableArg::Ordered));
        assert_eq!(parse_reliable("Unordered"), Ok(ReliableArg::Unordered));
        assert_eq!(
            parse_reliable("deadline=10ms"),
            Ok(ReliableArg::Deadline(Duration::from_millis(10)))
        );
        assert_eq!(
            parse_reliable("deadline=4rtt"),
            Ok(ReliableArg::DeadlineRtt(4000))
        );
        assert_eq!(
            parse_reliable("deadline=2.5rtt"),
            Ok(ReliableArg::DeadlineRtt(2500))
        );
        for bad in [
            "fast",
            "deadline=",
            "deadline=0ms",
            "deadline=-1rtt",
            "deadline=xrtt",
        ] {
            assert!(parse_reliable(bad).is_err(), "{bad}");
        }
        // A bare --reliable is ordered; the target may come first.
        let cli = Cli::try_parse_from(["udplab", "send", "127.0.0.1:9", "--reliable"]).unwrap();
        let Command::Send(cmd) = cli.command else {
            panic!("send")
        };
        assert_eq!(cmd.opts.reliable.reliable, Some(ReliableArg::Ordered));
        let e = parse_err(&["--window", "8"]);
        assert!(e.contains("--reliable"), "tuning needs --reliable: {e}");
        let e = parse_err(&["--reliable", "sometimes"]);
        assert!(e.contains("put HOST before --reliable"), "{e}");
    }

    #[test]
    fn fractional_packet_rates_parse() {
        assert_eq!(parse_pps("0.5"), Ok(0.5));
        assert_eq!(parse_pps("10k"), Ok(10_000.0));
        assert_eq!(parse_pps("1.5k"), Ok(1_500.0));
        assert!(parse_pps("inf").is_err());
        assert!(parse_pps("nan").is_err());
    }
}
