//! Object stores — `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` —
//! through the `object_store` crate (Apache Arrow's), on a small tokio runtime owned by
//! the sink. Nothing here is specific to one cloud but building the store (`stores.rs`,
//! from each cloud's usual environment and files) and the words of its setup errors.
//!
//! An object smaller than one part is one PUT; a larger one is a multipart upload of
//! 8 MiB parts or more (S3 wants ≥ 5 MiB and ≤ 10,000 parts), completed on commit and
//! aborted on any failure, so nothing half-made is ever visible. Parts go out while the
//! next is gathered: up to 4 of one object, 8 across the sink, whose bytes are the only
//! ones held beyond the memory budget (64 MiB at most, with 8 MiB parts). Metadata: source size
//! and mtime on every object, and the source CRC-32 on single-PUT objects (a multipart
//! upload fixes its metadata when it starts, before the CRC is known). `object_store`
//! retries failed requests itself, with ferry's `--retries`/`--retry-backoff`.

mod spec;
mod stores;

pub use spec::{Cloud, CloudSpec};

use super::api::{
    bare_etag, Answer, ObjectMeta, OnEvent, Opened, Receipt, Sink, SinkError, SinkOptions, Upload,
};
use super::parts::part_size;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, AttributeValue, Attributes, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};
use object_store::{BackoffConfig, RetryConfig};
use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// How long an abort may take before ferry gives up on it and warns.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A sink over any object store.
pub struct CloudSink {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    spec: CloudSpec,
    /// Request counting and event capture, shared with the uploads.
    client: Client,
    /// object_store's retries, seen through its `tracing` events.
    events: ClientEvents,
    /// Slots for multipart parts in flight, across all uploads ([`PARTS_IN_FLIGHT`]).
    slots: Arc<tokio::sync::Semaphore>,
}

/// What every blocking call into object_store goes through.
#[derive(Clone)]
struct Client {
    /// Requests sent (object_store's own retries aside), for `-vv`.
    requests: Arc<AtomicU64>,
    /// The run's token: a request in flight ends when it is cancelled (but an abort,
    /// which cleans up after a cancel, runs to its own deadline).
    cancel: crate::pipeline::CancelToken,
    /// The subscriber object_store's events go to, set around each blocking call.
    dispatch: tracing::Dispatch,
}

impl Client {
    /// Runs `f` (which blocks on object_store) with its events captured.
    fn within<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }
}

/// Receives object_store's `tracing` events: each retry is counted (by the event's
/// source, the client's retry module) and forwarded as a line for `-vv`.
#[derive(Clone)]
struct ClientEvents {
    retries: Arc<AtomicU64>,
    forward: Option<OnEvent>,
    /// `[s3]`, `[gs]` or `[az]`: what the forwarded lines start with.
    tag: String,
}

/// The first line of an error's text (object_store's carry the whole response body).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Collects an event's message.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for ClientEvents {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.target().starts_with("object_store") && *m.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "object_store::client::retry" {
            self.retries.fetch_add(1, Relaxed);
        }
        if let Some(f) = &self.forward {
            let mut m = Message(String::new());
            event.record(&mut m);
            f(&format!("{} {}", self.tag, m.0));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl CloudSink {
    /// Connects and checks, with one listing request, that the bucket exists and the
    /// credentials work — before any file is read.
    ///
    /// # Errors
    /// [`SinkError::Setup`] saying which: no such bucket, access denied (naming every
    /// way to give credentials), unreachable.
    pub fn open(spec: &CloudSpec, opts: &SinkOptions) -> Result<Self, SinkError> {
        let target = spec.url();
        let setup = |cause: String| SinkError::Setup {
            target: target.clone(),
            cause,
        };
        let retry = opts.retry.map(|(retries, backoff)| RetryConfig {
            backoff: BackoffConfig {
                init_backoff: backoff,
                max_backoff: backoff.saturating_mul(1 << retries.min(16)),
                base: 2.0,
            },
            max_retries: retries as usize,
            retry_timeout: std::time::Duration::from_secs(180),
        });
        let built = stores::build(spec, retry, &stores::process_env).map_err(&setup)?;
        let store = built.store;
        let events = ClientEvents {
            retries: Arc::new(AtomicU64::new(0)),
            forward: opts.on_event.clone(),
            tag: format!("[{}]", spec.cloud.scheme()),
        };
        let dispatch = tracing::Dispatch::new(events.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-cloud")
            .enable_all()
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let prefix = ObjPath::from(spec.prefix.as_str());
        let bucket = format!("{} '{}'", spec.cloud.bucket_word(), spec.bucket);
        tracing::dispatcher::with_default(&dispatch, || {
            runtime.block_on(store.list_with_delimiter(Some(&prefix)))
        })
        .map_err(|e| {
            let text = e.to_string();
            if matches!(e, object_store::Error::NotFound { .. })
                || [
                    "NoSuchBucket",
                    "ContainerNotFound",
                    "The specified bucket does not exist",
                ]
                .iter()
                .any(|c| text.contains(c))
            {
                setup(format!("{bucket} does not exist"))
            } else if matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ) || [
                "403 Forbidden",
                "401 Unauthorized",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "AuthenticationFailed",
            ]
            .iter()
            .any(|c| text.contains(c))
            {
                setup(format!(
                    "access denied to {bucket} ({}); {}",
                    first_line(&text),
                    built.access_hint
                ))
            } else if text.to_ascii_lowercase().contains("credential") {
                setup(format!("{}; {}", SinkError::Store(e), built.access_hint))
            } else {
                setup(SinkError::Store(e).to_string())
            }
        })?;
        Ok(CloudSink {
            store,
            runtime,
            spec: spec.clone(),
            client: Client {
                requests: Arc::new(AtomicU64::new(1)),
                cancel: opts.cancel.clone(),
                dispatch,
            },
            events,
            slots: Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT)),
        })
    }

    /// An upload of `path` with these attributes.
    fn upload(&self, path: ObjPath, meta: &ObjectMeta, attributes: Attributes) -> Box<dyn Upload> {
        Box::new(CloudUpload {
            part_size: part_size(meta.source_size),
            client: self.client.clone(),
            store: self.store.clone(),
            handle: self.runtime.handle().clone(),
            path,
            attributes,
            buf: Vec::new(),
            whole: None,
            multipart: None,
            bytes: 0,
            deadline: meta.deadline,
            done: false,
            cloud: self.spec.cloud,
            parts: VecDeque::new(),
            slots: self.slots.clone(),
        })
    }

    fn path(&self, key: &Path) -> ObjPath {
        let key = key.to_string_lossy();
        if self.spec.prefix.is_empty() {
            ObjPath::from(key.as_ref())
        } else {
            ObjPath::from(format!("{}/{key}", self.spec.prefix))
        }
    }
}

/// Runs `fut` on the sink's runtime, bounded by the file's deadline.
fn run<T>(
    handle: &tokio::runtime::Handle,
    client: &Client,
    deadline: Option<Instant>,
    fut: impl Future<Output = object_store::Result<T>>,
) -> Result<T, SinkError> {
    run_with(handle, client, deadline, true, fut)
}

/// [`run`], ended early by the run's cancel token when `cancellable`.
fn run_with<T>(
    handle: &tokio::runtime::Handle,
    client: &Client,
    deadline: Option<Instant>,
    cancellable: bool,
    fut: impl Future<Output = object_store::Result<T>>,
) -> Result<T, SinkError> {
    client.requests.fetch_add(1, Relaxed);
    block(handle, client, deadline, cancellable, fut)
}

/// Waits for `fut` on the sink's runtime, bounded by `deadline` and, when `cancellable`,
/// ended by the run's cancel token; not counted as a request.
fn block<T>(
    handle: &tokio::runtime::Handle,
    client: &Client,
    deadline: Option<Instant>,
    cancellable: bool,
    fut: impl Future<Output = object_store::Result<T>>,
) -> Result<T, SinkError> {
    client.within(|| handle.block_on(bounded(&client.cancel, deadline, cancellable, fut)))
}

/// `fut`, bounded by `deadline` and, when `cancellable`, ended by the run's `cancel`.
async fn bounded<T>(
    cancel: &crate::pipeline::CancelToken,
    deadline: Option<Instant>,
    cancellable: bool,
    fut: impl Future<Output = object_store::Result<T>>,
) -> Result<T, SinkError> {
    let bounded = async {
        match deadline {
            None => Ok(fut.await),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                tokio::time::timeout(left, fut)
                    .await
                    .map_err(|_| SinkError::TimedOut)
            }
        }
    };
    let result = if cancellable {
        or_cancel(bounded, cancel)
            .await
            .unwrap_or(Err(SinkError::Cancelled))?
    } else {
        bounded.await?
    };
    result.map_err(store_error)
}

/// Error codes with which stores refuse a body whose checksum does not match it.
const DAMAGED: [&str; 4] = [
    "BadDigest",
    "XAmzContentSHA256Mismatch",
    "Md5Mismatch",
    "InvalidDigest",
];

/// A store's refusal as a [`SinkError`]: a body damaged on the way (its error code, the
/// only place the store says so) is [`SinkError::Damaged`], worth sending again; anything
/// else is [`SinkError::Store`].
fn store_error(e: object_store::Error) -> SinkError {
    let text = e.to_string();
    if DAMAGED
        .iter()
        .any(|code| text.contains(&format!("<Code>{code}</Code>")))
    {
        return SinkError::Damaged(e);
    }
    SinkError::Store(e)
}

impl Sink for CloudSink {
    fn describe(&self) -> String {
        self.spec.url()
    }

    fn begin(&self, key: &Path, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError> {
        let mut attributes = Attributes::new();
        // An archive object is a .gz file, with no Content-Encoding (a client that honours
        // one would decode it); a web object has its own type, and gzip bytes say so.
        let content_type = match &meta.web {
            None => "application/gzip".to_string(),
            Some(web) => web.content_type.clone(),
        };
        attributes.insert(Attribute::ContentType, AttributeValue::from(content_type));
        if meta.web.as_ref().is_some_and(|w| w.gzip) {
            attributes.insert(Attribute::ContentEncoding, AttributeValue::from("gzip"));
        }
        if let Some(cc) = &meta.cache_control {
            attributes.insert(Attribute::CacheControl, AttributeValue::from(cc.clone()));
        }
        attributes.insert(
            Attribute::Metadata(self.spec.cloud.meta_name("ferry-source-size")),
            AttributeValue::from(meta.source_size.to_string()),
        );
        if let Some(mode) = meta.source_mode {
            attributes.insert(
                Attribute::Metadata(self.spec.cloud.meta_name("ferry-source-mode")),
                AttributeValue::from(format!("{mode:04o}")),
            );
        }
        if let Some(class) = &self.spec.storage_class {
            attributes.insert(Attribute::StorageClass, AttributeValue::from(class.clone()));
        }
        if let Some(t) = meta
            .mtime
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            attributes.insert(
                Attribute::Metadata(self.spec.cloud.meta_name("ferry-source-mtime")),
                AttributeValue::from(format!("{}.{:09}", t.as_secs(), t.subsec_nanos())),
            );
        }
        Ok(self.upload(self.path(key), meta, attributes))
    }

    fn begin_meta(&self, name: &str, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError> {
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from("application/x-ndjson"),
        );
        Ok(self.upload(self.path(Path::new(name)), meta, attributes))
    }

    fn has(&self, key: &Path, len: u64) -> bool {
        let handle = self.runtime.handle();
        run(handle, &self.client, None, self.store.head(&self.path(key)))
            .is_ok_and(|m| m.size == len)
    }

    fn open_meta(&self, name: &str) -> Result<Option<Box<dyn Read + Send>>, SinkError> {
        let path = self.path(Path::new(name));
        self.client.requests.fetch_add(1, Relaxed);
        match self
            .client
            .within(|| self.runtime.block_on(self.store.get(&path)))
        {
            Ok(r) => Ok(Some(Box::new(StreamRead {
                stream: r.into_stream(),
                handle: self.runtime.handle().clone(),
                chunk: Bytes::new(),
                cancel: self.client.cancel.clone(),
            }))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(SinkError::Setup {
                target: self.describe(),
                cause: format!("cannot read {name}: {}", SinkError::Store(e)),
            }),
        }
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let dir = ObjPath::from(self.spec.prefix.as_str());
        let listed = run(
            self.runtime.handle(),
            &self.client,
            None,
            self.store.list_with_delimiter(Some(&dir)),
        )?;
        let mut names: Vec<String> = listed
            .objects
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_meta(&self, name: &str) -> Result<(), SinkError> {
        let path = self.path(Path::new(name));
        match run(
            self.runtime.handle(),
            &self.client,
            None,
            self.store.delete(&path),
        ) {
            Err(SinkError::Store(object_store::Error::NotFound { .. })) => Ok(()),
            r => r,
        }
    }

    fn copy_object(
        &self,
        from: &Path,
        to: &Path,
        size: u64,
        etag: Option<&str>,
    ) -> Result<Option<Receipt>, SinkError> {
        let (from, to) = (self.path(from), self.path(to));
        let handle = self.runtime.handle();
        let there = run(handle, &self.client, None, self.store.head(&from))?;
        let tag = there.e_tag.as_deref().map(super::api::bare_etag);
        if there.size != size || etag.zip(tag).is_some_and(|(a, b)| a != b) {
            return Err(SinkError::Refused(format!(
                "{} bytes there (ETag {}), {size} recorded (ETag {}): not the object ferry stored",
                there.size,
                tag.unwrap_or("none"),
                etag.unwrap_or("none")
            )));
        }
        run(handle, &self.client, None, self.store.copy(&from, &to))?;
        let copied = run(handle, &self.client, None, self.store.head(&to))?;
        Ok(Some(Receipt {
            bytes: copied.size,
            crc32: None,
            etag: copied.e_tag.as_deref().map(|t| bare_etag(t).to_string()),
        }))
    }

    fn delete_object(&self, key: &Path, size: u64) -> Result<bool, SinkError> {
        let path = self.path(key);
        let handle = self.runtime.handle();
        match run(handle, &self.client, None, self.store.head(&path)) {
            Err(SinkError::Store(object_store::Error::NotFound { .. })) => return Ok(false),
            Err(e) => return Err(e),
            Ok(m) if m.size != size => {
                return Err(SinkError::Refused(format!(
                    "{} bytes there, {size} recorded: not the object ferry stored",
                    m.size
                )))
            }
            Ok(_) => {}
        }
        match run(handle, &self.client, None, self.store.delete(&path)) {
            Err(SinkError::Store(object_store::Error::NotFound { .. })) => Ok(false),
            r => r.map(|()| true),
        }
    }

    fn list_objects(&self, visit: &mut dyn FnMut(&Path, u64)) -> Result<bool, SinkError> {
        self.list_objects_tagged(&mut |key, size, _| visit(key, size))
    }

    fn list_objects_tagged(
        &self,
        visit: &mut dyn FnMut(&Path, u64, Option<&str>),
    ) -> Result<bool, SinkError> {
        let dir = ObjPath::from(self.spec.prefix.as_str());
        let handle = self.runtime.handle();
        let mut stream = self.store.list(Some(&dir));
        let mut seen = 0u64;
        // object_store pages the listing (1,000 keys a request) and streams the pages.
        self.client.requests.fetch_add(1, Relaxed);
        while let Some(item) = self.client.within(|| handle.block_on(stream.next())) {
            let meta = item.map_err(SinkError::Store)?;
            seen += 1;
            if seen.is_multiple_of(1000) {
                self.client.requests.fetch_add(1, Relaxed);
            }
            let full = meta.location.as_ref();
            let key = match self.spec.prefix.as_str() {
                "" => full,
                p => full
                    .strip_prefix(p)
                    .and_then(|k| k.strip_prefix('/'))
                    .unwrap_or(full),
            };
            visit(
                Path::new(key),
                meta.size,
                meta.e_tag.as_deref().map(bare_etag),
            );
        }
        Ok(true)
    }

    fn requests(&self) -> Option<u64> {
        Some(self.client.requests.load(Relaxed))
    }

    fn client_retries(&self) -> u64 {
        self.events.retries.load(Relaxed)
    }

    fn commits_later(&self) -> bool {
        true
    }

    fn throttled(&self) -> u64 {
        // object_store retries exactly what signals load: 5xx (503 SlowDown), 429, and
        // timeouts or dropped connections.
        self.events.retries.load(Relaxed)
    }

    fn object_size(&self, key: &Path) -> Result<Option<u64>, SinkError> {
        let handle = self.runtime.handle();
        match run(handle, &self.client, None, self.store.head(&self.path(key))) {
            Ok(m) => Ok(Some(m.size)),
            Err(SinkError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_object(&self, key: &Path) -> Result<Opened, SinkError> {
        let path = self.path(key);
        self.client.requests.fetch_add(1, Relaxed);
        match self
            .client
            .within(|| self.runtime.block_on(self.store.get(&path)))
        {
            Ok(r) => Ok(Opened {
                short_read_is_end: false,
                encoded: r
                    .attributes
                    .get(&Attribute::ContentEncoding)
                    .is_some_and(|v| !v.trim().is_empty() && !v.eq_ignore_ascii_case("identity")),
                body: Box::new(StreamRead {
                    stream: r.into_stream(),
                    handle: self.runtime.handle().clone(),
                    chunk: Bytes::new(),
                    cancel: self.client.cancel.clone(),
                }),
            }),
            Err(object_store::Error::NotFound { .. }) => Err(SinkError::NoSuchObject),
            Err(e)
                if ["InvalidObjectState", "BlobArchived"]
                    .iter()
                    .any(|c| e.to_string().contains(c)) =>
            {
                Err(SinkError::Archived)
            }
            Err(e) => Err(SinkError::Store(e)),
        }
    }

    fn release_meta(&self, name: &str, marker: &str) -> Result<(), SinkError> {
        let path = self.path(Path::new(name));
        let handle = self.runtime.handle();
        // Not ended by the run's cancel (a cancelled run still gives its lease back), but
        // bounded: a store that stopped answering must not hold up the exit.
        let deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(5));
        let got = run_with(handle, &self.client, deadline, false, async {
            self.store.get(&path).await?.bytes().await
        });
        match got {
            Ok(bytes) if super::api::contains(&bytes, marker.as_bytes()) => run_with(
                handle,
                &self.client,
                deadline,
                false,
                self.store.delete(&path),
            ),
            Ok(_) | Err(SinkError::Store(object_store::Error::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn create_meta(&self, name: &str, bytes: &[u8]) -> Result<bool, SinkError> {
        let path = self.path(Path::new(name));
        let opts = PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        let put = || {
            run(
                self.runtime.handle(),
                &self.client,
                None,
                self.store
                    .put_opts(&path, PutPayload::from(bytes.to_vec()), opts.clone()),
            )
        };
        match put() {
            Ok(_) => Ok(true),
            Err(SinkError::Store(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            )) => Ok(false),
            // A store (or emulator) without conditional writes: look, then write. Two runs
            // starting in the same instant may then both write; the lease's read-back
            // settles which one holds it.
            Err(SinkError::Store(object_store::Error::NotImplemented { .. })) => {
                match self.open_meta(name)? {
                    Some(_) => Ok(false),
                    None => self.write_meta(name, bytes).map(|_| true),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn write_meta(&self, name: &str, bytes: &[u8]) -> Result<(), SinkError> {
        let path = self.path(Path::new(name));
        run(
            self.runtime.handle(),
            &self.client,
            None,
            self.store.put(&path, PutPayload::from(bytes.to_vec())),
        )
        .map(|_| ())
    }
}

/// `fut`'s output, or `None` once `cancel` is cancelled first (checked every 50 ms).
async fn or_cancel<T>(
    fut: impl Future<Output = T>,
    cancel: &crate::pipeline::CancelToken,
) -> Option<T> {
    let cancelled = async {
        while !cancel.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    match futures::future::select(Box::pin(fut), Box::pin(cancelled)).await {
        futures::future::Either::Left((r, _)) => Some(r),
        futures::future::Either::Right(_) => None,
    }
}

/// A blocking reader over an object's byte stream, chunk by chunk as they arrive; a read
/// waiting on a store that stops answering ends when the run is cancelled.
struct StreamRead {
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    handle: tokio::runtime::Handle,
    chunk: Bytes,
    cancel: crate::pipeline::CancelToken,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let next = self
                .handle
                .block_on(or_cancel(self.stream.next(), &self.cancel))
                .ok_or_else(|| std::io::Error::other("cancelled"))?;
            match next {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// One object: a single PUT, or a multipart upload once it outgrows one part.
struct CloudUpload {
    /// Bytes gathered before a part is sent.
    part_size: usize,
    client: Client,
    store: Arc<dyn ObjectStore>,
    handle: tokio::runtime::Handle,
    path: ObjPath,
    attributes: Attributes,
    buf: Vec<u8>,
    /// The body of a single PUT, once its commit has begun: each attempt sends it whole.
    whole: Option<PutPayload>,
    multipart: Option<Box<dyn MultipartUpload>>,
    bytes: u64,
    deadline: Option<Instant>,
    /// Committed or aborted: nothing left to clean up.
    done: bool,
    /// Which store: how metadata is named there.
    cloud: Cloud,
    /// Parts sent and not yet confirmed, oldest first: a big object's parts go out
    /// together, so its upload costs a round trip per [`PARTS_PER_OBJECT`] parts, not
    /// per part.
    parts: VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    /// The sink's slots for parts in flight, shared by all its uploads.
    slots: Arc<tokio::sync::Semaphore>,
}

/// Parts of one object in flight at most.
const PARTS_PER_OBJECT: usize = 4;
/// Parts in flight at most across all objects: their bytes (8 MiB each, or more for an
/// object over 80 GiB) are held beyond the memory budget, so this bounds the extra.
pub const PARTS_IN_FLIGHT: usize = 8;

/// Whether an ETag is an MD5 in hex (GCS's for an object stored in one PUT).
fn md5_shaped(tag: &str) -> bool {
    tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

impl CloudUpload {
    /// Waits for the oldest part in flight to be confirmed.
    fn confirm_one(&mut self) -> Result<(), SinkError> {
        let Some(part) = self.parts.pop_front() else {
            return Ok(());
        };
        block(
            &self.handle,
            &self.client,
            self.deadline,
            true,
            async move {
                part.await.unwrap_or_else(|e| {
                    Err(object_store::Error::Generic {
                        store: "ferry",
                        source: Box::new(e),
                    })
                })
            },
        )
    }

    fn send_part(&mut self) -> Result<(), SinkError> {
        if self.multipart.is_none() {
            let opts = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..Default::default()
            };
            let mp = run(
                &self.handle,
                &self.client,
                self.deadline,
                self.store.put_multipart_opts(&self.path, opts),
            )?;
            self.multipart = Some(mp);
        }
        while self.parts.len() >= PARTS_PER_OBJECT {
            self.confirm_one()?;
        }
        let slots = self.slots.clone();
        let slot = block(
            &self.handle,
            &self.client,
            self.deadline,
            true,
            async move {
                slots
                    .acquire_owned()
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "ferry",
                        source: Box::new(e),
                    })
            },
        )?;
        let data = PutPayload::from(std::mem::take(&mut self.buf));
        let Some(part) = self.multipart.as_mut().map(|mp| mp.put_part(data)) else {
            return Ok(());
        };
        self.client.requests.fetch_add(1, Relaxed);
        // The part runs on the sink's runtime while the next is gathered; its retries
        // still reach the events subscriber.
        let sent = async move {
            let r = part.await;
            drop(slot);
            r
        };
        let sent = tracing::instrument::WithSubscriber::with_subscriber(
            sent,
            self.client.dispatch.clone(),
        );
        self.parts.push_back(self.handle.spawn(sent));
        Ok(())
    }
}

impl CloudUpload {
    /// The commit of an object small enough for one PUT: the body, whole, in one request
    /// (sent again whole on each attempt).
    async fn put_whole(&mut self) -> Result<Receipt, SinkError> {
        let opts = PutOptions {
            attributes: self.attributes.clone(),
            ..Default::default()
        };
        let buf = &mut self.buf;
        let payload = self
            .whole
            .get_or_insert_with(|| PutPayload::from(std::mem::take(buf)))
            .clone();
        self.client.requests.fetch_add(1, Relaxed);
        // GCS checks no checksum of a single PUT that object_store can send; its ETag is
        // the MD5 of what it stored, so what arrived is checked against what was sent.
        let md5 = (self.cloud == Cloud::Gcs).then(|| {
            use md5::Digest;
            let mut h = md5::Md5::new();
            for chunk in payload.iter() {
                h.update(chunk);
            }
            format!("{:x}", h.finalize())
        });
        let put = self.store.put_opts(&self.path, payload, opts);
        let done = bounded(&self.client.cancel, self.deadline, true, put).await?;
        if let (Some(sent), Some(tag)) = (&md5, done.e_tag.as_deref().map(bare_etag)) {
            if md5_shaped(tag) && !tag.eq_ignore_ascii_case(sent) {
                return Err(SinkError::Damaged(object_store::Error::Generic {
                    store: "GCS",
                    source: format!(
                        "the stored object's MD5 (its ETag) is {tag}, what was sent has {sent}"
                    )
                    .into(),
                }));
            }
        }
        self.done = true;
        Ok(Receipt {
            bytes: self.bytes,
            crc32: None,
            etag: done.e_tag.map(|t| bare_etag(&t).to_string()),
        })
    }
}

impl Upload for CloudUpload {
    fn source_crc32(&mut self, crc: u32) {
        // Only a single PUT can still take metadata; a multipart upload set it at creation.
        if self.multipart.is_none() {
            self.attributes.insert(
                Attribute::Metadata(self.cloud.meta_name("ferry-source-crc32")),
                AttributeValue::from(format!("{crc:08x}")),
            );
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.buf.extend_from_slice(bytes);
        self.bytes += bytes.len() as u64;
        if self.buf.len() >= self.part_size {
            self.send_part()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<Receipt, SinkError> {
        if self.multipart.is_none() {
            let handle = self.handle.clone();
            return self
                .client
                .clone()
                .within(|| handle.block_on(self.put_whole()));
        } else {
            if !self.buf.is_empty() {
                self.send_part()?;
            }
            while !self.parts.is_empty() {
                self.confirm_one()?;
            }
            if let Some(mp) = self.multipart.as_mut() {
                let done = run(&self.handle, &self.client, self.deadline, mp.complete())?;
                self.done = true;
                return Ok(Receipt {
                    bytes: self.bytes,
                    crc32: None,
                    etag: done.e_tag.map(|t| bare_etag(&t).to_string()),
                });
            }
        }
        self.done = true;
        Ok(Receipt {
            bytes: self.bytes,
            crc32: None,
            etag: None,
        })
    }

    fn commit_later(mut self: Box<Self>, mut answer: Answer) {
        if self.multipart.is_some() {
            // Its parts wait on the caller's thread as they are written; so does the end.
            return super::api::commit_here(&mut *self, answer);
        }
        let (handle, dispatch) = (self.handle.clone(), self.client.dispatch.clone());
        let cancel = self.client.cancel.clone();
        let attempts = async move {
            loop {
                let result = self.put_whole().await;
                let failed = result.is_err();
                match answer(result) {
                    // A cancelled run ends the pause early; the next attempt then fails.
                    Some(delay) if failed => {
                        or_cancel(tokio::time::sleep(delay), &cancel).await;
                    }
                    // A single PUT leaves nothing behind to abort.
                    _ => return,
                }
            }
        };
        handle.spawn(tracing::instrument::WithSubscriber::with_subscriber(
            attempts, dispatch,
        ));
    }

    fn abort(&mut self) {
        if !self.done {
            self.done = true;
            for part in self.parts.drain(..) {
                part.abort();
            }
            if let Some(mp) = self.multipart.as_mut() {
                // Bounded: a store that does not answer must not hold up the shutdown.
                let deadline = Some(Instant::now() + ABORT_WAIT);
                if let Err(e) = run_with(&self.handle, &self.client, deadline, false, mp.abort()) {
                    eprintln!(
                        "ferry: warning: the multipart upload of {} may be left incomplete ({e}); a lifecycle rule (S3: AbortIncompleteMultipartUpload) removes such uploads",
                        self.path
                    );
                }
            }
        }
    }
}

impl Drop for CloudUpload {
    fn drop(&mut self) {
        // Neither committed nor aborted (a panic on the way): leave no parts behind.
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_refused_as_damaged_is_sent_again_and_other_refusals_are_not() {
        let refusal = |code: &str| {
            object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Client error with status 400 Bad Request: <?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
            )
            .into(),
        }
        };
        for code in DAMAGED {
            let e = store_error(refusal(code));
            assert!(
                matches!(e, SinkError::Damaged(_)) && e.is_transient(),
                "{code}"
            );
        }
        for code in ["AccessDenied", "InvalidArgument", "NoSuchBucket"] {
            assert!(!store_error(refusal(code)).is_transient(), "{code}");
        }
    }
}
