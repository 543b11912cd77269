//! The generic pipeline engine: producers → bounded bridge → stages → collectors.
//!
//! It knows nothing of files, gzip or sinks. A stage is a name, a worker count and a
//! factory that makes one worker function per thread: `FnMut(In, &Emitter<Out>)`, which may
//! emit zero, one or many outputs per input. Each stage runs on a rayon [`ThreadPool`](rayon::ThreadPool) of
//! its own; every thread of the pool runs one worker loop that blocks in `recv` on the
//! stage's input channel (parked, never spinning). Channels are bounded and created here
//! only; each is owned by exactly one upstream stage and closed by drop when that stage's
//! last worker ends, so shutdown is a cascade of disconnections that cannot deadlock.
//!
//! ```
//! use ferry::pipeline::{CancelToken, Pipeline, Producer, StageSpec};
//! use std::num::NonZeroUsize;
//!
//! let n = |n| NonZeroUsize::new(n).unwrap();
//! let mut p = Pipeline::new(CancelToken::new());
//! let producers: Vec<Producer<u64>> = vec![Box::new(|out| {
//!     for i in 0..100 {
//!         if out.emit(i).is_err() { break; }
//!     }
//!     Ok(())
//! })];
//! let sums = p
//!     .source("numbers", n(4), producers).unwrap()
//!     .stage(StageSpec::new("double", n(2)).queue(n(4)), |_worker| {
//!         |n: u64, out: &ferry::pipeline::Emitter<u64>| { let _ = out.emit(n * 2); }
//!     }).unwrap()
//!     .collect("sum", n(1), |_| 0u64, |acc: &mut u64, n: u64| *acc += n).unwrap();
//! p.wait().unwrap();
//! assert_eq!(sums.into_vec(), vec![9900]);
//! ```

mod cancel;
mod limit;
mod metrics;

#[cfg(test)]
pub(crate) use cancel::FAIL_DEADLINE_SPAWN;
pub use cancel::{CancelReason, CancelToken};
pub use limit::{Congestion, Limit, LimitReport, Permit};
pub use metrics::{Histogram, StageMetrics};

use crossbeam_channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors of the engine itself (never of the work a stage does: that travels as data).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A source was declared without producers.
    #[error("source {stage}: it needs at least one producer")]
    NoProducers {
        /// The source's name.
        stage: String,
    },
    /// The operating system refused to start a thread.
    #[error("cannot start the {stage} threads: {source}")]
    Spawn {
        /// The stage's name.
        stage: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A producer ended with an error of its own (its source could not be read): what it
    /// emitted before still went through the stages.
    #[error("{stage}: {source}")]
    Producer {
        /// The source's name.
        stage: String,
        /// What the producer returned.
        source: BoxError,
    },
    /// A worker panicked, in its setup or on an item; the panic was caught and the stage
    /// went on with its other workers and items.
    #[error("internal error: a {stage} worker panicked: {message}")]
    Panicked {
        /// The stage's name.
        stage: String,
        /// The panic message.
        message: String,
    },
}

/// Something the engine did, for `-vv` logs (the original design's event log).
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A worker thread entered its loop.
    WorkerStarted {
        /// Stage name.
        stage: String,
        /// Worker index within the stage.
        worker: usize,
    },
    /// A worker thread left its loop (input closed, output gone, or cancelled).
    WorkerStopped {
        /// Stage name.
        stage: String,
        /// Worker index within the stage.
        worker: usize,
        /// Items it handled.
        items: u64,
    },
    /// The last worker of a stage ended, so its output channel is now closed.
    ChannelClosed {
        /// Stage name.
        stage: String,
    },
    /// A worker caught a panic: in its setup (the worker then ends) or on an item.
    Panic {
        /// Stage name.
        stage: String,
        /// The panic message.
        message: String,
    },
}

impl std::fmt::Display for EngineEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineEvent::WorkerStarted { stage, worker } => {
                write!(f, "{stage} worker {worker} started")
            }
            EngineEvent::WorkerStopped {
                stage,
                worker,
                items,
            } => write!(f, "{stage} worker {worker} stopped after {items} items"),
            EngineEvent::ChannelClosed { stage } => {
                write!(f, "{stage} finished; its output channel is closed")
            }
            EngineEvent::Panic { stage, message } => {
                write!(f, "{stage} worker panicked: {message}")
            }
        }
    }
}

/// A callback that sees every [`EngineEvent`]; it must be quick and must not block.
pub type Observer = Arc<dyn Fn(&EngineEvent) + Send + Sync>;

/// The error a producer may end with: any error, as the caller's own type, boxed (the
/// engine only carries it to [`Pipeline::wait`], where the caller can downcast it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One producer: runs on its own thread and emits items into the bridge channel.
/// It should return once `emit` fails (everything downstream is gone) or the token is
/// cancelled. Its items are gathered in batches like a stage's; one that may wait for its
/// own input (a pipe) should [`Emitter::flush`] before it does, or what it found waits
/// with it. An `Err` it returns reaches [`Pipeline::wait`] as
/// [`PipelineError::Producer`]; the items it emitted before still flow.
pub type Producer<T> = Box<dyn FnOnce(&Emitter<T>) -> Result<(), BoxError> + Send>;

/// How a stage is laid out: its name, worker threads and output queue capacity.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Name used for thread names (`ferry-<name>-<i>`), progress lines and reports.
    pub name: String,
    /// Worker threads in the stage's pool.
    pub workers: NonZeroUsize,
    /// Capacity of the channel the stage emits into.
    pub queue: NonZeroUsize,
    /// How many of the workers may handle an item at once, if fewer than all: the pool
    /// then has `limit.max()` threads, and the rest wait at the gate.
    pub limit: Option<Arc<Limit>>,
    /// Its handler defers most items ([`StageSpec::threads`]): fewer threads than its
    /// limit, and input in batches.
    pub deferring: bool,
}

/// The default output queue of a stage.
const DEFAULT_QUEUE: NonZeroUsize = match NonZeroUsize::new(64) {
    Some(n) => n,
    None => unreachable!(),
};

impl StageSpec {
    /// A stage named `name` with `workers` threads and an output queue of 64.
    pub fn new(name: &str, workers: NonZeroUsize) -> Self {
        StageSpec {
            name: name.to_string(),
            workers,
            queue: DEFAULT_QUEUE,
            limit: None,
            deferring: false,
        }
    }

    /// Puts the stage under `limit`: its pool gets `limit.max()` threads, of which at
    /// most `limit.current()` handle an item at any time.
    pub fn limit(mut self, limit: Arc<Limit>) -> Self {
        self.workers = NonZeroUsize::new(limit.max()).unwrap_or(NonZeroUsize::MIN);
        self.deferring = false;
        self.limit = Some(limit);
        self
    }

    /// Caps the stage's threads at `n` whatever its limit: for a stage whose handler hands
    /// most items on with [`Emitter::defer`] (a request in flight needs no thread), so
    /// that a limit of 1,024 items in flight does not mean 1,024 threads. Set it after
    /// [`StageSpec::limit`]. Its input then comes in batches, as an unlimited stage's does.
    pub fn threads(mut self, n: NonZeroUsize) -> Self {
        self.workers = n.min(self.workers);
        self.deferring = true;
        self
    }

    /// Sets the capacity of the stage's output channel.
    pub fn queue(mut self, capacity: NonZeroUsize) -> Self {
        self.queue = capacity;
        self
    }
}

/// Items per message between stages, at most (and never more than the queue's capacity
/// in messages): a worker gathers what it emits and sends it as one message, so tiny
/// items cost one channel hand-off (and at most one wake-up) per batch instead of one
/// per item.
pub const BATCH: usize = 32;

/// A gathered batch is sent once the work that made its first item began this long ago,
/// so a heavy item (a big read, a slow compression) goes downstream as soon as it is
/// done, and nothing finished waits long behind what follows it.
pub const BATCH_AGE: Duration = Duration::from_micros(200);

/// The sending side a worker or producer gets: emits items downstream and counts them.
///
/// Items are gathered into batches ([`BATCH`] at most) and sent when the batch is full,
/// when the work that made its first item began [`BATCH_AGE`] ago, before the worker
/// waits for input or in [`Emitter::blocked_while`], and when the worker ends. Sending
/// blocks while the downstream queue is full (that is the back-pressure) and fails only
/// when every downstream worker is gone.
pub struct Emitter<U> {
    tx: Sender<Vec<U>>,
    /// Items (not batches) in the downstream queue, shared with its readers.
    gauge: Arc<AtomicUsize>,
    metrics: Arc<StageMetrics>,
    cancel: CancelToken,
    closed: Cell<bool>,
    /// Items per message, set by the stage that reads them (1 under a [`Limit`], so
    /// each item can go to a worker of its own).
    batch: Arc<AtomicUsize>,
    pending: RefCell<Vec<U>>,
    /// When the work that made the first pending item began.
    since: Cell<Option<Instant>>,
    /// When the handler call now running began (none for a producer).
    began: Cell<Option<Instant>>,
    /// Items the handler call now running has emitted so far: a call that emits one item
    /// reads no clock for it (the age is checked once the call is over).
    emitted_in_call: Cell<usize>,
    /// The item now being handled, while it may still be deferred: its permit under a
    /// limit. Taken by [`Emitter::defer`].
    turn: RefCell<Option<Turn>>,
}

/// The item a worker is handling: when it began, and its permit under a limit.
struct Turn {
    began: Instant,
    permit: Option<Permit>,
}

/// An item whose work goes on after its handler returned: a request in flight that needs
/// no thread of the stage's while it waits. It holds the item's place under the stage's
/// [`Limit`] and keeps the stage's output open until it has emitted (or been dropped),
/// and it counts the item's time in the stage's metrics when it ends. Made by
/// [`Emitter::defer`]; it may be moved to any thread.
pub struct Deferred<U> {
    tx: Sender<Vec<U>>,
    gauge: Arc<AtomicUsize>,
    metrics: Arc<StageMetrics>,
    cancel: CancelToken,
    turn: Option<Turn>,
}

impl<U> Deferred<U> {
    /// Sends the item's output downstream now (one message of its own) and ends its work:
    /// its permit is given back and its time counted.
    ///
    /// # Errors
    /// Returns the item when the downstream stage has ended.
    pub fn emit(mut self, item: U) -> Result<(), U> {
        self.end();
        self.gauge.fetch_add(1, Relaxed);
        match self.tx.send(vec![item]) {
            Ok(()) => {
                self.metrics.emitted.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.gauge.fetch_sub(1, Relaxed);
                Err(e.into_inner().pop().expect("one item was sent"))
            }
        }
    }

    /// The run's cancellation token.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Gives the permit back and counts the item's time, once.
    fn end(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        let backlog = self.metrics.queue_len.load(Relaxed) > 0;
        item_ended(&self.metrics, turn.began.elapsed(), turn.permit, backlog);
    }
}

/// Counts an item that took `took` as ended, and gives its permit back (`backlog`: items
/// were waiting), whether its worker ended it or a [`Deferred`] did.
fn item_ended(m: &StageMetrics, took: Duration, permit: Option<Permit>, backlog: bool) {
    m.busy.fetch_sub(1, Relaxed);
    if let Some(p) = permit {
        p.done(took, backlog);
    }
    m.busy_ns.fetch_add(took.as_nanos() as u64, Relaxed);
    m.latency.record(took);
    m.items.fetch_add(1, Relaxed);
}

impl<U> Drop for Deferred<U> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<U> Emitter<U> {
    fn new(
        tx: Sender<Vec<U>>,
        gauge: Arc<AtomicUsize>,
        metrics: Arc<StageMetrics>,
        cancel: CancelToken,
        batch: Arc<AtomicUsize>,
    ) -> Self {
        Emitter {
            tx,
            gauge,
            metrics,
            cancel,
            closed: Cell::new(false),
            batch,
            pending: RefCell::new(Vec::new()),
            since: Cell::new(None),
            began: Cell::new(None),
            emitted_in_call: Cell::new(0),
            turn: RefCell::new(None),
        }
    }

    /// Hands the item now being handled on to work that finishes without this thread:
    /// the worker goes on to its next item while the returned [`Deferred`] holds this
    /// one's place under the stage's limit, until it emits the item's output from
    /// wherever that work ends. `None` outside a stage's handler, or if already deferred.
    pub fn defer(&self) -> Option<Deferred<U>> {
        let turn = self.turn.borrow_mut().take()?;
        Some(Deferred {
            tx: self.tx.clone(),
            gauge: self.gauge.clone(),
            metrics: self.metrics.clone(),
            cancel: self.cancel.clone(),
            turn: Some(turn),
        })
    }

    /// Sends `item` downstream: gathered with the items before it, sent when the batch
    /// is due (see the type's documentation).
    ///
    /// # Errors
    /// Returns the item when the downstream stage has ended; the worker should stop.
    pub fn emit(&self, item: U) -> Result<(), U> {
        if self.closed.get() {
            return Err(item);
        }
        let max = self.batch.load(Relaxed).max(1);
        let len = {
            let mut pending = self.pending.borrow_mut();
            if pending.is_empty() {
                pending.reserve_exact(max);
                self.since
                    .set(Some(self.began.get().unwrap_or_else(Instant::now)));
            }
            pending.push(item);
            pending.len()
        };
        // A producer, or a handler call emitting its second item or later (the segments
        // of a big file), checks the age as it goes; a call's first item waits for the
        // check after the call, which costs one clock read for both.
        let calls = self.emitted_in_call.get();
        self.emitted_in_call.set(calls + 1);
        let check_age = self.began.get().is_none() || calls > 0;
        if len < max && !(check_age && self.aged()) {
            return Ok(());
        }
        match self.flush() {
            Ok(()) => Ok(()),
            // The other items of the batch are lost with the stage that would have taken
            // them; the caller gets its own item back.
            Err(mut batch) => batch.pop().map_or(Ok(()), Err),
        }
    }

    /// Sends what has been gathered now.
    ///
    /// # Errors
    /// Returns the batch when the downstream stage has ended.
    pub fn flush(&self) -> Result<(), Vec<U>> {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        self.since.set(None);
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        // Counted before the send, so a reader never takes more than was counted.
        self.gauge.fetch_add(n, Relaxed);
        let sent = match self.tx.try_send(batch) {
            Ok(()) => Ok(()),
            // Only a full queue is timed: the common case costs no clock read.
            Err(crossbeam_channel::TrySendError::Full(batch)) => {
                self.timed(|| self.tx.send(batch).map_err(|e| e.into_inner()))
            }
            Err(crossbeam_channel::TrySendError::Disconnected(batch)) => Err(batch),
        };
        match sent {
            Ok(()) => {
                self.metrics.emitted.fetch_add(n as u64, Relaxed);
                Ok(())
            }
            Err(batch) => {
                self.gauge.fetch_sub(n, Relaxed);
                self.closed.set(true);
                Err(batch)
            }
        }
    }

    /// Whether the work behind the first pending item began [`BATCH_AGE`] ago.
    fn aged(&self) -> bool {
        self.since.get().is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }

    /// After a handler call that ended at `now`: sends the batch if it is due.
    fn tick_at(&self, now: Instant) {
        if self
            .since
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) >= BATCH_AGE)
        {
            let _ = self.flush();
        }
    }

    /// Sends what has been gathered, then runs `wait`, counting its time as blocked
    /// rather than working: for back-pressure other than a full queue, such as a memory
    /// budget (which the gathered items may hold, so they must go first).
    pub fn blocked_while<R>(&self, wait: impl FnOnce() -> R) -> R {
        let _ = self.flush();
        self.timed(wait)
    }

    fn timed<R>(&self, wait: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let r = wait();
        self.metrics
            .blocked_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        r
    }

    /// The run's cancellation token.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Whether the run is cancelled (a shortcut for `cancel_token().is_cancelled()`).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Whether a send has failed because downstream is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

impl<U> Drop for Emitter<U> {
    /// What is still gathered goes downstream: an emitter's items are never dropped
    /// while a reader is there to take them.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Worker states handed back by a [`Flow::collect`] stage once it has ended.
pub struct Collected<S> {
    rx: Receiver<S>,
}

impl<S> Collected<S> {
    /// The states of all collector workers; call after [`Pipeline::wait`].
    pub fn into_vec(self) -> Vec<S> {
        self.rx.try_iter().collect()
    }
}

/// The pipeline under construction and, after building, the handle to wait on.
pub struct Pipeline {
    cancel: CancelToken,
    stages: Vec<Arc<StageMetrics>>,
    observer: Option<Observer>,
    /// Every worker holds a clone; the channel disconnects when the last one ends.
    exit_tx: Sender<Option<(String, String)>>,
    exit_rx: Receiver<Option<(String, String)>>,
    /// Producer threads by stage name; each returns how it ended.
    producers: Vec<(String, JoinHandle<Ended>)>,
    /// Kept alive until `wait`, so the pools are not torn down under their workers.
    pools: Vec<rayon::ThreadPool>,
}

/// A typed stream of items inside a [`Pipeline`] being built; add stages to it.
pub struct Flow<'p, T> {
    pipeline: &'p mut Pipeline,
    rx: Receiver<Vec<T>>,
    gauge: Arc<AtomicUsize>,
    /// Items per message, read by the emitters that feed this flow.
    batch: Arc<AtomicUsize>,
    capacity: usize,
    /// True only for the bridge: its readers stop waiting for producers on cancellation.
    detach_on_cancel: bool,
}

impl Pipeline {
    /// A new, empty pipeline that stops when `cancel` is cancelled.
    pub fn new(cancel: CancelToken) -> Self {
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
        Pipeline {
            cancel,
            stages: Vec::new(),
            observer: None,
            exit_tx,
            exit_rx,
            producers: Vec::new(),
            pools: Vec::new(),
        }
    }

    /// Calls `f` for every engine event (workers starting and stopping, channels closing).
    pub fn observe(&mut self, f: impl Fn(&EngineEvent) + Send + Sync + 'static) {
        self.observer = Some(Arc::new(f));
    }

    /// Live metrics of every stage declared so far, source first.
    pub fn metrics(&self) -> Vec<Arc<StageMetrics>> {
        self.stages.clone()
    }

    /// Starts `producers`, each on its own thread, all feeding one bounded bridge channel
    /// of `capacity` items. The source appears in metrics as a stage named `name` whose
    /// workers are the producers.
    ///
    /// # Errors
    /// [`PipelineError::NoProducers`] for an empty `producers`,
    /// [`PipelineError::Spawn`] if a thread cannot start.
    pub fn source<T: Send + 'static>(
        &mut self,
        name: &str,
        capacity: NonZeroUsize,
        producers: Vec<Producer<T>>,
    ) -> Result<Flow<'_, T>, PipelineError> {
        if producers.is_empty() {
            return Err(PipelineError::NoProducers {
                stage: name.to_string(),
            });
        }
        let capacity = capacity.get();
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let gauge = Arc::new(AtomicUsize::new(0));
        let batch = Arc::new(AtomicUsize::new(BATCH));
        let metrics = Arc::new(StageMetrics::new(
            name,
            producers.len(),
            0,
            Arc::new(AtomicUsize::new(0)),
        ));
        self.stages.push(metrics.clone());
        let life = Life {
            stage: name.to_string(),
            observer: self.observer.clone(),
            metrics: metrics.clone(),
        };
        for (i, producer) in producers.into_iter().enumerate() {
            let emitter = Emitter::new(
                tx.clone(),
                gauge.clone(),
                metrics.clone(),
                self.cancel.clone(),
                batch.clone(),
            );
            let life = life.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ferry-{name}-{i}"))
                .spawn(move || {
                    let m = &life.metrics;
                    life.started(i);
                    m.busy.fetch_add(1, Relaxed);
                    let started = Instant::now();
                    let result = catch_unwind(AssertUnwindSafe(|| producer(&emitter)));
                    m.busy_ns
                        .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
                    m.busy.fetch_sub(1, Relaxed);
                    let (ended, panic) = match result {
                        Ok(Ok(())) => (Ended::Done, None),
                        Ok(Err(e)) => (Ended::Failed(e), None),
                        Err(p) => {
                            m.panics.fetch_add(1, Relaxed);
                            let message = panic_message(&*p);
                            (Ended::Panicked(message.clone()), Some(message))
                        }
                    };
                    let items = m.emitted.load(Relaxed);
                    drop(emitter);
                    life.ended(i, items, &panic);
                    ended
                })
                .map_err(|source| PipelineError::Spawn {
                    stage: name.to_string(),
                    source,
                })?;
            self.producers.push((name.to_string(), handle));
        }
        Ok(Flow {
            pipeline: self,
            rx,
            gauge,
            batch,
            capacity,
            detach_on_cancel: true,
        })
    }

    /// Waits until every stage has drained and ended. Producers are joined too, unless
    /// the run was cancelled: then a producer stuck in a blocking read is left behind
    /// (its output is no longer wanted) instead of hanging the shutdown.
    ///
    /// # Errors
    /// [`PipelineError::Producer`] if a producer returned an error (the first, in the order
    /// the sources were declared), else [`PipelineError::Panicked`] if any worker panicked
    /// (the others still finished).
    pub fn wait(self) -> Result<(), PipelineError> {
        let Pipeline {
            cancel,
            exit_tx,
            exit_rx,
            producers,
            pools,
            ..
        } = self;
        drop(exit_tx);
        let mut first_panic = None;
        for exit in exit_rx.iter() {
            if let (Some(p), None) = (exit, &first_panic) {
                first_panic = Some(p);
            }
        }
        drop(pools);
        let mut failed = None;
        for (stage, p) in producers {
            if cancel.is_cancelled() && !p.is_finished() {
                continue;
            }
            match p.join() {
                Ok(Ended::Done) => {}
                Ok(Ended::Failed(source)) => {
                    failed.get_or_insert(PipelineError::Producer { stage, source });
                }
                Ok(Ended::Panicked(message)) => {
                    first_panic.get_or_insert((stage, message));
                }
                Err(panic) => {
                    first_panic.get_or_insert((stage, panic_message(&*panic)));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        match first_panic {
            Some((stage, message)) => Err(PipelineError::Panicked { stage, message }),
            None => Ok(()),
        }
    }
}

/// How a producer thread ended.
enum Ended {
    Done,
    Failed(BoxError),
    Panicked(String),
}

fn notify(observer: &Option<Observer>, event: impl FnOnce() -> EngineEvent) {
    if let Some(o) = observer {
        o(&event());
    }
}

/// The message of a caught panic's payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// What one worker thread needs; each worker pops its own set so that no channel end
/// outlives the worker that uses it.
struct Kit<T, X> {
    rx: Receiver<Vec<T>>,
    extra: X,
    exit: Sender<Option<(String, String)>>,
}

impl<'p, T: Send + 'static> Flow<'p, T> {
    /// Adds a stage: `make(worker_index)` builds each worker's function once, on the
    /// worker's own thread (so per-worker state such as a reusable compressor needs no
    /// locking). The function receives each input and an [`Emitter`] for its outputs.
    ///
    /// A panic in `make` ends that worker (reported as [`EngineEvent::Panic`] and by
    /// [`Pipeline::wait`]); the stage goes on with its other workers.
    ///
    /// # Errors
    /// [`PipelineError::Spawn`] if the threads cannot start.
    pub fn stage<U, F, W>(self, spec: StageSpec, make: F) -> Result<Flow<'p, U>, PipelineError>
    where
        U: Send + 'static,
        F: Fn(usize) -> W + Send + Sync + 'static,
        W: FnMut(T, &Emitter<U>),
    {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<U>>(spec.queue.get());
        let out_gauge = Arc::new(AtomicUsize::new(0));
        let out_batch = Arc::new(AtomicUsize::new(BATCH));
        let cancel = self.pipeline.cancel.clone();
        type Ends<U> = (
            Sender<Vec<U>>,
            Arc<AtomicUsize>,
            CancelToken,
            Arc<AtomicUsize>,
        );
        let extras: Vec<Ends<U>> = (0..spec.workers.get())
            .map(|_| {
                (
                    tx.clone(),
                    out_gauge.clone(),
                    cancel.clone(),
                    out_batch.clone(),
                )
            })
            .collect();
        drop(tx);
        let pipeline = self.spawn(
            &spec.name,
            spec.workers.get(),
            spec.limit.clone(),
            spec.limit.is_some() && !spec.deferring,
            extras,
            move |i, metrics: &Arc<StageMetrics>, (tx, gauge, cancel, batch)| {
                let emitter = Emitter::new(tx, gauge, metrics.clone(), cancel, batch);
                let mut f = make(i);
                move |event: Event<'_, T>| match event {
                    Event::Item(item, began, slot) => {
                        emitter.began.set(Some(began));
                        emitter.emitted_in_call.set(0);
                        *emitter.turn.borrow_mut() = Some(Turn {
                            began,
                            permit: slot.permit.take(),
                        });
                        f(item, &emitter);
                        emitter.began.set(None);
                        match emitter.turn.borrow_mut().take() {
                            Some(turn) => slot.permit = turn.permit,
                            None => slot.deferred = true,
                        }
                        // One clock read ends the item: its time, the batch's age, and
                        // the start of the next item in the same message.
                        let now = Instant::now();
                        slot.ended = Some(now);
                        emitter.tick_at(now);
                        !emitter.is_closed()
                    }
                    Event::Idle => emitter.flush().is_ok(),
                    Event::End => {
                        let _ = emitter.flush();
                        false
                    }
                }
            },
        )?;
        Ok(Flow {
            pipeline,
            rx,
            gauge: out_gauge,
            batch: out_batch,
            capacity: spec.queue.get(),
            detach_on_cancel: false,
        })
    }

    /// Adds the final stage: `workers` collectors, each with its own state from
    /// `init(worker_index)`, updated by `each` for every item. The states are handed back
    /// through [`Collected`] when the collectors end, merged by the caller (no shared lock).
    ///
    /// # Errors
    /// [`PipelineError::Spawn`] if the threads cannot start.
    pub fn collect<S, I, E>(
        self,
        name: &str,
        workers: NonZeroUsize,
        init: I,
        each: E,
    ) -> Result<Collected<S>, PipelineError>
    where
        S: Send + 'static,
        I: Fn(usize) -> S + Send + Sync + 'static,
        E: Fn(&mut S, T) + Send + Sync + 'static,
    {
        let (tx, rx) = crossbeam_channel::unbounded::<S>();
        let extras: Vec<Sender<S>> = (0..workers.get()).map(|_| tx.clone()).collect();
        drop(tx);
        let each = Arc::new(each);
        self.spawn(
            name,
            workers.get(),
            None,
            false,
            extras,
            move |i, _metrics, tx| {
                let mut state = Some(init(i));
                let each = each.clone();
                move |event: Event<'_, T>| match event {
                    Event::Item(item, _, _) => {
                        if let Some(s) = state.as_mut() {
                            each(s, item);
                        }
                        true
                    }
                    Event::Idle => true,
                    Event::End => {
                        if let Some(s) = state.take() {
                            let _ = tx.send(s);
                        }
                        false
                    }
                }
            },
        )?;
        Ok(Collected { rx })
    }

    /// Starts a pool of `workers` threads, each running the loop over this flow's input.
    /// `make_worker` builds, on the worker thread, a handler that takes each
    /// [`Event`] and returns whether to go on; it sees [`Event::End`] once, last. With
    /// `one_per_message` its feeders send each item as a message of its own.
    fn spawn<X, M, H>(
        self,
        name: &str,
        workers: usize,
        limit: Option<Arc<Limit>>,
        one_per_message: bool,
        extras: Vec<X>,
        make_worker: M,
    ) -> Result<&'p mut Pipeline, PipelineError>
    where
        X: Send + 'static,
        M: Fn(usize, &Arc<StageMetrics>, X) -> H + Send + Sync + 'static,
        H: FnMut(Event<'_, T>) -> bool,
    {
        let Flow {
            pipeline,
            rx,
            gauge,
            batch,
            capacity,
            detach_on_cancel,
        } = self;
        // Under a limit each item may need a worker of its own (a request in flight),
        // unless the stage defers its items. A queue shorter than a batch (`--queue 1`,
        // to hold the upstream back) keeps its size in items.
        let per_message = if one_per_message {
            1
        } else {
            BATCH.min(capacity)
        };
        batch.store(per_message, Relaxed);
        let mut metrics = StageMetrics::new(name, workers, capacity * per_message, gauge);
        metrics.gate_per_item = limit.is_some() && !one_per_message;
        metrics.limit = limit;
        let metrics = Arc::new(metrics);
        pipeline.stages.push(metrics.clone());
        let kits: Vec<Kit<T, X>> = extras
            .into_iter()
            .map(|extra| Kit {
                rx: rx.clone(),
                extra,
                exit: pipeline.exit_tx.clone(),
            })
            .collect();
        drop(rx);
        let kits = Arc::new(Mutex::new(kits));
        let cancel = detach_on_cancel.then(|| pipeline.cancel.clone());
        let life = Life {
            stage: name.to_string(),
            observer: pipeline.observer.clone(),
            metrics,
        };
        let limit = life.metrics.limit.clone();
        let work = {
            let kits = kits.clone();
            move |kit: Kit<T, X>, i: usize| {
                let Kit { rx, extra, exit } = kit;
                life.started(i);
                let (items, panic) =
                    run_worker(i, rx, extra, &make_worker, &life.metrics, cancel.as_ref());
                life.ended(i, items, &panic);
                let _ = exit.send(panic.map(|m| (life.stage.clone(), m)));
                if let Some(l) = &life.metrics.limit {
                    // The input has ended: the threads not started are not needed, and
                    // their ends of the channels must close.
                    let unstarted: Vec<_> = lock(&kits).drain(..).collect();
                    for _ in unstarted {
                        life.ended(i, 0, &None);
                    }
                    l.on_grow(None);
                }
            }
        };
        match limit {
            // Under a limit, threads start as the limit grows: a rayon pool starts all at
            // once, and its idle workers' search for work grows with the square of their
            // number (1,024 took seconds to start on 2 cores).
            Some(limit) => {
                let grow = Grow {
                    kits,
                    work: Arc::new(work),
                    name: name.to_string(),
                    started: AtomicUsize::new(0),
                };
                grow.to(limit.current())
                    .map_err(|source| PipelineError::Spawn {
                        stage: name.to_string(),
                        source,
                    })?;
                limit.on_grow(Some(Box::new(move |n| {
                    let _ = grow.to(n);
                })));
            }
            None => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    // Every worker body runs under `catch_unwind`; this is only a backstop
                    // so a panic that escapes it can never abort the process.
                    .panic_handler(|_| {})
                    .thread_name({
                        let name = name.to_string();
                        move |i| format!("ferry-{name}-{i}")
                    })
                    .build()
                    .map_err(|e| PipelineError::Spawn {
                        stage: name.to_string(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                pool.spawn_broadcast(move |ctx| {
                    let kit = lock(&kits).pop();
                    if let Some(kit) = kit {
                        work(kit, ctx.index());
                    }
                });
                pipeline.pools.push(pool);
            }
        }
        Ok(pipeline)
    }
}

/// Starts the threads of a stage under a limit, as the limit grows.
struct Grow<K, W> {
    /// The ends of the channels for the threads not started yet.
    kits: Arc<Mutex<Vec<K>>>,
    work: Arc<W>,
    name: String,
    /// Threads started so far.
    started: AtomicUsize,
}

impl<K: Send + 'static, W: Fn(K, usize) + Send + Sync + 'static> Grow<K, W> {
    /// Starts threads until `n` have been started (or none are left to start).
    fn to(&self, n: usize) -> std::io::Result<()> {
        while self.started.load(Relaxed) < n {
            let Some(kit) = lock(&self.kits).pop() else {
                return Ok(());
            };
            let i = self.started.fetch_add(1, Relaxed);
            let work = self.work.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ferry-{}-{i}", self.name))
                .spawn(move || work(kit, i));
            // The kit went with the closure; the stage goes on with the threads it has,
            // and fails to start only if it has none.
            if let Err(e) = spawned {
                return if i == 0 { Err(e) } else { Ok(()) };
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine's bookkeeping around one worker's life: its events, and the
/// channel-closed event when the stage's last worker ends.
#[derive(Clone)]
struct Life {
    stage: String,
    observer: Option<Observer>,
    metrics: Arc<StageMetrics>,
}

impl Life {
    fn started(&self, worker: usize) {
        self.metrics.threads.fetch_add(1, Relaxed);
        notify(&self.observer, || EngineEvent::WorkerStarted {
            stage: self.stage.clone(),
            worker,
        });
    }

    fn ended(&self, worker: usize, items: u64, panic: &Option<String>) {
        if let Some(message) = panic {
            notify(&self.observer, || EngineEvent::Panic {
                stage: self.stage.clone(),
                message: message.clone(),
            });
        }
        notify(&self.observer, || EngineEvent::WorkerStopped {
            stage: self.stage.clone(),
            worker,
            items,
        });
        let m = &self.metrics;
        if m.finished_workers.fetch_add(1, Relaxed) + 1 == m.workers {
            notify(&self.observer, || EngineEvent::ChannelClosed {
                stage: self.stage.clone(),
            });
        }
    }
}

/// One worker of a stage: builds its handler with `make_worker` (a panic there ends only
/// this worker), runs the loop, then tells the handler the input has ended. Returns the
/// items handled and the first panic.
fn run_worker<T, X, M, H>(
    i: usize,
    rx: Receiver<Vec<T>>,
    extra: X,
    make_worker: &M,
    metrics: &Arc<StageMetrics>,
    cancel: Option<&CancelToken>,
) -> (u64, Option<String>)
where
    M: Fn(usize, &Arc<StageMetrics>, X) -> H,
    H: FnMut(Event<'_, T>) -> bool,
{
    match catch_unwind(AssertUnwindSafe(|| make_worker(i, metrics, extra))) {
        Ok(mut handler) => {
            let (items, mut panic) = worker_loop(&rx, metrics, cancel, &mut handler);
            drop(rx);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| handler(Event::End))) {
                panic.get_or_insert_with(|| panic_message(&*p));
            }
            (items, panic)
        }
        // The factory panicked: this worker never starts; its channel ends were dropped
        // in the unwind (and `rx` drops here), so the others are not held up.
        Err(p) => {
            metrics.panics.fetch_add(1, Relaxed);
            (0, Some(format!("in setup: {}", panic_message(&*p))))
        }
    }
}

/// What a worker's handler is given.
enum Event<'s, T> {
    /// An item, when its handling began, and its place under the stage's limit.
    Item(T, Instant, &'s mut Slot),
    /// The input is empty for now: send what was gathered before waiting.
    Idle,
    /// The loop has ended.
    End,
}

/// An item's permit while its handler runs, and whether the handler deferred it (then the
/// [`Deferred`] gives the permit back and counts the item, not the worker).
#[derive(Default)]
struct Slot {
    permit: Option<Permit>,
    deferred: bool,
    /// When the handler ended the item, if it read the clock for it.
    ended: Option<Instant>,
}

/// One worker's loop: receive a batch, handle and measure each item; until the input
/// closes, the handler says stop, or (for bridge readers) the run is cancelled and the
/// queue is drained. Returns the items handled and the first panic message, if any.
fn worker_loop<T>(
    rx: &Receiver<Vec<T>>,
    metrics: &StageMetrics,
    cancel: Option<&CancelToken>,
    handler: &mut impl FnMut(Event<'_, T>) -> bool,
) -> (u64, Option<String>) {
    let mut items = 0;
    let mut panic = None;
    let mut draining = false;
    let limit = metrics.limit.as_ref();
    'outer: loop {
        // Under a limit, a worker waits at the gate before it takes an item (unless the
        // stage defers its items: then for each item it holds).
        let mut permit = match limit {
            Some(l) if !metrics.gate_per_item => Some(l.acquire()),
            _ => None,
        };
        let batch = if draining {
            match rx.try_recv() {
                Ok(batch) => batch,
                Err(_) => break,
            }
        } else {
            let batch = match rx.try_recv() {
                Ok(batch) => Some(batch),
                Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                Err(crossbeam_channel::TryRecvError::Empty) => None,
            };
            match batch {
                Some(batch) => batch,
                None => {
                    // Nothing to do for now: what was gathered goes before the wait.
                    match catch_unwind(AssertUnwindSafe(|| handler(Event::Idle))) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(p) => {
                            metrics.panics.fetch_add(1, Relaxed);
                            panic.get_or_insert_with(|| panic_message(&*p));
                        }
                    }
                    if let Some(cancel) = cancel {
                        crossbeam_channel::select! {
                            recv(rx) -> r => match r {
                                Ok(batch) => batch,
                                Err(_) => break,
                            },
                            recv(cancel.signal()) -> _ => {
                                draining = true;
                                continue;
                            }
                        }
                    } else {
                        match rx.recv() {
                            Ok(batch) => batch,
                            Err(_) => break,
                        }
                    }
                }
            }
        };
        // A stage that gates each item counts the items in its workers' hands as waiting
        // until each begins: they are its backlog, which its limit grows on.
        if !metrics.gate_per_item {
            metrics.queue_len.fetch_sub(batch.len(), Relaxed);
        }
        let mut left = batch.len();
        // When the item before, in this message, ended: the next one starts then, unless
        // waiting for a permit came between (then that wait is not its work).
        let mut last_end: Option<Instant> = None;
        for item in batch {
            left -= 1;
            let mut slot = Slot {
                permit: permit.take().or_else(|| limit.map(Limit::acquire)),
                deferred: false,
                ended: None,
            };
            if metrics.gate_per_item {
                metrics.queue_len.fetch_sub(1, Relaxed);
            }
            let busy = metrics.busy.fetch_add(1, Relaxed) + 1;
            metrics.peak_busy.fetch_max(busy, Relaxed);
            let started = match (limit, last_end) {
                (None, Some(t)) => t,
                _ => Instant::now(),
            };
            let result = catch_unwind(AssertUnwindSafe(|| {
                handler(Event::Item(item, started, &mut slot))
            }));
            items += 1;
            let ended = slot.ended.take().unwrap_or_else(Instant::now);
            last_end = Some(ended);
            if !slot.deferred {
                let backlog = left > 0 || !rx.is_empty();
                item_ended(
                    metrics,
                    ended.saturating_duration_since(started),
                    slot.permit,
                    backlog,
                );
            }
            match result {
                Ok(true) => {}
                // Downstream is gone: the rest of the batch has nowhere to go.
                Ok(false) => break 'outer,
                Err(p) => {
                    metrics.panics.fetch_add(1, Relaxed);
                    panic.get_or_insert_with(|| panic_message(&*p));
                }
            }
        }
    }
    (items, panic)
}

#[cfg(test)]
mod tests;
