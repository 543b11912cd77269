//! Gzip framing for parallel compression: deflate pieces, header, trailer, CRC combining.
//!
//! A file is cut into segments that are compressed independently, each primed with the
//! previous 32 KiB of input as a dictionary (as pigz does). Every piece but the last ends
//! with a sync flush (byte-aligned, not final); the last ends the deflate stream. Written
//! in order between a gzip header and a trailer whose CRC-32 is combined from the pieces'
//! CRCs, they form ONE single-member gzip stream that any gzip decoder reads. The bytes
//! depend only on input, level and segment size, never on which thread did what.
//!
//! With the `libdeflate` feature every segment is deflated by libdeflate instead: faster,
//! but with no dictionary and no sync flush, so segments are independent and each middle
//! piece ends like a sync flush, through a small patch to the vendored libdeflate
//! (`vendor/libdeflate/ferry.patch`).

#[cfg(feature = "libdeflate")]
mod libdeflate;

#[cfg(not(feature = "libdeflate"))]
use flate2::{Compress, Compression, FlushCompress, Status};

/// How much of the previous segment primes the next one: deflate's whole window.
pub const DICT_SIZE: usize = 32 * 1024;

/// Whether the engine in this build primes segments with a dictionary (libdeflate cannot),
/// so the loader keeps the previous segment's tail only when it is used.
pub const PRIMES_SEGMENTS: bool = !cfg!(feature = "libdeflate");

/// A deflate failure (only possible through a bug or an allocation failure in the backend),
/// with the engine's own error as its source.
#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    /// zlib-rs (through flate2) refused.
    #[cfg(not(feature = "libdeflate"))]
    #[error("deflate failed: {0}")]
    Zlib(#[from] flate2::CompressError),
    /// libdeflate refused.
    #[cfg(feature = "libdeflate")]
    #[error("deflate failed: {0}")]
    Libdeflate(#[from] libdeflate::LibdeflateError),
}

/// One thread's reusable deflate state: a raw-deflate compressor reset for each segment,
/// so its large buffers are allocated once per worker instead of once per file.
pub struct SegmentCompressor {
    level: u32,
    /// The default engine: zlib-rs through flate2.
    #[cfg(not(feature = "libdeflate"))]
    deflate: Compress,
    /// With the `libdeflate` feature: the engine for every segment.
    #[cfg(feature = "libdeflate")]
    libdeflate: libdeflate::Libdeflate,
}

/// The deflate engines in this build, for reports.
pub const ENGINE: &str = if cfg!(feature = "libdeflate") {
    "libdeflate"
} else {
    "zlib-rs"
};

impl SegmentCompressor {
    /// A compressor at gzip `level` (0–9).
    pub fn new(level: u32) -> Self {
        SegmentCompressor {
            level,
            #[cfg(not(feature = "libdeflate"))]
            deflate: Compress::new(Compression::new(level), false),
            #[cfg(feature = "libdeflate")]
            libdeflate: libdeflate::Libdeflate::new(level).expect("libdeflate compressor"),
        }
    }

    /// The level this compressor was made for.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Compresses one segment into a deflate piece.
    ///
    /// `dict` is the input that precedes the segment (at most [`DICT_SIZE`] bytes are
    /// used); `last` marks the final segment of the file, which ends the deflate stream.
    ///
    /// # Errors
    /// Only if the deflate backend reports an error.
    pub fn compress(
        &mut self,
        data: &[u8],
        dict: Option<&[u8]>,
        last: bool,
    ) -> Result<Vec<u8>, GzipError> {
        #[cfg(feature = "libdeflate")]
        {
            // libdeflate has no dictionary: segments are independent. At 1 MiB segments
            // that loss does not show next to its better matching (mixed corpus: 41.25%
            // against gzip -6's 41.31%).
            let _ = dict;
            Ok(self.libdeflate.compress(data, last)?)
        }
        #[cfg(not(feature = "libdeflate"))]
        self.compress_zlib(data, dict, last)
    }

    /// The default engine: primed with `dict`, ended by a sync flush or the stream end.
    #[cfg(not(feature = "libdeflate"))]
    fn compress_zlib(
        &mut self,
        data: &[u8],
        dict: Option<&[u8]>,
        last: bool,
    ) -> Result<Vec<u8>, GzipError> {
        match dict {
            // zlib-rs: set_dictionary on a *reset* stream can give other (valid) bytes
            // than on a fresh one, which would make output depend on which segments a
            // worker saw before. A fresh state per primed segment keeps output a function
            // of the input alone; it is one allocation per segment of 1 MiB or so.
            Some(d) if !d.is_empty() => {
                self.deflate = Compress::new(Compression::new(self.level), false);
            }
            _ => self.deflate.reset(),
        }
        if let Some(d) = dict.filter(|d| !d.is_empty()) {
            let d = &d[d.len().saturating_sub(DICT_SIZE)..];
            self.deflate.set_dictionary(d)?;
        }
        let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 128);
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(4096));
            }
            let before = self.deflate.total_in();
            let status = self.deflate.compress_vec(input, &mut out, flush)?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            let done = if last {
                status == Status::StreamEnd
            } else {
                // zlib: a flush is complete once it returns with output space left over.
                input.is_empty() && out.len() < out.capacity()
            };
            if done {
                return Ok(out);
            }
        }
    }
}

/// The gzip header: magic, deflate, FNAME when `name` is not empty, `mtime` (seconds,
/// 0 = unknown), XFL from the level, OS = Unix — what `gzip` itself writes.
pub fn header(name: &[u8], mtime: u32, level: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(11 + name.len());
    let flags = if name.is_empty() { 0 } else { 0x08 };
    h.extend_from_slice(&[0x1f, 0x8b, 8, flags]);
    h.extend_from_slice(&mtime.to_le_bytes());
    h.push(match level {
        9 => 2,
        1 => 4,
        _ => 0,
    });
    h.push(3);
    if !name.is_empty() {
        // A NUL ends the field; Unix names cannot hold one, but be safe.
        h.extend(name.iter().copied().take_while(|&b| b != 0));
        h.push(0);
    }
    h
}

/// The gzip trailer: CRC-32 and the length modulo 2^32 (ISIZE), little-endian.
pub fn trailer(crc: u32, len: u64) -> [u8; 8] {
    let mut t = [0; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..].copy_from_slice(&(len as u32).to_le_bytes());
    t
}

/// The CRC-32 of a whole file, combined piece by piece from the pieces' own CRCs.
#[derive(Clone, Default)]
pub struct CrcCombiner {
    hasher: crc32fast::Hasher,
    len: u64,
}

impl CrcCombiner {
    /// Appends a piece of `len` bytes whose CRC-32 is `crc`.
    pub fn push(&mut self, crc: u32, len: u64) {
        self.hasher
            .combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
        self.len += len;
    }

    /// The CRC-32 of everything pushed so far.
    pub fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// The number of bytes pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Compresses `data` into one gzip member the way the pipeline does, segment by segment,
/// on the calling thread. The reference for tests and benchmarks.
///
/// # Errors
/// Only if the deflate backend fails.
///
/// # Panics
/// If `segment_size` is zero.
pub fn compress_segmented(
    data: &[u8],
    level: u32,
    segment_size: usize,
    name: &[u8],
    mtime: u32,
) -> Result<Vec<u8>, GzipError> {
    assert!(segment_size > 0, "segment size must be positive");
    let mut c = SegmentCompressor::new(level);
    let mut out = header(name, mtime, level);
    let mut crc = CrcCombiner::default();
    let n = data.len().div_ceil(segment_size).max(1);
    for i in 0..n {
        let start = i * segment_size;
        let seg = &data[start..(start + segment_size).min(data.len())];
        let dict = (i > 0).then(|| &data[start.saturating_sub(DICT_SIZE)..start]);
        out.extend_from_slice(&c.compress(seg, dict, i + 1 == n)?);
        crc.push(crc32(seg), seg.len() as u64);
    }
    out.extend_from_slice(&trailer(crc.crc(), crc.len()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::{GzDecoder, MultiGzDecoder};
    use proptest::prelude::*;
    use rayon::prelude::*;
    use std::io::Read;

    fn decode_single_member(gz: &[u8]) -> Vec<u8> {
        let mut d = GzDecoder::new(gz);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        // GzDecoder stops after one member: nothing may follow it.
        let rest = d.into_inner();
        assert!(
            rest.is_empty(),
            "{} bytes after the first member",
            rest.len()
        );
        let mut multi = Vec::new();
        MultiGzDecoder::new(gz).read_to_end(&mut multi).unwrap();
        assert_eq!(multi, out);
        out
    }

    /// The parallel way: segments compressed on many threads, assembled in order.
    fn compress_parallel(data: &[u8], level: u32, seg: usize) -> Vec<u8> {
        let n = data.len().div_ceil(seg).max(1);
        let pieces: Vec<(Vec<u8>, u32, u64)> = (0..n)
            .into_par_iter()
            .map_init(
                || SegmentCompressor::new(level),
                |c, i| {
                    let start = i * seg;
                    let s = &data[start..(start + seg).min(data.len())];
                    let dict = (i > 0).then(|| &data[start.saturating_sub(DICT_SIZE)..start]);
                    (
                        c.compress(s, dict, i + 1 == n).unwrap(),
                        crc32(s),
                        s.len() as u64,
                    )
                },
            )
            .collect();
        let mut out = header(b"x", 0, level);
        let mut crc = CrcCombiner::default();
        for (p, c, l) in pieces {
            out.extend_from_slice(&p);
            crc.push(c, l);
        }
        out.extend_from_slice(&trailer(crc.crc(), crc.len()));
        out
    }

    #[test]
    fn header_has_name_mtime_and_flags() {
        let h = header(b"a.log", 0x01020304, 9);
        assert_eq!(&h[..4], &[0x1f, 0x8b, 8, 8]);
        assert_eq!(&h[4..8], &[4, 3, 2, 1]);
        assert_eq!(h[8], 2);
        assert_eq!(&h[10..], b"a.log\0");
        let gz = compress_segmented(b"hello", 6, 2, b"a.log", 1234).unwrap();
        let d = GzDecoder::new(&gz[..]);
        let hdr = d.header().unwrap();
        assert_eq!(hdr.filename(), Some(&b"a.log"[..]));
        assert_eq!(hdr.mtime(), 1234);
    }

    #[test]
    fn empty_input_is_a_valid_member() {
        let gz = compress_segmented(b"", 6, 1024, b"", 0).unwrap();
        assert!(decode_single_member(&gz).is_empty());
    }

    #[test]
    #[cfg(not(feature = "libdeflate"))]
    fn dictionary_priming_helps_repetitive_data() {
        let data: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        let primed = compress_segmented(&data, 6, 4096, b"", 0).unwrap();
        let mut c = SegmentCompressor::new(6);
        let unprimed: usize = data
            .chunks(4096)
            .map(|s| c.compress(s, None, false).unwrap().len())
            .sum();
        assert!(primed.len() < unprimed, "{} vs {unprimed}", primed.len());
        assert_eq!(decode_single_member(&primed), data);
    }

    #[test]
    fn matches_system_gzip_when_present() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let gz = compress_segmented(&data, 6, 65536, b"t", 0).unwrap();
        let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("system gzip not installed; checked with flate2 only");
            return;
        };
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&gz).unwrap();
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_bytes_any_segment_any_level_round_trips(
            data in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..2000),
                proptest::collection::vec(0u8..4, 0..100_000),
            ],
            seg_pick in 0usize..6,
            level in 0u32..=9,
        ) {
            let len = data.len();
            let seg = match seg_pick {
                0 if len <= 3000 => 1,
                0 => 4096,
                1 => len.saturating_sub(1).max(1),
                2 => len.max(1),
                3 => len + 1,
                4 => 1000,
                _ => 40_000,
            };
            let seq = compress_segmented(&data, level, seg, b"x", 0).unwrap();
            prop_assert_eq!(&decode_single_member(&seq), &data);
            let par = compress_parallel(&data, level, seg);
            prop_assert_eq!(par, seq);
        }
    }
}
