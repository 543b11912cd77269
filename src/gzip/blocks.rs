//! A deflate block walker: finds where a raw deflate stream's blocks begin and where the
//! stream ends, without producing any output.
//!
//! libdeflate compresses a whole buffer in one call but always ends with a final block
//! (BFINAL = 1). To use its output as a *middle* piece of one deflate stream, ferry clears
//! that bit and appends an empty stored block (what zlib's sync flush writes), which needs
//! the bit position of the last block header. Deflate blocks carry no length, so the only
//! way to find it is to walk the Huffman-coded symbols of every block before it; this
//! module does just that — decoding symbols, skipping extra bits, writing nothing.

/// The walk failed: the input is not a complete, well-formed raw deflate stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed deflate stream: {0}")]
pub struct ScanError(&'static str);

/// Where the blocks of a deflate stream are, in bits from the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bit offset of the header of the block marked final.
    pub last_block: u64,
    /// Bit offset just past that block's end-of-block code.
    pub end: u64,
}

/// Bits read least-significant first, as deflate packs them. Reading past the end yields
/// zero bits instead of failing, which keeps the hot loop free of error paths; callers
/// check [`Bits::overrun`] once per symbol and at the end.
struct Bits<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load into `buf` (may pass the end: virtual zero bytes).
    next: usize,
    buf: u64,
    /// Valid bits in `buf`.
    have: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self::at(data, 0)
    }

    fn at(data: &'a [u8], byte: usize) -> Self {
        Bits {
            data,
            next: byte,
            buf: 0,
            have: 0,
        }
    }

    /// Bits consumed so far.
    fn position(&self) -> u64 {
        self.next as u64 * 8 - u64::from(self.have)
    }

    /// Whether more bits were consumed than the data holds.
    fn overrun(&self) -> bool {
        self.position() > self.data.len() as u64 * 8
    }

    /// Ensures at least 56 bits are buffered (zeros past the end of the data).
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(chunk) = self.data.get(self.next..self.next + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.buf |= word << self.have;
            self.next += ((63 - self.have) >> 3) as usize;
            self.have |= 56;
        } else {
            while self.have <= 56 {
                let byte = self.data.get(self.next).copied().unwrap_or(0);
                self.buf |= u64::from(byte) << self.have;
                self.next += 1;
                self.have += 8;
            }
        }
    }

    /// The next `n` bits (n ≤ 56 after a refill), not consumed.
    #[inline(always)]
    fn peek(&self, n: u32) -> u32 {
        (self.buf & ((1u64 << n) - 1)) as u32
    }

    /// Drops `n` buffered bits.
    #[inline(always)]
    fn consume(&mut self, n: u32) {
        debug_assert!(n <= self.have);
        self.buf >>= n;
        self.have -= n;
    }

    /// Reads `n` ≤ 32 bits.
    fn take(&mut self, n: u32) -> u32 {
        if self.have < n {
            self.refill();
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// Drops the bits up to the next byte boundary.
    fn align(&mut self) {
        self.consume(self.have % 8);
    }
}

/// Primary lookup width: codes up to this many bits decode in one table access.
const FAST_BITS: u32 = 11;

/// What a table entry's symbol is, in bits 8..16 of the entry.
const LITERAL: u32 = 0;
const LENGTH: u32 = 1 << 8;
const END: u32 = 2 << 8;
/// The code is longer than FAST_BITS (or invalid): decode it bit by bit.
const SLOW: u32 = 3 << 8;

/// A canonical Huffman code: a direct table for short codes, and counts/symbols in code
/// order (as zlib's `puff` keeps them) for the rare longer ones.
struct Huffman {
    /// Indexed by the next FAST_BITS input bits: bits 0..8 are the number of bits to
    /// consume — the code *and* the extra bits that follow its symbol — and bits 8..16
    /// the kind ([`LITERAL`], [`LENGTH`], [`END`] or [`SLOW`]).
    fast: Vec<u32>,
    /// Number of codes of each length 0..=15.
    count: [u16; 16],
    /// Symbols ordered by (length, symbol).
    symbols: Vec<u16>,
    /// Kind and extra bits of each symbol, as in `fast` but without the code length.
    info: Vec<u32>,
}

impl Huffman {
    /// A code from its symbols' lengths; `info(symbol)` gives kind | extra bits.
    fn new(lengths: &[u8], info: impl Fn(usize) -> u32) -> Result<Self, ScanError> {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        // Over-subscribed codes cannot come from a compressor.
        let mut left: i32 = 1;
        for &c in &count[1..] {
            left = left * 2 - i32::from(c);
            if left < 0 {
                return Err(ScanError("over-subscribed Huffman code"));
            }
        }
        let mut offs = [0u16; 16];
        for len in 1..15 {
            offs[len + 1] = offs[len] + count[len];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[usize::from(offs[usize::from(l)])] = sym as u16;
                offs[usize::from(l)] += 1;
            }
        }
        let info: Vec<u32> = (0..lengths.len()).map(info).collect();
        let mut fast = vec![SLOW; 1 << FAST_BITS];
        let mut code: u32 = 0;
        let mut index = 0usize;
        for len in 1..=FAST_BITS {
            for _ in 0..count[len as usize] {
                let sym = usize::from(symbols[index]);
                index += 1;
                let reversed = code.reverse_bits() >> (32 - len);
                let entry = info[sym] + len;
                let mut i = reversed as usize;
                while i < fast.len() {
                    fast[i] = entry;
                    i += 1 << len;
                }
                code += 1;
            }
            code <<= 1;
        }
        Ok(Huffman {
            fast,
            count,
            symbols,
            info,
        })
    }

    /// Consumes one code and its extra bits; returns its kind. Needs ≥ 15 + 13 bits
    /// buffered.
    #[inline(always)]
    fn skip(&self, bits: &mut Bits) -> Result<u32, ScanError> {
        let entry = self.fast[bits.peek(FAST_BITS) as usize];
        if entry & SLOW != SLOW {
            bits.consume(entry & 0xff);
            return Ok(entry & SLOW);
        }
        let entry = self.decode_slow(bits)?;
        bits.consume(entry & 0xff);
        Ok(entry & SLOW)
    }

    /// Bit-by-bit canonical decoding (zlib's `puff`), for codes longer than FAST_BITS.
    /// Returns the symbol's info entry; its code is consumed.
    #[cold]
    fn decode_slow(&self, bits: &mut Bits) -> Result<u32, ScanError> {
        Ok(self.info[usize::from(self.decode_symbol(bits)?)])
    }

    /// Decodes one symbol bit by bit (for the small code-length code, and long codes).
    fn decode_symbol(&self, bits: &mut Bits) -> Result<u16, ScanError> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.take(1) as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(ScanError("invalid Huffman code"))
    }
}

/// Kind and extra bits of literal/length symbol `sym`.
fn litlen_info(sym: usize) -> u32 {
    match sym {
        0..=255 => LITERAL,
        256 => END,
        // Lengths 257..=284: 0 extra bits for the first 8, then 1..=5 per group of 4.
        257..=264 | 285 => LENGTH,
        257..=284 => LENGTH | ((sym as u32 - 261) / 4),
        _ => SLOW, // 286, 287: never valid in a stream
    }
}

/// Extra bits of distance symbol `sym` (as a LITERAL-kind entry).
fn dist_info(sym: usize) -> u32 {
    match sym {
        0..=3 => 0,
        4..=29 => (sym as u32 - 2) / 2,
        _ => SLOW, // 30, 31: never valid
    }
}

/// Walks the symbols of one Huffman-coded block up to its end-of-block code.
fn skip_codes(bits: &mut Bits, litlen: &Huffman, dist: &Huffman) -> Result<(), ScanError> {
    loop {
        // 56 bits cover the longest length code + extra (20) and distance + extra (28).
        bits.refill();
        match litlen.skip(bits)? {
            LITERAL => {}
            LENGTH => {
                if dist.skip(bits)? != LITERAL {
                    return Err(ScanError("invalid distance symbol"));
                }
            }
            END => return Ok(()),
            _ => return Err(ScanError("invalid literal/length symbol")),
        }
        if bits.overrun() {
            return Err(ScanError("stream ends inside a block"));
        }
    }
}

/// Order in which code-length code lengths are stored.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

fn dynamic_tables(bits: &mut Bits) -> Result<(Huffman, Huffman), ScanError> {
    let nlen = bits.take(5) as usize + 257;
    let ndist = bits.take(5) as usize + 1;
    let ncode = bits.take(4) as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err(ScanError("bad code counts"));
    }
    let mut clen = [0u8; 19];
    for &i in &CLEN_ORDER[..ncode] {
        clen[i] = bits.take(3) as u8;
    }
    let clen = Huffman::new(&clen, |_| LITERAL)?;
    let mut lengths = [0u8; 286 + 30];
    let mut i = 0;
    while i < nlen + ndist {
        let sym = clen.decode_symbol(bits)?;
        let (value, repeat) = match sym {
            0..=15 => (sym as u8, 1),
            16 => {
                let prev = *lengths[..i]
                    .last()
                    .ok_or(ScanError("repeat with no previous length"))?;
                (prev, 3 + bits.take(2) as usize)
            }
            17 => (0, 3 + bits.take(3) as usize),
            _ => (0, 11 + bits.take(7) as usize),
        };
        if i + repeat > nlen + ndist {
            return Err(ScanError("code lengths overflow"));
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err(ScanError("no end-of-block code"));
    }
    Ok((
        Huffman::new(&lengths[..nlen], litlen_info)?,
        Huffman::new(&lengths[nlen..nlen + ndist], dist_info)?,
    ))
}

fn fixed_tables() -> (Huffman, Huffman) {
    let mut l = [0u8; 288];
    l[..144].fill(8);
    l[144..256].fill(9);
    l[256..280].fill(7);
    l[280..].fill(8);
    (
        Huffman::new(&l, litlen_info).expect("fixed code is complete"),
        Huffman::new(&[5; 32], dist_info).expect("fixed code is complete"),
    )
}

/// Walks a raw deflate stream from its first block to the end of the block marked final.
///
/// # Errors
/// If the stream is truncated or malformed.
pub fn scan(stream: &[u8]) -> Result<Layout, ScanError> {
    let mut bits = Bits::new(stream);
    let mut fixed: Option<(Huffman, Huffman)> = None;
    loop {
        let start = bits.position();
        let last = bits.take(1) == 1;
        match bits.take(2) {
            0 => {
                bits.align();
                let len = bits.take(16);
                let nlen = bits.take(16);
                if len != !nlen & 0xffff {
                    return Err(ScanError("stored block length check failed"));
                }
                // The stored bytes follow on a byte boundary: restart reading after them.
                let after = (bits.position() / 8) as usize + len as usize;
                bits = Bits::at(stream, after);
            }
            1 => {
                let (litlen, dist) = fixed.get_or_insert_with(fixed_tables);
                skip_codes(&mut bits, litlen, dist)?;
            }
            2 => {
                let (litlen, dist) = dynamic_tables(&mut bits)?;
                skip_codes(&mut bits, &litlen, &dist)?;
            }
            _ => return Err(ScanError("reserved block type")),
        }
        if bits.overrun() {
            return Err(ScanError("stream ends inside a block"));
        }
        if last {
            return Ok(Layout {
                last_block: start,
                end: bits.position(),
            });
        }
    }
}

/// Turns a complete raw deflate stream into a middle piece of a larger one: clears the
/// final block's BFINAL bit and appends an empty stored block, so the piece ends
/// byte-aligned and the next piece's first block header follows it directly — the
/// bytes zlib's sync flush writes.
///
/// # Errors
/// If `stream` is not a complete deflate stream.
pub fn make_non_final(stream: &mut Vec<u8>) -> Result<(), ScanError> {
    let layout = scan(stream)?;
    let byte = (layout.last_block / 8) as usize;
    stream[byte] &= !(1u8 << (layout.last_block % 8));
    let used = (layout.end % 8) as u32;
    stream.truncate(layout.end.div_ceil(8) as usize);
    if used != 0 {
        // Zero the padding bits after the final block: the stored block header goes there.
        let last = stream.len() - 1;
        stream[last] &= (1u8 << used) - 1;
    }
    // A stored-block header is 3 bits; when fewer are free in the last byte, it takes
    // (and pads out) one more.
    if used == 0 || used > 5 {
        stream.push(0);
    }
    stream.extend_from_slice(&[0, 0, 0xff, 0xff]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use proptest::prelude::*;
    use std::io::Read;

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut c = Compress::new(Compression::new(level), false);
        let mut out = Vec::with_capacity(data.len() * 2 + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Finish)
            .unwrap();
        out
    }

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(stream)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"abcdefghij \n"[(i * 7 + i / 13) % 12] ^ (i % 97 == 0) as u8)
            .collect()
    }

    #[test]
    fn finds_the_end_of_streams_of_every_block_type() {
        for level in [0, 1, 6, 9] {
            for data in [Vec::new(), b"a".to_vec(), sample(100_000)] {
                let s = deflate(&data, level);
                let l = scan(&s).unwrap();
                assert_eq!(l.end.div_ceil(8) as usize, s.len(), "level {level}");
                assert!(l.last_block < l.end);
            }
        }
    }

    #[test]
    fn rejects_truncated_streams() {
        let s = deflate(&sample(50_000), 6);
        assert!(scan(&s[..s.len() / 2]).is_err());
        assert!(scan(&[]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Two complete streams, the first made non-final, decode as one stream to the
        /// concatenation of their inputs.
        #[test]
        fn non_final_pieces_chain(
            a in proptest::collection::vec(0u8..8, 0..70_000),
            b in proptest::collection::vec(any::<u8>(), 0..3000),
            level in 0u32..=9,
        ) {
            let mut first = deflate(&a, level);
            make_non_final(&mut first).unwrap();
            let mut joined = first;
            joined.extend_from_slice(&deflate(&b, level));
            let mut want = a.clone();
            want.extend_from_slice(&b);
            prop_assert_eq!(inflate(&joined), want);
        }
    }
}
