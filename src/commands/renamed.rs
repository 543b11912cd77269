//! Rotated files: `ferry watch` learns of `app.log.1` when logrotate renames `app.log`.
//! Its content is at the sink already, as `app.log`'s object. Before a shipment sends
//! anything, each of its files that the history knows under another key by the same
//! device, inode, size and mtime has that object copied to its own key in the store
//! (checked against the entry as it is copied, or by size and ETag where the store copies
//! it itself) and recorded under its new name, so it is not read or sent again.
//!
//! Done before the pipeline starts, so the new `app.log`, sent in the same shipment under
//! the old key, cannot replace the object before it was copied. Where the copy cannot be
//! made (the object was replaced since, the store refuses), the file is sent as usual.

use crate::history::journal::{for_each_current, Recorder, Scope};
use crate::history::manifest::Entry;
use crate::sink::Sink;
use crate::task::{Form, Renamed, Seen};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Copies and records, for each `(path, key)` of `files` whose content the history holds
/// under another key, the object to the file's own key; returns those files. `form_of`
/// says how a file would be stored (a renamed file keeps its form, or is sent).
pub fn copy_renamed(
    sink: &dyn Sink,
    files: &[(PathBuf, PathBuf)],
    form_of: &dyn Fn(&Path, &Path) -> Form,
    recorder: &Recorder,
    log: &crate::view::Log,
) -> Renamed {
    let mut wanted: HashMap<Seen, Vec<(&Path, &Path, std::fs::Metadata)>> = HashMap::new();
    for (path, key) in files {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            // A rename moves the ctime, not the mtime; a file just written has the two
            // equal, and does not cost a read of the history.
            let renamed = (m.ctime(), m.ctime_nsec()) != (m.mtime(), m.mtime_nsec());
            if m.is_file() && m.len() > 0 && renamed {
                wanted.entry(Seen::of(&m)).or_default().push((path, key, m));
            }
        }
    }
    let mut renamed = Renamed::new();
    if wanted.is_empty() {
        return renamed;
    }
    // The entries that knew these files under other keys.
    let mut found: Vec<Copy> = Vec::new();
    let read = for_each_current(sink, Scope::One(None), |e| {
        let Some(inode) = e.inode else { return };
        let seen = Seen {
            inode,
            size: e.size,
            mtime: (e.mtime_s, e.mtime_ns),
        };
        for (path, key, meta) in wanted.get(&seen).into_iter().flatten() {
            let form = form_of(path, key);
            if PathBuf::from(&e.key) != **key && e.form.unwrap_or_default() == form && !e.is_link()
            {
                found.push((e.clone(), path, key, meta));
            }
        }
    });
    if let Err(e) = read {
        log.debug(|| format!("[renamed] the history could not be read for renamed files: {e}"));
        return renamed;
    }
    let local = sink.local_root().is_some();
    for (e, path, key, meta) in in_order(found) {
        if renamed.contains_key(key) || (local && e.form == Some(Form::Gzip)) {
            // One copy a file; a web file into dir: is two files, sent as usual.
            continue;
        }
        let old = PathBuf::from(&e.key);
        let mut moved = e.clone();
        moved.key = key.into();
        moved.ctime = Some((meta.ctime(), meta.ctime_nsec() as u32));
        moved.mode = Some(meta.mode() & 0o7777);
        moved.owner = Some((meta.uid(), meta.gid()));
        let (from, to) = (e.object_key(local), moved.object_key(local));
        let copied = match sink.copy_object(&from, &to, e.bytes_out, e.etag.as_deref()) {
            Ok(Some(receipt)) => Ok((receipt, "copied in the store")),
            Ok(None) => super::verify::copy_checked(sink, &from, &to, &e)
                .map(|r| (r, "read back, checked and written")),
            Err(err) => Err(err.to_string()),
        };
        match copied {
            Ok((receipt, how)) => {
                moved.etag = receipt.etag;
                recorder.record(&moved);
                log.info(|| {
                    format!(
                        "[renamed] {} (delivered as {}: its object {how}, not sent again)",
                        path.display(),
                        old.display()
                    )
                });
                renamed.insert(key.to_path_buf(), (Seen::of(meta), old));
            }
            Err(err) => log.debug(|| {
                format!(
                    "[renamed] {}: {} could not be copied ({err}); sending it",
                    path.display(),
                    from.display()
                )
            }),
        }
    }
    renamed
}

/// A copy to make: the entry known, the file's path and key, and its metadata.
type Copy<'a> = (Entry, &'a Path, &'a Path, &'a std::fs::Metadata);

/// The copies in an order that copies each object before another copy replaces it: in a
/// rotation, `app.log.1` → `app.log.2` goes before `app.log` → `app.log.1`. Copies in a
/// cycle (two files that swapped names) are left out: whichever went first would replace
/// the other's object, which a store's copy (checked by size, and ETag where known) might
/// not notice. Those files are sent as usual.
fn in_order(mut pending: Vec<Copy<'_>>) -> Vec<Copy<'_>> {
    let mut ordered = Vec::with_capacity(pending.len());
    while let Some(free) = pending
        .iter()
        .position(|(_, _, to, _)| !pending.iter().any(|(e, ..)| e.key.as_path() == *to))
    {
        ordered.push(pending.remove(free));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        serde_json::from_str(&format!(
            r#"{{"key":"{key}","size":1,"mtime_s":0,"mtime_ns":0,"crc32":0,"bytes_out":21}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_rotation_copies_the_oldest_first_and_a_swap_not_at_all() {
        let meta = std::fs::metadata(".").unwrap();
        let p = Path::new("p");
        let (k1, k2, k3) = (
            Path::new("app.log.1"),
            Path::new("app.log.2"),
            Path::new("app.log.3"),
        );
        // app.log → app.log.1, app.log.1 → app.log.2, app.log.2 → app.log.3, listed
        // in the worst order.
        let rotation = vec![
            (entry("app.log"), p, k1, &meta),
            (entry("app.log.1"), p, k2, &meta),
            (entry("app.log.2"), p, k3, &meta),
        ];
        assert_eq!(
            keys(in_order(rotation)),
            ["app.log.2", "app.log.1", "app.log"].map(PathBuf::from)
        );
        // a ↔ b: neither is copied; a third, free, still is.
        let (a, b, c) = (Path::new("a"), Path::new("b"), Path::new("c"));
        let swap = vec![
            (entry("a"), p, b, &meta),
            (entry("b"), p, a, &meta),
            (entry("x"), p, c, &meta),
        ];
        assert_eq!(keys(in_order(swap)), [PathBuf::from("x")]);
    }

    /// The keys the copies go from, in order.
    fn keys(copies: Vec<Copy<'_>>) -> Vec<PathBuf> {
        copies
            .into_iter()
            .map(|(e, ..)| e.key.as_path().to_path_buf())
            .collect()
    }
}
