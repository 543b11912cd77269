//! How an object is cut into parts for a multipart upload: the size each store takes,
//! shared by the object store sinks and by `sim:`, which models their uploads.

/// Compressed bytes gathered before a multipart part is sent.
const PART_SIZE: usize = 8 << 20;
/// S3's limits: parts per upload, and the smallest part but the last.
const MAX_PARTS: u64 = 10_000;
const MIN_PART: u64 = 5 << 20;

/// The part size for an object from a source of `source_size` bytes: 8 MiB, or larger
/// (in whole MiB) when 10,000 parts of 8 MiB would not hold the gzip of the source, even
/// incompressible, up to S3's 5 TiB object limit. `FERRY_S3_PART_SIZE` (bytes, at least
/// 5 MiB) overrides it, for tests.
pub fn part_size(source_size: u64) -> usize {
    if let Some(forced) = std::env::var("FERRY_S3_PART_SIZE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return forced.max(MIN_PART) as usize;
    }
    // Deflate never grows data by more than a few bytes per 16 KiB; 1/1000 + 1 MiB covers
    // that and the gzip framing with room to spare.
    let bound = source_size + source_size / 1000 + (1 << 20);
    let per_part = bound.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    per_part.max(PART_SIZE as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_fit_any_object_up_to_5_tib_in_10000() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size(0), 8 << 20);
        assert_eq!(part_size(70 << 30), 8 << 20);
        for size in [80u64 << 30, 1 << 40, 5 << 40] {
            let part = part_size(size) as u64;
            assert_eq!(part % MIB, 0);
            let worst = size + size / 1000 + MIB;
            assert!(worst.div_ceil(part) <= MAX_PARTS, "{size}: {part}");
            assert!(part <= 5 << 30, "{size}: {part}");
        }
    }
}
