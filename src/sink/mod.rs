//! Where compressed objects go. A sink opens an [`Upload`] per object, which is written
//! part by part and then committed (made visible whole) or aborted (leaves nothing).

mod api;
mod dir;
#[cfg(feature = "s3")]
mod s3;
mod sim;

pub use api::{ObjectMeta, Receipt, Sink, SinkError, SinkOptions, Upload};
pub use dir::DirSink;
#[cfg(feature = "s3")]
pub use s3::{S3Sink, S3Spec};
pub use sim::{SimSink, SimSpec};

use std::path::PathBuf;

/// Which sink to use, parsed from `--to`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// `dir:PATH` (or a bare path): a local directory.
    Dir(PathBuf),
    /// `sim:latency=…,bandwidth=…,jitter=…,fail=…,seed=…`: a simulated network upload.
    Sim(SimSpec),
    /// `s3://bucket/prefix`: an S3-compatible object store.
    #[cfg(feature = "s3")]
    S3(S3Spec),
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
        if spec.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return S3Spec::parse(spec)
                .map(SinkSpec::S3)
                .map_err(|why| bad(&why));
            #[cfg(not(feature = "s3"))]
            return Err(bad("this build has no s3 support (cargo feature 's3')"));
        }
        if let Some(params) = spec.strip_prefix("sim:").or((spec == "sim").then_some("")) {
            return SimSpec::parse(params)
                .map(SinkSpec::Sim)
                .map_err(|why| bad(&why));
        }
        if let Some((scheme, _)) = spec.split_once(':') {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(&format!(
                    "unknown sink type '{scheme}' (known: dir:PATH, sim:…, s3://bucket/prefix)"
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
        #[cfg(feature = "s3")]
        SinkSpec::S3(s) => Ok(std::sync::Arc::new(S3Sink::open(s, opts)?)),
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
