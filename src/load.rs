//! The load stage: opens each file safely, checks whether it changed since the last run,
//! and reads it as segments within the memory budget.

use crate::budget::Budget;
use crate::counters::Counters;
use crate::error::{Change, FileError, Stage};
use crate::gzip::{DICT_SIZE, PRIMES_SEGMENTS};
use crate::history::manifest::Index;
use crate::pipeline::Emitter;
use crate::sink::Sink;
use crate::task::{
    Deadline, FileCtx, FileTask, Form, Segment, SegmentBody, Skip, Stat, Verdict, Web,
};
use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far a file's stream got, so a panic can end it where it stopped.
#[derive(Default)]
struct Sent {
    /// The file, once opened.
    file: Cell<Option<Arc<FileCtx>>>,
    /// Segments emitted so far: the index a closing `Stop` takes.
    next: Cell<u32>,
}

/// Everything the load workers share.
pub struct Loader {
    /// Segment size in bytes.
    pub segment_size: u64,
    /// Follow symbolic links (otherwise a link is never opened through).
    pub follow: bool,
    /// Rewrite files even if the manifest says they are unchanged.
    pub force: bool,
    /// What earlier runs delivered, by key hash.
    pub index: Arc<Index>,
    /// The sink, to check a manifest entry's object still exists.
    pub sink: Arc<dyn Sink>,
    /// The memory budget.
    pub budget: Arc<Budget>,
    /// Run counters.
    pub metrics: Arc<Counters>,
    /// `--task-timeout`: each file must be delivered within this long of being opened.
    pub task_timeout: Option<Duration>,
    /// Segment events at `-vv`.
    pub log: crate::view::Log,
    /// `--dry-run`: decide from one stat what would happen, and open nothing.
    pub dry_run: bool,
    /// `--web`: files stored as a web server sends them, not as an archive.
    pub web: Option<Web>,
    /// Files named `*.gz` go as they are, under their own name (`ferry watch`).
    pub gz_as_is: bool,
    /// `ferry watch`: renamed files whose objects were copied to their keys before the
    /// shipment began; each is skipped while it is still what was copied.
    pub renamed: Arc<crate::task::Renamed>,
}

impl Loader {
    /// Handles one task: emits its segments in order, or a single `Stop`, and always ends
    /// the file's stream (last segment or `Stop`) unless downstream is gone.
    ///
    /// A panic while loading is caught here: the file's stream ends with a `Stop` that
    /// fails it by name, after whatever segments were already sent.
    pub fn load(&self, task: FileTask, out: &Emitter<Segment>) {
        let (id, path, key) = (task.id, task.path.clone(), task.key.clone());
        let sent = Sent::default();
        let result = catch_unwind(AssertUnwindSafe(|| self.load_task(task, out, &sent)));
        if let Err(panic) = result {
            let file = sent.file.take().unwrap_or_else(|| {
                let task = FileTask {
                    id,
                    path,
                    key,
                    verdict: None,
                };
                FileCtx::new(task, 0, (0, 0), None)
            });
            let error = FileError::panicked(Stage::Load, &*panic);
            let _ = out.emit(Segment {
                file,
                index: sent.next.get(),
                body: SegmentBody::Stop(Verdict::failed(Stage::Load, error)),
            });
        }
    }

    fn load_task(&self, task: FileTask, out: &Emitter<Segment>, sent: &Sent) {
        let stop = |task: FileTask, v: Verdict| {
            let _ = out.emit(Segment {
                file: FileCtx::new(task, 0, (0, 0), None),
                index: 0,
                body: SegmentBody::Stop(v),
            });
        };
        let mut task = task;
        if let Some(v) = task.verdict.take() {
            return stop(task, v);
        }
        if out.is_cancelled() {
            return stop(task, Verdict::Cancelled);
        }
        let failed = |e: std::io::Error| Verdict::failed(Stage::Load, e);
        if self.beside_its_own(&task) {
            return stop(task, Verdict::Skipped(Skip::WebCopy));
        }
        // A rerun: one stat tells an unchanged file, without opening it.
        if self.unchanged(&task, None) {
            return stop(task, Verdict::Skipped(Skip::Unchanged));
        }
        if self.dry_run {
            let v = self.dry_run_verdict(&task);
            return stop(task, v);
        }
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
                return self.record_link(task, out);
            }
            Err(e) => return stop(task, failed(e)),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return stop(task, failed(e)),
        };
        if !meta.is_file() {
            return stop(task, Verdict::Skipped(Skip::Special("not a regular file")));
        }
        let size = meta.len();
        if let Some((seen, from)) = self.renamed.get(&task.key) {
            if crate::task::Seen::of(&meta) == *seen {
                let from = from.clone();
                return stop(task, Verdict::Skipped(Skip::Renamed { from }));
            }
        }
        if self.unchanged(&task, Some(&meta)) {
            return stop(task, Verdict::Skipped(Skip::Unchanged));
        }
        let transfer = self.metrics.opened_file(task.id, &task.key, size);
        let deadline = self.task_timeout.map(|after| Deadline {
            at: Instant::now() + after,
            after,
        });
        let stat = Stat::of(&meta, dir_modes(&task.path, &task.key));
        let form = self.form_of(&task);
        let ctx = FileCtx::opened(task, stat, deadline, Some(transfer), form);
        sent.file.set(Some(ctx.clone()));
        self.read_segments(ctx, file, out, sent);
    }

    /// A symbolic link, not followed: its text and its own times go downstream to be
    /// recorded (no object is stored), unless the history has it unchanged.
    fn record_link(&self, task: FileTask, out: &Emitter<Segment>) {
        let stop = |task: FileTask, v: Verdict| {
            let _ = out.emit(Segment {
                file: FileCtx::new(task, 0, (0, 0), None),
                index: 0,
                body: SegmentBody::Stop(v),
            });
        };
        let failed = |e: std::io::Error| Verdict::failed(Stage::Load, e);
        let (meta, target) = match std::fs::symlink_metadata(&task.path)
            .and_then(|m| std::fs::read_link(&task.path).map(|t| (m, t)))
        {
            Ok(got) => got,
            Err(e) => return stop(task, failed(e)),
        };
        let stat = Stat {
            size: target.as_os_str().len() as u64,
            modes: (meta.mode() & 0o7777, 0o777),
            ..Stat::of(&meta, 0o777)
        };
        let (size, mtime, ctime) = (stat.size, stat.mtime, stat.ctime);
        let unchanged = !self.force
            && (self.index.get(&task.key))
                .is_some_and(|e| e.bytes_out == 0 && e.same_as(size, mtime, ctime));
        if unchanged {
            return stop(task, Verdict::Skipped(Skip::Unchanged));
        }
        if self.dry_run {
            return stop(task, Verdict::Skipped(Skip::DryRunLink));
        }
        let ctx = FileCtx::opened(task, stat, None, None, Form::Archive);
        let _ = out.emit(Segment {
            file: ctx,
            index: 0,
            body: SegmentBody::Link(target.into_os_string()),
        });
    }

    /// What a `--dry-run` says of a file that is not unchanged: from one stat, what
    /// loading it would find — a file to send, a link not followed, a special file, or
    /// the error of the stat.
    fn dry_run_verdict(&self, task: &FileTask) -> Verdict {
        let meta = match self.follow {
            true => std::fs::metadata(&task.path),
            false => std::fs::symlink_metadata(&task.path),
        };
        match meta {
            Ok(m) if m.is_file() => Verdict::Skipped(Skip::DryRun { size: m.len() }),
            // A link not followed would be recorded: no object, no bytes.
            Ok(m) if m.file_type().is_symlink() => Verdict::Skipped(Skip::DryRunLink),
            Ok(_) => Verdict::Skipped(Skip::Special("not a regular file")),
            Err(e) => Verdict::failed(Stage::Load, e),
        }
    }

    /// Whether `task` is `X.gz` beside a file `X` that `--web` gzips into `dir:`, where
    /// `X.gz` is what ferry writes for `X` (one stat, only for such names).
    fn beside_its_own(&self, task: &FileTask) -> bool {
        let Some(web) = &self.web else { return false };
        if self.sink.local_root().is_none() {
            return false;
        }
        let stem = |p: &Path| crate::form::strip_gz(p.as_os_str()).map(PathBuf::from);
        let (Some(key), Some(path)) = (stem(&task.key), stem(&task.path)) else {
            return false;
        };
        web.form_of(&key) == Form::Gzip && path.is_file()
    }

    /// How the file at `key` is stored in this run.
    /// How `task` is stored in this run. With `gz_as_is`, `X.gz` goes as it is, unless a
    /// file `X` beside it would be stored under that very name (one stat, only then).
    fn form_of(&self, task: &FileTask) -> Form {
        form_of(&task.path, &task.key, self.gz_as_is, self.web.as_ref())
    }

    /// Whether `task` was delivered before and has not changed since: same size and
    /// mtime (from `meta`, or else one `stat` of the path), stored in the form this run
    /// would store it in, and its object still at the sink (seen in the sink's listing,
    /// or else one request asks).
    fn unchanged(&self, task: &FileTask, meta: Option<&std::fs::Metadata>) -> bool {
        if self.force {
            return false;
        }
        let Some(e) = self.index.get(&task.key) else {
            return false;
        };
        let stat;
        let meta = match meta {
            Some(m) => m,
            None => {
                let m = match self.follow {
                    true => std::fs::metadata(&task.path),
                    false => std::fs::symlink_metadata(&task.path),
                };
                match m {
                    Ok(m) if m.is_file() => {
                        stat = m;
                        &stat
                    }
                    // Gone, a link, a FIFO: opening it decides what to say.
                    _ => return false,
                }
            }
        };
        let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
        let form = self.form_of(task);
        let local = self.sink.local_root().is_some();
        e.same_as(meta.len(), mtime, (meta.ctime(), meta.ctime_nsec() as u32))
            && e.form() == form
            && (e.listed()
                || self
                    .sink
                    .has(&form.object_key(&task.key, local), e.bytes_out))
    }

    fn read_segments(
        &self,
        ctx: Arc<FileCtx>,
        mut file: File,
        out: &Emitter<Segment>,
        sent: &Sent,
    ) {
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
        let failed = |e: FileError| Verdict::failed(Stage::Load, e);
        for i in 0..n {
            if out.is_cancelled() {
                return emit_stop(i, Verdict::Cancelled);
            }
            if let Some(e) = ctx.timed_out() {
                return emit_stop(i, failed(e));
            }
            let len = seg.min(ctx.size - i * seg);
            let Some(permit) = self.budget.reserve(len, out) else {
                return emit_stop(i, Verdict::Cancelled);
            };
            // Read into spare capacity: no zeroing, and `take` stops exactly at the
            // segment's end without an extra read to find EOF.
            let mut data = Vec::with_capacity(len as usize);
            match (&mut file).take(len).read_to_end(&mut data) {
                Ok(n) if n as u64 == len => {}
                Ok(_) => return emit_stop(i, failed(FileError::Changed(Change::Shrank))),
                Err(e) => return emit_stop(i, failed(e.into())),
            }
            self.metrics.bytes_read.fetch_add(len, Relaxed);
            self.log
                .debug(|| format!("[load] {} segment {}/{n}", ctx.path.display(), i + 1));
            let last = i + 1 == n;
            if last {
                if let Some(e) = changed_since_open(&file, &ctx) {
                    return emit_stop(i, failed(e));
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
            sent.next.set(i as u32 + 1);
            if i == 0 {
                ctx.injected_panic(Stage::Load);
            }
        }
    }
}

/// The permission bits of the directories above `path` within its input (as many levels
/// as `key` has directories), ANDed: the most a directory a local sink makes for it may
/// allow. Each worker remembers the last directory asked about (files come a directory at
/// a time), so this is a few `stat`s a directory, not a file.
fn dir_modes(path: &Path, key: &Path) -> u32 {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(PathBuf, u32)>> = const { std::cell::RefCell::new(None) };
    }
    let Some(parent) = path.parent() else {
        return 0o777;
    };
    if let Some(m) = LAST.with_borrow(|l| l.as_ref().filter(|(p, _)| p == parent).map(|(_, m)| *m))
    {
        return m;
    }
    let depth = key.components().count().saturating_sub(1);
    let mut mode = 0o777;
    let mut at = Some(parent);
    for _ in 0..depth {
        let Some(dir) = at else { break };
        if let Ok(m) = std::fs::metadata(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            mode &= m.mode() & 0o777;
        }
        at = dir.parent();
    }
    LAST.with_borrow_mut(|l| *l = Some((parent.to_path_buf(), mode)));
    mode
}

/// After the last segment: a file that grew, shrank or was rewritten while it was read
/// would be delivered torn; report it instead. `fstat` sees all of it (size, mtime, and
/// ctime, which a rewrite moves even when the mtime is put back), so no probe read for
/// EOF is needed.
fn changed_since_open(file: &File, ctx: &FileCtx) -> Option<FileError> {
    let change = match file.metadata() {
        Ok(m) if m.len() > ctx.size => Change::Grew,
        Ok(m) if m.len() < ctx.size => Change::Shrank,
        Ok(m) if (m.mtime(), m.mtime_nsec() as u32) != ctx.mtime => Change::Modified,
        Ok(m) if (m.ctime(), m.ctime_nsec() as u32) != ctx.ctime => Change::Modified,
        Ok(_) => return None,
        Err(e) => return Some(e.into()),
    };
    Some(FileError::Changed(change))
}

/// How the file at `path`, of `key`, is stored: as it is when it is named `*.gz` and
/// `gz_as_is` (unless the file of its name without `.gz` lies beside it), as `web` says
/// with `--web`, else as the archive's `KEY.gz`.
pub fn form_of(path: &Path, key: &Path, gz_as_is: bool, web: Option<&Web>) -> Form {
    if gz_as_is && crate::form::strip_gz(key.as_os_str()).is_some() {
        let beside = crate::form::strip_gz(path.as_os_str()).map(Path::new);
        if !beside.is_some_and(Path::exists) {
            return Form::Plain;
        }
    }
    web.map_or(Form::Archive, |w| w.form_of(key))
}
