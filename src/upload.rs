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
use crate::sink::{ObjectMeta, Sink, Upload};
use crate::task::{FileCtx, Outcome, Packed, PackedBody, Status, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
        crc: CrcCombiner,
        written: u64,
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
            let (state, outcome) = self.process(&file, state, piece, out.is_cancelled());
            if let Some(o) = outcome {
                let _ = out.emit(o);
            }
            asm = lock(&file);
            asm.state = state;
        }
    }

    fn process(
        &self,
        file: &FileCtx,
        state: State,
        piece: Packed,
        cancelled: bool,
    ) -> (State, Option<Outcome>) {
        let end = |status: Status| Some(Outcome::undelivered(file.task.clone(), status));
        let fail = |error: String| {
            end(Status::Failed {
                stage: "upload",
                error,
            })
        };
        let abort = |state: State| {
            if let State::Open { upload, .. } = state {
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
            PackedBody::Data { .. } if cancelled => {
                abort(state);
                return (State::Done, end(Verdict::Cancelled.into()));
            }
            PackedBody::Data {
                deflate,
                crc,
                len,
                last,
                permit,
            } => (deflate, crc, len, last, permit),
        };
        let (mut upload, mut crc, mut written, mut buf) = match state {
            State::Open {
                upload,
                crc,
                written,
            } => (upload, crc, written, Vec::new()),
            _ => {
                let meta = ObjectMeta {
                    mtime: Some(system_time(file.mtime)),
                    source_size: file.size,
                };
                let upload = match self.sink.begin(&file.task.object_key(), &meta) {
                    Ok(u) => u,
                    Err(e) => return (State::Done, fail(e.to_string())),
                };
                let name = file.task.path.file_name().unwrap_or_default();
                let mtime = u32::try_from(file.mtime.0.max(0)).unwrap_or(0);
                let header = gzip::header(
                    std::os::unix::ffi::OsStrExt::as_bytes(name),
                    mtime,
                    self.level,
                );
                (upload, CrcCombiner::default(), 0, header)
            }
        };
        crc.push(crc_piece, len);
        // Small files: header, deflate and trailer in one write.
        let trailer = last.then(|| gzip::trailer(crc.crc(), crc.len()));
        let result = if buf.is_empty() && trailer.is_none() {
            upload.write(&deflate)
        } else {
            buf.extend_from_slice(&deflate);
            buf.extend_from_slice(trailer.as_ref().map_or(&[][..], |t| &t[..]));
            upload.write(&buf)
        };
        written += (buf.len().max(deflate.len())) as u64;
        if let Err(e) = result {
            upload.abort();
            return (State::Done, fail(e.to_string()));
        }
        if !last {
            return (
                State::Open {
                    upload,
                    crc,
                    written,
                },
                None,
            );
        }
        if let Err(e) = upload.commit() {
            return (State::Done, fail(e.to_string()));
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
