//! The data that flows through ferry's pipeline: files, segments, packed pieces, outcomes.
//! It holds data only; each stage's working state lives in that stage's module.
//!
//! Errors and skips travel as data (a `Stop` where a file's stream ends), so a bad file
//! never panics a worker and every discovered file reaches the collector as exactly one
//! [`Outcome`].

use crate::budget::Permit;
use crate::error::{FileError, Stage};
use crate::history::manifest::Entry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a file is deliberately not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A FIFO, socket, device or other non-regular entry, named as `kind`.
    Special(&'static str),
    /// A symbolic link, and `--follow` was not given.
    SymlinkNotFollowed,
    /// A symbolic link back to a directory that is already being walked.
    Loop {
        /// The directory it points back to.
        ancestor: PathBuf,
    },
    /// A directory named in `--files-from`.
    Directory,
    /// Delivered by an earlier run, and neither size nor mtime has changed since.
    Unchanged,
    /// `ferry restore`: the file at the destination already has the recorded size and
    /// mtime.
    AlreadyRestored,
    /// `ferry restore` without a manifest: the file exists, and nothing says it differs.
    Exists,
    /// `--dry-run`: this file of `size` bytes would be sent (or restored).
    DryRun {
        /// Its size, from one stat.
        size: u64,
    },
    /// `--dry-run`: this symbolic link would be recorded (or made again).
    DryRunLink,
    /// `--web` into `dir:`: `X.gz` beside a file `X` that ferry gzips, and whose `X.gz`
    /// it writes itself: taking this one too would put two files in one place.
    WebCopy,
    /// `ferry watch`: a renamed file (`app.log` → `app.log.1`, the same inode, size and
    /// mtime) whose object, delivered under the key `from`, was copied to its own key in
    /// the store, not sent again.
    Renamed {
        /// The key it was delivered under.
        from: PathBuf,
    },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Special(kind) => f.write_str(kind),
            Skip::WebCopy => f.write_str(
                "a .gz beside a file that --web gzips into dir:, which writes that .gz itself",
            ),
            Skip::SymlinkNotFollowed => f.write_str("symbolic link (not followed)"),
            Skip::Renamed { from } => write!(
                f,
                "renamed: delivered as {}, its object copied in the store",
                from.display()
            ),
            Skip::Loop { ancestor } => write!(
                f,
                "symbolic link loop (points to ancestor {})",
                ancestor.display()
            ),
            Skip::Directory => f.write_str("is a directory"),
            Skip::Unchanged => f.write_str("unchanged since last run"),
            Skip::AlreadyRestored => f.write_str("already restored (same size and mtime)"),
            Skip::Exists => {
                f.write_str("exists (no manifest to compare it with; --force overwrites)")
            }
            Skip::DryRun { size } => write!(f, "dry run: {size} bytes"),
            Skip::DryRunLink => f.write_str("dry run: symbolic link"),
        }
    }
}

/// How a file ends without being delivered.
#[derive(Debug)]
pub enum Verdict {
    /// Deliberately not delivered.
    Skipped(Skip),
    /// Could not be delivered.
    Failed {
        /// The stage where it failed.
        stage: Stage,
        /// The cause.
        error: FileError,
    },
    /// The run was cancelled before it was delivered.
    Cancelled,
}

impl Verdict {
    /// A failure in `stage`.
    pub fn failed(stage: Stage, error: impl Into<FileError>) -> Self {
        Verdict::Failed {
            stage,
            error: error.into(),
        }
    }
}

/// One discovered file, as a producer sends it into the bridge channel.
#[derive(Debug)]
pub struct FileTask {
    /// Discovery order, unique within a run.
    pub id: u64,
    /// Where to read it.
    pub path: PathBuf,
    /// Its key at the sink: the input root's own name, then the path below it (like tar).
    pub key: PathBuf,
    /// Set when the producer already knows the file will not be read (a FIFO, a dangling
    /// link); `None` for a regular file to load.
    pub verdict: Option<Verdict>,
}

pub use crate::form::{object_key, Form, Web};

/// A file's `--task-timeout`: when it runs out, and how long it was.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When the file must be delivered by.
    pub at: Instant,
    /// The timeout it was counted from, for the message.
    pub after: Duration,
}

/// A file being moved: what was learnt when it was opened. Shared, read-only, by all its
/// segments and pieces.
#[derive(Debug)]
pub struct FileCtx {
    /// The task's id: unique within the run.
    pub id: u64,
    /// Where it was read.
    pub path: PathBuf,
    /// Its key at the sink (without `.gz`).
    pub key: PathBuf,
    /// Size in bytes when opened.
    pub size: u64,
    /// Modification time (seconds, nanoseconds) when opened.
    pub mtime: (i64, u32),
    /// Status-change time (seconds, nanoseconds) when opened: what a rewrite in place
    /// moves even when it puts the mtime back (`rsync --inplace -t`, `touch -r`).
    pub ctime: (i64, u32),
    /// Permission bits of the source file and of the directories above it within its
    /// input (all of them ANDed), so that a local sink's output and the directories it
    /// makes are no more open than the source: `(file, directories)`.
    pub modes: (u32, u32),
    /// The source's owner and group (uid, gid) when opened, recorded for a restore.
    pub owner: (u32, u32),
    /// The source's device and inode numbers when opened, recorded so that `ferry watch`
    /// knows a rotated file (`app.log` → `app.log.1`) as content already delivered.
    pub inode: (u64, u64),
    /// When this file's `--task-timeout` runs out, counted from when it was opened.
    pub deadline: Option<Deadline>,
    /// Its place in the progress view while any piece of it is under way.
    pub transfer: Option<crate::counters::Transfer>,
    /// How it is stored: the archive's `KEY.gz`, or with `--web` as a server sends it.
    pub form: Form,
}

/// What a source was when its object was copied: the load stage skips it only if it is
/// still that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seen {
    /// Device and inode numbers.
    pub inode: (u64, u64),
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
}

impl Seen {
    /// What `meta` says of a file.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let Stat {
            inode, size, mtime, ..
        } = Stat::of(meta, 0);
        Seen { inode, size, mtime }
    }
}

/// The files of a `ferry watch` shipment whose content was delivered under another key,
/// each copied to its own key and recorded before it began: key → what the file was, and
/// the key it was known by.
pub type Renamed = std::collections::HashMap<PathBuf, (Seen, PathBuf)>;

/// What the load stage saw of a source when it opened it: what its entry records.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Status-change time (seconds, nanoseconds).
    pub ctime: (i64, u32),
    /// Permission bits of the file, and of the directories above it (see [`FileCtx::modes`]).
    pub modes: (u32, u32),
    /// Owner and group (uid, gid).
    pub owner: (u32, u32),
    /// Device and inode numbers.
    pub inode: (u64, u64),
}

impl Stat {
    /// What `meta` says, with `dir_modes` for the directories above.
    pub fn of(meta: &std::fs::Metadata, dir_modes: u32) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stat {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
            modes: (meta.mode() & 0o7777, dir_modes),
            owner: (meta.uid(), meta.gid()),
            inode: (meta.dev(), meta.ino()),
        }
    }
}

impl FileCtx {
    /// A context for `task`, opened with `size` and `mtime`.
    pub fn new(
        task: FileTask,
        size: u64,
        mtime: (i64, u32),
        deadline: Option<Deadline>,
    ) -> Arc<Self> {
        let stat = Stat {
            size,
            mtime,
            ctime: (0, 0),
            modes: (0o666, 0o777),
            owner: (0, 0),
            inode: (0, 0),
        };
        Self::opened(task, stat, deadline, None, Form::Archive)
    }

    /// A context for `task`, opened as `stat` says, followed in the progress view by
    /// `transfer`, stored in `form`.
    pub fn opened(
        task: FileTask,
        stat: Stat,
        deadline: Option<Deadline>,
        transfer: Option<crate::counters::Transfer>,
        form: Form,
    ) -> Arc<Self> {
        let Stat {
            size,
            mtime,
            ctime,
            modes,
            owner,
            inode,
        } = stat;
        Arc::new(FileCtx {
            id: task.id,
            path: task.path,
            key: task.key,
            size,
            mtime,
            ctime,
            modes,
            owner,
            inode,
            deadline,
            transfer,
            form,
        })
    }

    /// The timeout error, once the file's deadline has passed.
    pub fn timed_out(&self) -> Option<FileError> {
        self.deadline
            .filter(|d| Instant::now() >= d.at)
            .map(|d| FileError::TimedOut(d.after))
    }

    /// The name of its object, at a local sink or not (see [`Form::object_key`]).
    pub fn object_key(&self, local: bool) -> PathBuf {
        self.form.object_key(&self.key, local)
    }

    /// Test builds only: panics in `stage` when the file is named
    /// `ferry-test-panic-in-<stage>`, so tests can show a panic fails that file alone.
    #[cfg(test)]
    pub(crate) fn injected_panic(&self, stage: Stage) {
        let name = format!("ferry-test-panic-in-{stage}");
        if self.path.file_name() == Some(name.as_ref()) {
            panic!("injected {stage} panic");
        }
    }

    /// Does nothing outside test builds.
    #[cfg(not(test))]
    #[inline(always)]
    pub(crate) fn injected_panic(&self, _stage: Stage) {}

    /// Test builds only: panics in the body of `stage`'s handler, outside any catch of its
    /// own, on piece `index` 2 of the file named `ferry-test-panic-in-<stage>-body`.
    #[cfg(test)]
    pub(crate) fn injected_panic_at(&self, stage: Stage, index: u32) {
        let name = format!("ferry-test-panic-in-{stage}-body");
        if index == 2 && self.path.file_name() == Some(name.as_ref()) {
            panic!("injected {stage} panic in the handler's body");
        }
    }

    /// Does nothing outside test builds.
    #[cfg(not(test))]
    #[inline(always)]
    pub(crate) fn injected_panic_at(&self, _stage: Stage, _index: u32) {}
}

/// Load → compress: one piece of a file's bytes, or the end of its stream.
pub struct Segment {
    /// The file it belongs to.
    pub file: Arc<FileCtx>,
    /// Position in the file's stream, from 0.
    pub index: u32,
    /// The bytes, or why the stream ends here.
    pub body: SegmentBody,
}

/// What a [`Segment`] carries.
pub enum SegmentBody {
    /// Raw bytes to compress.
    Data {
        /// The segment's bytes.
        data: Vec<u8>,
        /// Up to 32 KiB of input before it, to prime the compressor.
        dict: Option<Vec<u8>>,
        /// Whether it is the file's last segment.
        last: bool,
        /// Its reservation in the memory budget, released when written.
        permit: Permit,
    },
    /// No more segments follow: the file ends with this verdict.
    Stop(Verdict),
    /// A symbolic link, not followed: its text is recorded in the history, and no
    /// object is stored.
    Link(std::ffi::OsString),
}

/// Compress → upload: one deflate piece of a file, or the end of its stream.
pub struct Packed {
    /// The file it belongs to.
    pub file: Arc<FileCtx>,
    /// Position in the file's stream, from 0.
    pub index: u32,
    /// The piece, or why the stream ends here.
    pub body: PackedBody,
}

impl Packed {
    /// Whether nothing of its file follows this piece.
    pub fn ends_stream(&self) -> bool {
        match &self.body {
            PackedBody::Data { last, .. } | PackedBody::Stop { last, .. } => *last,
            PackedBody::Link(_) => true,
        }
    }
}

/// What a [`Packed`] carries.
pub enum PackedBody {
    /// A deflate piece.
    Data {
        /// Raw deflate bytes (sync-flushed, or final for the last piece); for a web file
        /// that goes unchanged, its own bytes.
        deflate: Vec<u8>,
        /// CRC-32 of the uncompressed segment.
        crc: u32,
        /// Length of the uncompressed segment.
        len: u64,
        /// Whether it is the file's last piece.
        last: bool,
        /// Its reservation in the memory budget, released when written.
        permit: Permit,
    },
    /// The file ends with this verdict. Pieces may still follow (a segment that failed to
    /// compress is not its file's last); the upload stage drops them.
    Stop {
        /// Why the file is not delivered.
        verdict: Verdict,
        /// Whether it is the file's last piece: no more follow.
        last: bool,
    },
    /// A symbolic link's text, to record (the only piece of its file).
    Link(std::ffi::OsString),
}

/// Upload → collector: the end of one file's journey.
#[derive(Debug)]
pub struct Outcome {
    /// The file's path.
    pub path: PathBuf,
    /// Delivered, with what to remember in the manifest; or why not.
    pub result: Result<Entry, Verdict>,
}
