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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The object's key at the sink.
    pub key: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Objects checked.
    pub checked: usize,
    /// Objects that failed a check, sorted by key.
    pub mismatches: Vec<Mismatch>,
}

/// Checks one object's bytes against its manifest entry.
pub fn check_object(entry: &Entry, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() as u64 != entry.bytes_out {
        return Err(format!(
            "size {} but the manifest says {}",
            bytes.len(),
            entry.bytes_out
        ));
    }
    let mut d = GzDecoder::new(bytes);
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
    if !d.into_inner().is_empty() {
        return Err("data after the gzip member".into());
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
                .read_object(Path::new(&key))
                .map_err(|err| err.to_string())
                .and_then(|bytes| check_object(e, &bytes));
            result.err().map(|problem| Mismatch { key, problem })
        })
        .collect();
    report.checked += entries.len();
    report.mismatches.extend(mismatches);
}
