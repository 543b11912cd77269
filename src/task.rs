//! The data that flows through ferry's pipeline: files, segments, packed pieces, outcomes.
//!
//! Errors and skips travel as data (a `Stop` at the point where a file's stream ends), so
//! a bad file never panics a worker and every discovered file reaches the collector as
//! exactly one [`Outcome`].

use crate::load::Permit;
use crate::upload::Assembly;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a producer found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or, with `--follow`, a link to one): to be loaded.
    Regular,
    /// Not to be read, with the reason (FIFO, socket, device, symlink not followed).
    Skip(String),
    /// Could not be examined, with the cause (dangling link, permission denied, …).
    Fail(String),
}

/// One discovered file, as a producer sends it into the bridge channel.
#[derive(Debug, Clone)]
pub struct FileTask {
    /// Discovery order, unique within a run.
    pub id: u64,
    /// Where to read it.
    pub path: PathBuf,
    /// Its key at the sink: the input root's own name, then the path below it (like tar).
    pub key: PathBuf,
    /// What the producer saw.
    pub kind: EntryKind,
}

impl FileTask {
    /// The name of the delivered object: the key plus `.gz`.
    pub fn object_key(&self) -> PathBuf {
        let mut k = self.key.clone().into_os_string();
        k.push(".gz");
        PathBuf::from(k)
    }
}

/// A file being moved: the task, what `fstat` said when it was opened, and the ordered
/// assembly its packed pieces are written through. Shared by all its segments.
pub struct FileCtx {
    /// The task it came from.
    pub task: FileTask,
    /// Size in bytes when opened.
    pub size: u64,
    /// Modification time (seconds, nanoseconds) when opened.
    pub mtime: (i64, u32),
    /// When this file's `--task-timeout` runs out, counted from when it was opened.
    pub deadline: Option<Instant>,
    /// Upload-side state; only the upload stage touches it.
    pub assembly: Mutex<Assembly>,
}

impl FileCtx {
    /// A context for `task` with what was learnt when opening it.
    pub fn new(
        task: FileTask,
        size: u64,
        mtime: (i64, u32),
        deadline: Option<Instant>,
    ) -> Arc<Self> {
        Arc::new(FileCtx {
            task,
            size,
            mtime,
            deadline,
            assembly: Mutex::new(Assembly::default()),
        })
    }

    /// Whether the file's deadline has passed.
    pub fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// How a file's stream ended early, instead of with its last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliberately not delivered.
    Skipped(String),
    /// Could not be delivered.
    Failed {
        /// The stage where it failed (`walk`, `load`, `compress`, `upload`).
        stage: &'static str,
        /// The cause, in words.
        error: String,
    },
    /// The run was cancelled before it was delivered.
    Cancelled,
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

/// What a [`Packed`] carries.
pub enum PackedBody {
    /// A deflate piece.
    Data {
        /// Raw deflate bytes (sync-flushed, or final for the last piece).
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
    /// No more pieces follow: the file ends with this verdict.
    Stop(Verdict),
}

/// What finally happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Delivered.
    Succeeded,
    /// Not delivered on purpose, with the reason.
    Skipped(String),
    /// Not delivered: where and why.
    Failed {
        /// The stage where it failed.
        stage: &'static str,
        /// The cause.
        error: String,
    },
    /// Not delivered because the run was cancelled.
    Cancelled,
}

impl From<Verdict> for Status {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Skipped(r) => Status::Skipped(r),
            Verdict::Failed { stage, error } => Status::Failed { stage, error },
            Verdict::Cancelled => Status::Cancelled,
        }
    }
}

/// Upload → collector: the end of one file's journey.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The task.
    pub task: FileTask,
    /// What happened.
    pub status: Status,
    /// Source bytes (for delivered files).
    pub bytes_in: u64,
    /// Compressed bytes delivered.
    pub bytes_out: u64,
    /// What to remember in the manifest, for delivered files.
    pub record: Option<crate::manifest::Entry>,
}

impl Outcome {
    /// An outcome for a file that was not delivered.
    pub fn undelivered(task: FileTask, status: Status) -> Self {
        Outcome {
            task,
            status,
            bytes_in: 0,
            bytes_out: 0,
            record: None,
        }
    }
}
