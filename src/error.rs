//! Typed errors of the library and the mapping of a run's result to an exit code.

use crate::pipeline::PipelineError;
use crate::sink::SinkError;

/// Why a run could not start or could not finish as a run (per-file problems are not
/// errors: they are outcomes, counted in the summary).
#[derive(Debug, thiserror::Error)]
pub enum FerryError {
    /// A bad flag value, a missing input, colliding keys: nothing was done.
    #[error("{0}")]
    Usage(String),
    /// The sink could not be set up (unwritable directory, bad spec).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The engine failed (a thread could not start, a worker panicked).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl FerryError {
    /// The exit code for this error: 2 for usage and setup errors, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FerryError::Usage(_) | FerryError::Sink(_) => ExitCode::Usage,
            FerryError::Pipeline(_) => ExitCode::Failures,
        }
    }
}

/// ferry's exit codes (design promise 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Everything delivered or skipped.
    Success = 0,
    /// Some files failed, or the deadline cut the run short.
    Failures = 1,
    /// Usage or setup error: nothing was done.
    Usage = 2,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl ExitCode {
    /// The numeric process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An I/O error in the words a user expects: `permission denied`, `no such file or
/// directory` — without Rust's `(os error 13)` suffix.
pub fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_words() {
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_words(&e), "permission denied");
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_words(&e), "no such file or directory");
    }
}
