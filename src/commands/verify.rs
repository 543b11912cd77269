//! `ferry verify --to SINK`: reads back every object the history lists and checks that
//! it is one gzip member that decodes to the recorded length and CRC-32, at the recorded
//! size.
//!
//! ```text
//! manifest + journal (current entries) → check (stream each object through the decoder) → record
//! ```

use super::{execute, Command, Ended, Finished, Session, Settings};
use crate::error::{ExitCode, FerryError, FileError, Stage};
use crate::history::journal::{for_each_current, Scope};
use crate::history::manifest::{key_hash, manifest_name, split, Entry};
use crate::inflate::inflate_object;
use crate::ledger::Ledger;
use crate::pipeline::{
    CancelReason, CancelToken, Collected, Emitter, Pipeline, Producer, StageSpec,
};
use crate::shard::Shard;
use crate::sink::{self, Sink, SinkOptions, SinkSpec};
use crate::task::{Outcome, Verdict};
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What `ferry verify` is asked to do.
#[derive(Debug, Clone)]
pub struct Verify {
    /// The sink whose objects are checked.
    pub sink: SinkSpec,
    /// `--shard K/N`: only that shard's history.
    pub shard: Option<Shard>,
    /// Objects checked at once.
    pub workers: NonZeroUsize,
    /// `--quick`: check presence and size from a listing, read nothing.
    pub quick: bool,
    /// `--fix-headers`: store again, without `Content-Encoding`, each archive object
    /// that carries it and checks out.
    pub fix_headers: bool,
    /// How it shows itself and when it gives up.
    pub settings: Settings,
    /// Objects checked so far that the store serves with a `Content-Encoding`.
    encoded: Arc<AtomicU64>,
    /// `--quick`: objects whose listed ETag was compared with the recorded one.
    etags: Arc<AtomicU64>,
    /// `--fix-headers`: objects stored again without `Content-Encoding`.
    fixed: Arc<AtomicU64>,
}

impl Verify {
    /// Verifying `sink` with the defaults of the CLI.
    pub fn new(sink: SinkSpec) -> Self {
        Verify {
            sink,
            shard: None,
            quick: false,
            fix_headers: false,
            workers: crate::config::cores().max(NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN)),
            settings: Settings::default(),
            encoded: Arc::default(),
            etags: Arc::default(),
            fixed: Arc::default(),
        }
    }
}

/// Verifies every object the sink's manifest and journal list (the current entry of each
/// key): a producer streams the entries, `check` workers stream each object through the
/// decoder, the ledger counts. Progress shows as for a run.
///
/// # Errors
/// [`FerryError::Usage`] when the sink has no manifest or journal,
/// [`FerryError::History`] when one is damaged, [`FerryError::Sink`] when it cannot be
/// opened or read.
pub fn verify(v: &Verify, cancel: CancelToken) -> Result<VerifyReport, FerryError> {
    execute(v, cancel)
}

impl Command for Verify {
    type Opened = Arc<dyn Sink>;
    type Collected = Collected<Ledger>;
    type Done = VerifyReport;

    fn settings(&self) -> Settings {
        self.settings
    }

    fn open(&self, s: &Session) -> Result<Arc<dyn Sink>, FerryError> {
        let options = SinkOptions {
            // --fix-headers writes objects again (never the history).
            read_only: !self.fix_headers,
            cancel: s.cancel.clone(),
            ..SinkOptions::default()
        };
        Ok(sink::open(&self.sink, &options)?)
    }

    fn build(
        &self,
        sink: &mut Arc<dyn Sink>,
        p: &mut Pipeline,
        s: &Session,
    ) -> Result<Collected<Ledger>, FerryError> {
        let ledger = Ledger::new(s.metrics.clone(), s.log.clone(), None);
        let m = s.metrics.clone();
        let sink = sink.clone();
        let encoded = self.encoded.clone();
        // --quick: the sink's objects and sizes from one listing, if it lists.
        let listing = match self.quick {
            true => Listing::of(sink.as_ref())?.map(Arc::new),
            false => None,
        };
        let quick = self.quick;
        let etags = self.etags.clone();
        let (fix, fixed) = (self.fix_headers, self.fixed.clone());
        Ok(p.source(
            "manifest",
            NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            vec![self.entries(sink.clone(), s)],
        )?
        .stage(StageSpec::new("check", self.workers), move |_| {
            let (sink, m, encoded) = (sink.clone(), m.clone(), encoded.clone());
            let etags = etags.clone();
            let fixed = fixed.clone();
            let listing = listing.clone();
            let local = sink.local_root().is_some();
            move |e: Entry, out: &Emitter<Outcome>| {
                let key = e.object_key(local);
                let result = match out.is_cancelled() {
                    // Not checked: counted as cancelled.
                    true => Err(Verdict::Cancelled),
                    // A symbolic link is text in the history: no object to check.
                    false if e.is_link() => Ok(e),
                    false if quick => {
                        let found = match &listing {
                            Some(l) => Ok(l.get(&key)),
                            // One request for this object (a HEAD, a stat).
                            None => sink
                                .object_size(&key)
                                .map(|n| n.map(|n| (n, None)))
                                .map_err(|err| err.to_string()),
                        };
                        let recorded = e.etag.as_deref().map(etag_hash);
                        match found {
                            Ok(Some((n, _))) if n != e.bytes_out => Err(format!(
                                "{n} bytes stored, {} recorded: truncated or replaced",
                                e.bytes_out
                            )),
                            Ok(Some((_, Some(now)))) if recorded.is_some_and(|r| r != now) => {
                                Err("its ETag is not the one the store gave when it was stored: replaced since".to_string())
                            }
                            Ok(Some((_, now))) => {
                                if now.is_some() && recorded.is_some() {
                                    etags.fetch_add(1, Relaxed);
                                }
                                Ok(e)
                            }
                            Ok(None) => Err("missing".to_string()),
                            Err(why) => Err(why),
                        }
                        .map_err(|problem| Verdict::failed(Stage::Check, FileError::Check(problem)))
                    }
                    false => {
                        // A web object's encoding is meant; an archive's is the old header.
                        let mut old_header = false;
                        let checked = sink
                            .open_object(&key)
                            .map_err(|err| err.to_string())
                            .and_then(|object| {
                                old_header = object.encoded && e.form.is_none();
                                if old_header {
                                    encoded.fetch_add(1, Relaxed);
                                }
                                check_object(&e, object.body)
                            })
                            .and_then(|()| match fix && old_header {
                                true => copy_checked(sink.as_ref(), &key, &key, &e)
                                    .map(drop)
                                    .map(|()| {
                                        fixed.fetch_add(1, Relaxed);
                                    })
                                    .map_err(|why| {
                                        format!("checks out, but could not be stored again without the header: {why}")
                                    }),
                                false => Ok(()),
                            });
                        m.restored(e.bytes_out);
                        checked.map(|()| e).map_err(|problem| {
                            Verdict::failed(Stage::Check, FileError::Check(problem))
                        })
                    }
                };
                let _ = out.emit(Outcome { path: key, result });
            }
        })?
        .collect(
            "record",
            NonZeroUsize::MIN,
            move |_| ledger.clone(),
            Ledger::record,
        )?)
    }

    fn finish(
        &self,
        sink: Arc<dyn Sink>,
        collected: Collected<Ledger>,
        ended: Ended,
        s: &Session,
    ) -> Result<VerifyReport, FerryError> {
        let listed = s.metrics.discovered.load(Relaxed);
        if listed == 0 && ended.cancelled.is_none() {
            return Err(FerryError::Usage(match self.shard {
                Some(k) => format!(
                    "{}: no manifest ({}) to verify against",
                    sink.describe(),
                    manifest_name(Some(k))
                ),
                None => format!(
                    "{}: no manifest ({} or one per shard) to verify against",
                    sink.describe(),
                    manifest_name(None)
                ),
            }));
        }
        let mut mismatches: Vec<Mismatch> = Ledger::merge(collected.into_vec())
            .into_iter()
            .map(|f| Mismatch {
                key: PathBuf::from(f.path),
                problem: f.error,
            })
            .collect();
        mismatches.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(VerifyReport {
            quick: self.quick,
            requests: sink.requests(),
            listed,
            checked: (s.metrics.succeeded.load(Relaxed) + s.metrics.failed.load(Relaxed)) as usize,
            cancelled: ended.cancelled,
            mismatches,
            encoded: self.encoded.load(Relaxed),
            etags: self.etags.load(Relaxed),
            fixed: self.fixed.load(Relaxed),
            links: s.metrics.links.load(Relaxed),
        })
    }
}

impl Verify {
    /// The producer: the current entry of every key in the history (of the shard's own
    /// when `--shard` is given). A damaged history is its error.
    fn entries(&self, sink: Arc<dyn Sink>, s: &Session) -> Producer<Entry> {
        let (scope, m) = (
            self.shard.map_or(Scope::Every, |k| Scope::One(Some(k))),
            s.metrics.clone(),
        );
        Box::new(move |out: &Emitter<Entry>| {
            let read = for_each_current(sink.as_ref(), scope, |e| {
                if e.is_dir() {
                    return; // no object, nothing to check
                }
                m.found_sized(e.bytes_out);
                let _ = out.emit(e);
            });
            m.all_found();
            read.map(|_| ())
                .map_err(|e| Box::new(FerryError::from(e)) as crate::pipeline::BoxError)
        })
    }
}

impl Finished for VerifyReport {
    fn render_text(&self) -> String {
        let bad = self.mismatches.len();
        let ok = self.checked - bad;
        let mut line = match self.cancelled {
            Some(why) => format!(
                "ferry: {}: verified {} of {} objects: {ok} ok, {bad} bad\n",
                match why {
                    CancelReason::Deadline => "timed out",
                    _ => "interrupted",
                },
                self.checked,
                self.listed,
            ),
            None => format!(
                "ferry: verified {} objects: {ok} ok, {bad} bad\n",
                self.checked
            ),
        };
        if self.links > 0 {
            line.push_str(&format!(
                "ferry: {} of them symbolic links, recorded as text: no object to read\n",
                self.links
            ));
        }
        if self.quick {
            line.push_str(&format!(
                "ferry: quick: checked that each object is there at its recorded size{}{}; \
                 not read, so damage that keeps the size is not found (run without --quick to decode every object)\n",
                match self.etags {
                    0 => String::new(),
                    n => format!(", and {n} against the ETag the store gave when it stored them"),
                },
                match self.requests {
                    Some(n) => format!(" ({n} requests to the store)"),
                    None => String::new(),
                }
            ));
        }
        if self.encoded > 0 {
            line.push_str(&format!(
                "ferry: {} of them carry the header 'Content-Encoding: gzip' (earlier builds of ferry set it): \
                 clients that honour it (browsers, curl --compressed, the Azure SDK, GCS's transcoding) \
                 decode one layer and get the source's bytes under a .gz key; ferry itself reads them as they are. \
                 {}\n",
                self.encoded,
                match self.fixed {
                    0 => "Run verify --fix-headers (or deliver again with --force) to store them without it".to_string(),
                    n => format!("{n} of them were stored again without it (--fix-headers)"),
                }
            ));
        }
        line
    }

    /// The report as pretty JSON: `listed`, `checked`, `ok`, `interrupted` and
    /// `mismatches` (key, problem).
    fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["ok"] = (self.checked - self.mismatches.len()).into();
        v["interrupted"] = self.cancelled.is_some().into();
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// 0 when every object checks out, 1 when one does not or the deadline cut the check
    /// short, 130 when Ctrl-C did.
    fn exit_code(&self) -> ExitCode {
        match self.cancelled {
            Some(CancelReason::Interrupted) => ExitCode::Interrupted,
            Some(_) => ExitCode::Failures,
            None if self.mismatches.is_empty() => ExitCode::Success,
            None => ExitCode::Failures,
        }
    }
}

/// One object that did not check out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// The object's key at the sink.
    #[serde(serialize_with = "lossy_path")]
    pub key: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What `verify` found (`--report` writes it as JSON, with `ok` added).
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// `--quick`: presence and size were checked, and no object was read.
    pub quick: bool,
    /// Requests sent to a remote store, history reads included (`None` when not remote).
    pub requests: Option<u64>,
    /// Objects the history lists.
    pub listed: u64,
    /// Objects checked.
    pub checked: usize,
    /// Why the check ended before every object was read (Ctrl-C, `--timeout`, the
    /// caller's token).
    #[serde(skip)]
    pub cancelled: Option<CancelReason>,
    /// Objects that failed a check, sorted by key.
    pub mismatches: Vec<Mismatch>,
    /// Objects checked that the store serves with a `Content-Encoding` (as earlier builds
    /// of ferry stored them), which clients that honour it decode once on download.
    pub encoded: u64,
    /// `--quick`: objects also checked against the ETag the store gave when it stored
    /// them (where it gives one, and its listing shows it).
    pub etags: u64,
    /// `--fix-headers`: objects of `encoded` stored again without the header.
    pub fixed: u64,
    /// Entries checked that are symbolic links: their text is in the history, and there
    /// is no object to read.
    pub links: u64,
}

/// Reads the object `from` back and writes its bytes as the object `to`, checked against
/// `e` as they pass; `to` is committed only when the bytes written are the ones that
/// checked out. With `to` = `from` (`--fix-headers`) an archive object is stored again
/// with the headers ferry gives one now (the gzip type, no Content-Encoding), as a store
/// replaces an object whole; `ferry watch` copies a renamed file's object so where the
/// store cannot copy by itself.
///
/// # Errors
/// Why it could not be read, checked or written; `to` is then as it was.
pub(crate) fn copy_checked(
    sink: &dyn Sink,
    from: &Path,
    to: &Path,
    e: &Entry,
) -> Result<crate::sink::Receipt, String> {
    /// Hands on what is read through it, and keeps the first write error.
    struct Tee<'a> {
        from: Box<dyn Read + Send>,
        to: &'a mut dyn crate::sink::Upload,
        failed: Option<String>,
    }
    impl Read for Tee<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.from.read(buf)?;
            if self.failed.is_none() {
                if let Err(err) = self.to.write(&buf[..n]) {
                    self.failed = Some(err.to_string());
                }
            }
            Ok(n)
        }
    }
    let meta = crate::sink::ObjectMeta {
        mtime: Some(
            std::time::UNIX_EPOCH + std::time::Duration::new(e.mtime_s.max(0) as u64, e.mtime_ns),
        ),
        source_size: e.size,
        source_mode: e.mode,
        mode: e.mode,
        ..Default::default()
    };
    let from = sink.open_object(from).map_err(|err| err.to_string())?.body;
    let mut up = sink.begin(to, &meta).map_err(|err| err.to_string())?;
    up.source_crc32(e.crc32);
    let mut tee = Tee {
        from,
        to: &mut *up,
        failed: None,
    };
    let checked = check_object(e, &mut tee);
    let failed = tee.failed.take();
    match checked.and_then(|()| failed.map_or(Ok(()), Err)) {
        Ok(()) => match up.commit() {
            Ok(r) if r.bytes == e.bytes_out => Ok(r),
            Ok(r) => Err(format!(
                "the store took {} bytes, not {}",
                r.bytes, e.bytes_out
            )),
            Err(err) => Err(err.to_string()),
        },
        Err(why) => {
            up.abort();
            Err(why)
        }
    }
}

/// Checks one object, read as a stream, against its manifest entry: one gzip member that
/// decodes to the recorded length and CRC-32, at the recorded compressed size. (The same
/// reading as `ferry restore`'s, into nowhere.)
///
/// # Errors
/// What is wrong, in words.
pub fn check_object(entry: &Entry, object: impl Read) -> Result<(), String> {
    match entry.form.unwrap_or_default().gzipped() {
        true => inflate_object(Some(entry), object, &mut std::io::sink(), &|_| {}).map(|_| ()),
        false => {
            crate::inflate::copy_plain(entry, object, &mut std::io::sink(), &|_| {}).map(|_| ())
        }
    }
}

/// Every object at a sink and its size, from one streamed listing, by key hash: what
/// `--quick` checks the history against (32 bytes an object: its key's hash, its size and
/// its ETag's hash, no text).
struct Listing(Vec<([u64; 2], u64, Option<u64>)>);

/// A 64-bit hash of an ETag (quotes removed), as a listing keeps it.
fn etag_hash(tag: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(crate::sink::bare_etag(tag).as_bytes())
}

impl Listing {
    /// The sink's listing, or `None` when it does not list cheaply.
    fn of(sink: &dyn Sink) -> Result<Option<Listing>, FerryError> {
        let mut objects = Vec::new();
        let listed = sink
            .list_objects_tagged(&mut |key, size, etag| {
                objects.push((split(key_hash(key)), size, etag.map(etag_hash)))
            })
            .map_err(FerryError::from)?;
        if !listed {
            return Ok(None);
        }
        objects.sort_unstable_by_key(|(h, _, _)| *h);
        Ok(Some(Listing(objects)))
    }

    /// The size of the object `key` and its ETag's hash, if the listing has it.
    fn get(&self, key: &Path) -> Option<(u64, Option<u64>)> {
        let h = split(key_hash(key));
        self.0
            .binary_search_by_key(&h, |(k, _, _)| *k)
            .ok()
            .map(|i| (self.0[i].1, self.0[i].2))
    }
}
