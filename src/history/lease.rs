//! One writer per history: the lease a delivery run holds on its sink's manifest and
//! journal (one history per shard), so that a second run into the same history is refused
//! at once, by name, instead of the two interleaving their records.
//!
//! The lease is a small metadata object, `.ferry-lease[.shard-K-of-N].json`, created only
//! if absent (a `dir:` link that never replaces; a conditional PUT on object stores) and
//! naming its holder: run id, host, pid, start time and a heartbeat renewed every
//! [`HEARTBEAT`]. A holder is dead when it ran on this host and its pid is gone, or when its
//! heartbeat is older than [`EXPIRES`]; a dead holder's lease is taken over through a
//! takeover marker that, too, is created only if absent, so of two runs that find the
//! same dead holder exactly one takes over. See `docs/DESIGN.md`, "Several runs, one sink".

use crate::ident::hostname;
use crate::shard::Shard;
use crate::sink::{Sink, SinkError};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the holder renews its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A heartbeat older than this marks a holder on another host as dead.
pub const EXPIRES: Duration = Duration::from_secs(90);
/// The most of a lease object ever read: a bigger one is not ferry's.
const MAX_LEASE: u64 = 64 << 10;

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The run's id (random), which also names its journal segments.
    pub run: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When that process started, in clock ticks since boot (`/proc/PID/stat`), so that a
    /// pid reused by another process is not taken for the holder; 0 when unknown.
    #[serde(default)]
    pub pid_start: u64,
    /// When it started, in seconds since the epoch.
    pub started: u64,
    /// When it last renewed the lease, in seconds since the epoch.
    pub heartbeat: u64,
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds it and is alive.
    #[error("another ferry run is delivering into this sink's history ({name}): {} (pid {} on {}, started {}, last heard of {}s ago). Wait for it to end, or deliver into another sink or shard; if that run is gone for good (its host is down), its lease expires {}s after it was last heard of", .holder.run, .holder.pid, .holder.host, when(.holder.started), now().saturating_sub(.holder.heartbeat), EXPIRES.as_secs())]
    Busy {
        /// The lease object's name.
        name: String,
        /// The live holder.
        holder: Holder,
    },
    /// The lease object is not one ferry wrote.
    #[error("{name} at the sink is not a lease ferry can read ({why}); if no ferry run is delivering into this sink, remove it and run again")]
    Damaged {
        /// The lease object's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl From<LeaseError> for crate::error::FerryError {
    /// A live holder is a setup error (wait, or deliver elsewhere); a lease that does not
    /// parse is damaged history; a sink failure stays one.
    fn from(e: LeaseError) -> Self {
        use crate::error::FerryError;
        match e {
            LeaseError::Sink(e) => FerryError::Sink(e),
            e @ LeaseError::Busy { .. } => FerryError::Setup(Box::new(e)),
            e @ LeaseError::Damaged { .. } => FerryError::History(Box::new(e)),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The lease object's name for a history.
pub fn lease_name(shard: Option<Shard>) -> String {
    match shard {
        None => ".ferry-lease.json".into(),
        Some(s) => format!(".ferry-lease.shard-{}-of-{}.json", s.index(), s.count()),
    }
}

/// A lease held: renewed by a thread until dropped, then released.
pub struct Lease {
    sink: Arc<dyn Sink>,
    name: String,
    me: Holder,
    lost: Arc<AtomicBool>,
    /// Set when the lease is being given back: the heartbeat writes no more.
    released: Arc<AtomicBool>,
    stop: Option<crossbeam_channel::Sender<()>>,
    /// Disconnects when the heartbeat thread has ended.
    beat: Option<crossbeam_channel::Receiver<()>>,
}

fn read(sink: &dyn Sink, name: &str) -> Result<Option<Holder>, LeaseError> {
    let Some(r) = sink.open_meta(name)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    r.take(MAX_LEASE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SinkError::io(format!("cannot read {name}"), e))?;
    if bytes.len() as u64 > MAX_LEASE {
        return Err(LeaseError::Damaged {
            name: name.into(),
            why: "too big".into(),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LeaseError::Damaged {
            name: name.into(),
            why: e.to_string(),
        })
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn started_at(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `h` is certainly gone: it ran here and its process is not there (or the pid
/// is another process's now), or it has not renewed its lease for [`EXPIRES`].
fn dead(h: &Holder, host: &str) -> bool {
    let gone_here = h.host == host
        && h.pid != std::process::id()
        && match started_at(h.pid) {
            None => true,
            Some(t) => h.pid_start != 0 && t != h.pid_start,
        };
    gone_here || now().saturating_sub(h.heartbeat) > EXPIRES.as_secs()
}

impl Lease {
    /// Takes the lease of `shard`'s history at `sink` for run `run`, taking over one whose
    /// holder is dead.
    ///
    /// # Errors
    /// [`LeaseError::Busy`] while a live run holds it; [`LeaseError::Damaged`] for a lease
    /// object ferry cannot read; [`LeaseError::Sink`] when the sink fails.
    pub fn acquire(
        sink: Arc<dyn Sink>,
        shard: Option<Shard>,
        run: &str,
    ) -> Result<Lease, LeaseError> {
        let name = lease_name(shard);
        let host = hostname();
        let me = Holder {
            run: run.to_string(),
            host: host.clone(),
            pid: std::process::id(),
            pid_start: started_at(std::process::id()).unwrap_or(0),
            started: now(),
            heartbeat: now(),
        };
        let body = serde_json::to_vec(&me).unwrap_or_default();
        for _ in 0..5 {
            if sink.create_meta(&name, &body)? {
                // Read back: where a store cannot create only-if-absent, the last writer
                // wins, and only the run that reads itself back holds the lease.
                match read(sink.as_ref(), &name)? {
                    Some(h) if h.run == me.run => return Ok(Lease::start(sink, name, me)),
                    Some(h) => {
                        return Err(LeaseError::Busy { name, holder: h });
                    }
                    None => continue,
                }
            }
            let Some(held) = read(sink.as_ref(), &name)? else {
                continue; // released in between: try again
            };
            if !dead(&held, &host) {
                return Err(LeaseError::Busy { name, holder: held });
            }
            // Of every run that found this holder dead, the one that creates the marker
            // takes over; the others see a live holder (the taker) next time round.
            let marker = format!("{name}.takeover-{}", held.run);
            if !sink.create_meta(&marker, &body)? {
                let Some(h) = read(sink.as_ref(), &marker).ok().flatten() else {
                    continue;
                };
                if dead(&h, &host) {
                    sink.delete_meta(&marker)?; // a taker that died itself
                    continue;
                }
                return Err(LeaseError::Busy { name, holder: h });
            }
            let still = read(sink.as_ref(), &name)?;
            if still.as_ref().is_none_or(|h| h.run == held.run) {
                sink.delete_meta(&name)?;
            }
            let created = sink.create_meta(&name, &body)?;
            sink.delete_meta(&marker)?;
            if created {
                return Ok(Lease::start(sink, name, me));
            }
        }
        match read(sink.as_ref(), &name)? {
            Some(holder) => Err(LeaseError::Busy { name, holder }),
            None => Err(LeaseError::Damaged {
                name,
                why: "it kept changing while being taken".into(),
            }),
        }
    }

    fn start(sink: Arc<dyn Sink>, name: String, me: Holder) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let (ended_tx, ended) = crossbeam_channel::bounded::<()>(1);
        let (s, n, m, l, r) = (
            sink.clone(),
            name.clone(),
            me.clone(),
            lost.clone(),
            released.clone(),
        );
        let beat = std::thread::Builder::new()
            .name("ferry-lease".into())
            .spawn(move || {
                let _ended = ended_tx; // dropped when this thread ends: the drop's signal
                let mut me = m;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HEARTBEAT)
                {
                    match read(s.as_ref(), &n) {
                        Ok(Some(h)) if h.run == me.run => {
                            me.heartbeat = now();
                            let body = serde_json::to_vec(&me).unwrap_or_default();
                            if !r.load(Relaxed) {
                                let _ = s.write_meta(&n, &body);
                            }
                        }
                        // Taken over (this run was thought dead): stop renewing.
                        Ok(_) => {
                            l.store(true, Relaxed);
                            return;
                        }
                        Err(_) => {} // the sink hiccuped: try again at the next beat
                    }
                }
            })
            .ok()
            .map(|_| ended);
        Lease {
            sink,
            name,
            me,
            lost,
            released,
            stop: Some(stop),
            beat,
        }
    }

    /// Whether this run still holds the lease, as its last heartbeat found (every
    /// [`HEARTBEAT`]; no request of its own, so a store that stopped answering cannot
    /// hold it up). A run that lost it must not fold the journal into the manifest: its
    /// segments stay, for the holder to fold in.
    pub fn held(&self) -> bool {
        !self.lost.load(Relaxed)
    }

    /// The run id this lease was taken for.
    pub fn run(&self) -> &str {
        &self.me.run
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.released.store(true, Relaxed);
        drop(self.stop.take());
        // A heartbeat caught in a store that stopped answering is left behind, not waited
        // for past a few seconds: the run's exit does not hang on it.
        if let Some(ended) = self.beat.take() {
            let _ = ended.recv_timeout(Duration::from_secs(5));
        }
        let _ = self
            .sink
            .release_meta(&self.name, &format!("\"run\":\"{}\"", self.me.run));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{DirSink, SinkOptions};

    fn sink(dir: &std::path::Path) -> Arc<dyn Sink> {
        Arc::new(DirSink::open(dir, SinkOptions::default()).unwrap())
    }

    #[test]
    fn a_second_run_is_refused_by_name_until_the_first_releases() {
        let t = tempfile::tempdir().unwrap();
        let s = sink(t.path());
        let first = Lease::acquire(s.clone(), None, "run-a").unwrap();
        let e = Lease::acquire(s.clone(), None, "run-b").err().unwrap();
        let text = e.to_string();
        assert!(matches!(e, LeaseError::Busy { .. }), "{text}");
        assert!(
            text.contains("run-a") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        // Another shard's history is another lease.
        let shard = Shard::new(0, 2).unwrap();
        drop(Lease::acquire(s.clone(), Some(shard), "run-c").unwrap());
        assert!(first.held());
        drop(first);
        let again = Lease::acquire(s.clone(), None, "run-b").unwrap();
        assert!(again.held());
    }

    #[test]
    fn a_dead_holders_lease_is_taken_over() {
        let t = tempfile::tempdir().unwrap();
        let s = sink(t.path());
        // A holder on this host whose process is gone (pid beyond pid_max).
        let dead_here = Holder {
            run: "crashed".into(),
            host: hostname(),
            pid: u32::MAX - 1,
            pid_start: 0,
            started: now(),
            heartbeat: now(),
        };
        s.write_meta(&lease_name(None), &serde_json::to_vec(&dead_here).unwrap())
            .unwrap();
        let l = Lease::acquire(s.clone(), None, "next").unwrap();
        assert!(l.held());
        drop(l);
        // A holder elsewhere that stopped renewing long ago.
        let silent = Holder {
            host: "elsewhere".into(),
            heartbeat: now() - EXPIRES.as_secs() - 5,
            ..dead_here.clone()
        };
        s.write_meta(&lease_name(None), &serde_json::to_vec(&silent).unwrap())
            .unwrap();
        assert!(Lease::acquire(s.clone(), None, "next").is_ok());
        // One elsewhere that renewed a moment ago is alive.
        let live = Holder {
            host: "elsewhere".into(),
            ..dead_here
        };
        s.write_meta(&lease_name(None), &serde_json::to_vec(&live).unwrap())
            .unwrap();
        assert!(matches!(
            Lease::acquire(s.clone(), None, "next"),
            Err(LeaseError::Busy { .. })
        ));
        // This host, a live pid, but another process's now (it started at another time).
        let reused = Holder {
            host: hostname(),
            pid: 1,
            pid_start: started_at(1).unwrap() + 1,
            ..live
        };
        s.write_meta(&lease_name(None), &serde_json::to_vec(&reused).unwrap())
            .unwrap();
        assert!(Lease::acquire(s, None, "next").is_ok());
    }
}
