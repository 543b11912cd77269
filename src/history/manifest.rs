//! What was delivered, kept at the sink root so a rerun skips unchanged files and `verify`
//! can check every object: the **manifest**, compacted at the end of each run, and the
//! **journal**, segments appended while the run goes on (see [`crate::history::journal`]).
//!
//! On disk both are JSON Lines, one [`Entry`] per line, so they are read and written as
//! streams: the manifest starts with a header line `{"ferry_manifest":2,"entries":N}`;
//! a journal segment has no header. A reader takes the manifest, then the journal segments
//! in sequence order; a later entry for a key replaces an earlier one. A last line cut off
//! mid-record (a crash during a write) is ignored with a warning. Version 1 manifests (one
//! pretty-printed JSON document) are still read.
//!
//! In memory a rerun keeps only an [`Index`]: a 128-bit hash of each key with what the
//! skip check compares, 48 bytes a file.

use crate::form::Form;
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The manifest's object name at the sink root.
pub const MANIFEST_NAME: &str = ".ferry-manifest.json";

/// The name every journal segment starts with (then `.shard-K-of-N` for a shard).
pub const JOURNAL_NAME: &str = ".ferry-journal";

/// The journal segments' common prefix for a run: one journal per shard, like manifests.
pub fn journal_prefix(shard: Option<Shard>) -> String {
    match shard {
        None => format!("{JOURNAL_NAME}."),
        Some(s) => format!("{JOURNAL_NAME}.shard-{}-of-{}.", s.index(), s.count()),
    }
}

/// Journal segment `seq` of run `run` (zero-padded, so names sort in sequence order; the
/// run id keeps two runs' segments apart even if they number alike).
pub fn journal_segment(prefix: &str, seq: u64, run: &str) -> String {
    match run {
        "" => format!("{prefix}{seq:010}.jsonl"),
        run => format!("{prefix}{seq:010}.{run}.jsonl"),
    }
}

/// The sequence number of a segment named by [`journal_segment`] with `prefix` (with or
/// without a run id: segments of older versions have none).
pub fn journal_seq(prefix: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?.strip_suffix(".jsonl")?;
    let (seq, run) = rest.split_once('.').unwrap_or((rest, "x"));
    let plain_run = !run.is_empty()
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if seq.len() != 10 || !seq.bytes().all(|b| b.is_ascii_digit()) || !plain_run {
        return None;
    }
    seq.parse().ok()
}

/// The manifest name for a run: one per shard, so N shard processes writing into one sink
/// never overwrite each other's records.
pub fn manifest_name(shard: Option<Shard>) -> String {
    match shard {
        None => MANIFEST_NAME.to_string(),
        Some(s) => format!(".ferry-manifest.shard-{}-of-{}.json", s.index(), s.count()),
    }
}

/// A path in JSON, lossless: a string when it is UTF-8, else its raw bytes as an array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathRepr {
    /// A UTF-8 path.
    Text(String),
    /// A path that is not UTF-8, byte for byte.
    Bytes(Vec<u8>),
}

impl From<&Path> for PathRepr {
    fn from(p: &Path) -> Self {
        match p.to_str() {
            Some(s) => PathRepr::Text(s.to_string()),
            None => PathRepr::Bytes(p.as_os_str().as_bytes().to_vec()),
        }
    }
}

impl PathRepr {
    /// The path, borrowed (both forms are a path's bytes as they are).
    pub fn as_path(&self) -> &Path {
        match self {
            PathRepr::Text(s) => Path::new(s.as_str()),
            PathRepr::Bytes(b) => Path::new(std::ffi::OsStr::from_bytes(b)),
        }
    }
}

impl From<&PathRepr> for PathBuf {
    fn from(r: &PathRepr) -> Self {
        match r {
            PathRepr::Text(s) => PathBuf::from(s),
            PathRepr::Bytes(b) => PathBuf::from(OsString::from_vec(b.clone())),
        }
    }
}

/// One delivered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The source key (input root name + relative path).
    pub key: PathRepr,
    /// Source size in bytes when delivered.
    pub size: u64,
    /// Source modification time, seconds since the epoch.
    pub mtime_s: i64,
    /// Source modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// Source status-change time (seconds, nanoseconds) when it was read, so a rerun sees
    /// a rewrite in place whose mtime was put back. Absent in entries of older versions
    /// (which then compare size and mtime only); older versions ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<(i64, u32)>,
    /// CRC-32 of the source bytes.
    pub crc32: u32,
    /// Size of the delivered object.
    pub bytes_out: u64,
    /// CRC-32 of the object as stored (the gzip bytes, as sent and as the sink's receipt
    /// confirmed), so a read-back tells a damaged object from a damaged source. Absent in
    /// entries of older versions, and for links and directories; older versions ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zcrc32: Option<u32>,
    /// The segment index of an object whose segments are independent (libdeflate) and
    /// more than one: what lets `ferry restore` inflate them on all cores. Absent
    /// otherwise, and in entries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Segments>,
    /// The source's permission bits (`07777`) when it was read, which `ferry restore`
    /// gives back. Absent in entries of older versions (restored with the umask, as
    /// they always were); older versions ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// The source's owner and group (uid, gid) when it was read, which a restore run as
    /// root gives back. Absent in entries of older versions; older versions ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u32, u32)>,
    /// For a symbolic link (delivered without `-L`): its text. It has no object
    /// (`bytes_out` 0); `size` is the text's length and the times are the link's own.
    /// Older versions, which do not know it, fail such an entry as a missing object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathRepr>,
    /// A directory (its mode, owner and times, which restore sets after its contents;
    /// an empty one is made). No object. Older versions fail it as a missing object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// How the object is stored, with `--web`: gzip bytes under the plain key (`gzip`),
    /// or the file unchanged (`plain`). Absent: the archive's `KEY.gz`. Older versions do
    /// not know it and look for `KEY.gz`: a web object in a store is named missing (into
    /// `dir:`, a gzipped one is there, and checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<Form>,
    /// The ETag the store answered when the object was stored (quotes removed), where
    /// it answers one: `verify --quick` compares it with the listing's, so an object
    /// replaced since is found without reading it. Older versions ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The source's device and inode numbers when it was read: what lets `ferry watch`
    /// know a renamed file (`app.log` → `app.log.1`, same inode, size and mtime) as
    /// content delivered already, and copy its object in the store instead of sending it
    /// again. Older versions ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<(u64, u64)>,
}

/// What a first pass over a history needs of an entry (which entry of each key is the
/// last, and a fingerprint of what was read): its key, size and CRC. Its other required
/// fields must be there, as for an [`Entry`], but are not built: a pass of a million
/// entries allocates no segment lists, link texts or ETags.
#[derive(Debug, Deserialize)]
pub struct Brief {
    /// The source key.
    pub key: PathRepr,
    /// Source size in bytes.
    pub size: u64,
    /// CRC-32 of the source bytes.
    pub crc32: u32,
    #[serde(rename = "mtime_s")]
    _mtime_s: serde::de::IgnoredAny,
    #[serde(rename = "mtime_ns")]
    _mtime_ns: serde::de::IgnoredAny,
    #[serde(rename = "bytes_out")]
    _bytes_out: serde::de::IgnoredAny,
}

impl From<Entry> for Brief {
    fn from(e: Entry) -> Self {
        Brief {
            key: e.key,
            size: e.size,
            crc32: e.crc32,
            _mtime_s: serde::de::IgnoredAny,
            _mtime_ns: serde::de::IgnoredAny,
            _bytes_out: serde::de::IgnoredAny,
        }
    }
}

/// What the index keeps of an entry ([`Index::push`]), read without the rest of it.
/// Its other required fields must be there, as for an [`Entry`].
#[derive(Debug, Deserialize)]
pub struct Indexed {
    /// The source key.
    pub key: PathRepr,
    /// Source size in bytes.
    pub size: u64,
    /// Source modification time, seconds.
    pub mtime_s: i64,
    /// Source modification time, nanoseconds.
    pub mtime_ns: u32,
    /// Source status-change time, where recorded.
    #[serde(default)]
    pub ctime: Option<(i64, u32)>,
    /// Size of the delivered object.
    pub bytes_out: u64,
    /// How the object is stored.
    #[serde(default)]
    pub form: Option<Form>,
    #[serde(rename = "crc32")]
    _crc32: serde::de::IgnoredAny,
}

impl From<Entry> for Indexed {
    fn from(e: Entry) -> Self {
        Indexed {
            key: e.key,
            size: e.size,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
            ctime: e.ctime,
            bytes_out: e.bytes_out,
            form: e.form,
            _crc32: serde::de::IgnoredAny,
        }
    }
}

impl Entry {
    /// The key of its object, at a local sink or not (see [`Form::object_key`]).
    pub fn object_key(&self, local: bool) -> PathBuf {
        self.form
            .unwrap_or_default()
            .object_key(&PathBuf::from(&self.key), local)
    }

    /// Whether this entry is a symbolic link, with no object.
    pub fn is_link(&self) -> bool {
        self.link.is_some()
    }

    /// Whether this entry is a directory, with no object.
    pub fn is_dir(&self) -> bool {
        self.dir
    }

    /// The entry of the directory `key`, as `meta` describes it.
    pub fn of_dir(key: &Path, meta: &std::fs::Metadata) -> Entry {
        use std::os::unix::fs::MetadataExt;
        Entry {
            key: key.into(),
            size: 0,
            mtime_s: meta.mtime(),
            mtime_ns: meta.mtime_nsec() as u32,
            ctime: Some((meta.ctime(), meta.ctime_nsec() as u32)),
            crc32: 0,
            bytes_out: 0,
            zcrc32: None,
            segments: None,
            mode: Some(meta.mode() & 0o7777),
            owner: Some((meta.uid(), meta.gid())),
            link: None,
            dir: true,
            form: None,
            etag: None,
            inode: None,
        }
    }
}

/// Where an object's independent deflate segments lie: each but the last decodes to `len`
/// bytes; `z` holds each segment's compressed length, in order, starting right after the
/// gzip header. Middle segments end with an empty stored block and no final block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segments {
    /// Decoded bytes of every segment but the last.
    pub len: u64,
    /// Compressed bytes of each segment.
    pub z: Vec<u64>,
}

/// The largest segment a history may claim (and `--segment-size` may set): a larger one
/// is damage, never an allocation.
pub const MAX_SEGMENT: u64 = 1 << 30;

impl Segments {
    /// Whether this index can describe a file of `size` bytes: a segment length within
    /// [`MAX_SEGMENT`], exactly `ceil(size / len)` segments (at least one), and no segment
    /// bigger than deflate could ever make of its bytes. The history is the sink's word:
    /// nothing it says sizes a buffer before this holds.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn check(&self, size: u64) -> Result<(), String> {
        if self.len == 0 || self.len > MAX_SEGMENT {
            return Err(format!(
                "its segment index is damaged: a segment length of {} bytes (1 to {MAX_SEGMENT})",
                self.len
            ));
        }
        let want = size.div_ceil(self.len).max(1);
        if self.z.len() as u64 != want {
            return Err(format!(
                "its segment index is damaged: {} segments of {} bytes cannot hold {size} bytes",
                self.z.len(),
                self.len
            ));
        }
        let most = self.len + self.len / 8 + 4096;
        if let Some(z) = self.z.iter().find(|&&z| z > most) {
            return Err(format!(
                "its segment index is damaged: a segment of {z} compressed bytes for {} bytes",
                self.len
            ));
        }
        Ok(())
    }
}

/// A manifest or journal that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not a manifest, or damaged before its last line.
    #[error("{name} is damaged ({why}); remove it or use --force")]
    Damaged {
        /// The object's name.
        name: String,
        /// What is wrong, with the line.
        why: String,
    },
    /// Reading it failed.
    #[error("cannot read {name}: {source}")]
    Read {
        /// The object's name.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The header line of a version 2 manifest.
#[derive(Serialize, Deserialize)]
struct Header {
    ferry_manifest: u32,
    entries: u64,
}

/// A version 1 manifest: one JSON document.
#[derive(Deserialize)]
struct V1 {
    entries: Vec<Entry>,
}

/// Reads the entries of one manifest or journal segment as a stream.
pub struct EntryReader<R> {
    name: String,
    r: std::io::BufReader<R>,
    /// Entries the manifest header announced (0 without a header).
    announced: u64,
    /// A version 1 manifest, read whole at open.
    v1: Option<Vec<Entry>>,
    /// Lines read so far, for messages.
    line_no: u64,
}

impl<R: Read> EntryReader<R> {
    /// Opens `r`, the object `name`, and reads its header if it has one.
    ///
    /// # Errors
    /// [`ManifestError`] for a read error or a version 1 manifest that does not parse.
    pub fn new(name: &str, r: R) -> Result<Self, ManifestError> {
        let mut me = EntryReader {
            name: name.to_string(),
            r: std::io::BufReader::with_capacity(256 << 10, r),
            announced: 0,
            v1: None,
            line_no: 0,
        };
        let (header, v1) = match me.r.fill_buf() {
            Ok(head) => {
                let head = head.trim_ascii_start();
                let header = head.starts_with(b"{\"ferry_manifest\"");
                (
                    header,
                    !header && !head.is_empty() && !head.starts_with(b"{\"key\""),
                )
            }
            Err(e) => return Err(me.read_error(e)),
        };
        if header {
            let mut line = Vec::new();
            me.r.read_until(b'\n', &mut line)
                .map_err(|e| me.read_error(e))?;
            me.line_no = 1;
            let h: Header = serde_json::from_slice(&line).map_err(|e| me.damaged(e.to_string()))?;
            me.announced = h.entries;
        } else if v1 {
            let mut doc = Vec::new();
            me.r.read_to_end(&mut doc).map_err(|e| me.read_error(e))?;
            let v1: V1 = serde_json::from_slice(&doc).map_err(|e| me.damaged(e.to_string()))?;
            me.announced = v1.entries.len() as u64;
            me.v1 = Some(v1.entries);
        }
        Ok(me)
    }

    /// How many entries the header announced (0 for a journal segment).
    pub fn announced(&self) -> u64 {
        self.announced
    }

    /// Calls `visit` for each entry in order. Returns whether the last line was cut off
    /// mid-record (by a crash during its write) and so ignored.
    ///
    /// # Errors
    /// [`ManifestError`] for a read error or a damaged line before the last.
    pub fn for_each(self, visit: impl FnMut(Entry)) -> Result<bool, ManifestError> {
        self.for_each_as(visit)
    }

    /// As [`EntryReader::for_each`], each entry read as a `T`: an [`Entry`], or less of
    /// it (a [`Brief`]) where a pass needs less.
    ///
    /// # Errors
    /// As [`EntryReader::for_each`].
    pub fn for_each_as<T>(mut self, mut visit: impl FnMut(T)) -> Result<bool, ManifestError>
    where
        T: serde::de::DeserializeOwned + From<Entry>,
    {
        if let Some(v1) = self.v1.take() {
            v1.into_iter().map(T::from).for_each(visit);
            return Ok(false);
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self
                .r
                .read_until(b'\n', &mut line)
                .map_err(|e| self.read_error(e))?;
            if n == 0 {
                return Ok(false);
            }
            self.line_no += 1;
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<T>(text) {
                Ok(e) => visit(e),
                // Cut off while being written: it never counted as delivered.
                Err(_) if line.last() != Some(&b'\n') => return Ok(true),
                Err(e) => return Err(self.damaged(format!("line {}: {e}", self.line_no))),
            }
        }
    }

    fn damaged(&self, why: String) -> ManifestError {
        ManifestError::Damaged {
            name: self.name.clone(),
            why,
        }
    }

    fn read_error(&self, source: std::io::Error) -> ManifestError {
        ManifestError::Read {
            name: self.name.clone(),
            source,
        }
    }
}

/// Appends `e` as one JSON line.
pub fn write_entry(out: &mut Vec<u8>, e: &Entry) {
    // An Entry always serialises (plain numbers and a string or byte array).
    serde_json::to_writer(&mut *out, e).unwrap_or_default();
    out.push(b'\n');
}

/// The room to reserve for a header's announced `entries`: the header is the sink's word,
/// not a fact, so it is a hint up to a million entries and no more (a damaged or hostile
/// header of 10^15 must not size an allocation; real entries still all fit, by growing).
pub fn reservation(entries: u64) -> usize {
    usize::try_from(entries.min(1 << 20)).unwrap_or(0)
}

/// The header line of a manifest of `entries` entries.
pub fn header(entries: u64) -> Vec<u8> {
    let mut v = serde_json::to_vec(&Header {
        ferry_manifest: 2,
        entries,
    })
    .unwrap_or_default();
    v.push(b'\n');
    v
}

/// A 128-bit hash of a key's bytes: what the in-memory index keeps instead of the key.
pub fn key_hash(key: &Path) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_os_str().as_bytes())
}

/// What the skip check needs of one delivered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Source size when delivered.
    pub size: u64,
    /// Size of the delivered object.
    pub bytes_out: u64,
    /// Source mtime, seconds.
    pub mtime_s: i64,
    /// Source mtime, nanoseconds.
    pub mtime_ns: u32,
    /// Whether a listing of the sink showed the object at `bytes_out` (bit 0: for sinks
    /// that list, so the skip check needs no request per file), and the object's
    /// [`Form`] (bits 1–2): one byte, so an index entry stays 48 bytes.
    state: u8,
    /// A 24-bit tag of the source's ctime when delivered (0: not recorded); in what was
    /// padding, so an index entry stays 48 bytes.
    pub ctime_tag: [u8; 3],
}

/// The 24-bit tag of a ctime in [`Delivered`] (never 0, which means "not recorded").
pub fn ctime_tag((s, ns): (i64, u32)) -> [u8; 3] {
    let h = xxhash_rust::xxh3::xxh3_64(&[s.to_le_bytes(), u64::from(ns).to_le_bytes()].concat());
    let t = ((h as u32) & 0x00ff_ffff).max(1);
    let b = t.to_le_bytes();
    [b[0], b[1], b[2]]
}

impl Delivered {
    /// Whether a listing of the sink showed the object at its recorded size.
    pub fn listed(&self) -> bool {
        self.state & 1 != 0
    }

    /// How the object was stored.
    pub fn form(&self) -> Form {
        Form::from_bits(self.state >> 1)
    }

    /// Whether a source with status-change time `ctime` is the one delivered, as far as
    /// its ctime tells (an entry without one says nothing against it).
    pub fn same_ctime(&self, ctime: (i64, u32)) -> bool {
        self.ctime_tag == [0; 3] || self.ctime_tag == ctime_tag(ctime)
    }

    /// Whether a source of `size` with these times is the one delivered: same size and
    /// mtime, and a ctime that says nothing against it. (A file, a link's text, or a
    /// directory, whose size is 0.)
    pub fn same_as(&self, size: u64, mtime: (i64, u32), ctime: (i64, u32)) -> bool {
        self.size == size && (self.mtime_s, self.mtime_ns) == mtime && self.same_ctime(ctime)
    }
}

/// Every delivered file by key hash, sorted for binary search: 48 bytes a file, with no
/// key text and no hash-table slack.
#[derive(Debug, Default)]
pub struct Index {
    entries: Vec<([u64; 2], Delivered)>,
}

/// A key hash as two words (8-byte alignment keeps an index entry at 48 bytes).
pub fn split(h: u128) -> [u64; 2] {
    [(h >> 64) as u64, h as u64]
}

impl Index {
    /// Makes room for `n` more entries (a manifest announces its count, so the index is
    /// allocated once, not grown by doubling).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve_exact(n);
    }

    /// Adds an entry; a later one for the same key replaces it once [`Index::seal`]ed.
    pub fn push(&mut self, e: &Entry) {
        self.push_indexed(&Indexed::from(e.clone()));
    }

    /// [`Index::push`] of what was read as an [`Indexed`].
    pub fn push_indexed(&mut self, e: &Indexed) {
        let d = Delivered {
            size: e.size,
            bytes_out: e.bytes_out,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
            state: e.form.unwrap_or_default().bits() << 1,
            ctime_tag: e.ctime.map_or([0; 3], ctime_tag),
        };
        self.entries.push((split(key_hash(e.key.as_path())), d));
    }

    /// Sorts by hash and keeps the last entry of each key; call once, after the pushes.
    pub fn seal(&mut self) {
        // Stable: entries of one key stay in the order they were read.
        self.entries.sort_by_key(|(h, _)| *h);
        let e = &mut self.entries;
        let mut kept = 0;
        for i in 0..e.len() {
            if kept > 0 && e[kept - 1].0 == e[i].0 {
                e[kept - 1] = e[i];
            } else {
                e[kept] = e[i];
                kept += 1;
            }
        }
        e.truncate(kept);
    }

    /// What was delivered for `key`, if anything.
    pub fn get(&self, key: &Path) -> Option<&Delivered> {
        let h = split(key_hash(key));
        self.entries
            .binary_search_by_key(&h, |(k, _)| *k)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// Marks what a listing of the sink showed: the object `object` of `size` bytes, at
    /// a local sink or not. It is the object of the entry whose key and form name it
    /// (`KEY.gz` of an archive entry, `KEY` of a web one), at its recorded size.
    pub fn mark_listed(&mut self, object: &Path, size: u64, local: bool) {
        let stripped = object
            .to_str()
            .and_then(|k| k.strip_suffix(".gz"))
            .map(Path::new);
        for key in [Some(object), stripped].into_iter().flatten() {
            let h = split(key_hash(key));
            if let Ok(i) = self.entries.binary_search_by_key(&h, |(k, _)| *k) {
                let d = &mut self.entries[i].1;
                if d.form().object_key(key, local) == object && d.bytes_out == size {
                    d.state |= 1;
                }
            }
        }
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file was delivered before.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &Path, size: u64) -> Entry {
        Entry {
            segments: None,
            key: key.into(),
            size,
            mtime_s: 5,
            mtime_ns: 7,
            ctime: None,
            crc32: 9,
            bytes_out: 11,
            zcrc32: Some(0x1234_5678),
            mode: Some(0o640),
            owner: Some((1000, 100)),
            link: None,
            dir: false,
            form: None,
            etag: None,
            inode: None,
        }
    }

    fn read(bytes: &[u8]) -> Result<(Vec<Entry>, bool), ManifestError> {
        let mut v = Vec::new();
        let torn = EntryReader::new("m", bytes)?.for_each(|e| v.push(e))?;
        Ok((v, torn))
    }

    #[test]
    fn round_trips_non_utf8_keys_as_json_lines() {
        let odd = PathBuf::from(OsString::from_vec(b"dir/\xff\xfe.log".to_vec()));
        let mut bytes = header(2);
        for key in [Path::new("a/b.txt"), odd.as_path()] {
            write_entry(&mut bytes, &entry(key, 3));
        }
        let (back, torn) = read(&bytes).unwrap();
        assert!(!torn);
        assert_eq!(back.len(), 2);
        assert_eq!(PathBuf::from(&back[1].key), odd);
        assert!(read(b"{nope\n{}\n").is_err());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_torn_middle_is_damage() {
        let mut bytes = Vec::new();
        write_entry(&mut bytes, &entry(Path::new("a"), 1));
        write_entry(&mut bytes, &entry(Path::new("b"), 2));
        let cut = &bytes[..bytes.len() - 9];
        let (back, torn) = read(cut).unwrap();
        assert!(torn);
        assert_eq!(back.len(), 1);
        let mut middle = cut.to_vec();
        middle.push(b'\n');
        write_entry(&mut middle, &entry(Path::new("c"), 3));
        assert!(matches!(read(&middle), Err(ManifestError::Damaged { .. })));
    }

    #[test]
    fn version_1_manifests_are_still_read() {
        let v1 = br#"{"version":1,"entries":[{"key":"a/b","size":3,"mtime_s":5,"mtime_ns":7,"crc32":9,"bytes_out":11}]}"#;
        let (back, _) = read(v1).unwrap();
        // Written before modes and owners were recorded: none come back.
        let old = Entry {
            mode: None,
            owner: None,
            zcrc32: None,
            ..entry(Path::new("a/b"), 3)
        };
        assert_eq!(back, vec![old]);
    }

    #[test]
    fn the_index_keeps_the_last_entry_of_each_key() {
        let mut ix = Index::default();
        for (k, size) in [("a", 1), ("b", 2), ("a", 3)] {
            ix.push(&entry(Path::new(k), size));
        }
        ix.seal();
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(Path::new("a")).unwrap().size, 3);
        assert!(ix.get(Path::new("c")).is_none());
        ix.mark_listed(Path::new("b.gz"), 11, false);
        assert!(ix.get(Path::new("b")).unwrap().listed());
        assert_eq!(std::mem::size_of::<([u64; 2], Delivered)>(), 48);
    }

    #[test]
    fn journal_names_sort_in_sequence_order() {
        let p = journal_prefix(Some(Shard::new(1, 4).unwrap()));
        assert_eq!(
            journal_segment(&p, 12, ""),
            ".ferry-journal.shard-1-of-4.0000000012.jsonl"
        );
        assert_eq!(
            journal_segment(&p, 12, "ab12"),
            ".ferry-journal.shard-1-of-4.0000000012.ab12.jsonl"
        );
        assert_eq!(journal_seq(&p, &journal_segment(&p, 12, "")), Some(12));
        assert_eq!(journal_seq(&p, &journal_segment(&p, 12, "ab12")), Some(12));
        assert_eq!(
            journal_seq(&journal_prefix(None), &journal_segment(&p, 1, "")),
            None
        );
        assert_eq!(journal_seq(&p, &format!("{p}12.jsonl")), None);
    }
}
