//! Checkpointed progress: the journal of deliveries, written while the run goes on, and
//! its compaction into the manifest at the end (design promise 7).
//!
//! The collector sends each delivered file's [`Entry`] here only after its object is
//! visible, so the journal never claims an object that is not there. A writer thread
//! appends entries to a buffer and saves it as the next numbered segment
//! (`.ferry-journal[.shard-K-of-N].NNNNNNNNNN.jsonl`, through [`Sink::write_meta`], so it
//! appears whole) at least once a second and every [`FLUSH_RECORDS`] entries. A crash
//! therefore costs at most the last flush interval. At the end the manifest and every
//! segment are folded into a new manifest, streamed, and the segments removed; a crash
//! during that leaves both, and the next reader merges them. Folding reads the manifest
//! twice and writes it again, so into a big history it waits ([`Unfolded::worth_folding`])
//! until the journal holds an eighth of the manifest's entries or 64 segments: a run that
//! adds a few files to a million costs a segment, not three passes over 200 MB.

use crate::history::manifest::{
    journal_prefix, journal_segment, journal_seq, key_hash, manifest_name, split, Brief, Entry,
    EntryReader, Index, Indexed, ManifestError, JOURNAL_NAME, MANIFEST_NAME,
};
use crate::shard::Shard;
use crate::sink::{ObjectMeta, Sink, SinkError};
use crate::view::Log;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest an entry waits in memory before its segment is saved.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Entries that make a segment on their own, however quickly they come.
pub const FLUSH_RECORDS: usize = 4096;

/// Why the history of a sink could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A manifest or journal segment is damaged.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The history changed while it was read (a run beside this one folded its journal
    /// into the manifest), and no consistent snapshot was had in several tries.
    #[error("the history at the sink kept changing while it was read ({0} went away); no consistent snapshot could be had: run again when the delivery beside this one has ended")]
    Changed(String),
}

impl From<HistoryError> for crate::error::FerryError {
    /// A sink failure stays one; a damaged history is that class (`--force` rewrites it);
    /// a history that kept changing under the reader is a setup error (a run beside this
    /// one is busy with it).
    fn from(e: HistoryError) -> Self {
        use crate::error::FerryError;
        match e {
            HistoryError::Sink(e) => FerryError::Sink(e),
            e @ HistoryError::Manifest(_) => FerryError::History(Box::new(e)),
            e @ HistoryError::Changed(_) => FerryError::Setup(Box::new(e)),
        }
    }
}

/// What earlier runs delivered into a sink, as a rerun needs it.
pub struct History {
    /// Delivered files by key hash.
    pub index: Index,
    /// The sequence number for this run's first journal segment.
    pub next_seq: u64,
    /// Torn records ignored, in words, for the summary.
    pub warnings: Vec<String>,
    /// How much of it was outside the manifest: whether the run's end should fold it in.
    pub unfolded: Unfolded,
}

/// Entries a history's manifest holds, and entries and segments of its journal not yet
/// folded into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfolded {
    /// Entries in the manifest.
    pub manifest: u64,
    /// Entries in journal segments.
    pub journal: u64,
    /// Journal segments.
    pub segments: u64,
}

/// A manifest under this many entries (a few MiB) is always folded into at a run's end:
/// rewriting it costs little.
pub const FOLD_ALWAYS_BELOW: u64 = 1 << 16;
/// Otherwise the journal is folded in once it holds an eighth of the manifest's entries…
pub const FOLD_SHARE: u64 = 8;
/// …or this many segments, which every reader fetches one by one (eight at once).
pub const FOLD_SEGMENTS: u64 = 64;

impl Unfolded {
    /// Whether the run's end should fold the journal into the manifest, once the run has
    /// added `saved` entries in `segments` segments. Folding reads the whole manifest
    /// twice and writes it again: after a run that added a handful of files to a history
    /// of a million (a watch's every shipment, a nightly run), that was nearly all the
    /// run's time into a remote store; readers merge the segments as they go anyway.
    pub fn worth_folding(&self, saved: u64, segments: u64) -> bool {
        let journal = self.journal + saved;
        let segments = self.segments + segments;
        segments > 0
            && (self.manifest < FOLD_ALWAYS_BELOW
                || journal * FOLD_SHARE >= self.manifest
                || segments >= FOLD_SEGMENTS)
    }
}

/// The metadata objects that hold a run's history: the manifest, then the journal
/// segments in sequence order.
fn sources(sink: &dyn Sink, shard: Option<Shard>) -> Result<(Vec<String>, u64), SinkError> {
    let prefix = journal_prefix(shard);
    let mut segs: Vec<(u64, String)> = sink
        .list_meta(&prefix)?
        .into_iter()
        .filter_map(|n| journal_seq(&prefix, &n).map(|s| (s, n)))
        .collect();
    segs.sort();
    let next = segs.last().map_or(0, |(s, _)| s + 1);
    let mut names = vec![manifest_name(shard)];
    names.extend(segs.into_iter().map(|(_, n)| n));
    Ok((names, next))
}

/// What [`read_sources`] hands its visitor.
// Handed by value to a callback, once per entry and never stored: boxing the entry would
// only add an allocation per entry of a million-file history.
#[allow(clippy::large_enum_variant)]
enum Item<T = Entry> {
    /// A manifest header announced this many entries (to reserve room).
    Announced(u64),
    /// The entry with this ordinal across all sources.
    Entry(u64, T),
}

/// Journal segments a remote sink is asked for at once: each costs a round trip, and
/// one after another they made most of a small run's end over a 30 ms link.
const AT_ONCE: usize = 8;
/// The most of one segment fetched whole ahead of its parse (ferry writes at most
/// [`FLUSH_RECORDS`] entries a segment, about 1 MiB); a bigger one is streamed instead.
const FETCH_WHOLE: u64 = 16 << 20;

/// A journal segment fetched ahead of its parse.
enum Fetched {
    /// All of it.
    Whole(Vec<u8>),
    /// Not there (any more).
    Gone,
    /// Bigger than [`FETCH_WHOLE`]: to be streamed.
    TooBig,
}

/// `f(sink, name)` for each of `names`, in order. For a remote sink, up to [`AT_ONCE`]
/// run at once, each on a thread of its own (their round trips overlap); a local one
/// takes them one by one.
fn each_name<'a, R: Send + 'a, F: Fn(&dyn Sink, &str) -> R + Sync + 'a>(
    sink: &'a dyn Sink,
    names: &'a [String],
    f: F,
) -> impl Iterator<Item = R> + 'a {
    let remote = sink.local_root().is_none();
    let mut out = Vec::new();
    let mut batches = names.chunks(if remote { AT_ONCE } else { 1 });
    // Batch by batch, so that no more than AT_ONCE results are held at a time.
    std::iter::from_fn(move || {
        if out.is_empty() {
            let f = &f;
            let batch = batches.next()?;
            out = match batch {
                [one] => vec![f(sink, one)],
                _ => std::thread::scope(|s| {
                    let started: Vec<_> =
                        batch.iter().map(|n| s.spawn(move || f(sink, n))).collect();
                    started
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                        .collect()
                }),
            };
            out.reverse();
        }
        out.pop()
    })
}

/// Fetches the journal segment `name` whole, if it is there and not too big.
fn fetch(sink: &dyn Sink, name: &str) -> Result<Fetched, SinkError> {
    use std::io::Read;
    let Some(r) = sink.open_meta(name)? else {
        return Ok(Fetched::Gone);
    };
    let mut bytes = Vec::new();
    r.take(FETCH_WHOLE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SinkError::io(format!("cannot read {name}"), e))?;
    Ok(match bytes.len() as u64 > FETCH_WHOLE {
        true => Fetched::TooBig,
        false => Fetched::Whole(bytes),
    })
}

/// What [`read_sources`] read, besides what it handed its visitor.
#[derive(Debug, Default)]
struct Read {
    /// Torn last records ignored, in words.
    warnings: Vec<String>,
    /// Entries in the manifest.
    in_manifest: u64,
    /// Entries in all.
    entries: u64,
}

/// Reads every source in order, calling `visit` for each header and entry. The manifest
/// is streamed; the journal segments of a remote sink are fetched several at once.
fn read_sources<T: serde::de::DeserializeOwned + From<Entry>>(
    sink: &dyn Sink,
    names: &[String],
    mut visit: impl FnMut(Item<T>),
) -> Result<Read, HistoryError> {
    let mut ordinal = 0u64;
    let mut warnings = Vec::new();
    let mut take = |name: &str, opened: Option<Box<dyn std::io::Read + Send>>| {
        let Some(r) = opened else {
            // A listed segment that is gone was folded into a manifest read before it:
            // this read is no snapshot. (A manifest not there yet is just no history.)
            if name.starts_with(JOURNAL_NAME) {
                return Err(HistoryError::Changed(name.to_string()));
            }
            return Ok(0);
        };
        let first = ordinal;
        let reader = EntryReader::new(name, r)?;
        visit(Item::Announced(reader.announced()));
        let torn = reader.for_each_as(|e| {
            visit(Item::Entry(ordinal, e));
            ordinal += 1;
        })?;
        if torn {
            warnings.push(format!(
                "{name}: ignored its last record, cut off mid-write (a crash); those files will be delivered again"
            ));
        }
        Ok::<_, HistoryError>(ordinal - first)
    };
    let Some((manifest, segments)) = names.split_first() else {
        return Ok(Read::default());
    };
    let in_manifest = take(manifest, sink.open_meta(manifest)?)?;
    for (name, fetched) in segments.iter().zip(each_name(sink, segments, fetch)) {
        let opened: Option<Box<dyn std::io::Read + Send>> = match fetched? {
            Fetched::Whole(bytes) => Some(Box::new(std::io::Cursor::new(bytes))),
            Fetched::Gone => None,
            Fetched::TooBig => sink.open_meta(name)?,
        };
        take(name, opened)?;
    }
    Ok(Read {
        warnings,
        in_manifest,
        entries: ordinal,
    })
}

impl History {
    /// Reads the manifest and journal of `shard` at `sink` into an index. Where the sink
    /// lists cheaply, one listing confirms which objects are still there.
    ///
    /// # Errors
    /// [`HistoryError`] when the sink fails or a manifest or segment is damaged.
    pub fn read(sink: &dyn Sink, shard: Option<Shard>) -> Result<History, HistoryError> {
        let (names, next_seq) = sources(sink, shard)?;
        let mut index = Index::default();
        let read = read_sources(sink, &names, |item: Item<Indexed>| match item {
            Item::Announced(n) => index.reserve(crate::history::manifest::reservation(n)),
            Item::Entry(_, e) => index.push_indexed(&e),
        })?;
        let unfolded = Unfolded {
            manifest: read.in_manifest,
            journal: read.entries - read.in_manifest,
            segments: names.len() as u64 - 1,
        };
        index.seal();
        if !index.is_empty() {
            let local = sink.local_root().is_some();
            sink.list_objects(&mut |key, size| index.mark_listed(key, size, local))?;
        }
        Ok(History {
            index,
            next_seq,
            warnings: read.warnings,
            unfolded,
        })
    }
}

/// Removes the manifest and every journal segment of `shard` (for `--force` over a damaged
/// history).
///
/// # Errors
/// A [`SinkError`] when one cannot be removed.
pub fn forget(sink: &dyn Sink, shard: Option<Shard>) -> Result<(), SinkError> {
    let (names, _) = sources(sink, shard)?;
    each_name(sink, &names, |sink, n| sink.delete_meta(n)).collect()
}

/// Whose history to read at a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One run's: the unsharded one (`None`) or shard K/N's.
    One(Option<Shard>),
    /// Every run's at the sink: the unsharded one and every shard's, of any N.
    Every,
}

/// The runs (unsharded, or shard K/N) that left a manifest or journal at `sink`.
///
/// # Errors
/// When the sink cannot be listed.
pub fn histories(sink: &dyn Sink) -> Result<Vec<Option<Shard>>, SinkError> {
    let mut found = std::collections::BTreeSet::new();
    for name in sink
        .list_meta(".ferry-manifest")?
        .into_iter()
        .chain(sink.list_meta(&format!("{JOURNAL_NAME}."))?)
    {
        if let Some(h) = history_of(&name) {
            found.insert(h);
        }
    }
    Ok(found.into_iter().collect())
}

/// The run a manifest or journal name belongs to: `Some(None)` for the unsharded run,
/// `Some(Some(shard))` for a shard's, `None` for any other name.
fn history_of(name: &str) -> Option<Option<Shard>> {
    if name == MANIFEST_NAME || journal_seq(&journal_prefix(None), name).is_some() {
        return Some(None);
    }
    let rest = name
        .strip_prefix(".ferry-manifest.shard-")
        .or_else(|| name.strip_prefix(&format!("{JOURNAL_NAME}.shard-")))?;
    let (k, rest) = rest.split_once("-of-")?;
    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let shard = Shard::new(k.parse().ok()?, n.parse().ok()?).ok()?;
    (name == manifest_name(Some(shard))
        || journal_seq(&journal_prefix(Some(shard)), name).is_some())
    .then_some(Some(shard))
}

/// The sources of `scope`: each run's manifest, then its journal segments in order.
fn scope_sources(sink: &dyn Sink, scope: Scope) -> Result<Vec<String>, SinkError> {
    match scope {
        Scope::One(shard) => Ok(sources(sink, shard)?.0),
        Scope::Every => {
            let mut names = Vec::new();
            for h in histories(sink)? {
                names.extend(sources(sink, h)?.0);
            }
            Ok(names)
        }
    }
}

/// Calls `visit` once for each key's current entry (the last one across the manifest and
/// the journal segments, in order), streaming: memory is 24 bytes an entry read, not the
/// entries themselves. Returns how many entries were visited and the torn-record warnings.
///
/// # Errors
/// [`HistoryError`] when the sink fails or a manifest or segment is damaged.
pub fn for_each_current(
    sink: &dyn Sink,
    scope: Scope,
    mut visit: impl FnMut(Entry),
) -> Result<(u64, Vec<String>), HistoryError> {
    // The first pass finds each key's last entry, the second visits those, pairing the
    // two by position; each hashes what it read. A compaction in between shows as a
    // listed segment gone or a different hash: before anything was visited, the read
    // starts again; after, the reader says it could not see one history (never a torn
    // one in silence).
    let mut last = String::new();
    for _ in 0..SNAPSHOT_TRIES {
        let names = scope_sources(sink, scope)?;
        let (keep, first) = match current(sink, &names) {
            Ok(k) => k,
            Err(HistoryError::Changed(n)) => {
                last = n;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut n = 0;
        let mut second = Fingerprint::default();
        let mut announced = Vec::new();
        let mut differs = false;
        let read = read_sources(sink, &names, |item: Item| match item {
            Item::Announced(a) => {
                announced.push(a);
                differs |= first.announced.get(announced.len() - 1) != Some(&a);
            }
            Item::Entry(ord, e) => {
                second.add(ord, (e.key.as_path(), e.size, e.crc32));
                if !differs && keep.get(ord as usize).is_some_and(|&k| k) {
                    n += 1;
                    visit(e);
                }
            }
        });
        match read {
            Err(HistoryError::Changed(name)) if n == 0 => last = name,
            Ok(_) if differs && n == 0 => last = "the manifest".into(),
            Err(e) => return Err(e),
            Ok(_) if second.sum != first.sum || differs => {
                return Err(HistoryError::Changed("the manifest".into()))
            }
            Ok(read) => return Ok((n, read.warnings)),
        }
    }
    Err(HistoryError::Changed(last))
}

/// How many times a reader tries for a consistent snapshot of a history.
const SNAPSHOT_TRIES: usize = 8;

/// What a pass over the history read: the headers' announced counts, and the entry count
/// and a hash of (ordinal, key, size, crc) over every entry, to tell two passes over
/// changed sources apart.
#[derive(Default)]
struct Fingerprint {
    announced: Vec<u64>,
    sum: (u64, u64),
}

impl Fingerprint {
    fn add(&mut self, ord: u64, (key, size, crc32): (&std::path::Path, u64, u32)) {
        let k = key_hash(key);
        let mixed = (k as u64)
            ^ ((k >> 64) as u64).rotate_left(17)
            ^ ord.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ size.rotate_left(29)
            ^ u64::from(crc32).rotate_left(41);
        self.sum.0 += 1;
        self.sum.1 = self
            .sum
            .1
            .wrapping_add(mixed.wrapping_mul(0xff51_afd7_ed55_8ccd) | 1);
    }
}

/// For every entry across `names`, whether it is the last one of its key; and what was read.
fn current(sink: &dyn Sink, names: &[String]) -> Result<(Vec<bool>, Fingerprint), HistoryError> {
    let mut seen: Vec<([u64; 2], u64)> = Vec::new();
    let mut print = Fingerprint::default();
    read_sources(sink, names, |item: Item<Brief>| match item {
        Item::Announced(n) => {
            print.announced.push(n);
            seen.reserve(crate::history::manifest::reservation(n))
        }
        Item::Entry(ord, e) => {
            print.add(ord, (e.key.as_path(), e.size, e.crc32));
            seen.push((split(key_hash(e.key.as_path())), ord))
        }
    })?;
    let mut keep = vec![false; seen.len()];
    seen.sort_unstable();
    for (i, (h, ord)) in seen.iter().enumerate() {
        if seen.get(i + 1).is_none_or(|(next, _)| next != h) {
            keep[*ord as usize] = true;
        }
    }
    Ok((keep, print))
}

/// Folds the manifest and every journal segment of `shard` into a new manifest, streamed
/// through an upload (so it appears whole), then removes the segments. Does nothing when
/// there are no segments. Returns the number of entries now in the manifest.
///
/// # Errors
/// [`HistoryError`]; the segments then stay, and the next reader merges them.
pub fn compact(sink: &dyn Sink, shard: Option<Shard>, log: &Log) -> Result<u64, HistoryError> {
    compact_without(sink, shard, log, &HashSet::new())
}

/// [`compact`], leaving out the current entries of the keys in `gone`, which no longer
/// stand (`--delete`: their objects were removed); with any, it rewrites the manifest
/// even when there is no journal to fold in.
///
/// # Errors
/// As [`compact`].
pub fn compact_without(
    sink: &dyn Sink,
    shard: Option<Shard>,
    log: &Log,
    gone: &HashSet<PathBuf>,
) -> Result<u64, HistoryError> {
    let (names, _) = sources(sink, shard)?;
    if names.len() == 1 && gone.is_empty() {
        return Ok(0);
    }
    let name = manifest_name(shard);
    log.debug(|| {
        format!(
            "[manifest] compacting {} journal segments into {name}",
            names.len() - 1
        )
    });
    let (keep, _) = current(sink, &names)?;
    // A hint in the header: the keys gone are among the current ones.
    let count = (keep.iter().filter(|&&k| k).count() as u64).saturating_sub(gone.len() as u64);
    let meta = ObjectMeta::default();
    let mut upload = sink.begin_meta(&name, &meta)?;
    let mut buf = crate::history::manifest::header(count);
    let mut failed: Option<SinkError> = None;
    let read = read_sources(sink, &names, |item: Item| {
        let Item::Entry(ord, e) = item else { return };
        if failed.is_some() || !keep[ord as usize] || gone.contains(&PathBuf::from(&e.key)) {
            return;
        }
        crate::history::manifest::write_entry(&mut buf, &e);
        if buf.len() >= 1 << 20 {
            failed = upload.write(&buf).err();
            buf.clear();
        }
    });
    let written = match (read, failed) {
        (Err(e), _) => Err(e),
        (_, Some(e)) => Err(e.into()),
        (Ok(_), None) => upload
            .write(&buf)
            .and_then(|_| upload.commit())
            .map_err(HistoryError::from),
    };
    if let Err(e) = written {
        upload.abort();
        return Err(e);
    }
    each_name(sink, &names[1..], |sink, n| sink.delete_meta(n)).collect::<Result<(), _>>()?;
    log.debug(|| format!("[manifest] {name}: {count} entries"));
    Ok(count)
}

/// What the journal writer did, once it has ended.
#[derive(Debug, Default)]
pub struct JournalEnd {
    /// Entries saved in segments.
    pub saved: u64,
    /// Segments saved.
    pub segments: u64,
    /// Entries that could not be saved (the next run delivers them again).
    pub unsaved: u64,
    /// The last save error, in words.
    pub error: Option<String>,
}

/// Entries recorded and not yet saved, shared by the collector and the writer.
#[derive(Default)]
struct Pending {
    /// JSON Lines, ready to save.
    bytes: Vec<u8>,
    /// Entries in `bytes`.
    count: u64,
    /// When the oldest of them was recorded.
    oldest: Option<Instant>,
}

/// What wakes the writer before its one-second tick.
enum Kick {
    /// A segment's worth of entries is waiting.
    Full,
    /// The run is over: save what is left and stop.
    Stop,
}

/// The collector's end of the journal: records an entry with one uncontended lock, no
/// thread wake-up (the writer wakes on its own once a second, or when a segment is full).
#[derive(Clone)]
pub struct Recorder {
    pending: Arc<std::sync::Mutex<Pending>>,
    kick: Sender<Kick>,
    every: u64,
}

impl Recorder {
    /// Records a delivery; it is saved within a second.
    pub fn record(&self, e: &Entry) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        crate::history::manifest::write_entry(&mut p.bytes, e);
        p.count += 1;
        p.oldest.get_or_insert_with(Instant::now);
        if p.count == self.every {
            let _ = self.kick.try_send(Kick::Full);
        }
    }
}

/// The journal writer: a thread that saves entries as numbered segments.
pub struct Journal {
    recorder: Recorder,
    handle: JoinHandle<JournalEnd>,
}

impl Journal {
    /// Starts the writer for `shard` at `sink`, numbering segments from `first_seq` and
    /// naming them with `run`, a segment at least every second and every `every` entries.
    ///
    /// # Errors
    /// If the thread cannot start.
    pub fn start(
        sink: Arc<dyn Sink>,
        shard: Option<Shard>,
        first_seq: u64,
        run: &str,
        every: usize,
        log: Log,
    ) -> std::io::Result<Journal> {
        let (kick, kicks) = crossbeam_channel::bounded(1);
        let recorder = Recorder {
            pending: Arc::default(),
            kick,
            every: every.max(1) as u64,
        };
        let writer = Writer {
            sink,
            prefix: journal_prefix(shard),
            seq: first_seq,
            run: run.to_string(),
            log,
            pending: recorder.pending.clone(),
            unsaved: Pending::default(),
            end: JournalEnd::default(),
        };
        let handle = std::thread::Builder::new()
            .name("ferry-journal".into())
            .spawn(move || writer.run(kicks))?;
        Ok(Journal { recorder, handle })
    }

    /// The collector's end.
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// Saves what is left and waits for the writer.
    pub fn finish(self) -> JournalEnd {
        // Blocking send: a queued Full kick is taken first, then this.
        let _ = self.recorder.kick.send(Kick::Stop);
        self.handle.join().unwrap_or_else(|_| JournalEnd {
            error: Some("the journal writer panicked".into()),
            ..JournalEnd::default()
        })
    }
}

struct Writer {
    sink: Arc<dyn Sink>,
    prefix: String,
    seq: u64,
    /// This run's id, in each segment's name.
    run: String,
    log: Log,
    pending: Arc<std::sync::Mutex<Pending>>,
    /// Taken but not yet saved (a save failed): saved first next time.
    unsaved: Pending,
    end: JournalEnd,
}

impl Writer {
    fn run(mut self, kicks: Receiver<Kick>) -> JournalEnd {
        loop {
            let kick = kicks.recv_timeout(self.until_due());
            self.flush();
            if matches!(kick, Ok(Kick::Stop) | Err(RecvTimeoutError::Disconnected)) {
                self.end.unsaved = self.unsaved.count;
                return self.end;
            }
        }
    }

    /// How long until the oldest waiting entry is a second old.
    fn until_due(&self) -> Duration {
        let oldest = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .oldest;
        match self.unsaved.oldest.or(oldest) {
            Some(t) => (t + FLUSH_EVERY).saturating_duration_since(Instant::now()),
            None => FLUSH_EVERY,
        }
    }

    fn flush(&mut self) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let taken = std::mem::take(&mut *p);
            drop(p);
            self.unsaved.bytes.extend_from_slice(&taken.bytes);
            self.unsaved.count += taken.count;
            self.unsaved.oldest = self.unsaved.oldest.or(taken.oldest);
        }
        if self.unsaved.count == 0 {
            return;
        }
        let name = journal_segment(&self.prefix, self.seq, &self.run);
        let n = self.unsaved.count;
        self.log
            .debug(|| format!("[journal] flushing {n} records to {name}"));
        match self.sink.write_meta(&name, &self.unsaved.bytes) {
            Ok(()) => {
                self.seq += 1;
                self.end.saved += n;
                self.end.segments += 1;
                self.unsaved = Pending::default();
                let total = self.end.saved;
                self.log
                    .debug(|| format!("[journal] flushed {n} records ({total} in all)"));
            }
            Err(e) => {
                // Kept, and tried again at the next flush.
                self.unsaved.oldest = Some(Instant::now());
                if self.end.error.is_none() {
                    self.log
                        .warn(|| format!("cannot save the journal ({e}); will retry"));
                }
                self.end.error = Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::manifest::{header, write_entry};
    use crate::sink::{DirSink, SinkOptions};
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    fn entry(key: &str, size: u64) -> Entry {
        Entry {
            key: Path::new(key).into(),
            size,
            mtime_s: 1,
            mtime_ns: 0,
            ctime: None,
            crc32: 0,
            bytes_out: 20,
            zcrc32: None,
            segments: None,
            mode: None,
            owner: None,
            link: None,
            dir: false,
            form: None,
            etag: None,
            inode: None,
        }
    }

    /// A sink that, at its `at`-th read of a metadata object, folds the journal into the
    /// manifest first: what a delivery beside a reader does.
    struct Compacting {
        inner: DirSink,
        reads: AtomicUsize,
        at: usize,
    }

    impl Sink for Compacting {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn begin(
            &self,
            key: &Path,
            meta: &ObjectMeta,
        ) -> Result<Box<dyn crate::sink::Upload>, SinkError> {
            self.inner.begin(key, meta)
        }
        fn has(&self, key: &Path, len: u64) -> bool {
            self.inner.has(key, len)
        }
        fn open_meta(
            &self,
            name: &str,
        ) -> Result<Option<Box<dyn std::io::Read + Send>>, SinkError> {
            if self.reads.fetch_add(1, Relaxed) + 1 == self.at {
                compact(&self.inner, None, &Log::stderr(crate::view::Level::Error)).unwrap();
            }
            self.inner.open_meta(name)
        }
        fn list_meta(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
            self.inner.list_meta(prefix)
        }
        fn delete_meta(&self, name: &str) -> Result<(), SinkError> {
            self.inner.delete_meta(name)
        }
    }

    /// Issue 21 point 3: a reader beside a compaction sees one consistent history (every
    /// key once, at its last entry), whichever read the compaction falls before.
    #[test]
    fn a_compaction_between_a_readers_passes_never_tears_what_it_sees() {
        for at in 1..=9 {
            let t = tempfile::tempdir().unwrap();
            let inner = DirSink::open(t.path(), SinkOptions::default()).unwrap();
            let mut m = header(3);
            for (k, s) in [("a", 1), ("b", 2), ("c", 3)] {
                write_entry(&mut m, &entry(k, s));
            }
            inner.write_meta(&manifest_name(None), &m).unwrap();
            let prefix = journal_prefix(None);
            for (seq, batch) in [[("b", 20), ("d", 4)], [("a", 10), ("e", 5)]]
                .iter()
                .enumerate()
            {
                let mut seg = Vec::new();
                for (k, s) in batch {
                    write_entry(&mut seg, &entry(k, *s));
                }
                inner
                    .write_meta(&journal_segment(&prefix, seq as u64, "r1"), &seg)
                    .unwrap();
            }
            let sink = Compacting {
                inner,
                reads: AtomicUsize::new(0),
                at,
            };
            let mut seen = Vec::new();
            let got = for_each_current(&sink, Scope::One(None), |e| {
                seen.push((PathBuf::from(&e.key), e.size))
            });
            seen.sort();
            let want: Vec<(PathBuf, u64)> = [("a", 10), ("b", 20), ("c", 3), ("d", 4), ("e", 5)]
                .iter()
                .map(|(k, s)| (PathBuf::from(k), *s))
                .collect();
            match got {
                Ok((n, _)) => assert_eq!((n, seen), (5, want), "compaction at read {at}"),
                // Said, not torn in silence; and only once entries were being visited.
                Err(HistoryError::Changed(_)) => {
                    assert!(!seen.is_empty(), "gave up before visiting, at read {at}")
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
