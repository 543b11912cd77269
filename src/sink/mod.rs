//! Where compressed objects go. A sink opens an [`Upload`] per object, which is written
//! part by part and then committed (made visible whole) or aborted (leaves nothing).

mod api;
#[cfg(feature = "cloud")]
mod cloud;
mod dir;
mod parts;
mod sim;

pub use api::{
    bare_etag, Answer, ObjectMeta, Opened, Receipt, Sink, SinkError, SinkOptions, Upload, UrlStyle,
    WebMeta,
};
#[cfg(feature = "cloud")]
pub use cloud::{Cloud, CloudSink, CloudSpec};
pub use dir::DirSink;
pub use parts::part_size;
pub use sim::{SimSink, SimSpec};

use std::path::PathBuf;

/// Every form `--to` takes, for help and error texts.
pub const SCHEMES: &str = "dir:PATH (or a bare path), s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, sim:latency=…,bandwidth=…,fail=…";

/// Which sink to use, parsed from `--to`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `dir:PATH` (or a bare path): a local directory.
    Dir(PathBuf),
    /// `sim:latency=…,bandwidth=…,jitter=…,fail=…,seed=…`: a simulated network upload.
    Sim(SimSpec),
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`: an object store.
    #[cfg(feature = "cloud")]
    Cloud(CloudSpec),
}

impl SinkSpec {
    /// Parses `dir:PATH` or a bare path.
    ///
    /// # Errors
    /// [`SinkError::BadSpec`] for an empty path or a scheme this build does not have.
    pub fn parse(spec: &str) -> Result<Self, SinkError> {
        let bad = |why: &str| SinkError::BadSpec {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(bad("the directory path is empty"));
            }
            return Ok(SinkSpec::Dir(PathBuf::from(path)));
        }
        if ["s3://", "gs://", "az://"]
            .iter()
            .any(|s| spec.starts_with(s))
        {
            #[cfg(feature = "cloud")]
            return CloudSpec::parse(spec)
                .map(SinkSpec::Cloud)
                .map_err(|why| bad(&why));
            #[cfg(not(feature = "cloud"))]
            return Err(bad(
                "this build has no object store support (cargo features 's3', 'gcs', 'azure')",
            ));
        }
        if let Some(params) = spec.strip_prefix("sim:").or((spec == "sim").then_some("")) {
            return SimSpec::parse(params)
                .map(SinkSpec::Sim)
                .map_err(|why| bad(&why));
        }
        if let Some((scheme, _)) = spec.split_once(':') {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(&format!(
                    "unknown sink type '{scheme}' (known: {SCHEMES})"
                )));
            }
        }
        if spec.is_empty() {
            return Err(bad("empty"));
        }
        Ok(SinkSpec::Dir(PathBuf::from(spec)))
    }
}

/// Opens the sink named by `spec`, ready to take objects.
///
/// # Errors
/// [`SinkError::Setup`] if it cannot be used.
pub fn open(spec: &SinkSpec, opts: &SinkOptions) -> Result<std::sync::Arc<dyn Sink>, SinkError> {
    match spec {
        SinkSpec::Dir(p) => Ok(std::sync::Arc::new(DirSink::open(p, opts.clone())?)),
        SinkSpec::Sim(s) => Ok(std::sync::Arc::new(SimSink::new(
            s.clone(),
            opts.cancel.clone(),
        ))),
        #[cfg(feature = "cloud")]
        SinkSpec::Cloud(s) => Ok(std::sync::Arc::new(CloudSink::open(s, opts)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            SinkSpec::parse("dir:out").unwrap(),
            SinkSpec::Dir("out".into())
        );
        assert_eq!(
            SinkSpec::parse("out/x").unwrap(),
            SinkSpec::Dir("out/x".into())
        );
        assert!(SinkSpec::parse("dir:").is_err());
        let e = SinkSpec::parse("ftp://x").unwrap_err().to_string();
        assert!(e.contains("unknown sink type 'ftp'"), "{e}");
        assert!(matches!(SinkSpec::parse("sim:").unwrap(), SinkSpec::Sim(_)));
        assert!(matches!(
            SinkSpec::parse("sim:fail=2").unwrap_err(),
            SinkError::BadSpec { .. }
        ));
    }
}
