//! `ferry plan`: walk the inputs once and cut them into N file lists balanced by bytes,
//! stored at the sink under a plan id; `ferry --plan ID --shard K/N` then delivers list K
//! without walking anything.
//!
//! At the sink a plan is `.ferry-plan.<id>.json` (the header: version, when it was made,
//! the inputs, each list's files and bytes) and one `.ferry-plan.<id>.shard-K-of-N.jsonl`
//! per list (one `{"path", "key", "size"}` line per file). The lists are written first and
//! the header last, so a plan with a header is whole. Keys are the ones a plain run gives,
//! so manifests, skip and verify work unchanged.

use crate::config::Inputs;
use crate::error::{FerryError, FileError};
use crate::manifest::PathRepr;
use crate::metrics::RunMetrics;
use crate::pipeline::{CancelToken, Emitter, Pipeline, StageSpec};
use crate::report::{Level, Log};
use crate::shard::Shard;
use crate::sink::{self, ObjectMeta, Sink, SinkOptions, SinkSpec};
use crate::task::{FileTask, Verdict};
use crate::walk::{Sources, Walker};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

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
    /// [`FerryError::Usage`] when there is no such plan or it is damaged or newer.
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
            .map_err(|e| FerryError::Usage(format!("plan {id}: {name} is damaged: {e}")))?;
        if h.version > PLAN_VERSION {
            return Err(FerryError::Usage(format!(
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

/// What `ferry plan` is asked to do.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// What to walk, with the same filters a run takes (its `shard` is ignored).
    pub inputs: Inputs,
    /// Where the plan is stored, and where the runs will deliver.
    pub sink: SinkSpec,
    /// How many lists.
    pub shards: u64,
    /// What to print.
    pub log_level: Level,
}

/// What `ferry plan` prints on stderr: each list's files and bytes, the balance, files
/// bigger than a fair share, and the command each task runs.
pub fn describe(h: &PlanHeader) -> String {
    use crate::words::human_bytes;
    use std::fmt::Write;
    let mut s = format!(
        "ferry: plan {}: {} files, {} in {} lists at {} (walked {})\n",
        h.id,
        h.files,
        human_bytes(h.bytes),
        h.shards,
        h.sink,
        h.created
    );
    for (k, (files, bytes)) in h.shard_files.iter().zip(&h.shard_bytes).enumerate() {
        let _ = writeln!(
            s,
            "       shard {k}/{}: {files} files, {}",
            h.shards,
            human_bytes(*bytes)
        );
    }
    let _ = writeln!(
        s,
        "       largest list: {:.3}× the mean",
        balance_ratio(&h.shard_bytes)
    );
    for key in &h.oversized {
        let _ = writeln!(
            s,
            "       {} is bigger than a fair share ({}): its list holds it alone, and the \
             job takes at least as long as that file",
            PathBuf::from(key).display(),
            human_bytes(h.bytes / h.shards.max(1))
        );
    }
    if h.left_out + h.unreadable > 0 {
        let _ = writeln!(
            s,
            "       left out: {} skipped as a run would skip them, {} unreadable",
            h.left_out, h.unreadable
        );
    }
    // A planned run takes the plan's inputs again (not walked: they bound the list).
    let inputs = match h.inputs.is_empty() {
        true => "DIR… (the directories the listed files are under)".to_string(),
        false => h
            .inputs
            .iter()
            .map(|p| crate::words::shown(&PathBuf::from(p)))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let _ = writeln!(
        s,
        "       each task runs: ferry --plan {} --shard K/{} {inputs} --to {}",
        h.id, h.shards, h.sink
    );
    s
}

/// The largest list's bytes over the mean (1.0 is perfect balance; 1.0 when empty).
pub fn balance_ratio(bytes: &[u64]) -> f64 {
    let total: u64 = bytes.iter().sum();
    match (total, bytes.iter().max()) {
        (0, _) | (_, None) => 1.0,
        (t, Some(&m)) => m as f64 * bytes.len() as f64 / t as f64,
    }
}

/// Splits `files` into `n` lists balanced by bytes: largest first, each onto the list
/// with the fewest bytes so far (ties: fewest files, then the lowest index). Returns the
/// lists, each sorted by key, so a task reads its files in walk order.
pub fn balance(mut files: Vec<Planned>, n: u64) -> Vec<Vec<Planned>> {
    let n = n.max(1) as usize;
    files.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then_with(|| PathBuf::from(&a.key).cmp(&PathBuf::from(&b.key)))
    });
    let mut lists: Vec<Vec<Planned>> = (0..n).map(|_| Vec::new()).collect();
    let mut lightest: BinaryHeap<Reverse<(u64, usize, usize)>> =
        (0..n).map(|i| Reverse((0, 0, i))).collect();
    for f in files {
        let Some(Reverse((bytes, count, i))) = lightest.pop() else {
            break;
        };
        lightest.push(Reverse((bytes + f.size, count + 1, i)));
        lists[i].push(f);
    }
    for l in &mut lists {
        l.sort_by_key(|a| PathBuf::from(&a.key));
    }
    lists
}

/// A file found by the walk, with its size (or why it is left out).
type Found = Result<Planned, (PathBuf, Option<String>)>;

/// Walks the inputs once, balances the files into `opts.shards` lists by bytes, and
/// stores the plan at the sink. Returns its header.
///
/// # Errors
/// [`FerryError::Usage`] for bad inputs or a shard count of 0, [`FerryError::Sink`] when
/// the plan cannot be stored.
pub fn make_plan(opts: &PlanOptions, cancel: CancelToken) -> Result<PlanHeader, FerryError> {
    if opts.shards == 0 {
        return Err(FerryError::Usage("--shards must be at least 1".into()));
    }
    let created = SystemTime::now();
    let sources = Sources::prepare(&opts.inputs)?;
    let sink = sink::open(
        &opts.sink,
        &SinkOptions {
            cancel: cancel.clone(),
            ..SinkOptions::default()
        },
    )?;
    let log = Log::stderr(opts.log_level);
    let metrics = Arc::new(RunMetrics::default());
    let walker = Walker::for_inputs(&opts.inputs, sink.local_root(), &metrics, &log);
    let follow = opts.inputs.follow;
    let mut p = Pipeline::new(cancel.clone());
    let found = p
        .source(
            "walk",
            NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            walker.producers(sources),
        )?
        .stage(StageSpec::new("stat", crate::config::cores()), move |_| {
            move |t: FileTask, out: &Emitter<Found>| {
                let _ = out.emit(stat(t, follow));
            }
        })?
        .collect(
            "gather",
            NonZeroUsize::MIN,
            |_| Vec::new(),
            |v, f| v.push(f),
        )?;
    p.wait()?;
    if cancel.is_cancelled() {
        return Err(FerryError::Interrupted(
            "interrupted; no plan was stored".into(),
        ));
    }
    let mut files = Vec::new();
    let (mut left_out, mut unreadable) = (0u64, 0u64);
    for f in found.into_vec().into_iter().flatten() {
        match f {
            Ok(p) => files.push(p),
            Err((path, Some(why))) => {
                unreadable += 1;
                log.file_error(&path, &why);
            }
            Err((path, None)) => {
                left_out += 1;
                log.info(|| format!("[left out] {}", path.display()));
            }
        }
    }
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let fair = bytes / opts.shards;
    let oversized: Vec<PathRepr> = files
        .iter()
        .filter(|f| opts.shards > 1 && f.size > fair)
        .map(|f| f.key.clone())
        .collect();
    let lists = balance(files, opts.shards);
    let id = plan_id(created);
    let mut header = PlanHeader {
        version: PLAN_VERSION,
        id: id.clone(),
        created: humantime::format_rfc3339_seconds(created).to_string(),
        inputs: opts
            .inputs
            .paths
            .iter()
            .map(|p| p.as_path().into())
            .collect(),
        shards: opts.shards,
        files: 0,
        bytes,
        shard_files: Vec::new(),
        shard_bytes: Vec::new(),
        oversized,
        left_out,
        unreadable,
        sink: sink.describe(),
    };
    for (k, list) in lists.iter().enumerate() {
        let shard =
            Shard::new(k as u64, opts.shards).map_err(|e| FerryError::Usage(e.to_string()))?;
        write_list(sink.as_ref(), &PlanHeader::list_name(&id, shard), list)?;
        header.files += list.len() as u64;
        header.shard_files.push(list.len() as u64);
        header.shard_bytes.push(list.iter().map(|f| f.size).sum());
    }
    let json = serde_json::to_vec_pretty(&header).unwrap_or_default();
    sink.write_meta(&PlanHeader::object_name(&id), &json)?;
    Ok(header)
}

/// The size of a walked file, or why it is not planned (`None`: skipped quietly, as a
/// run skips a FIFO; `Some`: an error to show).
fn stat(t: FileTask, follow: bool) -> Found {
    match t.verdict {
        Some(Verdict::Skipped(_)) => return Err((t.path, None)),
        Some(Verdict::Failed { error, .. }) => return Err((t.path, Some(error.to_string()))),
        Some(Verdict::Cancelled) => return Err((t.path, Some("cancelled".into()))),
        None => {}
    }
    let meta = match follow {
        true => std::fs::metadata(&t.path),
        false => std::fs::symlink_metadata(&t.path),
    };
    match meta {
        Ok(m) if m.is_file() => {
            let path = std::path::absolute(&t.path).unwrap_or_else(|_| t.path.clone());
            Ok(Planned {
                path: path.as_path().into(),
                key: t.key.as_path().into(),
                size: m.len(),
            })
        }
        Ok(_) => Err((t.path, None)),
        Err(e) => Err((t.path, Some(crate::words::io_words(&e)))),
    }
}

/// Streams one list to the sink, one JSON line per file.
fn write_list(sink: &dyn Sink, name: &str, list: &[Planned]) -> Result<(), FerryError> {
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

/// A plan id: the UTC time it was made, then four hex digits against two plans made in
/// the same second.
fn plan_id(at: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let salt = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) & 0xffff;
    format!("{stamp}-{salt:04x}")
}

/// The files of list `shard` of `plan`, in order, read as they are needed. A line that
/// does not parse becomes an error naming the list and the line.
///
/// # Errors
/// [`FerryError::Usage`] when `shard` is not one of the plan's or its list is missing.
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
        return Err(FerryError::Usage(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &str, size: u64) -> Planned {
        Planned {
            path: PathRepr::Text(format!("/src/{key}")),
            key: PathRepr::Text(key.into()),
            size,
        }
    }

    #[test]
    fn largest_first_onto_the_lightest_list() {
        let files = vec![
            f("a", 10),
            f("b", 7),
            f("c", 6),
            f("d", 5),
            f("e", 4),
            f("g", 1),
        ];
        let lists = balance(files, 2);
        let sums: Vec<u64> = lists
            .iter()
            .map(|l| l.iter().map(|x| x.size).sum())
            .collect();
        assert_eq!(sums, vec![16, 17]);
        // Every file in exactly one list, each list in key order.
        let mut all: Vec<String> = lists
            .iter()
            .flatten()
            .map(|x| PathBuf::from(&x.key).display().to_string())
            .collect();
        assert!(lists.iter().all(|l| l
            .windows(2)
            .all(|w| PathBuf::from(&w[0].key) < PathBuf::from(&w[1].key))));
        all.sort();
        assert_eq!(all, ["a", "b", "c", "d", "e", "g"]);
    }

    #[test]
    fn a_file_bigger_than_a_fair_share_fills_its_own_list() {
        let mut files = vec![f("huge", 1000)];
        files.extend((0..30).map(|i| f(&format!("s{i:02}"), 10)));
        let lists = balance(files, 3);
        let huge = lists
            .iter()
            .find(|l| l.iter().any(|x| x.size == 1000))
            .unwrap();
        assert_eq!(huge.len(), 1, "nothing joins the list the huge file is on");
        let others: Vec<usize> = lists
            .iter()
            .filter(|l| l.len() != 1)
            .map(Vec::len)
            .collect();
        assert_eq!(others, vec![15, 15]);
    }

    #[test]
    fn plan_ids_sort_by_time() {
        let a = plan_id(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000));
        let b = plan_id(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_001));
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20270115T"), "{a}");
    }
}
