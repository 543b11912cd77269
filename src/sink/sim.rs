//! `sim:` — a simulated network upload: real waits, injected failures, nothing stored.
//!
//! Each part written is answered after `latency ± jitter` plus its transmission time on
//! one link of `bandwidth` shared by all uploads (like a single uplink), and fails with
//! probability `fail`. Parts of one object go out up to four at a time, as a multipart
//! upload's do; the commit waits for them, then is a request of its own. Requests wait on
//! one runtime thread of the simulator's (a timer each), so a commit in flight holds no
//! thread of ferry's, as a real store's request does not. Failures and jitter are drawn
//! from a hash of (seed, object key, part, attempt),
//! so a run with the same seed and files sees the same faults whatever the thread timing.
//! The sink checksums what it accepts, so the run can prove that what arrived is what was
//! sent.

use super::api::{Answer, ObjectMeta, Receipt, Sink, SinkError, Upload};
use super::parts::part_size;
use crate::pipeline::CancelToken;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Settings of the simulated network, parsed from `sim:key=value,…`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// One-way delay per request.
    pub latency: Duration,
    /// Uniform random spread around `latency` (±).
    pub jitter: Duration,
    /// Bytes per second of the shared link; `None` = unlimited.
    pub bandwidth: Option<u64>,
    /// Probability that a request fails (transiently), 0.0–1.0.
    pub fail: f64,
    /// Seed of the fault and jitter sequence.
    pub seed: u64,
    /// Requests in flight above which the store answers "slow down" (as S3's 503
    /// SlowDown) after one round trip; `None` = never.
    pub throttle: Option<usize>,
}

impl Default for SimSpec {
    fn default() -> Self {
        SimSpec {
            latency: Duration::from_millis(20),
            jitter: Duration::ZERO,
            bandwidth: None,
            fail: 0.0,
            seed: 0,
            throttle: None,
        }
    }
}

impl SimSpec {
    /// Parses `latency=20ms,bandwidth=40MiB/s,jitter=5ms,fail=0.05,seed=7`; every key is
    /// optional.
    ///
    /// # Errors
    /// A message naming the bad key or value.
    pub fn parse(params: &str) -> Result<Self, String> {
        let mut spec = SimSpec::default();
        for kv in params.split(',').filter(|s| !s.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("'{kv}' is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            let dur = |v: &str| {
                humantime::parse_duration(v).map_err(|e| format!("{k}={v}: {e} (try 20ms)"))
            };
            match k {
                "latency" => spec.latency = dur(v)?,
                "jitter" => spec.jitter = dur(v)?,
                "bandwidth" => {
                    let per_s = v.strip_suffix("/s").unwrap_or(v);
                    if per_s == "inf" || per_s == "unlimited" {
                        spec.bandwidth = None;
                    } else {
                        let n = parse_size::parse_size(per_s)
                            .map_err(|e| format!("bandwidth={v}: {e} (try 40MiB/s)"))?;
                        if n == 0 {
                            return Err("bandwidth must be more than 0".into());
                        }
                        spec.bandwidth = Some(n);
                    }
                }
                "fail" => {
                    let p: f64 = v
                        .parse()
                        .map_err(|_| format!("fail={v}: not a number (try 0.05)"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!("fail={v}: must be between 0 and 1"));
                    }
                    spec.fail = p;
                }
                "throttle" => {
                    let k: usize = v
                        .parse()
                        .map_err(|_| format!("throttle={v}: not a whole number (try 64)"))?;
                    if k == 0 {
                        return Err("throttle must be more than 0".into());
                    }
                    spec.throttle = Some(k);
                }
                "seed" => {
                    spec.seed = v
                        .parse()
                        .map_err(|_| format!("seed={v}: not a whole number"))?
                }
                other => {
                    return Err(format!(
                        "unknown key '{other}' (keys: latency, bandwidth, jitter, fail, seed, throttle)"
                    ))
                }
            }
        }
        if spec.jitter > spec.latency {
            return Err("jitter must not exceed latency".into());
        }
        Ok(spec)
    }
}

/// SplitMix64 over a few words: a deterministic, well-mixed draw.
fn mix(words: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for &w in words {
        h ^= w;
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h
}

fn key_hash(key: &Path) -> u64 {
    key.as_os_str()
        .as_bytes()
        .chunks(8)
        .fold(0xcbf2_9ce4_8422_2325, |h, c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            mix(&[h, u64::from_le_bytes(w)])
        })
}

/// How often a simulated request checks whether the run was cancelled.
const CANCEL_CHECK: Duration = Duration::from_millis(20);

struct Inner {
    spec: SimSpec,
    cancel: CancelToken,
    /// When the shared link is next free.
    link_free: Mutex<Instant>,
    /// Objects accepted: CRC-32 and length of what arrived.
    accepted: Mutex<HashMap<PathBuf, (u32, u64)>>,
    meta: Mutex<HashMap<String, Vec<u8>>>,
    /// Requests in flight now, and those refused for being over `throttle`.
    in_flight: AtomicUsize,
    throttled: AtomicU64,
}

/// The simulated network sink.
#[derive(Clone)]
pub struct SimSink {
    inner: Arc<Inner>,
}

impl SimSink {
    /// A simulated link with `spec`; waits end early when `cancel` fires.
    pub fn new(spec: SimSpec, cancel: CancelToken) -> Self {
        SimSink {
            inner: Arc::new(Inner {
                spec,
                cancel,
                link_free: Mutex::new(Instant::now()),
                accepted: Mutex::new(HashMap::new()),
                meta: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                throttled: AtomicU64::new(0),
            }),
        }
    }

    /// What the sink accepted for `key`: (CRC-32, length).
    pub fn accepted(&self, key: &Path) -> Option<(u32, u64)> {
        self.inner
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }
}

impl Inner {
    /// One request of `bytes`: transmission on the shared link, then the latency; then a
    /// draw decides whether it failed.
    async fn request(
        &self,
        bytes: u64,
        draw: u64,
        deadline: Option<Instant>,
    ) -> Result<(), SinkError> {
        let in_flight = self.in_flight.fetch_add(1, Relaxed) + 1;
        let over = self.spec.throttle.is_some_and(|k| in_flight > k);
        // Refused after one round trip, the body unsent.
        let until = self.arrival(if over { 0 } else { bytes }, draw);
        let result = self.sleep(until, deadline).await;
        self.in_flight.fetch_sub(1, Relaxed);
        result?;
        if over {
            self.throttled.fetch_add(1, Relaxed);
            return Err(SinkError::Throttled);
        }
        if self.fails(draw) {
            return Err(SinkError::Simulated);
        }
        Ok(())
    }

    /// Sleeps until `until` on the simulator's runtime, or the deadline, or the run is
    /// cancelled.
    async fn sleep(&self, until: Instant, deadline: Option<Instant>) -> Result<(), SinkError> {
        let stop_at = deadline.map_or(until, |d| d.min(until));
        loop {
            if self.cancel.is_cancelled() {
                return Err(SinkError::Cancelled);
            }
            let left = stop_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(CANCEL_CHECK)).await;
        }
        match deadline {
            Some(d) if d < until => Err(SinkError::TimedOut),
            _ => Ok(()),
        }
    }

    /// Whether the request of `draw` fails.
    fn fails(&self, draw: u64) -> bool {
        let p = (mix(&[draw, 2]) >> 11) as f64 / (1u64 << 53) as f64;
        p < self.spec.fail
    }

    /// When a request of `bytes` sent now is answered: its transmission on the shared
    /// link, then the latency.
    fn arrival(&self, bytes: u64, draw: u64) -> Instant {
        let now = Instant::now();
        let sent = match self.spec.bandwidth {
            None => now,
            Some(bw) => {
                let t = Duration::from_secs_f64(bytes as f64 / bw as f64);
                let mut free = self.link_free.lock().unwrap_or_else(|e| e.into_inner());
                let start = (*free).max(now);
                *free = start + t;
                *free
            }
        };
        let jitter = self.spec.jitter.as_nanos() as u64;
        let spread = if jitter == 0 {
            0i64
        } else {
            (mix(&[draw, 1]) % (2 * jitter + 1)) as i64 - jitter as i64
        };
        let latency =
            Duration::from_nanos((self.spec.latency.as_nanos() as i64 + spread).max(0) as u64);
        sent + latency
    }
}

/// The simulator's runtime: one thread of timers, for the whole process (never dropped,
/// so no request's last handle on a sink can end up dropping it from its own thread).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-sim")
            .enable_time()
            .build()
            .expect("the simulator's runtime thread starts")
    })
}

impl Sink for SimSink {
    fn delete_object(&self, key: &Path, _size: u64) -> Result<bool, SinkError> {
        // A simulated network keeps nothing: a delete is one more request, answered.
        let _ = key;
        Ok(true)
    }

    fn copy_object(
        &self,
        _from: &Path,
        _to: &Path,
        size: u64,
        _etag: Option<&str>,
    ) -> Result<Option<Receipt>, SinkError> {
        // A simulated network keeps nothing: a copy is one more request, answered.
        Ok(Some(Receipt {
            bytes: size,
            crc32: None,
            etag: None,
        }))
    }

    fn describe(&self) -> String {
        let s = &self.inner.spec;
        format!(
            "sim:latency={:?},jitter={:?},bandwidth={},fail={},seed={}{}",
            s.latency,
            s.jitter,
            s.bandwidth.map_or("unlimited".into(), |b| format!(
                "{}/s",
                crate::words::human_bytes(b)
            )),
            s.fail,
            s.seed,
            s.throttle
                .map_or(String::new(), |k| format!(",throttle={k}"))
        )
    }

    fn begin(&self, key: &Path, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError> {
        Ok(Box::new(SimUpload {
            sink: self.inner.clone(),
            key: key.to_path_buf(),
            key_hash: key_hash(key),
            crc: crc32fast::Hasher::new(),
            len: 0,
            part_size: part_size(meta.source_size) as u64,
            buffered: 0,
            part: 0,
            attempt: 0,
            deadline: meta.deadline,
            outstanding: VecDeque::new(),
        }))
    }

    fn has(&self, _key: &Path, _len: u64) -> bool {
        false
    }

    fn commits_later(&self) -> bool {
        true
    }

    fn throttled(&self) -> u64 {
        self.inner.throttled.load(Relaxed)
    }

    fn open_meta(&self, name: &str) -> Result<Option<Box<dyn Read + Send>>, SinkError> {
        let meta = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        Ok(meta
            .get(name)
            .map(|b| Box::new(std::io::Cursor::new(b.clone())) as Box<dyn Read + Send>))
    }

    fn write_meta(&self, name: &str, bytes: &[u8]) -> Result<(), SinkError> {
        self.inner
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn create_meta(&self, name: &str, bytes: &[u8]) -> Result<bool, SinkError> {
        let mut meta = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        if meta.contains_key(name) {
            return Ok(false);
        }
        meta.insert(name.to_string(), bytes.to_vec());
        Ok(true)
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let meta = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = meta
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_meta(&self, name: &str) -> Result<(), SinkError> {
        self.inner
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }
}

/// One simulated object upload.
struct SimUpload {
    sink: Arc<Inner>,
    key: PathBuf,
    key_hash: u64,
    crc: crc32fast::Hasher,
    len: u64,
    /// Bytes gathered for a part, sent once they reach `part_size` (and the rest with
    /// the commit), as the object stores' uploads do.
    part_size: u64,
    buffered: u64,
    /// Index of the next part; the commit is the request after the last part.
    part: u64,
    /// Attempts at the current part, so a retry gets a fresh draw.
    attempt: u64,
    deadline: Option<Instant>,
    /// When each part sent and not yet confirmed is answered, oldest first: parts of
    /// one object go out together, up to [`PARTS_PER_OBJECT`], as a multipart upload's
    /// do (the S3 sink's too).
    outstanding: VecDeque<Instant>,
}

/// Parts of one object in flight at most.
const PARTS_PER_OBJECT: usize = 4;

impl SimUpload {
    async fn request(&mut self, bytes: u64) -> Result<(), SinkError> {
        let draw = mix(&[self.sink.spec.seed, self.key_hash, self.part, self.attempt]);
        self.attempt += 1;
        self.sink.request(bytes, draw, self.deadline).await?;
        self.part += 1;
        self.attempt = 0;
        Ok(())
    }

    /// Waits for the parts in flight, then sends the commit request, and records what
    /// arrived.
    async fn commit_async(&mut self) -> Result<Receipt, SinkError> {
        // The last part, or the whole body of an object that never filled one.
        if self.buffered > 0 || self.part == 0 {
            self.send(self.buffered).await?;
            self.buffered = 0;
        }
        while !self.outstanding.is_empty() {
            self.confirm_one().await?;
        }
        self.request(0).await?;
        let crc = self.crc.clone().finalize();
        self.sink
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.key.clone(), (crc, self.len));
        Ok(Receipt {
            bytes: self.len,
            crc32: Some(crc),
            etag: None,
        })
    }
}

impl SimUpload {
    /// Sends a part without waiting for its answer (but for the oldest, beyond
    /// [`PARTS_PER_OBJECT`] in flight). A part the draw fails, or one over the throttle,
    /// is waited for and fails as a request of its own would.
    async fn send(&mut self, bytes: u64) -> Result<(), SinkError> {
        let sink = self.sink.clone();
        let over = sink
            .spec
            .throttle
            .is_some_and(|k| sink.in_flight.load(Relaxed) >= k);
        let draw = mix(&[sink.spec.seed, self.key_hash, self.part, self.attempt]);
        if over || sink.fails(draw) {
            return self.request(bytes).await;
        }
        let until = sink.arrival(bytes, draw);
        if sink.cancel.is_cancelled() || self.deadline.is_some_and(|d| d < until) {
            // It cannot be answered in time: it fails now, as a request would.
            self.attempt += 1;
            return sink.sleep(until, self.deadline).await;
        }
        sink.in_flight.fetch_add(1, Relaxed);
        self.outstanding.push_back(until);
        self.part += 1;
        self.attempt = 0;
        while self.outstanding.len() > PARTS_PER_OBJECT {
            self.confirm_one().await?;
        }
        Ok(())
    }

    /// Waits for the oldest part in flight to be answered.
    async fn confirm_one(&mut self) -> Result<(), SinkError> {
        let Some(until) = self.outstanding.pop_front() else {
            return Ok(());
        };
        let waited = self.sink.sleep(until, self.deadline).await;
        self.sink.in_flight.fetch_sub(1, Relaxed);
        waited
    }
}

impl Drop for SimUpload {
    fn drop(&mut self) {
        let n = self.outstanding.len();
        self.sink.in_flight.fetch_sub(n, Relaxed);
    }
}

impl Upload for SimUpload {
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        // Gathered into parts of the size the object stores' uploads send.
        let gathered = self.buffered + bytes.len() as u64;
        if gathered >= self.part_size {
            runtime().block_on(self.send(gathered))?;
            self.buffered = 0;
        } else {
            self.buffered = gathered;
        }
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn commit(&mut self) -> Result<Receipt, SinkError> {
        runtime().block_on(self.commit_async())
    }

    fn abort(&mut self) {}

    fn commit_later(mut self: Box<Self>, mut answer: Answer) {
        runtime().spawn(async move {
            loop {
                let result = self.commit_async().await;
                let failed = result.is_err();
                match answer(result) {
                    // A cancelled run ends the pause early; the next attempt then fails.
                    Some(delay) if failed => {
                        let _ = self.sink.sleep(Instant::now() + delay, None).await;
                    }
                    _ => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_rejects_bad_ones() {
        let s =
            SimSpec::parse("latency=20ms,bandwidth=40MiB/s,jitter=5ms,fail=0.05,seed=7").unwrap();
        assert_eq!(s.latency, Duration::from_millis(20));
        assert_eq!(s.jitter, Duration::from_millis(5));
        assert_eq!(s.bandwidth, Some(40 << 20));
        assert_eq!((s.fail, s.seed), (0.05, 7));
        assert_eq!(SimSpec::parse("").unwrap(), SimSpec::default());
        for bad in [
            "fail=2",
            "latency=soon",
            "colour=red",
            "bandwidth=0",
            "seed=x",
            "latency",
            "latency=1ms,jitter=2ms",
        ] {
            assert!(SimSpec::parse(bad).is_err(), "{bad}");
        }
    }

    fn meta() -> ObjectMeta {
        ObjectMeta::default()
    }

    #[test]
    fn accepts_and_checksums_what_arrives() {
        let sink = SimSink::new(SimSpec::parse("latency=0ms").unwrap(), CancelToken::new());
        let mut up = sink.begin(Path::new("k"), &meta()).unwrap();
        up.write(b"hello ").unwrap();
        up.write(b"world").unwrap();
        let r = up.commit().unwrap();
        assert_eq!(
            r,
            Receipt {
                bytes: 11,
                crc32: Some(crc32fast::hash(b"hello world")),
                etag: None,
            }
        );
        assert_eq!(sink.accepted(Path::new("k")), Some((r.crc32.unwrap(), 11)));
    }

    #[test]
    fn failures_follow_the_seed_and_retries_get_fresh_draws() {
        let outcome = |seed: u64| {
            let sink = SimSink::new(
                SimSpec::parse(&format!("latency=0ms,fail=0.5,seed={seed}")).unwrap(),
                CancelToken::new(),
            );
            (0..64)
                .map(|i| {
                    let mut up = sink.begin(Path::new(&format!("k{i}")), &meta()).unwrap();
                    up.write(b"x").unwrap();
                    let first = up.commit().is_ok();
                    // Retrying the same request draws again: 20 tries all failing is 1e-6.
                    let eventually = first || (0..20).any(|_| up.commit().is_ok());
                    (first, eventually)
                })
                .collect::<Vec<_>>()
        };
        let a = outcome(7);
        assert_eq!(a, outcome(7));
        assert_ne!(a, outcome(8));
        let fails = a.iter().filter(|(f, _)| !f).count();
        assert!((16..=48).contains(&fails), "{fails} of 64 failed at p=0.5");
        assert!(a.iter().all(|(_, e)| *e));
        let sink = SimSink::new(
            SimSpec::parse("latency=0ms,fail=1").unwrap(),
            CancelToken::new(),
        );
        let mut up = sink.begin(Path::new("k"), &meta()).unwrap();
        up.write(b"x").unwrap();
        assert!(up.commit().unwrap_err().is_transient());
    }

    #[test]
    fn waits_end_at_the_deadline_or_on_cancel() {
        let cancel = CancelToken::new();
        let sink = SimSink::new(SimSpec::parse("latency=1h").unwrap(), cancel.clone());
        let m = ObjectMeta {
            deadline: Some(Instant::now()),
            ..meta()
        };
        let mut up = sink.begin(Path::new("k"), &m).unwrap();
        up.write(b"x").unwrap();
        assert!(matches!(up.commit(), Err(SinkError::TimedOut)));
        cancel.cancel(crate::pipeline::CancelReason::Requested);
        let mut up = sink.begin(Path::new("k"), &meta()).unwrap();
        up.write(b"x").unwrap();
        assert!(up.commit().is_err());
    }
}
