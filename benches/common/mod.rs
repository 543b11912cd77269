//! What the benches share.

/// Log-like text: timestamps, levels, modules and a few numbers, like real server logs.
pub fn log_like(n: usize) -> Vec<u8> {
    let levels = ["INFO", "WARN", "ERROR", "DEBUG"];
    let modules = [
        "http.server",
        "db.pool",
        "auth.session",
        "cache.lru",
        "queue.worker",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(n + 200);
    let mut ts = 1_700_000_000_000u64;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ts += x % 1000;
        out.extend_from_slice(
            format!(
                "{ts} {} [{}] request id={} took {}ms user={}\n",
                levels[(x % 4) as usize],
                modules[(x >> 8) as usize % 5],
                x >> 40,
                x % 997,
                (x >> 20) % 5000
            )
            .as_bytes(),
        );
    }
    out.truncate(n);
    out
}
