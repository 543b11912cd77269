//! `--include` / `--exclude`: globs in gitignore syntax, as a delivery takes them on the
//! paths it walks and a restore on the keys it brings back.

use crate::error::FerryError;
use ignore::overrides::{Override, OverrideBuilder};
use std::path::Path;

/// Builds the `--include` / `--exclude` matcher for paths under `base` (gitignore
/// syntax; the last matching glob wins). `None` when there are no globs.
///
/// # Errors
/// [`FerryError::Usage`] naming the flag of a glob that does not parse.
pub fn overrides(
    base: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Option<Override>, FerryError> {
    if include.is_empty() && exclude.is_empty() {
        return Ok(None);
    }
    let mut b = OverrideBuilder::new(base);
    let bad =
        |flag: &str, g: &str, e: ignore::Error| FerryError::Usage(format!("--{flag} '{g}': {e}"));
    for g in include {
        b.add(g).map_err(|e| bad("include", g, e))?;
    }
    for g in exclude {
        b.add(&format!("!{g}")).map_err(|e| bad("exclude", g, e))?;
    }
    b.build()
        .map(Some)
        .map_err(|e| FerryError::Usage(e.to_string()))
}

/// Whether `key` passes `globs` as it would in a walk: a key under an excluded directory
/// is out, as the walk prunes that directory.
pub fn admits(globs: &Override, key: &Path) -> bool {
    let dirs = key
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty());
    !dirs.into_iter().any(|d| globs.matched(d, true).is_ignore())
        && !globs.matched(key, false).is_ignore()
}
