//! ferry's whole-run counters of files and bytes (the engine keeps its own per-stage
//! numbers in [`crate::pipeline::StageMetrics`]).
//!
//! Workers update them on the hot path; the reporter thread reads them while the run goes
//! on, and the end summary reads them once the run is over. Because progress bars, summary
//! and JSON report all read these same numbers, they cannot disagree (design promise 5).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Files at least this big are listed in flight (smaller ones come and go between two
/// redraws, and would only cost a lock each).
pub const FLIGHT_MIN: u64 = 1 << 20;

/// A file in flight, as the progress view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight {
    /// Its key.
    pub key: PathBuf,
    /// Its size.
    pub size: u64,
    /// Source bytes of it delivered so far.
    pub done: u64,
}

/// Whole-run counters of files and bytes, shared by every stage and the reporter.
#[derive(Debug, Default)]
pub struct Counters {
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
    /// Of those, symbolic links recorded (or, restoring, made again).
    pub links: AtomicU64,
    /// Directories recorded (mode, owner, times), or, restoring, made and set; apart
    /// from the files.
    pub dirs: AtomicU64,
    /// `--delete`: objects removed (or, in a dry run, that would be) because their
    /// sources are gone; apart from the files discovered.
    pub deleted: AtomicU64,
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
    /// Dry run: of the entries that would be sent, the symbolic links (recorded, no
    /// object).
    pub would_link: AtomicU64,
    /// Source bytes whose compressed piece the sink has taken (the main bar's progress).
    pub bytes_done: AtomicU64,
    /// Files of at least [`FLIGHT_MIN`] bytes being delivered, by task id.
    pub in_flight: Mutex<BTreeMap<u64, Flight>>,
}

impl Counters {
    /// Adds what `other` counted of files, bytes, retries and deletions to these (`ferry
    /// watch`: its shipments' counters, added up for the metrics).
    pub fn absorb(&self, other: &Counters) {
        use std::sync::atomic::Ordering::Relaxed;
        for (to, from) in [
            (&self.discovered, &other.discovered),
            (&self.succeeded, &other.succeeded),
            (&self.skipped, &other.skipped),
            (&self.failed, &other.failed),
            (&self.cancelled, &other.cancelled),
            (&self.bytes_in, &other.bytes_in),
            (&self.bytes_out, &other.bytes_out),
            (&self.retries, &other.retries),
            (&self.deleted, &other.deleted),
        ] {
            to.fetch_add(from.load(Relaxed), Relaxed);
        }
    }

    /// The source bytes of the run, once any file is open: sizes are known for the files
    /// opened so far, the rest are assumed average.
    pub fn estimated_total(&self) -> Option<u64> {
        let opened = self.opened.load(Relaxed);
        (opened > 0).then(|| {
            let opened_bytes = self.opened_bytes.load(Relaxed);
            let ended_unread = self.skipped.load(Relaxed) + self.failed.load(Relaxed);
            let unopened = self
                .discovered
                .load(Relaxed)
                .saturating_sub(opened)
                .saturating_sub(ended_unread);
            opened_bytes + unopened * (opened_bytes / opened)
        })
    }

    /// Counts `n` bytes restored (or checked): read and done at once, for the summary's
    /// speed and the bar alike.
    pub fn restored(&self, n: u64) {
        self.bytes_read.fetch_add(n, Relaxed);
        self.bytes_done.fetch_add(n, Relaxed);
    }

    /// Counts an entry found by a producer.
    pub fn found(&self) {
        self.discovered.fetch_add(1, Relaxed);
    }

    /// Counts an entry found whose size is known at once (a manifest entry): the bar
    /// counts its bytes from the start.
    pub fn found_sized(&self, size: u64) {
        self.found();
        self.sized(size);
    }

    /// Counts the size of an entry found, known before it is opened (a manifest entry).
    pub fn sized(&self, size: u64) {
        self.opened.fetch_add(1, Relaxed);
        self.opened_bytes.fetch_add(size, Relaxed);
    }

    /// Every producer has finished: the totals are final, an ETA is meaningful.
    pub fn all_found(&self) {
        self.discovery_done.store(true, Relaxed);
    }

    /// Counts sink operations retried after a transient failure.
    pub fn retried(&self, n: u64) {
        self.retries.fetch_add(n, Relaxed);
    }

    /// Counts file `id` as opened with `size` bytes, and returns its [`Transfer`]: the
    /// file is listed in flight (when it is big enough to show) until that is dropped.
    pub fn opened_file(self: &Arc<Self>, id: u64, key: &std::path::Path, size: u64) -> Transfer {
        self.opened.fetch_add(1, Relaxed);
        self.opened_bytes.fetch_add(size, Relaxed);
        if size >= FLIGHT_MIN {
            self.flights().insert(
                id,
                Flight {
                    key: key.to_path_buf(),
                    size,
                    done: 0,
                },
            );
        }
        Transfer {
            metrics: self.clone(),
            id,
            size,
        }
    }

    /// The files in flight now: those under way first, then the largest.
    pub fn flights_now(&self) -> Vec<(u64, Flight)> {
        let mut v: Vec<(u64, Flight)> = self
            .flights()
            .iter()
            .map(|(i, f)| (*i, f.clone()))
            .collect();
        // Files under way first (those only loaded wait in a queue), then the largest.
        v.sort_by(|a, b| {
            (b.1.done > 0)
                .cmp(&(a.1.done > 0))
                .then(b.1.size.cmp(&a.1.size))
                .then(a.0.cmp(&b.0))
        });
        v
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Flight>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files that reached a final outcome.
    pub fn finished(&self) -> u64 {
        self.succeeded.load(Relaxed)
            + self.skipped.load(Relaxed)
            + self.failed.load(Relaxed)
            + self.cancelled.load(Relaxed)
    }
}

/// One file under way, as the progress view follows it (rclone's accounting `Transfer`):
/// made when the file is opened, advanced as its pieces reach the sink, and gone from
/// the files in flight when it is dropped, that is when the last piece of the file is.
/// No stage edits the shared map by hand.
pub struct Transfer {
    metrics: Arc<Counters>,
    id: u64,
    size: u64,
}

impl Transfer {
    /// Counts `len` more source bytes of this file as delivered.
    pub fn advance(&self, len: u64) {
        self.metrics.bytes_done.fetch_add(len, Relaxed);
        if self.size >= FLIGHT_MIN {
            if let Some(f) = self.metrics.flights().get_mut(&self.id) {
                f.done += len;
            }
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.size >= FLIGHT_MIN {
            self.metrics.flights().remove(&self.id);
        }
    }
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transfer({}, {} bytes)", self.id, self.size)
    }
}
