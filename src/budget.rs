//! The memory budget: loading a segment reserves its size, writing it at the sink releases
//! it. It bounds the bytes in flight whatever the file sizes and counts (design promise 3).

use crate::pipeline::{CancelToken, Emitter};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the budget's lock guards.
#[derive(Default)]
struct Used {
    bytes: u64,
    /// Threads waiting for room: a release wakes them only when there are some (a
    /// wake-up is a system call, and tiny files release a permit each).
    waiting: usize,
}

/// A byte budget shared by every stage.
pub struct Budget {
    limit: u64,
    used: Mutex<Used>,
    freed: Condvar,
    /// Mirrors `used` for the reporter, which must not take the lock.
    gauge: Arc<AtomicU64>,
}

impl Budget {
    /// A budget of `limit` bytes whose use is mirrored in `gauge`.
    pub fn new(limit: u64, gauge: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            used: Mutex::default(),
            freed: Condvar::new(),
            gauge,
        })
    }

    /// Reserves `bytes` for a worker that emits into `out`: at once if there is room,
    /// else as [`Budget::acquire`] inside [`Emitter::blocked_while`] (which first sends
    /// what the worker has gathered, since that may hold the bytes it waits for, and
    /// counts the wait as blocked). The common case keeps the worker's batch whole.
    pub fn reserve<U>(self: &Arc<Self>, bytes: u64, out: &Emitter<U>) -> Option<Permit> {
        if let Some(p) = self.try_acquire(bytes) {
            return Some(p);
        }
        out.blocked_while(|| self.acquire(bytes, out.cancel_token()))
    }

    /// Reserves `bytes` if that needs no wait.
    fn try_acquire(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.bytes > 0 && used.bytes + bytes > self.limit {
            return None;
        }
        used.bytes += bytes;
        self.gauge.store(used.bytes, Relaxed);
        Some(Permit {
            budget: Some(self.clone()),
            bytes,
        })
    }

    /// Reserves `bytes`, waiting while the budget is spent. A request larger than the
    /// whole budget is granted when nothing else is reserved, so it cannot wait forever.
    /// Returns `None` if the run is cancelled while waiting.
    pub fn acquire(self: &Arc<Self>, bytes: u64, cancel: &CancelToken) -> Option<Permit> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while used.bytes > 0 && used.bytes + bytes > self.limit {
            if cancel.is_cancelled() {
                return None;
            }
            used.waiting += 1;
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            used.waiting -= 1;
        }
        used.bytes += bytes;
        self.gauge.store(used.bytes, Relaxed);
        Some(Permit {
            budget: Some(self.clone()),
            bytes,
        })
    }
}

/// A reservation in the [`Budget`], released on drop (also when a panic unwinds past it).
pub struct Permit {
    budget: Option<Arc<Budget>>,
    bytes: u64,
}

impl Permit {
    /// Gives back all but `bytes` of the reservation, once what it covers has shrunk (a
    /// segment's source bytes freed once deflated): the budget counts what is held.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            return;
        }
        let freed = Permit {
            budget: self.budget.clone(),
            bytes: self.bytes - bytes,
        };
        self.bytes = bytes;
        drop(freed);
    }

    /// A permit that reserves nothing (for tests and callers without a budget).
    pub fn none() -> Self {
        Permit {
            budget: None,
            bytes: 0,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
            used.bytes = used.bytes.saturating_sub(self.bytes);
            b.gauge.store(used.bytes, Relaxed);
            let waiting = used.waiting > 0;
            drop(used);
            if waiting {
                b.freed.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_wait_for_room_and_release_on_drop() {
        let gauge = Arc::new(AtomicU64::new(0));
        let b = Budget::new(10, gauge.clone());
        let cancel = CancelToken::new();
        let a = b.acquire(6, &cancel).unwrap();
        assert_eq!(gauge.load(Relaxed), 6);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (b2, c2) = (b.clone(), cancel.clone());
        let waiter = std::thread::spawn(move || {
            let p = b2.acquire(6, &c2);
            tx.send(()).unwrap();
            p.is_some()
        });
        assert!(rx.try_recv().is_err());
        drop(a);
        assert!(waiter.join().unwrap());
        rx.recv().unwrap();
        // Bigger than the whole budget: granted when nothing else is held.
        assert!(b.acquire(100, &cancel).is_some());
        assert_eq!(gauge.load(Relaxed), 0);
    }

    #[test]
    fn a_shrunk_permit_gives_back_the_rest_and_wakes_a_waiter() {
        let gauge = Arc::new(AtomicU64::new(0));
        let b = Budget::new(10, gauge.clone());
        let cancel = CancelToken::new();
        let mut a = b.acquire(8, &cancel).unwrap();
        let (b2, c2) = (b.clone(), cancel.clone());
        let waiter = std::thread::spawn(move || b2.acquire(7, &c2).is_some());
        a.shrink_to(3);
        assert!(waiter.join().unwrap());
        // Growing is not shrinking: nothing changes.
        a.shrink_to(5);
        drop(a);
        assert_eq!(gauge.load(Relaxed), 0);
    }
}
