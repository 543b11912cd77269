//! The reporter thread: owns stderr, draws the indicatif bars, prints log lines.

use super::log::{Event, Level, Log};
use crate::metrics::RunMetrics;
use crate::pipeline::StageMetrics;
use crate::words::human_bytes;
use crossbeam_channel::{Receiver, Sender};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// Handle to the running reporter thread.
pub struct Reporter {
    tx: Sender<Event>,
    stop: Sender<()>,
    handle: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts the reporter thread and returns it with the [`Log`] workers use.
    pub fn start(mode: ProgressMode, level: Level, metrics: Arc<RunMetrics>) -> (Reporter, Log) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let tty = std::io::stderr().is_terminal();
        let bars = tty && mode != ProgressMode::Never;
        let plain = !bars && (mode == ProgressMode::Always || level >= Level::Info);
        let handle = std::thread::Builder::new()
            .name("ferry-reporter".into())
            .spawn(move || draw_loop(rx, stop_rx, bars, plain, metrics))
            .ok();
        let log = Log::to_reporter(level, tx.clone());
        (Reporter { tx, stop, handle }, log)
    }

    /// Tells the reporter which stages to show, once the pipeline is built.
    pub fn set_stages(&self, stages: Vec<Arc<StageMetrics>>) {
        let _ = self.tx.send(Event::Stages(stages));
    }

    /// Prints what is queued, clears the bars and stops the thread (as dropping it does,
    /// so an early return on an error path cleans up too).
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    stages: Vec<(Arc<StageMetrics>, ProgressBar)>,
}

fn draw_loop(
    rx: Receiver<Event>,
    stop: Receiver<()>,
    bars_on: bool,
    plain: bool,
    metrics: Arc<RunMetrics>,
) {
    let started = Instant::now();
    let target = if bars_on {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    };
    let multi = MultiProgress::with_draw_target(target);
    let overall = multi.add(ProgressBar::new(0));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:28.cyan/blue}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    overall.set_prefix("ferry");
    let mut bars = Bars {
        multi,
        overall,
        stages: Vec::new(),
    };
    let ticker = crossbeam_channel::tick(Duration::from_millis(100));
    let mut last_plain = Instant::now();
    let print = |bars: &Bars, line: String| {
        if bars_on {
            let _ = bars.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    let handle = |bars: &mut Bars, ev: Event| match ev {
        Event::Line(l) => print(bars, l),
        Event::Stages(s) => {
            for m in s {
                let pb = bars.multi.add(ProgressBar::new_spinner());
                pb.set_style(
                    ProgressStyle::with_template("{prefix:>9} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_prefix(m.name.clone());
                bars.stages.push((m, pb));
            }
        }
    };
    loop {
        crossbeam_channel::select! {
            recv(rx) -> ev => match ev {
                Ok(ev) => handle(&mut bars, ev),
                Err(_) => break,
            },
            recv(stop) -> _ => {
                for ev in rx.try_iter() {
                    handle(&mut bars, ev);
                }
                break;
            },
            recv(ticker) -> _ => {
                if bars_on {
                    update_bars(&bars, &metrics, started);
                } else if plain && last_plain.elapsed() >= PLAIN_EVERY {
                    last_plain = Instant::now();
                    eprintln!("ferry: progress: {}", overall_line(&metrics, started));
                }
            },
        }
    }
    for (_, pb) in &bars.stages {
        pb.finish_and_clear();
    }
    bars.overall.finish_and_clear();
    let _ = bars.multi.clear();
}

/// `120/5,000 files · 1.2 GiB read · 45 MiB/s · ETA 30s`
fn overall_line(m: &RunMetrics, started: Instant) -> String {
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
    let opened = m.opened.load(Relaxed);
    if m.discovery_done.load(Relaxed) && rate > 0.0 && opened > 0 {
        // Sizes are known for files opened so far; the rest are assumed average.
        let opened_bytes = m.opened_bytes.load(Relaxed);
        let ended_unread = m.skipped.load(Relaxed) + m.failed.load(Relaxed);
        let unopened = m
            .discovered
            .load(Relaxed)
            .saturating_sub(opened)
            .saturating_sub(ended_unread);
        let total = opened_bytes + unopened * (opened_bytes / opened);
        let left = total.saturating_sub(read) as f64 / rate;
        s.push_str(&format!(
            " · ETA {}",
            humantime::format_duration(Duration::from_secs(left.ceil() as u64))
        ));
    }
    s
}

fn update_bars(bars: &Bars, m: &RunMetrics, started: Instant) {
    bars.overall.set_length(m.discovered.load(Relaxed));
    bars.overall.set_position(m.finished());
    bars.overall.set_message(overall_line(m, started));
    for (s, pb) in &bars.stages {
        let queue = if s.queue_capacity > 0 {
            format!(
                " · queue {}/{}",
                s.queue_len.load(Relaxed),
                s.queue_capacity
            )
        } else {
            String::new()
        };
        let state = if s.is_finished() { " · done" } else { "" };
        pb.set_message(format!(
            "{} items · busy {}/{}{queue}{state}",
            s.items.load(Relaxed).max(s.emitted.load(Relaxed)),
            s.busy.load(Relaxed),
            s.workers,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_line_shows_eta_only_when_discovery_is_done() {
        let m = RunMetrics::default();
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
