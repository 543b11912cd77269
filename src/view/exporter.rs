//! `--metrics-addr`: what the summary knows, served while the command runs in
//! Prometheus's text format (the `prometheus-client` crate), so an operator's Prometheus
//! scrapes a long run or a watch: files and bytes by outcome, retries, deletions, bytes in flight,
//! and each stage's work, waits, queue, limit and utilisation.
//!
//! One thread answers `GET /metrics` (anything else is a 404), one connection at a time,
//! each read with a short timeout: a scrape is small, and a client that stalls cannot
//! hold the run. The thread ends when the [`Exporter`] is dropped.

use crate::counters::Counters;
use crate::pipeline::StageMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a scrape's request may take to arrive, and its answer to be taken.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scrape is answered with, made afresh each time.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A running exporter; dropping it stops the thread.
pub struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Serves what `render` makes (see [`render`]) on `listener` (bound by the caller
    /// before the run, so a port in use is a setup error, not a failure mid-run).
    ///
    /// # Errors
    /// When the listener's address cannot be read or its thread cannot start.
    pub fn start(listener: TcpListener, render: Render) -> std::io::Result<Exporter> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Relaxed) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        answer(conn, &*render);
                    }
                }
            })?;
        Ok(Exporter {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it serves (the port chosen, when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wake the blocking accept; it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, CLIENT_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request from `conn` and answers it.
fn answer(mut conn: TcpStream, render: &(dyn Fn() -> String + Send + Sync)) {
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let response = match (method, path) {
        (Some(b"GET"), Some(p)) if p == b"/metrics" || p.starts_with(b"/metrics?") => {
            let body = render();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        (Some(_), Some(_)) => "HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\nConnection: close\r\n\r\nferry serves /metrics only\n".to_string(),
        _ => return,
    };
    let _ = conn.write_all(response.as_bytes());
}

/// The metrics now, in Prometheus's text format: `m`'s counters, each of `stages` (their
/// utilisation since `started`), and `gauges` (name, help, value) besides.
pub fn render(
    stages: &[Arc<StageMetrics>],
    m: &Counters,
    started: Instant,
    gauges: &[(&str, &str, f64)],
) -> String {
    let mut r = Registry::with_prefix("ferry");
    for (name, help, value) in gauges {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(*value);
        r.register(*name, *help, g);
    }
    let files = Family::<Vec<(String, String)>, Counter>::default();
    for (outcome, n) in [
        ("succeeded", &m.succeeded),
        ("skipped", &m.skipped),
        ("failed", &m.failed),
        ("cancelled", &m.cancelled),
    ] {
        files
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc_by(n.load(Relaxed));
    }
    r.register("files", "Files ended, by outcome", files);
    let count = |a: &AtomicU64| ConstCounter::new(a.load(Relaxed));
    r.register(
        "files_discovered",
        "Files found so far",
        count(&m.discovered),
    );
    r.register(
        "bytes_read",
        "Bytes read from sources (delivery) or objects (restore, verify)",
        count(&m.bytes_in),
    );
    r.register(
        "bytes_written",
        "Bytes written to the sink or DEST",
        count(&m.bytes_out),
    );
    r.register("retries", "Sink requests retried", count(&m.retries));
    r.register(
        "deleted",
        "Entries removed by --delete: objects whose sources are gone (and directories)",
        count(&m.deleted),
    );
    let in_flight = Gauge::<i64>::default();
    in_flight.set(m.bytes_in_flight.load(Relaxed) as i64);
    r.register(
        "bytes_in_flight",
        "Bytes held between reading and delivery",
        in_flight,
    );
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let per_stage =
        |help: &str, name: &str, value: &dyn Fn(&StageMetrics) -> f64, r: &mut Registry| {
            let family = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
            for s in stages {
                family
                    .get_or_create(&vec![("stage".into(), s.name.clone())])
                    .set(value(s));
            }
            r.register(name, help, family);
        };
    per_stage(
        "Items each stage has handled",
        "stage_items",
        &|s| s.items.load(Relaxed) as f64,
        &mut r,
    );
    per_stage(
        "Seconds each stage's workers spent on items (waits for room downstream included)",
        "stage_busy_seconds",
        &|s| s.busy_time().as_secs_f64(),
        &mut r,
    );
    per_stage(
        "Of the busy seconds, those spent waiting for room downstream",
        "stage_blocked_seconds",
        &|s| s.blocked_time().as_secs_f64(),
        &mut r,
    );
    per_stage(
        "Items waiting in each stage's queue",
        "stage_queue_length",
        &|s| s.queue_len.load(Relaxed) as f64,
        &mut r,
    );
    per_stage(
        "Items each stage may have in hand at once (its workers, or its adaptive limit)",
        "stage_limit",
        &|s| s.allowed() as f64,
        &mut r,
    );
    per_stage(
        "Share of each stage's capacity spent working since the start, as the summary reports it",
        "stage_utilisation_ratio",
        &|s| (s.work_time().as_secs_f64() / (s.allowed().max(1) as f64 * elapsed)).min(1.0),
        &mut r,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Binds `addr` for [`Exporter::start`], before a run begins.
///
/// # Errors
/// The OS's, when the address is in use or not this machine's.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape is Prometheus text with the counters and each stage; anything but
    /// `GET /metrics` is a 404; dropping the exporter ends its thread.
    #[test]
    fn a_scrape_shows_the_counters_and_every_stage() {
        let m = Arc::new(Counters::default());
        m.succeeded.store(7, Relaxed);
        m.bytes_out.store(1234, Relaxed);
        let stage = Arc::new(StageMetrics::new("upload", 2, 16, Arc::default()));
        stage.items.store(9, Relaxed);
        let started = Instant::now();
        let page = move || {
            render(
                std::slice::from_ref(&stage),
                &m,
                started,
                &[("extra", "A gauge", 2.5)],
            )
        };
        let ex = Exporter::start(
            bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            Arc::new(page),
        )
        .unwrap();
        let get = |path: &str| {
            let mut c = TcpStream::connect(ex.addr()).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let body = get("/metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("ferry_files_total{outcome=\"succeeded\"} 7"),
            "{body}"
        );
        assert!(body.contains("ferry_bytes_written_total 1234"), "{body}");
        assert!(
            body.contains("ferry_stage_items{stage=\"upload\"} 9"),
            "{body}"
        );
        assert!(
            body.contains("ferry_stage_utilisation_ratio{stage=\"upload\"}"),
            "{body}"
        );
        assert!(body.contains("ferry_extra 2.5"), "{body}");
        assert!(body.contains("ferry_extra 2.5"), "{body}");
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        assert!(get("/").starts_with("HTTP/1.1 404"));
        drop(ex);
    }
}
