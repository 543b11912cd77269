//! A real S3 server inside the test process: `s3s-fs` serving a directory on 127.0.0.1,
//! with SigV4 signatures checked against one key pair. The tests reach it over HTTP, as
//! ferry reaches any S3-compatible store, and read what it stored straight from its
//! directory — a check that does not go through ferry's own S3 client.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The key pair the server accepts.
pub const ACCESS_KEY: &str = "testing";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "testing";

/// A running server; it lives as long as the test process.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The directory behind it: `ROOT/BUCKET/KEY` holds each object.
    pub root: PathBuf,
    /// HTTP requests served so far.
    pub requests: Arc<AtomicU64>,
    /// Each request's method and path with query, in order.
    #[allow(dead_code)]
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TestServer {
    /// Starts a server with one empty bucket, `bucket`.
    pub fn start(bucket: &str) -> TestServer {
        Self::start_with(bucket, true)
    }

    /// Starts a server with one empty bucket that takes requests without a signature, as
    /// GCS's XML API does from a client whose OAuth is off (an emulator's set-up).
    #[allow(dead_code)]
    pub fn start_unsigned(bucket: &str) -> TestServer {
        Self::start_with(bucket, false)
    }

    fn start_with(bucket: &str, signed: bool) -> TestServer {
        let root = tempfile::Builder::new()
            .prefix("s3s-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        std::fs::create_dir(root.join(bucket)).unwrap();
        let mut b = S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).unwrap());
        if signed {
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        }
        let service = b.build();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let logged = log.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            counter.fetch_add(1, Ordering::SeqCst);
            logged
                .lock()
                .unwrap()
                .push(format!("{} {}", req.method(), req.uri()));
            // GCS takes an OAuth bearer token where S3 takes a signature: an unsigned
            // server lets it through, as GCS would check it.
            let bearer = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes().starts_with(b"Bearer"));
            if !signed && bearer {
                req.headers_mut().remove(hyper::header::AUTHORIZATION);
            }
            let s = service.clone();
            async move { hyper::service::Service::call(&s, req).await }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-s3s")
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
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
        TestServer {
            endpoint,
            root,
            requests,
            log,
            _runtime: runtime,
        }
    }

    /// Where the server keeps object `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The attributes the server stored with an object (content type and encoding, user
    /// metadata), as JSON.
    pub fn attributes(&self, bucket: &str, key: &str) -> serde_json::Value {
        let name = format!(
            ".bucket-{}.object-{}.metadata.json",
            base64_url(bucket.as_bytes()),
            base64_url(key.as_bytes())
        );
        let bytes = std::fs::read(self.root.join(&name))
            .unwrap_or_else(|e| panic!("attributes of {key} ({name}): {e}"));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Multipart uploads of `key` begun and neither completed nor aborted (s3s-fs keeps
    /// one attributes file per open upload).
    pub fn open_uploads(&self, bucket: &str, key: &str) -> usize {
        let open = format!(
            ".bucket-{}.object-{}.upload-",
            base64_url(bucket.as_bytes()),
            base64_url(key.as_bytes())
        );
        list_names(&self.root)
            .iter()
            .filter(|n| n.starts_with(&open))
            .count()
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// URL-safe base64 without padding, as s3s-fs names its metadata files.
fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
