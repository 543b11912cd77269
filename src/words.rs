//! Numbers and OS errors in the words a user expects to read. A leaf: every module may
//! use it, and it uses none of them.

/// An I/O error in the words a user expects: `permission denied`, `no such file or
/// directory` — without Rust's `(os error 13)` suffix.
pub fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Bytes in binary units, as people read them: `1.2 MiB`, `230 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// `text` with every control character escaped (`\e`, `\n`, `\t`, `\x7f`, C1 as `\u{85}`),
/// so that a name cannot recolour the terminal or forge a line, as `ls` and fd print
/// names; every other character stays as it is.
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A path as a person should read it: lossy UTF-8, control characters escaped.
pub fn shown(path: &std::path::Path) -> String {
    escaped(&path.to_string_lossy()).into_owned()
}

/// `text` with the credentials of every URL in it replaced: `http://user:secret@host`
/// becomes `http://***@host`, so that no password given in an endpoint is ever printed or
/// reported.
pub fn redacted(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#` or space; credentials end at its
        // last `@`.
        let end = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '\'' || c == '"'
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_words() {
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_words(&e), "permission denied");
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_words(&e), "no such file or directory");
    }

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(230 * 1024), "230 KiB");
        assert_eq!(human_bytes(1258291), "1.2 MiB");
    }
    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(escaped("plain/ü.txt"), "plain/ü.txt");
        assert_eq!(escaped("a\x1b[31mRED\x1b[0m"), "a\\e[31mRED\\e[0m");
        assert_eq!(
            escaped("two\nlines\t\x7f\u{85}"),
            "two\\nlines\\t\\x7f\\u{85}"
        );
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        assert_eq!(
            redacted("endpoint 'http://user:secret@host:9000/x' is down"),
            "endpoint 'http://***@host:9000/x' is down"
        );
        assert_eq!(redacted("s3://bucket/a@b"), "s3://bucket/a@b");
        assert_eq!(redacted("mail me@example.com"), "mail me@example.com");
    }
}
