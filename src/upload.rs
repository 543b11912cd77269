//! The upload stage: writes each file's packed pieces to the sink **in order**, whichever
//! worker received them, framed as one gzip member; commits or aborts; reports the outcome.
//!
//! Pieces of one file may arrive at different workers in any order. The uploader owns a
//! map from file id to that file's `Assembly`, which holds the early arrivals; the worker
//! that finds the next expected piece writes it (and any that follow) outside the lock, so
//! other workers never wait on I/O. A one-piece file (most small files) never enters the
//! map. The entry leaves the map with the piece that ends the file's stream.
//!
//! A panic while writing is caught here: that file fails with the panic's message, its
//! upload is aborted, and its later pieces are dropped (releasing their budget).

use crate::budget;
use crate::counters::Counters;
use crate::error::{FileError, Stage};
use crate::gzip::{self, CrcCombiner};
use crate::history::manifest::{Entry, Segments};
use crate::pipeline::{Deferred, Emitter};
use crate::sink::{Answer, ObjectMeta, Receipt, Sink, SinkError, Upload, WebMeta};
use crate::task::{FileCtx, Form, Outcome, Packed, PackedBody, Verdict};
use crate::view::Log;
use crate::words::human_bytes;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The largest object (compressed bytes) whose commit is deferred: its bytes stay under
/// the memory budget while the store answers (those of a bigger one, gathered by its
/// upload, would not), so hundreds in flight cost at most the budget.
const DEFER_AT_MOST: u64 = 1 << 20;

/// How many times more retries a throttled request gets than a failed one.
const THROTTLED_PATIENCE: u32 = 4;

/// The longest pause before a retry (before jitter), however many came before.
const LONGEST_BACKOFF: Duration = Duration::from_secs(20);

/// Shards of the assembly map: workers handling different files rarely share a lock.
const MAP_SHARDS: usize = 16;

/// The upload side of one multi-piece file: which piece is next, pieces that came early,
/// and the open upload.
#[derive(Default)]
struct Assembly {
    next: u32,
    pending: BTreeMap<u32, Packed>,
    /// A worker is writing this file's pieces right now.
    draining: bool,
    state: State,
    /// A handler panicked on one of its pieces, outside the writing: the file has failed,
    /// and its pieces are dropped as they come (releasing their budget) until all have.
    poisoned: bool,
    /// Pieces received so far, and the index of the one that ends the stream once seen:
    /// a poisoned file leaves the map when every piece has come.
    received: u32,
    end: Option<u32>,
}

impl Assembly {
    fn note(&mut self, index: u32, ends: bool) {
        self.received += 1;
        if ends {
            self.end = Some(index);
        }
    }

    /// Every piece of the stream has come.
    fn complete(&self) -> bool {
        self.end.is_some_and(|e| self.received > e)
    }
}

#[derive(Default)]
enum State {
    /// No piece written yet.
    #[default]
    Idle,
    /// The object is open.
    Open(Box<Open>),
    /// Taken by the worker that is writing.
    Busy,
    /// The outcome has been reported; later pieces are dropped.
    Done,
}

/// An object being written.
struct Open {
    upload: Box<dyn Upload>,
    tally: Tally,
}

/// What was written of an object so far, to check the sink's receipt and make the
/// manifest entry.
struct Tally {
    /// CRC-32 of the source, combined from the pieces.
    crc: CrcCombiner,
    /// CRC-32 and count of the bytes sent, to check the sink's receipt.
    sent: (crc32fast::Hasher, u64),
    /// Each piece's compressed length, and the first piece's decoded length: the
    /// segment index restore uses when segments are independent.
    pieces: (Vec<u64>, u64),
}

/// How transient sink failures are retried, shared by the upload workers and the answers
/// of commits in flight.
#[derive(Clone)]
struct Retries {
    /// Retries of a transient sink failure (per operation).
    count: u32,
    /// First retry delay; doubles each time, with jitter.
    backoff: Duration,
    /// Counts retries for the summary.
    metrics: Arc<Counters>,
    log: Log,
}

impl Retries {
    /// After `file`'s operation failed with `e` (its `attempt`th retry so far): the pause
    /// before trying again (counting the retry), or the file's error.
    fn after(
        &self,
        file: &FileCtx,
        attempt: &mut u32,
        e: SinkError,
        cancelled: bool,
    ) -> Result<Duration, FileError> {
        let timed_out = || match file.deadline {
            Some(d) => FileError::TimedOut(d.after),
            None => FileError::Sink(SinkError::TimedOut),
        };
        // A store that asks to slow down is not failing: it gets more patience, while the
        // upload limit comes down to what it takes.
        let allowed = match e {
            SinkError::Throttled => self.count.saturating_mul(THROTTLED_PATIENCE),
            _ => self.count,
        };
        match e {
            SinkError::TimedOut => Err(timed_out()),
            e if e.is_transient() && *attempt < allowed && !cancelled => {
                *attempt += 1;
                let n = *attempt;
                self.metrics.retried(1);
                let base = self
                    .backoff
                    .saturating_mul(1 << (n - 1).min(16))
                    .min(LONGEST_BACKOFF);
                // Full jitter in [base/2, base*3/2), from the file and attempt: no RNG state.
                let salt = (file.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n as u64) % 1000;
                let wait = base / 2 + base.mul_f64(salt as f64 / 1000.0);
                if file.deadline.is_some_and(|d| Instant::now() + wait >= d.at) {
                    return Err(timed_out());
                }
                self.log.debug(|| {
                    format!(
                        "[retry] {} attempt {n} in {wait:?}: {e}",
                        file.path.display()
                    )
                });
                Ok(wait)
            }
            e if e.is_transient() && *attempt > 0 => Err(FileError::GaveUp {
                source: e,
                retries: *attempt,
            }),
            e => Err(FileError::Sink(e)),
        }
    }
}

/// What the upload workers share: the sink, the settings, and the files in progress.
pub struct Uploader {
    sink: Arc<dyn Sink>,
    /// Whether the sink's commits wait without a thread: each file's commit is then
    /// deferred, and the worker goes on to the next file while the store answers.
    later: bool,
    /// Compression level (for the gzip header's XFL byte).
    level: u32,
    log: Log,
    retries: Retries,
    /// Multi-piece files in progress, by file id, in [`MAP_SHARDS`] shards.
    assemblies: Vec<Mutex<HashMap<u64, Arc<Mutex<Assembly>>>>>,
    /// `--cache-control`, set on each object where the sink keeps headers.
    cache_control: Option<String>,
    /// `--bwlimit`: the cap every write draws from.
    bwlimit: Option<Arc<crate::bwlimit::BwLimit>>,
    /// Whether the sink is a local directory (where a web file's gzip bytes go under
    /// `KEY.gz`, beside the file).
    local: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Uploader {
    /// An uploader into `sink`, framing gzip at `level`, retrying transient sink failures
    /// `retries` times from `backoff`.
    pub fn new(
        sink: Arc<dyn Sink>,
        level: u32,
        retries: u32,
        backoff: Duration,
        metrics: Arc<Counters>,
        log: Log,
    ) -> Self {
        Uploader {
            later: sink.commits_later(),
            local: sink.local_root().is_some(),
            cache_control: None,
            bwlimit: None,
            sink,
            level,
            retries: Retries {
                count: retries,
                backoff,
                metrics,
                log: log.clone(),
            },
            log,
            assemblies: (0..MAP_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// With `Cache-Control: value` on every object (`--cache-control`).
    pub fn cache_control(mut self, value: Option<String>) -> Self {
        self.cache_control = value;
        self
    }

    /// Sending no more than `cap` allows (`--bwlimit`), across all its workers.
    pub fn bwlimit(mut self, cap: Option<Arc<crate::bwlimit::BwLimit>>) -> Self {
        self.bwlimit = cap;
        self
    }

    /// Whether it defers commits (the sink's answer comes without a thread): its stage
    /// then needs only a few threads, whatever its limit.
    pub fn defers(&self) -> bool {
        self.later
    }

    /// Takes one packed piece; writes it and any pieces it unblocks, and emits the file's
    /// outcome when its stream ends.
    ///
    /// A panic anywhere in here (not only while writing) fails the piece's file by name:
    /// its upload is aborted, and its other pieces are dropped as they come, so no piece
    /// waits for one that will never be written and the run ends.
    pub fn handle(&self, piece: Packed, out: &Emitter<Outcome>) {
        let (file, index, ends) = (piece.file.clone(), piece.index, piece.ends_stream());
        let result = catch_unwind(AssertUnwindSafe(|| self.handle_piece(piece, out)));
        if let Err(panic) = result {
            let error = FileError::panicked(Stage::Upload, &*panic);
            self.poison(&file, index, ends, error, out);
        }
    }

    /// Fails `file` after a panic on its piece `index`.
    fn poison(
        &self,
        file: &Arc<FileCtx>,
        index: u32,
        ends: bool,
        e: FileError,
        out: &Emitter<Outcome>,
    ) {
        if index == 0 && ends {
            let _ = out.emit(failed(file, e));
            return;
        }
        let shard = &self.assemblies[file.id as usize % MAP_SHARDS];
        let asm = lock(shard).entry(file.id).or_default().clone();
        let mut a = lock(&asm);
        if !a.poisoned {
            a.poisoned = true;
            // The panicking piece was counted if it got as far as the map; if not, now.
            if !a.pending.contains_key(&index) && a.end != Some(index) && a.received <= index {
                a.note(index, ends);
            }
            a.pending.clear();
            match std::mem::replace(&mut a.state, State::Done) {
                State::Done => {}
                State::Open(mut open) => {
                    open.upload.abort();
                    let _ = out.emit(failed(file, e));
                }
                State::Idle | State::Busy => {
                    let _ = out.emit(failed(file, e));
                }
            }
        }
        if a.complete() {
            drop(a);
            lock(shard).remove(&file.id);
        }
    }

    fn handle_piece(&self, piece: Packed, out: &Emitter<Outcome>) {
        piece.file.injected_panic_at(Stage::Upload, piece.index);
        if piece.index == 0 && piece.ends_stream() {
            // A whole file in one piece: nothing to order.
            let file = piece.file.clone();
            let (_, outcome) = self.process_guarded(&file, State::Idle, piece, out);
            if let Some(o) = outcome {
                let _ = out.emit(o);
            }
            return;
        }
        let id = piece.file.id;
        let shard = &self.assemblies[id as usize % MAP_SHARDS];
        let asm = lock(shard).entry(id).or_default().clone();
        let file = piece.file.clone();
        let mut a = lock(&asm);
        a.note(piece.index, piece.ends_stream());
        if a.poisoned {
            // Its file failed already: drop the piece (and its budget).
            drop(piece);
            if a.complete() {
                drop(a);
                lock(shard).remove(&id);
            }
            return;
        }
        a.pending.insert(piece.index, piece);
        if a.draining {
            return;
        }
        a.draining = true;
        loop {
            let next = a.next;
            let Some(piece) = a.pending.remove(&next) else {
                a.draining = false;
                return;
            };
            a.next += 1;
            let ends = piece.ends_stream();
            let state = std::mem::replace(&mut a.state, State::Busy);
            drop(a);
            let (state, outcome) = self.process_guarded(&file, state, piece, out);
            if let Some(o) = outcome {
                let _ = out.emit(o);
            }
            if ends {
                // Every earlier piece has been written and none follows.
                lock(shard).remove(&id);
                return;
            }
            a = lock(&asm);
            a.state = state;
        }
    }

    /// [`Self::process`] with a panic turned into that file's failure.
    fn process_guarded(
        &self,
        file: &Arc<FileCtx>,
        state: State,
        piece: Packed,
        out: &Emitter<Outcome>,
    ) -> (State, Option<Outcome>) {
        let result = catch_unwind(AssertUnwindSafe(|| self.process(file, state, piece, out)));
        let (state, outcome) = result.unwrap_or_else(|panic| {
            let error = FileError::panicked(Stage::Upload, &*panic);
            // The upload, if open, was dropped in the unwind; `Drop` of every sink's
            // upload leaves nothing behind.
            (State::Done, Some(failed(file, error)))
        });
        (state, outcome)
    }

    /// Runs `op`, retrying transient sink errors with exponential backoff and jitter,
    /// within the file's deadline and unless the run is cancelled.
    fn retry<T>(
        &self,
        file: &FileCtx,
        out: &Emitter<Outcome>,
        mut op: impl FnMut() -> Result<T, SinkError>,
    ) -> Result<T, FileError> {
        let mut attempt: u32 = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let wait = self
                        .retries
                        .after(file, &mut attempt, e, out.is_cancelled())?;
                    if out.cancel_token().wait_timeout(wait) {
                        return Err(FileError::Sink(SinkError::Cancelled));
                    }
                }
            }
        }
    }

    /// Writes one piece in order: opens the object at the first, commits at the last, and
    /// returns the file's next state and, when it ends, its outcome.
    fn process(
        &self,
        file: &Arc<FileCtx>,
        state: State,
        piece: Packed,
        out: &Emitter<Outcome>,
    ) -> (State, Option<Outcome>) {
        let end = |state: State, v: Verdict| {
            if let State::Open(mut open) = state {
                open.upload.abort();
            }
            (State::Done, Some(undelivered(file, v)))
        };
        if let State::Done = state {
            return (State::Done, None);
        }
        let (deflate, crc_piece, len, last, permit) = match piece.body {
            PackedBody::Stop { verdict, .. } => return end(state, verdict),
            PackedBody::Link(target) => return (State::Done, Some(link_recorded(file, target))),
            PackedBody::Data { .. } if out.is_cancelled() => return end(state, Verdict::Cancelled),
            PackedBody::Data {
                deflate,
                crc,
                len,
                last,
                permit,
            } => (deflate, crc, len, last, permit),
        };
        if let Some(e) = file.timed_out() {
            return end(state, Verdict::failed(Stage::Upload, e));
        }
        file.injected_panic(Stage::Upload);
        let (mut open, mut buf) = match state {
            State::Open(open) => (open, Vec::new()),
            _ => match self.open(file, out) {
                Ok(opened) => opened,
                Err(e) => return (State::Done, Some(failed(file, e))),
            },
        };
        let tally = &mut open.tally;
        tally.crc.push(crc_piece, len);
        if tally.pieces.0.is_empty() {
            tally.pieces.1 = len;
        }
        tally.pieces.0.push(deflate.len() as u64);
        // Small files: header, deflate and trailer in one write.
        let trailer =
            (last && file.form.gzipped()).then(|| gzip::trailer(tally.crc.crc(), tally.crc.len()));
        let bytes: &[u8] = if buf.is_empty() && trailer.is_none() {
            &deflate
        } else {
            buf.extend_from_slice(&deflate);
            buf.extend_from_slice(trailer.as_ref().map_or(&[][..], |t| &t[..]));
            &buf
        };
        if let Some(cap) = &self.bwlimit {
            if !cap.take(bytes.len(), out.cancel_token()) {
                open.upload.abort();
                return (State::Done, Some(undelivered(file, Verdict::Cancelled)));
            }
        }
        if let Err(e) = self.retry(file, out, || open.upload.write(bytes)) {
            open.upload.abort();
            return (State::Done, Some(failed(file, e)));
        }
        open.tally.sent.0.update(bytes);
        open.tally.sent.1 += bytes.len() as u64;
        if let Some(t) = &file.transfer {
            t.advance(len);
        }
        if !last {
            return (State::Open(open), None);
        }
        // A small object's commit is deferred, holding the budget of its bytes until the
        // store answers; a bigger one's body is held by its upload, outside the budget,
        // and is committed here, so the threads bound those bytes.
        if self.later && open.tally.sent.1 <= DEFER_AT_MOST {
            if let Some(later) = out.defer() {
                self.commit_later(file, *open, (later, permit));
                return (State::Done, None);
            }
        }
        drop(permit);
        (State::Done, Some(self.commit(file, *open, out)))
    }

    /// Begins the object and frames the gzip header, returned as the start of the first
    /// write.
    fn open(
        &self,
        file: &FileCtx,
        out: &Emitter<Outcome>,
    ) -> Result<(Box<Open>, Vec<u8>), FileError> {
        let meta = ObjectMeta {
            mtime: Some(system_time(file.mtime)),
            source_size: file.size,
            deadline: file.deadline.map(|d| d.at),
            // No more open to others than the source: its read/write bits, and its
            // directories' (ferry's own user keeps what it needs to write and reread).
            mode: Some(file.modes.0 & 0o666 | 0o600),
            dir_mode: Some(file.modes.1 | 0o700),
            source_mode: Some(file.modes.0),
            web: match file.form {
                Form::Archive => None,
                form => Some(WebMeta {
                    content_type: crate::form::content_type_of(&file.key),
                    gzip: form == Form::Gzip,
                }),
            },
            cache_control: self.cache_control.clone(),
        };
        let key = file.object_key(self.local);
        let upload = self.retry(file, out, || self.sink.begin(&key, &meta))?;
        let name = file.path.file_name().unwrap_or_default();
        let mtime = u32::try_from(file.mtime.0.max(0)).unwrap_or(0);
        // A web file that goes unchanged has no gzip framing.
        let header = match file.form.gzipped() {
            true => gzip::header(
                std::os::unix::ffi::OsStrExt::as_bytes(name),
                mtime,
                self.level,
            ),
            false => Vec::new(),
        };
        let open = Open {
            upload,
            tally: Tally {
                crc: CrcCombiner::default(),
                sent: (crc32fast::Hasher::new(), 0),
                pieces: (Vec::new(), 0),
            },
        };
        Ok((Box::new(open), header))
    }

    /// Commits the object and checks the sink's receipt against what was sent.
    fn commit(&self, file: &FileCtx, mut open: Open, out: &Emitter<Outcome>) -> Outcome {
        open.upload.source_crc32(open.tally.crc.crc());
        match self.retry(file, out, || open.upload.commit()) {
            Ok(receipt) => open.tally.delivered(file, receipt, &self.log),
            Err(e) => {
                open.upload.abort();
                failed(file, e)
            }
        }
    }

    /// [`Self::commit`], deferred: the sink commits on its own threads and answers each
    /// attempt; the outcome goes downstream from there, while this worker goes on.
    fn commit_later(
        &self,
        file: &Arc<FileCtx>,
        mut open: Open,
        (later, budget): (Deferred<Outcome>, budget::Permit),
    ) {
        open.upload.source_crc32(open.tally.crc.crc());
        let (file, retries, log) = (file.clone(), self.retries.clone(), self.log.clone());
        // The budget of the object's bytes goes with the answer that ends the commit.
        let mut pending = Some((open.tally, later, budget));
        let mut attempt = 0;
        let answer: Answer = Box::new(move |result| {
            let (tally, later, budget) = pending.take()?;
            /// What an answer leads to: another attempt after a pause, or the outcome.
            enum Next {
                Again(Duration, Tally),
                Done(Outcome),
            }
            let next = catch_unwind(AssertUnwindSafe(|| match result {
                Ok(receipt) => Next::Done(tally.delivered(&file, receipt, &log)),
                Err(e) => {
                    let cancelled = later.cancel_token().is_cancelled();
                    match retries.after(&file, &mut attempt, e, cancelled) {
                        Ok(wait) => Next::Again(wait, tally),
                        Err(e) => Next::Done(failed(&file, e)),
                    }
                }
            }))
            .unwrap_or_else(|panic| {
                Next::Done(failed(&file, FileError::panicked(Stage::Upload, &*panic)))
            });
            match next {
                Next::Again(wait, tally) => {
                    pending = Some((tally, later, budget));
                    Some(wait)
                }
                Next::Done(outcome) => {
                    let _ = later.emit(outcome);
                    None
                }
            }
        });
        open.upload.commit_later(answer);
    }
}

impl Tally {
    /// The outcome of a committed object: checked against the sink's `receipt`, its
    /// manifest entry.
    fn delivered(mut self, file: &FileCtx, receipt: Receipt, log: &Log) -> Outcome {
        let (sent_crc, written) = (self.sent.0.finalize(), self.sent.1);
        if receipt.bytes != written || receipt.crc32.is_some_and(|c| c != sent_crc) {
            return failed(
                file,
                FileError::Receipt {
                    received: receipt.bytes,
                    sent: written,
                },
            );
        }
        // Load checks sizes, so this holds; asserted because a short object must never be
        // recorded as delivered.
        assert_eq!(
            self.crc.len(),
            file.size,
            "bytes delivered differ from the size"
        );
        log.info(|| {
            format!(
                "[done] {} {} → {}",
                file.path.display(),
                human_bytes(file.size),
                human_bytes(written)
            )
        });
        Outcome {
            path: file.path.clone(),
            result: Ok(Entry {
                key: file.key.as_path().into(),
                size: file.size,
                mtime_s: file.mtime.0,
                mtime_ns: file.mtime.1,
                ctime: Some(file.ctime),
                crc32: self.crc.crc(),
                bytes_out: written,
                zcrc32: Some(sent_crc),
                segments: (!gzip::PRIMES_SEGMENTS
                    && file.form.gzipped()
                    && self.pieces.0.len() > 1)
                    .then(|| {
                        let (z, len) = std::mem::take(&mut self.pieces);
                        Segments { len, z }
                    }),
                mode: Some(file.modes.0),
                owner: Some(file.owner),
                link: None,
                dir: false,
                form: (file.form != Form::Archive).then_some(file.form),
                etag: receipt.etag,
                inode: Some(file.inode),
            }),
        }
    }
}

/// A symbolic link's outcome: its entry, with its text and no object.
fn link_recorded(file: &FileCtx, target: std::ffi::OsString) -> Outcome {
    use std::os::unix::ffi::OsStrExt;
    let mut crc = flate2::Crc::new();
    crc.update(target.as_bytes());
    Outcome {
        path: file.path.clone(),
        result: Ok(Entry {
            key: file.key.as_path().into(),
            size: target.len() as u64,
            mtime_s: file.mtime.0,
            mtime_ns: file.mtime.1,
            ctime: Some(file.ctime),
            crc32: crc.sum(),
            bytes_out: 0,
            zcrc32: None,
            segments: None,
            mode: None,
            owner: Some(file.owner),
            link: Some(std::path::Path::new(&target).into()),
            dir: false,
            form: None,
            etag: None,
            inode: None,
        }),
    }
}

fn undelivered(file: &FileCtx, v: Verdict) -> Outcome {
    Outcome {
        path: file.path.clone(),
        result: Err(v),
    }
}

fn failed(file: &FileCtx, e: FileError) -> Outcome {
    match e {
        // The sink gave up waiting because the run was cancelled: not the file's fault.
        FileError::Sink(SinkError::Cancelled) => undelivered(file, Verdict::Cancelled),
        e => undelivered(file, Verdict::failed(Stage::Upload, e)),
    }
}

fn system_time((secs, nanos): (i64, u32)) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
