//! The vendored libdeflate compressor (feature `libdeflate`): whole segments in one call,
//! faster than zlib-rs, with ferry's patch that lets a piece end without a final block.

use std::ffi::{c_int, c_void};

/// What can go wrong inside libdeflate (both only through a bug or a failed allocation).
#[derive(Debug, thiserror::Error)]
pub enum LibdeflateError {
    /// `libdeflate_alloc_compressor` returned null.
    #[error("libdeflate: cannot make a compressor at level {0}")]
    Alloc(c_int),
    /// The output did not fit libdeflate's own bound.
    #[error("libdeflate: output bound exceeded")]
    Bound,
}

/// libdeflate's opaque compressor state.
#[repr(C)]
struct RawCompressor {
    _private: [u8; 0],
}

extern "C" {
    fn libdeflate_alloc_compressor(level: c_int) -> *mut RawCompressor;
    fn libdeflate_deflate_compress_bound(c: *mut RawCompressor, in_nbytes: usize) -> usize;
    fn ferry_deflate_compress_piece(
        c: *mut RawCompressor,
        input: *const c_void,
        in_nbytes: usize,
        out: *mut c_void,
        out_nbytes_avail: usize,
        final_piece: c_int,
    ) -> usize;
    fn libdeflate_free_compressor(c: *mut RawCompressor);
}

/// Room the patch needs past libdeflate's bound for the closing empty stored block.
const SYNC_MARKER: usize = 6;

/// One thread's libdeflate compressor at a fixed level.
pub struct Libdeflate {
    raw: *mut RawCompressor,
}

// SAFETY: the compressor is plain heap state used through `&mut self` only; moving it to
// another thread is what libdeflate documents as fine (it is not shared concurrently).
unsafe impl Send for Libdeflate {}

impl Libdeflate {
    /// A compressor for gzip `level` 0–9 (libdeflate's own levels go to 12).
    ///
    /// # Errors
    /// If the level is out of range or the allocation fails.
    pub fn new(level: u32) -> Result<Self, LibdeflateError> {
        let level = c_int::try_from(level.min(12)).unwrap_or(6);
        // SAFETY: plain constructor; a null return is handled.
        let raw = unsafe { libdeflate_alloc_compressor(level) };
        if raw.is_null() {
            return Err(LibdeflateError::Alloc(level));
        }
        Ok(Libdeflate { raw })
    }

    /// Deflates `data` as one piece of a stream: the final piece ends the stream, any
    /// other ends byte-aligned with no final block (as after a sync flush).
    ///
    /// # Errors
    /// Only if libdeflate reports its own output bound too small (a bug).
    pub fn compress(&mut self, data: &[u8], last: bool) -> Result<Vec<u8>, LibdeflateError> {
        // SAFETY: `raw` is a live compressor owned by `self`.
        let bound = unsafe { libdeflate_deflate_compress_bound(self.raw, data.len()) };
        let mut out = Vec::<u8>::with_capacity(bound + SYNC_MARKER);
        // SAFETY: input and output are valid for the lengths given; libdeflate writes at
        // most `capacity` bytes and returns how many it wrote (0 = did not fit).
        let n = unsafe {
            ferry_deflate_compress_piece(
                self.raw,
                data.as_ptr().cast(),
                data.len(),
                out.as_mut_ptr().cast(),
                out.capacity(),
                c_int::from(last),
            )
        };
        if n == 0 {
            return Err(LibdeflateError::Bound);
        }
        // SAFETY: libdeflate initialised the first `n` bytes, n <= capacity.
        unsafe { out.set_len(n) };
        Ok(out)
    }
}

impl Drop for Libdeflate {
    fn drop(&mut self) {
        // SAFETY: `raw` came from libdeflate_alloc_compressor and is freed once.
        unsafe { libdeflate_free_compressor(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(stream)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Middle pieces of every shape (empty, stored pass-through, compressed, every end
    /// bit offset) chain into one stream that decodes to the concatenated input.
    #[test]
    fn middle_pieces_chain_into_one_stream() {
        let text: Vec<u8> = (0..300_010u32)
            .map(|i| b"ferry moves files; "[(i % 19) as usize] ^ u8::from(i % 251 == 0))
            .collect();
        for level in [0, 1, 6, 9] {
            let mut c = Libdeflate::new(level).unwrap();
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for len in [0, 1, 10, 100, 1000, 4097, 65_536, 70_001, 299_999] {
                for shift in 0..3 {
                    let piece = &text[shift..shift + len];
                    stream.extend_from_slice(&c.compress(piece, false).unwrap());
                    want.extend_from_slice(piece);
                }
            }
            stream.extend_from_slice(&c.compress(b"end", true).unwrap());
            want.extend_from_slice(b"end");
            assert_eq!(inflate(&stream), want, "level {level}");
        }
    }

    /// The patched matchfinders use part of their hash tables for a small input: sizes
    /// on each side of every step, small after big and big after small on one
    /// compressor (stale entries beyond the part in use must never be read), all decode,
    /// and a small input still finds its matches.
    #[test]
    fn small_inputs_use_small_tables_and_every_size_round_trips() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let noisy: Vec<u8> = (0..40_100)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if i % 7 == 0 {
                    seed as u8
                } else {
                    b"log line 42: ok\n"[i % 16]
                }
            })
            .collect();
        let mut sizes = vec![0, 1, 3, 4, 5, 55, 70, 127, 300];
        for bits in 7..=15 {
            sizes.extend([(1 << bits) / 8 - 1, (1 << bits) / 8, (1 << bits) / 8 + 1]);
            sizes.extend([(1 << bits) / 4 - 1, (1 << bits) / 4 + 1]);
        }
        sizes.extend([20_000, 39_999]);
        for level in [1, 2, 6, 9, 12] {
            let mut c = Libdeflate::new(level).unwrap();
            for (n, &len) in sizes.iter().enumerate() {
                // Big and small alternate: each input follows one of another size.
                for len in [len, sizes[sizes.len() - 1 - n]] {
                    let input = &noisy[(len * 31) % 97..][..len];
                    let out = c.compress(input, true).unwrap();
                    assert_eq!(inflate(&out), input, "level {level}, {len} bytes");
                }
            }
            let runs = vec![b'a'; 200];
            let out = c.compress(&runs, true).unwrap();
            assert!(
                out.len() < 20,
                "level {level}: 200 a's took {} bytes",
                out.len()
            );
        }
    }
}
