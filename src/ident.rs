//! Who is running: this host's name, and ids unique across hosts, processes and moments.
//! A leaf: the lease, the journal and the temp records all name a run with these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// This machine's host name (`unknown` if the OS will not say).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A new id: 128 bits in hex, hashed from the time, the host, the pid and a counter, so
/// that no two runs anywhere (nor two calls in one process) share one.
pub fn unique_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!(
        "{now}-{}-{}-{}",
        hostname(),
        std::process::id(),
        N.fetch_add(1, Relaxed)
    );
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(seed.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_call_to_call() {
        assert_ne!(super::unique_id(), super::unique_id());
        assert_eq!(super::unique_id().len(), 32);
    }
}
