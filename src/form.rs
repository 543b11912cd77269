//! How a file is stored at the sink: as an archive object (`KEY.gz`), or with `--web` as a
//! web server sends it. Shared by the delivery, the history and the read-back, and
//! depending on none of them.

use std::path::{Path, PathBuf};

/// The name of the delivered object: the key plus `.gz`.
pub fn object_key(key: &Path) -> PathBuf {
    let mut k = key.as_os_str().to_owned();
    k.push(".gz");
    PathBuf::from(k)
}

/// `name` without its `.gz` suffix, if it has one.
pub fn strip_gz(name: &std::ffi::OsStr) -> Option<&std::ffi::OsStr> {
    let stem = name.as_encoded_bytes().strip_suffix(b".gz")?;
    // SAFETY: the bytes of an OsStr, cut before an ASCII suffix, are an OsStr.
    Some(unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(stem) })
}

/// How a file is stored: the archive's gzip object under `KEY.gz` (the default), or, with
/// `--web`, for a web server or CDN to serve as it is: gzip bytes under the plain key with
/// `Content-Encoding: gzip`, or the file unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `KEY.gz`, `Content-Type: application/gzip`, no Content-Encoding.
    #[default]
    Archive,
    /// Gzip bytes under `KEY`, with the type of the source's extension and
    /// `Content-Encoding: gzip`; into `dir:`, `KEY.gz` beside `KEY` unchanged (the layout
    /// nginx `gzip_static` and Caddy's `precompressed` serve).
    Gzip,
    /// The file unchanged under `KEY`, with the type of its extension: not gzipped.
    Plain,
}

impl Form {
    /// Where an object of this form is stored, for `key`: a local directory keeps the gzip
    /// bytes of a web file under `KEY.gz`, beside the file itself.
    pub fn object_key(self, key: &Path, local: bool) -> PathBuf {
        match (self, local) {
            (Form::Archive, _) | (Form::Gzip, true) => object_key(key),
            (Form::Gzip, false) | (Form::Plain, _) => key.to_path_buf(),
        }
    }

    /// Whether the object is gzip bytes (else the file's own).
    pub fn gzipped(self) -> bool {
        self != Form::Plain
    }

    /// The form as a small number, for the in-memory index.
    pub fn bits(self) -> u8 {
        match self {
            Form::Archive => 0,
            Form::Gzip => 1,
            Form::Plain => 2,
        }
    }

    /// The form of [`Form::bits`].
    pub fn from_bits(b: u8) -> Self {
        match b {
            1 => Form::Gzip,
            2 => Form::Plain,
            _ => Form::Archive,
        }
    }
}

/// `--web`: which files go encoded and how they are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    /// Extensions (lower case, no dot) whose files are gzipped (`--web-ext`); the rest go
    /// unchanged.
    pub exts: Vec<String>,
}

/// The extensions `--web` gzips by default: text a browser asks for with
/// `Accept-Encoding: gzip`. Images, video, fonts in WOFF2 and archives are compressed already.
pub const WEB_EXTS: &str =
    "html,htm,css,js,mjs,cjs,json,map,svg,txt,xml,csv,md,wasm,ico,ttf,otf,eot,webmanifest,rss,atom";

impl Web {
    /// The form of the file at `key`: gzip for a listed extension, else plain.
    pub fn form_of(&self, key: &Path) -> Form {
        let ext = key
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.is_some_and(|e| self.exts.contains(&e)) {
            true => Form::Gzip,
            false => Form::Plain,
        }
    }
}

/// The `Content-Type` of a web file at `key`, guessed from its extension.
pub fn content_type_of(key: &Path) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}
