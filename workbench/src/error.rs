//! Errors a person caused (a bad space file, a wrong flag): exit code 2, one clear message, no backtrace.

/// A mistake in the user's input. `main` prints it and exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(msg: impl Into<String>) -> UsageError {
        UsageError(msg.into())
    }
}
