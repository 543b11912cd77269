//! `--shard K/N`: which part of the key space one of N cooperating processes takes.

use std::path::Path;

/// Shard `index` of `count`: this process takes the keys whose [`Shard::of`] is `index`.
/// N processes with K = 0…N-1 deliver every file exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard {
    index: u64,
    count: u64,
}

/// A `--shard` value that is not `K/N` with `0 <= K < N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected K/N with 0 <= K < N, e.g. 0/4")]
pub struct BadShard;

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`BadShard`] unless `index < count`.
    pub fn new(index: u64, count: u64) -> Result<Self, BadShard> {
        if index < count {
            Ok(Shard { index, count })
        } else {
            Err(BadShard)
        }
    }

    /// K, from 0.
    pub fn index(self) -> u64 {
        self.index
    }

    /// N.
    pub fn count(self) -> u64 {
        self.count
    }

    /// Whether `key` (as delivered, without `.gz`) belongs to this shard.
    pub fn contains(self, key: &Path) -> bool {
        Self::of(key, self.count) == self.index
    }

    /// The shard of a key: FNV-1a (64-bit) of the key's bytes — input root name plus
    /// relative path, as delivered without `.gz` — modulo `n`. Stable across runs,
    /// machines and versions.
    pub fn of(key: &Path, n: u64) -> u64 {
        let h = key
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        h % n
    }
}

impl std::str::FromStr for Shard {
    type Err = BadShard;

    fn from_str(s: &str) -> Result<Self, BadShard> {
        let (k, n) = s.split_once('/').ok_or(BadShard)?;
        let k = k.trim().parse().map_err(|_| BadShard)?;
        let n = n.trim().parse().map_err(|_| BadShard)?;
        Shard::new(k, n)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n() {
        assert_eq!("2/5".parse::<Shard>().unwrap(), Shard::new(2, 5).unwrap());
        for bad in ["4/4", "1", "a/b", "0/0", "-1/3"] {
            assert_eq!(bad.parse::<Shard>(), Err(BadShard), "{bad}");
        }
    }

    #[test]
    fn shards_are_stable_and_cover_every_key() {
        // Pinned values: changing the hash would re-deal every existing sharded job.
        assert_eq!(
            Shard::of(Path::new("logs/a.log"), u64::MAX),
            8_076_973_849_331_553_842
        );
        assert_eq!(Shard::of(Path::new("logs/a.log"), 1_000_003), 698_396);
        assert_eq!(Shard::of(Path::new(""), u64::MAX), 0xcbf2_9ce4_8422_2325);
        let mut counts = [0; 4];
        for i in 0..4000 {
            counts[Shard::of(Path::new(&format!("d/f{i}")), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
