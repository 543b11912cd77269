//! ferry's commands, and the one harness they all run through.
//!
//! Every command is the same sequence, written once here ([`execute`]):
//!
//! ```text
//! open (sink → history) → build (stages on the engine) → reporter → wait → finish
//!     → what it found (text, JSON report, exit code)
//! ```
//!
//! A command supplies its three steps ([`Command::open`], [`Command::build`],
//! [`Command::finish`]) and says what it found ([`Finished`]); the harness owns what the
//! user sees around them: Ctrl-C (the first cancels, the second quits), `--timeout`, the
//! progress view (`--progress`, `--color`), the log level (`-q`, `-v`), the summary,
//! `--report` and the exit code.

pub mod deliver;
pub mod plan;
pub mod renamed;
pub mod report;
pub mod restore;
pub mod verify;
pub mod watch;

use crate::counters::Counters;
use crate::error::{ExitCode, FerryError};
use crate::pipeline::{CancelReason, CancelToken, Pipeline, StageMetrics};
use crate::view::{Level, Log, Look, Reporter, Sample};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every command takes from its caller, besides its own options: how it shows
/// itself, and when it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Progress bars and colour.
    pub look: Look,
    /// How much to log.
    pub level: Level,
    /// `--timeout`: stop the whole command after this long.
    pub timeout: Option<Duration>,
    /// `--metrics-addr`: serve the run's metrics for Prometheus here while it runs.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for Settings {
    /// No bars, warnings and errors, no deadline: what a library caller wants.
    fn default() -> Self {
        Settings {
            look: Look {
                progress: crate::view::ProgressMode::Never,
                color: crate::view::ColorMode::Auto,
            },
            level: Level::Warn,
            timeout: None,
            metrics_addr: None,
        }
    }
}

/// What the harness gives a command's steps: the token, the counters the progress view
/// reads, and the log.
pub struct Session {
    /// Cancelled by Ctrl-C, `--timeout` or the caller.
    pub cancel: CancelToken,
    /// The command's counters of files and bytes.
    pub metrics: Arc<Counters>,
    /// Where workers log; lines wait until the reporter starts.
    pub log: Log,
}

/// How the engine ended, for a command's last step.
pub struct Ended {
    /// Each stage's metrics, source first.
    pub stages: Vec<Arc<StageMetrics>>,
    /// One sample a second of the progress view.
    pub timeline: Vec<Sample>,
    /// Since the command started.
    pub elapsed: Duration,
    /// Why it stopped early, if it did.
    pub cancelled: Option<CancelReason>,
}

/// One of ferry's commands, as three steps the harness runs in order.
pub trait Command {
    /// What the command holds once its sink is open and its history read.
    type Opened;
    /// What its collectors hand back.
    type Collected;
    /// What it found.
    type Done: Finished;

    /// How it shows itself and when it gives up.
    fn settings(&self) -> Settings;

    /// Opens the sink and reads what it remembers. Nothing of the user's is read or
    /// written before this succeeds.
    ///
    /// # Errors
    /// Bad input, an unusable sink, a damaged history.
    fn open(&self, s: &Session) -> Result<Self::Opened, FerryError>;

    /// Declares the command's stages on the engine.
    ///
    /// # Errors
    /// When a stage cannot start (the harness still waits for those that did).
    fn build(
        &self,
        opened: &mut Self::Opened,
        engine: &mut Pipeline,
        s: &Session,
    ) -> Result<Self::Collected, FerryError>;

    /// Turns what was collected into what the command found; runs even when a producer
    /// failed, so what was opened is closed as it should be (the producer's error wins).
    ///
    /// # Errors
    /// When the command has no result to show (an interrupted plan).
    fn finish(
        &self,
        opened: Self::Opened,
        collected: Self::Collected,
        ended: Ended,
        s: &Session,
    ) -> Result<Self::Done, FerryError>;
}

/// What a command found, as the user sees it.
pub trait Finished {
    /// The summary, for stderr (not shown with `-q`).
    fn render_text(&self) -> String;
    /// The `--report` JSON.
    fn to_json(&self) -> String;
    /// How the command went.
    fn exit_code(&self) -> ExitCode;
    /// A line for stdout, for scripts (`ferry plan`'s plan id).
    fn stdout(&self) -> Option<String> {
        None
    }
}

/// Runs `cmd`: open → build → report → wait → finish. Stops early, cleanly, when `cancel`
/// is cancelled or the command's `--timeout` runs out.
///
/// # Errors
/// What [`Command::open`] or [`Command::finish`] return, a producer's own error, or a
/// setup error when the `--timeout` watchdog cannot start.
pub fn execute<C: Command>(cmd: &C, cancel: CancelToken) -> Result<C::Done, FerryError> {
    execute_observed(cmd, cancel, &|_, _| {})
}

/// What a caller that runs commands one after another is shown of each as it starts: its
/// stages' metrics and its counters, live (`ferry watch` serves them to Prometheus).
pub type Observer<'a> = &'a dyn Fn(&[Arc<StageMetrics>], &Arc<Counters>);

/// [`execute`], showing `observe` the run's stages and counters once it is built.
///
/// # Errors
/// As [`execute`].
pub fn execute_observed<C: Command>(
    cmd: &C,
    cancel: CancelToken,
    observe: Observer,
) -> Result<C::Done, FerryError> {
    let started = Instant::now();
    let settings = cmd.settings();
    let _deadline = start_deadline(&cancel, settings.timeout)?;
    // Bound before anything starts: a port in use is a setup error, not a failure mid-run.
    let metrics_listener = match settings.metrics_addr {
        None => None,
        Some(addr) => Some(crate::view::exporter::bind(addr).map_err(|e| {
            FerryError::setup(format!(
                "--metrics-addr {addr}: {}",
                crate::words::io_words(&e)
            ))
        })?),
    };
    let (log, lines) = Log::pending(settings.level);
    let session = Session {
        cancel: cancel.clone(),
        metrics: Arc::new(Counters::default()),
        log,
    };
    let mut opened = cmd.open(&session).map_err(|e| match cancel.reason() {
        // Ctrl-C while the sink was opened or the history read: that, not what it broke.
        Some(CancelReason::Interrupted) => {
            FerryError::Interrupted(format!("interrupted before it started ({e})"))
        }
        _ => e,
    })?;
    let mut engine = Pipeline::new(cancel.clone());
    if session.log.enabled(Level::Debug) {
        let l = session.log.clone();
        engine.observe(move |e| l.debug(|| e.to_string()));
    }
    let built = cmd.build(&mut opened, &mut engine, &session);
    let stages = engine.metrics();
    observe(&stages, &session.metrics);
    let _exporter = match metrics_listener {
        None => None,
        Some(listener) => {
            let (st, m) = (stages.clone(), session.metrics.clone());
            let render = move || crate::view::exporter::render(&st, &m, started, &[]);
            let ex = crate::view::exporter::Exporter::start(listener, Arc::new(render))
                .map_err(|e| FerryError::setup(format!("--metrics-addr: {e}")))?;
            let at = ex.addr();
            session
                .log
                .info(|| format!("[metrics] serving http://{at}/metrics"));
            Some(ex)
        }
    };
    let reporter = Reporter::start(
        lines,
        settings.level,
        stages.clone(),
        session.metrics.clone(),
        settings.look,
    );
    // Even when building failed part-way, wait for what was started to drain.
    let waited = engine.wait();
    // A producer's own error, or a panic outside any one file (a producer's, a worker's
    // setup, a collector's), is the command's error: files may be missing from what it
    // found. (A panic on a file's work fails that file alone, inside its stage.)
    let failed = waited.err().map(FerryError::from);
    let timeline = reporter.finish();
    let ended = Ended {
        stages,
        timeline,
        elapsed: started.elapsed(),
        cancelled: cancel.reason(),
    };
    let done = cmd.finish(opened, built?, ended, &session);
    // The producer's error is the cause; what finishing made of its absence is not.
    match failed {
        Some(e) => Err(e),
        None => done,
    }
}

/// Runs `cmd` for the `ferry` binary: Ctrl-C and SIGTERM cancel it (a second one quits),
/// a write past `ulimit -f` fails its file instead of killing ferry; then prints what it
/// found (unless `quiet`), writes `report`, and returns the exit code.
///
/// # Errors
/// As [`execute`].
pub fn main<C: Command>(
    cmd: &C,
    quiet: bool,
    report: Option<&Path>,
) -> Result<ExitCode, FerryError> {
    let cancel = CancelToken::new();
    crate::interrupt::cancel_on_ctrl_c(&cancel);
    crate::interrupt::ignore_file_size_signal();
    let done = execute(cmd, cancel)?;
    if let Some(text) = done.stdout() {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // Names in it shown with control characters escaped; a closed pipe
        // (`ferry report … | head`) is not an error.
        for line in text.lines() {
            if writeln!(out, "{}", crate::words::escaped(line)).is_err() {
                break;
            }
        }
    }
    if !quiet {
        // Names in it (keys, failures) shown with control characters escaped.
        for line in done.render_text().lines() {
            eprintln!("{}", crate::words::escaped(line));
        }
    }
    let reported = report.map_or(ExitCode::Success, |r| {
        crate::view::write_json(r, &done.to_json())
    });
    Ok(done.exit_code().max(reported))
}

/// Ends a command's flow of outcomes in the collector every command shares: one
/// `record` worker counting into `ledger`.
///
/// # Errors
/// When its thread cannot start.
pub fn record(
    flow: crate::pipeline::Flow<'_, crate::task::Outcome>,
    ledger: crate::ledger::Ledger,
) -> Result<crate::pipeline::Collected<crate::ledger::Ledger>, FerryError> {
    Ok(flow.collect(
        "record",
        std::num::NonZeroUsize::MIN,
        move |_| ledger.clone(),
        crate::ledger::Ledger::record,
    )?)
}

/// Starts the `--timeout` watchdog; it stops when the returned sender is dropped.
///
/// # Errors
/// A setup error when its thread cannot start: a deadline that silently would not fire
/// is worse than none.
fn start_deadline(
    cancel: &CancelToken,
    timeout: Option<Duration>,
) -> Result<crossbeam_channel::Sender<()>, FerryError> {
    let (done, done_rx) = crossbeam_channel::bounded::<()>(0);
    if let Some(t) = timeout {
        cancel
            .deadline(t, done_rx)
            .map_err(|e| FerryError::setup(format!("cannot start the --timeout watchdog: {e}")))?;
    }
    Ok(done)
}

impl Finished for crate::view::Summary {
    fn render_text(&self) -> String {
        crate::view::Summary::render_text(self)
    }

    fn to_json(&self) -> String {
        crate::view::Summary::to_json(self)
    }

    fn exit_code(&self) -> ExitCode {
        crate::view::Summary::exit_code(self)
    }
}
