//! The way back, as stages: `fetch` → `inflate` → `write`, for `ferry restore`.
//!
//! `fetch` checks where the file goes (never outside DEST, never through a link), skips
//! one already restored, and streams the object: a small one, or one without a segment
//! index, is inflated right there as it arrives; a big one with an index (independent
//! libdeflate segments) is cut into its segments, which `inflate` workers decode on every
//! core and write at their offsets. Each file is written nameless, checked against the
//! manifest (length and CRC-32, combined from the segments' CRCs), stamped with its mtime
//! and linked into place; anything wrong leaves nothing under its name. Failures are
//! named by the stage they happened in: `fetch` (reading the object, deciding where it
//! goes), `inflate` (decoding and checking it), `write` (writing under DEST).

mod dest;

pub use dest::{Dest, Existing};

use crate::beneath::Temp;
use crate::budget::{Budget, Permit};
use crate::counters::Counters;
use crate::error::{FerryError, FileError, Stage};
use crate::gzip::CrcCombiner;
use crate::history::journal::{for_each_current, Scope};
use crate::history::manifest::Entry;
use crate::inflate::{self, inflate_object, Inflated, SegmentInflater};
use crate::pipeline::{CancelToken, Emitter, Producer};
use crate::shard::Shard;
use crate::sink::Sink;
use crate::task::{Outcome, Skip, Verdict};
use crate::view::Log;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One file to bring back: its key, and its manifest entry (none when restoring from a
/// bare listing, where the gzip member's own trailer is the check).
pub struct Wanted {
    key: PathBuf,
    entry: Option<Entry>,
}

/// A file whose segments are being inflated by several workers.
pub struct Restoring {
    target: PathBuf,
    temp: Temp,
    entry: Entry,
    /// Segments (and the fetch itself) still to finish; the one that ends it finishes the file.
    remaining: AtomicUsize,
    /// Each segment's CRC-32 and length, in order.
    crcs: Mutex<Vec<(u32, u64)>>,
    /// Why it failed or stopped, first cause kept.
    failed: Mutex<Option<Verdict>>,
    stop: AtomicBool,
}

impl Restoring {
    fn fail(&self, v: Verdict) {
        self.stop.store(true, Relaxed);
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(v);
        }
    }
}

/// What `fetch` hands to `inflate`.
pub enum Work {
    /// Files finished (restored, skipped, failed), a batch of them.
    Done(Vec<Outcome>),
    /// One independent segment of a big object.
    Segment {
        file: Arc<Restoring>,
        index: usize,
        offset: u64,
        len: u64,
        last: bool,
        deflate: Vec<u8>,
        _permit: Permit,
    },
    /// The fetch of this file is over (all its segments are out, or it failed).
    Fetched(Arc<Restoring>),
}

/// Everything the fetch and inflate workers share.
pub struct Restorer {
    /// Where the objects are.
    pub sink: Arc<dyn Sink>,
    /// Where the files go.
    pub dest: Dest,
    /// `--force`: replace files that exist and differ.
    pub force: bool,
    /// Give files back their recorded permission bits (not `--no-perms`).
    pub keep_modes: bool,
    /// Give files back their recorded owner and group (running as root, not
    /// `--no-same-owner`).
    pub keep_owners: bool,
    /// `--dry-run`: decide only.
    pub dry_run: bool,
    /// The memory budget for compressed and inflated bytes.
    pub budget: Arc<Budget>,
    /// The command's counters.
    pub metrics: Arc<Counters>,
    /// Where workers log.
    pub log: Log,
}

/// The producer: the current entry of every key in the manifest and journal (of the shard's
/// own manifest when there is one, else the keys of that shard), or the sink's `.gz`
/// objects when there is no manifest at all.
/// A restore's own error (nothing there to restore, a damaged history) is the
/// producer's error.
pub fn wanted(
    sink: Arc<dyn Sink>,
    shard: Option<Shard>,
    filter: Option<ignore::overrides::Override>,
    metrics: Arc<Counters>,
    dirs: Arc<Mutex<Vec<Entry>>>,
) -> Producer<Vec<Wanted>> {
    Box::new(move |out: &Emitter<Vec<Wanted>>| {
        let take = |key: &Path| {
            shard.is_none_or(|s| s.contains(key))
                && filter.as_ref().is_none_or(|g| crate::globs::admits(g, key))
        };
        // Small files travel in batches (one channel message per BATCH files, not per
        // file); any other file travels alone, so its segments start at once.
        let batch = std::cell::RefCell::new(Vec::with_capacity(BATCH));
        let emit = |w: Wanted| {
            metrics.found();
            let small = w.entry.as_ref().is_some_and(is_small);
            let mut b = batch.borrow_mut();
            if !small {
                let _ = out.emit(vec![w]);
                return;
            }
            b.push(w);
            if b.len() == BATCH {
                let _ = out.emit(std::mem::replace(&mut *b, Vec::with_capacity(BATCH)));
            }
        };
        let from_manifest = |s: Scope| {
            for_each_current(sink.as_ref(), s, |e| {
                let key = PathBuf::from(&e.key);
                if e.is_dir() {
                    // Not a file to fetch: set once the files are in.
                    if take(&key) {
                        dirs.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                    }
                    return;
                }
                if take(&key) {
                    // The manifest knows every size: the bar counts bytes from the start.
                    metrics.sized(e.size);
                    emit(Wanted {
                        key,
                        entry: Some(e),
                    });
                }
            })
        };
        // Without --shard, every run's manifest at the sink: all the shards of a job.
        let mut result =
            from_manifest(shard.map_or(Scope::Every, |s| Scope::One(Some(s)))).map(|(n, _)| n);
        if matches!(result, Ok(0)) && shard.is_some() {
            // No manifest of that shard: the unsharded one, filtered to the shard's keys.
            result = from_manifest(Scope::One(None)).map(|(n, _)| n);
        }
        let done = match result {
            Ok(0) => {
                let mut found = 0u64;
                let mut visit = |key: &Path| {
                    use std::os::unix::ffi::OsStrExt;
                    let name = key.as_os_str().as_bytes();
                    let ours = key
                        .file_name()
                        .is_some_and(|n| n.as_bytes().starts_with(b".ferry-"));
                    if let Some(stem) = name.strip_suffix(b".gz").filter(|_| !ours) {
                        found += 1;
                        let key = PathBuf::from(std::ffi::OsStr::from_bytes(stem));
                        if take(&key) {
                            emit(Wanted { key, entry: None });
                        }
                    }
                };
                let listed = match sink.local_root() {
                    Some(root) => {
                        list_local(root, &mut visit);
                        Ok(())
                    }
                    None => sink
                        .list_objects(&mut |key, _| visit(key))
                        .map(|_| ())
                        .map_err(FerryError::from),
                };
                // Nothing at all there (a mistyped path or prefix): say so, do not "succeed".
                listed.and_then(|()| match found {
                    0 => Err(FerryError::Usage(format!(
                        "{}: nothing to restore (no manifest and no .gz objects)",
                        sink.describe()
                    ))),
                    _ => Ok(()),
                })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        };
        let rest = batch.take();
        if !rest.is_empty() {
            let _ = out.emit(rest);
        }
        metrics.all_found();
        done.map_err(|e| Box::new(e) as crate::pipeline::BoxError)
    })
}

/// Every regular file under a local sink's `root`, as keys relative to it (links are
/// not followed).
fn list_local(root: &Path, visit: &mut dyn FnMut(&Path)) {
    let walk = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .build();
    for entry in walk.flatten() {
        if entry.file_type().is_some_and(|t| t.is_file()) {
            if let Ok(rel) = entry.path().strip_prefix(root) {
                visit(rel);
            }
        }
    }
}

fn system_time((s, ns): (i64, u32)) -> SystemTime {
    match u64::try_from(s) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, ns),
        Err(_) => {
            UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(u64::from(ns))
        }
    }
}

/// The stage a failure of inflating into DEST belongs to: `write` when writing the file
/// failed (such causes start `write:`), else `inflate`.
fn inflate_or_write(why: &str) -> Stage {
    match why.starts_with("write:") {
        true => Stage::Write,
        false => Stage::Inflate,
    }
}

fn failed(path: &Path, stage: Stage, why: impl Into<String>) -> Outcome {
    Outcome {
        path: path.to_path_buf(),
        result: Err(Verdict::failed(stage, FileError::Restore(why.into()))),
    }
}

impl Restorer {
    /// The fetch stage's work on one batch: each file fetched (a panic fails that file
    /// by name, and the batch goes on); the files it finished go on as one message.
    pub fn fetch_batch(&self, ws: Vec<Wanted>, small: &mut Small, out: &Emitter<Work>) {
        let mut done = Vec::with_capacity(ws.len());
        done.extend(ws.into_iter().filter_map(|w| {
            let key = w.key.clone();
            let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.fetch(w, small, out)
            }));
            fetched.unwrap_or_else(|panic| {
                *small = Small::default();
                Some(Outcome {
                    path: key,
                    result: Err(Verdict::failed(
                        Stage::Fetch,
                        FileError::panicked(Stage::Fetch, &*panic),
                    )),
                })
            })
        }));
        if !done.is_empty() {
            let _ = out.emit(Work::Done(done));
        }
    }

    /// Decides what to do with one wanted file and does the fetch part of it: returns
    /// its outcome, or `None` when its segments went to the inflate workers.
    fn fetch(&self, w: Wanted, small: &mut Small, out: &Emitter<Work>) -> Option<Outcome> {
        let done = Some::<Outcome>;
        if out.is_cancelled() {
            return done(Outcome {
                path: w.key.clone(),
                result: Err(Verdict::Cancelled),
            });
        }
        let target = match self.dest.target(&w.key) {
            Ok(t) => t,
            Err(why) => return done(failed(&w.key, Stage::Fetch, why)),
        };
        let skip = |s: Skip| {
            done(Outcome {
                path: target.clone(),
                result: Err(Verdict::Skipped(s)),
            })
        };
        if let Some(e) = w.entry.as_ref().filter(|e| e.is_link()) {
            return done(self.restore_link(&target, e));
        }
        // Into a destination that was empty when the run began, nothing is looked up first:
        // the rename refuses to replace, and only a refusal asks what is there.
        if self.force || self.dry_run || !self.dest.started_empty() {
            if let Some(o) = self.decide(&target, w.entry.as_ref()) {
                return done(o);
            }
        }
        if self.dry_run {
            // A dry run stops here: decided from the manifest and one stat, nothing read.
            let size = w.entry.as_ref().map_or(0, |e| e.size);
            return skip(Skip::DryRun { size });
        }
        // Born with its recorded bits where the umask allows, so no fchmod repeats them.
        let mode = match w.entry.as_ref().map(|e| self.owner_and_mode(e).1) {
            Some(Some(m)) => m & 0o777,
            _ => 0o666,
        };
        let temp = match self.dest.temp_for(&target, mode) {
            Ok(t) => t,
            Err(why) => return done(failed(&target, Stage::Write, why)),
        };
        let object_key = match &w.entry {
            Some(e) => e.object_key(self.sink.local_root().is_some()),
            None => crate::task::object_key(&w.key),
        };
        let (object, short_read_is_end) = match self.sink.open_object(&object_key) {
            Ok(o) => (o.body, o.short_read_is_end),
            Err(crate::sink::SinkError::Cancelled) => {
                return done(Outcome {
                    path: target,
                    result: Err(Verdict::Cancelled),
                })
            }
            Err(e) => {
                return done(failed(
                    &target,
                    Stage::Fetch,
                    format!("cannot read {}: {e}", object_key.display()),
                ))
            }
        };
        if let Some(Err(why)) = w
            .entry
            .as_ref()
            .and_then(|e| e.segments.as_ref().map(|s| s.check(e.size)))
        {
            return done(failed(&target, Stage::Fetch, why));
        }
        let parallel = w
            .entry
            .as_ref()
            .and_then(|e| e.segments.as_ref().map(|s| (e, s)))
            .filter(|(_, s)| s.z.len() > 1);
        match parallel {
            Some((e, _)) => {
                self.log.debug(|| {
                    format!(
                        "[restore] {}: {} segments, inflated in parallel",
                        target.display(),
                        e.segments.as_ref().map_or(0, |s| s.z.len())
                    )
                });
                if let Err(err) = temp.file.set_len(e.size) {
                    return done(failed(&target, Stage::Write, crate::words::io_words(&err)));
                }
                let r = Arc::new(Restoring {
                    target,
                    temp,
                    entry: e.clone(),
                    remaining: AtomicUsize::new(e.segments.as_ref().map_or(0, |s| s.z.len()) + 1),
                    crcs: Mutex::new(vec![(0, 0); e.segments.as_ref().map_or(0, |s| s.z.len())]),
                    failed: Mutex::new(None),
                    stop: AtomicBool::new(false),
                });
                self.cut(&r, object, out);
                let _ = out.emit(Work::Fetched(r));
                None
            }
            None => match w.entry {
                Some(e) if is_small(&e) => {
                    let object = Whole {
                        body: object,
                        short_read_is_end,
                    };
                    done(self.whole(e, target, temp, object, small, out))
                }
                entry => {
                    let w = Wanted { key: w.key, entry };
                    done(self.stream(w, target, temp, object, out.cancel_token()))
                }
            },
        }
    }

    /// A small object: read whole, inflated in one call, written in one write.
    #[allow(clippy::too_many_arguments)]
    fn whole(
        &self,
        e: Entry,
        target: PathBuf,
        mut temp: Temp,
        object: Whole,
        small: &mut Small,
        out: &Emitter<Work>,
    ) -> Outcome {
        let Some(_permit) = self.budget.reserve(e.bytes_out + e.size, out) else {
            return Outcome {
                path: target,
                result: Err(Verdict::Cancelled),
            };
        };
        // Exactly the recorded size, and the end found: no fstat or seek per file, as
        // read_to_end would make. Bytes after the recorded size (a member appended,
        // garbage) make the object something other than what was delivered.
        let plain = !e.form.unwrap_or_default().gzipped();
        let got = read_exactly(object, e.bytes_out, &mut small.gz)
            .and_then(|_| match plain {
                // A web file stored unchanged: its bytes are the file's.
                true => inflate::check_plain(&e, &small.gz),
                false => inflate::inflate_whole(&e, &small.gz, &mut small.out, &mut small.engine),
            })
            .and_then(|got| {
                let bytes = match plain {
                    true => &small.gz,
                    false => &small.out,
                };
                temp.file
                    .write_all(bytes)
                    .map_err(|e| format!("write: {}", crate::words::io_words(&e)))
                    .map(|_| got)
            });
        match got {
            Ok(got) => {
                self.metrics.restored(got.len);
                let mtime = (e.mtime_s, e.mtime_ns);
                self.finish(&target, &temp, mtime, e)
            }
            Err(_) if out.is_cancelled() => Outcome {
                path: target,
                result: Err(Verdict::Cancelled),
            },
            Err(why) => failed(&target, inflate_or_write(&why), why),
        }
    }

    /// Inflates the object as it streams into the temp file, then checks and finishes it.
    fn stream(
        &self,
        w: Wanted,
        target: PathBuf,
        temp: Temp,
        object: Box<dyn Read + Send>,
        cancel: &CancelToken,
    ) -> Outcome {
        let mut writer = std::io::BufWriter::with_capacity(256 << 10, &temp.file);
        let metrics = &self.metrics;
        let mut cancelled = Cancellable {
            inner: object,
            cancel,
        };
        let progress = |n| metrics.restored(n);
        let got = match w.entry.as_ref() {
            Some(e) if !e.form.unwrap_or_default().gzipped() => {
                inflate::copy_plain(e, &mut cancelled, &mut writer, &progress)
            }
            entry => inflate_object(entry, &mut cancelled, &mut writer, &progress),
        }
        .and_then(|got| {
            writer
                .flush()
                .map_err(|e| format!("write: {}", crate::words::io_words(&e)))
                .map(|_| got)
        });
        drop(writer);
        let got = match got {
            Ok(g) => g,
            Err(why) => {
                if cancel.is_cancelled() {
                    return Outcome {
                        path: target,
                        result: Err(Verdict::Cancelled),
                    };
                }
                return failed(&target, inflate_or_write(&why), why);
            }
        };
        let mtime = w
            .entry
            .as_ref()
            .map_or((i64::from(got.header_mtime), 0), |e| {
                (e.mtime_s, e.mtime_ns)
            });
        self.finish(&target, &temp, mtime, entry_of(w, &got))
    }

    /// What to do about what is at `target` already: `None` to restore it, or the outcome
    /// that stands instead (restored before, kept, or refused).
    fn decide(&self, target: &Path, entry: Option<&Entry>) -> Option<Outcome> {
        let skip = |s: Skip| {
            Some(Outcome {
                path: target.to_path_buf(),
                result: Err(Verdict::Skipped(s)),
            })
        };
        match (Dest::existing(target), entry) {
            (Existing::Nothing, _) => None,
            (Existing::File(size, mtime), Some(e))
                if size == e.size && mtime == (e.mtime_s, e.mtime_ns) && !self.force =>
            {
                skip(Skip::AlreadyRestored)
            }
            (Existing::File(..), None) if !self.force => skip(Skip::Exists),
            (Existing::File(..), Some(_)) if !self.force => Some(failed(
                target,
                Stage::Fetch,
                "exists and differs (size or mtime); --force overwrites it",
            )),
            (Existing::Other("a directory"), _) => Some(failed(
                target,
                Stage::Fetch,
                "is a directory; restore never replaces one",
            )),
            (Existing::Other(what), _) if !self.force => Some(failed(
                target,
                Stage::Fetch,
                format!(
                    "is {what}; --force replaces it (the link itself, never what it points to)"
                ),
            )),
            _ => None,
        }
    }

    /// Gives the file its recorded owner and permission bits, stamps the mtime, all on
    /// the nameless file, then links it into place, and says what was restored.
    fn finish(&self, target: &Path, temp: &Temp, mtime: (i64, u32), entry: Entry) -> Outcome {
        let name = target.file_name().unwrap_or_default();
        let done = self
            .give_back(temp, &entry)
            .and_then(|_| temp.file.set_modified(system_time(mtime)))
            .and_then(|_| temp.publish(name, self.force));
        match done {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Something is there now: put there by another process, or by this run for
                // a key listed twice. Decide as a rerun would.
                self.decide(target, Some(&entry)).unwrap_or_else(|| {
                    failed(target, Stage::Write, "appeared while being restored")
                })
            }
            Ok(()) => {
                self.log.info(|| format!("[restored] {}", target.display()));
                Outcome {
                    path: target.to_path_buf(),
                    result: Ok(entry),
                }
            }
            Err(e) => failed(
                target,
                Stage::Write,
                format!("cannot finish: {}", crate::words::io_words(&e)),
            ),
        }
    }

    /// Reads a segmented object in its segments and hands each to the inflate workers.
    fn cut(&self, r: &Arc<Restoring>, object: Box<dyn Read + Send>, out: &Emitter<Work>) {
        let Some(segs) = r.entry.segments.as_ref() else {
            return;
        };
        let mut object = std::io::BufReader::with_capacity(256 << 10, object);
        let n = segs.z.len();
        let mut emitted = 0;
        let result = (|| -> Result<(), Verdict> {
            let bad = |why: String| Verdict::failed(Stage::Fetch, FileError::Restore(why));
            let head = object
                .fill_buf()
                .map_err(|e| bad(format!("cannot read: {e}")))?
                .to_vec();
            let hlen = inflate::gzip_header_len(&head)
                .map_err(bad)?
                .ok_or_else(|| bad("the gzip header does not fit in the first read".into()))?;
            object.consume(hlen);
            let trailer_at = hlen as u64 + segs.z.iter().sum::<u64>();
            if trailer_at + 8 != r.entry.bytes_out {
                return Err(bad(format!(
                    "the segment index adds up to {} bytes, the object has {}",
                    trailer_at + 8,
                    r.entry.bytes_out
                )));
            }
            for (i, &z) in segs.z.iter().enumerate() {
                if out.is_cancelled() {
                    return Err(Verdict::Cancelled);
                }
                if r.stop.load(Relaxed) {
                    return Ok(());
                }
                let offset = i as u64 * segs.len;
                let len = if i + 1 == n {
                    r.entry.size - offset
                } else {
                    segs.len
                };
                let permit = self
                    .budget
                    .reserve(z + len, out)
                    .ok_or(Verdict::Cancelled)?;
                let mut deflate = vec![0u8; z as usize];
                deflate.reserve_exact(2);
                object
                    .read_exact(&mut deflate)
                    .map_err(|e| bad(format!("the object ends early: {e}")))?;
                emitted += 1;
                let seg = Work::Segment {
                    file: r.clone(),
                    index: i,
                    offset,
                    len,
                    last: i + 1 == n,
                    deflate,
                    _permit: permit,
                };
                if out.emit(seg).is_err() {
                    return Err(Verdict::Cancelled);
                }
            }
            let mut trailer = [0u8; 8];
            object
                .read_exact(&mut trailer)
                .map_err(|e| bad(format!("no gzip trailer: {e}")))?;
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            if crc != r.entry.crc32 {
                return Err(bad(format!(
                    "the trailer's CRC-32 is {crc:08x}, the manifest says {:08x}",
                    r.entry.crc32
                )));
            }
            let mut extra = [0u8; 1];
            if object.read(&mut extra).map_err(|e| bad(e.to_string()))? > 0 {
                return Err(bad("data after the gzip member".into()));
            }
            Ok(())
        })();
        if let Err(v) = result {
            // A read that ended because of the cancel is the cancel's, not the object's.
            r.fail(if out.is_cancelled() {
                Verdict::Cancelled
            } else {
                v
            });
        }
        // The segments never emitted count as finished.
        r.remaining.fetch_sub(n - emitted, Relaxed);
    }

    /// Inflates one segment (or passes a finished file on); the last one to finish a
    /// file checks and renames it.
    pub fn inflate(&self, w: Work, engine: &mut SegmentInflater, out: &Emitter<Vec<Outcome>>) {
        let r = match w {
            Work::Done(os) => {
                let _ = out.emit(os);
                return;
            }
            Work::Fetched(r) => r,
            Work::Segment {
                file,
                index,
                offset,
                len,
                last,
                mut deflate,
                _permit,
            } => {
                // A panic here fails this file by name; its count still goes down below,
                // so the file ends and the run with it.
                let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if !file.stop.load(Relaxed) {
                        if out.is_cancelled() {
                            file.fail(Verdict::Cancelled);
                        } else {
                            let mut buf = vec![0u8; len as usize];
                            let written =
                                inflate::inflate_segment(&mut deflate, last, &mut buf, engine)
                                    .and_then(|_| {
                                        // The file was sized up front: a segment of zeros
                                        // stays a hole, so a sparse source comes back sparse.
                                        if buf.iter().all(|&b| b == 0) {
                                            return Ok(());
                                        }
                                        file.temp.file.write_all_at(&buf, offset).map_err(|e| {
                                            format!("write: {}", crate::words::io_words(&e))
                                        })
                                    });
                            match written {
                                Ok(()) => {
                                    self.metrics.restored(len);
                                    file.crcs.lock().unwrap_or_else(|e| e.into_inner())[index] =
                                        (crate::gzip::crc32(&buf), len);
                                }
                                Err(why) => file.fail(Verdict::failed(
                                    inflate_or_write(&why),
                                    FileError::Restore(why),
                                )),
                            }
                        }
                    }
                }));
                if let Err(panic) = work {
                    file.fail(Verdict::failed(
                        Stage::Inflate,
                        FileError::panicked(Stage::Inflate, &*panic),
                    ));
                }
                file
            }
        };
        if r.remaining.fetch_sub(1, Relaxed) != 1 {
            return;
        }
        // The last to finish: every segment is written, or the file failed.
        let verdict = r.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        let outcome = match verdict {
            Some(v) => Outcome {
                path: r.target.clone(),
                result: Err(v),
            },
            None => {
                let mut c = CrcCombiner::default();
                for &(crc, len) in r.crcs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    c.push(crc, len);
                }
                if c.crc() != r.entry.crc32 || c.len() != r.entry.size {
                    failed(
                        &r.target,
                        Stage::Inflate,
                        format!(
                            "decodes to {} bytes with CRC-32 {:08x}, the manifest says {} bytes with {:08x}",
                            c.len(),
                            c.crc(),
                            r.entry.size,
                            r.entry.crc32
                        ),
                    )
                } else {
                    self.finish(
                        &r.target,
                        &r.temp,
                        (r.entry.mtime_s, r.entry.mtime_ns),
                        r.entry.clone(),
                    )
                }
            }
        };
        let _ = out.emit(vec![outcome]);
    }
}

/// Objects up to this size are read whole and inflated in one call.
const SMALL: u64 = 1 << 20;

/// Small files per channel message.
const BATCH: usize = 32;

/// Whether a file is restored by the small-object path (read whole, one inflate call).
fn is_small(e: &Entry) -> bool {
    e.bytes_out <= SMALL && e.size <= 4 * SMALL && e.segments.is_none()
}

/// A fetch worker's buffers for small objects, reused from file to file.
#[derive(Default)]
pub struct Small {
    gz: Vec<u8>,
    out: Vec<u8>,
    engine: SegmentInflater,
}

impl Restorer {
    /// The directories the history records, once every file is in: each made where
    /// missing (an empty one too), shallowest first; then each given its owner (as
    /// root), mode and mtime, deepest first, as tar does, so that setting a directory
    /// read-only or its mtime comes after everything written into it. Returns what could
    /// not be done, by directory.
    pub fn apply_dirs(&self, mut dirs: Vec<Entry>) -> Vec<String> {
        let mut problems = Vec::new();
        dirs.sort_by(|a, b| PathBuf::from(&a.key).cmp(&PathBuf::from(&b.key)));
        let mut made = Vec::with_capacity(dirs.len());
        for e in dirs {
            let key = PathBuf::from(&e.key);
            match self.dest.target(&key).and_then(|t| {
                // Made now, and let go: a handle per directory would run out of them.
                self.dest.dir_at(&t).map(|_| t)
            }) {
                Ok(t) => made.push((t, e)),
                Err(why) => problems.push(format!("{}: {why}", key.display())),
            }
        }
        for (target, e) in made.into_iter().rev() {
            let (owner, mode) = self.owner_and_mode(&e);
            let done = self.dest.dir_at(&target).and_then(|d| {
                d.stamp(mode, owner, Some((e.mtime_s, e.mtime_ns)))
                    .map_err(|err| crate::words::io_words(&err))
            });
            match done {
                Ok(()) => {
                    self.metrics.dirs.fetch_add(1, Relaxed);
                }
                Err(why) => problems.push(format!("{}: {why}", target.display())),
            }
        }
        problems
    }

    /// Makes the symbolic link `entry` records at `target`, with its text as it was
    /// (dangling, absolute or climbing out: it is never followed here, and every later
    /// path through it is refused, as every directory is opened beneath DEST without
    /// following links), its owner (as root) and its own mtime.
    fn restore_link(&self, target: &Path, entry: &Entry) -> Outcome {
        let text = entry.link.as_ref().map(PathBuf::from).unwrap_or_default();
        if self.dry_run {
            return Outcome {
                path: target.to_path_buf(),
                result: Err(Verdict::Skipped(Skip::DryRunLink)),
            };
        }
        let dir = match self.dest.parent_of(target) {
            Ok(d) => d,
            Err(why) => return failed(target, Stage::Write, why),
        };
        let name = target.file_name().unwrap_or_default();
        let owner = entry.owner.filter(|_| self.keep_owners);
        let mtime = Some((entry.mtime_s, entry.mtime_ns));
        let make = || dir.symlink(name, text.as_os_str(), owner, mtime);
        let made = match make() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match dir.read_link(name) {
                    Ok(Some(t)) if t == text.as_os_str() && !self.force => {
                        return Outcome {
                            path: target.to_path_buf(),
                            result: Err(Verdict::Skipped(Skip::AlreadyRestored)),
                        }
                    }
                    // Replaced only when asked, and never a directory (unlink refuses one).
                    _ if self.force => dir.unlink(name).and_then(|_| make()),
                    _ => {
                        return failed(
                            target,
                            Stage::Write,
                            "exists and differs from the recorded link; --force replaces it",
                        )
                    }
                }
            }
            other => other,
        };
        match made {
            Ok(()) => {
                self.log
                    .info(|| format!("[restored] {} (link)", target.display()));
                Outcome {
                    path: target.to_path_buf(),
                    result: Ok(entry.clone()),
                }
            }
            Err(e) => failed(
                target,
                Stage::Write,
                format!("cannot make the link: {}", crate::words::io_words(&e)),
            ),
        }
    }

    /// Sets what the entry recorded of the file's owner and mode on `temp` (before it has
    /// a name, so it never shows with other bits): the owner first, as a change of owner
    /// clears setuid and setgid; setuid and setgid only as root, as tar does. What the
    /// file was certainly born with is not set again ([`Temp::born`]).
    fn give_back(&self, temp: &Temp, entry: &Entry) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (owner, mode) = self.owner_and_mode(entry);
        if owner.is_none() && mode.is_none() {
            return Ok(());
        }
        let born = temp.born();
        if let Some((uid, gid)) = owner.filter(|&o| born.owner != Some(o)) {
            std::os::unix::fs::fchown(&temp.file, Some(uid), Some(gid))?;
        }
        // Born bits never include setuid, setgid or sticky, so those are always set here,
        // after the owner.
        if let Some(mode) = mode.filter(|&m| born.mode != Some(m)) {
            temp.file
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// What of `entry`'s owner and mode this restore gives back: the owner as root
    /// (unless `--no-same-owner`), the mode unless `--no-perms`, setuid and setgid only
    /// with the owner.
    fn owner_and_mode(&self, entry: &Entry) -> (Option<(u32, u32)>, Option<u32>) {
        let owner = entry.owner.filter(|_| self.keep_owners);
        let mode = entry
            .mode
            .filter(|_| self.keep_modes)
            .map(|m| match self.keep_owners {
                true => m & 0o7777,
                false => m & 0o1777,
            });
        (owner, mode)
    }
}

/// The entry to report for a restored file: the manifest's, or one made from what the
/// object decoded to.
fn entry_of(w: Wanted, got: &Inflated) -> Entry {
    w.entry.unwrap_or_else(|| Entry {
        key: w.key.as_path().into(),
        size: got.len,
        mtime_s: i64::from(got.header_mtime),
        mtime_ns: 0,
        ctime: None,
        crc32: got.crc32,
        bytes_out: got.bytes_in,
        zcrc32: Some(got.zcrc32),
        segments: None,
        mode: None,
        owner: None,
        link: None,
        dir: false,
        form: None,
        etag: None,
        inode: None,
    })
}

/// A small object to read whole.
struct Whole {
    body: Box<dyn Read + Send>,
    /// See [`crate::sink::Opened::short_read_is_end`].
    short_read_is_end: bool,
}

/// Reads `object` into `buf`, which must then hold exactly `len` bytes with the object's
/// end found after them; a local file's short read is its end, so that takes one read.
///
/// # Errors
/// Saying how the object's size differs from `len`, or why it could not be read.
fn read_exactly(mut object: Whole, len: u64, buf: &mut Vec<u8>) -> Result<(), String> {
    let len = len as usize;
    buf.clear();
    buf.resize(len + 1, 0);
    let mut filled = 0;
    while filled <= len {
        let asked = buf.len() - filled;
        match object.body.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if object.short_read_is_end && n < asked {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    match filled.cmp(&len) {
        std::cmp::Ordering::Less => Err(format!(
            "size differs from the manifest's {len} bytes: the object ends after {filled}"
        )),
        std::cmp::Ordering::Greater => Err(format!(
            "size is more than the manifest's {len} bytes: data after the gzip member"
        )),
        std::cmp::Ordering::Equal => {
            buf.truncate(len);
            Ok(())
        }
    }
}

/// A reader that stops with an error once the run is cancelled.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a CancelToken,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that gives at most 3 bytes a read, as a network body may.
    struct Dribble(std::io::Cursor<Vec<u8>>);

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }

    fn whole(bytes: &[u8], local: bool) -> Whole {
        let body: Box<dyn Read + Send> = match local {
            true => {
                let mut f = tempfile::tempfile().unwrap();
                std::io::Write::write_all(&mut f, bytes).unwrap();
                std::io::Seek::rewind(&mut f).unwrap();
                Box::new(f)
            }
            false => Box::new(Dribble(std::io::Cursor::new(bytes.to_vec()))),
        };
        Whole {
            body,
            short_read_is_end: local,
        }
    }

    /// Exactly the recorded size is read whole, and a shorter or longer object is named,
    /// whether its reads come short only at the end (a local file) or at any time.
    #[test]
    fn a_small_object_is_read_exactly_or_its_size_named() {
        let mut buf = Vec::new();
        for local in [true, false] {
            read_exactly(whole(b"0123456789", local), 10, &mut buf).unwrap();
            assert_eq!(buf, b"0123456789");
            let e = read_exactly(whole(b"0123456789", local), 9, &mut buf).unwrap_err();
            assert!(e.contains("data after the gzip member"), "{e}");
            let e = read_exactly(whole(b"0123456789", local), 12, &mut buf).unwrap_err();
            assert!(e.contains("ends after 10"), "{e}");
            read_exactly(whole(b"", local), 0, &mut buf).unwrap();
            assert!(buf.is_empty());
        }
    }
}
