//! What `--to s3://…`, `gs://…` or `az://…` names, with the flags that say how to reach
//! it; read by the sink and by the store builders.

use crate::sink::api::UrlStyle;

/// Which object store service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon S3 and S3-compatible servers (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`).
    Azure,
}

impl Cloud {
    /// The URL scheme, without `://`.
    pub fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }
    /// A user-metadata name as this store allows it: Azure wants a C# identifier
    /// (`ferry_source_size`), the others take `ferry-source-size`.
    pub fn meta_name(self, name: &str) -> std::borrow::Cow<'static, str> {
        match self {
            Cloud::Azure => name.replace('-', "_").into(),
            _ => name.to_string().into(),
        }
    }

    /// What a bucket is called there.
    pub fn bucket_word(self) -> &'static str {
        match self {
            Cloud::Azure => "container",
            _ => "bucket",
        }
    }
}

/// Where objects go and how to reach them: the store, bucket (or container), key
/// prefix, and the options given as flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSpec {
    /// Which service.
    pub cloud: Cloud,
    /// The bucket (Azure: the container).
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`), possibly empty.
    pub prefix: String,
    /// `--endpoint-url`: a server other than the cloud's own (else from the environment).
    pub endpoint: Option<String>,
    /// `--url-style` (S3): `None` picks path style for a custom endpoint, else virtual.
    pub url_style: Option<UrlStyle>,
    /// `--profile` (S3): the AWS named profile, before `AWS_PROFILE`.
    pub profile: Option<String>,
    /// `--storage-class`: the class (tier) new objects are stored in.
    pub storage_class: Option<String>,
}

impl CloudSpec {
    /// Parses `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix` (the
    /// prefix may be empty); the options start unset.
    ///
    /// # Errors
    /// A message when the scheme is not one of these or the bucket is missing.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (cloud, rest) = [Cloud::S3, Cloud::Gcs, Cloud::Azure]
            .into_iter()
            .find_map(|c| {
                spec.strip_prefix(&format!("{}://", c.scheme()))
                    .map(|r| (c, r))
            })
            .ok_or_else(|| {
                "expected s3://, gs:// or az:// followed by bucket/prefix".to_string()
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "the {} name is empty ({}://{}/prefix)",
                cloud.bucket_word(),
                cloud.scheme(),
                cloud.bucket_word()
            ));
        }
        Ok(CloudSpec {
            cloud,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            url_style: None,
            profile: None,
            storage_class: None,
        })
    }

    /// `scheme://bucket/prefix`.
    pub fn url(&self) -> String {
        format!("{}://{}/{}", self.cloud.scheme(), self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let s = CloudSpec::parse("s3://b/a/b/").unwrap();
        assert_eq!(
            (s.cloud, s.bucket.as_str(), s.prefix.as_str()),
            (Cloud::S3, "b", "a/b")
        );
        assert_eq!(CloudSpec::parse("s3://b").unwrap().prefix, "");
        assert!(CloudSpec::parse("s3:///x").is_err());
        let g = CloudSpec::parse("gs://logs/2026").unwrap();
        assert_eq!(
            (g.cloud, g.url()),
            (Cloud::Gcs, "gs://logs/2026".to_string())
        );
        let a = CloudSpec::parse("az://box").unwrap();
        assert_eq!((a.cloud, a.bucket.as_str()), (Cloud::Azure, "box"));
        let e = CloudSpec::parse("az:///p").unwrap_err();
        assert!(e.contains("container name is empty"), "{e}");
    }
}
