//! `--bwlimit`: one cap on the bytes every upload worker sends, per second, so a run beside
//! production leaves the link to others. A GCRA token bucket (the `governor` crate) that
//! all workers draw from before each write; a worker that must wait sleeps on the run's
//! cancel token, so Ctrl-C ends the wait at once.

use crate::pipeline::CancelToken;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// The shortest burst the bucket allows, in bytes: a write smaller than this never waits
/// for a share of itself.
const MIN_BURST: u32 = 256 << 10;

/// The most bytes per second `--bwlimit` takes: the bucket counts bytes in 32 bits.
pub const MAX_RATE: u64 = u32::MAX as u64;

/// A cap on bytes per second, shared by every upload worker.
pub struct BwLimit {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    /// Bytes one draw may take at most (a tenth of a second's worth, at least
    /// [`MIN_BURST`]): bigger writes draw in pieces.
    burst: u32,
    /// The cap, bytes a second.
    rate: u64,
}

impl BwLimit {
    /// A cap of `rate` bytes a second.
    ///
    /// # Errors
    /// When `rate` is 0 or more than [`MAX_RATE`].
    pub fn new(rate: u64) -> Result<Self, String> {
        let per_second = u32::try_from(rate)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("must be more than 0 and at most {MAX_RATE} bytes/s"))?;
        let burst = (per_second.get() / 10).max(MIN_BURST);
        let quota = Quota::per_second(per_second)
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Ok(BwLimit {
            limiter: RateLimiter::direct(quota),
            clock: DefaultClock::default(),
            burst,
            rate,
        })
    }

    /// The cap, bytes a second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `n` more bytes may go. `false` when the run was cancelled meanwhile.
    pub fn take(&self, n: usize, cancel: &CancelToken) -> bool {
        let mut left = n as u64;
        while left > 0 {
            let draw = left.min(u64::from(self.burst)) as u32;
            let Some(cells) = NonZeroU32::new(draw) else {
                return true;
            };
            loop {
                match self.limiter.check_n(cells) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_yet)) => {
                        if cancel.wait_timeout(not_yet.wait_time_from(self.clock.now())) {
                            return false;
                        }
                    }
                    // A draw is never more than the burst.
                    Err(_) => break,
                }
            }
            left -= u64::from(draw);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Four seconds' worth at the cap, beyond the first burst, take four seconds' worth of
    /// time at least, whatever the draws' sizes; a cancel ends a wait at once.
    #[test]
    fn bytes_go_no_faster_than_the_cap() {
        let cap = BwLimit::new(4 << 20).unwrap();
        let cancel = CancelToken::new();
        let start = Instant::now();
        for n in [
            1 << 20,
            100,
            3 << 20,
            70_000,
            (8 << 20) - (4 << 20) - 70_100,
        ] {
            assert!(cap.take(n, &cancel));
        }
        // 8 MiB at 4 MiB/s, less the first burst (0.4 MiB): at least 1.9 s.
        assert!(
            start.elapsed().as_secs_f64() >= 1.85,
            "{:?}",
            start.elapsed()
        );
        cancel.cancel(crate::pipeline::CancelReason::Requested);
        assert!(!cap.take(64 << 20, &cancel), "a cancelled wait says so");
        assert!(BwLimit::new(0).is_err());
        assert!(BwLimit::new(MAX_RATE + 1).is_err());
    }
}
