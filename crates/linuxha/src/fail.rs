//! How commands fail: one readable sentence on stderr and a documented exit code.

use std::fmt;

/// Exit code for a failed operation (cluster, IO, a refused request).
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad configuration or usage (including node and application names that are
/// not names or not in the built configuration).
pub const EXIT_CONFIG: i32 = 2;

/// A command's failure: the sentence to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: i32,
    /// One sentence, starting with the command name.
    pub message: String,
}

impl Failure {
    /// A failure of the operation itself (exit 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure { code: EXIT_FAILED, message: message.into() }
    }

    /// A configuration or usage error (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        Failure { code: EXIT_CONFIG, message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns.
pub type Outcome<T> = Result<T, Failure>;
