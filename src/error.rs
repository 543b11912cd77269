//! Typed errors: what stops a run before or outside its files ([`FerryError`]), what
//! fails one file ([`FileError`], raised in a [`Stage`]), and the exit-code mapping.
//!
//! A file's error keeps its typed cause as `#[source]`; its `Display` is the short phrase
//! ferry prints after the path (`ferry: logs/a.log: permission denied`).

use crate::gzip::GzipError;
use crate::pipeline::PipelineError;
use crate::sink::SinkError;
use crate::words::io_words;
use std::time::Duration;

/// Any error, boxed with its type: the cause a [`FerryError`] class carries without this
/// module depending on the module that raised it.
pub type Cause = crate::pipeline::BoxError;

/// Why a command could not start or could not finish as a command (per-file problems are
/// not errors: they are outcomes, counted in the summary). Each variant is one class of
/// error with its own exit code ([`FerryError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum FerryError {
    /// What the user typed cannot be done: a bad flag value, a missing input, colliding
    /// keys, a glob that does not parse. Nothing was done. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The sink could not be opened or used. Exit 3.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The command could not be set up: another run holds the history, a destination
    /// cannot be made, a thread cannot start. Exit 3.
    #[error(transparent)]
    Setup(Cause),
    /// What the sink remembers is damaged or unreadable: a manifest, journal, lease, plan
    /// or shard report that does not parse, or one from a newer ferry. Exit 4.
    #[error(transparent)]
    History(Cause),
    /// Ctrl-C, SIGTERM or the caller's token ended a command before it had a result to
    /// show. Exit 130.
    #[error("{0}")]
    Interrupted(String),
    /// A bug in ferry: a worker panicked outside any one file, or the engine failed in a
    /// way it never should. Exit 70.
    #[error("internal error: {0}")]
    Internal(String),
}

impl FerryError {
    /// A setup error in words.
    pub fn setup(what: impl std::fmt::Display) -> Self {
        FerryError::Setup(what.to_string().into())
    }

    /// A damaged-history error in words.
    pub fn history(what: impl std::fmt::Display) -> Self {
        FerryError::History(what.to_string().into())
    }

    /// The exit code of this error's class.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FerryError::Usage(_) => ExitCode::Usage,
            FerryError::Sink(_) | FerryError::Setup(_) => ExitCode::Setup,
            FerryError::History(_) => ExitCode::History,
            FerryError::Interrupted(_) => ExitCode::Interrupted,
            FerryError::Internal(_) => ExitCode::Internal,
        }
    }
}

impl From<PipelineError> for FerryError {
    /// A producer's own error comes back as it was raised (ferry's producers return a
    /// [`FerryError`]); a thread that cannot start is a setup error; anything else the
    /// engine reports is a bug.
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Producer { source, stage } => match source.downcast::<FerryError>() {
                Ok(e) => *e,
                Err(other) => FerryError::Internal(format!("{stage}: {other}")),
            },
            e @ PipelineError::Spawn { .. } => FerryError::Setup(Box::new(e)),
            e => FerryError::Internal(e.to_string()),
        }
    }
}

/// The stage of a command's pipeline in which a file failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Discovery: the producer could not examine the entry.
    Walk,
    /// Opening and reading the file.
    Load,
    /// Deflating a segment.
    Compress,
    /// Writing to the sink and committing.
    Upload,
    /// Restore: reading an object from the sink (and deciding where its file goes).
    Fetch,
    /// Restore: decoding an object, checked against the manifest.
    Inflate,
    /// Restore: writing the file under DEST and putting it in place.
    Write,
    /// Verify: reading an object back and checking it against the manifest.
    Check,
    /// The engine lost the file (a bug: it is counted, never dropped silently).
    Pipeline,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Walk => "walk",
            Stage::Load => "load",
            Stage::Compress => "compress",
            Stage::Upload => "upload",
            Stage::Fetch => "fetch",
            Stage::Inflate => "inflate",
            Stage::Write => "write",
            Stage::Check => "check",
            Stage::Pipeline => "pipeline",
        })
    }
}

/// How a file changed while it was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It is longer than when it was opened.
    Grew,
    /// It is shorter than when it was opened (or a read ended early).
    Shrank,
    /// Same length, but its mtime moved: it was rewritten.
    Modified,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Grew => "file grew",
            Change::Shrank => "file shrank",
            Change::Modified => "modified",
        })
    }
}

/// Why one file could not be delivered. The run goes on with the others.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused: open, read, stat, list.
    #[error("{}", io_words(.0))]
    Io(#[source] std::io::Error),
    /// A `--files-from` path that climbs with `..` could land outside the sink.
    #[error("path leaves its directory ('..'); not delivered")]
    LeavesRoot,
    /// The walker could not examine the entry for another reason.
    #[error("{0}")]
    Walk(#[source] ignore::Error),
    /// The file changed while it was read; delivering it would deliver a torn copy.
    #[error("changed while reading ({0})")]
    Changed(Change),
    /// The deflate engine failed.
    #[error("{0}")]
    Compress(#[source] GzipError),
    /// The sink refused, for good.
    #[error("{0}")]
    Sink(#[source] SinkError),
    /// The sink kept failing transiently until the retries ran out.
    #[error("{source} (gave up after {retries} retries)")]
    GaveUp {
        /// The last failure.
        #[source]
        source: SinkError,
        /// Retries made.
        retries: u32,
    },
    /// `--task-timeout` ran out before the file was delivered.
    #[error("timed out after {} (--task-timeout)", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The sink's receipt does not match what was sent.
    #[error("the sink received different bytes than were sent ({received} of {sent})")]
    Receipt {
        /// Bytes the sink says it stored.
        received: u64,
        /// Bytes sent.
        sent: u64,
    },
    /// `ferry restore` could not bring the file back as recorded (unsafe key, a file in
    /// the way, an object that does not decode or check out).
    #[error("{0}")]
    Restore(String),
    /// `ferry verify`: the object does not check out against its manifest entry (missing,
    /// torn, not one gzip member, another length or CRC-32).
    #[error("{0}")]
    Check(String),
    /// A `ferry plan` list named this file, but it cannot be taken as planned (gone since
    /// the plan was made), or a line of the list is damaged.
    #[error("{0}")]
    Plan(String),
    /// A worker panicked while it held a piece of this file.
    #[error("internal error: a {stage} worker panicked: {message}")]
    Panicked {
        /// Where.
        stage: Stage,
        /// The panic message.
        message: String,
    },
    /// The file was discovered but never reached an outcome (an engine bug, counted).
    #[error("internal error: the pipeline lost track of it")]
    Lost,
}

impl FileError {
    /// A worker of `stage` panicked while it held a piece of the file.
    pub fn panicked(stage: Stage, payload: &(dyn std::any::Any + Send)) -> Self {
        FileError::Panicked {
            stage,
            message: crate::pipeline::panic_message(payload),
        }
    }
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        FileError::Io(e)
    }
}

/// ferry's exit codes (design promise 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Everything delivered or skipped.
    Success = 0,
    /// Some files failed, or the deadline cut the run short.
    Failures = 1,
    /// Usage error: what was asked cannot be done; nothing was done.
    Usage = 2,
    /// The sink or the machine would not let the command start.
    Setup = 3,
    /// What the sink remembers (manifest, journal, lease, plan, shard report) is damaged.
    History = 4,
    /// A bug in ferry (EX_SOFTWARE).
    Internal = 70,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl ExitCode {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}
