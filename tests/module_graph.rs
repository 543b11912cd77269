//! The house rules of `docs/DESIGN.md`, checked on the source itself: no import cycles
//! among the files of `src/`, none among its folders (each folder counted as one node),
//! and the engine (`src/pipeline/`) imports nothing from the rest of the crate.
//!
//! An edge is a `use` of, or an inline `crate::`/`super::` path into, another file's
//! module. `mod x;` declarations are containment, not imports; the crate roots (`lib.rs`,
//! `main.rs`) only re-export and are left out; `#[cfg(test)] mod tests` blocks at the end
//! of a file are left out too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module path of a file under `src/`: `sink/dir.rs` → `[sink, dir]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The file of a module path, if it has one of its own.
fn file_of(files: &BTreeMap<Vec<String>, String>, module: &[String]) -> Option<String> {
    files.get(module).cloned()
}

/// Every `a::b::{c, d::e}` path of a `use` tree, flattened.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(&tree).to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The paths a file's code names: its `use` trees and inline `crate::`/`super::` paths.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            let tree = &rest[..end];
            if tree
                .chars()
                .all(|c| c.is_alphanumeric() || "_:{}, *\n\t".contains(c))
            {
                out.extend(expand(tree));
            }
        }
    }
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            out.push(tail[..end].trim_end_matches(':').to_string());
            rest = &rest[i + root.len()..];
        }
    }
    out
}

/// Resolves a path named in `module` to the file that defines it (the longest prefix of
/// the path that is a file's module).
fn resolve(
    files: &BTreeMap<Vec<String>, String>,
    module: &[String],
    is_mod_rs: bool,
    path: &str,
) -> Option<String> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, rest): (Vec<String>, &[&str]) = match segs.first()? {
        &"crate" => (Vec::new(), &segs[1..]),
        &"self" => (module.to_vec(), &segs[1..]),
        &"super" => {
            let mut m = module.to_vec();
            let mut rest = &segs[..];
            while rest.first() == Some(&"super") {
                // In `a/mod.rs` (module `a`) or `a/b.rs` (module `a::b`), `super` is the
                // parent module either way.
                m.pop();
                rest = &rest[1..];
            }
            (m, rest)
        }
        first => {
            // A child module named without `self::` (as `mod.rs` re-exports do).
            let mut child = module.to_vec();
            child.push(first.to_string());
            if is_mod_rs && files.contains_key(&child) {
                (module.to_vec(), &segs[..])
            } else {
                return None;
            }
        }
    };
    let mut found = file_of(files, &base);
    for s in rest {
        base.push(s.to_string());
        if let Some(f) = file_of(files, &base) {
            found = Some(f);
        }
    }
    found
}

/// The import graph of the `.rs` files under `src`, by path relative to `src`.
fn graph(src: &Path) -> Graph {
    let mut all = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                all.push(p);
            }
        }
    }
    let rel = |p: &PathBuf| p.strip_prefix(src).unwrap().to_string_lossy().into_owned();
    let files: BTreeMap<Vec<String>, String> = all
        .iter()
        .filter(|p| !matches!(rel(p).as_str(), "lib.rs" | "main.rs"))
        .map(|p| (module_of(p.strip_prefix(src).unwrap()), rel(p)))
        .collect();
    let mut g = Graph::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests {") {
            Some(i) => &text[..i],
            None => &text,
        };
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let edges = g.entry(file.clone()).or_default();
        let is_mod_rs = file.ends_with("mod.rs");
        let mut paths = paths_in(&code);
        if is_mod_rs {
            // Inline paths into a child module (`libdeflate::Libdeflate::new`).
            for child in files.keys().filter(|m| m.len() == module.len() + 1) {
                let name = child.last().unwrap();
                if child.starts_with(module) && code.contains(&format!("{name}::")) {
                    paths.push(name.clone());
                }
            }
        }
        for path in paths {
            if let Some(to) = resolve(&files, module, is_mod_rs, &path) {
                if &to != file {
                    edges.insert(to);
                }
            }
        }
    }
    g
}

/// Every cycle's files (strongly connected components of more than one file, or a file
/// importing itself), by Tarjan's algorithm.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            let self_loop = s.g.get(v).is_some_and(|e| e.contains(v));
            if comp.len() > 1 || self_loop {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_file_in_src_is_part_of_an_import_cycle() {
    let g = graph(&src());
    // The checker sees the imports it must: a sanity check that it parses this code.
    assert!(g["upload.rs"].contains("task.rs"), "{:?}", g["upload.rs"]);
    assert!(g["sink/dir.rs"].contains("sink/api.rs"));
    assert!(g["sink/mod.rs"].contains("sink/dir.rs"));
    assert!(g["gzip/mod.rs"].contains("gzip/libdeflate.rs"));
    assert!(g["pipeline/tests.rs"].contains("pipeline/mod.rs"));
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "import cycles among src/ files: {found:?}"
    );
}

/// The graph with each folder of `src/` counted as one node (`history/journal.rs` →
/// `history/`), and each file at the top as itself.
fn folder_graph(g: &Graph) -> Graph {
    let node = |f: &str| match f.split_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => f.to_string(),
    };
    let mut out = Graph::new();
    for (file, edges) in g {
        let from = node(file);
        let set = out.entry(from.clone()).or_default();
        set.extend(edges.iter().map(|e| node(e)).filter(|to| *to != from));
    }
    out
}

#[test]
fn no_folder_of_src_is_part_of_an_import_cycle() {
    let folders = folder_graph(&graph(&src()));
    // Sanity: the commands stand above the rooms they use.
    assert!(folders["commands/"].contains("history/"), "{folders:?}");
    assert!(folders["commands/"].contains("pipeline/"), "{folders:?}");
    let found = cycles(&folders);
    assert!(
        found.is_empty(),
        "import cycles among src/'s folders: {found:?}"
    );
}

#[test]
fn the_folder_checker_finds_a_cycle_the_file_checker_cannot() {
    let t = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let p = t.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("lib.rs", "pub mod a;\npub mod s;\n");
    w("a.rs", "use crate::s::x::X;\n");
    w("s/mod.rs", "pub mod x;\npub mod y;\n");
    w("s/x.rs", "pub struct X;\n");
    w("s/y.rs", "use crate::a::A;\n");
    let files = graph(t.path());
    assert!(cycles(&files).is_empty(), "{files:?}");
    assert_eq!(cycles(&folder_graph(&files)), vec![vec!["a.rs", "s/"]]);
}

#[test]
fn the_engine_imports_nothing_from_the_rest_of_the_crate() {
    let g = graph(&src());
    for (file, edges) in &g {
        if file.starts_with("pipeline/") {
            let outside: Vec<_> = edges
                .iter()
                .filter(|e| !e.starts_with("pipeline/"))
                .collect();
            assert!(outside.is_empty(), "{file} imports {outside:?}");
        }
    }
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    let t = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let p = t.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("lib.rs", "pub mod a;\npub mod b;\npub mod s;\n");
    w("a.rs", "use crate::b::{self, Thing};\n");
    w("b.rs", "pub fn f() { crate::s::leaf(); }\n");
    w("s/mod.rs", "mod inner;\npub use inner::Leaf;\n");
    w("s/inner.rs", "use super::super::a::X;\n");
    let found = cycles(&graph(t.path()));
    assert_eq!(
        found,
        vec![vec!["a.rs", "b.rs", "s/inner.rs", "s/mod.rs"]],
        "{:?}",
        graph(t.path())
    );
    // Break it: the inner file no longer reaches back.
    w("s/inner.rs", "// use super::super::a::X;\n");
    assert!(cycles(&graph(t.path())).is_empty());
}
