//! Error kinds and the documented exit codes they map to.
//!
//! 0: ran and passed; 1: ran but a threshold failed; 2: usage or setup error; 130: interrupted
//! (reports of what was measured are still printed and written).

use std::process::ExitCode;

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
    /// Each entry names a threshold and the measured value that broke it.
    ThresholdFailed(Vec<String>),
    Interrupted,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Passed => ExitCode::SUCCESS,
            Outcome::ThresholdFailed(_) => ExitCode::from(1),
            Outcome::Interrupted => ExitCode::from(130),
        }
    }
}
