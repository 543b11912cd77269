//! The reporter thread: owns stderr, draws the indicatif bars, prints log lines.

use super::lines::{render, FileView, Paint, Sample, Snapshot, StageView};
use super::log::{Level, Lines};
use crate::counters::{Counters, Flight};
use crate::pipeline::StageMetrics;
use crate::words::human_bytes;
use crossbeam_channel::{Receiver, Sender};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When to draw progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal.
    #[default]
    Auto,
    /// Bars on a terminal; elsewhere a plain progress line every few seconds.
    Always,
    /// Never draw bars (plain progress lines still come at `-v`).
    Never,
}

/// How often a plain progress line is printed when bars are not drawn.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Whether to colour the progress view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// On a terminal, unless `NO_COLOR` is set (to anything) or `TERM=dumb`.
    #[default]
    Auto,
    /// Always (even off a terminal).
    Always,
    /// Never.
    Never,
}

impl ColorMode {
    /// The paint this mode gives on this process's stderr.
    pub fn paint(self) -> Paint {
        let tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        match self {
            ColorMode::Always => Paint::Color,
            ColorMode::Auto if tty && !no_color && !dumb => Paint::Color,
            _ => Paint::Plain,
        }
    }
}

/// Handle to the running reporter thread.
pub struct Reporter {
    stop: Sender<()>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

/// How the reporter shows a command: bars or not, colour or not, how much it says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Look {
    /// When to draw bars.
    pub progress: ProgressMode,
    /// When to colour them.
    pub color: ColorMode,
}

impl Reporter {
    /// Starts the reporter thread on a command's `lines` and the metrics of its
    /// engine's `stages` (all known: it is started once the engine is built). It draws
    /// progress and prints the lines until [`Reporter::finish`].
    pub fn start(
        lines: Lines,
        level: Level,
        stages: Vec<Arc<StageMetrics>>,
        metrics: Arc<Counters>,
        look: Look,
    ) -> Reporter {
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let tty = std::io::stderr().is_terminal();
        let bars = tty && look.progress != ProgressMode::Never;
        let plain = !bars && (look.progress == ProgressMode::Always || level >= Level::Info);
        let paint = look.color.paint();
        let rx = lines.take();
        let handle = std::thread::Builder::new()
            .name("ferry-reporter".into())
            .spawn(move || draw_loop(rx, stop_rx, bars, plain, paint, metrics, stages))
            .ok();
        Reporter { stop, handle }
    }

    /// Prints what is queued, draws the last frame, clears the bars and stops the thread;
    /// returns the run's time series (one sample a second).
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Vec<Sample> {
        let _ = self.stop.try_send(());
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The drawn lines: one indicatif bar per line of the rendered view.
struct Screen {
    multi: MultiProgress,
    lines: Vec<ProgressBar>,
}

impl Screen {
    /// Shows `text`, adding or removing line slots as the view grows or shrinks.
    fn show(&mut self, text: &[String]) {
        while self.lines.len() > text.len() {
            if let Some(pb) = self.lines.pop() {
                pb.finish_and_clear();
                self.multi.remove(&pb);
            }
        }
        while self.lines.len() < text.len() {
            let pb = self.multi.add(ProgressBar::new(1));
            pb.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.lines.push(pb);
        }
        for (pb, line) in self.lines.iter().zip(text) {
            pb.set_message(line.clone());
        }
    }
}

/// What the reporter remembers between ticks: the last second of readings, for rates
/// and utilisation, and the time series.
struct Sampler {
    started: Instant,
    window: VecDeque<Reading>,
    last_sample: Reading,
    timeline: Vec<Sample>,
}

/// The counters at one instant.
#[derive(Clone)]
struct Reading {
    at: Instant,
    bytes: u64,
    files: u64,
    work_ns: Vec<u64>,
    /// The files in flight, in the order the view lists them.
    flights: Vec<(u64, Flight)>,
}

impl Sampler {
    fn read(m: &Counters, stages: &[Arc<StageMetrics>]) -> Reading {
        Reading {
            at: Instant::now(),
            bytes: m.bytes_done.load(Relaxed),
            files: m.finished(),
            work_ns: stages
                .iter()
                .map(|s| s.work_time().as_nanos() as u64)
                .collect(),
            flights: m.flights_now(),
        }
    }

    /// Takes a reading; returns it with the oldest one of the last second.
    fn tick(&mut self, m: &Counters, stages: &[Arc<StageMetrics>]) -> (Reading, Reading) {
        let now = Self::read(m, stages);
        self.window.push_back(now.clone());
        while self.window.len() > 2
            && now.at.duration_since(self.window[0].at) > Duration::from_millis(1000)
        {
            self.window.pop_front();
        }
        if now.at.duration_since(self.last_sample.at) >= Duration::from_secs(1) {
            let utilisation = utilisation(stages, &self.last_sample, &now);
            self.timeline.push(Sample {
                t_s: now.at.duration_since(self.started).as_secs_f64(),
                bytes: now.bytes.saturating_sub(self.last_sample.bytes),
                files: now.files.saturating_sub(self.last_sample.files),
                utilisation,
                allowed: stages.iter().map(|s| s.allowed()).collect(),
            });
            self.last_sample = now.clone();
        }
        (now, self.window[0].clone())
    }
}

/// Each stage's share of its capacity spent working between two readings.
fn utilisation(stages: &[Arc<StageMetrics>], from: &Reading, to: &Reading) -> Vec<f64> {
    let dt = to.at.duration_since(from.at).as_secs_f64().max(1e-3);
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |r: &Reading| r.work_ns.get(i).copied().unwrap_or(0);
            let w = at(to).saturating_sub(at(from));
            (w as f64 / 1e9 / (s.allowed().max(1) as f64 * dt)).min(1.0)
        })
        .collect()
}

/// The view's snapshot from the metrics and the last second of readings.
fn snapshot(
    m: &Counters,
    stages: &[Arc<StageMetrics>],
    now: &Reading,
    then: &Reading,
    started: Instant,
) -> Snapshot {
    let dt = now.at.duration_since(then.at).as_secs_f64();
    let per_s = |a: u64, b: u64| match dt > 0.05 {
        true => a.saturating_sub(b) as f64 / dt,
        false => 0.0,
    };
    let util = utilisation(stages, then, now);
    let bytes_total = m.estimated_total();
    Snapshot {
        discovered: m.discovered.load(Relaxed),
        discovery_done: m.discovery_done.load(Relaxed),
        finished: m.finished(),
        failed: m.failed.load(Relaxed),
        bytes_done: now.bytes,
        bytes_total,
        // Once every file has ended, the run's average (the last second may be empty).
        rate: match m.discovery_done.load(Relaxed) && m.finished() >= m.discovered.load(Relaxed) {
            true => now.bytes as f64 / now.at.duration_since(started).as_secs_f64().max(1e-3),
            false => per_s(now.bytes, then.bytes),
        },
        files: now
            .flights
            .iter()
            .map(|(id, f)| {
                let before = then
                    .flights
                    .iter()
                    .find(|(i, _)| i == id)
                    .map_or(0, |(_, b)| b.done);
                FileView {
                    name: f.key.display().to_string(),
                    size: f.size,
                    done: f.done,
                    rate: per_s(f.done, before),
                }
            })
            .collect(),
        stages: stages
            .iter()
            .zip(util)
            .map(|(s, u)| StageView {
                name: s.name.clone(),
                workers: s.allowed(),
                adapts: s.limit.as_ref().is_some_and(|l| l.is_adaptive()),
                busy: s.busy.load(Relaxed),
                queue: (s.queue_len.load(Relaxed), s.queue_capacity),
                utilisation: u,
                finished: s.is_finished(),
            })
            .collect(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Lines of files in flight that fit a terminal of `rows`: 3 to 5, fewer on a short one.
fn files_for(rows: usize, stages: usize) -> usize {
    rows.saturating_sub(stages + 4).min(5)
}

fn draw_loop(
    rx: Receiver<String>,
    stop: Receiver<()>,
    bars_on: bool,
    plain: bool,
    paint: Paint,
    metrics: Arc<Counters>,
    stages: Vec<Arc<StageMetrics>>,
) -> Vec<Sample> {
    let started = Instant::now();
    let target = if bars_on {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    };
    let mut screen = Screen {
        multi: MultiProgress::with_draw_target(target),
        lines: Vec::new(),
    };
    let first = Sampler::read(&metrics, &stages);
    let mut sampler = Sampler {
        started,
        window: VecDeque::from([first.clone()]),
        last_sample: first,
        timeline: Vec::new(),
    };
    let term = console::Term::stderr();
    let frame = |screen: &mut Screen, sampler: &mut Sampler, stages: &[Arc<StageMetrics>]| {
        let (now, then) = sampler.tick(&metrics, stages);
        if bars_on {
            let (rows, cols) = term.size();
            let snap = snapshot(&metrics, stages, &now, &then, started);
            let view = render(
                &snap,
                cols as usize,
                files_for(rows as usize, stages.len()),
                paint,
            );
            screen.show(&view);
        }
    };
    let ticker = crossbeam_channel::tick(Duration::from_millis(100));
    let mut last_plain = Instant::now();
    loop {
        crossbeam_channel::select! {
            recv(rx) -> ev => match ev {
                Ok(l) => print_line(&screen, bars_on, l),
                Err(_) => break,
            },
            recv(stop) -> _ => {
                for l in rx.try_iter() {
                    print_line(&screen, bars_on, l);
                }
                break;
            },
            recv(ticker) -> _ => {
                frame(&mut screen, &mut sampler, &stages);
                if plain && !bars_on && last_plain.elapsed() >= PLAIN_EVERY {
                    last_plain = Instant::now();
                    eprintln!("ferry: progress: {}", overall_line(&metrics, started));
                }
            },
        }
    }
    // The last frame, drawn whatever the rate limit says, then cleared.
    frame(&mut screen, &mut sampler, &stages);
    for pb in &screen.lines {
        pb.finish();
    }
    for pb in &screen.lines {
        pb.finish_and_clear();
    }
    let _ = screen.multi.clear();
    sampler.timeline
}

/// A log line, above the bars (they are redrawn under it) or straight to stderr.
fn print_line(screen: &Screen, bars_on: bool, line: String) {
    if bars_on {
        let _ = screen.multi.println(line);
    } else {
        eprintln!("{line}");
    }
}

/// `120/5,000 files · 1.2 GiB read · 45 MiB/s · ETA 30s`
fn overall_line(m: &Counters, started: Instant) -> String {
    let done = m.finished();
    let found = m.discovered.load(Relaxed);
    let read = m.bytes_read.load(Relaxed);
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = read as f64 / secs;
    let mut s = format!(
        "{done}/{found}{} files · {} read · {}/s",
        if m.discovery_done.load(Relaxed) {
            ""
        } else {
            "+"
        },
        human_bytes(read),
        human_bytes(rate as u64)
    );
    let total = m.estimated_total().filter(|_| rate > 0.0);
    if let Some(total) = total.filter(|_| m.discovery_done.load(Relaxed)) {
        let left = total.saturating_sub(read) as f64 / rate;
        s.push_str(&format!(
            " · ETA {}",
            humantime::format_duration(Duration::from_secs(left.ceil() as u64))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_line_shows_eta_only_when_discovery_is_done() {
        let m = Counters::default();
        m.discovered.store(10, Relaxed);
        m.opened.store(1, Relaxed);
        m.opened_bytes.store(1 << 30, Relaxed);
        m.bytes_read.store(1 << 20, Relaxed);
        let t = Instant::now() - Duration::from_secs(1);
        let line = overall_line(&m, t);
        assert!(line.starts_with("0/10+ files"), "{line}");
        assert!(!line.contains("ETA"));
        m.discovery_done.store(true, Relaxed);
        assert!(overall_line(&m, t).contains("ETA"));
    }
}
