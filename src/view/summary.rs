//! The end-of-run summary: the same numbers as text for people and JSON for programs.

use super::lines::{hint, Sample};
use crate::counters::Counters;
use crate::error::{ExitCode, FileError, Stage};
use crate::pipeline::{CancelReason, StageMetrics};
use crate::words::human_bytes;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// File and byte counts. `succeeded + skipped + failed + cancelled == discovered`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Files and special entries found.
    pub discovered: u64,
    /// Delivered.
    pub succeeded: u64,
    /// Of those, symbolic links recorded as links (their text, no object), or, in a
    /// restore, made again.
    pub links: u64,
    /// Directories recorded (mode, owner, times) or, in a restore, made and set; not
    /// among the files counted above.
    pub dirs: u64,
    /// Not delivered on purpose (special files, links not followed, unchanged).
    pub skipped: u64,
    /// Not delivered because of an error (listed in `failures`).
    pub failed: u64,
    /// Not delivered because the run was cancelled.
    pub cancelled: u64,
    /// Source bytes of delivered files.
    pub bytes_in: u64,
    /// Compressed bytes delivered.
    pub bytes_out: u64,
    /// `--delete`: objects removed (in a dry run, that would be) because their sources
    /// are gone; not among the files counted above.
    pub deleted: u64,
}

/// One stage's work over the run.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// Stage name.
    pub name: String,
    /// Workers: its threads, or under a limit the mean of the items it allowed in flight.
    pub workers: usize,
    /// Threads it started (under a limit that defers items, far fewer than in flight).
    pub threads: usize,
    /// The most items it had under way at once (requests in flight, for the upload).
    pub peak_in_flight: usize,
    /// Items handled (for the producers: items produced).
    pub items: u64,
    /// Worker-seconds spent working (handling items, not counting time blocked).
    pub busy_s: f64,
    /// Worker-seconds spent blocked on a full downstream queue (back-pressure).
    pub blocked_s: f64,
    /// Worker-seconds spent waiting for input (or ended early): the rest of
    /// `workers × duration`.
    pub idle_s: f64,
    /// `busy_s ÷ (workers × duration)`: how much of the stage's capacity did work.
    pub utilisation: f64,
    /// Median time per item, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile time per item, in milliseconds.
    pub p99_ms: f64,
    /// Operations retried after a transient failure.
    pub retries: u64,
    /// The stage's limit on items in flight, when it had one (upload into a remote
    /// store): whether it adapted, its bounds, where it ended, its peak and mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<crate::pipeline::LimitReport>,
}

impl StageSummary {
    /// Reads a stage's final metrics over a run of `elapsed`; `retries` is ferry's own
    /// count for the stage.
    pub fn from_metrics(m: &StageMetrics, retries: u64, elapsed: Duration) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let limit = m.limit.as_ref().map(|l| l.report());
        // Under a limit, the capacity is what the limit allowed on average.
        let allowed = limit.as_ref().map_or(m.workers as f64, |l| l.mean.max(1.0));
        let capacity = allowed * elapsed.as_secs_f64();
        let (busy, blocked) = (m.work_time().as_secs_f64(), m.blocked_time().as_secs_f64());
        StageSummary {
            name: m.name.clone(),
            workers: allowed.round() as usize,
            threads: m.threads.load(Relaxed),
            peak_in_flight: m.peak_busy.load(Relaxed),
            limit,
            items: m.items.load(Relaxed).max(m.emitted.load(Relaxed)),
            busy_s: busy,
            blocked_s: blocked,
            idle_s: (capacity - busy - blocked).max(0.0),
            utilisation: match capacity > 0.0 {
                true => (busy / capacity).min(1.0),
                false => 0.0,
            },
            p50_ms: ms(m.latency.quantile(0.5)),
            p99_ms: ms(m.latency.quantile(0.99)),
            retries,
        }
    }
}

/// A file that was not delivered because of an error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// The path, as text (non-UTF-8 bytes shown as U+FFFD).
    pub path: String,
    /// The exact path bytes, present only when the path is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    /// The stage where it failed.
    pub stage: Stage,
    /// The cause.
    pub error: String,
}

impl Failure {
    /// A failure of `path` in `stage`.
    pub fn new(path: &Path, stage: Stage, error: &FileError) -> Self {
        Failure {
            path: path.to_string_lossy().into_owned(),
            path_bytes: path
                .to_str()
                .is_none()
                .then(|| path.as_os_str().as_bytes().to_vec()),
            stage,
            // A store's error may quote the endpoint's URL: never its credentials.
            error: crate::words::redacted(&error.to_string()).into_owned(),
        }
    }
}

/// What a run did, for the end summary and `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Counts.
    pub totals: Totals,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// Source MiB per second of wall time (bytes read, delivered or not).
    pub mib_per_s: f64,
    /// Files finished per second of wall time.
    pub files_per_s: f64,
    /// Where objects went.
    pub sink: String,
    /// Per stage, source first.
    pub stages: Vec<StageSummary>,
    /// Every failed file with its cause.
    pub failures: Vec<Failure>,
    /// Why the run stopped early (`interrupted`, `deadline reached`), if it did.
    pub cancelled: Option<String>,
    #[serde(skip)]
    pub(crate) cancel_reason: Option<CancelReason>,
    /// Problems that are not about one file (e.g. the manifest could not be saved).
    pub warnings: Vec<String>,
    /// `--dry-run`: nothing was read or written; every file was only decided upon.
    pub dry_run: bool,
    /// `--dry-run`: what would have been sent (those files count as skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_send: Option<WouldSend>,
    /// The stage with the highest utilisation, and what might help.
    pub bottleneck: Option<Bottleneck>,
    /// One sample a second: bytes and files done, each stage's utilisation (stages in
    /// the order of `stages`). Render it with `scripts/plot-report`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Sample>,
}

/// The stage that limited the run: the one whose workers were busiest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bottleneck {
    /// Its name.
    pub stage: String,
    /// Its utilisation, 0–1.
    pub utilisation: f64,
    /// What might help, when something does.
    pub hint: Option<String>,
}

impl Bottleneck {
    /// The busiest of `stages` (none when no stage did any work).
    pub fn of(stages: &[StageSummary]) -> Option<Self> {
        let top = stages
            .iter()
            .filter(|s| s.busy_s > 0.0)
            .max_by(|a, b| a.utilisation.total_cmp(&b.utilisation))?;
        Some(Bottleneck {
            stage: top.name.clone(),
            utilisation: top.utilisation,
            hint: hint(
                &top.name,
                top.utilisation,
                top.workers,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                top.limit.as_ref().is_some_and(|l| l.adaptive),
            ),
        })
    }

    /// `compress is the bottleneck (97 % busy): more -j helps if cores are free`.
    pub fn describe(&self, tense: &str) -> String {
        let mut s = format!(
            "{} {tense} the bottleneck ({:.0} % busy)",
            self.stage,
            self.utilisation * 100.0
        );
        if let Some(h) = &self.hint {
            s.push_str(": ");
            s.push_str(h);
        }
        s
    }
}

/// What a dry run would have sent.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct WouldSend {
    /// Files.
    pub files: u64,
    /// Their source bytes.
    pub bytes: u64,
    /// Of the files, symbolic links (recorded as links, no object).
    pub links: u64,
}

impl Summary {
    /// The summary of a finished run: the counters as the collectors left them, every
    /// stage's numbers, and the failures. A file discovered but never finished (left in
    /// the bridge by a cancel, or lost to a bug) is counted, never dropped silently.
    pub fn build(
        metrics: &Counters,
        stages: &[Arc<StageMetrics>],
        mut failures: Vec<Failure>,
        reason: Option<CancelReason>,
        warnings: Vec<String>,
        sink: String,
        elapsed: Duration,
    ) -> Self {
        let get = |a: &AtomicU64| a.load(Relaxed);
        let mut totals = Totals {
            discovered: get(&metrics.discovered),
            succeeded: get(&metrics.succeeded),
            links: get(&metrics.links),
            dirs: get(&metrics.dirs),
            skipped: get(&metrics.skipped),
            failed: get(&metrics.failed),
            cancelled: get(&metrics.cancelled),
            bytes_in: get(&metrics.bytes_in),
            bytes_out: get(&metrics.bytes_out),
            deleted: get(&metrics.deleted),
        };
        let unaccounted = totals.discovered.saturating_sub(metrics.finished());
        if unaccounted > 0 {
            if reason.is_some() {
                totals.cancelled += unaccounted;
            } else {
                totals.failed += unaccounted;
                let lost = Failure::new(Path::new("(unknown)"), Stage::Pipeline, &FileError::Lost);
                failures.extend(std::iter::repeat_n(lost, unaccounted as usize));
            }
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        let retries = get(&metrics.retries);
        Summary {
            duration_s: elapsed.as_secs_f64(),
            mib_per_s: get(&metrics.bytes_read) as f64 / (1024.0 * 1024.0) / secs,
            files_per_s: (totals.succeeded + totals.skipped + totals.failed) as f64 / secs,
            totals,
            sink,
            stages: stages
                .iter()
                .map(|m| {
                    let r = if m.name == "upload" { retries } else { 0 };
                    StageSummary::from_metrics(m, r, elapsed)
                })
                .collect(),
            failures,
            cancelled: reason.map(|r| r.to_string()),
            cancel_reason: reason,
            warnings,
            dry_run: false,
            would_send: None,
            bottleneck: None,
            timeline: Vec::new(),
        }
        .with_bottleneck()
    }

    fn with_bottleneck(mut self) -> Self {
        self.bottleneck = Bottleneck::of(&self.stages);
        self
    }

    /// Marks this as the summary of a dry run, with what would have been sent.
    pub fn mark_dry_run(&mut self, metrics: &Counters) {
        self.dry_run = true;
        self.would_send = Some(WouldSend {
            files: metrics.would_send.load(Relaxed),
            bytes: metrics.would_send_bytes.load(Relaxed),
            links: metrics.would_link.load(Relaxed),
        });
    }

    /// Writes the JSON report to `target`, or to stdout for `-`; see [`write_json`].
    pub fn report_to(&self, target: &Path) -> ExitCode {
        write_json(target, &self.to_json())
    }

    /// The process exit code this outcome calls for (design promise 6).
    pub fn exit_code(&self) -> ExitCode {
        match self.cancel_reason {
            Some(CancelReason::Interrupted) => ExitCode::Interrupted,
            Some(_) => ExitCode::Failures,
            None if self.totals.failed > 0 => ExitCode::Failures,
            None => ExitCode::Success,
        }
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The summary as lines for a person, fitted to stderr's width when it is a terminal.
    pub fn render_text(&self) -> String {
        use std::io::IsTerminal;
        let width = std::io::stderr()
            .is_terminal()
            .then(|| console::Term::stderr().size().1 as usize)
            .filter(|w| *w > 0);
        self.render_width(width)
    }

    /// The summary as lines of at most `width` columns (`None`: no limit).
    pub fn render_width(&self, width: Option<usize>) -> String {
        let full = self.render_lines(width.unwrap_or(usize::MAX));
        match width {
            None => full,
            Some(w) => full
                .lines()
                .flat_map(|l| wrap(l, w))
                .map(|l| l + "\n")
                .collect(),
        }
    }

    fn render_lines(&self, width: usize) -> String {
        let t = &self.totals;
        let mut s = String::new();
        if let Some(w) = self.would_send {
            let _ = writeln!(
                s,
                "ferry: dry run: {} files ({}) would be sent{}, {} skipped; nothing was read or written",
                w.files,
                human_bytes(w.bytes),
                match w.links {
                    0 => String::new(),
                    n => format!(" ({n} of them symbolic links, recorded as links)"),
                },
                t.skipped - w.files
            );
        }
        let links = match t.links {
            0 => String::new(),
            1 => " (1 of them a symbolic link)".to_string(),
            n => format!(" ({n} of them symbolic links)"),
        };
        let _ = writeln!(
            s,
            "ferry: {} discovered: {} succeeded{links}, {} skipped, {} failed, {} cancelled",
            t.discovered, t.succeeded, t.skipped, t.failed, t.cancelled
        );
        if t.dirs > 0 {
            let _ = writeln!(
                s,
                "       and {} directories (their modes, owners and times)",
                t.dirs
            );
        }
        if t.deleted > 0 {
            let _ = writeln!(
                s,
                "       and {} objects {} (--delete: their sources are gone)",
                t.deleted,
                match self.dry_run {
                    true => "would be deleted",
                    false => "deleted",
                }
            );
        }
        let ratio = if t.bytes_in > 0 {
            format!(" ({:.1}%)", t.bytes_out as f64 * 100.0 / t.bytes_in as f64)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "       {} → {}{ratio} into {} in {:.2} s · {:.1} MiB/s · {:.0} files/s",
            human_bytes(t.bytes_in),
            human_bytes(t.bytes_out),
            self.sink,
            self.duration_s,
            self.mib_per_s,
            self.files_per_s
        );
        // Retries show only when there were some; p50 gives way to them on a narrow
        // terminal (both are in the JSON report).
        let retries = self.stages.iter().any(|st| st.retries > 0);
        let p50 = !retries || width >= 90;
        let mut head = format!(
            "       {:<9} {:>7} {:>9} {:>8} {:>9} {:>5}",
            "stage", "workers", "items", "busy s", "blocked s", "used"
        );
        if p50 {
            head.push_str(&format!(" {:>8}", "p50 ms"));
        }
        head.push_str(&format!(" {:>8}", "p99 ms"));
        if retries {
            head.push_str(&format!(" {:>7}", "retries"));
        }
        let _ = writeln!(s, "{head}");
        for st in &self.stages {
            let mut row = format!(
                "       {:<9} {:>7} {:>9} {:>8.2} {:>9.2} {:>4.0}%",
                st.name,
                st.workers,
                st.items,
                st.busy_s,
                st.blocked_s,
                st.utilisation * 100.0
            );
            if p50 {
                row.push_str(&format!(" {:>8.2}", st.p50_ms));
            }
            row.push_str(&format!(" {:>8.2}", st.p99_ms));
            if retries {
                row.push_str(&format!(" {:>7}", st.retries));
            }
            let _ = writeln!(s, "{row}");
        }
        for st in &self.stages {
            if let Some(l) = st.limit.as_ref().filter(|l| l.adaptive) {
                let _ = writeln!(
                    s,
                    "ferry: {} adapted its requests in flight: {} at the end, {} at most, {:.0} on average (bounds {}–{}; --upload-workers pins it)",
                    st.name, l.last, l.peak, l.mean, l.min, l.max
                );
            }
        }
        if let Some(b) = &self.bottleneck {
            let _ = writeln!(s, "ferry: {}", b.describe("was"));
        }
        if let Some(why) = &self.cancelled {
            let _ = writeln!(
                s,
                "ferry: {why}: {} files not delivered (cancelled)",
                t.cancelled
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "ferry: warning: {w}");
        }
        s
    }
}

/// `line` broken into lines of at most `width` columns, after a ` · ` or `: ` where it
/// can be (else at a space, else anywhere), continued with the summary's indent.
fn wrap(line: &str, width: usize) -> Vec<String> {
    const INDENT: &str = "       ";
    let mut out = Vec::new();
    let mut rest: String = line.to_string();
    while rest.chars().count() > width && width > INDENT.len() + 10 {
        let head: String = rest.chars().take(width).collect();
        let cut = [" · ", ": ", " "]
            .iter()
            .find_map(|sep| {
                head.rfind(sep)
                    .filter(|&i| i > INDENT.len())
                    .map(|i| (i, i + sep.len()))
            })
            .unwrap_or((head.len(), head.len()));
        out.push(rest[..cut.0].trim_end().to_string());
        rest = format!("{INDENT}{}", rest[cut.1..].trim_start());
    }
    out.push(rest);
    out
}

/// Writes a JSON report to `target` (beside it under a temp name, then renamed over it, so
/// a crash never leaves half a file under the name a script reads), or to stdout for `-`
/// (where a closed pipe, as in `ferry … --report - | head`, is not an error). A failure is
/// printed and makes the exit code at least 1.
pub fn write_json(target: &Path, json: &str) -> ExitCode {
    let written = if target.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{json}").and_then(|_| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r,
        }
    } else {
        let mut temp = target.as_os_str().to_owned();
        temp.push(format!(".ferry-tmp-{}", std::process::id()));
        std::fs::write(&temp, format!("{json}\n"))
            .and_then(|_| std::fs::rename(&temp, target))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
    };
    match written {
        Ok(()) => ExitCode::Success,
        Err(e) => {
            eprintln!(
                "ferry: cannot write the report to {}: {e}",
                target.display()
            );
            ExitCode::Failures
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(
        name: &str,
        workers: usize,
        items: u64,
        busy: f64,
        blocked: f64,
        secs: f64,
    ) -> StageSummary {
        let cap = workers as f64 * secs;
        StageSummary {
            name: name.into(),
            workers,
            threads: workers,
            peak_in_flight: workers,
            items,
            busy_s: busy,
            blocked_s: blocked,
            idle_s: (cap - busy - blocked).max(0.0),
            utilisation: busy / cap,
            p50_ms: 0.4,
            p99_ms: 3.1,
            retries: 0,
            limit: None,
        }
    }

    fn summary(totals: Totals, secs: f64, stages: Vec<StageSummary>) -> Summary {
        Summary {
            mib_per_s: totals.bytes_in as f64 / 1048576.0 / secs,
            files_per_s: totals.discovered as f64 / secs,
            totals,
            duration_s: secs,
            sink: "dir:/srv/archive/ferry-out".into(),
            stages,
            failures: vec![],
            cancelled: None,
            cancel_reason: None,
            warnings: vec![],
            dry_run: false,
            would_send: None,
            bottleneck: None,
            timeline: vec![],
        }
        .with_bottleneck()
    }

    /// The end summary of the four cases the live view is tested with, at 80 and 120
    /// columns: the table fits, and the bottleneck is named with its hint.
    #[test]
    fn the_summary_at_80_and_120_columns() {
        let t = |n: u64, failed: u64, bytes: u64| Totals {
            discovered: n,
            succeeded: n - failed,
            failed,
            bytes_in: bytes,
            bytes_out: bytes / 3,
            ..Default::default()
        };
        let mut slow = summary(
            t(500, 0, 400 << 20),
            34.8,
            vec![
                stage("walk", 1, 500, 0.01, 0.2, 34.8),
                stage("load", 2, 500, 0.6, 30.1, 34.8),
                stage("compress", 2, 520, 4.1, 60.3, 34.8),
                stage("upload", 8, 520, 272.0, 0.0, 34.8),
                stage("record", 1, 500, 0.01, 0.0, 34.8),
            ],
        );
        slow.stages[3].retries = 12;
        let small_stages = vec![
            stage("walk", 1, 20_000, 0.3, 0.5, 0.9),
            stage("load", 2, 20_000, 0.7, 0.2, 0.9),
            stage("compress", 2, 20_000, 1.62, 0.0, 0.9),
            stage("upload", 2, 20_000, 0.5, 0.0, 0.9),
            stage("record", 1, 20_000, 0.05, 0.0, 0.9),
        ];
        let mut failing = summary(t(20_000, 3, 160 << 20), 0.9, small_stages.clone());
        failing.failures = vec![Failure::new(
            Path::new("small/g01/f0042.txt"),
            Stage::Load,
            &FileError::Io(std::io::Error::from_raw_os_error(libc::EACCES)),
        )];
        for (name, s) in [
            (
                "one_big_file",
                summary(
                    t(1, 0, 1 << 30),
                    5.6,
                    vec![
                        stage("walk", 1, 1, 0.0, 0.0, 5.6),
                        stage("load", 2, 1024, 0.4, 2.9, 5.6),
                        stage("compress", 2, 1024, 10.9, 0.1, 5.6),
                        stage("upload", 2, 1024, 0.3, 0.0, 5.6),
                        stage("record", 1, 1, 0.0, 0.0, 5.6),
                    ],
                ),
            ),
            (
                "many_small_files",
                summary(t(20_000, 0, 160 << 20), 0.9, small_stages),
            ),
            ("slow_sink", slow),
            ("with_failures", failing),
        ] {
            for width in [80, 120] {
                let text = s.render_width(Some(width));
                for l in text.lines() {
                    assert!(l.chars().count() <= width, "{name} at {width}: {l:?}");
                }
                insta::assert_snapshot!(format!("summary_{name}_{width}"), text);
            }
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let s = Summary {
            totals: Totals {
                discovered: 3,
                succeeded: 1,
                skipped: 1,
                failed: 1,
                ..Default::default()
            },
            duration_s: 1.0,
            mib_per_s: 0.0,
            files_per_s: 3.0,
            sink: "dir:x".into(),
            stages: vec![],
            failures: vec![Failure::new(
                Path::new("a"),
                Stage::Load,
                &FileError::Io(std::io::Error::from_raw_os_error(libc::EACCES)),
            )],
            cancelled: None,
            cancel_reason: None,
            warnings: vec![],
            dry_run: false,
            would_send: None,
            bottleneck: None,
            timeline: Vec::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        for k in [
            "discovered",
            "succeeded",
            "skipped",
            "failed",
            "cancelled",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(v["totals"][k].is_u64(), "{k}");
        }
        assert_eq!(v["failures"][0]["error"], "permission denied");
        assert_eq!(v["failures"][0]["stage"], "load");
        assert!(v["failures"][0].get("path_bytes").is_none());
        assert_eq!(s.exit_code(), ExitCode::Failures);
        assert!(s.render_text().contains("1 failed"));
    }
}
