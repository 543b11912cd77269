//! The load stage: opens each file safely, checks whether it changed since the last run,
//! and reads it as segments within the memory budget.

use crate::gzip::{DICT_SIZE, PRIMES_SEGMENTS};
use crate::manifest::Manifest;
use crate::metrics::RunMetrics;
use crate::pipeline::{CancelToken, Emitter};
use crate::sink::Sink;
use crate::task::{EntryKind, FileCtx, FileTask, Segment, SegmentBody, Verdict};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A byte budget shared by every stage: loading a segment reserves its size, writing it
/// at the sink releases it. Bounds bytes in flight whatever the file sizes and counts.
pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
    metrics: Arc<RunMetrics>,
}

impl Budget {
    /// A budget of `limit` bytes whose use is mirrored in `metrics.bytes_in_flight`.
    pub fn new(limit: u64, metrics: Arc<RunMetrics>) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
            metrics,
        })
    }

    /// Reserves `bytes`, waiting while the budget is spent. A request larger than the
    /// whole budget is granted when nothing else is reserved, so it cannot wait forever.
    /// Returns `None` if the run is cancelled while waiting.
    pub fn acquire(self: &Arc<Self>, bytes: u64, cancel: &CancelToken) -> Option<Permit> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + bytes > self.limit {
            if cancel.is_cancelled() {
                return None;
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *used += bytes;
        self.metrics.bytes_in_flight.store(*used, Relaxed);
        Some(Permit {
            budget: Some(self.clone()),
            bytes,
        })
    }
}

/// A reservation in the [`Budget`], released on drop.
pub struct Permit {
    budget: Option<Arc<Budget>>,
    bytes: u64,
}

impl Permit {
    /// A permit that reserves nothing (for tests and callers without a budget).
    pub fn none() -> Self {
        Permit {
            budget: None,
            bytes: 0,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
            *used = used.saturating_sub(self.bytes);
            b.metrics.bytes_in_flight.store(*used, Relaxed);
            drop(used);
            b.freed.notify_all();
        }
    }
}

/// Everything the load workers share.
pub struct Loader {
    /// Segment size in bytes.
    pub segment_size: u64,
    /// Follow symbolic links (otherwise a link is never opened through).
    pub follow: bool,
    /// Rewrite files even if the manifest says they are unchanged.
    pub force: bool,
    /// What earlier runs delivered.
    pub manifest: Arc<Manifest>,
    /// The sink, to check a manifest entry's object still exists.
    pub sink: Arc<dyn Sink>,
    /// The memory budget.
    pub budget: Arc<Budget>,
    /// Run counters.
    pub metrics: Arc<RunMetrics>,
    /// `--task-timeout`: each file must be delivered within this long of being opened.
    pub task_timeout: Option<Duration>,
    /// Segment events at `-vv`.
    pub log: crate::report::Log,
}

fn io_cause(e: &io::Error) -> String {
    crate::error::io_words(e)
}

impl Loader {
    /// Handles one task: emits its segments in order, or a single `Stop`, and always ends
    /// the file's stream (last segment or `Stop`) unless downstream is gone.
    pub fn load(&self, task: FileTask, out: &Emitter<Segment>) {
        let stop = |task: FileTask, v: Verdict| {
            let _ = out.emit(Segment {
                file: FileCtx::new(task, 0, (0, 0), None),
                index: 0,
                body: SegmentBody::Stop(v),
            });
        };
        if out.is_cancelled() {
            return stop(task, Verdict::Cancelled);
        }
        match &task.kind {
            EntryKind::Regular => {}
            EntryKind::Skip(why) => {
                let v = Verdict::Skipped(why.clone());
                return stop(task, v);
            }
            EntryKind::Fail(why) => {
                let v = Verdict::Failed {
                    stage: "walk",
                    error: why.clone(),
                };
                return stop(task, v);
            }
        }
        let failed = |error: String| Verdict::Failed {
            stage: "load",
            error,
        };
        // O_NONBLOCK: a file swapped for a FIFO after the walk must not block the open.
        let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
        if !self.follow {
            flags |= libc::O_NOFOLLOW;
        }
        let file = match File::options()
            .read(true)
            .custom_flags(flags)
            .open(&task.path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && !self.follow => {
                return stop(
                    task,
                    Verdict::Skipped("symbolic link (not followed)".into()),
                )
            }
            Err(e) => {
                let v = failed(io_cause(&e));
                return stop(task, v);
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                let v = failed(io_cause(&e));
                return stop(task, v);
            }
        };
        if !meta.is_file() {
            return stop(task, Verdict::Skipped("not a regular file".into()));
        }
        let size = meta.len();
        let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
        if !self.force {
            if let Some(e) = self.manifest.get(&task.key) {
                if e.size == size
                    && (e.mtime_s, e.mtime_ns) == mtime
                    && self.sink.has(&task.object_key(), e.bytes_out)
                {
                    return stop(task, Verdict::Skipped("unchanged since last run".into()));
                }
            }
        }
        self.metrics.opened.fetch_add(1, Relaxed);
        self.metrics.opened_bytes.fetch_add(size, Relaxed);
        let deadline = self.task_timeout.map(|t| std::time::Instant::now() + t);
        let ctx = FileCtx::new(task, size, mtime, deadline);
        self.read_segments(ctx, file, out);
    }

    fn timed_out_words(&self) -> String {
        let t = self.task_timeout.unwrap_or_default();
        format!(
            "timed out after {} (--task-timeout)",
            humantime::format_duration(t)
        )
    }

    fn read_segments(&self, ctx: Arc<FileCtx>, mut file: File, out: &Emitter<Segment>) {
        let seg = self.segment_size;
        let n = ctx.size.div_ceil(seg).max(1);
        let mut dict: Option<Vec<u8>> = None;
        let emit_stop = |index: u64, v: Verdict| {
            let _ = out.emit(Segment {
                file: ctx.clone(),
                index: index as u32,
                body: SegmentBody::Stop(v),
            });
        };
        let failed = |error: String| Verdict::Failed {
            stage: "load",
            error,
        };
        for i in 0..n {
            if out.is_cancelled() {
                return emit_stop(i, Verdict::Cancelled);
            }
            if ctx.timed_out() {
                return emit_stop(i, failed(self.timed_out_words()));
            }
            let len = seg.min(ctx.size - i * seg);
            let Some(permit) = self.budget.acquire(len, out.cancel_token()) else {
                return emit_stop(i, Verdict::Cancelled);
            };
            // Read into spare capacity: no zeroing, and `take` stops exactly at the
            // segment's end without an extra read to find EOF.
            let mut data = Vec::with_capacity(len as usize);
            match (&mut file).take(len).read_to_end(&mut data) {
                Ok(n) if n as u64 == len => {}
                Ok(_) => return emit_stop(i, failed("changed while reading (file shrank)".into())),
                Err(e) => return emit_stop(i, failed(io_cause(&e))),
            }
            self.metrics.bytes_read.fetch_add(len, Relaxed);
            self.log
                .debug(|| format!("[load] {} segment {}/{n}", ctx.task.path.display(), i + 1));
            let last = i + 1 == n;
            if last {
                if let Some(why) = changed_since_open(&file, &ctx) {
                    return emit_stop(i, failed(why));
                }
            }
            let next_dict = (PRIMES_SEGMENTS && !last)
                .then(|| data[data.len().saturating_sub(DICT_SIZE)..].to_vec());
            let body = SegmentBody::Data {
                data,
                dict: std::mem::replace(&mut dict, next_dict),
                last,
                permit,
            };
            if out
                .emit(Segment {
                    file: ctx.clone(),
                    index: i as u32,
                    body,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// After the last segment: a file that grew, shrank or was rewritten while it was read
/// would be delivered torn; report it instead. `fstat` sees all three (size, mtime), so
/// no probe read for EOF is needed.
fn changed_since_open(file: &File, ctx: &FileCtx) -> Option<String> {
    match file.metadata() {
        Ok(m) if m.len() > ctx.size => Some("changed while reading (file grew)".into()),
        Ok(m) if m.len() < ctx.size => Some("changed while reading (file shrank)".into()),
        Ok(m) if (m.mtime(), m.mtime_nsec() as u32) != ctx.mtime => {
            Some("changed while reading (modified)".into())
        }
        Ok(_) => None,
        Err(e) => Some(io_cause(&e)),
    }
}
