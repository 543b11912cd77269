//! The plans `ferry plan` stores at a sink, and how `ferry --plan ID --shard K/N` reads
//! its list back.
//!
//! At the sink a plan is `.ferry-plan.<id>.json` (the header: version, when it was made,
//! the inputs, each list's files and bytes) and one `.ferry-plan.<id>.shard-K-of-N.jsonl`
//! per list (one `{"path", "key", "size"}` line per file). The lists are written first and
//! the header last, so a plan with a header is whole. Keys are the ones a plain run gives,
//! so manifests, skip and verify work unchanged.

use crate::error::{FerryError, FileError};
use crate::history::manifest::PathRepr;
use crate::shard::Shard;
use crate::sink::{ObjectMeta, Sink};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};

/// The name every plan object starts with.
pub const PLAN_PREFIX: &str = ".ferry-plan.";

/// The plan format this ferry writes and reads.
pub const PLAN_VERSION: u32 = 1;

/// A plan's header: what was planned, when, and how the lists came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHeader {
    /// The format version ([`PLAN_VERSION`]).
    pub version: u32,
    /// The plan id: when it was made (UTC, sortable) and a few hex digits.
    pub id: String,
    /// When the walk began, RFC 3339 UTC: files that appeared since are not in the plan.
    pub created: String,
    /// The inputs as given.
    pub inputs: Vec<PathRepr>,
    /// The number of lists (shards).
    pub shards: u64,
    /// Files in all lists.
    pub files: u64,
    /// Bytes in all lists, as the walk found them.
    pub bytes: u64,
    /// Files in each list.
    pub shard_files: Vec<u64>,
    /// Bytes in each list.
    pub shard_bytes: Vec<u64>,
    /// Files bigger than a fair share (bytes ÷ shards): each fills a list on its own.
    #[serde(default)]
    pub oversized: Vec<PathRepr>,
    /// Entries the walk skipped, as a run would (special files, links not followed):
    /// not in any list.
    #[serde(default)]
    pub left_out: u64,
    /// Entries the walk could not read (each named on stderr): not in any list.
    #[serde(default)]
    pub unreadable: u64,
    /// Where the lists were stored.
    #[serde(default)]
    pub sink: String,
}

impl PlanHeader {
    /// The name of the header object for plan `id`.
    pub fn object_name(id: &str) -> String {
        format!("{PLAN_PREFIX}{id}.json")
    }

    /// The name of list `shard` of plan `id`.
    pub fn list_name(id: &str, shard: Shard) -> String {
        format!(
            "{PLAN_PREFIX}{id}.shard-{}-of-{}.jsonl",
            shard.index(),
            shard.count()
        )
    }

    /// Reads plan `id` at `sink`.
    ///
    /// # Errors
    /// [`FerryError::Usage`] when there is no such plan, [`FerryError::History`] when it
    /// is damaged or newer.
    pub fn read(sink: &dyn Sink, id: &str) -> Result<Self, FerryError> {
        let name = Self::object_name(id);
        let Some(r) = sink.open_meta(&name)? else {
            let known = list_plans(sink).unwrap_or_default();
            return Err(FerryError::Usage(format!(
                "no plan {id} at {} ({name} is missing); plans there: {}",
                sink.describe(),
                match known.is_empty() {
                    true => "none".to_string(),
                    false => known.join(", "),
                }
            )));
        };
        let h: PlanHeader = serde_json::from_reader(r)
            .map_err(|e| FerryError::history(format!("plan {id}: {name} is damaged: {e}")))?;
        if h.version > PLAN_VERSION {
            return Err(FerryError::history(format!(
                "plan {id} is format version {}; this ferry reads up to {PLAN_VERSION}",
                h.version
            )));
        }
        Ok(h)
    }
}

/// The ids of the plans at `sink`, oldest first.
///
/// # Errors
/// When the sink cannot be listed.
pub fn list_plans(sink: &dyn Sink) -> Result<Vec<String>, crate::sink::SinkError> {
    let mut ids: Vec<String> = sink
        .list_meta(PLAN_PREFIX)?
        .into_iter()
        .filter_map(|n| {
            let id = n.strip_prefix(PLAN_PREFIX)?.strip_suffix(".json")?;
            (!id.contains(".shard-")).then(|| id.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// One planned file: where to read it and the key a plain run would give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// The source path, absolute.
    pub path: PathRepr,
    /// The key at the sink (without `.gz`).
    pub key: PathRepr,
    /// Its size when planned.
    pub size: u64,
}

/// Streams one list to the sink, one JSON line per file.
pub fn write_list(sink: &dyn Sink, name: &str, list: &[Planned]) -> Result<(), FerryError> {
    let mut up = sink.begin_meta(name, &ObjectMeta::default())?;
    let mut buf = Vec::with_capacity(256 << 10);
    for f in list {
        serde_json::to_writer(&mut buf, f).unwrap_or_default();
        buf.push(b'\n');
        if buf.len() >= 240 << 10 {
            up.write(&buf)?;
            buf.clear();
        }
    }
    up.write(&buf)?;
    up.commit()?;
    Ok(())
}

/// The files of list `shard` of `plan`, in order, read as they are needed. A line that
/// does not parse becomes an error naming the list and the line.
///
/// # Errors
/// [`FerryError::Usage`] when `shard` is not one of the plan's, [`FerryError::History`]
/// when its list is missing.
pub fn read_list(
    sink: &dyn Sink,
    plan: &PlanHeader,
    shard: Shard,
) -> Result<impl Iterator<Item = Result<Planned, String>> + Send + 'static, FerryError> {
    if shard.count() != plan.shards {
        return Err(FerryError::Usage(format!(
            "plan {} has {} shards; --shard {}/{} does not match it",
            plan.id,
            plan.shards,
            shard.index(),
            shard.count()
        )));
    }
    let name = PlanHeader::list_name(&plan.id, shard);
    let Some(r) = sink.open_meta(&name)? else {
        return Err(FerryError::history(format!(
            "plan {}: its list {name} is missing at {}",
            plan.id,
            sink.describe()
        )));
    };
    let mut lines = BufReader::with_capacity(256 << 10, r).lines().enumerate();
    Ok(std::iter::from_fn(move || {
        let (n, line) = lines.next()?;
        Some(match line {
            Ok(l) => serde_json::from_str::<Planned>(&l)
                .map_err(|e| format!("{name} line {}: {e}", n + 1)),
            Err(e) => Err(format!("{name} line {}: {e}", n + 1)),
        })
    }))
}

/// The failure of a planned file that is no longer there.
pub fn gone(plan: &PlanHeader) -> FileError {
    FileError::Plan(format!(
        "gone since plan {} was made ({})",
        plan.id, plan.created
    ))
}
