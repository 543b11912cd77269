//! A network to measure on (issue 23): a fast S3-compatible server (s3s-fs, in process)
//! behind a delay proxy on 127.0.0.1 that adds a round-trip time, can cap the bandwidth,
//! and can throttle as S3 does (503 SlowDown above K requests in flight). `tc netem` is not
//! in this kernel, so the link is ours. A benchmark tool, not a test.
//!
//! ```text
//! cargo run --release --example netlab -- --rtt 30ms [--bandwidth 100Mbit] [--throttle 64] [--dir D]
//! ```
//!
//! It prints the environment a client needs (`export AWS_ENDPOINT_URL=…` and the keys) and
//! serves until killed; `scripts/netlab` wraps it. Each direction of each connection is
//! delayed by half the round trip, in order; with a bandwidth cap every byte also waits its
//! turn on one shared link per direction.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The key pair the server accepts.
const ACCESS_KEY: &str = "netlab";
/// The secret of [`ACCESS_KEY`].
const SECRET_KEY: &str = "netlab-secret";

/// What the link is asked to be.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Round-trip time added (half each way).
    rtt: Duration,
    /// Bytes per second each way; `None`: unlimited.
    bandwidth: Option<u64>,
    /// Requests in flight above which the server answers 503 SlowDown.
    throttle: Option<usize>,
}

fn main() {
    let mut link = Link {
        rtt: Duration::ZERO,
        bandwidth: None,
        throttle: None,
    };
    let mut dir: Option<std::path::PathBuf> = None;
    let mut bucket = "netlab".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--rtt" => {
                link.rtt =
                    humantime::parse_duration(&value()).unwrap_or_else(|e| usage(&e.to_string()))
            }
            "--bandwidth" => link.bandwidth = Some(bits_per_second(&value()) / 8),
            "--throttle" => {
                link.throttle = Some(value().parse().unwrap_or_else(|_| usage("--throttle K")))
            }
            "--dir" => dir = Some(value().into()),
            "--bucket" => bucket = value(),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let root = dir.unwrap_or_else(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        std::path::PathBuf::from(base).join(format!("ferry-netlab-{}", std::process::id()))
    });
    std::fs::create_dir_all(root.join(&bucket)).expect("cannot make the server's directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start tokio");
    runtime.block_on(async move {
        let server = serve_s3(&root, link.throttle).await;
        let proxy = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the proxy");
        let endpoint = format!("http://{}", proxy.local_addr().expect("proxy address"));
        println!(
            "# netlab: s3s-fs over {} at {server}, through {link:?}",
            root.display()
        );
        println!("export AWS_ENDPOINT_URL={endpoint}");
        println!("export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY}");
        println!("export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true");
        println!("# deliver with: ferry DIR --to s3://{bucket}/run1");
        let up = Arc::new(Shared::default());
        let down = Arc::new(Shared::default());
        loop {
            let Ok((client, _)) = proxy.accept().await else {
                continue;
            };
            let (server, up, down) = (server.clone(), up.clone(), down.clone());
            tokio::spawn(async move {
                if let Ok(upstream) = TcpStream::connect(&server).await {
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    relay(client, upstream, link, up, down).await;
                }
            });
        }
    });
}

fn usage(why: &str) -> ! {
    eprintln!("netlab: {why}\nusage: netlab [--rtt 30ms] [--bandwidth 100Mbit] [--throttle K] [--dir D] [--bucket B]");
    std::process::exit(2)
}

/// `100Mbit`, `1Gbit`, `500kbit` → bits per second.
fn bits_per_second(s: &str) -> u64 {
    let lower = s.to_ascii_lowercase();
    let (num, unit) = lower.split_at(
        lower
            .find(|c: char| c.is_alphabetic())
            .unwrap_or(lower.len()),
    );
    let n: f64 = num
        .trim()
        .parse()
        .unwrap_or_else(|_| usage("--bandwidth 100Mbit"));
    let scale = match unit.trim_end_matches("/s").trim_end_matches("ps") {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => usage("--bandwidth takes bit, kbit, Mbit or Gbit"),
    };
    (n * scale) as u64
}

/// The s3s-fs server on a port of its own; returns `127.0.0.1:PORT`. Above `throttle`
/// requests in flight it answers 503 SlowDown, as S3 does.
async fn serve_s3(root: &std::path::Path, throttle: Option<usize>) -> String {
    let mut b = S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).expect("s3s-fs"));
    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = b.build();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service = hyper::service::service_fn(move |req| {
        let (s, in_flight) = (service.clone(), in_flight.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let _left = Left(in_flight);
            if throttle.is_some_and(|k| now > k) {
                return Ok(slow_down());
            }
            hyper::service::Service::call(&s, req).await
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("cannot bind the server");
    let addr = listener.local_addr().expect("server address").to_string();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    addr
}

/// Counts a request out of flight when it is done, however it ends.
struct Left(Arc<AtomicUsize>);

impl Drop for Left {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// S3's answer to too many requests.
fn slow_down() -> hyper::Response<s3s::Body> {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let mut r = hyper::Response::new(s3s::Body::from(xml.to_string()));
    *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

/// One direction of the link, shared by every connection: when it is next free.
#[derive(Default)]
struct Shared {
    free_at: Mutex<Option<Instant>>,
}

impl Shared {
    /// When `len` bytes sent now have crossed a link of `bandwidth` (after what is queued).
    fn crossed(&self, len: usize, bandwidth: Option<u64>) -> Instant {
        let now = Instant::now();
        let Some(bw) = bandwidth.filter(|b| *b > 0) else {
            return now;
        };
        let mut free = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let start = free.filter(|f| *f > now).unwrap_or(now);
        let done = start + Duration::from_secs_f64(len as f64 / bw as f64);
        *free = Some(done);
        done
    }
}

/// Relays both directions of one connection, each delayed by half the round trip.
async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    link: Link,
    up: Arc<Shared>,
    down: Arc<Shared>,
) {
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let half = link.rtt / 2;
    let a = tokio::spawn(one_way(cr, uw, half, link.bandwidth, up));
    let b = tokio::spawn(one_way(ur, cw, half, link.bandwidth, down));
    let _ = a.await;
    let _ = b.await;
}

/// Reads from `from` and writes each chunk to `to` once `delay` (and its turn on the link)
/// has passed, in order; a closed side closes the other.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    bandwidth: Option<u64>,
    link: Arc<Shared>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = link.crossed(n, bandwidth) + delay;
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
