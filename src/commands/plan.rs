//! `ferry plan INPUT… --shards N --to SINK`: walk the inputs once and cut them into N file
//! lists balanced by bytes, stored at the sink under a plan id (the format is in
//! [`crate::history::plans`]); `ferry --plan ID --shard K/N` then delivers list K without
//! walking anything.
//!
//! ```text
//! producers (walk) → stat → record (ledger + the planned files) → balance → lists, header
//! ```

use super::{execute, Command, Ended, Finished, Session, Settings};
use crate::config::Inputs;
use crate::error::{ExitCode, FerryError};
use crate::history::manifest::PathRepr;
use crate::history::plans::{write_list, PlanHeader, Planned, PLAN_VERSION};
use crate::ledger::Ledger;
use crate::pipeline::{CancelReason, CancelToken, Collected, Emitter, Pipeline, StageSpec};
use crate::shard::Shard;
use crate::sink::{self, Sink, SinkOptions, SinkSpec};
use crate::task::{FileTask, Skip, Verdict};
use crate::walk::{Sources, Walker};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

/// What `ferry plan` is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to walk, with the same filters a run takes (its `shard` is ignored).
    pub inputs: Inputs,
    /// Where the plan is stored, and where the runs will deliver.
    pub sink: SinkSpec,
    /// How many lists.
    pub shards: u64,
    /// How it shows itself and when it gives up.
    pub settings: Settings,
}

/// Walks the inputs once, balances the files into `plan.shards` lists by bytes, and
/// stores the plan at the sink.
///
/// # Errors
/// [`FerryError::Usage`] for bad inputs or a shard count of 0, [`FerryError::Sink`] when
/// the plan cannot be stored.
pub fn make_plan(plan: &Plan, cancel: CancelToken) -> Result<Planning, FerryError> {
    execute(plan, cancel)
}

/// What `ferry plan` ended with.
#[derive(Debug)]
pub enum Planning {
    /// The plan is stored: its header.
    Stored(PlanHeader),
    /// Ctrl-C or `--timeout` stopped the walk; nothing was stored. How far it got.
    Stopped {
        /// Why.
        why: CancelReason,
        /// Entries found, and what became of them.
        found: u64,
        /// Files that would have been planned.
        planned: u64,
        /// Left out as a run would leave them out.
        left_out: u64,
        /// Unreadable.
        unreadable: u64,
        /// Found but not looked at.
        cancelled: u64,
    },
}

/// A plan, opened: the inputs checked and the sink open.
pub struct Opened {
    sink: Arc<dyn Sink>,
    sources: Option<Sources>,
    created: SystemTime,
}

/// One collector's share: the ledger's count, and the files it planned.
#[derive(Clone)]
pub struct Gathered {
    ledger: Ledger,
    files: Vec<Planned>,
}

impl Command for Plan {
    type Opened = Opened;
    type Collected = Collected<Gathered>;
    type Done = Planning;

    fn settings(&self) -> Settings {
        self.settings
    }

    fn open(&self, s: &Session) -> Result<Opened, FerryError> {
        if self.shards == 0 {
            return Err(FerryError::Usage("--shards must be at least 1".into()));
        }
        let created = SystemTime::now();
        let sources = Sources::prepare(&self.inputs)?;
        let options = SinkOptions {
            cancel: s.cancel.clone(),
            ..SinkOptions::default()
        };
        Ok(Opened {
            sink: sink::open(&self.sink, &options)?,
            sources: Some(sources),
            created,
        })
    }

    fn build(
        &self,
        opened: &mut Opened,
        p: &mut Pipeline,
        s: &Session,
    ) -> Result<Collected<Gathered>, FerryError> {
        let walker = Walker::for_inputs(&self.inputs, opened.sink.local_root(), &s.metrics, &s.log);
        let sources = (opened.sources.take())
            .ok_or_else(|| FerryError::Internal("a plan was built twice".into()))?;
        let follow = self.inputs.follow;
        let gathered = Gathered {
            ledger: Ledger::new(s.metrics.clone(), s.log.clone(), None),
            files: Vec::new(),
        };
        Ok(p.source(
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
            "record",
            NonZeroUsize::MIN,
            move |_| Gathered {
                ledger: gathered.ledger.clone(),
                files: Vec::new(),
            },
            |g: &mut Gathered, f: Found| match f {
                Ok(p) => {
                    g.ledger.counted(p.size);
                    g.files.push(p);
                }
                Err((path, verdict)) => g.ledger.verdict(&path, verdict),
            },
        )?)
    }

    fn finish(
        &self,
        opened: Opened,
        collected: Collected<Gathered>,
        ended: Ended,
        s: &Session,
    ) -> Result<Planning, FerryError> {
        let m = &s.metrics;
        let mut files = Vec::new();
        for g in collected.into_vec() {
            files.extend(g.files);
        }
        if let Some(why) = ended.cancelled {
            return Ok(Planning::Stopped {
                why,
                found: m.discovered.load(Relaxed),
                planned: m.succeeded.load(Relaxed),
                left_out: m.skipped.load(Relaxed),
                unreadable: m.failed.load(Relaxed),
                cancelled: m.cancelled.load(Relaxed),
            });
        }
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let fair = bytes / self.shards;
        let oversized: Vec<PathRepr> = files
            .iter()
            .filter(|f| self.shards > 1 && f.size > fair)
            .map(|f| f.key.clone())
            .collect();
        let lists = balance(files, self.shards);
        let mut header = PlanHeader {
            version: PLAN_VERSION,
            id: plan_id(opened.created),
            created: humantime::format_rfc3339_seconds(opened.created).to_string(),
            inputs: self
                .inputs
                .paths
                .iter()
                .map(|p| p.as_path().into())
                .collect(),
            shards: self.shards,
            files: 0,
            bytes,
            shard_files: Vec::new(),
            shard_bytes: Vec::new(),
            oversized,
            left_out: m.skipped.load(Relaxed),
            unreadable: m.failed.load(Relaxed),
            sink: opened.sink.describe(),
        };
        store(opened.sink.as_ref(), &mut header, &lists)?;
        Ok(Planning::Stored(header))
    }
}

impl Finished for Planning {
    fn render_text(&self) -> String {
        match self {
            Planning::Stored(h) => describe(h),
            Planning::Stopped {
                why,
                found,
                planned,
                left_out,
                unreadable,
                cancelled,
            } => format!(
                "ferry: {}: no plan was stored; of {found} entries found, {planned} planned, {left_out} left out, {unreadable} unreadable, {cancelled} not looked at\n",
                match why {
                    CancelReason::Deadline => "timed out",
                    _ => "interrupted",
                }
            ),
        }
    }

    /// The header of the stored plan (`{"stored": false, …}` when none was).
    fn to_json(&self) -> String {
        match self {
            Planning::Stored(h) => serde_json::to_string_pretty(h).unwrap_or_default(),
            Planning::Stopped {
                found,
                planned,
                left_out,
                unreadable,
                cancelled,
                ..
            } => serde_json::to_string_pretty(&serde_json::json!({
                "stored": false,
                "found": found,
                "planned": planned,
                "left_out": left_out,
                "unreadable": unreadable,
                "cancelled": cancelled,
            }))
            .unwrap_or_default(),
        }
    }

    /// 0 when every entry was planned or left out as a run would, 1 when one could not be
    /// read or the deadline stopped the walk, 130 when Ctrl-C did.
    fn exit_code(&self) -> ExitCode {
        match self {
            Planning::Stored(h) if h.unreadable == 0 => ExitCode::Success,
            Planning::Stored(_) => ExitCode::Failures,
            Planning::Stopped {
                why: CancelReason::Interrupted,
                ..
            } => ExitCode::Interrupted,
            Planning::Stopped { .. } => ExitCode::Failures,
        }
    }

    /// The plan id, for scripts: `ID=$(ferry plan …)`.
    fn stdout(&self) -> Option<String> {
        match self {
            Planning::Stored(h) => Some(h.id.clone()),
            Planning::Stopped { .. } => None,
        }
    }
}

/// Stores the plan at `sink`: each list, then the header (with each list's files and
/// bytes), last, so a plan with a header is whole.
fn store(
    sink: &dyn Sink,
    header: &mut PlanHeader,
    lists: &[Vec<Planned>],
) -> Result<(), FerryError> {
    for (k, list) in lists.iter().enumerate() {
        let shard =
            Shard::new(k as u64, header.shards).map_err(|e| FerryError::Internal(e.to_string()))?;
        write_list(sink, &PlanHeader::list_name(&header.id, shard), list)?;
        header.files += list.len() as u64;
        header.shard_files.push(list.len() as u64);
        header.shard_bytes.push(list.iter().map(|f| f.size).sum());
    }
    let json = serde_json::to_vec_pretty(&header).unwrap_or_default();
    sink.write_meta(&PlanHeader::object_name(&header.id), &json)?;
    Ok(())
}

/// A file found by the walk with its size, or why it is not planned.
type Found = Result<Planned, (PathBuf, Verdict)>;

/// The size of a walked file, or why it is not planned: skipped as a run skips it (a
/// FIFO, a link not followed), or unreadable.
fn stat(t: FileTask, follow: bool) -> Found {
    if let Some(v) = t.verdict {
        return Err((t.path, v));
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
        Ok(_) => Err((
            t.path,
            Verdict::Skipped(Skip::Special("not a regular file")),
        )),
        Err(e) => Err((t.path, Verdict::failed(crate::error::Stage::Walk, e))),
    }
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
