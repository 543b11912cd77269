//! What was delivered: one entry per object, kept at the sink root, so a rerun skips files
//! that have not changed and a later `verify` can check every object.

use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The manifest's object name at the sink root.
pub const MANIFEST_NAME: &str = ".ferry-manifest.json";

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
    /// CRC-32 of the source bytes.
    pub crc32: u32,
    /// Size of the delivered object.
    pub bytes_out: u64,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
}

/// The set of delivered entries, by source key.
#[derive(Debug, Default, Clone)]
pub struct Manifest {
    entries: HashMap<PathBuf, Entry>,
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("manifest {MANIFEST_NAME} is damaged ({0}); remove it or use --force")]
pub struct ManifestError(String);

impl Manifest {
    /// Parses a manifest written by [`Manifest::to_bytes`].
    ///
    /// # Errors
    /// If the bytes are not a manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let d: OnDisk = serde_json::from_slice(bytes).map_err(|e| ManifestError(e.to_string()))?;
        Ok(Manifest {
            entries: d
                .entries
                .into_iter()
                .map(|e| (PathBuf::from(&e.key), e))
                .collect(),
        })
    }

    /// Serialises the manifest (entries sorted by key, so it diffs well).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<Entry> = self.entries.values().cloned().collect();
        entries.sort_by(|a, b| PathBuf::from(&a.key).cmp(&PathBuf::from(&b.key)));
        let mut v = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            entries,
        })
        .unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The entry for a source key.
    pub fn get(&self, key: &Path) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, e: Entry) {
        self.entries.insert(PathBuf::from(&e.key), e);
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_non_utf8_keys() {
        let mut m = Manifest::default();
        let odd = PathBuf::from(OsString::from_vec(b"dir/\xff\xfe.log".to_vec()));
        for key in [Path::new("a/b.txt"), odd.as_path()] {
            m.insert(Entry {
                key: key.into(),
                size: 3,
                mtime_s: 5,
                mtime_ns: 7,
                crc32: 9,
                bytes_out: 11,
            });
        }
        let back = Manifest::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(&odd).unwrap().bytes_out, 11);
        assert_eq!(back.get(Path::new("a/b.txt")).unwrap().size, 3);
        assert!(Manifest::from_bytes(b"{nope").is_err());
    }
}
