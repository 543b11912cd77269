//! Reading ferry's objects back, shared by `ferry verify` and `ferry restore`: one gzip
//! member streamed through the decoder (bounded memory, any size), checked against its
//! manifest entry; and the inflate of one independent segment, for restoring the
//! segments of a big object in parallel.

use crate::history::manifest::Entry;
use flate2::bufread::GzDecoder;
use std::io::{Read, Write};

/// What one object decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inflated {
    /// Bytes it decoded to.
    pub len: u64,
    /// Their CRC-32.
    pub crc32: u32,
    /// Compressed bytes read (the object's size).
    pub bytes_in: u64,
    /// Their CRC-32.
    pub zcrc32: u32,
    /// The gzip header's MTIME (seconds), 0 when unset.
    pub header_mtime: u32,
}

/// Counts and checksums the bytes read through it.
struct Counted<R> {
    inner: R,
    n: u64,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Decodes `object`, one gzip member, into `out` as it streams (256 KiB at a time), and
/// checks it against `expect` when there is one: the recorded compressed size, length
/// and CRC-32. Without `expect` the member's own trailer (CRC-32, length) is the check.
/// `progress` is told each decoded chunk's length.
///
/// # Errors
/// What is wrong, in words: does not decode, data after the member, a size or CRC that
/// differs from the manifest, or a write that failed (prefixed `write:`).
pub fn inflate_object(
    expect: Option<&Entry>,
    object: impl Read,
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
) -> Result<Inflated, String> {
    let mut counted = Counted {
        inner: object,
        n: 0,
        crc: crc32fast::Hasher::new(),
    };
    // The buffered decoder reads through our buffer and leaves what follows the member in
    // it, so data after the member is seen (the `read` decoder's own buffer swallowed it).
    let mut d = GzDecoder::new(std::io::BufReader::with_capacity(256 << 10, &mut counted));
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match d.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                crc.update(&buf[..n]);
                len += n as u64;
                // The recorded size is a promise: an object that decodes to more is not the
                // file delivered, and is not written on until the disk is full.
                if let Some(e) = expect.filter(|e| len > e.size) {
                    return Err(format!(
                        "decodes to more than the manifest's {} bytes",
                        e.size
                    ));
                }
                out.write_all(&buf[..n])
                    .map_err(|e| format!("write: {}", crate::words::io_words(&e)))?;
                progress(n as u64);
            }
            Err(e) => return Err(format!("does not decode: {e}")),
        }
    }
    let header_mtime = d.header().map_or(0, |h| h.mtime());
    let mut rest = d.into_inner();
    let after = std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| e.to_string())?;
    drop(rest);
    if after > 0 {
        return Err(format!(
            "{after} bytes of data after the gzip member (a second member or garbage); a ferry object is exactly one member"
        ));
    }
    let got = Inflated {
        len,
        crc32: crc.finalize(),
        bytes_in: counted.n,
        zcrc32: counted.crc.clone().finalize(),
        header_mtime,
    };
    if let Some(e) = expect {
        check(e, &got)?;
    }
    Ok(got)
}

/// Copies a web object stored unchanged (`--web`, [`crate::form::Form::Plain`]) to `out`,
/// checked as [`check`] checks a decoded one: its size and CRC-32 are the file's.
///
/// # Errors
/// What is wrong, in words, or why it could not be read or written.
pub fn copy_plain(
    entry: &Entry,
    mut object: impl Read,
    out: &mut impl Write,
    progress: &dyn Fn(u64),
) -> Result<Inflated, String> {
    let mut buf = vec![0u8; 256 << 10];
    let (mut crc, mut n) = (crc32fast::Hasher::new(), 0u64);
    loop {
        let got = match object.read(&mut buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        crc.update(&buf[..got]);
        n += got as u64;
        if n > entry.size {
            return Err(format!(
                "more than the manifest's {} bytes: replaced or appended to",
                entry.size
            ));
        }
        out.write_all(&buf[..got])
            .map_err(|e| format!("write: {}", crate::words::io_words(&e)))?;
        progress(got as u64);
    }
    let got = plain_read(n, crc.finalize());
    check(entry, &got).map(|()| got)
}

/// What a plain object of `n` bytes with CRC-32 `crc` was read as: its own bytes.
fn plain_read(n: u64, crc: u32) -> Inflated {
    Inflated {
        len: n,
        crc32: crc,
        bytes_in: n,
        zcrc32: crc,
        header_mtime: 0,
    }
}

/// Checks a whole plain object held in memory (`--web`, stored unchanged) against
/// `entry`, as [`copy_plain`] does while copying.
///
/// # Errors
/// What differs, in words.
pub fn check_plain(entry: &Entry, bytes: &[u8]) -> Result<Inflated, String> {
    let got = plain_read(bytes.len() as u64, crc32fast::hash(bytes));
    check(entry, &got).map(|()| got)
}

/// Checks what an object decoded to against its manifest entry: its size as stored, its
/// bytes' CRC-32 where recorded, and what they decoded to.
///
/// # Errors
/// What differs, in words.
pub fn check(entry: &Entry, got: &Inflated) -> Result<(), String> {
    if got.bytes_in != entry.bytes_out {
        return Err(format!(
            "size {} but the manifest says {}",
            got.bytes_in, entry.bytes_out
        ));
    }
    if let Some(z) = entry.zcrc32.filter(|&z| z != got.zcrc32) {
        return Err(format!(
            "its bytes have CRC-32 {:08x}, the manifest says {z:08x}: the object was changed or damaged after it was stored",
            got.zcrc32
        ));
    }
    if got.len != entry.size || got.crc32 != entry.crc32 {
        return Err(format!(
            "decodes to {} bytes with CRC-32 {:08x}, the manifest says {} bytes with {:08x}",
            got.len, got.crc32, entry.size, entry.crc32
        ));
    }
    Ok(())
}

/// Decodes a whole small object held in memory, `gz`, into `out` (resized to the recorded
/// length) in one call, and checks it against `expect`: the recorded compressed size, and
/// the member's trailer against the recorded length and CRC-32 (libdeflate checks the
/// trailer against the data itself). The fast path of `ferry restore` for small files.
///
/// # Errors
/// What is wrong, in words.
pub fn inflate_whole(
    expect: &Entry,
    gz: &[u8],
    out: &mut Vec<u8>,
    engine: &mut SegmentInflater,
) -> Result<Inflated, String> {
    if gz.len() as u64 != expect.bytes_out {
        return Err(format!(
            "size {} but the manifest says {}",
            gz.len(),
            expect.bytes_out
        ));
    }
    let word = |at: usize| {
        gz.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let len = usize::try_from(expect.size).map_err(|e| e.to_string())?;
    out.clear();
    out.resize(len, 0);
    // Decoded first: the engine says whether the member ends exactly at the object's end
    // (anything after it is named as such), and checks the trailer against the data.
    engine.gzip(gz, out)?;
    // Then its bytes as stored: a change that still decodes (a header rewritten) is named.
    if let Some(z) = expect.zcrc32 {
        let got = crc32fast::hash(gz);
        if got != z {
            return Err(format!(
                "its bytes have CRC-32 {got:08x}, the manifest says {z:08x}: the object was changed or damaged after it was stored"
            ));
        }
    }
    let tail = gz.len().saturating_sub(8);
    let (crc, isize) = (word(tail), word(tail + 4));
    if crc != expect.crc32 || u64::from(isize) != expect.size & 0xffff_ffff {
        return Err(format!(
            "its trailer says {isize} bytes with CRC-32 {crc:08x}, the manifest says {} bytes with {:08x}",
            expect.size, expect.crc32
        ));
    }
    Ok(Inflated {
        len: expect.size,
        crc32: crc,
        bytes_in: gz.len() as u64,
        zcrc32: expect.zcrc32.unwrap_or_else(|| crc32fast::hash(gz)),
        header_mtime: word(4),
    })
}

/// The length of the gzip header at the start of `head` (RFC 1952: ten bytes, then the
/// optional extra field, name, comment and header CRC its flags announce); `None` when
/// `head` is too short to hold all of it.
///
/// # Errors
/// When `head` does not start with a gzip header.
pub fn gzip_header_len(head: &[u8]) -> Result<Option<usize>, String> {
    if head.len() < 10 {
        return Ok(None);
    }
    if head[0] != 0x1f || head[1] != 0x8b || head[2] != 8 {
        return Err("not a gzip member (bad magic or method)".into());
    }
    let flags = head[3];
    let mut at = 10;
    if flags & 4 != 0 {
        let Some(x) = head.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let Some(end) = head.get(at..).and_then(|r| r.iter().position(|&b| b == 0)) else {
                return Ok(None);
            };
            at += end + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    Ok((at <= head.len()).then_some(at))
}

/// Inflates one independent deflate segment (no preset dictionary) into exactly
/// `out.len()` bytes. A middle segment ends with ferry's sync marker and no final block;
/// libdeflate, which wants a final block, gets an empty one appended (`03 00`).
///
/// # Errors
/// When it does not decode to exactly that many bytes.
pub fn inflate_segment(
    piece: &mut Vec<u8>,
    last: bool,
    out: &mut [u8],
    engine: &mut SegmentInflater,
) -> Result<(), String> {
    engine.inflate(piece, last, out)
}

/// One worker's raw-deflate decoder for [`inflate_segment`]: libdeflate where the build has
/// it, else flate2 (zlib-rs).
pub struct SegmentInflater {
    #[cfg(feature = "libdeflate")]
    d: libdeflater::Decompressor,
    #[cfg(feature = "libdeflate")]
    gz: RawInflater,
    #[cfg(not(feature = "libdeflate"))]
    d: flate2::Decompress,
}

impl Default for SegmentInflater {
    fn default() -> Self {
        SegmentInflater {
            #[cfg(feature = "libdeflate")]
            d: libdeflater::Decompressor::new(),
            #[cfg(feature = "libdeflate")]
            gz: RawInflater::new(),
            #[cfg(not(feature = "libdeflate"))]
            d: flate2::Decompress::new(false),
        }
    }
}

/// A libdeflate decompressor of our own, for the `_ex` call libdeflater does not offer.
#[cfg(feature = "libdeflate")]
struct RawInflater(*mut libdeflate_sys::libdeflate_decompressor);

#[cfg(feature = "libdeflate")]
impl RawInflater {
    fn new() -> Self {
        // SAFETY: allocation only; a null result is checked where it is used by libdeflate
        // (it aborts on allocation failure like any Rust allocation would).
        let p = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
        assert!(!p.is_null(), "libdeflate could not allocate a decompressor");
        RawInflater(p)
    }
}

// SAFETY: a decompressor is plain memory used by one thread at a time (`&mut self`).
#[cfg(feature = "libdeflate")]
unsafe impl Send for RawInflater {}

#[cfg(feature = "libdeflate")]
impl Drop for RawInflater {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0) };
    }
}

impl SegmentInflater {
    /// One whole gzip member into exactly `out.len()` bytes, its trailer checked.
    #[cfg(feature = "libdeflate")]
    fn gzip(&mut self, gz: &[u8], out: &mut [u8]) -> Result<(), String> {
        let (mut used, mut n) = (0usize, 0usize);
        // SAFETY: the decompressor is ours and live; `gz` and `out` are valid for their
        // lengths; the two counts are written by the call.
        let r = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.gz.0,
                gz.as_ptr().cast(),
                gz.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut n,
            )
        };
        match r {
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS if used != gz.len() => Err(format!(
                "{} bytes of data after the gzip member (a second member or garbage); a ferry object is exactly one member",
                gz.len() - used
            )),
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS if n == out.len() => Ok(()),
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS => {
                Err(format!("decodes to {n} bytes, not {}", out.len()))
            }
            libdeflate_sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Err(format!(
                "decodes to more than the manifest's {} bytes",
                out.len()
            )),
            _ => Err("does not decode: invalid gzip data".into()),
        }
    }

    /// One whole gzip member into exactly `out.len()` bytes, its trailer checked.
    #[cfg(not(feature = "libdeflate"))]
    fn gzip(&mut self, gz: &[u8], out: &mut [u8]) -> Result<(), String> {
        let mut d = GzDecoder::new(gz);
        d.read_exact(out)
            .map_err(|e| format!("does not decode: {e}"))?;
        let mut rest = [0u8; 1];
        match d.read(&mut rest) {
            Ok(0) if !d.into_inner().is_empty() => Err(
                "data after the gzip member (a second member or garbage); a ferry object is exactly one member".into(),
            ),
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("decodes to more than {} bytes", out.len())),
            Err(e) => Err(format!("does not decode: {e}")),
        }
    }

    #[cfg(feature = "libdeflate")]
    fn inflate(&mut self, piece: &mut Vec<u8>, last: bool, out: &mut [u8]) -> Result<(), String> {
        if !last {
            piece.extend_from_slice(&[0x03, 0x00]);
        }
        match self.d.deflate_decompress(piece, out) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(format!("a segment decodes to {n} bytes, not {}", out.len())),
            Err(e) => Err(format!("a segment does not decode: {e}")),
        }
    }

    #[cfg(not(feature = "libdeflate"))]
    fn inflate(&mut self, piece: &mut Vec<u8>, _last: bool, out: &mut [u8]) -> Result<(), String> {
        self.d.reset(false);
        let status = self
            .d
            .decompress(piece, out, flate2::FlushDecompress::Sync)
            .map_err(|e| format!("a segment does not decode: {e}"))?;
        let n = self.d.total_out() as usize;
        if n != out.len() || self.d.total_in() as usize != piece.len() {
            return Err(format!(
                "a segment decodes to {n} bytes, not {} ({status:?})",
                out.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_follow_the_flags() {
        let h = crate::gzip::header(b"name.txt", 7, 6);
        assert_eq!(gzip_header_len(&h).unwrap(), Some(h.len()));
        assert_eq!(gzip_header_len(&h[..h.len() - 1]).unwrap(), None);
        assert!(gzip_header_len(b"not gzip at all").is_err());
        // FEXTRA (2 + 3 bytes), FCOMMENT and FHCRC.
        let mut x = vec![0x1f, 0x8b, 8, 4 | 16 | 2, 0, 0, 0, 0, 0, 3, 3, 0, 1, 2, 3];
        x.extend_from_slice(b"comment\0");
        x.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(gzip_header_len(&x).unwrap(), Some(x.len()));
    }

    #[test]
    fn segments_of_a_segmented_member_inflate_independently() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let seg = 256 << 10;
        let mut engine = crate::gzip::SegmentCompressor::new(6);
        let mut inflater = SegmentInflater::default();
        let n = data.len().div_ceil(seg);
        // Unprimed segments (what libdeflate always makes) are independent.
        for (i, chunk) in data.chunks(seg).enumerate() {
            let last = i + 1 == n;
            let mut piece = engine.compress(chunk, None, last).unwrap();
            let mut out = vec![0u8; chunk.len()];
            inflate_segment(&mut piece, last, &mut out, &mut inflater).unwrap();
            assert_eq!(out, chunk);
        }
        let mut bad = engine.compress(&data[..seg], None, false).unwrap();
        let mut short = vec![0u8; seg - 1];
        assert!(inflate_segment(&mut bad, false, &mut short, &mut inflater).is_err());
    }
}
