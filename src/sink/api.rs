//! The contract every sink keeps: the [`Sink`] and [`Upload`] traits, what they are told
//! ([`ObjectMeta`], [`SinkOptions`]) and what they answer ([`Receipt`], [`SinkError`]).

use crate::pipeline::CancelToken;
use crate::words::io_words;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A sink failure: setup problems are fatal to the run, upload problems to one file.
///
/// Whether a failure is worth retrying is decided from its typed cause
/// ([`SinkError::is_transient`]), never from its message.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The `--to` value could not be understood.
    #[error("bad sink '{spec}': {why}")]
    BadSpec {
        /// What the user typed.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// The sink cannot be used at all (unwritable directory, no such bucket, …).
    #[error("cannot use output {target}: {cause}")]
    Setup {
        /// The sink's location.
        target: String,
        /// Why not, in words.
        cause: String,
    },
    /// A local file operation failed; `context` says which (`write failed`), if anything.
    #[error("{}", io_text(context, source))]
    Io {
        /// What was being done.
        context: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The object store refused (after its own retries).
    #[cfg(feature = "cloud")]
    #[error("{}", store_words(.0))]
    Store(#[source] object_store::Error),
    /// The store refused a body that did not match the checksum sent with it (S3
    /// `BadDigest` or `XAmzContentSHA256Mismatch`, Azure `Md5Mismatch`, GCS `InvalidDigest`):
    /// it was damaged on the way, and is worth sending again.
    #[cfg(feature = "cloud")]
    #[error("the store found the body damaged on the way: {}", store_words(.0))]
    Damaged(#[source] object_store::Error),
    /// The object to read back does not exist.
    #[error("no such object")]
    NoSuchObject,
    /// The object is in an archive storage class (S3 GLACIER / DEEP_ARCHIVE, Azure
    /// Archive), which cannot be read until it is restored.
    #[error("the object is in an archive storage class and cannot be read until it is restored (S3: aws s3api restore-object; Azure: set its tier to Hot or Cool), then verify again")]
    Archived,
    /// The `sim:` sink's injected failure of one request (transient by design).
    #[error("simulated network failure")]
    Simulated,
    /// The store refused the request for load (S3's 503 SlowDown); worth retrying, later.
    #[error("the store asked to slow down (throttled)")]
    Throttled,
    /// The file's deadline passed while waiting on the sink.
    #[error("the file's deadline passed while waiting on the sink")]
    TimedOut,
    /// The run was cancelled while waiting on the sink.
    #[error("cancelled")]
    Cancelled,
    /// The sink was used out of order (write after commit, …): a bug, never retried.
    #[error("{0}")]
    Misuse(&'static str),
    /// What is at a key is not what ferry stored there, so it is left alone
    /// (`--delete`): another size, or not a regular file.
    #[error("left alone: {0}")]
    Refused(String),
}

impl SinkError {
    /// Whether retrying the same operation may succeed: an injected network failure, or a
    /// local I/O error of a kind that passes (interrupted, would block, timed out).
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            SinkError::Simulated | SinkError::Throttled => true,
            #[cfg(feature = "cloud")]
            SinkError::Damaged(_) => true,
            SinkError::Io { source, .. } => matches!(
                source.kind(),
                K::Interrupted | K::WouldBlock | K::TimedOut | K::ConnectionReset
            ),
            _ => false,
        }
    }

    /// An [`SinkError::Io`] saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SinkError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Whether `hay` holds `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `context: words`, or the words alone without a context.
fn io_text(context: &str, e: &std::io::Error) -> String {
    match context {
        "" => io_words(e),
        c => format!("{c}: {}", io_words(e)),
    }
}

/// An object store error in words, with what to check when access is denied.
#[cfg(feature = "cloud")]
fn store_words(e: &object_store::Error) -> String {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            format!("access denied ({e}); check the store's credentials")
        }
        other => one_line(&other.to_string()),
    }
}

/// A store's error on one line: an XML error body (`<Code>NoSuchBucket</Code>…`) as its
/// code and message, and anything else up to its first line break.
#[cfg(feature = "cloud")]
fn one_line(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let at = text.find(&open)? + open.len();
        let end = text[at..].find("</")?;
        Some(text[at..at + end].trim().to_string())
    };
    let head = text.lines().next().unwrap_or(text).trim();
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(msg)) => {
            let head = head
                .split("<?xml")
                .next()
                .unwrap_or(head)
                .trim_end_matches([':', ' ']);
            format!("{head}: {code}: {msg}")
        }
        _ => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "cloud")]
    #[test]
    fn a_store_error_body_is_one_line() {
        let raw = "Client error with status 404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>NoSuchBucket</Code>\n  <Message>The specified bucket does not exist</Message>\n</Error>";
        assert_eq!(
            super::one_line(raw),
            "Client error with status 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(super::one_line("a\nb"), "a");
    }
}

/// What a sink learns about the object it stores.
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    /// The source file's modification time, to stamp on the object where possible.
    pub mtime: Option<SystemTime>,
    /// The source file's size.
    pub source_size: u64,
    /// When the file's `--task-timeout` runs out; waits on the sink must end by then.
    pub deadline: Option<Instant>,
    /// Permission bits for a local object (the source's, so an output is no more open than
    /// its source); `None` leaves the default (0666 before the umask).
    pub mode: Option<u32>,
    /// Permission bits for a directory a local sink creates on the way (the source's
    /// directory's); `None` leaves the default (0777 before the umask).
    pub dir_mode: Option<u32>,
    /// The source's own permission bits (`07777`), stored as object metadata
    /// (`ferry-source-mode`, octal) where the sink keeps metadata.
    pub source_mode: Option<u32>,
    /// With `--web`: how the object is served. `None`: an archive object
    /// (`application/gzip`, no Content-Encoding).
    pub web: Option<WebMeta>,
    /// `--cache-control`: the object's `Cache-Control`, where the sink keeps headers.
    pub cache_control: Option<String>,
}

/// How a web object (`--web`) is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebMeta {
    /// Its `Content-Type`, guessed from the source's extension.
    pub content_type: String,
    /// Whether its bytes are gzip, served with `Content-Encoding: gzip` (a local
    /// directory also gets the file itself beside `KEY.gz`); else the file unchanged.
    pub gzip: bool,
}

/// What the sink says it received for one committed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Bytes stored (or, for `sim:`, accepted).
    pub bytes: u64,
    /// CRC-32 of the bytes as the sink received them, when it computes one.
    pub crc32: Option<u32>,
    /// The ETag the store answered the write with, quotes removed (an object store's
    /// own tag of the object as stored: S3's MD5 of a single PUT's body), which its
    /// listings give again, so `verify --quick` tells a replaced object without reading it.
    pub etag: Option<String>,
}

/// An ETag as compared: without the quotes some stores and some listings put around it.
pub fn bare_etag(tag: &str) -> &str {
    tag.trim().trim_matches('"')
}

/// A destination for objects.
pub trait Sink: Send + Sync {
    /// A short description for logs and the summary (`dir:out`).
    fn describe(&self) -> String;
    /// Starts writing the object `key`; nothing is visible under `key` until commit.
    ///
    /// # Errors
    /// a [`SinkError`] if the object cannot be started.
    fn begin(&self, key: &Path, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError>;
    /// Whether object `key` exists with `len` bytes (a rerun's skip check).
    fn has(&self, key: &Path, len: u64) -> bool;
    /// Opens the named metadata object (manifest, journal segment) at the sink root as a
    /// stream, if it exists: a manifest of millions of entries is never read whole.
    ///
    /// # Errors
    /// A [`SinkError`] if it exists but cannot be opened.
    fn open_meta(&self, name: &str) -> Result<Option<Box<dyn Read + Send>>, SinkError>;
    /// Starts writing ferry's own metadata object `name` (manifest, journal segment) at
    /// the sink root: as [`Sink::begin`], but stored as what it is (JSON, not gzip) and
    /// never in `--storage-class`, so that the next run can always read it.
    ///
    /// # Errors
    /// a [`SinkError`] if the object cannot be started.
    fn begin_meta(&self, name: &str, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError> {
        self.begin(Path::new(name), meta)
    }
    /// Replaces the named metadata object atomically. (A large one, such as the
    /// manifest, is streamed through [`Sink::begin_meta`] instead.)
    ///
    /// # Errors
    /// a [`SinkError`] if it cannot be written.
    fn write_meta(&self, name: &str, bytes: &[u8]) -> Result<(), SinkError> {
        let mut up = self.begin_meta(
            name,
            &ObjectMeta {
                source_size: bytes.len() as u64,
                ..ObjectMeta::default()
            },
        )?;
        up.write(bytes)?;
        up.commit().map(|_| ())
    }
    /// Writes the metadata object `name` only if there is none: `Ok(false)`, and nothing
    /// written, when one exists. Where the store can promise it, the check and the write
    /// are one step (a `dir:` link that never replaces; a conditional PUT).
    ///
    /// # Errors
    /// a [`SinkError`] if it cannot be written or looked up.
    fn create_meta(&self, name: &str, bytes: &[u8]) -> Result<bool, SinkError> {
        if self.list_meta(name)?.iter().any(|n| n == name) {
            return Ok(false);
        }
        self.write_meta(name, bytes).map(|_| true)
    }
    /// Removes the metadata object `name` if it still holds `marker` (a lease naming its
    /// run), even after the run was cancelled, and within a few seconds however the store
    /// behaves: a run's last word must not hang its exit.
    ///
    /// # Errors
    /// a [`SinkError`] if it cannot be read or removed in time.
    fn release_meta(&self, name: &str, marker: &str) -> Result<(), SinkError> {
        let Some(mut r) = self.open_meta(name)? else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        (&mut r)
            .take(1 << 16)
            .read_to_end(&mut bytes)
            .map_err(|e| SinkError::io(format!("cannot read {name}"), e))?;
        if contains(&bytes, marker.as_bytes()) {
            self.delete_meta(name)?;
        }
        Ok(())
    }
    /// The names of the metadata objects at the sink root that start with `prefix`,
    /// sorted.
    ///
    /// # Errors
    /// A [`SinkError`] if the root cannot be listed.
    fn list_meta(&self, prefix: &str) -> Result<Vec<String>, SinkError>;
    /// Removes the named metadata object; one that is already gone is not an error.
    ///
    /// # Errors
    /// A [`SinkError`] if it cannot be removed.
    fn delete_meta(&self, name: &str) -> Result<(), SinkError>;
    /// Calls `visit(key, size)` for every object under the sink, from one streamed,
    /// paged listing, and returns `true`; or returns `false` without visiting when the
    /// sink does not list cheaply (then the skip check asks [`Sink::has`] per file).
    ///
    /// # Errors
    /// A [`SinkError`] if the listing fails.
    fn list_objects(&self, visit: &mut dyn FnMut(&Path, u64)) -> Result<bool, SinkError> {
        let _ = visit;
        Ok(false)
    }
    /// Removes the object `key`, which the history says ferry stored with `size` bytes
    /// (`--delete`), only if what is there is still that: `Ok(true)` when it was
    /// removed, `Ok(false)` when it was already gone, and an error, leaving it, when it
    /// is something else now (another size, not a regular file).
    ///
    /// # Errors
    /// [`SinkError::Misuse`] for a sink that keeps no objects, a refusal as above, or the
    /// store's error.
    fn delete_object(&self, key: &Path, size: u64) -> Result<bool, SinkError> {
        let _ = (key, size);
        Err(SinkError::Misuse("this sink keeps no objects to delete"))
    }
    /// Copies the object `from` to `to` inside the store, without its bytes passing
    /// through ferry, if it is still the object the history recorded (`size` bytes, and
    /// `etag` where both are known): `Ok(Some(receipt))` for the copy; `Ok(None)` when
    /// the store cannot copy by itself (the caller then reads it back and writes it,
    /// checked); an error, copying nothing, when it is something else now.
    ///
    /// # Errors
    /// [`SinkError::Refused`] for an object that is not the one recorded, or the store's
    /// error.
    fn copy_object(
        &self,
        from: &Path,
        to: &Path,
        size: u64,
        etag: Option<&str>,
    ) -> Result<Option<Receipt>, SinkError> {
        let _ = (from, to, size, etag);
        Ok(None)
    }
    /// As [`Sink::list_objects`], with each object's ETag where the listing gives one
    /// (object stores): what `verify --quick` compares with the ETag recorded when the
    /// object was stored.
    ///
    /// # Errors
    /// A [`SinkError`] if the listing fails.
    fn list_objects_tagged(
        &self,
        visit: &mut dyn FnMut(&Path, u64, Option<&str>),
    ) -> Result<bool, SinkError> {
        self.list_objects(&mut |key, size| visit(key, size, None))
    }
    /// Requests sent to a remote store so far, for `-vv` (`None` when not remote).
    fn requests(&self) -> Option<u64> {
        None
    }
    /// Requests the store refused for load (503 SlowDown, 429) or that timed out, so
    /// far: the signal on which the adaptive upload limit cuts back.
    fn throttled(&self) -> u64 {
        0
    }
    /// Whether its uploads' [`Upload::commit_later`] waits for the store without a thread
    /// of the caller's: a remote store, whose requests the upload stage then keeps in
    /// flight by the hundred on a few threads.
    fn commits_later(&self) -> bool {
        false
    }
    /// Requests the sink's own client retried (S3), for the summary's `retries`.
    fn client_retries(&self) -> u64 {
        0
    }
    /// The local directory behind the sink, so the walk can leave it out of the inputs.
    fn local_root(&self) -> Option<&Path> {
        None
    }
    /// The size of the stored object `key`, `None` if there is none: one request (a HEAD,
    /// a `stat`), for `ferry verify --quick` on a sink that does not list.
    ///
    /// # Errors
    /// A [`SinkError`] if the store cannot say, and [`SinkError::Misuse`] if the sink
    /// stores nothing.
    fn object_size(&self, key: &Path) -> Result<Option<u64>, SinkError> {
        let _ = key;
        Err(SinkError::Misuse("this sink keeps no objects to read back"))
    }
    /// Opens a stored object to read back as a stream (for `ferry verify`): an object of
    /// any size is checked in bounded memory.
    ///
    /// # Errors
    /// [`SinkError::NoSuchObject`] or an I/O error if it is missing or unreadable, and
    /// [`SinkError::Misuse`] if the sink stores nothing.
    fn open_object(&self, key: &Path) -> Result<Opened, SinkError> {
        let _ = key;
        Err(SinkError::Misuse("this sink keeps no objects to read back"))
    }
}

/// An object opened to read back, with what its store says of it.
pub struct Opened {
    /// The object's bytes, as stored, as a stream.
    pub body: Box<dyn Read + Send>,
    /// Whether the store serves it with a `Content-Encoding` (earlier builds of ferry
    /// stored every object with `gzip`): a client that honours the header decodes one layer and gets
    /// the source's bytes under a `.gz` key, so `ferry verify` points these out.
    pub encoded: bool,
    /// Whether the body is a regular file on this machine, which Linux reads short only at
    /// its end: a read that returns less than asked has found the end, and a small
    /// object is read whole in one call rather than two.
    pub short_read_is_end: bool,
}

impl Opened {
    /// A plain object's stream (no content encoding).
    pub fn plain(body: impl Read + Send + 'static) -> Self {
        Opened {
            body: Box::new(body),
            encoded: false,
            short_read_is_end: false,
        }
    }

    /// A regular file on this machine, as an object (see [`Opened::short_read_is_end`]).
    pub fn local_file(file: std::fs::File) -> Self {
        Opened {
            short_read_is_end: true,
            ..Opened::plain(file)
        }
    }
}

/// One object being written.
pub trait Upload: Send {
    /// Appends bytes.
    ///
    /// # Errors
    /// a [`SinkError`] on a write failure; the caller then aborts.
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError>;
    /// Tells the upload the source's CRC-32, known only once every piece is written;
    /// called just before `commit`, for sinks that store it as metadata.
    fn source_crc32(&mut self, _crc: u32) {}
    /// Makes the object visible, whole, and says what arrived. After a transient error it
    /// may be called again.
    ///
    /// # Errors
    /// [`SinkError`]; nothing is visible then.
    fn commit(&mut self) -> Result<Receipt, SinkError>;
    /// Drops the object; nothing is left behind. Safe to call more than once.
    fn abort(&mut self);
    /// [`Upload::commit`] without holding the caller's thread while the store answers:
    /// `answer` gets each attempt's result, from a thread of the sink's own, and says
    /// whether to try again and after how long (`None`: done; after an error the upload
    /// is then aborted). A sink whose [`Sink::commits_later`] is false runs it all on the
    /// caller's thread, which is what this default does.
    fn commit_later(mut self: Box<Self>, answer: Answer) {
        commit_here(&mut *self, answer);
    }
}

/// [`Upload::commit_later`] on the caller's thread: each attempt, its answer, the pause.
pub fn commit_here<U: Upload + ?Sized>(upload: &mut U, mut answer: Answer) {
    loop {
        let result = upload.commit();
        let failed = result.is_err();
        match answer(result) {
            Some(delay) if failed => std::thread::sleep(delay),
            _ => {
                if failed {
                    upload.abort();
                }
                return;
            }
        }
    }
}

/// Told each result of a deferred commit ([`Upload::commit_later`]); returns when to try
/// again after an error, or `None` to stop.
pub type Answer = Box<dyn FnMut(Result<Receipt, SinkError>) -> Option<Duration> + Send>;

/// A callback that takes one line about what a sink's client did.
pub type OnEvent = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Options that shape how sinks deliver.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// fsync each object before it becomes visible (durable against power loss, slower).
    pub fsync: bool,
    /// The run's token: waits inside a sink end early when it is cancelled.
    pub cancel: CancelToken,
    /// `--retries` and `--retry-backoff`, for sinks whose client retries by itself (S3);
    /// `None` keeps the client's defaults.
    pub retry: Option<(u32, std::time::Duration)>,
    /// Where a sink's client reports what it does (each retry), for `-vv`.
    pub on_event: Option<OnEvent>,
    /// Open only to read (`--dry-run`, `ferry verify`): create, clean up and write
    /// nothing; a missing local directory reads as empty.
    pub read_only: bool,
}

impl std::fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkOptions")
            .field("fsync", &self.fsync)
            .field("retry", &self.retry)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// How an S3 request names its bucket: in the path, or in the host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UrlStyle {
    /// `https://endpoint/bucket/key`: what S3-compatible servers (MinIO, moto) expect.
    Path,
    /// `https://bucket.endpoint/key`: what AWS itself prefers.
    Virtual,
}
