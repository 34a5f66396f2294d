//! The `--impair` spec: what the user types, validated into [`ImpairSpec`], and its canonical
//! text form (which always carries the seed, so a run can be reproduced from its report).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::units::{
    PPB_FULL, format_duration_ns, format_percent, format_rate_bps, format_size_bytes,
    parse_duration_ns, parse_percent, parse_rate_bps, parse_size_bytes,
};

/// Seed used when the spec does not give one.
pub const DEFAULT_SEED: u64 = 1;
/// Rate-limiter queue limit when `queue=` is not given: 64 KiB.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 * 1024;
/// Longest a reordered datagram waits for later ones when `reorder-hold=` is not given.
pub const DEFAULT_REORDER_HOLD: Duration = Duration::from_millis(100);

/// Longest `delay=`, `jitter=` and `reorder-hold=` accepted: far beyond any real path, and short
/// enough that a typo (`delay=1000000s`) is refused instead of holding the run for days.
pub const MAX_IMPAIR_DELAY: Duration = Duration::from_secs(60);

const EXAMPLE: &str = "loss=1%,delay=20ms,jitter=5ms,seed=42";
const GE_EXAMPLE: &str = "loss=ge:p=0.5%,r=20%,h=0%,k=100%";

/// Help for the Gilbert-Elliott loss model, shown by the CLI's `--help`.
pub const GE_HELP: &str = "loss=ge:p=P%,r=R%[,h=H%][,k=K%]  Gilbert-Elliott loss. Two states, Good \
and Bad; start in Good. For each datagram the state first moves (Good->Bad with probability p, \
Bad->Good with probability r), then the datagram is delivered with probability k in Good and h \
in Bad (it is lost with probability 1-k in Good, 1-h in Bad). Defaults k=100%, h=0%: the simple \
Gilbert model, where exactly the datagrams sent in Bad are lost. Mean loss = piG*(1-k) + \
piB*(1-h) with piB = p/(p+r), piG = 1-piB; with h=0%, k=100% the mean loss burst is 1/r \
datagrams. Example: loss=ge:p=0.5%,r=20% loses about 2.4% in bursts of 5 on average.";

/// Help for the whole `--impair` syntax, shown by the CLI's `--help`.
pub const IMPAIR_HELP: &str = "Comma list of key=value, each key at most once, any order \
(e.g. loss=1%,delay=20ms,jitter=5ms,seed=42; `none` = no impairment). Stages, applied in this \
order: loss=P% (Bernoulli) or loss=ge:p=..,r=..[,h=..,k=..] (Gilbert-Elliott); dup=P% (an extra \
copy right after the original); rate=10M (bit/s bottleneck, decimal k/M/G) with queue=64K (bytes \
held before tail drop, binary K/M, default 64K); delay=20ms (constant one-way delay); \
jitter=5ms[:uniform|:normal] (uniform: +-5ms, normal: standard deviation 5ms; never below 0; \
jitter alone reorders datagrams); reorder=P%[:N] (hold a datagram until N later ones, default 1, \
have been released, or at most reorder-hold=100ms); seed=N (default 1; same seed and traffic, \
same fates). delay, jitter and reorder-hold are at most 60s each.";

/// A loss probability or percentage, stored exactly as parts per billion (100 % = 10⁹).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Probability(u32);

impl Probability {
    pub const ZERO: Probability = Probability(0);
    pub const ONE: Probability = Probability(PPB_FULL);

    /// `ppb` parts per billion, at most 10⁹.
    pub fn from_ppb(ppb: u32) -> Option<Self> {
        (ppb <= PPB_FULL).then_some(Probability(ppb))
    }

    pub fn ppb(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(PPB_FULL)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// 1 − self.
    pub fn complement(self) -> Self {
        Probability(PPB_FULL - self.0)
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_percent(self.0))
    }
}

/// Which datagrams the loss stage drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LossModel {
    #[default]
    None,
    /// Each datagram lost independently with probability `p`.
    Bernoulli { p: Probability },
    /// Two-state Markov loss; see [`GE_HELP`] for the convention.
    GilbertElliott {
        /// Good → Bad transition probability.
        p: Probability,
        /// Bad → Good transition probability.
        r: Probability,
        /// Delivery probability in Bad.
        h: Probability,
        /// Delivery probability in Good.
        k: Probability,
    },
}

impl LossModel {
    /// Long-run fraction of datagrams lost.
    pub fn expected_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli { p } => p.as_f64(),
            LossModel::GilbertElliott { .. } => {
                let (pi_good, pi_bad, loss_good, loss_bad) = self.ge_stationary();
                pi_good * loss_good + pi_bad * loss_bad
            }
        }
    }

    /// Long-run mean length of a loss burst (maximal run of consecutive lost datagrams, RFC 3357
    /// loss period), or `None` when nothing or everything is lost.
    ///
    /// Mean burst = (fraction lost) / (fraction of datagrams that start a burst), and a burst
    /// starts at n when n is lost and n−1 was not: P(Lₙ) − P(Lₙ₋₁ ∧ Lₙ). For Bernoulli this is
    /// 1/(1−p); for Gilbert-Elliott with h = 0, k = 100 % it is 1/r.
    pub fn expected_mean_burst(&self) -> Option<f64> {
        let loss = self.expected_loss();
        let both_lost = match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli { p } => p.as_f64() * p.as_f64(),
            LossModel::GilbertElliott { p, r, .. } => {
                let (pi_good, pi_bad, loss_good, loss_bad) = self.ge_stationary();
                let (p, r) = (p.as_f64(), r.as_f64());
                // Σ π_s ℓ_s T(s→s') ℓ_s' over the two states.
                pi_good * loss_good * ((1.0 - p) * loss_good + p * loss_bad)
                    + pi_bad * loss_bad * (r * loss_good + (1.0 - r) * loss_bad)
            }
        };
        let burst_starts = loss - both_lost;
        (loss > 0.0 && burst_starts > 0.0).then(|| loss / burst_starts)
    }

    /// (πG, πB, loss in Good, loss in Bad) for the Gilbert-Elliott chain; (1, 0, p, p) otherwise.
    fn ge_stationary(&self) -> (f64, f64, f64, f64) {
        match *self {
            LossModel::GilbertElliott { p, r, h, k } => {
                let (p, r) = (p.as_f64(), r.as_f64());
                // p = r = 0: the chain never leaves Good, where it starts.
                let pi_bad = if p + r > 0.0 { p / (p + r) } else { 0.0 };
                (
                    1.0 - pi_bad,
                    pi_bad,
                    k.complement().as_f64(),
                    h.complement().as_f64(),
                )
            }
            _ => {
                let loss = self.expected_loss();
                (1.0, 0.0, loss, loss)
            }
        }
    }
}

/// How jitter is drawn around the constant delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JitterDist {
    /// delay + U(−j, +j), uniform over whole nanoseconds.
    #[default]
    Uniform,
    /// delay + N(0, j²): `j` is the standard deviation.
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jitter {
    pub amount: Duration,
    pub dist: JitterDist,
}

/// `reorder=P%:N` with `reorder-hold=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorder {
    /// Probability that a datagram is held back.
    pub p: Probability,
    /// How many later datagrams are released before the held one (reordering extent), ≥ 1.
    pub extent: u32,
    /// Longest a held datagram waits beyond its own release time when fewer than `extent`
    /// datagrams follow it.
    pub hold: Duration,
}

/// `rate=` bottleneck with its `queue=` limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub bits_per_sec: u64,
    /// Bytes accepted and not yet fully serialized beyond which arrivals are tail-dropped.
    pub queue_bytes: u64,
}

/// A validated impairment. Stages that do nothing hold their "off" value (`LossModel::None`,
/// zero, `None`), so equal behaviour means equal specs and `Display` round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpairSpec {
    pub loss: LossModel,
    /// Probability that a datagram gets an extra copy.
    pub dup: Probability,
    pub rate: Option<RateLimit>,
    /// Constant extra one-way delay.
    pub delay: Duration,
    pub jitter: Option<Jitter>,
    pub reorder: Option<Reorder>,
    pub seed: u64,
}

impl Default for ImpairSpec {
    fn default() -> Self {
        ImpairSpec {
            loss: LossModel::None,
            dup: Probability::ZERO,
            rate: None,
            delay: Duration::ZERO,
            jitter: None,
            reorder: None,
            seed: DEFAULT_SEED,
        }
    }
}

impl ImpairSpec {
    /// True when every datagram passes through unchanged and at once (the seed is irrelevant).
    pub fn is_noop(&self) -> bool {
        self.loss == LossModel::None
            && self.dup.is_zero()
            && self.rate.is_none()
            && self.delay.is_zero()
            && self.jitter.is_none_or(|j| j.amount.is_zero())
            && self.reorder.is_none_or(|r| r.p.is_zero())
    }
}

/// What is wrong with an `--impair` spec. Every message names the offending item and shows a
/// valid example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpairError {
    #[error(
        "empty item in impairment spec `{spec}` (stray comma?); example: {example}",
        example = EXAMPLE
    )]
    EmptyItem { spec: String },
    #[error("impairment item `{item}` is not key=value; example: {example}", example = EXAMPLE)]
    NotKeyValue { item: String },
    #[error(
        "unknown impairment key `{key}` in `{item}`; keys: loss, dup, rate, queue, delay, jitter, \
         reorder, reorder-hold, seed; example: {example}",
        example = EXAMPLE
    )]
    UnknownKey { key: String, item: String },
    #[error(
        "impairment key `{key}` given twice (second: `{item}`); give each key once; \
         example: {example}",
        example = EXAMPLE
    )]
    DuplicateKey { key: String, item: String },
    #[error("bad value in `{item}`: {reason}; example: {example}")]
    BadValue {
        item: String,
        reason: String,
        example: &'static str,
    },
    #[error(
        "`{item}` is a Gilbert-Elliott parameter and must follow loss=ge:; example: {example}",
        example = GE_EXAMPLE
    )]
    GeParamOutsideGe { item: String },
    #[error(
        "loss=ge needs both p= and r= (missing {missing}=); example: {example}",
        example = GE_EXAMPLE
    )]
    GeMissingParam { missing: &'static str },
    #[error("`{item}` needs {needs}; example: {example}")]
    Requires {
        item: String,
        needs: &'static str,
        example: &'static str,
    },
}

/// Refuses a delay-like value above [`MAX_IMPAIR_DELAY`].
fn capped(d: Duration, item: &str, example: &'static str) -> Result<Duration, ImpairError> {
    if d > MAX_IMPAIR_DELAY {
        return Err(bad(
            item,
            format!(
                "at most {}s (delay, jitter and reorder-hold are capped)",
                MAX_IMPAIR_DELAY.as_secs()
            ),
            example,
        ));
    }
    Ok(d)
}

fn bad(item: &str, reason: String, example: &'static str) -> ImpairError {
    ImpairError::BadValue {
        item: item.to_string(),
        reason,
        example,
    }
}

/// Collects the items before they are combined and cross-checked.
#[derive(Default)]
struct Builder {
    seen: Vec<&'static str>,
    loss_bernoulli: Option<Probability>,
    /// p, r, h, k once `loss=ge` has been seen.
    ge: Option<[Option<Probability>; 4]>,
    dup: Option<Probability>,
    rate: Option<u64>,
    queue: Option<(u64, String)>,
    delay: Option<Duration>,
    jitter: Option<Jitter>,
    reorder: Option<(Probability, u32)>,
    reorder_hold: Option<(Duration, String)>,
    seed: Option<u64>,
}

const GE_PARAMS: [&str; 4] = ["p", "r", "h", "k"];

impl Builder {
    fn mark_seen(&mut self, key: &'static str, item: &str) -> Result<(), ImpairError> {
        if self.seen.contains(&key) {
            return Err(ImpairError::DuplicateKey {
                key: key.to_string(),
                item: item.to_string(),
            });
        }
        self.seen.push(key);
        Ok(())
    }

    fn item(&mut self, item: &str) -> Result<(), ImpairError> {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ImpairError::NotKeyValue {
                item: item.to_string(),
            });
        };
        let (key, value) = (key.trim(), value.trim());
        let percent = |example| {
            parse_percent(value)
                .map(Probability)
                .map_err(|reason| bad(item, reason, example))
        };
        let duration = |example| {
            let d = parse_duration_ns(value)
                .map(Duration::from_nanos)
                .map_err(|reason| bad(item, reason, example))?;
            capped(d, item, example)
        };
        match key {
            "loss" => {
                self.mark_seen("loss", item)?;
                if let Some(rest) = value.strip_prefix("ge") {
                    let rest = match rest.strip_prefix(':') {
                        Some(rest) => rest.trim(),
                        None if rest.is_empty() => rest,
                        None => return Err(bad(item, "expected loss=ge:...".into(), GE_EXAMPLE)),
                    };
                    self.ge = Some([None; 4]);
                    if !rest.is_empty() {
                        self.item(rest)?;
                    }
                } else {
                    self.loss_bernoulli = Some(percent("loss=1%")?);
                }
            }
            "p" | "r" | "h" | "k" => {
                let slot = GE_PARAMS.iter().position(|&k| k == key).unwrap_or(0);
                let Some(ge) = self.ge.as_mut() else {
                    return Err(ImpairError::GeParamOutsideGe {
                        item: item.to_string(),
                    });
                };
                let parsed = percent(GE_EXAMPLE)?;
                if ge[slot].is_some() {
                    return Err(ImpairError::DuplicateKey {
                        key: format!("{key} (of loss=ge)"),
                        item: item.to_string(),
                    });
                }
                ge[slot] = Some(parsed);
            }
            "dup" => {
                self.mark_seen("dup", item)?;
                self.dup = Some(percent("dup=1%")?);
            }
            "rate" => {
                self.mark_seen("rate", item)?;
                let bps = parse_rate_bps(value).map_err(|r| bad(item, r, "rate=10M,queue=64K"))?;
                self.rate = Some(bps);
            }
            "queue" => {
                self.mark_seen("queue", item)?;
                let bytes =
                    parse_size_bytes(value).map_err(|r| bad(item, r, "rate=10M,queue=64K"))?;
                if bytes == 0 {
                    return Err(bad(
                        item,
                        "the queue must hold at least 1 byte".into(),
                        "queue=64K",
                    ));
                }
                self.queue = Some((bytes, item.to_string()));
            }
            "delay" => {
                self.mark_seen("delay", item)?;
                self.delay = Some(duration("delay=20ms")?);
            }
            "jitter" => {
                self.mark_seen("jitter", item)?;
                const JITTER_EXAMPLE: &str = "jitter=5ms:normal";
                let (amount, dist) = value.split_once(':').unwrap_or((value, "uniform"));
                let amount = parse_duration_ns(amount)
                    .map(Duration::from_nanos)
                    .map_err(|r| bad(item, r, JITTER_EXAMPLE))?;
                let amount = capped(amount, item, JITTER_EXAMPLE)?;
                let dist = match dist {
                    "uniform" => JitterDist::Uniform,
                    "normal" => JitterDist::Normal,
                    other => {
                        return Err(bad(
                            item,
                            format!("unknown jitter distribution `{other}` (uniform or normal)"),
                            JITTER_EXAMPLE,
                        ));
                    }
                };
                self.jitter = Some(Jitter { amount, dist });
            }
            "reorder" => {
                self.mark_seen("reorder", item)?;
                const REORDER_EXAMPLE: &str = "reorder=2%:3";
                let (p, extent) = value.split_once(':').unwrap_or((value, "1"));
                let p = parse_percent(p).map_err(|r| bad(item, r, REORDER_EXAMPLE))?;
                let extent: u32 = extent.parse().map_err(|_| {
                    bad(
                        item,
                        format!("`{extent}` is not a whole number of datagrams"),
                        REORDER_EXAMPLE,
                    )
                })?;
                if extent == 0 {
                    return Err(bad(
                        item,
                        "the extent must be at least 1".into(),
                        REORDER_EXAMPLE,
                    ));
                }
                self.reorder = Some((Probability(p), extent));
            }
            "reorder-hold" => {
                self.mark_seen("reorder-hold", item)?;
                let hold = duration("reorder=2%,reorder-hold=50ms")?;
                if hold.is_zero() {
                    return Err(bad(
                        item,
                        "the hold time must be above 0".into(),
                        "reorder=2%,reorder-hold=50ms",
                    ));
                }
                self.reorder_hold = Some((hold, item.to_string()));
            }
            "seed" => {
                self.mark_seen("seed", item)?;
                let seed = value.parse().map_err(|_| {
                    bad(
                        item,
                        format!("`{value}` is not an unsigned 64-bit integer"),
                        "seed=42",
                    )
                })?;
                self.seed = Some(seed);
            }
            _ => {
                return Err(ImpairError::UnknownKey {
                    key: key.to_string(),
                    item: item.to_string(),
                });
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<ImpairSpec, ImpairError> {
        let loss = match (self.loss_bernoulli, self.ge) {
            (Some(p), _) if p.is_zero() => LossModel::None,
            (Some(p), _) => LossModel::Bernoulli { p },
            (None, Some([p, r, h, k])) => LossModel::GilbertElliott {
                p: p.ok_or(ImpairError::GeMissingParam { missing: "p" })?,
                r: r.ok_or(ImpairError::GeMissingParam { missing: "r" })?,
                h: h.unwrap_or(Probability::ZERO),
                k: k.unwrap_or(Probability::ONE),
            },
            (None, None) => LossModel::None,
        };
        let rate = match (self.rate, self.queue) {
            (Some(bits_per_sec), queue) => Some(RateLimit {
                bits_per_sec,
                queue_bytes: queue.map_or(DEFAULT_QUEUE_BYTES, |(bytes, _)| bytes),
            }),
            (None, Some((_, item))) => {
                return Err(ImpairError::Requires {
                    item,
                    needs: "rate= (the queue belongs to the rate limiter)",
                    example: "rate=10M,queue=64K",
                });
            }
            (None, None) => None,
        };
        let reorder = match (self.reorder, self.reorder_hold) {
            (Some((p, extent)), hold) => (!p.is_zero()).then(|| Reorder {
                p,
                extent,
                hold: hold.map_or(DEFAULT_REORDER_HOLD, |(hold, _)| hold),
            }),
            (None, Some((_, item))) => {
                return Err(ImpairError::Requires {
                    item,
                    needs: "reorder=P%",
                    example: "reorder=2%,reorder-hold=50ms",
                });
            }
            (None, None) => None,
        };
        Ok(ImpairSpec {
            loss,
            dup: self.dup.unwrap_or(Probability::ZERO),
            rate,
            delay: self.delay.unwrap_or(Duration::ZERO),
            jitter: self.jitter.filter(|j| !j.amount.is_zero()),
            reorder,
            seed: self.seed.unwrap_or(DEFAULT_SEED),
        })
    }
}

impl FromStr for ImpairSpec {
    type Err = ImpairError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
            return Ok(ImpairSpec::default());
        }
        let mut builder = Builder::default();
        for item in spec.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(ImpairError::EmptyItem {
                    spec: spec.to_string(),
                });
            }
            builder.item(item)?;
        }
        builder.finish()
    }
}

/// Canonical form, in pipeline order, every parameter explicit, seed last; `none` for a no-op
/// with the default seed.
impl fmt::Display for ImpairSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        match self.loss {
            LossModel::None => {}
            LossModel::Bernoulli { p } => parts.push(format!("loss={p}")),
            LossModel::GilbertElliott { p, r, h, k } => {
                parts.push(format!("loss=ge:p={p},r={r},h={h},k={k}"));
            }
        }
        if !self.dup.is_zero() {
            parts.push(format!("dup={}", self.dup));
        }
        if let Some(rate) = self.rate {
            parts.push(format!(
                "rate={},queue={}",
                format_rate_bps(rate.bits_per_sec),
                format_size_bytes(rate.queue_bytes)
            ));
        }
        if !self.delay.is_zero() {
            parts.push(format!("delay={}", format_duration(self.delay)));
        }
        if let Some(jitter) = self.jitter {
            let dist = match jitter.dist {
                JitterDist::Uniform => "uniform",
                JitterDist::Normal => "normal",
            };
            parts.push(format!("jitter={}:{dist}", format_duration(jitter.amount)));
        }
        if let Some(reorder) = self.reorder {
            parts.push(format!(
                "reorder={}:{},reorder-hold={}",
                reorder.p,
                reorder.extent,
                format_duration(reorder.hold)
            ));
        }
        if parts.is_empty() && self.seed == DEFAULT_SEED {
            return f.write_str("none");
        }
        parts.push(format!("seed={}", self.seed));
        f.write_str(&parts.join(","))
    }
}

fn format_duration(d: Duration) -> String {
    format_duration_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        // Fuzz the spec parser: arbitrary text, and comma lists of plausible items, never
        // panic; whatever parses prints (canonically) as a spec that parses to the same one.
        #[test]
        fn any_spec_text_parses_or_is_refused_and_round_trips(
            text in "\\PC{0,40}|((loss|dup|rate|queue|delay|jitter|reorder|reorder-hold|seed)=[0-9.]{1,8}(%|ms|s|us|M|K|:normal|:2)?,){1,5}"
        ) {
            if let Ok(spec) = text.parse::<ImpairSpec>() {
                let shown = spec.to_string();
                let again = shown.parse::<ImpairSpec>();
                proptest::prop_assert!(again.is_ok(), "{} printed as {}", text, shown);
                proptest::prop_assert_eq!(again.unwrap().to_string(), shown);
            }
        }
    }

    fn pct(text: &str) -> Probability {
        Probability(parse_percent(text).unwrap())
    }

    fn spec(text: &str) -> ImpairSpec {
        text.parse()
            .unwrap_or_else(|e| panic!("`{text}` should parse: {e}"))
    }

    #[test]
    fn empty_and_none_are_noop() {
        for text in [
            "",
            "none",
            "  NONE ",
            "loss=0%",
            "delay=0ms,jitter=0us:normal,dup=0%",
            "reorder=0%",
        ] {
            let s = spec(text);
            assert!(s.is_noop(), "{text}");
            assert_eq!(s.seed, DEFAULT_SEED);
            assert_eq!(s.to_string(), "none");
        }
        assert!(spec("seed=7").is_noop());
        assert_eq!(spec("seed=7").to_string(), "seed=7");
        assert!(!spec("delay=1ns").is_noop());
    }

    #[test]
    fn parses_each_key() {
        let s = spec("loss=1.5%");
        assert_eq!(s.loss, LossModel::Bernoulli { p: pct("1.5%") });
        assert_eq!(spec("dup=2%").dup, pct("2%"));
        assert_eq!(
            spec("rate=10M").rate,
            Some(RateLimit {
                bits_per_sec: 10_000_000,
                queue_bytes: DEFAULT_QUEUE_BYTES
            })
        );
        assert_eq!(
            spec("queue=16K,rate=1.5G").rate,
            Some(RateLimit {
                bits_per_sec: 1_500_000_000,
                queue_bytes: 16_384
            })
        );
        assert_eq!(spec("delay=20ms").delay, Duration::from_millis(20));
        assert_eq!(
            spec("jitter=5ms").jitter,
            Some(Jitter {
                amount: Duration::from_millis(5),
                dist: JitterDist::Uniform
            })
        );
        assert_eq!(
            spec("jitter=250us:normal").jitter,
            Some(Jitter {
                amount: Duration::from_micros(250),
                dist: JitterDist::Normal
            })
        );
        assert_eq!(
            spec("jitter=5ms:uniform").jitter.map(|j| j.dist),
            Some(JitterDist::Uniform)
        );
        assert_eq!(
            spec("reorder=2%").reorder,
            Some(Reorder {
                p: pct("2%"),
                extent: 1,
                hold: DEFAULT_REORDER_HOLD
            })
        );
        assert_eq!(
            spec("reorder-hold=50ms,reorder=2%:3").reorder,
            Some(Reorder {
                p: pct("2%"),
                extent: 3,
                hold: Duration::from_millis(50)
            })
        );
        assert_eq!(spec("seed=42").seed, 42);
        assert_eq!(spec("seed=18446744073709551615").seed, u64::MAX);
    }

    #[test]
    fn parses_gilbert_elliott() {
        let full = LossModel::GilbertElliott {
            p: pct("0.5%"),
            r: pct("20%"),
            h: pct("0%"),
            k: pct("100%"),
        };
        assert_eq!(spec("loss=ge:p=0.5%,r=20%,h=0%,k=100%").loss, full);
        // h and k default to the simple Gilbert model; sub-parameters in any order.
        assert_eq!(spec("loss=ge:r=20%,p=0.5%").loss, full);
        assert_eq!(spec("loss=ge,p=0.5%,r=20%").loss, full);
        assert_eq!(
            spec("delay=5ms,loss=ge:p=1%,r=10%,h=50%,k=99%,seed=3").loss,
            LossModel::GilbertElliott {
                p: pct("1%"),
                r: pct("10%"),
                h: pct("50%"),
                k: pct("99%"),
            }
        );
    }

    #[test]
    fn combos_are_order_independent() {
        let a = spec(
            "loss=1%,dup=1%,rate=10M,queue=32K,delay=20ms,jitter=5ms:normal,reorder=2%:3,reorder-hold=50ms,seed=9",
        );
        let b = spec(
            "seed=9,reorder-hold=50ms,reorder=2%:3,jitter=5ms:normal,delay=20ms,queue=32K,rate=10M,dup=1%,loss=1%",
        );
        assert_eq!(a, b);
        assert!(!a.is_noop());
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        let cases = [
            ("loss=1%", "loss=1%,seed=1"),
            (
                "loss=ge:p=0.5%,r=20%",
                "loss=ge:p=0.5%,r=20%,h=0%,k=100%,seed=1",
            ),
            (
                "seed=42,jitter=5ms,delay=20ms",
                "delay=20ms,jitter=5ms:uniform,seed=42",
            ),
            ("rate=1.5G", "rate=1500M,queue=64K,seed=1"),
            ("reorder=2%", "reorder=2%:1,reorder-hold=100ms,seed=1"),
            (
                "dup=0.25%,delay=1.5ms,jitter=0.5ms:normal,rate=1234,queue=1500",
                "dup=0.25%,rate=1234,queue=1500,delay=1500us,jitter=500us:normal,seed=1",
            ),
        ];
        for (input, canonical) in cases {
            let parsed = spec(input);
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(spec(canonical), parsed, "{canonical}");
        }
        let everything = spec(
            "loss=ge:p=1.25%,r=30%,h=10%,k=99.5%,dup=1%,rate=3M,queue=10000,delay=2s,jitter=7ns:uniform,reorder=0.0000001%:9,reorder-hold=1us,seed=18446744073709551615",
        );
        assert_eq!(spec(&everything.to_string()), everything);
    }

    fn err(text: &str) -> ImpairError {
        match text.parse::<ImpairSpec>() {
            Ok(s) => panic!("`{text}` should not parse, got {s:?}"),
            Err(e) => e,
        }
    }

    /// Every message names the offending item and carries an example.
    fn assert_message(text: &str, offending: &str) {
        let message = err(text).to_string();
        assert!(message.contains(offending), "{text}: {message}");
        assert!(message.contains("example: "), "{text}: {message}");
    }

    #[test]
    fn errors_name_the_item_and_show_an_example() {
        assert!(matches!(err("lose=1%"), ImpairError::UnknownKey { .. }));
        assert_message("lose=1%", "lose=1%");
        assert!(matches!(
            err("loss=1%,loss=2%"),
            ImpairError::DuplicateKey { .. }
        ));
        assert_message("loss=1%,delay=5ms,loss=2%", "loss=2%");
        assert!(matches!(
            err("loss=ge:p=1%,r=5%,p=2%"),
            ImpairError::DuplicateKey { .. }
        ));
        assert!(matches!(
            err("loss=1%,loss=ge:p=1%,r=5%"),
            ImpairError::DuplicateKey { .. }
        ));
        assert!(matches!(err("loss=abc%"), ImpairError::BadValue { .. }));
        assert_message("loss=abc%", "loss=abc%");
        assert_message("loss=1", "loss=1");
        assert_message("loss=101%", "loss=101%");
        assert_message("loss=-1%", "loss=-1%");
        assert_message("dup=100.5%", "dup=100.5%");
        assert_message("delay=-5ms", "delay=-5ms");
        assert_message("delay=5", "delay=5");
        assert_message("jitter=-1ms", "jitter=-1ms");
        assert_message("jitter=1ms:gaussian", "jitter=1ms:gaussian");
        assert_message("reorder=2%:0", "reorder=2%:0");
        assert_message("reorder=2%:x", "reorder=2%:x");
        assert_message("reorder=2%,reorder-hold=0ms", "reorder-hold=0ms");
        // A typo must not hold a run for days: delays are capped at a minute.
        for text in [
            "delay=1000000s",
            "jitter=61s",
            "reorder=2%,reorder-hold=2000000ms",
        ] {
            assert_message(text, "at most 60s");
        }
        assert_eq!(spec("delay=60s").delay, MAX_IMPAIR_DELAY);
        assert_message("rate=0", "rate=0");
        assert_message("rate=10X", "rate=10X");
        assert_message("rate=1M,queue=0", "queue=0");
        assert_message("seed=-1", "seed=-1");
        assert_message("seed=x", "seed=x");
        assert!(matches!(
            err("loss=ge:p=1%"),
            ImpairError::GeMissingParam { missing: "r" }
        ));
        assert!(matches!(
            err("loss=ge:r=1%"),
            ImpairError::GeMissingParam { missing: "p" }
        ));
        assert_message("loss=ge:p=1%", "r=");
        assert!(matches!(
            err("p=1%,loss=ge:r=1%"),
            ImpairError::GeParamOutsideGe { .. }
        ));
        assert_message("k=99%", "k=99%");
        assert_message("loss=gex", "loss=gex");
        assert!(matches!(err("queue=64K"), ImpairError::Requires { .. }));
        assert_message("queue=64K", "queue=64K");
        assert_message("reorder-hold=50ms", "reorder-hold=50ms");
        assert!(matches!(
            err("loss=1%,,delay=1ms"),
            ImpairError::EmptyItem { .. }
        ));
        assert_message("loss=1%,", "loss=1%,");
        assert!(matches!(err("loss"), ImpairError::NotKeyValue { .. }));
        assert_message("delay=1ms,loss", "`loss`");
    }

    #[test]
    fn gilbert_elliott_analytics() {
        let ge = spec("loss=ge:p=0.5%,r=20%").loss;
        let pi_bad = 0.005 / 0.205;
        assert!((ge.expected_loss() - pi_bad).abs() < 1e-12);
        assert!((ge.expected_mean_burst().unwrap() - 1.0 / 0.2).abs() < 1e-9);
        let bernoulli = spec("loss=20%").loss;
        assert!((bernoulli.expected_loss() - 0.2).abs() < 1e-12);
        assert!((bernoulli.expected_mean_burst().unwrap() - 1.0 / 0.8).abs() < 1e-12);
        // With h = 1 − k = the same loss in both states, GE degenerates to Bernoulli.
        let flat = spec("loss=ge:p=3%,r=7%,h=90%,k=90%").loss;
        assert!((flat.expected_loss() - 0.1).abs() < 1e-12);
        assert!((flat.expected_mean_burst().unwrap() - 1.0 / 0.9).abs() < 1e-9);
        let general = spec("loss=ge:p=1%,r=10%,h=50%,k=99%").loss;
        let pi_bad = 0.01 / 0.11;
        let expected = (1.0 - pi_bad) * 0.01 + pi_bad * 0.5;
        assert!((general.expected_loss() - expected).abs() < 1e-12);
        assert_eq!(LossModel::None.expected_mean_burst(), None);
        assert_eq!(spec("loss=100%").loss.expected_mean_burst(), None);
    }
}
