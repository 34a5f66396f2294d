//! Error kinds and the documented exit codes they map to.
//!
//! - 0: ran; every threshold given was measured and met (or none was given).
//! - 1: ran, and a measured value exceeded its threshold. When one threshold failed and another
//!   could not be measured, the failure decides: 1.
//! - 2: usage or setup error (bad value, unwritable output file, port in use, no receiver
//!   answering), or a report file that could not be written at the end of the run (the other
//!   outputs and the text summary are still written). A failed report file wins over 0, 1, 3
//!   and 130: a CI job must not act on a verdict whose report is missing.
//! - 3: incomplete measurement: a threshold could not be judged (nothing was sent, the
//!   receiver's results never came back, no samples for it) and none failed. Distinct from 1 so
//!   a flaky control path is not read as a regression.
//! - 130: interrupted (reports of what was measured are still printed and written); a failed
//!   threshold still gives 1.

use std::process::ExitCode;

/// Exit code of a usage or setup error, and of a report file that failed to be written.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a run whose thresholds could not all be judged (and none failed).
pub const EXIT_INCOMPLETE: u8 = 3;
/// Exit code of an interrupted run.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The user asked for something that cannot work (bad value, conflicting options).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The test could not start: bad address, port in use, no receiver answering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// How a completed run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Each entry names a threshold and the measured value that broke it (and, after those,
    /// any threshold that could not be measured).
    ThresholdFailed(Vec<String>),
    /// Each entry names a threshold that could not be measured, and why.
    Incomplete(Vec<String>),
    Interrupted,
}

impl Outcome {
    /// The same outcome with each of its lines prefixed by `label` (which measurement).
    pub fn labelled(self, label: &str) -> Outcome {
        let label = |lines: Vec<String>| lines.into_iter().map(|l| format!("{label}{l}")).collect();
        match self {
            Outcome::ThresholdFailed(lines) => Outcome::ThresholdFailed(label(lines)),
            Outcome::Incomplete(lines) => Outcome::Incomplete(label(lines)),
            other => other,
        }
    }

    /// The outcome of two measurements judged apart (`--bidir`'s two directions), as
    /// `run::outcome_of` ranks them: a failure (with both lists) before an interruption, then
    /// an incomplete check, then a pass.
    pub fn worse(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::ThresholdFailed(mut a), Outcome::ThresholdFailed(b)) => {
                a.extend(b);
                Outcome::ThresholdFailed(a)
            }
            (f @ Outcome::ThresholdFailed(_), _) | (_, f @ Outcome::ThresholdFailed(_)) => f,
            (Outcome::Interrupted, _) | (_, Outcome::Interrupted) => Outcome::Interrupted,
            (Outcome::Incomplete(mut a), Outcome::Incomplete(b)) => {
                a.extend(b);
                Outcome::Incomplete(a)
            }
            (i @ Outcome::Incomplete(_), _) | (_, i @ Outcome::Incomplete(_)) => i,
            (Outcome::Passed, Outcome::Passed) => Outcome::Passed,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Passed => ExitCode::SUCCESS,
            Outcome::ThresholdFailed(_) => ExitCode::from(1),
            Outcome::Incomplete(_) => ExitCode::from(EXIT_INCOMPLETE),
            Outcome::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    fn failed(l: &str) -> Outcome {
        Outcome::ThresholdFailed(vec![l.into()])
    }

    fn incomplete(l: &str) -> Outcome {
        Outcome::Incomplete(vec![l.into()])
    }

    #[test]
    fn the_worse_of_two_outcomes_ranks_as_a_single_runs_and_keeps_every_line() {
        assert_eq!(Outcome::Passed.worse(Outcome::Passed), Outcome::Passed);
        assert_eq!(Outcome::Passed.worse(incomplete("a")), incomplete("a"));
        assert_eq!(
            incomplete("a").worse(incomplete("b")),
            Outcome::Incomplete(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            incomplete("a").worse(Outcome::Interrupted),
            Outcome::Interrupted
        );
        assert_eq!(Outcome::Interrupted.worse(failed("x")), failed("x"));
        assert_eq!(
            failed("x").worse(failed("y")),
            Outcome::ThresholdFailed(vec!["x".into(), "y".into()])
        );
    }

    #[test]
    fn labelled_outcomes_name_their_measurement_on_each_line() {
        assert_eq!(failed("x").labelled("reverse: "), failed("reverse: x"));
        assert_eq!(
            incomplete("y").labelled("forward: "),
            incomplete("forward: y")
        );
        assert_eq!(Outcome::Passed.labelled("forward: "), Outcome::Passed);
    }
}
