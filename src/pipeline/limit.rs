//! How many items a stage works on at once: fixed, or adapting to what the work behind it
//! can take — an object store whose every request costs a round trip wants hundreds in
//! flight, one that throttles wants fewer.
//!
//! A [`Limit`] is a gate in front of a stage's input: a worker takes a permit before it
//! receives an item and gives it back when the item is handled, so a stage of 1,024
//! threads under a limit of 40 has 40 at work and the rest parked on the gate.
//!
//! An adaptive limit measures the stage over windows of two mean item latencies (at least
//! 50 ms): items handled per second, and whether it was *pressed* (items waiting in its
//! queue while every permit was taken). Only a pressed stage grows its limit, since more
//! in flight cannot help a stage that waits for input:
//! - it starts by stepping ×4 each window while that raises the rate by 15 % or more,
//!   its windows then one mean latency long (at least 50 ms), as TCP's slow start steps
//!   each round trip: at a 100 ms round trip the limit reaches thousands 0.2 s sooner;
//! - once a step stops paying, or what it added only queued (items took over twice the
//!   *base* latency, the lowest window mean of the last 10 s), it keeps the better of the
//!   last two limits;
//! - settled, it probes every 4 windows, a quarter lower and a quarter higher in turn
//!   (lower first). A lower probe is kept if the rate holds within 5 %: what the rest
//!   added was queueing, which costs connections and memory. A higher one is kept if the
//!   rate rises 10 %, and two such in a row start the ×4 steps again (one lucky window
//!   is no room: a server sharing the cores wobbles that much). Without lower probes, a
//!   noisy rate only ever ratcheted the limit up, to the maximum;
//! - while items queue (a window's mean latency over twice the base), it probes lower at
//!   once, by half the queueing (up to ×4), its windows one latency long: against a
//!   store that is itself the bottleneck, thousands in flight only wait there;
//! - when the work signals congestion (the store throttled: 503 SlowDown, 429, a
//!   timeout), it halves the limit (but not below the highest that went through), holds
//!   it for 4 windows, and remembers where the store refused: later probes go only
//!   halfway there, and each further congestion doubles the hold (up to a minute), so the
//!   limit settles under the store's own instead of swinging around it. The ceiling is
//!   forgotten after a minute without congestion, as a store's limits change.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A source of congestion signals: a count that rises each time the work was throttled.
pub type Congestion = Box<dyn Fn() -> u64 + Send + Sync>;

/// The shortest measuring window, and how many mean item latencies a window spans.
const MIN_WINDOW: Duration = Duration::from_millis(50);
const WINDOW_LATENCIES: u32 = 2;
/// How far the limit steps up while starting, and when probing once settled.
const START_STEP: f64 = 4.0;
const PROBE_STEP: f64 = 1.25;
/// Growth that counts as paying: after a start step, and after a probe.
const GROWTH_PAYS: f64 = 1.15;
const PROBE_PAYS: f64 = 1.10;
/// How long a ceiling (where the store throttled) is kept without new congestion.
const FORGET_CEILING: Duration = Duration::from_secs(60);
/// How many upward probes in a row must pay before the limit grows fast again: one
/// window's rate can be a lucky one.
const CONFIRM_PROBES: u32 = 2;
/// A probe to fewer in flight is kept if its rate is at least this share of the last:
/// the rest was queueing.
const FEWER_KEEP: f64 = 0.95;
/// When a step did not pay, the higher limit is kept only if its rate was this much
/// better: otherwise the lower one does the same work with fewer in flight.
const SETTLE_ABOVE: f64 = 1.05;
/// How often a settled limit probes higher, in windows.
const PROBE_EVERY: u32 = 4;
/// A window's mean latency this many times the base means items queue behind the work:
/// the limit is then probed lower at once, by up to [`MOST_DOWN`].
const INFLATED: f64 = 2.0;
const MOST_DOWN: f64 = 4.0;
/// Items that take at most this many times the base latency queue nowhere: only then do
/// paying probes start the ×4 steps again (near the knee they go a quarter at a time).
const ROOMY: f64 = 1.25;
/// How long the base latency is kept before a window's own replaces it (the work's
/// latency changes).
const BASE_FORGET: Duration = Duration::from_secs(10);
/// The first hold after congestion, in windows, and the longest hold.
const FIRST_HOLD: u32 = 4;
const LONGEST_HOLD: Duration = Duration::from_secs(60);

/// A gate on how many items a stage handles at once. See the module docs.
pub struct Limit {
    min: usize,
    max: usize,
    adaptive: bool,
    /// The limit now; read without the lock by the view.
    current: AtomicUsize,
    /// The highest the limit has been.
    peak: AtomicUsize,
    /// Permits taken now, and workers waiting for one (woken only when some wait).
    taken: Mutex<(usize, usize)>,
    freed: Condvar,
    /// Congestion signals seen so far, from the work itself and from `congestion`.
    signalled: AtomicU64,
    congestion: Option<Congestion>,
    control: Mutex<Control>,
    /// Told each new, higher limit: the engine starts threads for it.
    grow: Mutex<Option<OnGrow>>,
}

/// What the engine does when a limit grows: start threads up to the new limit.
pub type OnGrow = Box<dyn Fn(usize) + Send + Sync>;

/// The controller's memory between windows.
struct Control {
    window: Window,
    phase: Phase,
    /// Congestion count at the end of the last window.
    congestion_seen: u64,
    /// Until when the limit may not grow, after congestion, and the next hold's length.
    hold: (Instant, Duration),
    /// The highest limit a pressed window went through without congestion.
    good: usize,
    /// The lowest limit at which the store throttled, and when; forgotten after a while,
    /// as a store's own limits change.
    ceiling: Option<(usize, Instant)>,
    /// The limit integrated over time (limit × ns), for the average.
    area: (Instant, f64),
    /// The changes so far, for the report.
    changes: Vec<(f64, usize)>,
    started: Instant,
    /// The lowest mean latency of a window lately, and when it was seen: what an item
    /// takes with nothing queued ahead of it (renewed after [`BASE_FORGET`]).
    base: Option<(Duration, Instant)>,
}

impl Control {
    fn new(now: Instant) -> Self {
        Control {
            window: Window::new(now),
            phase: Phase::Start { last: None },
            congestion_seen: 0,
            hold: (now, Duration::ZERO),
            good: 0,
            ceiling: None,
            area: (now, 0.0),
            changes: Vec::new(),
            started: now,
            base: None,
        }
    }

    /// By how much a window's mean `latency` is over the base, when it is more than
    /// [`INFLATED`] times it: the items in flight mostly queue.
    fn inflated(&self, latency: Duration) -> Option<f64> {
        let by = self.over_base(latency);
        (by > INFLATED).then_some(by)
    }

    /// A window's mean `latency` as a multiple of the base (1 before there is one).
    fn over_base(&self, latency: Duration) -> f64 {
        self.base.map_or(1.0, |(base, _)| {
            latency.as_secs_f64() / base.as_secs_f64().max(1e-6)
        })
    }
}

/// What one window saw.
struct Window {
    started: Instant,
    done: u64,
    pressed: u64,
    busy_ns: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            done: 0,
            pressed: 0,
            busy_ns: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Stepping up; `last` is the limit and rate of the window before, if it was pressed.
    Start { last: Option<(usize, f64)> },
    /// Settled; probes from `at`, higher if `up` and lower if not; `probe` is the probe
    /// under way, and `paid` how many upward probes in a row have paid.
    Steady {
        at: Instant,
        probe: Option<Probe>,
        up: bool,
        paid: u32,
    },
}

impl Phase {
    /// Settled, the next probe (upward first) after `at`.
    fn settled(at: Instant) -> Self {
        Phase::probe_at(at, true)
    }

    /// Settled, the next probe after `at`, higher if `up`, with no paying probes behind it.
    fn probe_at(at: Instant, up: bool) -> Self {
        Phase::Steady {
            at,
            probe: None,
            up,
            paid: 0,
        }
    }
}

/// A probe under way: the limit it left and that limit's rate, and which way it went.
#[derive(Debug, Clone, Copy)]
struct Probe {
    from: usize,
    rate: f64,
    up: bool,
}

/// A permit to handle one item; given back on drop, or with [`Permit::done`]. It owns a
/// handle on its limit, so work that outlives its worker's turn (a request in flight,
/// handed on with [`Emitter::defer`](super::Emitter::defer)) keeps its place under it.
pub struct Permit {
    limit: Arc<Limit>,
    returned: bool,
}

impl Permit {
    /// Gives the permit back after an item that took `took`; `backlog` says whether
    /// items were waiting in the queue.
    pub fn done(mut self, took: Duration, backlog: bool) {
        self.returned = true;
        self.limit.release(Some((took, backlog)));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.returned {
            self.limit.release(None);
        }
    }
}

/// What the report says of a limit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LimitReport {
    /// Whether it adapted, or was fixed.
    pub adaptive: bool,
    /// Its bounds.
    pub min: usize,
    /// The highest it may go (the stage's threads).
    pub max: usize,
    /// The limit at the end.
    pub last: usize,
    /// The highest it reached.
    pub peak: usize,
    /// Its average over the run, weighted by time.
    pub mean: f64,
    /// Each change: seconds since the start, and the new limit (the first 10,000).
    pub changes: Vec<(f64, usize)>,
}

/// How many changes of the limit the report keeps.
pub const KEPT_CHANGES: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Limit {
    /// A fixed limit of `n`: the stage's threads, all at work when there is work.
    pub fn fixed(n: usize) -> Self {
        Self::build(n, n, n, false, None)
    }

    /// A limit that starts at `start` and adapts between `min` and `max`, cutting back
    /// when `congestion` rises (see the module docs).
    ///
    /// # Panics
    /// If not `1 <= min <= start <= max`.
    pub fn adaptive(min: usize, start: usize, max: usize, congestion: Option<Congestion>) -> Self {
        assert!(1 <= min && min <= start && start <= max, "bad limit bounds");
        Self::build(min, start, max, true, congestion)
    }

    fn build(
        min: usize,
        start: usize,
        max: usize,
        adaptive: bool,
        congestion: Option<Congestion>,
    ) -> Self {
        let now = Instant::now();
        Limit {
            min,
            max,
            adaptive,
            current: AtomicUsize::new(start),
            peak: AtomicUsize::new(start),
            taken: Mutex::new((0, 0)),
            freed: Condvar::new(),
            signalled: AtomicU64::new(0),
            congestion,
            control: Mutex::new(Control::new(now)),
            grow: Mutex::new(None),
        }
    }

    /// The most items in flight it allows now.
    pub fn current(&self) -> usize {
        self.current.load(Relaxed)
    }

    /// The highest it may go: how many threads the stage needs.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether it adapts.
    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// Sets (or, with `None`, clears) what to do when the limit grows.
    pub fn on_grow(&self, f: Option<OnGrow>) {
        *lock(&self.grow) = f;
    }

    /// Notes that the work was throttled (for work that sees it itself, rather than
    /// through the congestion source).
    pub fn congested(&self) {
        self.signalled.fetch_add(1, Relaxed);
    }

    /// Waits for a permit.
    pub fn acquire(self: &Arc<Self>) -> Permit {
        let mut taken = lock(&self.taken);
        while taken.0 >= self.current() {
            taken.1 += 1;
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
            taken.1 -= 1;
        }
        taken.0 += 1;
        Permit {
            limit: self.clone(),
            returned: false,
        }
    }

    fn release(&self, item: Option<(Duration, bool)>) {
        let (pressed, waiting) = {
            let mut taken = lock(&self.taken);
            // Every permit was taken, or a worker waits for one: with items waiting, more
            // would have been at work. (Permits of deferred items come back in bursts,
            // a timer's worth at once, and only the first of a burst finds them all
            // taken; the workers waiting say the same for the rest.)
            let full = taken.0 >= self.current() || taken.1 > 0;
            taken.0 -= 1;
            (full, taken.1 > 0)
        };
        // A wake-up is a system call: only when a worker waits for it.
        if waiting {
            self.freed.notify_one();
        }
        let Some((took, backlog)) = item else { return };
        if !self.adaptive {
            return;
        }
        // One worker at a time measures; the others go back to work.
        let Ok(mut c) = self.control.try_lock() else {
            return;
        };
        let now = Instant::now();
        if c.window.done == 0 {
            // The window starts with its first item, not with the gate's creation, so
            // the stage's start-up is not read as slowness.
            c.window.started = c.window.started.max(now.checked_sub(took).unwrap_or(now));
        }
        c.window.done += 1;
        c.window.pressed += u64::from(pressed && backlog);
        c.window.busy_ns += took.as_nanos() as u64;
        let elapsed = now.duration_since(c.window.started);
        let mean = Duration::from_nanos(c.window.busy_ns / c.window.done);
        // While starting, a window is one latency: what a step brings shows within it;
        // and while items queue behind the work, as many as that long queue is not kept
        // waiting for two of its own latencies.
        let latencies = match (c.phase, c.inflated(mean)) {
            (Phase::Start { .. }, _) | (_, Some(_)) => 1,
            (Phase::Steady { .. }, None) => WINDOW_LATENCIES,
        };
        if elapsed < MIN_WINDOW.max(mean * latencies) {
            return;
        }
        let congestion = self.signalled.load(Relaxed) + self.congestion.as_ref().map_or(0, |f| f());
        let next = self.decide(&mut c, now, (elapsed, mean), congestion);
        c.window = Window::new(now);
        let was = self.current();
        if next != was {
            let (since, area) = c.area;
            c.area = (
                now,
                area + was as f64 * now.duration_since(since).as_nanos() as f64,
            );
            self.current.store(next, Relaxed);
            self.peak.fetch_max(next, Relaxed);
            if c.changes.len() < KEPT_CHANGES {
                let t = now.duration_since(c.started).as_secs_f64();
                c.changes.push((t, next));
            }
            if next > was {
                if let Some(grow) = &*lock(&self.grow) {
                    grow(next);
                }
                // Wake the parked workers under the new limit (one each would also do,
                // but they cannot be counted from here).
                drop(lock(&self.taken));
                self.freed.notify_all();
            }
        }
    }

    /// The next limit after a window of `elapsed` whose items took `latency` on average.
    fn decide(
        &self,
        c: &mut Control,
        now: Instant,
        (elapsed, latency): (Duration, Duration),
        congestion: u64,
    ) -> usize {
        let seen = Seen {
            rate: c.window.done as f64 / elapsed.as_secs_f64(),
            // Most items left others waiting in the queue with every permit taken.
            pressed: c.window.pressed * 2 >= c.window.done,
            congestion,
            window: elapsed,
            latency,
        };
        step(c, (self.min, self.max), self.current(), now, seen)
    }

    /// What the report says of it, at the end of the run.
    pub fn report(&self) -> LimitReport {
        let c = lock(&self.control);
        let now = Instant::now();
        let (since, area) = c.area;
        let total = area + self.current() as f64 * now.duration_since(since).as_nanos() as f64;
        let span = now.duration_since(c.started).as_nanos().max(1) as f64;
        LimitReport {
            adaptive: self.adaptive,
            min: self.min,
            max: self.max,
            last: self.current(),
            peak: self.peak.load(Relaxed),
            mean: total / span,
            changes: c.changes.clone(),
        }
    }
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("current", &self.current())
            .field("min", &self.min)
            .field("max", &self.max)
            .field("adaptive", &self.adaptive)
            .finish_non_exhaustive()
    }
}

/// What a window saw, for [`step`].
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Items handled per second.
    rate: f64,
    /// Whether the stage was the limit: items waited while every permit was taken.
    pressed: bool,
    /// The congestion count at the window's end.
    congestion: u64,
    /// How long the window was: holds and probes are counted in windows.
    window: Duration,
    /// The mean time an item took in it.
    latency: Duration,
}

/// The controller: the next limit, from the `current` one within `(min, max)` and what
/// the window ending `now` saw. Pure but for `c`, so it is tested on a model of a store.
fn step(
    c: &mut Control,
    (min, max): (usize, usize),
    current: usize,
    now: Instant,
    seen: Seen,
) -> usize {
    let rate = seen.rate;
    if c.base
        .is_none_or(|(b, at)| seen.latency < b || now.duration_since(at) > BASE_FORGET)
        && !seen.latency.is_zero()
    {
        c.base = Some((seen.latency, now));
    }
    if seen.congestion > c.congestion_seen {
        c.congestion_seen = seen.congestion;
        // The store's limit is under this one: back to the last limit it took, then
        // hold. Each congestion while held, or soon after, holds twice as long.
        c.ceiling = Some((current.min(c.ceiling.map_or(usize::MAX, |(b, _)| b)), now));
        let (until, hold) = c.hold;
        let first = seen.window * FIRST_HOLD;
        let next_hold = match now < until + hold {
            true => (hold * 2).clamp(first, LONGEST_HOLD.max(first)),
            false => first,
        };
        c.hold = (now + next_hold, next_hold);
        c.phase = Phase::settled(now + next_hold);
        // Halve, as TCP does, but not under what went through; and if this limit had
        // gone through before, the store's limit has come down.
        let back = match c.good < current {
            true => c.good.max(current / 2),
            false => {
                c.good = current / 2;
                current / 2
            }
        };
        return back.clamp(min, max);
    }
    if !seen.pressed || now < c.hold.0 {
        return current;
    }
    let inflated = c.inflated(seen.latency);
    // A pressed window without congestion: the store takes this many.
    c.good = c.good.max(current);
    if c.ceiling
        .is_some_and(|(_, at)| now.duration_since(at) > FORGET_CEILING)
    {
        c.ceiling = None;
    }
    let up_to = |by: f64| {
        let to = ((current as f64 * by).ceil() as usize).clamp(min, max);
        match c.ceiling {
            // Never to or past where the store throttled: halfway there instead.
            Some((bad, _)) if to >= bad => current + (bad.saturating_sub(current)) / 2,
            _ => to,
        }
    };
    match c.phase {
        Phase::Start { last } => match last {
            // The last step did not pay, or what it added only queued (each item took
            // twice as long as at the base): settle on the better of the two.
            Some((limit, r)) if rate < r * GROWTH_PAYS || inflated.is_some() => {
                // The step may have gone past the knee by up to ×4: the first probe
                // is for fewer.
                c.phase = Phase::probe_at(now + seen.window * PROBE_EVERY, false);
                if rate >= r * SETTLE_ABOVE {
                    current
                } else {
                    limit
                }
            }
            _ => {
                c.phase = Phase::Start {
                    last: Some((current, rate)),
                };
                up_to(START_STEP)
            }
        },
        Phase::Steady {
            at,
            probe,
            up,
            paid,
        } => match probe {
            Some(p) if p.up => {
                let next = now + seen.window * PROBE_EVERY;
                match (rate >= p.rate * PROBE_PAYS, c.ceiling) {
                    // Under a ceiling, a probe that drew no congestion is kept.
                    (true, Some(_)) => {
                        c.phase = Phase::settled(next);
                        current
                    }
                    // It paid twice in a row, and items take about the base time (none
                    // queue): the work behind has room, grow fast again.
                    (true, None)
                        if paid + 1 >= CONFIRM_PROBES && c.over_base(seen.latency) <= ROOMY =>
                    {
                        c.phase = Phase::Start {
                            last: Some((current, rate)),
                        };
                        up_to(START_STEP)
                    }
                    // It paid once: keep it, and probe again at once, since one window
                    // that happened to go well is not yet room.
                    (true, None) => {
                        c.phase = Phase::Steady {
                            at: now,
                            probe: None,
                            up: true,
                            paid: paid + 1,
                        };
                        current
                    }
                    // More in flight did not pay: back, and next time try fewer.
                    (false, _) => {
                        c.phase = Phase::probe_at(next, false);
                        p.from
                    }
                }
            }
            Some(p) => {
                // Fewer in flight that do (nearly) the same work are kept: what more
                // added was only queueing, which costs connections and memory.
                let kept = rate >= p.rate * FEWER_KEEP;
                c.phase = Phase::probe_at(now + seen.window * PROBE_EVERY, !kept);
                if kept {
                    current
                } else {
                    p.from
                }
            }
            // A probe when it is time; and one for fewer at once while items queue
            // behind the work, by as much as they queue (halved, up to ×4), since what
            // the queue holds adds nothing but connections and memory.
            None if now >= at || inflated.is_some() => {
                let up = up && inflated.is_none();
                let by =
                    inflated.map_or(PROBE_STEP, |i| (i / INFLATED).clamp(PROBE_STEP, MOST_DOWN));
                let to = match up {
                    true => up_to(PROBE_STEP),
                    false => ((current as f64 / by).floor() as usize).max(min),
                };
                if to == current {
                    c.phase = Phase::probe_at(now + seen.window * PROBE_EVERY, !up);
                    return current;
                }
                c.phase = Phase::Steady {
                    at,
                    probe: Some(Probe {
                        from: current,
                        rate,
                        up,
                    }),
                    up,
                    paid,
                };
                to
            }
            None => current,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A model of a store: a round trip of `rtt` whatever the load, up to `knee` requests
    /// in flight (more only queue), and refusals above `throttle`. Runs the controller
    /// for `secs` simulated seconds of plentiful work; returns the limit of each window.
    fn model(rtt: Duration, knee: usize, throttle: usize, max: usize, secs: u64) -> Vec<usize> {
        noisy_model(rtt, knee, throttle, max, secs, 0.0)
    }

    /// [`model`], with each window's rate off by up to `noise` (a fraction) either way, as
    /// a store sharing the machine's cores measures: a deterministic sequence.
    fn noisy_model(
        rtt: Duration,
        knee: usize,
        throttle: usize,
        max: usize,
        secs: u64,
        noise: f64,
    ) -> Vec<usize> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut jitter = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * noise
        };
        let start = Instant::now();
        let mut c = Control::new(start);
        let (mut now, mut limit, mut congestion) = (start, 16, 0);
        let mut seen = Vec::new();
        let window = MIN_WINDOW.max(rtt * WINDOW_LATENCIES);
        while now < start + Duration::from_secs(secs) {
            now += window;
            congestion += u64::from(limit > throttle);
            // Past the knee, what is in flight beyond it queues: each item waits longer.
            let queued = (limit as f64 / knee as f64).max(1.0);
            let seen_now = Seen {
                rate: limit.min(knee) as f64 / rtt.as_secs_f64() * (1.0 + jitter()),
                pressed: true,
                congestion,
                window,
                latency: rtt.mul_f64(queued),
            };
            limit = step(&mut c, (1, max), limit, now, seen_now);
            seen.push(limit);
        }
        seen
    }

    #[test]
    fn latency_bound_work_grows_to_the_maximum_within_a_second() {
        let seen = model(Duration::from_millis(30), usize::MAX, usize::MAX, 1024, 10);
        let windows = (Duration::from_secs(1).as_millis() / 90) as usize;
        assert_eq!(seen[windows], 1024, "{seen:?}");
        assert!(seen.iter().all(|&l| l <= 1024));
    }

    #[test]
    fn growth_stops_where_more_in_flight_stops_paying() {
        let seen = model(Duration::from_millis(30), 100, usize::MAX, 1024, 30);
        let tail = &seen[seen.len() / 2..];
        // Settled at the knee: past it by a step (×4), then down by quarters while fewer
        // do the same work; probing a quarter either side now and then, never back to
        // the maximum.
        assert!(tail.iter().all(|&l| (80..=200).contains(&l)), "{tail:?}");
        assert!(
            tail.iter().filter(|&&l| l < 100).count() * 8 <= tail.len(),
            "{tail:?}"
        );
    }

    #[test]
    fn a_noisy_rate_does_not_swing_the_limit_far_past_the_knee() {
        // A server on the same two cores as the client: its rate wobbles ±10 % from
        // window to window whatever the limit. A probe that happens to land on a good
        // window must not send the limit ×4 into a queue that only costs connections.
        let seen = noisy_model(Duration::from_millis(30), 200, usize::MAX, 4096, 120, 0.10);
        let tail = &seen[seen.len() / 4..];
        let far = tail.iter().filter(|&&l| l > 500).count();
        assert!(
            far * 50 <= tail.len(),
            "{far} of {} windows over 500: {:?}",
            tail.len(),
            tail.iter().max()
        );
        let mean = tail.iter().sum::<usize>() as f64 / tail.len() as f64;
        assert!((200.0..=400.0).contains(&mean), "mean {mean}");
        // Past the knee items queue (each waits longer): one ×4 step past it at most.
        assert!(seen.iter().all(|&l| l <= 1024), "{:?}", seen.iter().max());
    }

    #[test]
    fn congestion_cuts_the_limit_and_it_settles_under_the_stores() {
        let seen = model(Duration::from_millis(30), usize::MAX, 64, 1024, 120);
        assert!(
            seen.iter().any(|&l| l > 64),
            "it probes past the store's limit"
        );
        let tail = &seen[seen.len() / 2..];
        let over = tail.iter().filter(|&&l| l > 64).count();
        let mean = tail.iter().sum::<usize>() as f64 / tail.len() as f64;
        assert!(
            over * 50 <= tail.len(),
            "swings: {over} of {} over",
            tail.len()
        );
        assert!(mean >= 0.7 * 64.0, "too far under: {mean}");
    }

    #[test]
    fn no_more_items_are_in_flight_than_the_limit() {
        let limit = Arc::new(Limit::fixed(3));
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let permit = limit.acquire();
                        let n = now.fetch_add(1, Relaxed) + 1;
                        most.fetch_max(n, Relaxed);
                        std::thread::yield_now();
                        now.fetch_sub(1, Relaxed);
                        permit.done(Duration::ZERO, true);
                    }
                });
            }
        });
        assert_eq!(most.load(Relaxed), 3);
        assert_eq!(limit.report().peak, 3);
    }
}
