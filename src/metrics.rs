//! ferry's whole-run counters of files and bytes (the engine keeps its own per-stage
//! numbers in [`crate::pipeline::StageMetrics`]).
//!
//! Workers update them on the hot path; the reporter thread reads them while the run goes
//! on, and the end summary reads them once the run is over. Because progress bars, summary
//! and JSON report all read these same numbers, they cannot disagree (design promise 5).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Whole-run counters of files and bytes, shared by every stage and the reporter.
#[derive(Debug, Default)]
pub struct RunMetrics {
    /// Files (and special entries) found by the producers.
    pub discovered: AtomicU64,
    /// Files opened for reading: their sizes are known (the walker does not stat files,
    /// which saved a path lookup per file; the loader's `fstat` gives sizes).
    pub opened: AtomicU64,
    /// Source bytes of the files opened so far.
    pub opened_bytes: AtomicU64,
    /// Set once every producer has finished: totals are final, an ETA is meaningful.
    pub discovery_done: AtomicBool,
    /// Files delivered.
    pub succeeded: AtomicU64,
    /// Files skipped (special files, symlinks not followed, unchanged since last run).
    pub skipped: AtomicU64,
    /// Files that failed.
    pub failed: AtomicU64,
    /// Files cancelled by Ctrl-C or the deadline.
    pub cancelled: AtomicU64,
    /// Source bytes read so far.
    pub bytes_read: AtomicU64,
    /// Source bytes of files delivered.
    pub bytes_in: AtomicU64,
    /// Compressed bytes delivered.
    pub bytes_out: AtomicU64,
    /// Bytes currently reserved in the memory budget (the budget keeps it up to date).
    pub bytes_in_flight: Arc<AtomicU64>,
    /// Sink operations retried after a transient failure (by the upload stage).
    pub retries: AtomicU64,
    /// `--dry-run`: files that would be sent (counted among the skipped), and their bytes.
    pub would_send: AtomicU64,
    /// `--dry-run`: source bytes of the files that would be sent.
    pub would_send_bytes: AtomicU64,
}

impl RunMetrics {
    /// Files that reached a final outcome.
    pub fn finished(&self) -> u64 {
        self.succeeded.load(Relaxed)
            + self.skipped.load(Relaxed)
            + self.failed.load(Relaxed)
            + self.cancelled.load(Relaxed)
    }
}
