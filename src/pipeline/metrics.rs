//! Live numbers of each stage, kept by the engine: items, busy workers, queue fill and
//! per-item latency. All lock-free atomics: workers update them on the hot path, and a
//! reporter thread may read them while the run goes on.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Number of sub-buckets per power of two: latencies are kept to within 12.5%.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below this many microseconds get a bucket each.
const LINEAR: usize = 2 * SUB;
/// Enough buckets for any latency up to 2^40 µs (about 12 days).
const BUCKETS: usize = LINEAR + (40 - SUB_BITS as usize) * SUB;

/// A log-bucketed latency histogram in microseconds that many threads record into at once.
///
/// Quantiles are approximate (12.5% resolution), which is plenty for p50/p99 reporting and
/// keeps recording a single relaxed atomic add.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }

    fn index(micros: u64) -> usize {
        if micros < LINEAR as u64 {
            return micros as usize;
        }
        let exp = 63 - micros.leading_zeros(); // >= SUB_BITS + 1
        let sub = ((micros >> (exp - SUB_BITS)) as usize) & (SUB - 1);
        let i = LINEAR + (exp as usize - SUB_BITS as usize - 1) * SUB + sub;
        i.min(BUCKETS - 1)
    }

    /// The smallest value that lands in bucket `i` (the value reported for a quantile).
    fn lower_bound(i: usize) -> u64 {
        if i < LINEAR {
            return i as u64;
        }
        let exp = (i - LINEAR) / SUB + SUB_BITS as usize + 1;
        let sub = ((i - LINEAR) % SUB) as u64;
        (1u64 << exp) + (sub << (exp - SUB_BITS as usize))
    }

    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::index(micros)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The `q`-quantile (0.0..=1.0) of what was recorded, or zero when nothing was.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Duration::from_micros(Self::lower_bound(i));
            }
        }
        Duration::from_micros(Self::lower_bound(BUCKETS - 1))
    }
}

/// Live numbers of one pipeline stage: what the engine knows without knowing the work.
#[derive(Debug)]
pub struct StageMetrics {
    /// The stage's name, as shown in progress lines and reports.
    pub name: String,
    /// Worker threads in the stage's pool.
    pub workers: usize,
    /// Capacity of the stage's input channel (its queue).
    pub queue_capacity: usize,
    /// Items taken from the input channel and handled.
    pub items: AtomicU64,
    /// Items sent downstream.
    pub emitted: AtomicU64,
    /// Workers handling an item right now (the rest wait in `recv`).
    pub busy: AtomicUsize,
    /// Total time workers spent handling items, in nanoseconds (blocked time included).
    pub busy_ns: AtomicU64,
    /// Of `busy_ns`, the time spent in `emit` waiting for room in a full downstream queue:
    /// back-pressure, not work.
    pub blocked_ns: AtomicU64,
    /// Items waiting in the input channel, in whatever batches they travel (shared with
    /// the upstream emitters, which add what they send; the workers take off what they
    /// receive).
    pub queue_len: Arc<AtomicUsize>,
    /// Per-item handling latency.
    pub latency: Histogram,
    /// Workers of this stage that have ended.
    pub finished_workers: AtomicUsize,
    /// Threads started for this stage (a stage under a limit starts them as it grows).
    pub threads: AtomicUsize,
    /// The most items it had under way at once, deferred ones included.
    pub peak_busy: AtomicUsize,
    /// Panics caught in this stage's workers.
    pub panics: AtomicU64,
    /// The stage's limit on items in flight, when it has one (else all its workers).
    pub limit: Option<Arc<super::limit::Limit>>,
    /// Its workers take a permit of the limit per item once they hold it, rather than
    /// before they wait for input: a stage whose items are deferred has fewer threads
    /// than permits, and a thread idle in a wait must not hold one.
    pub gate_per_item: bool,
}

impl StageMetrics {
    /// Fresh, zeroed metrics for a stage.
    pub fn new(
        name: &str,
        workers: usize,
        queue_capacity: usize,
        queue_len: Arc<AtomicUsize>,
    ) -> Self {
        StageMetrics {
            name: name.to_string(),
            workers,
            queue_capacity,
            items: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            busy_ns: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
            queue_len,
            latency: Histogram::new(),
            finished_workers: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            peak_busy: AtomicUsize::new(0),
            panics: AtomicU64::new(0),
            limit: None,
            gate_per_item: false,
        }
    }

    /// Total busy time of all workers.
    pub fn busy_time(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Relaxed))
    }

    /// Time workers spent blocked on a full downstream queue.
    pub fn blocked_time(&self) -> Duration {
        Duration::from_nanos(self.blocked_ns.load(Relaxed))
    }

    /// Time workers spent working: busy, less blocked.
    pub fn work_time(&self) -> Duration {
        self.busy_time().saturating_sub(self.blocked_time())
    }

    /// How many items it may handle at once now: its limit, or its workers.
    pub fn allowed(&self) -> usize {
        self.limit.as_ref().map_or(self.workers, |l| l.current())
    }

    /// Whether every worker of the stage has ended (its output channel is closed).
    pub fn is_finished(&self) -> bool {
        self.finished_workers.load(Relaxed) >= self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_monotonic_and_contain_their_values() {
        let mut prev = 0;
        for i in 1..BUCKETS {
            let lb = Histogram::lower_bound(i);
            assert!(lb > prev, "bucket {i}");
            assert_eq!(Histogram::index(lb), i, "value {lb}");
            prev = lb;
        }
    }

    #[test]
    fn quantiles_are_within_resolution() {
        let h = Histogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 <= 0.125, "p50 {p50}");
        assert!((p99 - 99_000.0).abs() / 99_000.0 <= 0.125, "p99 {p99}");
        assert_eq!(h.count(), 100);
        assert_eq!(Histogram::new().quantile(0.5), Duration::ZERO);
    }
}
