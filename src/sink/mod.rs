//! Where compressed objects go. A sink opens an [`Upload`] per object, which is written
//! part by part and then committed (made visible whole) or aborted (leaves nothing).

mod dir;
#[cfg(feature = "s3")]
mod s3;
mod sim;

pub use dir::DirSink;
#[cfg(feature = "s3")]
pub use s3::{S3Sink, S3Spec};
pub use sim::{SimSink, SimSpec};

use crate::pipeline::CancelToken;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// A sink failure: setup problems are fatal to the run, upload problems to one file.
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
    /// The sink cannot be used at all (unwritable directory, …).
    #[error("cannot use output {target}: {cause}")]
    Setup {
        /// The sink's location.
        target: String,
        /// Why not.
        cause: String,
    },
    /// Writing one object failed for good (retrying would not help).
    #[error("{0}")]
    Upload(String),
    /// Writing one object failed in a way that may pass: a retry may succeed.
    #[error("{0}")]
    Transient(String),
    /// The file's `--task-timeout` ran out while waiting on the sink.
    #[error("timed out (--task-timeout)")]
    TimedOut,
}

impl SinkError {
    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

/// Which sink to use, parsed from `--to`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `dir:PATH` (or a bare path): a local directory.
    Dir(PathBuf),
    /// `sim:latency=…,bandwidth=…,jitter=…,fail=…,seed=…`: a simulated network upload.
    Sim(SimSpec),
    /// `s3://bucket/prefix`: an S3-compatible object store.
    #[cfg(feature = "s3")]
    S3(S3Spec),
}

impl SinkSpec {
    /// Parses `dir:PATH` or a bare path.
    ///
    /// # Errors
    /// [`SinkError::BadSpec`] for an empty path or a scheme this build does not have.
    pub fn parse(spec: &str) -> Result<Self, SinkError> {
        let bad = |why: &str| SinkError::BadSpec {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad("the directory path is empty"));
            }
            return Ok(SinkSpec::Dir(PathBuf::from(path)));
        }
        if spec.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return S3Spec::parse(spec)
                .map(SinkSpec::S3)
                .map_err(|why| bad(&why));
            #[cfg(not(feature = "s3"))]
            return Err(bad("this build has no s3 support (cargo feature 's3')"));
        }
        if let Some(params) = spec.strip_prefix("sim:").or((spec == "sim").then_some("")) {
            return SimSpec::parse(params)
                .map(SinkSpec::Sim)
                .map_err(|why| bad(&why));
        }
        if let Some((scheme, _)) = spec.split_once(':') {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(&format!(
                    "unknown sink type '{scheme}' (known: dir:PATH, sim:…, s3://bucket/prefix)"
                )));
            }
        }
        if spec.is_empty() {
            return Err(bad("empty"));
        }
        Ok(SinkSpec::Dir(PathBuf::from(spec)))
    }
}

/// What a sink learns about the object it stores.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// The source file's modification time, to stamp on the object where possible.
    pub mtime: Option<SystemTime>,
    /// The source file's size.
    pub source_size: u64,
    /// When the file's `--task-timeout` runs out; waits on the sink must end by then.
    pub deadline: Option<Instant>,
}

/// What the sink says it received for one committed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Bytes stored (or, for `sim:`, accepted).
    pub bytes: u64,
    /// CRC-32 of the bytes as the sink received them, when it computes one.
    pub crc32: Option<u32>,
}

/// A destination for objects.
pub trait Sink: Send + Sync {
    /// A short description for logs and the summary (`dir:out`).
    fn describe(&self) -> String;
    /// Starts writing the object `key`; nothing is visible under `key` until commit.
    ///
    /// # Errors
    /// [`SinkError::Upload`] if the object cannot be started.
    fn begin(&self, key: &Path, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError>;
    /// Whether object `key` exists with `len` bytes (a rerun's skip check).
    fn has(&self, key: &Path, len: u64) -> bool;
    /// Reads the named metadata object (the manifest) at the sink root, if present.
    ///
    /// # Errors
    /// [`SinkError::Setup`] if it exists but cannot be read.
    fn read_meta(&self, name: &str) -> Result<Option<Vec<u8>>, SinkError>;
    /// Replaces the named metadata object atomically.
    ///
    /// # Errors
    /// [`SinkError::Upload`] if it cannot be written.
    fn write_meta(&self, name: &str, bytes: &[u8]) -> Result<(), SinkError>;
    /// The local directory behind the sink, so the walk can leave it out of the inputs.
    fn local_root(&self) -> Option<&Path> {
        None
    }
    /// Reads a stored object back whole (for `ferry verify`).
    ///
    /// # Errors
    /// [`SinkError::Upload`] if it is missing or unreadable, or the sink stores nothing.
    fn read_object(&self, key: &Path) -> Result<Vec<u8>, SinkError> {
        let _ = key;
        Err(SinkError::Upload(format!(
            "{} keeps no objects to read back",
            self.describe()
        )))
    }
}

/// One object being written.
pub trait Upload: Send {
    /// Appends bytes.
    ///
    /// # Errors
    /// [`SinkError::Upload`] on a write failure; the caller then aborts.
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
}

/// Options that shape how sinks deliver.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// fsync each object before it becomes visible (durable against power loss, slower).
    pub fsync: bool,
    /// The run's token: waits inside a sink end early when it is cancelled.
    pub cancel: CancelToken,
}

/// Opens the sink named by `spec`, ready to take objects.
///
/// # Errors
/// [`SinkError::Setup`] if it cannot be used.
pub fn open(spec: &SinkSpec, opts: &SinkOptions) -> Result<std::sync::Arc<dyn Sink>, SinkError> {
    match spec {
        SinkSpec::Dir(p) => Ok(std::sync::Arc::new(DirSink::open(p, opts.clone())?)),
        SinkSpec::Sim(s) => Ok(std::sync::Arc::new(SimSink::new(
            s.clone(),
            opts.cancel.clone(),
        ))),
        #[cfg(feature = "s3")]
        SinkSpec::S3(s) => Ok(std::sync::Arc::new(S3Sink::open(s)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            SinkSpec::parse("dir:out").unwrap(),
            SinkSpec::Dir("out".into())
        );
        assert_eq!(
            SinkSpec::parse("out/x").unwrap(),
            SinkSpec::Dir("out/x".into())
        );
        assert!(SinkSpec::parse("dir:").is_err());
        let e = SinkSpec::parse("ftp://x").unwrap_err().to_string();
        assert!(e.contains("unknown sink type 'ftp'"), "{e}");
        assert!(matches!(SinkSpec::parse("sim:").unwrap(), SinkSpec::Sim(_)));
        assert!(matches!(
            SinkSpec::parse("sim:fail=2").unwrap_err(),
            SinkError::BadSpec { .. }
        ));
    }
}
