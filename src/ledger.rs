//! The collector stage's state: every outcome counted in the run's metrics, failures
//! listed for the summary, deliveries sent to the journal.

use crate::journal::Recorder;
use crate::metrics::RunMetrics;
use crate::report::{Failure, Log};
use crate::task::{Outcome, Verdict};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One collector's record of the outcomes it saw. Counts live in [`RunMetrics`], so
/// progress, summary and report read the same numbers.
pub struct Ledger {
    metrics: Arc<RunMetrics>,
    log: Log,
    /// Files that failed, with stage and cause.
    pub failures: Vec<Failure>,
    /// The journal, which records each delivery durably as the run goes on.
    journal: Recorder,
}

impl Clone for Ledger {
    /// A fresh, empty ledger counting into the same metrics (one per collector worker).
    fn clone(&self) -> Self {
        Ledger::new(self.metrics.clone(), self.log.clone(), self.journal.clone())
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new(metrics: Arc<RunMetrics>, log: Log, journal: Recorder) -> Self {
        Ledger {
            metrics,
            log,
            failures: Vec::new(),
            journal,
        }
    }

    /// Counts one file's outcome.
    pub fn record(&mut self, o: Outcome) {
        let m = &self.metrics;
        match o.result {
            Ok(entry) => {
                m.bytes_in.fetch_add(entry.size, Relaxed);
                m.bytes_out.fetch_add(entry.bytes_out, Relaxed);
                // Only a delivered, visible object reaches here, so the journal never
                // claims one that is not there. (The writer outlives the collectors.)
                self.journal.record(&entry);
                m.succeeded.fetch_add(1, Relaxed);
            }
            Err(Verdict::Skipped(why)) => {
                self.log
                    .info(|| format!("[skip] {}: {why}", o.path.display()));
                m.skipped.fetch_add(1, Relaxed);
            }
            Err(Verdict::Failed { stage, error }) => {
                self.log.file_error(&o.path, &error);
                self.failures.push(Failure::new(&o.path, stage, &error));
                m.failed.fetch_add(1, Relaxed);
            }
            Err(Verdict::Cancelled) => {
                m.cancelled.fetch_add(1, Relaxed);
            }
        }
    }

    /// The failures of every collector, together.
    pub fn merge(ledgers: Vec<Ledger>) -> Vec<Failure> {
        ledgers.into_iter().flat_map(|l| l.failures).collect()
    }
}
