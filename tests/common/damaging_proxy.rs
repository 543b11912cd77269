//! A TCP proxy that damages one request body on the way, for the tests of integrity on
//! the wire (S3 and GCS).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

/// A TCP proxy to `upstream` that damages the body of the first PUT of a `.gz` object it
/// relays (one byte flipped), as a bad NIC or middlebox would, and relays everything else
/// untouched.
pub fn damaging_proxy(upstream: &str) -> (String, Arc<AtomicBool>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_start_matches("http://").to_string();
    let damaged = Arc::new(AtomicBool::new(false));
    let flag = damaged.clone();
    let relay = |mut from: TcpStream, mut to: TcpStream, damage: Option<Arc<AtomicBool>>| {
        let mut buf = vec![0u8; 64 << 10];
        // What the client sent so far on this connection (up to 64 KiB).
        let mut seen = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(d) = &damage {
                if !d.load(SeqCst) && seen.len() < 1 << 16 {
                    let before = seen.len();
                    seen.extend_from_slice(&buf[..n]);
                    // Requests follow each other on a kept-alive connection: find a PUT.
                    let put = (0..seen.len().saturating_sub(5)).find(|&p| {
                        let line = seen[p..].split(|&b| b == b'\n').next().unwrap_or(&[]);
                        // GCS's client writes the dot as `%2E`.
                        line.starts_with(b"PUT /")
                            && (line.windows(3).any(|w| w == b".gz")
                                || line.windows(5).any(|w| w.eq_ignore_ascii_case(b"%2Egz")))
                    });
                    if let Some(put) = put {
                        let head_end = seen[put..].windows(4).position(|w| w == b"\r\n\r\n");
                        if let Some(end) = head_end {
                            // A byte 1,000 into the body (in the deflate data, past the
                            // gzip header), if it is in this chunk.
                            let at = put + end + 4 + 1000;
                            if at >= before && at < seen.len() && !d.swap(true, SeqCst) {
                                buf[at - before] ^= 0x20;
                            }
                        }
                    }
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let (upstream, flag) = (upstream.clone(), flag.clone());
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    return;
                };
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || relay(s, c, None));
                relay(client, server, Some(flag));
            });
        }
    });
    (format!("http://{addr}"), damaged)
}
