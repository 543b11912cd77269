//! The collector stage's state: every outcome counted in the run's metrics, failures
//! listed for the summary, deliveries sent to the journal.

use crate::config::Listing;
use crate::counters::Counters;
use crate::history::journal::Recorder;
use crate::task::{Outcome, Skip, Verdict};
use crate::view::{Failure, Log};
use crate::words::human_bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One collector's record of the outcomes it saw. Counts live in [`Counters`], so
/// progress, summary and report read the same numbers.
pub struct Ledger {
    metrics: Arc<Counters>,
    log: Log,
    /// Files that failed, with stage and cause.
    pub failures: Vec<Failure>,
    /// The journal, which records each delivery durably as the run goes on (none for a
    /// restore, which delivers nothing).
    journal: Option<Recorder>,
    /// `--dry-run`: where each file's line (would send / would skip) is printed.
    listing: Option<Listing>,
    /// What a dry run would do with a file: `send`, `restore`.
    verb: &'static str,
}

impl Clone for Ledger {
    /// A fresh, empty ledger counting into the same metrics (one per collector worker).
    fn clone(&self) -> Self {
        Ledger::new(self.metrics.clone(), self.log.clone(), self.journal.clone())
            .listing(self.listing, self.verb)
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new(metrics: Arc<Counters>, log: Log, journal: Option<Recorder>) -> Self {
        Ledger {
            metrics,
            log,
            failures: Vec::new(),
            journal,
            listing: None,
            verb: "send",
        }
    }

    /// Lists each file's outcome as a dry run does, on `to`, saying `would VERB`.
    pub fn listing(mut self, to: Option<Listing>, verb: &'static str) -> Self {
        self.listing = to;
        self.verb = verb;
        self
    }

    fn list(&self, line: std::fmt::Arguments) {
        use std::io::Write;
        // A closed pipe (`ferry -n … | head`) ends the listing, not the run.
        let _ = match self.listing {
            Some(Listing::Stdout) => writeln!(std::io::stdout().lock(), "{line}"),
            Some(Listing::Stderr) => writeln!(std::io::stderr().lock(), "{line}"),
            None => Ok(()),
        };
    }

    /// Counts one file's outcome.
    pub fn record(&mut self, o: Outcome) {
        let m = &self.metrics;
        match o.result {
            Err(v) => self.verdict(&o.path, v),
            Ok(entry) => {
                m.bytes_in.fetch_add(entry.size, Relaxed);
                m.bytes_out.fetch_add(entry.bytes_out, Relaxed);
                // Only a delivered, visible object reaches here, so the journal never
                // claims one that is not there. (The writer outlives the collectors.)
                if let Some(j) = &self.journal {
                    j.record(&entry);
                }
                if entry.is_link() {
                    m.links.fetch_add(1, Relaxed);
                }
                m.succeeded.fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts a file that succeeded without a delivery to record (`ferry plan`: planned).
    pub fn counted(&mut self, size: u64) {
        self.metrics.bytes_in.fetch_add(size, Relaxed);
        self.metrics.succeeded.fetch_add(1, Relaxed);
    }

    /// Counts a file that did not succeed: skipped, failed (logged, and listed for the
    /// summary) or cancelled.
    pub fn verdict(&mut self, path: &std::path::Path, v: Verdict) {
        let m = &self.metrics;
        match v {
            Verdict::Skipped(Skip::DryRun { size }) => {
                self.list(format_args!(
                    "would {}: {} ({})",
                    self.verb,
                    path.display(),
                    human_bytes(size)
                ));
                m.would_send.fetch_add(1, Relaxed);
                m.would_send_bytes.fetch_add(size, Relaxed);
                m.skipped.fetch_add(1, Relaxed);
            }
            Verdict::Skipped(Skip::DryRunLink) => {
                self.list(format_args!(
                    "would {}: {} (symbolic link)",
                    self.verb,
                    path.display()
                ));
                m.would_send.fetch_add(1, Relaxed);
                m.would_link.fetch_add(1, Relaxed);
                m.skipped.fetch_add(1, Relaxed);
            }
            Verdict::Skipped(why) => {
                self.list(format_args!("would skip: {} ({why})", path.display()));
                self.log
                    .info(|| format!("[skip] {}: {why}", path.display()));
                m.skipped.fetch_add(1, Relaxed);
            }
            Verdict::Failed { stage, error } => {
                self.log.file_error(path, &error);
                self.failures.push(Failure::new(path, stage, &error));
                m.failed.fetch_add(1, Relaxed);
            }
            Verdict::Cancelled => {
                m.cancelled.fetch_add(1, Relaxed);
            }
        }
    }

    /// The failures of every collector, together.
    pub fn merge(ledgers: Vec<Ledger>) -> Vec<Failure> {
        ledgers.into_iter().flat_map(|l| l.failures).collect()
    }
}
