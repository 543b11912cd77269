//! The upload stage: writes each file's packed pieces to the sink **in order**, whichever
//! worker received them, framed as one gzip member; commits or aborts; reports the outcome.
//!
//! Pieces of one file may arrive at different workers in any order. Each file's
//! [`Assembly`] holds the early arrivals; the worker that finds the next expected piece
//! writes it (and any that follow) outside the lock, so other workers never wait on I/O.

use crate::gzip::{self, CrcCombiner};
use crate::manifest::Entry;
use crate::pipeline::Emitter;
use crate::report::Log;
use crate::sink::{ObjectMeta, Sink, SinkError, Upload};
use crate::task::{FileCtx, Outcome, Packed, PackedBody, Status, Verdict};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The upload side of one file: which piece is next, pieces that came early, and the open
/// upload. Lives inside the file's [`FileCtx`].
#[derive(Default)]
pub struct Assembly {
    next: u32,
    pending: BTreeMap<u32, Packed>,
    /// A worker is writing this file's pieces right now.
    draining: bool,
    state: State,
}

#[derive(Default)]
enum State {
    /// No piece written yet.
    #[default]
    Idle,
    /// The object is open.
    Open {
        upload: Box<dyn Upload>,
        /// CRC-32 of the source, combined from the pieces.
        crc: CrcCombiner,
        /// CRC-32 and count of the bytes sent, to check the sink's receipt.
        sent: (crc32fast::Hasher, u64),
    },
    /// Taken by the worker that is writing.
    Busy,
    /// The outcome has been reported; later pieces are dropped.
    Done,
}

/// Everything the upload workers share.
pub struct Uploader {
    /// Where objects go.
    pub sink: Arc<dyn Sink>,
    /// Compression level (for the gzip header's XFL byte).
    pub level: u32,
    /// Per-file log lines and errors.
    pub log: Log,
    /// Retries of a transient sink failure (per operation).
    pub retries: u32,
    /// First retry delay; doubles each time, with jitter.
    pub backoff: Duration,
    /// `--task-timeout`, for messages (each file carries its own deadline).
    pub task_timeout: Option<Duration>,
}

impl Uploader {
    /// Takes one packed piece; writes it and any pieces it unblocks, and emits the file's
    /// outcome when its stream ends.
    pub fn handle(&self, piece: Packed, out: &Emitter<Outcome>) {
        let file = piece.file.clone();
        let mut asm = lock(&file);
        asm.pending.insert(piece.index, piece);
        if asm.draining {
            return;
        }
        asm.draining = true;
        loop {
            let next = asm.next;
            let Some(piece) = asm.pending.remove(&next) else {
                asm.draining = false;
                return;
            };
            asm.next += 1;
            let state = std::mem::replace(&mut asm.state, State::Busy);
            drop(asm);
            let (state, outcome) = self.process(&file, state, piece, out);
            if let Some(o) = outcome {
                let _ = out.emit(o);
            }
            asm = lock(&file);
            asm.state = state;
        }
    }

    /// Runs `op`, retrying transient sink errors with exponential backoff and jitter,
    /// within the file's deadline and unless the run is cancelled.
    fn retry<T>(
        &self,
        file: &FileCtx,
        out: &Emitter<Outcome>,
        mut op: impl FnMut() -> Result<T, SinkError>,
    ) -> Result<T, String> {
        let mut attempt: u32 = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(SinkError::TimedOut) => return Err(self.timed_out()),
                Err(e) if e.is_transient() && attempt < self.retries && !out.is_cancelled() => {
                    attempt += 1;
                    out.stage_metrics().retries.fetch_add(1, Relaxed);
                    let base = self.backoff.saturating_mul(1 << (attempt - 1).min(16));
                    // Full jitter in [base/2, base*3/2), from the file and attempt: no RNG state.
                    let salt =
                        (file.task.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ attempt as u64) % 1000;
                    let wait = base / 2 + base.mul_f64(salt as f64 / 1000.0);
                    let wait = match file.deadline {
                        Some(d) if Instant::now() + wait >= d => return Err(self.timed_out()),
                        _ => wait,
                    };
                    self.log.debug(|| {
                        format!(
                            "[retry] {} attempt {attempt} in {wait:?}: {e}",
                            file.task.path.display()
                        )
                    });
                    if out.cancel_token().wait_timeout(wait) {
                        return Err(e.to_string());
                    }
                }
                Err(e) if e.is_transient() && attempt > 0 => {
                    return Err(format!("{e} (gave up after {} retries)", attempt))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn timed_out(&self) -> String {
        match self.task_timeout {
            Some(t) => format!(
                "timed out after {} (--task-timeout)",
                humantime::format_duration(t)
            ),
            None => "timed out".into(),
        }
    }

    fn process(
        &self,
        file: &FileCtx,
        state: State,
        piece: Packed,
        out: &Emitter<Outcome>,
    ) -> (State, Option<Outcome>) {
        let end = |status: Status| Some(Outcome::undelivered(file.task.clone(), status));
        let fail = |error: String| {
            end(Status::Failed {
                stage: "upload",
                error,
            })
        };
        let abort = |state: State| {
            if let State::Open { mut upload, .. } = state {
                upload.abort();
            }
        };
        if let State::Done = state {
            return (State::Done, None);
        }
        let (deflate, crc_piece, len, last, _permit) = match piece.body {
            PackedBody::Stop(v) => {
                abort(state);
                return (State::Done, end(v.into()));
            }
            PackedBody::Data { .. } if out.is_cancelled() => {
                abort(state);
                return (State::Done, end(Verdict::Cancelled.into()));
            }
            PackedBody::Data { .. } if file.deadline.is_some_and(|d| Instant::now() >= d) => {
                abort(state);
                return (State::Done, fail(self.timed_out()));
            }
            PackedBody::Data {
                deflate,
                crc,
                len,
                last,
                permit,
            } => (deflate, crc, len, last, permit),
        };
        let (mut upload, mut crc, mut sent, mut buf) = match state {
            State::Open { upload, crc, sent } => (upload, crc, sent, Vec::new()),
            _ => {
                let meta = ObjectMeta {
                    mtime: Some(system_time(file.mtime)),
                    source_size: file.size,
                    deadline: file.deadline,
                };
                let key = file.task.object_key();
                let upload = match self.retry(file, out, || self.sink.begin(&key, &meta)) {
                    Ok(u) => u,
                    Err(e) => return (State::Done, fail(e)),
                };
                let name = file.task.path.file_name().unwrap_or_default();
                let mtime = u32::try_from(file.mtime.0.max(0)).unwrap_or(0);
                let header = gzip::header(
                    std::os::unix::ffi::OsStrExt::as_bytes(name),
                    mtime,
                    self.level,
                );
                (
                    upload,
                    CrcCombiner::default(),
                    (crc32fast::Hasher::new(), 0),
                    header,
                )
            }
        };
        crc.push(crc_piece, len);
        // Small files: header, deflate and trailer in one write.
        let trailer = last.then(|| gzip::trailer(crc.crc(), crc.len()));
        let bytes: &[u8] = if buf.is_empty() && trailer.is_none() {
            &deflate
        } else {
            buf.extend_from_slice(&deflate);
            buf.extend_from_slice(trailer.as_ref().map_or(&[][..], |t| &t[..]));
            &buf
        };
        if let Err(e) = self.retry(file, out, || upload.write(bytes)) {
            upload.abort();
            return (State::Done, fail(e));
        }
        sent.0.update(bytes);
        sent.1 += bytes.len() as u64;
        if !last {
            return (State::Open { upload, crc, sent }, None);
        }
        upload.source_crc32(crc.crc());
        let receipt = match self.retry(file, out, || upload.commit()) {
            Ok(r) => r,
            Err(e) => {
                upload.abort();
                return (State::Done, fail(e));
            }
        };
        let (sent_crc, written) = (sent.0.finalize(), sent.1);
        if receipt.bytes != written || receipt.crc32.is_some_and(|c| c != sent_crc) {
            return (
                State::Done,
                fail(format!(
                    "the sink received different bytes than were sent ({} of {written})",
                    receipt.bytes
                )),
            );
        }
        if crc.len() != file.size {
            // Cannot happen: load checks sizes. Kept as a tripwire for the invariant.
            return (
                State::Done,
                fail(format!(
                    "internal: {} bytes delivered of {}",
                    crc.len(),
                    file.size
                )),
            );
        }
        self.log.info(|| {
            format!(
                "[done] {} {} → {}",
                file.task.path.display(),
                crate::report::human_bytes(file.size),
                crate::report::human_bytes(written)
            )
        });
        let outcome = Outcome {
            task: file.task.clone(),
            status: Status::Succeeded,
            bytes_in: file.size,
            bytes_out: written,
            record: Some(Entry {
                key: file.task.key.as_path().into(),
                size: file.size,
                mtime_s: file.mtime.0,
                mtime_ns: file.mtime.1,
                crc32: crc.crc(),
                bytes_out: written,
            }),
        };
        (State::Done, Some(outcome))
    }
}

fn lock(file: &FileCtx) -> std::sync::MutexGuard<'_, Assembly> {
    file.assembly.lock().unwrap_or_else(|e| e.into_inner())
}

fn system_time((secs, nanos): (i64, u32)) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
