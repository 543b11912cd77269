//! The validated, typed configuration of a run, built from the CLI or directly by a
//! library caller.

use crate::cli::{Cli, ProgressArg};
use crate::error::FerryError;
use crate::report::{Level, ProgressMode};
use crate::sink::SinkSpec;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a run needs to know, already checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Files and directories to take.
    pub inputs: Vec<PathBuf>,
    /// A file list to read as well (`-` = stdin).
    pub files_from: Option<PathBuf>,
    /// The file list is NUL-separated.
    pub null_separated: bool,
    /// Where objects go.
    pub sink: SinkSpec,
    /// Gzip level 0–9.
    pub level: u32,
    /// Compress workers.
    pub jobs: usize,
    /// Load workers.
    pub load_workers: usize,
    /// Upload workers.
    pub upload_workers: usize,
    /// Channel capacity between stages.
    pub queue: usize,
    /// Segment size in bytes.
    pub segment_size: u64,
    /// Memory budget for bytes in flight.
    pub memory: u64,
    /// Follow symbolic links.
    pub follow: bool,
    /// `--include` globs.
    pub include: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Rewrite unchanged files.
    pub force: bool,
    /// fsync each output.
    pub fsync: bool,
    /// Progress bars.
    pub progress: ProgressMode,
    /// Log level.
    pub log_level: Level,
    /// Whole-run deadline.
    pub timeout: Option<Duration>,
    /// Where to write the JSON report (`-` = stdout).
    pub report: Option<PathBuf>,
    /// Per-file deadline, from opening to delivery.
    pub task_timeout: Option<Duration>,
    /// Retries of a transient sink failure.
    pub retries: u32,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// `--shard K/N`: this process takes shard K of N.
    pub shard: Option<(u64, u64)>,
}

/// The default memory budget: enough segments in flight to keep every compress worker
/// busy (4 per worker), and at least 16 MiB. More only raises peak RSS, not speed.
pub fn default_memory(jobs: usize, segment_size: u64) -> u64 {
    (4 * jobs as u64 * segment_size).max(16 << 20)
}

/// Parses `--shard K/N` with `0 ≤ K < N`.
///
/// # Errors
/// [`FerryError::Usage`] naming the flag.
pub fn parse_shard(s: &str) -> Result<(u64, u64), FerryError> {
    let bad = || {
        FerryError::Usage(format!(
            "--shard '{s}': expected K/N with 0 <= K < N, e.g. 0/4"
        ))
    };
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (u64, u64) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Available cores, at least 1.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Defaults for `inputs` delivered to `sink`, as the CLI would have them.
    pub fn new(inputs: Vec<PathBuf>, sink: SinkSpec) -> Self {
        Config {
            inputs,
            files_from: None,
            null_separated: false,
            sink,
            level: 6,
            jobs: cores(),
            load_workers: 2,
            upload_workers: 2,
            queue: 64,
            segment_size: 1 << 20,
            memory: default_memory(cores(), 1 << 20),
            follow: false,
            include: Vec::new(),
            exclude: Vec::new(),
            force: false,
            fsync: false,
            progress: ProgressMode::Never,
            log_level: Level::Warn,
            timeout: None,
            report: None,
            task_timeout: None,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            shard: None,
        }
    }

    /// Validates the parsed command line.
    ///
    /// # Errors
    /// [`FerryError::Usage`] naming the flag and what is wrong with its value.
    pub fn from_cli(cli: Cli) -> Result<Self, FerryError> {
        let usage = |m: String| FerryError::Usage(m);
        let size = |flag: &str, v: &str| -> Result<u64, FerryError> {
            let n = parse_size::parse_size(v)
                .map_err(|e| usage(format!("--{flag} '{v}': {e} (try 1MiB, 64KiB, 512K)")))?;
            if n == 0 {
                return Err(usage(format!("--{flag} must be more than 0")));
            }
            Ok(n)
        };
        let positive = |flag: &str, n: usize| -> Result<usize, FerryError> {
            if n == 0 {
                Err(usage(format!("--{flag} must be at least 1")))
            } else {
                Ok(n)
            }
        };
        let segment_size = size("segment-size", &cli.segment_size)?;
        let jobs = positive("jobs", cli.jobs.unwrap_or_else(cores))?;
        let memory = match &cli.memory {
            None => default_memory(jobs, segment_size),
            Some(m) => {
                let memory = size("memory", m)?;
                if memory < segment_size {
                    return Err(usage(format!(
                        "--memory ({m}) must be at least --segment-size ({})",
                        cli.segment_size
                    )));
                }
                memory
            }
        };
        let duration = |flag: &str, t: &str| -> Result<Duration, FerryError> {
            let d = humantime::parse_duration(t)
                .map_err(|e| usage(format!("--{flag} '{t}': {e} (try 90s, 5m, 1h)")))?;
            if d.is_zero() {
                return Err(usage(format!("--{flag} must be more than 0")));
            }
            Ok(d)
        };
        let timeout = cli
            .timeout
            .as_deref()
            .map(|t| duration("timeout", t))
            .transpose()?;
        let task_timeout = cli
            .task_timeout
            .as_deref()
            .map(|t| duration("task-timeout", t))
            .transpose()?;
        let retry_backoff = duration("retry-backoff", &cli.retry_backoff)?;
        let shard = cli.shard.as_deref().map(parse_shard).transpose()?;
        let sink = SinkSpec::parse(&cli.to).map_err(|e| usage(format!("--to: {e}")))?;
        Ok(Config {
            inputs: cli.inputs,
            files_from: cli.files_from,
            null_separated: cli.null,
            sink,
            level: cli.level,
            jobs,
            load_workers: positive("load-workers", cli.load_workers)?,
            upload_workers: positive("upload-workers", cli.upload_workers)?,
            queue: positive("queue", cli.queue)?,
            segment_size,
            memory,
            follow: cli.follow,
            include: cli.include,
            exclude: cli.exclude,
            force: cli.force,
            fsync: cli.fsync,
            progress: match cli.progress {
                ProgressArg::Auto => ProgressMode::Auto,
                ProgressArg::Always => ProgressMode::Always,
                ProgressArg::Never => ProgressMode::Never,
            },
            log_level: match (cli.quiet, cli.verbose) {
                (true, _) => Level::Error,
                (false, 0) => Level::Warn,
                (false, 1) => Level::Info,
                _ => Level::Debug,
            },
            timeout,
            report: cli.report,
            task_timeout,
            retries: cli.retries,
            retry_backoff,
            shard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, FerryError> {
        let mut all = vec!["ferry"];
        all.extend_from_slice(args);
        Config::from_cli(Cli::try_parse_from(all).unwrap())
    }

    #[test]
    fn sizes_durations_and_counts_are_checked() {
        let c = parse(&[
            "x",
            "--segment-size",
            "64KiB",
            "--memory",
            "1MiB",
            "--timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(c.segment_size, 65536);
        assert_eq!(c.memory, 1 << 20);
        assert_eq!(c.timeout, Some(Duration::from_secs(90)));
        let c = parse(&[
            "x",
            "--shard",
            "2/5",
            "--task-timeout",
            "3s",
            "--retries",
            "0",
        ])
        .unwrap();
        assert_eq!(c.shard, Some((2, 5)));
        assert_eq!(c.task_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.retries, 0);
        for (args, flag) in [
            (vec!["x", "--segment-size", "lots"], "--segment-size"),
            (vec!["x", "--memory", "0"], "--memory"),
            (vec!["x", "--memory", "1KiB"], "--memory"),
            (vec!["x", "--timeout", "soon"], "--timeout"),
            (vec!["x", "--jobs", "0"], "--jobs"),
            (vec!["x", "--queue", "0"], "--queue"),
            (vec!["x", "--to", "nope://x"], "--to"),
            (vec!["x", "--to", "sim:fail=3"], "--to"),
            (vec!["x", "--task-timeout", "0s"], "--task-timeout"),
            (vec!["x", "--retry-backoff", "x"], "--retry-backoff"),
            (vec!["x", "--shard", "4/4"], "--shard"),
            (vec!["x", "--shard", "1"], "--shard"),
        ] {
            let e = parse(&args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
