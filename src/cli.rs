//! The command line as the user types it: flags, defaults and help text (clap derive).
//! Values are parsed by clap (`value_parser`), so a bad one is a usage error naming its
//! flag; [`RunArgs::into_config`] then builds the library's [`Config`].

use crate::commands::Settings;
use crate::config::{Config, Listing};
use crate::error::{ExitCode, FerryError};
use crate::shard::Shard;
use crate::sink::SinkSpec;
use crate::view::{Level, ProgressMode};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// Compress every file under the inputs with gzip and deliver it to a sink, in parallel,
/// within a memory budget, with progress and a summary.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version = build_info(),
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A subcommand; without one, ferry delivers its inputs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The main command's flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// ferry's subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Check every delivered object against the manifest: one gzip member that decodes to
    /// the recorded length and CRC-32.
    Verify(VerifyArgs),
    /// Walk the inputs once and cut them into N file lists balanced by bytes, stored at
    /// the sink; prints the plan id for `ferry --plan ID --shard K/N`.
    Plan(PlanArgs),
    /// Add up the reports every `--shard` run left at the sink: files delivered, skipped
    /// and failed, the bytes, and which shards have not finished.
    Report(ReportArgs),
    /// Bring a delivered tree back: every file the sink's manifest lists, inflated in
    /// parallel, checked against its length and CRC-32, with its mtime, under DEST.
    Restore(RestoreArgs),
    /// Run beside production until stopped: ship what changed since the last run, then
    /// each new or changed file once it has settled (SIGTERM finishes the shipment under
    /// way and exits 0).
    Watch(WatchArgs),
    /// Print a shell completion script, e.g. `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `ferry man > ferry.1; man ./ferry.1`.
    Man,
}

/// `ferry --version`: the version, the gzip engine and the sinks built in.
pub fn build_info() -> &'static str {
    static INFO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INFO.get_or_init(|| {
        let sinks: Vec<&str> = [
            ("dir", true),
            ("sim", true),
            ("s3", cfg!(feature = "s3")),
            ("gs", cfg!(feature = "gcs")),
            ("az", cfg!(feature = "azure")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        format!(
            "{} (gzip engine: {}; sinks: {})",
            env!("CARGO_PKG_VERSION"),
            crate::gzip::ENGINE,
            sinks.join(", ")
        )
    })
}

/// Writes what `ferry completions` and `ferry man` print.
///
/// # Errors
/// Only an error writing to `out`.
pub fn write_generated(command: &Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "ferry", out);
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(cli).render(out),
        Command::Verify(_)
        | Command::Restore(_)
        | Command::Plan(_)
        | Command::Report(_)
        | Command::Watch(_) => Ok(()),
    }
}

/// `ferry watch INPUT… --to SINK`: a run's flags, and when a file has settled.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// As for a run.
    #[command(flatten)]
    pub run: RunArgs,

    /// A file is shipped once its size and mtime have not changed for this long.
    #[arg(long, env = "FERRY_SETTLE", value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub settle: Duration,

    /// Walk everything again this often, for events the kernel dropped or never sends
    /// (NFS); also when it says it dropped some.
    #[arg(long, env = "FERRY_RESCAN", value_name = "DURATION", default_value = "10m", value_parser = duration)]
    pub rescan: Duration,
}

impl WatchArgs {
    /// The watch these flags ask for.
    ///
    /// # Errors
    /// As [`RunArgs::into_config`]; `--dry-run`, `--plan` and `--shard` do not apply.
    pub fn into_watch(self) -> Result<crate::commands::watch::Watch, FerryError> {
        if self.run.dry_run || self.run.plan.is_some() || self.run.shard.is_some() {
            return Err(FerryError::Usage(
                "ferry watch takes no --dry-run, --plan or --shard: it ships as files settle"
                    .into(),
            ));
        }
        let quiet = self.run.show.verbosity.quiet;
        // SIGHUP reads the selection again: the list, the globs and their files.
        let (select, paths) = (self.run.select.clone(), self.run.inputs.clone());
        let reload: crate::commands::watch::Reload =
            Box::new(move || select.clone().into_inputs(paths.clone()));
        let mut config = self.run.into_config()?;
        // What logrotate compressed itself goes as it is, not gzipped twice.
        config = config.gz_as_is();
        Ok(crate::commands::watch::Watch {
            delete: config.delivery().delete,
            reload: Some(reload),
            config,
            settle: self.settle,
            rescan: self.rescan,
            quiet,
        })
    }
}

/// `-q` / `-v`, the same for every command.
#[derive(Debug, Clone, Copy, Args)]
pub struct Verbosity {
    /// More output: -v one line per file, -vv engine events.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print errors only.
    #[arg(short, long)]
    pub quiet: bool,
}

impl Verbosity {
    /// The log level these flags ask for.
    pub fn level(self) -> Level {
        match (self.quiet, self.verbose) {
            (true, _) => Level::Error,
            (false, 0) => Level::Warn,
            (false, 1) => Level::Info,
            _ => Level::Debug,
        }
    }
}

/// How a command shows itself, where it reports and when it gives up: the flags every
/// command takes, the same way.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// Progress bars on stderr.
    #[arg(long, env = "FERRY_PROGRESS", value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,

    /// Colour in the progress view (the bottleneck, failures): `auto` on a terminal
    /// unless NO_COLOR is set.
    #[arg(long, env = "FERRY_COLOR", value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,

    /// `-q` / `-v`.
    #[command(flatten)]
    pub verbosity: Verbosity,

    /// Write what the command found as JSON to FILE (`-` for stdout). For a delivery,
    /// `{shard}` in FILE becomes `K-of-N` (with --shard, the summary is also kept at the
    /// sink for `ferry report`).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Stop the whole command after this long (e.g. `90s`, `5m`); the rest is cancelled.
    #[arg(long, env = "FERRY_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub timeout: Option<Duration>,

    /// Serve the run's metrics for Prometheus at ADDR (e.g. `127.0.0.1:9898`, path
    /// `/metrics`) while it runs: files and bytes by outcome, retries, each stage's work.
    #[arg(long, env = "FERRY_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ShowArgs {
    /// The harness's settings from these flags.
    pub fn settings(&self) -> Settings {
        Settings {
            look: crate::view::Look {
                progress: self.progress.into(),
                color: self.color.into(),
            },
            level: self.verbosity.level(),
            timeout: self.timeout,
            metrics_addr: self.metrics_addr,
        }
    }

    /// Where a dry run lists its files: stderr when the report takes stdout.
    pub fn listing(&self) -> Listing {
        match self.report.as_deref() {
            Some(r) if r.as_os_str() == "-" => Listing::Stderr,
            _ => Listing::Stdout,
        }
    }
}

/// `ferry [OPTIONS] INPUT… --to SINK`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Files or directories to ferry. Keys keep each input's own name, like tar:
    /// `ferry ./logs` delivers `logs/a/b.log` as `logs/a/b.log.gz`. (An input named
    /// `verify` is written `./verify`; so are `completions` and `man`.)
    #[arg(value_name = "INPUT", required_unless_present_any = ["files_from", "plan"])]
    pub inputs: Vec<PathBuf>,

    /// Which files to take.
    #[command(flatten)]
    pub select: SelectArgs,

    /// Where to deliver: `dir:PATH` or a bare path (a local directory),
    /// `s3://bucket/prefix` (AWS S3 or an S3-compatible server), `gs://bucket/prefix`
    /// (Google Cloud Storage), `az://container/prefix` (Azure Blob Storage), or
    /// `sim:latency=…,bandwidth=…,jitter=…,fail=…,seed=…` (a simulated network).
    #[arg(long, env = "FERRY_TO", value_name = "SINK", default_value = "dir:ferry-out", value_parser = sink_spec)]
    pub to: SinkSpec,

    /// Gzip level, 0 (store) to 9 (smallest); `-1` … `-9` work too.
    #[arg(short, long, env = "FERRY_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,

    /// Compress workers [default: available cores].
    #[arg(short, long, env = "FERRY_JOBS", value_name = "N", value_parser = workers)]
    pub jobs: Option<NonZeroUsize>,

    /// Load (file read) workers.
    #[arg(
        long,
        env = "FERRY_LOAD_WORKERS",
        value_name = "N",
        default_value = "2",
        value_parser = workers
    )]
    pub load_workers: NonZeroUsize,

    /// Upload requests in flight, pinned (at most 1024). Unset, ferry decides: 2 into a
    /// local directory; for an object store or sim:, a limit that adapts to what the store
    /// takes (128 at first, up to 4096; small objects' requests wait on 16 threads).
    #[arg(
        long,
        env = "FERRY_UPLOAD_WORKERS",
        value_name = "N",
        value_parser = workers
    )]
    pub upload_workers: Option<NonZeroUsize>,

    /// Capacity of each channel between stages, in messages of up to 32 items (of up
    /// to N items when N is under 32; one item each into the upload stage of a remote
    /// store).
    #[arg(long, env = "FERRY_QUEUE", value_name = "N", default_value = "64")]
    pub queue: NonZeroUsize,

    /// Large files are cut into segments of this size, compressed in parallel.
    #[arg(long, env = "FERRY_SEGMENT_SIZE", value_name = "SIZE", default_value = "1MiB", value_parser = size)]
    pub segment_size: u64,

    /// Most bytes in flight between reading and delivery
    /// [default: the larger of 16MiB and 4 × jobs × segment size; at least 64MiB into a
    /// remote store, where a round trip's worth of files is in flight].
    #[arg(long, env = "FERRY_MEMORY", value_name = "SIZE", value_parser = size)]
    pub memory: Option<u64>,

    /// Rewrite every file, even those unchanged since the last run.
    #[arg(long)]
    pub force: bool,

    /// fsync each output before it becomes visible (durable on power loss; slower).
    #[arg(long, env = "FERRY_FSYNC")]
    pub fsync: bool,

    /// Walk, filter, shard and check the manifest, then list what would be sent and what
    /// skipped, without reading any file's contents or writing to the sink.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Store files as a web server or CDN sends them, not as an archive: each under its
    /// own name with the type of its extension; those of --web-ext gzipped with
    /// `Content-Encoding: gzip` (into dir:, `x.html` unchanged with `x.html.gz` beside
    /// it, as nginx gzip_static serves), the rest unchanged.
    #[arg(long)]
    pub web: bool,

    /// With --web: the extensions whose files are gzipped (comma-separated, no dots).
    #[arg(long, value_name = "EXTS", requires = "web", value_delimiter = ',',
          default_value = crate::form::WEB_EXTS)]
    pub web_ext: Vec<String>,

    /// `Cache-Control` for every object, where the store keeps headers (not dir:).
    #[arg(long, value_name = "VALUE")]
    pub cache_control: Option<String>,

    /// Most bytes a second sent to the sink, by all upload workers together (e.g.
    /// `20MiB/s`), so a run beside production leaves the link to others.
    #[arg(long, env = "FERRY_BWLIMIT", value_name = "RATE", value_parser = rate)]
    pub bwlimit: Option<u64>,

    /// Mirror removals: after the run, remove the objects that earlier runs delivered
    /// under these INPUTs whose sources are gone (only keys in ferry's own history, never
    /// another object; a file left out by a filter is not gone).
    #[arg(long)]
    pub delete: bool,

    /// With --delete: refuse, before anything is sent, a run that would remove more than
    /// N objects (a guard against an unmounted source directory).
    #[arg(long, value_name = "N", requires = "delete")]
    pub max_delete: Option<u64>,

    /// Object store settings.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Storage class (tier) for new objects: S3 STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE …;
    /// GCS NEARLINE, COLDLINE …; Azure Hot, Cool, Cold, Archive.
    #[arg(long, env = "FERRY_STORAGE_CLASS", value_name = "CLASS")]
    pub storage_class: Option<String>,

    /// How it shows itself, reports and gives up.
    #[command(flatten)]
    pub show: ShowArgs,

    /// Fail a file that is not delivered within this long of being opened; the run goes on.
    #[arg(long, env = "FERRY_TASK_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub task_timeout: Option<Duration>,

    /// Retries of a transient sink failure, per operation.
    #[arg(long, env = "FERRY_RETRIES", value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// First retry delay; it doubles on each retry, with jitter.
    #[arg(long, env = "FERRY_RETRY_BACKOFF", value_name = "DURATION", default_value = "200ms", value_parser = duration)]
    pub retry_backoff: Duration,

    /// Journal segment size in files (hidden: tests use a small one to see many flushes).
    #[arg(long, value_name = "N", default_value = "4096", hide = true)]
    pub journal_every: NonZeroUsize,

    /// Take only the files whose key hashes to shard K of N (0 ≤ K < N); N processes with
    /// K = 0…N-1 deliver every file exactly once.
    #[arg(long, env = "FERRY_SHARD", value_name = "K/N")]
    pub shard: Option<Shard>,

    /// Deliver list K of the plan ID made by `ferry plan` (stored at the sink), with
    /// `--shard K/N` and the INPUTs the plan was made from: nothing is walked, files added
    /// since the plan are not taken, and a listed file not under the INPUTs is refused.
    #[arg(long, env = "FERRY_PLAN", value_name = "ID", requires = "shard",
          conflicts_with_all = ["files_from", "include", "exclude", "exclude_from", "min_size", "max_size"])]
    pub plan: Option<String>,
}

/// `ferry plan INPUT… --shards N --to SINK`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Files or directories to plan, as `ferry` would take them.
    #[arg(value_name = "INPUT", required_unless_present = "files_from")]
    pub inputs: Vec<PathBuf>,

    /// Which files to take.
    #[command(flatten)]
    pub select: SelectArgs,

    /// How many lists: the N of the `--shard K/N` each task will run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub shards: u64,

    /// Where the plan is stored, and where the tasks will deliver.
    #[arg(long, env = "FERRY_TO", value_name = "SINK", default_value = "dir:ferry-out", value_parser = sink_spec)]
    pub to: SinkSpec,

    /// Object store settings.
    #[command(flatten)]
    pub store: StoreArgs,

    /// How it shows itself, reports and gives up.
    #[command(flatten)]
    pub show: ShowArgs,
}

impl PlanArgs {
    /// The command from these flags.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for an unreadable `--exclude-from` or store flags on a
    /// local sink.
    pub fn into_command(self) -> Result<crate::commands::plan::Plan, FerryError> {
        Ok(crate::commands::plan::Plan {
            inputs: self.select.into_inputs(self.inputs)?,
            sink: self.store.apply(self.to, None)?,
            shards: self.shards,
            settings: self.show.settings(),
        })
    }
}

/// Which files to take: the flags `ferry` and `ferry plan` share.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectArgs {
    /// Also read paths from FILE (`-` for stdin), one per line.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,

    /// Paths in --files-from are separated by NUL (as `find -print0` writes).
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Follow symbolic links (loops are detected and skipped).
    #[arg(short = 'L', long)]
    pub follow: bool,

    /// Leave out paths matching GLOB (gitignore syntax, relative to each input).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Only take files matching GLOB (gitignore syntax); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Leave out paths matching the globs in FILE, one per line (`#` comments and blank
    /// lines ignored), as --exclude does; repeatable.
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,

    /// Leave out files smaller than SIZE (e.g. `1`, `10KiB`).
    #[arg(long, value_name = "SIZE", value_parser = size_or_zero)]
    pub min_size: Option<u64>,

    /// Leave out files larger than SIZE (e.g. `2GiB`).
    #[arg(long, value_name = "SIZE", value_parser = size_or_zero)]
    pub max_size: Option<u64>,
}

impl SelectArgs {
    /// The library's [`Inputs`](crate::config::Inputs): `paths`, filtered by these flags.
    ///
    /// # Errors
    /// [`FerryError::Usage`] when an `--exclude-from` file cannot be read.
    pub fn into_inputs(self, paths: Vec<PathBuf>) -> Result<crate::config::Inputs, FerryError> {
        let mut exclude = self.exclude;
        for file in &self.exclude_from {
            exclude.extend(read_globs(file)?);
        }
        Ok(crate::config::Inputs {
            paths,
            files_from: self.files_from,
            null_separated: self.null,
            follow: self.follow,
            include: self.include,
            exclude,
            shard: None,
            plan: None,
            min_size: self.min_size,
            max_size: self.max_size,
            only: None,
            gone: None,
        })
    }
}

/// How to reach an object store: flags shared by `ferry` and `ferry verify`.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Send object store requests to URL instead of the cloud's own (MinIO, Ceph, R2,
    /// an emulator); for S3 also AWS_ENDPOINT_URL or the profile's endpoint_url.
    #[arg(long, env = "FERRY_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// S3 addressing: `path` (endpoint/bucket/key) or `virtual` (bucket.endpoint/key)
    /// [default: path with a custom endpoint, virtual for AWS].
    #[arg(long, env = "FERRY_URL_STYLE", value_enum, value_name = "STYLE")]
    pub url_style: Option<crate::sink::UrlStyle>,

    /// The AWS named profile (in ~/.aws/credentials and ~/.aws/config) [default:
    /// AWS_PROFILE, else `default`].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// `ferry verify --to SINK`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The sink to check, as given to `ferry --to`.
    #[arg(long, env = "FERRY_TO", value_name = "SINK", default_value = "dir:ferry-out", value_parser = sink_spec)]
    pub to: SinkSpec,

    /// Object store settings.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Check only the manifest of shard K of N (as written by `ferry --shard K/N`)
    /// [default: every manifest at the sink, all shards].
    #[arg(long, env = "FERRY_SHARD", value_name = "K/N")]
    pub shard: Option<Shard>,

    /// Objects checked at once [default: the cores, at least 4].
    #[arg(short, long, env = "FERRY_JOBS", value_name = "N", value_parser = workers)]
    pub jobs: Option<NonZeroUsize>,

    /// Check only that every object is there at its recorded size, from one listing of
    /// the sink (a request per 1,000 objects; one request per object where the sink does
    /// not list), without reading any object.
    #[arg(long)]
    pub quick: bool,

    /// Store again, without the header, each archive object that earlier builds stored
    /// with `Content-Encoding: gzip` and that checks out: its own bytes, read back from
    /// the store (no source needed), with `Content-Type: application/gzip` alone.
    #[arg(long, conflicts_with = "quick")]
    pub fix_headers: bool,

    /// How it shows itself, reports (`listed`, `checked`, `ok`, `mismatches`) and gives up.
    #[command(flatten)]
    pub show: ShowArgs,
}

impl VerifyArgs {
    /// The command from these flags.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for object store flags on a local sink.
    pub fn into_command(self) -> Result<crate::commands::verify::Verify, FerryError> {
        let mut v = crate::commands::verify::Verify::new(self.store.apply(self.to, None)?);
        v.shard = self.shard;
        v.quick = self.quick;
        v.fix_headers = self.fix_headers;
        if let Some(j) = self.jobs {
            v.workers = j;
        }
        v.settings = self.show.settings();
        Ok(v)
    }
}

/// `ferry report SINK`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The sink the shards delivered to, as given to `ferry --to`.
    #[arg(value_name = "SINK", env = "FERRY_TO", value_parser = sink_spec)]
    pub sink: SinkSpec,

    /// Print the combined report as JSON (the shape of `--report`, with `shards` and
    /// `unfinished`) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Object store settings.
    #[command(flatten)]
    pub store: StoreArgs,

    /// How it shows itself, reports and gives up.
    #[command(flatten)]
    pub show: ShowArgs,
}

impl ReportArgs {
    /// The command from these flags.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for object store flags on a local sink.
    pub fn into_command(self) -> Result<crate::commands::report::Report, FerryError> {
        Ok(crate::commands::report::Report {
            sink: self.store.apply(self.sink, None)?,
            json: self.json,
            settings: self.show.settings(),
        })
    }
}

/// `ferry restore --from SINK DEST`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The sink to restore from, as given to `ferry --to`.
    #[arg(long, env = "FERRY_FROM", value_name = "SINK", value_parser = sink_spec)]
    pub from: SinkSpec,

    /// The directory to restore into (created if missing); each file lands at DEST/KEY.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,

    /// Objects fetched at once [default: the cores for a local sink, 8 for an object
    /// store, whose requests wait on the network].
    #[arg(long, env = "FERRY_DOWNLOAD_WORKERS", value_name = "N", value_parser = workers)]
    pub download_workers: Option<NonZeroUsize>,

    /// Inflate workers [default: available cores].
    #[arg(short, long, env = "FERRY_JOBS", value_name = "N", value_parser = workers)]
    pub jobs: Option<NonZeroUsize>,

    /// Most compressed and inflated bytes held at once [default: 8MiB × jobs].
    #[arg(long, env = "FERRY_MEMORY", value_name = "SIZE", value_parser = size)]
    pub memory: Option<u64>,

    /// Only restore keys matching GLOB (gitignore syntax); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Leave out keys matching GLOB (gitignore syntax); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Restore shard K of N: that shard's manifest, or else the keys of that shard.
    #[arg(long, env = "FERRY_SHARD", value_name = "K/N")]
    pub shard: Option<Shard>,

    /// List what would be restored or skipped; write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Overwrite files that exist and differ (never a directory).
    #[arg(long)]
    pub force: bool,

    /// Give restored files the umask's permission bits instead of the ones recorded at
    /// delivery.
    #[arg(long)]
    pub no_perms: bool,

    /// Running as root, leave restored files owned by root instead of giving them back
    /// their recorded owner and group (as `tar --no-same-owner`).
    #[arg(long)]
    pub no_same_owner: bool,

    /// Object store settings.
    #[command(flatten)]
    pub store: StoreArgs,

    /// How it shows itself, reports and gives up.
    #[command(flatten)]
    pub show: ShowArgs,
}

impl RestoreArgs {
    /// The library's options from these flags.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for object store flags on a local sink.
    pub fn into_command(self) -> Result<crate::commands::restore::Restore, FerryError> {
        let from = self.store.apply(self.from, None)?;
        let mut o = crate::commands::restore::Restore::new(from, self.dest);
        o.include = self.include;
        o.exclude = self.exclude;
        o.shard = self.shard;
        o.dry_run = self.dry_run;
        o.force = self.force;
        o.no_perms = self.no_perms;
        o.no_same_owner = self.no_same_owner;
        o.download_workers = self.download_workers;
        if let Some(j) = self.jobs {
            o.jobs = j;
            o.memory = (8 * j.get() as u64) << 20;
        }
        if let Some(m) = self.memory {
            o.memory = m;
        }
        o.settings = self.show.settings();
        o.listing = self.show.listing();
        Ok(o)
    }
}

/// `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl From<ColorArg> for crate::view::ColorMode {
    fn from(c: ColorArg) -> Self {
        match c {
            ColorArg::Auto => crate::view::ColorMode::Auto,
            ColorArg::Always => crate::view::ColorMode::Always,
            ColorArg::Never => crate::view::ColorMode::Never,
        }
    }
}

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Bars when stderr is a terminal.
    Auto,
    /// Bars on a terminal, plain progress lines elsewhere.
    Always,
    /// No bars.
    Never,
}

impl From<ProgressArg> for ProgressMode {
    fn from(p: ProgressArg) -> Self {
        match p {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Always => ProgressMode::Always,
            ProgressArg::Never => ProgressMode::Never,
        }
    }
}

impl RunArgs {
    /// Builds the run's [`Config`] from the flags.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for settings that only conflict together, such as a
    /// `--memory` smaller than `--segment-size`.
    pub fn into_config(self) -> Result<Config, FerryError> {
        let sink = self.store.apply(self.to, self.storage_class)?;
        let mut b = Config::builder(Vec::new(), sink);
        if let Some(n) = self.upload_workers {
            b = b.upload_workers(n);
        }
        let mut b = b
            .inputs(self.select.into_inputs(self.inputs)?)
            .level(self.level)
            .load_workers(self.load_workers)
            .queue(self.queue)
            .segment_size(self.segment_size)
            .force(self.force)
            .fsync(self.fsync)
            .progress(self.show.progress.into())
            .color(self.show.color.into())
            .log_level(self.show.verbosity.level())
            .retries(self.retries)
            .retry_backoff(self.retry_backoff)
            .journal_every(self.journal_every)
            .dry_run(self.dry_run)
            .web(self.web.then(|| {
                crate::form::Web {
                    exts: (self.web_ext.iter())
                        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect(),
                }
            }))
            .cache_control(self.cache_control)
            .bwlimit(self.bwlimit)
            .delete(self.delete)
            .max_delete(self.max_delete)
            .metrics_addr(self.show.metrics_addr)
            .listing(self.show.listing());
        if let Some(j) = self.jobs {
            b = b.jobs(j);
        }
        if let Some(m) = self.memory {
            b = b.memory(m);
        }
        if let Some(t) = self.show.timeout {
            b = b.timeout(t);
        }
        if let Some(t) = self.task_timeout {
            b = b.task_timeout(t);
        }
        if let Some(s) = self.shard {
            b = b.shard(s);
        }
        if let Some(id) = self.plan {
            b = b.plan(id);
        }
        b.build()
    }
}

impl StoreArgs {
    /// `spec` with these settings (and `storage_class`) applied.
    ///
    /// # Errors
    /// [`FerryError::Usage`] when one is given for a sink that is not an object store.
    pub fn apply(
        self,
        spec: SinkSpec,
        storage_class: Option<String>,
    ) -> Result<SinkSpec, FerryError> {
        let given: Vec<&str> = [
            ("--endpoint-url", self.endpoint_url.is_some()),
            ("--url-style", self.url_style.is_some()),
            ("--profile", self.profile.is_some()),
            ("--storage-class", storage_class.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, on)| on.then_some(flag))
        .collect();
        match spec {
            #[cfg(feature = "cloud")]
            SinkSpec::Cloud(mut c) => {
                c.endpoint = self.endpoint_url;
                c.url_style = self.url_style;
                c.profile = self.profile;
                c.storage_class = storage_class;
                Ok(SinkSpec::Cloud(c))
            }
            other if given.is_empty() => Ok(other),
            _ => Err(FerryError::Usage(format!(
                "{} only apply to an object store (--to s3://, gs://, az://)",
                given.join(", ")
            ))),
        }
    }
}

/// The globs of an `--exclude-from` file: one per line, blank lines and `#` comments
/// left out (gitignore's own rules).
fn read_globs(file: &std::path::Path) -> Result<Vec<String>, FerryError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        FerryError::Usage(format!(
            "--exclude-from {}: {}",
            file.display(),
            crate::words::io_words(&e)
        ))
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Parses the process's arguments. On a usage error clap's message is printed and the
/// exit code returned: 2, or 0 for `--help` / `--version`.
///
/// # Errors
/// The exit code to leave with when there is nothing to run.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse_from(rewrite_level_shorthand(std::env::args_os())).map_err(|e| {
        let _ = e.print();
        match e.use_stderr() {
            true => ExitCode::Usage,
            false => ExitCode::Success,
        }
    })
}

/// `--to`: a sink spec.
fn sink_spec(s: &str) -> Result<SinkSpec, String> {
    SinkSpec::parse(s).map_err(|e| e.to_string())
}

/// A size such as `0`, `10KiB` or `2GiB`.
fn size_or_zero(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{e} (try 0, 10KiB, 2GiB)"))
}

/// A worker count: 1 to [`crate::config::MAX_WORKERS`] (each worker is a thread).
fn workers(s: &str) -> Result<NonZeroUsize, String> {
    let n: NonZeroUsize = s
        .parse()
        .map_err(|e| format!("{e} (a whole number, 1 or more)"))?;
    if n.get() > crate::config::MAX_WORKERS {
        return Err(format!(
            "at most {} (each worker is a thread of its own)",
            crate::config::MAX_WORKERS
        ));
    }
    Ok(n)
}

/// A size such as `1MiB`, `64KiB` or `512K`, more than 0.
fn size(s: &str) -> Result<u64, String> {
    match parse_size::parse_size(s) {
        Ok(0) => Err("must be more than 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (try 1MiB, 64KiB, 512K)")),
    }
}

/// A rate such as `20MiB/s` (the `/s` optional), more than 0.
fn rate(s: &str) -> Result<u64, String> {
    size(s.strip_suffix("/s").unwrap_or(s)).map_err(|e| e.replace("1MiB", "20MiB/s"))
}

/// A duration such as `90s`, `5m` or `1h`, more than 0.
fn duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (try 90s, 5m, 1h)")),
    }
}

/// Rewrites gzip-style `-1` … `-9` (not `-0`, which is `--null`) into `--level=N` before
/// clap sees them (clap would take them for negative numbers or unknown flags). Stops at
/// `--`.
pub fn rewrite_level_shorthand(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut done = false;
    for a in args {
        if !done {
            if a == "--" {
                done = true;
            } else if let Some(s) = a.to_str() {
                let b = s.as_bytes();
                // `-0` is --null (as in xargs), not a level: gzip has no -0 either.
                if b.len() == 2 && b[0] == b'-' && (b'1'..=b'9').contains(&b[1]) {
                    out.push(OsString::from(format!("--level={}", b[1] as char)));
                    continue;
                }
            }
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec!["ferry"];
        all.extend_from_slice(args);
        Cli::try_parse_from(rewrite_level_shorthand(all.into_iter().map(OsString::from)))
    }

    fn config(args: &[&str]) -> Config {
        parse(args).unwrap().run.into_config().unwrap()
    }

    #[test]
    fn digit_flags_become_levels() {
        let args = ["ferry", "-9", "-0", "x", "--", "-1"].map(OsString::from);
        let out = rewrite_level_shorthand(args);
        assert_eq!(
            out,
            ["ferry", "--level=9", "-0", "x", "--", "-1"].map(OsString::from)
        );
        assert_eq!(parse(&["-3", "d"]).unwrap().run.level, 3);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_durations_and_shards_are_parsed() {
        let c = config(&[
            "x",
            "--segment-size",
            "64KiB",
            "--memory",
            "1MiB",
            "--timeout",
            "90s",
        ]);
        assert_eq!(c.tuning().segment_size, 65536);
        assert_eq!(c.tuning().memory, 1 << 20);
        assert_eq!(c.delivery().timeout, Some(Duration::from_secs(90)));
        let c = config(&["x", "--shard", "2/5", "--task-timeout", "3s"]);
        assert_eq!(c.inputs().shard, Some(Shard::new(2, 5).unwrap()));
        assert_eq!(c.delivery().task_timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_bad_value_is_a_usage_error_naming_its_flag() {
        for (args, flag) in [
            (vec!["x", "--segment-size", "lots"], "--segment-size"),
            (vec!["x", "--memory", "0"], "--memory"),
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
            let e = parse(&args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert!(e.to_string().contains(flag), "{args:?}: {e}");
        }
        let e = parse(&["x", "--memory", "1KiB"])
            .unwrap()
            .run
            .into_config()
            .unwrap_err();
        assert!(e.to_string().contains("--memory"), "{e}");
    }

    #[test]
    fn verify_is_a_subcommand_that_takes_quiet_and_verbose() {
        let cli = parse(&["verify", "--to", "dir:x", "-q"]).unwrap();
        let Some(Command::Verify(v)) = cli.command else {
            panic!("not verify")
        };
        assert_eq!(v.show.verbosity.level(), Level::Error);
        assert_eq!(v.to, SinkSpec::Dir("x".into()));
        let cli = parse(&["verify", "-vv", "--shard", "1/2"]).unwrap();
        let Some(Command::Verify(v)) = cli.command else {
            panic!("not verify")
        };
        assert_eq!(v.show.verbosity.level(), Level::Debug);
        assert_eq!(v.shard, Some(Shard::new(1, 2).unwrap()));
    }
}
