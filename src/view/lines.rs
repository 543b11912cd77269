//! The live progress view as text: a pure function of a [`Snapshot`] of the metrics and
//! the terminal's width, so what the user sees is tested line by line (snapshot tests at
//! 80 and 120 columns). The reporter thread takes snapshots and hands the lines to
//! indicatif, which only draws them.

use crate::words::human_bytes;
use std::time::Duration;

/// Everything the live view shows, read from the metrics at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Files found so far.
    pub discovered: u64,
    /// Whether the walk is over (otherwise totals are marked growing, `+`).
    pub discovery_done: bool,
    /// Files ended (succeeded, skipped, failed or cancelled).
    pub finished: u64,
    /// Files failed so far.
    pub failed: u64,
    /// Source bytes delivered so far.
    pub bytes_done: u64,
    /// Source bytes the run will deliver, once known (estimated from the files opened).
    pub bytes_total: Option<u64>,
    /// Recent throughput, source bytes per second.
    pub rate: f64,
    /// Files in flight, largest first.
    pub files: Vec<FileView>,
    /// Each stage, in pipeline order.
    pub stages: Vec<StageView>,
    /// The machine's cores (for the hint: whether more workers can help).
    pub cores: usize,
}

/// One file in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct FileView {
    /// Its key.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Source bytes of it delivered so far.
    pub done: u64,
    /// Its recent speed, bytes per second.
    pub rate: f64,
}

/// One stage, as the live view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageView {
    /// Its name.
    pub name: String,
    /// Its workers, or the limit on items in flight if it has one.
    pub workers: usize,
    /// Whether that limit adapts (upload into a remote store, unless pinned).
    pub adapts: bool,
    /// Workers handling an item now.
    pub busy: usize,
    /// Items in its input queue, and the queue's capacity (0: no queue shown).
    pub queue: (usize, usize),
    /// Recent utilisation: time working (not blocked, not waiting), 0–1.
    pub utilisation: f64,
    /// Whether every worker has ended.
    pub finished: bool,
}

/// One second of the run, for the report's time series.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Seconds since the start, at the end of this interval.
    pub t_s: f64,
    /// Source bytes delivered in the interval.
    pub bytes: u64,
    /// Files ended in the interval.
    pub files: u64,
    /// Each stage's utilisation over the interval (0–1), in pipeline order.
    pub utilisation: Vec<f64>,
    /// Each stage's limit on items in flight at the end of the interval: its workers,
    /// or, for a stage that adapts its limit (upload into a remote store), the limit then.
    pub allowed: Vec<usize>,
}

/// What to try when `stage` is the busiest, if anything applies: a stage that is mostly
/// idle limits nothing.
pub fn hint(
    stage: &str,
    utilisation: f64,
    workers: usize,
    cores: usize,
    adapts: bool,
) -> Option<String> {
    // A stage that sets its own limit needs no advice on it.
    if utilisation < 0.5 || adapts {
        return None;
    }
    Some(match stage {
        "compress" if workers < cores => "more -j helps: cores are free".into(),
        "compress" => "every core is compressing; a lower --level trades size for speed".into(),
        "upload" => "raise --upload-workers on a high-latency sink".into(),
        "load" => "raise --load-workers where the storage has headroom (network file systems)".into(),
        "walk" => "the walk is the limit (many tiny files, a slow file system); ferry plan walks once for many runs".into(),
        "fetch" => "raise --download-workers on a high-latency sink".into(),
        "inflate" if workers < cores => "more -j helps: cores are free".into(),
        _ => return None,
    })
}

/// The fraction of the run done: bytes when their total is known, never behind the
/// files fraction (a run of many skipped files moves by files).
pub fn fraction(s: &Snapshot) -> f64 {
    let files = match s.discovered {
        0 => 0.0,
        n => s.finished as f64 / n as f64,
    };
    let bytes = match s.bytes_total {
        Some(t) if t > 0 => s.bytes_done as f64 / t as f64,
        _ => 0.0,
    };
    files.max(bytes).clamp(0.0, 1.0)
}

/// The index of the bottleneck among `stages`: the busiest stage still running, when it
/// is busy enough to limit anything (over half its capacity).
pub fn bottleneck(stages: &[StageView]) -> Option<usize> {
    stages
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.finished && s.utilisation >= 0.5)
        .max_by(|a, b| a.1.utilisation.total_cmp(&b.1.utilisation))
        .map(|(i, _)| i)
}

/// Styles for the few places colour helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    /// Plain text.
    Plain,
    /// ANSI colour.
    Color,
}

impl Paint {
    fn warn(self, s: &str) -> String {
        match self {
            Paint::Plain => s.to_string(),
            Paint::Color => console::style(s)
                .yellow()
                .bold()
                .force_styling(true)
                .to_string(),
        }
    }

    fn bad(self, s: &str) -> String {
        match self {
            Paint::Plain => s.to_string(),
            Paint::Color => console::style(s)
                .red()
                .bold()
                .force_styling(true)
                .to_string(),
        }
    }
}

/// The live view: the main bar, up to `max_files` files in flight, and one line per stage,
/// none wider than `width` columns.
pub fn render(s: &Snapshot, width: usize, max_files: usize, paint: Paint) -> Vec<String> {
    let width = width.max(20);
    let mut lines = vec![main_line(s, width, paint)];
    let shown = &s.files[..s.files.len().min(max_files)];
    let name_room = shown
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    for f in shown {
        lines.push(file_line(f, name_room, width));
    }
    let top = bottleneck(&s.stages);
    let name_w = s.stages.iter().map(|st| st.name.len()).max().unwrap_or(0);
    for (i, st) in s.stages.iter().enumerate() {
        lines.push(stage_line(st, name_w, width, top == Some(i), paint));
    }
    if let Some(st) = top.map(|i| &s.stages[i]) {
        if let Some(h) = hint(&st.name, st.utilisation, st.workers, s.cores, st.adapts) {
            lines.push(fit(&format!("  {} is the bottleneck: {h}", st.name), width));
        }
    }
    lines
}

/// `ferry [=====>    ]  42% · 1.2 GiB/2.9 GiB · 1234/5000+ files · 96 MiB/s · ETA 18s`
fn main_line(s: &Snapshot, width: usize, paint: Paint) -> String {
    let frac = fraction(s);
    let grow = if s.discovery_done { "" } else { "+" };
    let bytes = match s.bytes_total {
        Some(t) => format!("{}/{}{grow}", human_bytes(s.bytes_done), human_bytes(t)),
        None => human_bytes(s.bytes_done),
    };
    // (text, keep priority): when even a 10-column bar does not fit, the part with the
    // lowest priority goes first (the ETA, then the speed …); failures stay.
    let mut parts: Vec<(String, u8)> = vec![
        (format!("{:>3.0}%", frac * 100.0), 9),
        (bytes, 5),
        (format!("{}/{}{grow} files", s.finished, s.discovered), 6),
        (format!("{}/s", human_bytes(s.rate as u64)), 3),
    ];
    if s.failed > 0 {
        parts.push((format!("{} failed", s.failed), 8));
    }
    if let Some(eta) = eta(s, frac) {
        parts.push((format!("ETA {eta}"), 2));
    }
    loop {
        let text = parts
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(" · ");
        let fixed = "ferry [] ".len() + text.chars().count();
        if fixed + 10 <= width || parts.len() == 1 {
            let bar_w = (width.saturating_sub(fixed)).clamp(1, 30);
            let filled = ((frac * bar_w as f64).floor() as usize).min(bar_w);
            let mut bar = "=".repeat(filled);
            if filled < bar_w {
                bar.push('>');
                bar.push_str(&" ".repeat(bar_w - filled - 1));
            }
            let line = fit(&format!("ferry [{bar}] {text}"), width);
            return match s.failed {
                0 => line,
                n => {
                    let f = format!("{n} failed");
                    line.replacen(&f, &paint.bad(&f), 1)
                }
            };
        }
        if let Some(i) = (0..parts.len()).min_by_key(|&i| parts[i].1) {
            parts.remove(i);
        }
    }
}

/// The time left at the recent rate, once the total is known.
fn eta(s: &Snapshot, frac: f64) -> Option<String> {
    let total = s.bytes_total.filter(|_| s.discovery_done)?;
    if s.rate <= 0.0 || frac >= 1.0 {
        return None;
    }
    let left = total.saturating_sub(s.bytes_done) as f64 / s.rate;
    Some(humantime::format_duration(Duration::from_secs(left.ceil() as u64)).to_string())
}

/// `  ↳ logs/…/big.log  37% of 1.0 GiB · 45 MiB/s`
fn file_line(f: &FileView, name_room: usize, width: usize) -> String {
    let pct = match f.size {
        0 => 100.0,
        n => f.done as f64 * 100.0 / n as f64,
    };
    let tail = format!(
        " {:>3.0}% of {} · {}/s",
        pct.min(100.0),
        human_bytes(f.size),
        human_bytes(f.rate as u64)
    );
    let room = width
        .saturating_sub(4 + tail.chars().count())
        .clamp(8, name_room.max(8));
    let name = shorten_middle(&f.name, room);
    fit(&format!("  ↳ {name:<room$}{tail}"), width)
}

/// `  compress  busy 2/2 ·  97% · queue 14/64  ◀ bottleneck`
fn stage_line(st: &StageView, name_w: usize, width: usize, top: bool, paint: Paint) -> String {
    let mut s = format!(
        "  {:<name_w$}  busy {}/{}{} · {:>3.0}% used",
        st.name,
        st.busy,
        st.workers,
        if st.adapts { " (adapting)" } else { "" },
        st.utilisation * 100.0
    );
    if st.queue.1 > 0 {
        s.push_str(&format!(" · queue {}/{}", st.queue.0, st.queue.1));
    }
    if st.finished {
        s.push_str(" · done");
    }
    let mark = "  ◀ bottleneck";
    if top && s.chars().count() + mark.chars().count() <= width {
        return fit(&s, width) + &paint.warn(mark);
    }
    fit(&s, width)
}

/// `s` cut to `width` columns (with `…` where it was cut).
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `name` shortened from the middle to `room` columns: `logs/2026/…/app-07.log`.
pub fn shorten_middle(name: &str, room: usize) -> String {
    let n = name.chars().count();
    if n <= room {
        return name.to_string();
    }
    let keep = room.saturating_sub(1);
    let head = keep / 2;
    let tail = keep - head;
    let chars: Vec<char> = name.chars().collect();
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, workers: usize, busy: usize, util: f64, q: (usize, usize)) -> StageView {
        StageView {
            name: name.into(),
            workers,
            adapts: false,
            busy,
            queue: q,
            utilisation: util,
            finished: false,
        }
    }

    fn stages(compress: f64, upload: f64) -> Vec<StageView> {
        vec![
            stage("walk", 1, 0, 0.02, (0, 0)),
            stage("load", 2, 1, 0.21, (3, 64)),
            stage("compress", 2, 2, compress, (14, 64)),
            stage("upload", 2, 1, upload, (0, 64)),
            stage("record", 1, 0, 0.01, (0, 64)),
        ]
    }

    /// One 1 GiB file, 42 % through, compress the bottleneck.
    fn one_big_file() -> Snapshot {
        Snapshot {
            discovered: 1,
            discovery_done: true,
            finished: 0,
            failed: 0,
            bytes_done: 451 << 20,
            bytes_total: Some(1 << 30),
            rate: 96.0 * 1048576.0,
            files: vec![FileView {
                name: "big/var/log/production/application-server-2026-11-28.log".into(),
                size: 1 << 30,
                done: 451 << 20,
                rate: 96.0 * 1048576.0,
            }],
            stages: stages(0.97, 0.12),
            cores: 2,
        }
    }

    /// 20,000 small files, the walk still going.
    fn many_small_files() -> Snapshot {
        Snapshot {
            discovered: 12_480,
            discovery_done: false,
            finished: 7_311,
            failed: 0,
            bytes_done: 61 << 20,
            bytes_total: Some(104 << 20),
            rate: 210.0 * 1048576.0,
            files: vec![],
            stages: stages(0.93, 0.35),
            cores: 2,
        }
    }

    /// A slow sink: upload the bottleneck, three files in flight.
    fn slow_sink() -> Snapshot {
        let f = |name: &str, size: u64, done: u64| FileView {
            name: name.into(),
            size,
            done,
            rate: 4.0 * 1048576.0,
        };
        Snapshot {
            discovered: 500,
            discovery_done: true,
            finished: 212,
            failed: 0,
            bytes_done: 170 << 20,
            bytes_total: Some(400 << 20),
            rate: 11.5 * 1048576.0,
            files: vec![
                f("mixed/g3/h1/json_0412.json", 8 << 20, 3 << 20),
                f("mixed/g0/h4/src_0077.py", 6 << 20, 5 << 20),
                f("mixed/g2/h2/log_0301.log", 5 << 20, 1 << 20),
            ],
            stages: stages(0.18, 0.99),
            cores: 2,
        }
    }

    /// A run with failures.
    fn with_failures() -> Snapshot {
        Snapshot {
            failed: 3,
            ..many_small_files()
        }
    }

    fn screen(s: &Snapshot, width: usize) -> String {
        let lines = render(s, width, 4, Paint::Plain);
        for l in &lines {
            assert!(l.chars().count() <= width, "wider than {width}: {l:?}");
        }
        lines.join("\n") + "\n"
    }

    #[test]
    fn the_live_view_at_80_and_120_columns() {
        for (name, s) in [
            ("one_big_file", one_big_file()),
            ("many_small_files", many_small_files()),
            ("slow_sink", slow_sink()),
            ("with_failures", with_failures()),
        ] {
            for width in [80, 120] {
                insta::assert_snapshot!(format!("live_{name}_{width}"), screen(&s, width));
            }
        }
    }

    #[test]
    fn a_narrow_terminal_still_gets_lines_that_fit() {
        for width in [20, 33, 47, 61] {
            screen(&slow_sink(), width);
            screen(&one_big_file(), width);
        }
    }

    #[test]
    fn the_bar_is_full_when_every_byte_is_delivered() {
        let mut s = one_big_file();
        s.bytes_done = 1 << 30;
        s.finished = 1;
        let line = &render(&s, 80, 0, Paint::Plain)[0];
        assert!(line.contains("100%"), "{line}");
        assert!(line.starts_with("ferry [==="), "{line}");
        assert!(!line.contains('>'), "{line}");
    }

    #[test]
    fn colour_marks_only_the_bottleneck_and_failures() {
        let plain = render(&with_failures(), 120, 4, Paint::Plain).join("\n");
        assert!(!plain.contains('\u{1b}'));
        let colour = render(&with_failures(), 120, 4, Paint::Color).join("\n");
        let escapes = colour.matches("\u{1b}[").count();
        assert!((2..=6).contains(&escapes), "{colour:?}");
        assert!(console::strip_ansi_codes(&colour) == plain);
    }

    #[test]
    fn names_are_shortened_from_the_middle() {
        assert_eq!(shorten_middle("abcdefghij", 7), "abc…hij");
        assert_eq!(shorten_middle("short", 7), "short");
    }
}
