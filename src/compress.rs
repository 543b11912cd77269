//! The compress stage: deflates each segment into a piece, with a compressor of its own per
//! worker. A `Stop` passes through untouched, so every file's stream still ends.
//!
//! A panic while deflating is caught here, where the piece's file is known: the piece
//! becomes a `Stop` that fails that file, and the upload stage closes it as usual. (The
//! engine would catch it too, but could not say which file it was.)

use crate::error::{FileError, Stage};
use crate::gzip::{self, SegmentCompressor};
use crate::pipeline::Emitter;
use crate::task::{FileCtx, Packed, PackedBody, Segment, SegmentBody, Verdict};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// One compress worker: its reusable deflate state.
pub struct Compressor {
    deflate: SegmentCompressor,
}

impl Compressor {
    /// A worker compressing at gzip `level` (0–9).
    pub fn new(level: u32) -> Self {
        Compressor {
            deflate: SegmentCompressor::new(level),
        }
    }

    /// Compresses one segment and emits its piece (or passes its `Stop` on).
    ///
    /// A panic anywhere in here, not only in the deflate engine, becomes a `Stop` for this
    /// piece that fails its file by name, so the upload stage never waits for a piece
    /// that will not come.
    pub fn handle(&mut self, s: Segment, out: &Emitter<Packed>) {
        let (file, index) = (s.file.clone(), s.index);
        let last = match &s.body {
            SegmentBody::Stop(_) | SegmentBody::Link(_) => true,
            SegmentBody::Data { last, .. } => *last,
        };
        let result = catch_unwind(AssertUnwindSafe(|| self.handle_segment(s, out)));
        if let Err(panic) = result {
            // The engine may be half-updated: start afresh.
            self.deflate = SegmentCompressor::new(self.deflate.level());
            let error = FileError::panicked(Stage::Compress, &*panic);
            let _ = out.emit(Packed {
                file,
                index,
                body: PackedBody::Stop {
                    verdict: Verdict::failed(Stage::Compress, error),
                    last,
                },
            });
        }
    }

    fn handle_segment(&mut self, s: Segment, out: &Emitter<Packed>) {
        s.file.injected_panic_at(Stage::Compress, s.index);
        let body = match s.body {
            // From load: nothing follows it.
            SegmentBody::Stop(verdict) => PackedBody::Stop {
                verdict,
                last: true,
            },
            SegmentBody::Link(target) => PackedBody::Link(target),
            // A web file that goes unchanged (`--web`, not a `--web-ext`): its bytes pass
            // as they are, with their CRC.
            SegmentBody::Data {
                data, last, permit, ..
            } if !s.file.form.gzipped() && !out.is_cancelled() => {
                let (crc, len) = (gzip::crc32(&data), data.len() as u64);
                PackedBody::Data {
                    deflate: data,
                    crc,
                    len,
                    last,
                    permit,
                }
            }
            SegmentBody::Data {
                data,
                dict,
                last,
                permit,
            } => {
                let deflated = match out.is_cancelled() {
                    true => Err(Verdict::Cancelled),
                    false => self
                        .deflate(&s.file, &data, dict.as_deref(), last)
                        .map_err(|e| Verdict::failed(Stage::Compress, e)),
                };
                match deflated {
                    Ok(mut deflate) => {
                        let (crc, len) = (gzip::crc32(&data), data.len() as u64);
                        drop(data);
                        // The deflater's buffer is sized for the worst case; a piece that
                        // waits for the store keeps only what it holds.
                        if deflate.capacity() > deflate.len() + deflate.len() / 4 {
                            deflate.shrink_to_fit();
                        }
                        // What stays in flight is the deflated piece, not the source.
                        let mut permit = permit;
                        permit.shrink_to(deflate.capacity() as u64);
                        PackedBody::Data {
                            deflate,
                            crc,
                            len,
                            last,
                            permit,
                        }
                    }
                    Err(verdict) => PackedBody::Stop { verdict, last },
                }
            }
        };
        let _ = out.emit(Packed {
            file: s.file,
            index: s.index,
            body,
        });
    }

    /// Deflates one segment of `file`, unless its deadline has passed. A panic in the
    /// engine fails the segment and leaves this worker a fresh compressor.
    fn deflate(
        &mut self,
        file: &FileCtx,
        data: &[u8],
        dict: Option<&[u8]>,
        last: bool,
    ) -> Result<Vec<u8>, FileError> {
        if let Some(e) = file.timed_out() {
            return Err(e);
        }
        let deflate = &mut self.deflate;
        let result = catch_unwind(AssertUnwindSafe(|| {
            file.injected_panic(Stage::Compress);
            deflate.compress(data, dict, last)
        }));
        match result {
            Ok(r) => r.map_err(FileError::Compress),
            Err(panic) => {
                // The deflate state may be half-updated: start afresh.
                self.deflate = SegmentCompressor::new(self.deflate.level());
                Err(FileError::panicked(Stage::Compress, &*panic))
            }
        }
    }
}
