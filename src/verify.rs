//! `ferry verify --to SINK`: reads back every object the manifest lists and checks that it
//! is one gzip member that decodes to the recorded length and CRC-32, at the recorded size.

use crate::error::{ExitCode, FerryError};
use crate::manifest::{manifest_name, Entry, Manifest};
use crate::report::{Level, Log};
use crate::shard::Shard;
use crate::sink::{self, Sink, SinkOptions, SinkSpec};
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

/// Verifies every object listed in the sink's manifest(s), in parallel.
///
/// # Errors
/// [`FerryError::Usage`] when the sink has no manifest; [`FerryError::Sink`] when it
/// cannot be opened or its manifest read.
pub fn verify(spec: &SinkSpec, shard: Option<Shard>) -> Result<VerifyReport, FerryError> {
    let sink = sink::open(spec, &SinkOptions::default())?;
    let name = manifest_name(shard);
    let bytes = sink.read_meta(&name)?.ok_or_else(|| {
        FerryError::Usage(format!(
            "{}: no manifest ({name}) to verify against",
            sink.describe()
        ))
    })?;
    let manifest = Manifest::from_bytes(&bytes).map_err(|e| FerryError::Usage(e.to_string()))?;
    Ok(verify_manifest(sink.as_ref(), &manifest))
}

/// Verifies the objects of `manifest` at `sink`.
pub fn verify_manifest(sink: &dyn Sink, manifest: &Manifest) -> VerifyReport {
    let entries: Vec<&Entry> = manifest.entries().collect();
    let mut mismatches: Vec<Mismatch> = entries
        .par_iter()
        .filter_map(|e| {
            let mut key = PathBuf::from(&e.key).into_os_string();
            key.push(".gz");
            let key = PathBuf::from(key);
            let result = sink
                .read_object(Path::new(&key))
                .map_err(|err| err.to_string())
                .and_then(|bytes| check_object(e, &bytes));
            result.err().map(|problem| Mismatch { key, problem })
        })
        .collect();
    mismatches.sort_by(|a, b| a.key.cmp(&b.key));
    VerifyReport {
        checked: entries.len(),
        mismatches,
    }
}
