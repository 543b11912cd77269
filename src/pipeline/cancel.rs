//! Context-style cancellation: a cloneable token that says "stop" and why.

use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a run was cancelled; the first cause wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The user pressed Ctrl-C or the process got SIGTERM.
    Interrupted,
    /// The whole-run deadline (`--timeout`) passed.
    Deadline,
    /// The embedding program asked for it.
    Requested,
}

impl CancelReason {
    fn code(self) -> u8 {
        match self {
            CancelReason::Interrupted => 1,
            CancelReason::Deadline => 2,
            CancelReason::Requested => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(CancelReason::Interrupted),
            2 => Some(CancelReason::Deadline),
            3 => Some(CancelReason::Requested),
            _ => None,
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelReason::Interrupted => "interrupted",
            CancelReason::Deadline => "deadline reached",
            CancelReason::Requested => "cancelled",
        })
    }
}

struct Inner {
    reason: AtomicU8,
    /// Dropped on cancel: its receivers then become ready, so a `select!` can wait on it.
    trigger: Mutex<Option<Sender<()>>>,
    signal: Receiver<()>,
}

/// A cancellation token passed into the pipeline and every stage.
///
/// Checking it is one atomic load. Blocking code can also wait on [`CancelToken::signal`]
/// in a `crossbeam_channel::select!`, which becomes ready when the token is cancelled.
/// Cancellation is a value, not a signal handler, so tests trigger it directly.
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("reason", &self.reason())
            .finish()
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        CancelToken {
            inner: Arc::new(Inner {
                reason: AtomicU8::new(0),
                trigger: Mutex::new(Some(tx)),
                signal: rx,
            }),
        }
    }

    /// Cancels with `reason`. Returns `true` if this call cancelled it, `false` if it
    /// already was (the first reason is kept).
    pub fn cancel(&self, reason: CancelReason) -> bool {
        let won = self
            .inner
            .reason
            .compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if won {
            let sender = self
                .inner
                .trigger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            drop(sender);
        }
        won
    }

    /// Whether the token has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.reason.load(Ordering::Relaxed) != 0
    }

    /// The reason, once cancelled.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_code(self.inner.reason.load(Ordering::SeqCst))
    }

    /// A receiver that becomes ready (disconnected) when the token is cancelled.
    pub fn signal(&self) -> &Receiver<()> {
        &self.inner.signal
    }

    /// Blocks until cancelled or until `timeout` passes; returns whether it was cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.is_cancelled() {
            return true;
        }
        let _ = self.inner.signal.recv_timeout(timeout);
        self.is_cancelled()
    }

    /// Cancels with [`CancelReason::Deadline`] after `after`, unless `done` is signalled
    /// (sent to or dropped) first. Runs on a small named thread.
    pub fn deadline(&self, after: Duration, done: Receiver<()>) -> std::io::Result<()> {
        #[cfg(test)]
        if FAIL_DEADLINE_SPAWN.get() {
            // What `spawn` returns when the process is out of threads (RLIMIT_NPROC).
            return Err(std::io::Error::from_raw_os_error(11));
        }
        let token = self.clone();
        std::thread::Builder::new()
            .name("ferry-deadline".into())
            .spawn(move || {
                let timer = crossbeam_channel::after(after);
                crossbeam_channel::select! {
                    recv(timer) -> _ => { token.cancel(CancelReason::Deadline); }
                    recv(done) -> _ => {}
                    recv(token.signal()) -> _ => {}
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: [`CancelToken::deadline`] on this thread fails as a spawn would when the
    /// process may start no more threads (which a test cannot provoke for one thread alone).
    pub(crate) static FAIL_DEADLINE_SPAWN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_signal_fires() {
        let t = CancelToken::new();
        assert!(!t.is_cancelled());
        assert!(!t.wait_timeout(Duration::from_millis(1)));
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || t2.signal().recv().is_err());
        assert!(t.cancel(CancelReason::Interrupted));
        assert!(!t.cancel(CancelReason::Deadline));
        assert_eq!(t.reason(), Some(CancelReason::Interrupted));
        assert!(waiter.join().unwrap());
        assert!(t.wait_timeout(Duration::from_secs(100)));
    }

    #[test]
    fn deadline_cancels_unless_done() {
        let t = CancelToken::new();
        let (_keep, done) = crossbeam_channel::bounded::<()>(0);
        t.deadline(Duration::from_millis(1), done).unwrap();
        assert!(t.wait_timeout(Duration::from_secs(60)));
        assert_eq!(t.reason(), Some(CancelReason::Deadline));

        let t = CancelToken::new();
        let (stop, done) = crossbeam_channel::bounded::<()>(0);
        t.deadline(Duration::from_secs(3600), done).unwrap();
        drop(stop);
        assert!(!t.is_cancelled());
    }
}
