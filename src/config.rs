//! The validated, typed configuration of a run, in four groups: what to read
//! ([`Inputs`]), how hard to work ([`Tuning`]), where and how to deliver ([`Delivery`]),
//! and what to show ([`Output`]). Built with [`Config::builder`], by the CLI or a library
//! caller alike.

use crate::error::FerryError;
use crate::shard::Shard;
use crate::sink::SinkSpec;
use crate::view::{Level, ProgressMode};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// What to read.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Files and directories to take.
    pub paths: Vec<PathBuf>,
    /// A file list to read as well (`-` = stdin).
    pub files_from: Option<PathBuf>,
    /// The file list is NUL-separated.
    pub null_separated: bool,
    /// Follow symbolic links.
    pub follow: bool,
    /// `--include` globs.
    pub include: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// `--shard K/N`: take only the keys of this shard.
    pub shard: Option<Shard>,
    /// `--plan ID`: take list K of this `ferry plan` (stored at the sink) instead of
    /// walking; `shard` then names the list, not a hash.
    pub plan: Option<String>,
    /// `--min-size`: leave out regular files smaller than this many bytes.
    pub min_size: Option<u64>,
    /// `--max-size`: leave out regular files larger than this many bytes.
    pub max_size: Option<u64>,
    /// Only these files (path, key), named by `ferry watch` with the keys a walk of the
    /// inputs gives them: nothing is walked, and a path not under an input is refused.
    pub only: Option<std::sync::Arc<Vec<(PathBuf, PathBuf)>>>,
    /// With `only` and `--delete`: the keys `ferry watch` saw gone (a file, or a directory
    /// and all below it) and still gone once settled; only their entries' objects are
    /// removed. A shipment of `only` without it removes nothing.
    pub gone: Option<std::sync::Arc<Vec<PathBuf>>>,
}

/// How hard to work, and within what memory.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Gzip level 0–9.
    pub level: u32,
    /// Compress workers.
    pub jobs: NonZeroUsize,
    /// Load workers.
    pub load_workers: NonZeroUsize,
    /// Upload requests in flight, pinned by `--upload-workers`; `None` lets ferry decide:
    /// [`LOCAL_UPLOADS`] into a local directory, an adaptive limit up to [`MAX_UPLOADS`]
    /// for a remote store.
    pub upload_workers: Option<NonZeroUsize>,
    /// Channel capacity between stages.
    pub queue: NonZeroUsize,
    /// Segment size in bytes (more than 0).
    pub segment_size: u64,
    /// Memory budget for bytes in flight (at least one segment).
    pub memory: u64,
}

/// Where objects go and how hard to try.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where objects go.
    pub sink: SinkSpec,
    /// Rewrite unchanged files.
    pub force: bool,
    /// fsync each output.
    pub fsync: bool,
    /// Retries of a transient sink failure.
    pub retries: u32,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Whole-run deadline.
    pub timeout: Option<Duration>,
    /// Per-file deadline, from opening to delivery.
    pub task_timeout: Option<Duration>,
    /// Deliveries per journal segment, at most (a segment is also saved every second).
    pub journal_every: NonZeroUsize,
    /// `--dry-run`: decide and list what would be sent or skipped; read no file contents
    /// and write nothing to the sink.
    pub dry_run: bool,
    /// `--web`: store files as a web server sends them (see [`crate::form::Form`]).
    pub web: Option<crate::form::Web>,
    /// `--cache-control`: each object's `Cache-Control`, where the sink keeps headers.
    pub cache_control: Option<String>,
    /// `--bwlimit`: most bytes a second sent to the sink, by all upload workers together.
    pub bwlimit: Option<u64>,
    /// `--delete`: remove the objects of earlier deliveries under these inputs whose
    /// sources are gone.
    pub delete: bool,
    /// `--max-delete`: refuse a run that would remove more objects than this.
    pub max_delete: Option<u64>,
    /// Files named `*.gz` go as they are, under their own name, not gzipped again (`ferry
    /// watch`: what logrotate compressed itself).
    pub gz_as_is: bool,
}

/// What to show while running.
#[derive(Debug, Clone)]
pub struct Output {
    /// Progress bars.
    pub progress: ProgressMode,
    /// Log level.
    pub log_level: Level,
    /// Where a dry run lists its files.
    pub listing: Listing,
    /// Whether the progress view uses colour.
    pub color: crate::view::ColorMode,
    /// `--metrics-addr`: where the run's metrics are served for Prometheus.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Where a dry run lists its files: stdout, unless the JSON report goes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Everything a run needs to know, already checked. Build it with [`Config::builder`].
#[derive(Debug, Clone)]
pub struct Config {
    inputs: Inputs,
    tuning: Tuning,
    delivery: Delivery,
    output: Output,
}

/// The most workers a stage may have: each is an OS thread, and a typo such as
/// `--upload-workers 100000` must be a usage error, not minutes of thread creation.
pub const MAX_WORKERS: usize = 1024;

/// Uploads in flight into a local directory unless pinned: a disk gains nothing from more.
pub const LOCAL_UPLOADS: NonZeroUsize = nz(2);

/// The adaptive upload limit for a remote store: its lowest, and where it starts when
/// each request holds a thread. The highest is [`MAX_UPLOADS`], for the threads it needs.
pub const REMOTE_UPLOADS: (usize, usize) = (2, 32);

/// Where it starts when requests hold no thread (deferred commits): as s5cmd's 256
/// workers, a store takes this many from one client, and each step of the limit's start
/// costs two round trips, so starting higher hides the first second's latency.
pub const DEFERRED_UPLOADS_START: usize = 128;
/// The highest the adaptive upload limit goes where each request holds a thread.
pub const MAX_UPLOADS: usize = MAX_WORKERS;

/// The highest it goes where a request holds no thread (a deferred commit): at 100 ms a
/// round trip, 20,000 small files in under two seconds need more than 1,024 in flight.
/// Each is a connection, so it is also kept to a quarter of the open files allowed.
pub const MAX_DEFERRED_UPLOADS: usize = 4096;

/// How many files the process may have open (its soft `RLIMIT_NOFILE`), once raised to
/// the hard limit (at most 65,536): sockets of requests in flight count.
pub fn open_files_allowed() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write to and read from a valid rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = lim.rlim_max.min(65_536);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// The upload threads into a store whose commits are answered without a thread (a
/// deferred commit holds none): enough for what still blocks (a big object's parts, a
/// retry's pause), however many requests are in flight. Measured on 2 cores: 8 and 16
/// are alike, 32 and 64 cost system time in wake-ups (20,000 small files, `sim:` with no
/// latency, 1.07 s at 16 and 1.13–1.20 s at 64).
pub const DEFERRING_UPLOAD_THREADS: NonZeroUsize = nz(16);

/// The most items a channel between stages may hold (its slots are allocated up front).
pub const MAX_QUEUE: usize = 1 << 20;

/// The default memory budget: enough segments in flight to keep every compress worker
/// busy (4 per worker), and at least 16 MiB. Into a local directory more only raises peak
/// RSS, not speed.
pub fn default_memory(jobs: NonZeroUsize, segment_size: u64) -> u64 {
    (4 * jobs.get() as u64 * segment_size).max(16 << 20)
}

/// The least default memory budget into a remote store (`sim:`, S3, GCS, Azure): what is
/// in flight there is the link's rate times its round trip, and 16 MiB held only about
/// 2,400 small files, fewer than 100 ms at 20,000 files/s needs. 64 MiB let 20,000 small
/// files to `sim:` at a 100 ms round trip go in 1.58–1.64 s, against 1.71–1.90 s.
pub const REMOTE_MEMORY: u64 = 64 << 20;

/// Available cores, at least 1.
pub fn cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

impl Config {
    /// The same run, storing files named `*.gz` as they are, under their own name (`ferry
    /// watch`: a log that logrotate compressed itself is not gzipped twice).
    pub fn gz_as_is(mut self) -> Self {
        self.delivery.gz_as_is = true;
        self
    }

    /// The same run, serving no metrics of its own (`ferry watch` serves its shipments').
    pub fn serving_no_metrics(mut self) -> Self {
        self.output.metrics_addr = None;
        self
    }

    /// The same delivery with the selection `inputs` (`ferry watch`, read again on SIGHUP).
    pub fn with_inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = inputs;
        self
    }

    /// The same run, taking only `files` (path, key) instead of walking the inputs.
    pub fn only(mut self, files: std::sync::Arc<Vec<(PathBuf, PathBuf)>>) -> Self {
        self.inputs.only = Some(files);
        self
    }

    /// The same run, with `--delete` removing only the objects of `keys` (and of all
    /// below a key that was a directory), which `ferry watch` saw gone.
    pub fn gone(mut self, keys: std::sync::Arc<Vec<PathBuf>>) -> Self {
        self.inputs.gone = Some(keys);
        self
    }

    /// A builder with the CLI's defaults, for `inputs` delivered to `sink`.
    ///
    /// ```
    /// use ferry::{Config, sink::SinkSpec};
    /// let config = Config::builder(vec!["logs".into()], SinkSpec::Dir("out".into()))
    ///     .level(9)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.tuning().level, 9);
    /// ```
    pub fn builder(inputs: Vec<PathBuf>, sink: SinkSpec) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                inputs: Inputs {
                    paths: inputs,
                    files_from: None,
                    null_separated: false,
                    follow: false,
                    include: Vec::new(),
                    exclude: Vec::new(),
                    shard: None,
                    plan: None,
                    min_size: None,
                    max_size: None,
                    only: None,
                    gone: None,
                },
                tuning: Tuning {
                    level: 6,
                    jobs: cores(),
                    load_workers: nz(2),
                    upload_workers: None,
                    queue: nz(64),
                    segment_size: 1 << 20,
                    memory: 0,
                },
                delivery: Delivery {
                    sink,
                    force: false,
                    fsync: false,
                    retries: 3,
                    retry_backoff: Duration::from_millis(200),
                    timeout: None,
                    task_timeout: None,
                    journal_every: nz(crate::history::journal::FLUSH_RECORDS),
                    dry_run: false,
                    web: None,
                    cache_control: None,
                    bwlimit: None,
                    delete: false,
                    max_delete: None,
                    gz_as_is: false,
                },
                output: Output {
                    progress: ProgressMode::Never,
                    log_level: Level::Warn,
                    listing: Listing::Stdout,
                    color: crate::view::ColorMode::Auto,
                    metrics_addr: None,
                },
            },
            memory: None,
        }
    }

    /// What to read.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// How hard to work.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Where and how to deliver.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// What to show.
    pub fn output(&self) -> &Output {
        &self.output
    }
}

/// Builds a [`Config`]: every setting has the CLI's default until set.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
    /// `--memory`, when given; else the default follows jobs and segment size.
    memory: Option<u64>,
}

macro_rules! setters {
    ($($group:ident . $field:ident : $ty:ty, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$group.$field = value;
                self
            }
        )*
    };
}

impl ConfigBuilder {
    setters! {
        inputs.null_separated: bool, "The `--files-from` list is NUL-separated.";
        inputs.follow: bool, "Follow symbolic links.";
        inputs.include: Vec<String>, "Take only paths matching these globs.";
        inputs.exclude: Vec<String>, "Leave out paths matching these globs.";
        inputs.min_size: Option<u64>, "Leave out regular files smaller than this.";
        inputs.max_size: Option<u64>, "Leave out regular files larger than this.";
        tuning.level: u32, "Gzip level 0–9.";
        tuning.jobs: NonZeroUsize, "Compress workers.";
        tuning.load_workers: NonZeroUsize, "Load workers.";
        tuning.queue: NonZeroUsize, "Channel capacity between stages.";
        tuning.segment_size: u64, "Segment size in bytes.";
        delivery.force: bool, "Rewrite files even if unchanged since the last run.";
        delivery.fsync: bool, "fsync each output before it becomes visible.";
        delivery.retries: u32, "Retries of a transient sink failure.";
        delivery.retry_backoff: Duration, "First retry delay.";
        delivery.journal_every: NonZeroUsize, "Deliveries per journal segment, at most.";
        delivery.dry_run: bool, "Only list what would be sent or skipped.";
        delivery.web: Option<crate::form::Web>, "Store files as a web server sends them.";
        delivery.cache_control: Option<String>, "Each object's `Cache-Control`.";
        delivery.bwlimit: Option<u64>, "Most bytes a second sent to the sink.";
        delivery.delete: bool, "Remove objects whose sources are gone.";
        delivery.max_delete: Option<u64>, "Refuse a run that would remove more objects.";
        delivery.gz_as_is: bool, "Files named `*.gz` go as they are.";
        output.progress: ProgressMode, "When to draw progress bars.";
        output.log_level: Level, "How much to log.";
        output.listing: Listing, "Where a dry run lists its files.";
        output.color: crate::view::ColorMode, "Whether the progress view uses colour.";
        output.metrics_addr: Option<std::net::SocketAddr>, "Serve the metrics for Prometheus here.";
    }

    /// Also reads paths from this file (`-` for stdin).
    pub fn files_from(mut self, list: PathBuf) -> Self {
        self.config.inputs.files_from = Some(list);
        self
    }

    /// Takes what these inputs name, with their filters (keeps `shard` and `plan`).
    pub fn inputs(mut self, inputs: crate::config::Inputs) -> Self {
        let (shard, plan) = (self.config.inputs.shard, self.config.inputs.plan.take());
        self.config.inputs = Inputs {
            shard,
            plan,
            ..inputs
        };
        self
    }

    /// Takes list K (of `shard` K/N) of plan `id` at the sink, walking nothing.
    pub fn plan(mut self, id: String) -> Self {
        self.config.inputs.plan = Some(id);
        self
    }

    /// Takes only the keys of this shard.
    pub fn shard(mut self, shard: Shard) -> Self {
        self.config.inputs.shard = Some(shard);
        self
    }

    /// Pins the upload requests in flight at `n` (`--upload-workers`), instead of letting
    /// ferry decide (and, for a remote store, adapt).
    pub fn upload_workers(mut self, n: NonZeroUsize) -> Self {
        self.config.tuning.upload_workers = Some(n);
        self
    }

    /// The memory budget in bytes; by default it follows `--jobs` and the segment size.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Cancels the whole run after this long.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.config.delivery.timeout = Some(after);
        self
    }

    /// Fails a file not delivered within this long of being opened.
    pub fn task_timeout(mut self, after: Duration) -> Self {
        self.config.delivery.task_timeout = Some(after);
        self
    }

    /// Checks the settings together and returns the config.
    ///
    /// # Errors
    /// [`FerryError::Usage`] naming the flag: a level above 9, a zero segment size or
    /// duration, or a memory budget smaller than one segment.
    pub fn build(self) -> Result<Config, FerryError> {
        let mut c = self.config;
        let usage = |m: String| Err(FerryError::Usage(m));
        let t = &mut c.tuning;
        if t.level > 9 {
            return usage(format!("--level {}: must be 0 to 9", t.level));
        }
        if t.segment_size == 0 {
            return usage("--segment-size must be more than 0".into());
        }
        if t.segment_size > crate::history::manifest::MAX_SEGMENT {
            return usage(format!(
                "--segment-size ({} bytes) must be at most 1GiB",
                t.segment_size
            ));
        }
        for (flag, n) in [
            ("--jobs", t.jobs),
            ("--load-workers", t.load_workers),
            (
                "--upload-workers",
                t.upload_workers.unwrap_or(NonZeroUsize::MIN),
            ),
        ] {
            if n.get() > MAX_WORKERS {
                return usage(format!(
                    "{flag} {n}: at most {MAX_WORKERS} (each worker is a thread of its own)"
                ));
            }
        }
        if t.queue.get() > MAX_QUEUE {
            return usage(format!("--queue {}: at most {MAX_QUEUE}", t.queue));
        }
        if let Some(rate) = c.delivery.bwlimit {
            if let Err(why) = crate::bwlimit::BwLimit::new(rate) {
                return usage(format!("--bwlimit {rate}: {why}"));
            }
        }
        let remote = !matches!(c.delivery.sink, SinkSpec::Dir(_));
        t.memory = match self.memory {
            None if remote => default_memory(t.jobs, t.segment_size).max(REMOTE_MEMORY),
            None => default_memory(t.jobs, t.segment_size),
            Some(m) if m < t.segment_size => {
                return usage(format!(
                    "--memory ({m} bytes) must be at least --segment-size ({} bytes)",
                    t.segment_size
                ))
            }
            Some(m) => m,
        };
        if let (Some(min), Some(max)) = (c.inputs.min_size, c.inputs.max_size) {
            if min > max {
                return usage(format!(
                    "--min-size ({min} bytes) is larger than --max-size ({max} bytes)"
                ));
            }
        }
        let d = &c.delivery;
        for (flag, value) in [
            ("timeout", d.timeout),
            ("task-timeout", d.task_timeout),
            ("retry-backoff", Some(d.retry_backoff)),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                return usage(format!("--{flag} must be more than 0"));
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ConfigBuilder {
        Config::builder(vec!["x".into()], SinkSpec::Dir("out".into()))
    }

    #[test]
    fn memory_follows_jobs_and_segments_unless_set() {
        let c = builder().jobs(nz(8)).segment_size(4 << 20).build().unwrap();
        assert_eq!(c.tuning().memory, 128 << 20);
        let c = builder().memory(1 << 20).build().unwrap();
        assert_eq!(c.tuning().memory, 1 << 20);
        // Into a remote store, at least what a round trip's worth of small files needs.
        let sim = || {
            let spec = SinkSpec::parse("sim:latency=50ms").unwrap();
            Config::builder(vec!["x".into()], spec)
        };
        let c = sim().build().unwrap();
        assert_eq!(c.tuning().memory, REMOTE_MEMORY);
        let c = sim().jobs(nz(32)).build().unwrap();
        assert_eq!(c.tuning().memory, 128 << 20);
        let c = sim().memory(1 << 20).build().unwrap();
        assert_eq!(c.tuning().memory, 1 << 20);
    }

    #[test]
    fn settings_that_conflict_are_refused_naming_the_flag() {
        let e = |b: ConfigBuilder| b.build().unwrap_err().to_string();
        assert!(e(builder().level(10)).contains("--level"));
        assert!(e(builder().segment_size(0)).contains("--segment-size"));
        assert!(e(builder().memory(1024)).contains("--memory"));
        assert!(e(builder().timeout(Duration::ZERO)).contains("--timeout"));
    }
}
