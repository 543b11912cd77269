//! `ferry verify --to SINK`: reads back every object the manifest lists and checks that it
//! is one gzip member that decodes to the recorded length and CRC-32, at the recorded size.

use crate::error::{ExitCode, FerryError};
use crate::journal::{for_each_current, HistoryError};
use crate::manifest::{manifest_name, Entry};
use crate::report::{Level, Log};
use crate::shard::Shard;
use crate::sink::{self, Sink, SinkOptions, SinkSpec};
use crate::task::object_key;
use flate2::read::GzDecoder;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

impl VerifyReport {
    /// The report as pretty JSON: `checked`, `ok`, and `mismatches` (key, problem).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["ok"] = (self.checked - self.mismatches.len()).into();
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Prints each bad object as an error and, unless `level` is errors only, the tally;
    /// returns the exit code: 0 when every object checks out, 1 otherwise.
    pub fn print(&self, level: Level) -> ExitCode {
        let log = Log::stderr(level);
        for m in &self.mismatches {
            log.error(|| format!("verify: {}: {}", m.key.display(), m.problem));
        }
        let bad = self.mismatches.len();
        log.status(|| {
            format!(
                "verified {} objects: {} ok, {bad} bad",
                self.checked,
                self.checked - bad
            )
        });
        if bad == 0 {
            ExitCode::Success
        } else {
            ExitCode::Failures
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
    /// Objects checked.
    pub checked: usize,
    /// Objects that failed a check, sorted by key.
    pub mismatches: Vec<Mismatch>,
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Checks one object, read as a stream, against its manifest entry: one gzip member that
/// decodes to the recorded length and CRC-32, at the recorded compressed size.
///
/// # Errors
/// What is wrong, in words.
pub fn check_object(entry: &Entry, object: impl Read) -> Result<(), String> {
    let mut counted = Counted {
        inner: object,
        n: 0,
    };
    let mut d = GzDecoder::new(std::io::BufReader::with_capacity(256 << 10, &mut counted));
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match d.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                crc.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) => return Err(format!("does not decode: {e}")),
        }
    }
    let mut rest = d.into_inner();
    let after = std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| e.to_string())?;
    drop(rest);
    if after > 0 {
        return Err("data after the gzip member".into());
    }
    if counted.n != entry.bytes_out {
        return Err(format!(
            "size {} but the manifest says {}",
            counted.n, entry.bytes_out
        ));
    }
    let crc = crc.finalize();
    if len != entry.size || crc != entry.crc32 {
        return Err(format!(
            "decodes to {len} bytes with CRC-32 {crc:08x}, the manifest says {} bytes with {:08x}",
            entry.size, entry.crc32
        ));
    }
    Ok(())
}

/// Verifies every object the sink's manifest and journal list (the current entry of each
/// key), in parallel, a batch at a time so memory does not grow with the count.
///
/// # Errors
/// [`FerryError::Usage`] when the sink has no manifest or journal, or one is damaged;
/// [`FerryError::Sink`] when it cannot be opened or read.
pub fn verify(spec: &SinkSpec, shard: Option<Shard>) -> Result<VerifyReport, FerryError> {
    let sink = sink::open(spec, &SinkOptions::default())?;
    let mut report = VerifyReport::default();
    let mut batch = Vec::with_capacity(BATCH);
    let read = for_each_current(sink.as_ref(), shard, |e| {
        batch.push(e);
        if batch.len() == BATCH {
            verify_entries(sink.as_ref(), &std::mem::take(&mut batch), &mut report);
        }
    });
    let (n, _) = read.map_err(|e| match e {
        HistoryError::Sink(e) => FerryError::Sink(e),
        HistoryError::Manifest(e) => FerryError::Usage(e.to_string()),
    })?;
    verify_entries(sink.as_ref(), &batch, &mut report);
    if n == 0 {
        return Err(FerryError::Usage(format!(
            "{}: no manifest ({}) to verify against",
            sink.describe(),
            manifest_name(shard)
        )));
    }
    report.mismatches.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}

/// Entries verified in parallel at a time.
const BATCH: usize = 4096;

/// Verifies the objects of `entries` at `sink`, adding to `report`.
pub fn verify_entries(sink: &dyn Sink, entries: &[Entry], report: &mut VerifyReport) {
    let mismatches: Vec<Mismatch> = entries
        .par_iter()
        .filter_map(|e| {
            let key = object_key(&PathBuf::from(&e.key));
            let result = sink
                .open_object(Path::new(&key))
                .map_err(|err| err.to_string())
                .and_then(|object| check_object(e, object));
            result.err().map(|problem| Mismatch { key, problem })
        })
        .collect();
    report.checked += entries.len();
    report.mismatches.extend(mismatches);
}
